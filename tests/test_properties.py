"""Property-based: whatever a config file or an audio file holds, the answer is a config, a result or
a one-line user error, never an unhandled exception. Example counts stay modest (shared CI cores)."""

from __future__ import annotations

import contextlib
import io
import signal
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kws_daemon.audio.sources import read_audio
from kws_daemon.cli import main
from kws_daemon.config import Config, load, parse
from kws_daemon.errors import ConfigError, KwsError

SETTINGS = settings(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
KEYS = [
    *("model", "audio", "vad", "detector", "keywords", "hooks", "stats_interval_s", "metrics"),
    *("device", "input", "realtime", "loop", "sample_rate", "block_ms", "buffer_s", "enabled"),
    *("aggressiveness", "frame_ms", "hangover_ms", "pre_roll_ms", "window_ms", "hop_ms", "smoothing"),
    *("threshold", "refractory_ms", "threads", "listen", "name", "command", "webhook", "jsonl", "timeout_s"),
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["yes", "no", "-", "http://127.0.0.1:1/x", "file:///etc/passwd", "9464", "[::1]:1"])
    # strings the OS or the URL parser refuse: a NUL, a file name over 255 bytes, bad ports and hosts
    | st.sampled_from(["a\0b", "x" * 300, "http://[::1", "http://a:99999/", "http://:80/", "https://"])
)
# YAML-shaped data near the schema: known keys, any values, nested
DATA = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
# A fuzzing dictionary: YAML syntax and the values that PyYAML's own constructors choke on
# (impossible dates, bad tagged scalars, merge keys, deep nesting).
TOKENS = [
    *KEYS,
    *(":", " ", "\n", "  ", "- ", "? ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: ", "'", '"', "#", "\t"),
    *("!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!python/name:x ", "%YAML 1.1\n---\n"),
    *("2001-02-30", "2001-01-01", "1e400", ".nan", "-.inf", "0x1F", "0o9", "~", "yes", "\\0", "é", "\x00"),
    "[" * 2000,
    "- " * 2000,
]
YAML_TEXT = st.text(max_size=300) | st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


def _config_or_error(make: Any) -> None:
    try:
        assert isinstance(make(), Config)
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(SETTINGS, max_examples=300)
@given(st.dictionaries(st.sampled_from(KEYS[:8]), DATA, max_size=5) | DATA)
@example({"model": "x" * 300})  # Path.exists() raised ENAMETOOLONG
@example({"hooks": [{"webhook": "http://[::1"}]})  # urlparse raised ValueError
@example({"\n": None})  # an error message on two lines
def test_any_yaml_data_gives_a_config_or_a_config_error(data: Any) -> None:
    _config_or_error(lambda: parse(data))
    _config_or_error(lambda: parse({"hooks": [data], "keywords": [data]}))


@SETTINGS
@given(YAML_TEXT | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example("a: 2001-02-30")  # the crashes found so far: ValueError,
@example("[" * 2000)  # RecursionError,
@example("x: !!float ''")  # IndexError,
@example("x: !!timestamp x")  # AttributeError
def test_any_config_file_gives_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        _config_or_error(lambda: load(path))


@contextlib.contextmanager
def _within(seconds: float) -> Any:
    """Turns a hang (a decoder that loops forever) into a failure."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _wav_header(fmt: int, channels: int, rate: int, bits: int, data_len: int) -> bytes:
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block & 0xFFFFFFFF, block & 0xFFFF, bits)
    riff_len = (36 + data_len) & 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", riff_len)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt_chunk
        + (b"data" + struct.pack("<I", data_len & 0xFFFFFFFF))
    )


# Arbitrary bytes, and WAV headers with arbitrary fields (rate 0 or 4 GHz, 0 channels, 7 bits...)
# followed by arbitrary data: the second reaches the decoder instead of stopping at the magic number.
AUDIO_BYTES = st.binary(max_size=4000) | st.builds(
    lambda header, data: header + data,
    st.builds(
        _wav_header,
        st.sampled_from([1, 3]) | st.sampled_from([6, 7, 0xFFFE, 0]),
        st.integers(1, 8) | st.integers(0, 300),
        st.sampled_from([1, 33, 999, 1000, 8000, 16000, 44100, 384000, 384001]) | st.integers(0, 2**32 - 1),
        st.sampled_from([8, 16, 24, 32]) | st.sampled_from([0, 7, 64]),
        st.integers(0, 2**32 - 1),
    ),
    st.binary(max_size=4000),
)


@contextlib.contextmanager
def _as_file(blob: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clip.wav"
        path.write_bytes(blob)
        yield path


RATE_1_HZ = _wav_header(1, 1, 1, 16, 8000) + bytes(8000)  # empty blocks: read forever


@settings(SETTINGS, max_examples=200)
@given(AUDIO_BYTES)
@example(RATE_1_HZ)
def test_any_bytes_read_as_audio_give_audio_or_a_kws_error(blob: bytes) -> None:
    with _as_file(blob) as path:
        try:
            with _within(20):
                audio, rate = read_audio(path)
        except KwsError as e:
            assert "\n" not in str(e)
        else:
            assert audio.dtype.name == "int16" and audio.ndim == 1 and 1000 <= rate <= 384000


@settings(SETTINGS, max_examples=30)
@given(AUDIO_BYTES)
@example(RATE_1_HZ)
def test_detect_on_any_bytes_exits_0_1_or_2_with_one_line_errors(blob: bytes) -> None:
    with _as_file(blob) as path:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), _within(30):
            status = main(["detect", "--threshold", "0", str(path)])
    errors = [line for line in err.getvalue().splitlines() if "error:" in line]
    assert status in (0, 1, 2), err.getvalue()
    assert "error: internal:" not in err.getvalue() and "Traceback" not in err.getvalue()
    assert len(errors) == (1 if status else 0), err.getvalue()
