"""The level of a stretch of audio: the one meter behind the sound gate, the endpointer's word
loudness and enrolment's level bar."""

from __future__ import annotations

import numpy as np


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples, in dB below full scale (-120 for silence or nothing)."""
    if not len(samples):
        return -120.0
    rms = np.sqrt(np.mean((samples.astype(np.float64) / 32768) ** 2))
    return float(20 * np.log10(max(rms, 1e-6)))
