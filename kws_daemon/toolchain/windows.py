"""Model-input windows for calibration and parity: from a directory of recordings, or synthesised.

Both go through the daemon's own front end (kws_daemon.features), so parity is measured on exactly
the inputs the runtime will feed the model, not on what transformers' extractor would make.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.sources import MODEL_RATE, read_audio
from kws_daemon.errors import KwsError
from kws_daemon.features import Fbank, FbankParams, int16_to_float, pad_and_normalise

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def clip_window(samples: np.ndarray, fbank: Fbank, params: FbankParams) -> np.ndarray:
    """One normalised window [max_length, mel_bins] from a clip's first max_length frames."""
    return pad_and_normalise(fbank(int16_to_float(samples)), params)


def audio_files(directory: Path, limit: int = 200) -> list[Path]:
    """Up to `limit` audio files under `directory`, spread evenly over its sorted listing."""
    if not directory.is_dir():
        raise KwsError(f"--calibration {directory}: not a directory")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise KwsError(f"--calibration {directory}: no .wav, .flac or .ogg files in it")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def recorded_audio(files: list[Path], rate: int = MODEL_RATE) -> list[np.ndarray]:
    """Real recordings (any rate) at `rate`, int16; an unreadable file is an error."""
    out = []
    for path in files:
        samples, file_rate = read_audio(path)
        out.append(Resampler(file_rate, rate)(samples, last=True))
    return out


def recorded_windows(files: list[Path], params: FbankParams) -> np.ndarray:
    """Windows from real recordings (resampled to 16 kHz)."""
    fbank = Fbank(params.num_mel_bins)
    return np.stack([clip_window(samples, fbank, params) for samples in recorded_audio(files)])


def synthetic_windows(params: FbankParams, count: int = 64, seed: int = 0) -> np.ndarray:
    """Windows of generated one-second clips: voiced harmonic sweeps and noise bursts at random onsets.

    Speech-like enough to move an AST off its silence response, with no recordings needed.
    """
    rng = np.random.default_rng(seed)
    fbank = Fbank(params.num_mel_bins)
    t = np.arange(MODEL_RATE) / MODEL_RATE
    windows = []
    for _ in range(count):
        start, length = rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.5)
        envelope = np.clip(np.minimum(t - start, start + length - t) * 20.0, 0.0, 1.0)
        f0 = rng.uniform(90, 260) * (1.0 + rng.uniform(-0.3, 0.3) * (t - start))
        phase = 2 * np.pi * np.cumsum(f0) / MODEL_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, int(3800 / f0.max())))
        noise = rng.standard_normal(MODEL_RATE) * rng.uniform(0.0, 0.5)
        clip = envelope * (voiced + noise) * rng.uniform(0.05, 0.3) + rng.standard_normal(MODEL_RATE) * 1e-3
        samples = (np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)
        windows.append(clip_window(samples, fbank, params))
    return np.stack(windows)
