"""Room noise made from nothing: what a user's box hears between words, for training on a machine
that has no noise recordings.

Coloured noise (white, pink, brown), mains hum with its harmonics, a fan (low-passed noise that
swells), clicks and knocks, a few tones held like music, and babble (several voices at once, from
speech the caller synthesised). Pure functions of a random generator; int16-scaled float32.
"""

from __future__ import annotations

import numpy as np

RATE = 16000


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spectrum *= 1 / np.maximum(f, 20.0) ** (exponent / 2)
    return np.fft.irfft(spectrum, n)


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    base = rng.choice([50.0, 60.0])
    tone = sum(
        rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
        for k in range(1, 8)
    )
    hiss = _coloured(rng, n, 1.0)
    return tone + 0.05 * hiss / (hiss.std() + 1e-9)


def _fan(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _coloured(rng, n, 1.5)
    swell = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * np.arange(n) / RATE)
    return x * swell


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    x = 0.02 * rng.standard_normal(n)
    for at in rng.integers(0, n, size=max(1, n // RATE * int(rng.integers(1, 6)))):
        length = int(rng.integers(40, 800))
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
        x[at : at + length] += burst[: n - at]
    return x


def _tones(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    x = np.zeros(n)
    step = RATE // 2
    for start in range(0, n, step):
        for _ in range(3):
            f = 110 * 2 ** (rng.integers(0, 36) / 12)
            seg = slice(start, min(n, start + step))
            x[seg] += np.sin(2 * np.pi * f * t[seg]) * np.exp(-(t[seg] - t[start]) * 3)
    return x


KINDS = {
    "white": lambda rng, n: _coloured(rng, n, 0.0),
    "pink": lambda rng, n: _coloured(rng, n, 1.0),
    "brown": lambda rng, n: _coloured(rng, n, 2.0),
    "hum": _hum,
    "fan": _fan,
    "clicks": _clicks,
    "tones": _tones,
}


def babble(rng: np.random.Generator, speech: list[np.ndarray], n: int, voices: int = 4) -> np.ndarray:
    """`voices` streams of the given utterances (int16) at once, each joined end to end."""
    out = np.zeros(n)
    for _ in range(voices):
        parts, total = [], 0
        while total < n:
            x = speech[rng.integers(len(speech))].astype(np.float64)
            parts.append(x / (np.abs(x).max() + 1e-9))
            total += len(x)
        out += np.concatenate(parts)[:n] * rng.uniform(0.5, 1.0)
    return out


def room_noises(
    rng: np.random.Generator, seconds: float = 20.0, speech: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """One recording of each kind (and of babble when speech is given), peak 0.5 of full scale."""
    n = int(seconds * RATE)
    made = [make(rng, n) for make in KINDS.values()]
    if speech:
        made.append(babble(rng, speech, n))
    return [(x / (np.abs(x).max() + 1e-9) * 0.5 * 32767).astype(np.float32) for x in made]
