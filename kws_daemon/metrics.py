"""Latency distributions per pipeline stage, kept in bounded memory for days of uptime."""

from __future__ import annotations

import threading

import numpy as np


class Latency:
    """Exact percentiles over the most recent `capacity` observations, plus an all-time count and sum."""

    def __init__(self, capacity: int = 65536) -> None:
        self._values = np.zeros(capacity, dtype=np.float64)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0

    def observe(self, ms: float) -> None:
        with self._lock:
            self._values[self.count % len(self._values)] = ms
            self.count += 1
            self.total += ms

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> tuple[float, ...]:
        with self._lock:
            n = min(self.count, len(self._values))
            if n == 0:
                return tuple(float("nan") for _ in qs)
            return tuple(float(v) for v in np.percentile(self._values[:n], qs))


class LatencyStats:
    """One Latency per named stage; the pipeline and the hook workers write, the reporter reads."""

    def __init__(self) -> None:
        self._stages: dict[str, Latency] = {}
        self._lock = threading.Lock()

    def observe(self, stage: str, ms: float) -> None:
        latency = self._stages.get(stage)
        if latency is None:
            with self._lock:
                latency = self._stages.setdefault(stage, Latency())
        latency.observe(ms)

    def stages(self) -> dict[str, Latency]:
        with self._lock:
            return dict(self._stages)

    def summary(self) -> str:
        """One line: stage p50/p95/p99 in ms, the way the exit and --stats-interval reports print it."""
        parts = []
        for name, latency in self.stages().items():
            p50, p95, p99 = latency.percentiles()
            parts.append(f"{name} {p50:.2f}/{p95:.2f}/{p99:.2f}")
        return "latency ms p50/p95/p99: " + ("; ".join(parts) if parts else "no windows yet")
