"""Model inputs other than the AST's log-mel (features.py): what each model family's Hugging Face
feature extractor computes, in numpy, held to transformers' extractors by tests/test_frontends.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WaveformParams:
    """Wav2Vec2FeatureExtractor (wav2vec2, HuBERT, WavLM, XLS-R): the 16 kHz samples themselves,
    with zero mean and unit variance over the utterance when `do_normalize`."""

    do_normalize: bool = True


def waveform_input(samples: np.ndarray, params: WaveformParams) -> np.ndarray:
    """int16 samples -> the float32 `input_values` row of one utterance."""
    x = samples.astype(np.float32) / 32768
    if params.do_normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return x.astype(np.float32)
