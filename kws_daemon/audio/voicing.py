"""Where the voice is, from the audio's energy alone: the truth that VAD-based decisions (and their
latency) are measured against, and how training cuts digit strings into digits.

Frames of 10 ms that are `above_floor_db` over the recording's noise floor (the 10th percentile
of its frames that are not digital silence)
and within `below_peak_db` of its loudest are voiced; runs closer than `gap_frames` are merged and
runs shorter than `min_frames` dropped. Pure numpy, no model.
"""

from __future__ import annotations

import numpy as np

FRAME = 160  # 10 ms at 16 kHz


def voiced_runs(
    audio: np.ndarray,
    gap_frames: int = 8,
    min_frames: int = 8,
    above_floor_db: float = 12.0,
    below_peak_db: float = 40.0,
) -> list[tuple[int, int]]:
    """Voiced stretches as (start, end) sample indices of int16 audio at 16 kHz."""
    x = audio.astype(np.float32) / 32768
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    if not len(frames):
        return []
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    level = np.convolve(level, np.ones(3) / 3, mode="same")
    sound = level[level > -90]  # digital silence is no noise floor
    floor = np.percentile(sound, 10) if len(sound) else -90.0
    voiced = level > max(floor + above_floor_db, level.max() - below_peak_db)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(int), [0]])))
    merged: list[list[int]] = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if merged and start - merged[-1][1] < gap_frames:
            merged[-1][1] = int(end)
        else:
            merged.append([int(start), int(end)])
    return [(a * FRAME, b * FRAME) for a, b in merged if b - a >= min_frames]
