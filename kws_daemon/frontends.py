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


def _mel(hz: np.ndarray, scale: str) -> np.ndarray:
    """Hz -> mel: Slaney (linear to 1 kHz, logarithmic above; librosa, Whisper) or HTK."""
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    log_step = np.log(6.4) / 27.0
    return np.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step)


def _hz(mel: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log_step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


def mel_filters(
    n_fft: int,
    n_mels: int,
    rate: int = 16000,
    fmin: float = 0.0,
    fmax: float = 8000.0,
    scale: str = "slaney",
    slaney_norm: bool = True,
) -> np.ndarray:
    """[n_fft/2 + 1, n_mels] triangular filters, as transformers' mel_filter_bank builds them."""
    fft_freqs = np.linspace(0, rate // 2, n_fft // 2 + 1)
    edges = _hz(np.linspace(_mel(np.array(fmin), scale), _mel(np.array(fmax), scale), n_mels + 2), scale)
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down, up = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    if slaney_norm:
        filters = filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]
    return filters


def power_frames(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """|STFT|^2 [frames, n_fft/2 + 1] with centred frames (reflect padding), as transformers'
    spectrogram(): 1 + len(x) // hop frames."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][: 1 + len(x) // hop]
    return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2


class WhisperInput:
    """int16 samples of one utterance -> `input_features` [mels, frames] of the Whisper encoder."""

    def __init__(self, params: WhisperParams) -> None:
        self.params = params
        self._filters = mel_filters(params.n_fft, params.num_mel_bins)
        self._window = np.hanning(params.n_fft + 1)[:-1]  # periodic Hann

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        p = self.params
        x = np.zeros(p.n_samples, np.float64)
        n = min(len(samples), p.n_samples)
        x[:n] = samples[:n].astype(np.float64) / 32768
        power = power_frames(x, p.n_fft, p.hop_length, self._window)
        log_mel = np.log10(np.maximum(power @ self._filters, 1e-10)).T[:, :-1]
        log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
        return ((log_mel + 4.0) / 4.0).astype(np.float32)


@dataclass(frozen=True)
class ClapParams:
    """ClapFeatureExtractor on a window no longer than max_samples (the daemon's sound windows):
    the window repeated and zero-padded to max_samples, dB mel power; `fusion` stacks 4 copies of
    the HTK-mel spectrogram (fused models), `rand_trunc` gives one of Slaney mel (unfused)."""

    num_mel_bins: int = 64
    n_fft: int = 1024
    hop_length: int = 480
    max_samples: int = 480000  # 10 s at 48 kHz
    fmin: float = 0.0
    fmax: float = 14000.0
    truncation: str = "rand_trunc"
    padding: str = "repeatpad"
    sample_rate: int = 48000


class ClapInput:
    """float samples in [-1, 1) at 48 kHz -> `input_features` [channels, frames, mels] of CLAP."""

    def __init__(self, params: ClapParams) -> None:
        self.params = params
        fused = params.truncation == "fusion"
        self._filters = mel_filters(
            params.n_fft,
            params.num_mel_bins,
            params.sample_rate,
            params.fmin,
            params.fmax,
            scale="htk" if fused else "slaney",
            slaney_norm=not fused,
        )
        self._window = np.hanning(params.n_fft + 1)[:-1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        x = x[: p.max_samples].astype(np.float64)
        if 0 < len(x) < p.max_samples and p.padding in ("repeat", "repeatpad"):
            repeats = p.max_samples // len(x) + (1 if p.padding == "repeat" else 0)
            x = np.tile(x, repeats)[: p.max_samples]
        x = np.pad(x, (0, p.max_samples - len(x)))
        power = power_frames(x, p.n_fft, p.hop_length, self._window)
        db = 10.0 * np.log10(np.maximum(power @ self._filters, 1e-10))
        channels = 4 if p.truncation == "fusion" else 1
        return np.repeat(db[None], channels, axis=0).astype(np.float32)
