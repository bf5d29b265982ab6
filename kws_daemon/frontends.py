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


@dataclass(frozen=True)
class WhisperParams:
    """WhisperFeatureExtractor: log10 mel power of 25 ms frames every 10 ms, over the utterance
    padded with zeros (or cut) to chunk_length seconds, clamped to 8 below its peak, scaled."""

    num_mel_bins: int = 80
    n_fft: int = 400
    hop_length: int = 160
    n_samples: int = 480000  # 30 s: the encoder's fixed input


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Hz -> mel on the Slaney scale: linear to 1 kHz, logarithmic above."""
    log_step = np.log(6.4) / 27.0
    return np.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    log_step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


def slaney_mel_filters(n_fft: int, n_mels: int, rate: int = 16000, fmax: float = 8000.0) -> np.ndarray:
    """[n_fft/2 + 1, n_mels] triangular filters, Slaney-normalised (librosa's and Whisper's)."""
    fft_freqs = np.linspace(0, rate // 2, n_fft // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(np.array(0.0)), _slaney_mel(np.array(fmax)), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down, up = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]


class WhisperInput:
    """int16 samples of one utterance -> `input_features` [mels, frames] of the Whisper encoder."""

    def __init__(self, params: WhisperParams) -> None:
        self.params = params
        self._filters = slaney_mel_filters(params.n_fft, params.num_mel_bins)
        self._window = np.hanning(params.n_fft + 1)[:-1]  # periodic Hann

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        p = self.params
        x = np.zeros(p.n_samples, np.float64)
        n = min(len(samples), p.n_samples)
        x[:n] = samples[:n].astype(np.float64) / 32768
        padded = np.pad(x, p.n_fft // 2, mode="reflect")
        count = 1 + p.n_samples // p.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(padded, p.n_fft)[:: p.hop_length][:count]
        power = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        log_mel = np.log10(np.maximum(power @ self._filters, 1e-10)).T[:, :-1]
        log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
        return ((log_mel + 4.0) / 4.0).astype(np.float32)
