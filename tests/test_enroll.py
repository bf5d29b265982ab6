"""`kws-daemon enroll`: clean takes of a phrase kept, bad ones refused with the reason, from a
recording and from a live microphone through real PortAudio."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws_daemon.enroll import Enroller, judge
from tests.conftest import kws
from tests.virtual_mic import VirtualMic

RATE = 16000


def _word(seconds: float, rng: np.random.Generator, level: float = 6000) -> np.ndarray:
    """A voiced-sounding burst: harmonics of 140 Hz with a syllable envelope."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = np.sin(np.pi * t / t[-1]) ** 0.5
    return (x / np.abs(x).max() * envelope * level + rng.normal(0, 30, len(t))).astype(np.int16)


def _quiet(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 10, int(seconds * RATE)).astype(np.int16)


def _espeak(text: str) -> np.ndarray:
    from kws_daemon.toolchain.synth import Voice, synthesise

    return synthesise(Voice("espeak", "en-us"), text)


def test_judge_names_what_is_wrong() -> None:
    rng = np.random.default_rng(0)
    clean = np.concatenate([_quiet(0.25, rng), _word(0.6, rng), _quiet(0.25, rng)])
    assert judge(clean, noise_rms=30.0) == ""
    clipped = clean.astype(np.int32) * 8
    assert "clipped" in judge(np.clip(clipped, -32768, 32767).astype(np.int16), 30.0)
    two = np.concatenate([clean, _quiet(0.5, rng), _word(0.5, rng), _quiet(0.25, rng)])
    assert "2 utterances" in judge(two, 30.0)
    assert "too quiet" in judge(clean, noise_rms=3000.0)


def test_the_enroller_keeps_words_said_alone_and_says_why_not_otherwise() -> None:
    rng = np.random.default_rng(1)
    audio = np.concatenate(
        [
            _quiet(1.0, rng),
            _word(0.7, rng),  # a take
            _quiet(1.0, rng),
            _word(4.0, rng),  # talking on
            _quiet(1.0, rng),
            _word(0.6, rng),  # a take
            _quiet(1.0, rng),
        ]
    )
    enroller = Enroller()
    takes = [t for i in range(0, len(audio), 1600) for t in enroller(audio[i : i + 1600])]
    assert [t.problem == "" for t in takes] == [True, False, True]
    assert "s of speech" in takes[1].problem
    for take in (takes[0], takes[2]):
        assert 0.9 < len(take.audio) / RATE < 1.5  # the word and a quarter second either side


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_enroll_from_a_recording_numbers_after_what_is_there(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gap = _quiet(1.2, rng)
    takes = tmp_path / "takes.wav"
    phrase, sentence = (
        _espeak("hey kitchen"),
        _espeak("this is a whole sentence that is not the phrase at all, it goes on and on for a while"),
    )
    sf.write(takes, np.concatenate([gap, phrase, gap, sentence, gap, phrase, gap]), RATE, subtype="PCM_16")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "hey-kitchen-001.wav").write_bytes(b"an earlier take")
    result = kws("enroll", "Hey Kitchen", "--output", str(out), "--count", "2", "--input", str(takes))
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert err.count("not kept") == 1 and err.count("  kept /") == 2
    assert sorted(p.name for p in out.iterdir()) == [f"hey-kitchen-00{i}.wav" for i in (1, 2, 3)]
    assert (out / "hey-kitchen-001.wav").read_bytes() == b"an earlier take"
    kept, rate = sf.read(out / "hey-kitchen-002.wav", dtype="int16")
    assert rate == RATE and 0.5 < len(kept) / RATE < 2.0
    short = kws("enroll", "hey kitchen", "--output", str(out), "--count", "5", "--input", str(takes))
    assert short.returncode == 1 and "kept 2 of 5" in short.stderr.decode()
    assert len(list(out.iterdir())) == 5  # what it kept before the input ran out stays


def test_enroll_refuses_a_bad_phrase_in_one_line(tmp_path: Path) -> None:
    result = kws("enroll", "!!", "--output", str(tmp_path / "x"), "--input", "demo/demo.wav")
    assert result.returncode == 2 and len(result.stderr.decode().strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.live_audio
@pytest.mark.slow
def test_enroll_from_a_live_microphone(tmp_path: Path) -> None:
    reason = VirtualMic.missing()
    if reason:
        pytest.skip(reason)
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    rng = np.random.default_rng(3)
    played = tmp_path / "played.wav"
    gap = _quiet(1.2, rng)
    phrase = _espeak("hey kitchen")
    sf.write(played, np.concatenate([gap, phrase, gap, phrase, gap]), RATE, subtype="PCM_16")
    out = tmp_path / "live"
    with VirtualMic() as mic:
        proc = mic.kws(
            "enroll",
            "hey kitchen",
            "--output",
            str(out),
            "--count",
            "2",
            "--device",
            "pulse",
            "--timeout",
            "20",
        )
        try:
            mic.wait_for_capture()
            mic.play(played)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert len(list(out.glob("hey-kitchen-*.wav"))) == 2
