"""Sample-rate conversion to the model's 16 kHz, streaming, with libsoxr (python-soxr).

Many USB microphones only capture at 44.1 or 48 kHz, and recordings come at any rate; soxr's
streaming resampler keeps its filter state across blocks, so block boundaries leave no clicks.
"""

from __future__ import annotations

import numpy as np


class Resampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)
