"""`kws-daemon eval`: how a model directory does on labelled clips and on long non-keyword audio.

Clip metrics (accuracy, per-word precision and recall, confusion matrix) score each clip as one
whole window (kws_daemon.evaluate.clip_posteriors). Streaming metrics run the daemon's Pipeline
(VAD, windows, smoothing, refractory): the clips placed in a stream between stretches of quiet
room noise give the false-reject rate, --negatives give false accepts per hour. The model runs
once per stream: the threshold sweep replays its posteriors, because which windows get scored
depends on the audio and the VAD, never on the threshold.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.sources import read_audio
from kws_daemon.audio.streams import QUIET_ROOM_DBFS, room_noise
from kws_daemon.config import Config
from kws_daemon.console import Progress, table, write_json
from kws_daemon.detector import KeywordEvent
from kws_daemon.errors import KwsError
from kws_daemon.evaluate import Placement, clip_posteriors, replay_runs, score_stream, swept
from kws_daemon.features import Fbank, centred, int16_to_float
from kws_daemon.model import Model
from kws_daemon.operating import OperatingPoint, summary
from kws_daemon.pipeline import RATE
from kws_daemon.service import load_model
from kws_daemon.utterances import UtteranceInput

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
BATCH = 64


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    word: str


def manifest_clips(path: Path) -> list[LabelledClip]:
    """Rows of a kws-real style TSV (relpath, word, ...); relpaths are relative to the manifest."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise KwsError(f"--manifest {path}: cannot read ({e})") from None
    if not rows or not {"relpath", "word"} <= set(rows[0]):
        raise KwsError(f"--manifest {path}: needs a header with tab-separated relpath and word columns")
    return [LabelledClip(path.parent / row["relpath"], row["word"]) for row in rows]


def dir_clips(path: Path) -> list[LabelledClip]:
    """Audio files in the subfolders of `path`, each labelled by its subfolder's name."""
    if not path.is_dir():
        raise KwsError(f"--dir {path}: not a directory")
    clips = [
        LabelledClip(f, sub.name)
        for sub in sorted(p for p in path.iterdir() if p.is_dir())
        for f in sorted(sub.rglob("*"))
        if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
    ]
    if not clips:
        raise KwsError(f"--dir {path}: no .wav, .flac or .ogg files in subfolders named by word")
    return clips


def spread(items: list[LabelledClip], limit: int | None) -> list[LabelledClip]:
    """At most `limit` items, taken evenly over the list (so every word and speaker source stays in)."""
    if not limit or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_16k(path: Path) -> np.ndarray:
    samples, rate = read_audio(path)
    return Resampler(rate, RATE)(samples, last=True)


def _log_mel(model: Model, batch: list[np.ndarray]) -> np.ndarray:
    """An AST's raw log-mel frames for a batch of clips (a short one in a second of silence),
    zero-padded to the longest."""
    fbank = Fbank(model.info.fbank.num_mel_bins)
    frames = [fbank(int16_to_float(centred(a)))[: model.info.fbank.max_length] for a in batch]
    padded = np.zeros((len(frames), max(len(f) for f in frames), fbank.num_mel_bins), dtype=np.float32)
    for j, f in enumerate(frames):  # zeros, as pad_and_normalise would add them anyway
        padded[j, : len(f)] = f
    return padded


def clip_metrics(model: Model, clips: list[LabelledClip]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Clip accuracy, per-word precision/recall and the confusion matrix; also the clips' audio."""
    labels = model.info.labels
    progress = Progress("eval: clips", len(clips))
    audio, predicted = [], []
    info = model.info
    whole = None if info.kind == "ast" else UtteranceInput(info.frontend, info.path)  # a clip a call
    for i in range(0, len(clips), BATCH):
        batch = [load_16k(c.path) for c in clips[i : i + BATCH]]
        if whole is not None:
            predicted += [int(model(whole(a)[None])[0].argmax()) for a in batch]
        else:
            predicted += clip_posteriors(model, _log_mel(model, batch)).argmax(-1).tolist()
        audio += batch
        progress.advance(len(batch))
    progress.close()
    truth = np.array([labels.index(c.word) for c in clips])
    pred = np.array(predicted)
    words = sorted(set(truth.tolist()))
    confusion = np.zeros((len(words), len(labels)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        confusion[words.index(t), p] += 1
    per_word = {}
    for w in words:
        tp = int(np.sum((truth == w) & (pred == w)))
        said, heard = int(np.sum(truth == w)), int(np.sum(pred == w))
        per_word[labels[w]] = {
            "clips": said,
            "precision": tp / heard if heard else float("nan"),
            "recall": tp / said,
        }
    metrics = {
        "clips": len(clips),
        "accuracy": float(np.mean(truth == pred)),
        "per_word": per_word,
        "confusion": {
            "rows_true": [labels[w] for w in words],
            "columns_predicted": list(labels),
            "counts": confusion.tolist(),
        },
    }
    return metrics, audio


def keyword_stream(
    audio: list[np.ndarray], clips: list[LabelledClip], seed: int = 0
) -> tuple[np.ndarray, list[Placement]]:
    """The clips in a row with 1.2-2 s of quiet room noise between (longer than the refractory period)."""
    rng = np.random.default_rng(seed)
    parts, placements, at = [], [], 0
    for clip, samples in zip(clips, audio, strict=True):
        gap = (room_noise(rng, int(rng.uniform(1.2, 2.0) * RATE), QUIET_ROOM_DBFS) * 32768).astype(np.int16)
        parts += [gap, samples]
        at += len(gap)
        placements.append(Placement(clip.word, at / RATE, (at + len(samples)) / RATE))
        at += len(samples)
    parts.append(np.zeros(RATE, dtype=np.int16))
    return np.concatenate(parts), placements


def streaming_metrics(
    config: Config,
    model: Model,
    audio: list[np.ndarray],
    clips: list[LabelledClip],
    negatives: list[Path],
    thresholds: list[float],
) -> dict[str, Any]:
    """The sweep (one threshold for every word), the figures users compare engines by, and the
    operating point of the config as it is (its own or the model's calibrated thresholds)."""
    stream, placements = keyword_stream(audio, clips)
    as_is = [config, *swept(config, thresholds)]
    keyword_runs = replay_runs(as_is, model, stream, "eval: keyword stream")
    negative_runs: list[list[KeywordEvent]] = [[] for _ in as_is]
    negative_s = 0.0
    for path in negatives:
        samples = load_16k(path)
        negative_s += len(samples) / RATE
        for events, run in zip(
            negative_runs, replay_runs(as_is, model, samples, f"eval: {path.name}"), strict=True
        ):
            events += run
    rows: list[dict[str, Any]] = []
    for threshold, events, false_accepts in zip(
        ["config", *thresholds], keyword_runs, negative_runs, strict=True
    ):
        score = score_stream(events, placements)
        rows.append(
            {
                "threshold": threshold,
                "false_reject_rate": score.false_reject_rate,
                "wrong_keyword": score.wrong,
                "extra_in_keyword_stream": score.extra,
                "false_accepts": len(false_accepts) if negatives else None,
                "false_accepts_per_hour": len(false_accepts) / (negative_s / 3600) if negatives else None,
            }
        )
    curve = [
        OperatingPoint(r["threshold"], r["false_reject_rate"], r["false_accepts_per_hour"])
        for r in rows[1:]
        if r["false_accepts_per_hour"] is not None
    ]
    return {
        "mode": config.mode_for(model.info),
        "keyword_stream_s": len(stream) / RATE,
        "keywords_placed": len(placements),
        "negative_hours": negative_s / 3600,
        "operating_point": rows[0],
        "summary": summary(curve) if curve else None,
        "sweep": rows[1:],
    }


def _thresholds(text: str) -> list[float]:
    try:
        values = sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise KwsError(f"--thresholds {text}: give comma-separated numbers such as 0.3,0.5,0.7") from None
    if not values or not all(0.0 <= t <= 1.0 for t in values):
        raise KwsError(f"--thresholds {text}: give numbers from 0 to 1")
    return values


def report(result: dict[str, Any]) -> str:
    clips = result["clips"]
    rows = [
        [word, m["clips"], m["precision"], m["recall"], _top_confusion(clips["confusion"], word)]
        for word, m in clips["per_word"].items()
    ]
    lines = [
        f"model {result['model']}: {clips['clips']} clips, accuracy {clips['accuracy']:.1%}"
        + (f" ({result['skipped']} clips of words the model lacks skipped)" if result["skipped"] else ""),
        "",
        table(["word", "clips", "precision", "recall", "most often heard instead"], rows),
        "",
    ]
    stream = result["streaming"]
    lines.append(
        f"streaming: {stream['keywords_placed']} keywords in {stream['keyword_stream_s'] / 60:.1f} min; "
        f"negatives {stream['negative_hours']:.2f} h"
    )
    sweep = [
        [
            s["threshold"],
            s["false_reject_rate"],
            s["false_accepts_per_hour"] if s["false_accepts"] is not None else float("nan"),
            s["wrong_keyword"],
            s["extra_in_keyword_stream"],
        ]
        for s in stream["sweep"]
    ]
    lines.append(table(["threshold", "false rejects", "false accepts/h", "wrong word", "extra"], sweep))
    point = stream["operating_point"]
    lines.append(
        f"the config as it is ({stream['mode']} mode, its thresholds or the model's calibrated ones): "
        f"false rejects {point['false_reject_rate']:.1%}"
        + (
            f", false accepts {point['false_accepts_per_hour']:.2f}/h"
            if point["false_accepts"] is not None
            else ""
        )
    )
    if stream["summary"]:
        figures = ", ".join(f"{k.replace('_', ' ')}: {_figure(v)}" for k, v in stream["summary"].items())
        lines.append(f"one threshold for every word: {figures}")
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.3g}"


def _top_confusion(confusion: dict[str, Any], word: str) -> str:
    row = confusion["counts"][confusion["rows_true"].index(word)]
    columns = confusion["columns_predicted"]
    others = [(n, columns[j]) for j, n in enumerate(row) if columns[j] != word and n]
    if not others:
        return "-"
    n, label = max(others)
    return f"{label} ({n})"


def command(args: argparse.Namespace, config: Config) -> int:
    """`kws-daemon eval`; the DET plot's dependency is checked before anything runs."""
    if args.det:
        from kws_daemon.plot import require_matplotlib

        if not args.negatives:
            raise KwsError("--det needs --negatives (false accepts per hour are measured on them)")
        require_matplotlib("--det")
    thresholds = _thresholds(args.thresholds)
    negatives = [Path(p) for p in args.negatives]
    for path in negatives:
        if not path.is_file():
            raise KwsError(f"--negatives {path}: no such file")
    config = replace(config, keywords=None)
    model = load_model(config)
    listed = manifest_clips(Path(args.manifest)) if args.manifest else dir_clips(Path(args.dir))
    known = [c for c in listed if c.word in model.info.labels]
    clips = spread(known, args.limit)
    if not clips:
        raise KwsError(f"none of the clips' words is a label of the model in {model.info.path}")
    metrics, audio = clip_metrics(model, clips)
    result: dict[str, Any] = {
        "model": str(model.info.path),
        "skipped": len(listed) - len(known),
        "clips": metrics,
        "streaming": streaming_metrics(config, model, audio, clips, negatives, thresholds),
    }
    print(report(result), flush=True)
    if args.json:
        write_json(Path(args.json), result)
    if args.det:
        from kws_daemon.plot import det_plot

        det_plot(result["streaming"]["sweep"], Path(args.det), f"DET: {model.info.path.name}")
    return 0
