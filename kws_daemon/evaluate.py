"""Accuracy as users meet it: clips through the model, and long streams through the daemon's pipeline.

Clip accuracy says whether the model knows the words; the streaming numbers (false accepts per hour
of non-keyword audio, false rejects of keywords placed in a stream) say whether the daemon, with its
VAD gate, windows, smoothing and thresholds, fires when it should and only then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.config import Config
from kws_daemon.console import Progress
from kws_daemon.detector import KeywordEvent
from kws_daemon.features import pad_and_normalise
from kws_daemon.model import Model, Replay
from kws_daemon.modes import make_pipeline

RATE = 16000


def clip_posteriors(model: Model, features: np.ndarray, batch: int = 64) -> np.ndarray:
    """Posteriors for clips given as an AST's raw log-mel frames [n, frames, mel], or as a
    speech-embedding head's windows [n, frames, 96]."""

    def prepare(rows: np.ndarray) -> np.ndarray:
        if model.info.kind == "embedding":
            return rows.astype(np.float32)
        return np.stack([pad_and_normalise(f.astype(np.float32), model.info.fbank) for f in rows])

    out = [model(prepare(features[i : i + batch])) for i in range(0, len(features), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(model.info.labels)))


def run_stream(
    config: Config,
    model: Model,
    audio: np.ndarray,
    progress: Callable[[float], None] | None = None,
) -> list[KeywordEvent]:
    """The events the daemon would fire on this int16 16 kHz audio; `progress` gets seconds done per block."""
    pipeline = make_pipeline(config, model)
    block = RATE * config.audio.block_ms // 1000
    events: list[KeywordEvent] = []
    for i in range(0, len(audio), block):
        events += pipeline.process(AudioBlock(audio[i : i + block], RATE, time.monotonic(), time.time()))
        if progress is not None:
            progress(min(block, len(audio) - i) / RATE)
    return events + pipeline.flush()


def replay_runs(
    configs: Sequence[Config], model: Model, audio: np.ndarray, what: str
) -> list[list[KeywordEvent]]:
    """The events under each config (which may differ in thresholds only); the model runs on the
    first pass only, because which windows get scored depends on the audio and the VAD, never on
    the thresholds."""
    replay = Replay(model)
    progress = Progress(what, len(audio) / RATE, " s")
    runs = []
    for i, config in enumerate(configs):
        runs.append(run_stream(config, replay, audio, progress=progress.advance if i == 0 else None))
        replay.rewind()
    progress.close()
    return runs


def sweep_events(
    config: Config, model: Model, audio: np.ndarray, thresholds: Sequence[float], what: str
) -> list[list[KeywordEvent]]:
    """The events with every armed keyword at each threshold in turn."""
    return replay_runs(swept(config, thresholds), model, audio, what)


def swept(config: Config, thresholds: Sequence[float]) -> list[Config]:
    """The config with every armed keyword at each threshold in turn."""
    return [replace(config, detector=replace(config.detector, threshold=t)) for t in thresholds]


@dataclass(frozen=True)
class Placement:
    """A keyword placed in a stream: its label and where its audio lies (seconds)."""

    label: str
    start_s: float
    end_s: float


@dataclass
class StreamScore:
    hits: int = 0
    misses: int = 0
    wrong: int = 0  # fired another keyword on a placed keyword
    extra: int = 0  # fired where no keyword was placed
    missed_labels: list[str] = field(default_factory=list)

    @property
    def false_reject_rate(self) -> float:
        total = self.hits + self.misses
        return self.misses / total if total else float("nan")


def score_stream(
    events: Sequence[KeywordEvent], placements: Sequence[Placement], tail_s: float = 1.0
) -> StreamScore:
    """Matches events to placements: an event counts for a placement if it ends within its audio or tail."""
    score = StreamScore()
    used: set[int] = set()
    for p in placements:
        matches = [
            i for i, e in enumerate(events) if p.start_s < e.time_s <= p.end_s + tail_s and i not in used
        ]
        right = [i for i in matches if events[i].keyword == p.label]
        if right:
            score.hits += 1
            used.add(right[0])
        else:
            score.misses += 1
            score.missed_labels.append(p.label)
        wrong = [i for i in matches if events[i].keyword != p.label]
        score.wrong += len(wrong)
        used.update(wrong)
    score.extra = len(events) - len(used)
    return score
