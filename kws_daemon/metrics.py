"""Latency distributions per pipeline stage, kept in bounded memory for days of uptime."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

# Upper bounds of the histogram buckets, from sub-0.1 ms stages (VAD) to multi-second hook runs.
BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def distribution(ms: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of a sample of times in ms (to the µs) and its size: the one shape
    every benchmark reports. NaN when it is empty, which write_json writes as null."""
    if not len(ms):
        return dict.fromkeys(("p50", "p95", "p99", "max"), float("nan")) | {"count": 0}
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(ms, (50, 95, 99)))
    return {"p50": p50, "p95": p95, "p99": p99, "max": round(float(max(ms)), 3), "count": len(ms)}


@dataclass(frozen=True)
class Histogram:
    """A consistent snapshot: cumulative counts per bound of BUCKETS_MS, then +Inf (== count)."""

    cumulative: tuple[int, ...]
    count: int
    sum_ms: float


class Latency:
    """Exact percentiles over the most recent `capacity` observations, plus all-time bucket counts
    (a Prometheus histogram), count and sum."""

    def __init__(self, capacity: int = 65536) -> None:
        self._values = np.zeros(capacity, dtype=np.float64)
        self._buckets = [0] * (len(BUCKETS_MS) + 1)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0

    def observe(self, ms: float) -> None:
        with self._lock:
            self._values[self.count % len(self._values)] = ms
            self._buckets[bisect.bisect_left(BUCKETS_MS, ms)] += 1
            self.count += 1
            self.total += ms

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> tuple[float, ...]:
        with self._lock:
            n = min(self.count, len(self._values))
            if n == 0:
                return tuple(float("nan") for _ in qs)
            return tuple(float(v) for v in np.percentile(self._values[:n], qs))

    def histogram(self) -> Histogram:
        with self._lock:
            return Histogram(tuple(itertools.accumulate(self._buckets)), self.count, self.total)


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


C = TypeVar("C", bound=Any)


def add_counters(total: C, part: C) -> None:
    """Adds a counters dataclass into a running total, field by field."""
    for f in fields(total):
        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
