"""Raw PCM from the network (Wyoming audio-chunk payloads) to the mono int16 the pipeline takes.

Wyoming clients send whatever their microphone gives: 8-bit unsigned, 16/24/32-bit signed
little-endian, any number of interleaved channels. Channels are averaged, not picked, so a stereo
microphone with one dead side still gives the speech at half level instead of silence.
"""

from __future__ import annotations

import numpy as np

from kws_daemon.errors import KwsError

WIDTHS = (1, 2, 3, 4)
MAX_CHANNELS = 16


def check_format(rate: object, width: object, channels: object) -> tuple[int, int, int]:
    """The format fields of an audio-start or audio-chunk, validated, or a one-line KwsError."""
    ok = (
        all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels))
        and 8000 <= rate <= 192000  # type: ignore[operator]
        and width in WIDTHS
        and 1 <= channels <= MAX_CHANNELS  # type: ignore[operator]
    )
    if not ok:
        raise KwsError(
            f"audio format rate={rate!r} width={width!r} channels={channels!r} is not supported "
            f"(rate 8000-192000 Hz, width 1-4 bytes, 1-{MAX_CHANNELS} channels)"
        )
    return rate, width, channels  # type: ignore[return-value]


def to_mono_int16(payload: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM (8-bit unsigned, else signed) as mono int16."""
    frame = width * channels
    if len(payload) % frame:
        raise KwsError(f"audio payload of {len(payload)} bytes is not whole frames of {frame} bytes")
    raw = np.frombuffer(payload, np.uint8)
    if width == 1:
        samples = (raw.astype(np.int32) - 128) << 8
    elif width == 2:
        samples = raw.view("<i2").astype(np.int32)
    elif width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = np.where(value >= 1 << 23, value - (1 << 24), value) >> 8
    else:
        samples = raw.view("<i4") >> 16
    if channels > 1:
        samples = samples.reshape(-1, channels).sum(axis=1) // channels
    return samples.astype(np.int16)
