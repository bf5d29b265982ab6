"""Accuracy as users meet it: clips through the model, and long streams through the daemon's pipeline.

Clip accuracy says whether the model knows the words; the streaming numbers (false accepts per hour
of non-keyword audio, false rejects of keywords placed in a stream) say whether the daemon, with its
VAD gate, windows, smoothing and thresholds, fires when it should and only then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent
from kws_daemon.features import pad_and_normalise
from kws_daemon.model import Model
from kws_daemon.pipeline import Pipeline

RATE = 16000


def clip_posteriors(model: Model, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Posteriors for clips given as raw log-mel frames [n, frames, mel]."""
    params = model.info.fbank
    out = [
        model(np.stack([pad_and_normalise(f.astype(np.float32), params) for f in frames[i : i + batch]]))
        for i in range(0, len(frames), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(model.info.labels)))


def run_stream(
    config: Config,
    model: Model,
    audio: np.ndarray,
    block: int = 480,
    progress: Callable[[float], None] | None = None,
) -> list[KeywordEvent]:
    """The events the daemon would fire on this int16 16 kHz audio; `progress` gets seconds done per block."""
    pipeline = Pipeline(config, model)
    events: list[KeywordEvent] = []
    for i in range(0, len(audio), block):
        events += pipeline.process(AudioBlock(audio[i : i + block], RATE, time.monotonic(), time.time()))
        if progress is not None:
            progress(min(block, len(audio) - i) / RATE)
    return events + pipeline.flush()


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
