"""`kws-daemon train-keyword`: a custom phrase trained for real (synthetic voices, a few epochs),
interrupted and resumed, then run by `detect`, `run`, a `models:` group and `serve`."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws_daemon.errors import UsageError
from kws_daemon.model import ModelInfo
from kws_daemon.trainkwcli import phrase_of
from tests.conftest import DEMO_WAV, ROOT, kws

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
QUICK = ("--voices", "12", "--epochs", "3", "--calibration-hours", "0.02")


def test_phrases_become_labels_and_bad_ones_are_one_line_errors() -> None:
    assert phrase_of("  Hey   Kitchen ") == "hey kitchen"
    assert phrase_of("don't stop-now") == "don't stop-now"
    for bad, why in [
        ("", "empty"),
        ("   ", "empty"),
        ("1 2 3", "no letters"),
        ("hey!", "only letters"),
        ("a\x00b", "only letters"),
    ]:
        with pytest.raises(UsageError, match=why):
            phrase_of(bad)
    with pytest.raises(UsageError, match="characters"):
        phrase_of("word " * 20)


def test_bad_arguments_fail_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("something of the user's")
    cases = [
        (("  ",), 2, "empty"),
        (("hey", "--recordings", str(tmp_path / "nowhere")), 2, "no such file"),
        (("hey", "--target-fa", "0"), 2, "target-fa"),
    ]
    for args, code, text in cases:
        result = kws("train-keyword", *args, "--output", str(tmp_path / "out"))
        err = result.stderr.decode()
        assert result.returncode == code and text in err, err
        assert len(err.strip().splitlines()) == 1
    result = kws("train-keyword", "hey", "--output", str(tmp_path / "taken"))
    assert result.returncode == 2 and "--force" in result.stderr.decode()
    assert (tmp_path / "taken" / "x").read_text() == "something of the user's"


@needs_espeak
def test_an_unreadable_recording_is_named(tmp_path: Path) -> None:
    takes = tmp_path / "takes"
    takes.mkdir()
    (takes / "one.wav").write_bytes(b"not audio at all")
    result = kws("train-keyword", "hey kitchen", "--recordings", str(takes), "--output", str(tmp_path / "m"))
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "one.wav" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


@needs_espeak
def test_confusables_sound_close_but_never_the_same() -> None:
    from kws_daemon.toolchain.vocabulary import _phonemes, confusables, negative_words

    near = confusables("seven")
    assert "seven" not in near and {"heven", "eleven", "seventy"} <= set(near)
    assert _phonemes(["seven"])[0] not in _phonemes(near)
    assert "seven" not in negative_words("seven") and "six" in negative_words("seven")
    both = confusables("hey kitchen")
    assert {"hey", "kitchen"} <= set(both) and "hey kitchen" not in both


def test_room_noise_is_every_kind_at_half_scale() -> None:
    from kws_daemon.toolchain.roomnoise import KINDS, room_noises

    rng = np.random.default_rng(0)
    speech = [rng.integers(-3000, 3000, 8000).astype(np.int16)]
    noises = room_noises(rng, seconds=2.0, speech=speech)
    assert len(noises) == len(KINDS) + 1
    for x in noises:
        assert len(x) == 32000 and np.isfinite(x).all()
        assert abs(np.abs(x).max() - 0.5 * 32767) < 1
    spectra = [np.abs(np.fft.rfft(x))[1:] for x in noises[:3]]  # white, pink, brown: ever darker
    highs = [s[len(s) // 2 :].sum() / s.sum() for s in spectra]
    assert highs[0] > highs[1] > highs[2]


def _stream(tmp: Path, parts: list[np.ndarray]) -> Path:
    silence = np.zeros(24000, np.int16)
    audio = np.concatenate([silence] + [x for p in parts for x in (p, silence)])
    path = tmp / "stream.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def _say(text: str, voice: str = "en-us") -> np.ndarray:
    from kws_daemon.toolchain.synth import Voice, synthesise

    return synthesise(Voice("espeak", voice), text)


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> Path:
    """'Hey Kitchen' trained through the command line: interrupted once in its features stage (exit
    130, no output, the synthesis kept), then resumed to the end."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (the offline voices)")
    pytest.importorskip("torch", reason="train-keyword needs the train extra")
    tmp = tmp_path_factory.mktemp("custom")
    out, work = tmp / "hey-kitchen", tmp / "work"
    argv = [sys.executable, "-m", "kws_daemon", "train-keyword", "Hey Kitchen", "--output", str(out)]
    argv += ["--workdir", str(work), *QUICK]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    while "[2/4]" not in seen:
        line = proc.stderr.read(1)
        assert line, seen
        seen += line
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    # 130, or killed by the SIGINT itself when it lands in the interpreter's own shutdown
    assert proc.wait(60) in (130, -signal.SIGINT), seen
    err = proc.stderr.read()
    assert "Traceback" not in err and err.count("\n") <= 1, err
    assert not out.exists() and len(list(work.glob("speech-*.pkl"))) == 1
    t0 = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    speech_s = float(re.search(r"\[1/4\] speech[^\n]*?([\d.]+) s\n", result.stderr).group(1))
    assert speech_s < 5, result.stderr  # the synthesis came from the interrupted run
    assert time.monotonic() - t0 < 600
    assert "wrote" in result.stdout and "commands: threshold" in result.stdout
    return out


@pytest.mark.slow
def test_the_output_is_a_model_directory_like_any_other(custom: Path) -> None:
    info = ModelInfo.load(custom)
    assert info.labels == ("hey kitchen", "_background_") and info.kind == "embedding"
    kws_json = json.loads((custom / "kws.json").read_text())
    assert set(kws_json["thresholds"]) == {"commands", "running"}
    assert all(0.5 <= t["hey kitchen"] <= 0.99 for t in kws_json["thresholds"].values())
    assert kws_json["trained"]["voices"] == 12 and kws_json["phrase"] == "hey kitchen"
    card = (custom / "MODEL_CARD.md").read_text()
    assert "hey kitchen" in card and "held-out voices" in card
    assert (custom / "NOTICE").is_file()
    shown = kws("info", str(custom))
    assert shown.returncode == 0 and "hey kitchen" in shown.stdout.decode()
    assert "commands_recall_held_out_voices" in shown.stdout.decode()  # the card's headline


@pytest.mark.slow
def test_detect_finds_the_phrase_said_by_voices_it_never_heard(custom: Path, tmp_path: Path) -> None:
    """(Whether the word alone fires is a matter of the model's quality: this quick one, 12 voices
    and 3 epochs, may; docs/custom-keywords.md measures full ones.)"""
    voices = ["en-us+f5", "en-gb-x-rp+m7", "en-029+klatt"]
    stream = _stream(tmp_path, [_say("hey kitchen", v) for v in voices])
    result = kws("detect", "--model", str(custom), "--json", str(stream))
    assert result.returncode == 0, result.stderr
    found = [(e["keyword"], e["time_s"]) for e in map(json.loads, result.stdout.decode().splitlines())]
    assert len([k for k, _ in found if k == "hey kitchen"]) >= 2, found


@pytest.mark.slow
def test_run_fires_hooks_with_the_phrase(custom: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {custom}\nhooks: [{{jsonl: {events}}}]\n")
    stream = _stream(tmp_path, [_say("hey kitchen")])
    result = kws("run", "--config", str(config), "--input", str(stream), "--fast")
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["keyword"] for x in events.read_text().splitlines()] == ["hey kitchen"]


@pytest.mark.slow
def test_a_models_group_hears_the_phrase_and_every_default_word(custom: Path, tmp_path: Path) -> None:
    alone = kws("detect", "--json", str(DEMO_WAV))
    demo_words = [json.loads(x)["keyword"] for x in alone.stdout.decode().splitlines()]
    assert len(demo_words) >= 3
    demo, _ = sf.read(DEMO_WAV, dtype="int16")
    stream = _stream(tmp_path, [_say("hey kitchen"), demo])
    config = tmp_path / "group.yaml"
    config.write_text(f"models: [default, {custom}]\n")
    result = kws("detect", "--config", str(config), "--json", str(stream))
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["keyword"] for x in result.stdout.decode().splitlines()] == [
        "hey kitchen",
        *demo_words,
    ]


@pytest.mark.slow
def test_wyoming_info_lists_every_models_keywords(custom: Path, tmp_path: Path) -> None:
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    from tests.wyoming_server import Server, read_until, run

    server = Server(tmp_path, serve="workers: 1", extra=f"models: [default, {custom}]\n")
    try:

        async def describe() -> Info:
            async with AsyncTcpClient("127.0.0.1", server.port) as client:
                await client.write_event(Describe().event())
                return Info.from_event((await read_until(client, "info"))[-1])

        (program,) = run(describe()).wake
        names = {m.name for m in program.models}
        assert {"hey kitchen", "yes", "marvin"} <= names and len(names) == 36
        phrase = next(m for m in program.models if m.name == "hey kitchen")
        assert phrase.phrase == "hey kitchen" and "phrase" in phrase.description
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_tune_eval_and_bench_take_it(custom: Path, tmp_path: Path) -> None:
    clips = tmp_path / "mine" / "hey kitchen"
    clips.mkdir(parents=True)
    for i, voice in enumerate(["en-us+f5", "en-gb-x-rp+m7"]):
        sf.write(clips / f"{i}.wav", _say("hey kitchen", voice), 16000, subtype="PCM_16")
    quiet = tmp_path / "room.wav"
    sf.write(quiet, np.random.default_rng(0).normal(0, 30, 16000 * 20).astype(np.int16), 16000)
    tuned = kws(
        "tune", "--model", str(custom), "--negatives", str(quiet), "--positives", str(tmp_path / "mine")
    )
    assert tuned.returncode == 0, tuned.stderr
    assert "hey kitchen" in tuned.stdout.decode()
    evaluated = kws("eval", "--model", str(custom), "--dir", str(tmp_path / "mine"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "hey kitchen" in evaluated.stdout.decode()
    benched = kws("bench", "--model", str(custom), "--duration", "10", "--idle", "0")
    assert benched.returncode == 0, benched.stderr
