"""Operating points: misses against false accepts per hour, and thresholds picked for a target.

Pure functions over threshold sweeps (kws_daemon.evaluate.sweep_events), shared by `eval`, `tune`
and the training report, so every one of them reads a DET curve the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kws_daemon.detector import KeywordEvent

# The thresholds `tune` and the training report sweep: finer where useful operating points lie.
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    miss_rate: float  # of the keywords placed in a stream (nan without positives)
    false_accepts_per_hour: float  # on the negative audio (nan without negatives)


def recall_at(curve: Sequence[OperatingPoint], false_accepts_per_hour: float) -> float | None:
    """The best recall among the points with at most this many false accepts an hour."""
    ok = [1 - p.miss_rate for p in curve if p.false_accepts_per_hour <= false_accepts_per_hour]
    return max(ok) if ok else None


def false_accepts_at(curve: Sequence[OperatingPoint], miss_rate: float) -> float | None:
    """The fewest false accepts an hour among the points that miss at most this share."""
    ok = [p.false_accepts_per_hour for p in curve if p.miss_rate <= miss_rate]
    return min(ok) if ok else None


def summary(curve: Sequence[OperatingPoint]) -> dict[str, float | None]:
    """The figures users compare engines by."""
    return {
        "recall_at_0.5_fa_per_hour": recall_at(curve, 0.5),
        "recall_at_1_fa_per_hour": recall_at(curve, 1.0),
        "fa_per_hour_at_5%_misses": false_accepts_at(curve, 0.05),
        "fa_per_hour_at_10%_misses": false_accepts_at(curve, 0.10),
    }


def calibrate(
    thresholds: Sequence[float],
    negative_runs: Sequence[Sequence[KeywordEvent]],
    hours: float,
    target_per_hour: float,
    keywords: Sequence[str],
    floor: float = 0.0,
) -> dict[str, float]:
    """Per-keyword thresholds for about `target_per_hour` false accepts in all.

    Each keyword gets an equal share of the budget and the lowest swept threshold (not below
    `floor`) from which on its own false accepts stay within that share. `negative_runs[i]` are the
    events on the negative audio with every keyword at `thresholds[i]`; a keyword's count at a
    threshold barely depends on the other keywords' thresholds, so one sweep serves all of them.
    """
    share = target_per_hour * hours / max(1, len(keywords))
    counts = [Counter(e.keyword for e in run) for run in negative_runs]
    order = sorted(range(len(thresholds)), key=lambda i: thresholds[i])
    out = {}
    for keyword in keywords:
        chosen = thresholds[order[-1]]
        for rank, i in enumerate(order):
            if thresholds[i] < floor:
                continue
            if all(counts[j][keyword] <= share for j in order[rank:]):
                chosen = thresholds[i]
                break
        out[keyword] = chosen
    return out
