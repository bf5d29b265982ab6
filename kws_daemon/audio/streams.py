"""Audio made up for benchmarks and evaluation: the shipped demo speech in cycles with silence and
room noise, and room noise alone. Deterministic for a seed, so runs compare side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.sources import read_audio
from kws_daemon.errors import KwsError
from kws_daemon.shipped import shipped

RATE = 16000

QUIET_ROOM_DBFS = -55.0


def demo_speech() -> np.ndarray:
    """demo/demo.wav ("yes", "stop", "go", "up" under quiet noise, shipped in the wheel too) at 16 kHz."""
    path = shipped("demo/demo.wav")
    if not path.is_file():
        raise KwsError(f"no --input given and {path} is missing (a broken install?); pass --input")
    samples, rate = read_audio(path)
    return Resampler(rate, RATE)(samples, last=True)


def room_noise(rng: np.random.Generator, n: int, dbfs: float) -> np.ndarray:
    """Pink (1/f) noise at `dbfs` RMS, float in [-1, 1]: a quiet room rather than digital zero."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return noise * (10 ** (dbfs / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12))


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def generated_stream(seconds: float, seed: int = 0) -> np.ndarray:
    """Cycles of demo speech (gain varied), 3 s of digital silence and 5 s of room noise, int16."""
    rng = np.random.default_rng(seed)
    speech = demo_speech().astype(np.float64) / 32768
    total = int(seconds * RATE)
    parts, n = [], 0
    while n < total:
        voiced = speech * 10 ** (rng.uniform(-6, 0) / 20) + room_noise(rng, len(speech), QUIET_ROOM_DBFS - 5)
        for part in (voiced, np.zeros(3 * RATE), room_noise(rng, 5 * RATE, QUIET_ROOM_DBFS)):
            parts.append(part)
            n += len(part)
    return _int16(np.concatenate(parts)[:total])


def idle_stream(seconds: float, seed: int = 1) -> np.ndarray:
    return _int16(room_noise(np.random.default_rng(seed), int(seconds * RATE), QUIET_ROOM_DBFS))


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(path, audio, RATE, subtype="PCM_16")
    return path
