"""Synthesis says which voices it could not use, instead of quietly building a smaller corpus."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from kws_daemon.toolchain.synth import Voice, available_voices, synthesise_all

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_missing_engines_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, flite nor text2wave on it
    caplog.set_level(logging.WARNING, logger="kws_daemon.toolchain.synth")
    assert all(v.engine == "piper" for v in available_voices())
    (warning,) = _warnings(caplog)
    assert warning.startswith("synthesis: not installed, so not used: espeak-ng")
    assert "flite" in warning and "text2wave" in warning


def test_an_engine_that_cannot_run_is_reported_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    caplog.set_level(logging.WARNING, logger="kws_daemon.toolchain.synth")
    voices = [Voice("espeak", "en-us"), Voice("espeak", "en-gb")]
    assert list(synthesise_all(voices, ["yes", "no", "stop"])) == []
    first, summary = _warnings(caplog)
    assert first.startswith("synthesis: espeak:en-us:1:50 could not say 'yes' (FileNotFoundError:")
    assert "espeak-ng" in first
    assert summary == "synthesis: 6 of 6 (voice, text) pairs failed: espeak 6"


@needs_espeak
def test_an_unknown_voice_is_reported_and_the_others_still_speak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kws_daemon.toolchain.synth")
    voices = [Voice("espeak", "en-us"), Voice("espeak", "xx-no-such-voice")]
    spoken = list(synthesise_all(voices, ["yes", "stop"]))
    assert [(v.name, text) for v, text, _ in spoken] == [("en-us", "yes"), ("en-us", "stop")]
    first, summary = _warnings(caplog)
    assert "xx-no-such-voice" in first and "voice does not exist" in first
    assert summary == "synthesis: 2 of 4 (voice, text) pairs failed: espeak 2"
