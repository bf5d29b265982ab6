"""The unit that flows from a source to the processing thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioBlock:
    """Mono int16 samples with the clock readings taken when the last sample was captured.

    t_mono is time.monotonic() (for latency), t_wall is time.time() (for event timestamps).
    """

    samples: np.ndarray
    sample_rate: int
    t_mono: float
    t_wall: float
