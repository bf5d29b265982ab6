"""Wyoming payloads to mono int16, held to the wyoming library's own converter (audioop)."""

from __future__ import annotations

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioChunkConverter

from kws_daemon.audio.pcm import check_format, to_mono_int16
from kws_daemon.errors import KwsError

RNG = np.random.default_rng(0)
SPEECH = (RNG.standard_normal(4000) * 6000).clip(-32768, 32767).astype(np.int16)


def _library(payload: bytes, width: int, channels: int) -> np.ndarray:
    chunk = AudioChunk(rate=16000, width=width, channels=channels, audio=payload)
    return np.frombuffer(AudioChunkConverter(width=2, channels=1).convert(chunk).audio, np.int16)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_each_width_matches_the_wyoming_converter(width: int) -> None:
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=SPEECH.tobytes())
    payload = AudioChunkConverter(width=width).convert(chunk).audio  # the library writes the width
    ours = to_mono_int16(payload, width, 1)
    assert np.array_equal(ours, _library(payload, width, 1))
    tolerance = 256 if width == 1 else 0  # 8-bit keeps the top byte only
    assert np.abs(ours.astype(int) - SPEECH).max() <= tolerance


def test_stereo_is_the_mean_of_both_sides() -> None:
    """The library's converter sums the sides (tomono with factors 1.0), which clips loud speech."""
    left, right = SPEECH, (SPEECH // 3).astype(np.int16)
    payload = np.stack([left, right], axis=1).tobytes()
    ours = to_mono_int16(payload, 2, 2)
    assert np.abs(ours.astype(int) - (left.astype(int) + right) / 2).max() <= 1
    loud = np.stack([np.full(10, 30000, np.int16)] * 2, axis=1).tobytes()
    assert to_mono_int16(loud, 2, 2).tolist() == [30000] * 10
    assert _library(loud, 2, 2).tolist() == [32767] * 10  # clipped


def test_many_channels_and_bad_frames() -> None:
    six = np.repeat(SPEECH[:, None], 6, axis=1)
    assert np.array_equal(to_mono_int16(six.tobytes(), 2, 6), SPEECH)
    with pytest.raises(KwsError, match="whole frames"):
        to_mono_int16(b"\0" * 7, 2, 2)


@pytest.mark.parametrize(
    "fmt", [(16000, 5, 1), (100, 2, 1), (16000, 2, 0), (16000, 2, 17), ("16000", 2, 1), (16000, True, 1)]
)
def test_unsupported_formats_are_refused(fmt: tuple) -> None:
    with pytest.raises(KwsError, match="not supported"):
        check_format(*fmt)
