"""`kws-daemon eval` on small generated and real clip sets: the harness and its arithmetic."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.audio.sources import read_audio
from kws_daemon.audio.streams import idle_stream, write_wav
from kws_daemon.config import Config, DetectorConfig
from kws_daemon.console import Progress, table
from kws_daemon.errors import KwsError
from kws_daemon.evalcli import LabelledClip, clip_metrics, manifest_clips, spread
from kws_daemon.evaluate import run_stream, sweep_events
from kws_daemon.model import Model, Replay
from kws_daemon.pipeline import RATE
from kws_daemon.service import load_model
from tests.conftest import DEMO_WAV, kws

PNG = b"\x89PNG\r\n\x1a\n"


def _words(root: Path, words: dict[str, int]) -> Path:
    """A --dir tree: per word, clips cut from demo.wav's speech (what they say does not matter here)."""
    demo, _ = read_audio(DEMO_WAV)
    for i, (word, n) in enumerate(words.items()):
        (root / word).mkdir(parents=True)
        for j in range(n):
            start = ((i * 3 + j) % 7) * RATE
            write_wav(root / word / f"{j}.wav", demo[start : start + RATE])
    return root


def test_eval_dir_writes_metrics_json_and_det_curve(tmp_path: Path) -> None:
    clips = _words(tmp_path / "clips", {"yes": 3, "stop": 2, "hello": 2})
    negatives = write_wav(tmp_path / "room.wav", idle_stream(30))
    out, det = tmp_path / "eval.json", tmp_path / "det.png"
    result = kws(
        "eval", "--dir", str(clips), "--negatives", str(negatives), "--thresholds", "0.5,0,0.9",
        "--json", str(out), "--det", str(det),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    data = json.loads(out.read_text())
    assert data["skipped"] == 2  # "hello" is no label of the model
    assert data["clips"]["clips"] == 5 and set(data["clips"]["per_word"]) == {"yes", "stop"}
    confusion = data["clips"]["confusion"]
    assert confusion["rows_true"] == ["stop", "yes"]
    assert np.sum(confusion["counts"]) == 5 and len(confusion["columns_predicted"]) == 36
    stream = data["streaming"]
    assert stream["keywords_placed"] == 5 and stream["negative_hours"] == pytest.approx(30 / 3600)
    assert [s["threshold"] for s in stream["sweep"]] == [0.0, 0.5, 0.9]
    zero = stream["sweep"][0]
    assert zero["false_accepts_per_hour"] == pytest.approx(zero["false_accepts"] / (30 / 3600))
    assert det.read_bytes().startswith(PNG)
    stdout = result.stdout.decode()
    assert (
        "accuracy" in stdout and "false accepts/h" in stdout and "(2 clips of words the model lacks" in stdout
    )
    assert "eval: clips [" in result.stderr.decode()


class _Fixed(Model):
    """Posteriors that say a given label for each clip, in order."""

    def __init__(self, model: Model, said: list[str]) -> None:
        self.info = model.info
        self._said = iter(said)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(windows), len(self.info.labels)), dtype=np.float32)
        for row in out:
            row[self.info.labels.index(next(self._said))] = 1.0
        return out


def test_precision_recall_and_confusion_arithmetic(tmp_path: Path) -> None:
    _words(tmp_path, {"yes": 3, "no": 2})
    clips = [LabelledClip(p, p.parent.name) for p in sorted(tmp_path.rglob("*.wav"))]  # no, no, yes x3
    model = _Fixed(load_model(Config()), ["no", "yes", "yes", "yes", "up"])
    metrics, audio = clip_metrics(model, clips)
    assert len(audio) == 5 and metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["per_word"]["no"] == {"clips": 2, "precision": 1.0, "recall": 0.5}
    assert metrics["per_word"]["yes"] == {
        "clips": 3,
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
    }
    labels = metrics["confusion"]["columns_predicted"]
    yes_row = metrics["confusion"]["counts"][metrics["confusion"]["rows_true"].index("yes")]
    assert yes_row[labels.index("yes")] == 2 and yes_row[labels.index("up")] == 1


def test_threshold_sweep_replays_exactly_what_the_model_gives() -> None:
    """The sweep runs the model once; each threshold must still see the events of a direct run."""
    audio, _ = read_audio(DEMO_WAV)
    config = Config(detector=DetectorConfig(smoothing=1))
    model = load_model(config)
    every = Config(detector=DetectorConfig(smoothing=1, threshold=0.0))
    scores = sorted(e.score for e in run_stream(every, model, audio))
    thresholds = [0.0, scores[len(scores) // 2], scores[-1]]  # all events, about half, the top one
    swept = sweep_events(config, model, audio, thresholds, "test")
    for threshold, events in zip(thresholds, swept, strict=True):
        direct = run_stream(Config(detector=DetectorConfig(smoothing=1, threshold=threshold)), model, audio)
        assert [(e.keyword, e.time_s, e.score) for e in events] == [
            (e.keyword, e.time_s, e.score) for e in direct
        ]
    assert len(swept[0]) > len(swept[-1])


def test_replay_serves_recorded_posteriors_in_order() -> None:
    model = load_model(Config())
    replay = Replay(model)
    windows = np.random.default_rng(0).standard_normal((2, 1, *model_shape(model))).astype(np.float32)
    first = [replay(w) for w in windows]
    replay.rewind()
    assert all(np.array_equal(replay(np.zeros_like(w)), f) for w, f in zip(windows, first, strict=True))


def model_shape(model: Model) -> tuple[int, int]:
    return model.window_shape


def test_manifest_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "m.tsv").write_text("relpath\tword\tspeaker_id\na/1.wav\tyes\tx\nb/2.flac\tno\ty\n")
    assert manifest_clips(tmp_path / "m.tsv") == [
        LabelledClip(tmp_path / "a" / "1.wav", "yes"),
        LabelledClip(tmp_path / "b" / "2.flac", "no"),
    ]
    (tmp_path / "bad.tsv").write_text("path,label\nx,y\n")
    with pytest.raises(KwsError, match="relpath and word"):
        manifest_clips(tmp_path / "bad.tsv")


def test_spread_keeps_the_whole_range() -> None:
    items = [LabelledClip(Path(str(i)), "yes") for i in range(100)]
    picked = spread(items, 10)
    assert len(picked) == 10 and picked[0] is items[0] and picked[-1] is items[90]
    assert spread(items, None) == items == spread(items, 500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dir", "nowhere"], "--dir nowhere: not a directory"),
        (["--dir", "demo", "--det", "x.png"], "--det needs --negatives"),
        (["--dir", "demo", "--negatives", "none.wav"], "--negatives none.wav: no such file"),
        (["--dir", "demo", "--thresholds", "a,b"], "--thresholds a,b: give comma-separated numbers"),
    ],
)
def test_eval_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = kws("eval", *args)
    errors = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(errors) == 1 and message in errors[0], errors


def test_progress_redraws_on_a_terminal_and_prints_once_on_a_pipe() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, tty = io.StringIO(), Tty()
    for stream in (piped, tty):
        bar = Progress("work", 4, stream=stream)
        bar._drawn = 0.0  # as if the last redraw were long ago
        bar.advance(2)
        bar.advance(2)  # within 0.1 s of the last redraw: not drawn
        bar.close()
    assert piped.getvalue().count("\n") == 1 and "\r" not in piped.getvalue()
    assert "4/4" in piped.getvalue() and "#" * 30 in piped.getvalue()
    assert tty.getvalue().startswith("\rwork [" + "#" * 15 + "." * 15 + "] 2/4")
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("s\n")


def test_table_aligns_columns_and_shows_unmeasured_as_dash() -> None:
    text = table(["word", "recall"], [["yes", 0.5], ["sheila", float("nan")]])
    assert text.splitlines() == ["word    recall", "------  ------", "yes        0.5", "sheila       -"]


@pytest.mark.real_data
def test_eval_on_real_recordings(kws_real: Path, tmp_path: Path) -> None:
    noise = sorted(kws_real.glob("noise_*/_background_noise_/*.flac"))[:1]
    out = tmp_path / "eval.json"
    result = kws(
        "eval", "--manifest", str(kws_real / "manifest.tsv"), "--limit", "40", "--thresholds", "0.5",
        "--negatives", *map(str, noise), "--json", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    data = json.loads(out.read_text())
    assert data["clips"]["clips"] == 40 and 0.0 <= data["clips"]["accuracy"] <= 1.0
    assert len(data["clips"]["per_word"]) >= 10  # spread over the manifest, not its first word
    assert data["streaming"]["keywords_placed"] == 40 and data["streaming"]["negative_hours"] > 0
