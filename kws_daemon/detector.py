"""Posteriors of successive windows -> keyword events.

A keyword fires when, averaged over the last `smoothing` windows, it is the most likely label
(background included) and reaches its threshold; then nothing fires for `refractory_s`, since the
windows that follow still hold the same utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KeywordEvent:
    keyword: str
    score: float
    time_s: float  # end of the detecting window, seconds into the stream
    t_wall: float  # unix time at which that audio was captured
    t_mono: float  # the same instant on the monotonic clock, for latency
    source: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyword": self.keyword,
            "score": round(self.score, 4),
            "time": round(self.t_wall, 3),
            "time_s": round(self.time_s, 3),
            "source": self.source,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
        }


def threshold_vector(labels: tuple[str, ...], thresholds: dict[str, float]) -> np.ndarray:
    """Each label's threshold, by label index; labels not armed (background) never reach theirs."""
    vector = np.full(len(labels), np.inf)
    for name, threshold in thresholds.items():
        vector[labels.index(name)] = threshold
    return vector


class Detector:
    def __init__(
        self,
        labels: tuple[str, ...],
        thresholds: dict[str, float],
        smoothing: int = 3,
        refractory_s: float = 1.0,
    ) -> None:
        self.labels = labels
        self._threshold = threshold_vector(labels, thresholds)
        self._history: deque[np.ndarray] = deque(maxlen=smoothing)
        self._refractory_s = refractory_s
        self._quiet_until = -np.inf

    def reset(self) -> None:
        """Forgets the smoothing history: the next window does not follow the last one."""
        self._history.clear()

    def __call__(self, posteriors: np.ndarray, time_s: float) -> tuple[str, float] | None:
        self._history.append(posteriors)
        smoothed = np.mean(self._history, axis=0)
        best = int(np.argmax(smoothed))
        score = float(smoothed[best])
        if time_s < self._quiet_until or score < self._threshold[best]:
            return None
        self._quiet_until = time_s + self._refractory_s
        self._history.clear()
        return self.labels[best], score
