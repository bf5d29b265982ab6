"""Commands mode: the endpointer, one decision per spoken command, sequences, near-miss capture."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.sources import read_audio
from kws_daemon.audio.vad import VadGate
from kws_daemon.config import (
    Config,
    DetectorConfig,
    KeywordConfig,
    NearMissConfig,
    SequenceConfig,
    parse,
)
from kws_daemon.detector import KeywordEvent
from kws_daemon.endpointer import Endpointer, EndpointerConfig, Segment
from kws_daemon.errors import ConfigError
from kws_daemon.model import Model, ModelInfo, default_model_dir
from kws_daemon.nearmiss import NearMissRecorder
from kws_daemon.pipeline import Pipeline
from kws_daemon.sequences import SequenceMatcher
from tests.conftest import DEMO_WAV

FRAME = 480  # 30 ms VAD frames


def _frames(pattern: str) -> list[bool]:
    """'.' is 30 ms of silence, '#' 30 ms of voice."""
    return [c == "#" for c in pattern]


def test_endpointer_closes_a_word_after_enough_silence() -> None:
    config = EndpointerConfig(silence_before_ms=300, silence_after_ms=200, min_word_ms=120, max_word_ms=1100)
    ep = Endpointer(config, FRAME)
    assert ep(_frames("." * 20 + "#" * 10 + "." * 3)) == []  # 90 ms of silence: not yet
    assert ep.is_open
    (segment,) = ep(_frames("." * 4))
    assert (segment.start, segment.end) == (20 * FRAME, 30 * FRAME)
    assert segment.silence_before > 10**8  # the stream's start counts as silence
    assert segment.is_command(config)
    assert not ep.is_open


def test_pauses_shorter_than_the_endpoint_stay_inside_the_word() -> None:
    ep = Endpointer(EndpointerConfig(silence_after_ms=200), FRAME)
    (segment,) = ep(_frames("." * 12 + "#####...#####" + "." * 8))  # a 90 ms closure, as in "six"
    assert (segment.start, segment.end) == (12 * FRAME, 25 * FRAME)


@pytest.mark.parametrize(
    ("pattern", "is_command"),
    [
        ("." * 12 + "#" * 12, True),  # 360 ms, after 360 ms of silence
        ("." * 2 + "#" * 12, True),  # right at the stream's start
        ("#" * 12 + "." * 34 + "#" * 12, True),  # 360 ms, 1.02 s after another word
        ("#" * 12 + "." * 20 + "#" * 12, False),  # 600 ms after another word: a reader's pause
        ("#" * 12 + "." * 12 + "#" * 3 + "." * 22 + "#" * 12, True),  # a 90 ms click is no word
        ("#" * 12 + "." * 12 + "#" * 5 + "." * 22 + "#" * 12, False),  # 150 ms is one
        ("#" * 12 + "." * 6 + "#" * 12, False),  # 180 ms after another word: running speech
        ("." * 12 + "#" * 40, False),  # 1.2 s: a phrase, not a word
        ("." * 12 + "#" * 3, False),  # 90 ms: a click
    ],
)
def test_a_command_is_one_word_with_silence_before(pattern: str, is_command: bool) -> None:
    config = EndpointerConfig()
    *_, segment = Endpointer(config, FRAME)(_frames(pattern + "." * 10))
    assert segment.is_command(config) is is_command


def test_the_word_after_a_command_needs_no_long_silence() -> None:
    config = EndpointerConfig()
    *_, second = Endpointer(config, FRAME)(_frames("." * 40 + "#" * 12 + "." * 12 + "#" * 12 + "." * 10))
    assert second.silence_before == 12 * FRAME  # 360 ms, under silence_before_ms
    assert not second.is_command(config)
    assert second.is_command(config, after_command=True)


LEVELS = {".": -70.0, "#": -20.0, "=": -26.0, "+": -35.0}  # silence, a word, speech, room noise


def _segments(pattern: str, config: EndpointerConfig) -> list[Segment]:
    """'#' a word's frame (-20 dBFS), '=' speech 6 dB quieter, '+' voiced noise 15 dB quieter."""
    return Endpointer(config, FRAME)([c != "." for c in pattern], [LEVELS[c] for c in pattern])


@pytest.mark.parametrize(
    ("before", "quieter_db", "is_command"),
    [
        ("+" * 8, 10.0, True),  # a clatter of dishes 15 dB below the word: still silence
        ("+" * 8, 100.0, False),  # any voice breaks the silence
        ("=" * 8, 10.0, False),  # speech 6 dB quieter: a sentence running on
        ("#" * 8, 10.0, False),
    ],
)
def test_voice_far_quieter_than_the_word_keeps_the_silence_before_it(
    before: str, quieter_db: float, is_command: bool
) -> None:
    config = EndpointerConfig(quieter_db=quieter_db)
    *_, word = _segments("." * 40 + before + "." * 12 + "#" * 12 + "." * 10, config)
    assert word.peak_db == -20.0
    assert word.is_command(config) is is_command


def test_a_word_is_as_long_as_its_frames_near_its_loudest() -> None:
    """1.2 s voiced, of which 600 ms within 10 dB of the peak: a word in a noise floor the VAD
    voiced, at core_db 10; at core_db 20 the noise counts and it is too long."""
    pattern = "." * 12 + "+" * 10 + "#" * 20 + "+" * 10 + "." * 10
    (segment,) = _segments(pattern, EndpointerConfig(core_db=10))
    assert (segment.duration_ms(), segment.word_ms()) == (1200.0, 600.0)
    assert segment.is_command(EndpointerConfig(core_db=10))
    (segment,) = _segments(pattern, EndpointerConfig(core_db=20))
    assert segment.word_ms() == 1200.0
    assert not segment.is_command(EndpointerConfig(core_db=20))


def test_the_vad_reports_each_frame_level_in_dbfs() -> None:
    t = np.arange(4800) / 16000
    tone = (3276.8 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # -20 dBFS peak: -23 dB power
    vad = VadGate(3, 30, 0)
    vad(np.concatenate([np.zeros(4800, np.int16), tone]))
    assert len(vad.levels) == len(vad.decisions) == 20
    assert vad.levels[:10] == [-120.0] * 10
    assert all(abs(level + 23.0) < 0.2 for level in vad.levels[10:])


def _run(pipeline: Pipeline, audio: np.ndarray, block: int = 1600) -> list[KeywordEvent]:
    events = []
    for i in range(0, len(audio), block):
        events += pipeline.process(AudioBlock(audio[i : i + block], 16000, time.monotonic(), time.time()))
    return events + pipeline.flush()


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(ModelInfo.load(default_model_dir()))


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    return read_audio(DEMO_WAV)[0]


def test_commands_mode_fires_once_per_word_spoken_alone(model: Model, demo: np.ndarray) -> None:
    pipeline = Pipeline(Config(detector=DetectorConfig(threshold=0.5)), model)
    events = _run(pipeline, demo)
    assert [e.keyword for e in events] == ["yes", "stop", "go", "up"]
    assert pipeline.spotter.commands == 4  # type: ignore[union-attr]
    # stamped at the end of the voiced word, not of a window: within the word's 1 s slot of the demo
    for event, slot in zip(events, (1, 3, 5, 6), strict=True):
        assert slot < event.time_s < slot + 1.0


def test_a_keyword_inside_running_speech_is_no_command(model: Model, demo: np.ndarray) -> None:
    """The demo's words twice over without pauses (1.9 s of voice): running mode still hears them,
    commands mode sees one long segment and scores nothing."""
    words = [demo[s : s + 6000] for s in (16000, 48000, 80000, 104000)]
    trimmed = []
    for w in words:
        loud = np.flatnonzero(np.abs(w.astype(np.int32)) > 500)
        trimmed.append(w[loud[0] : loud[-1]])
    sentence = np.concatenate([np.zeros(16000, np.int16), *trimmed, *trimmed, np.zeros(16000, np.int16)])
    commands = Pipeline(Config(detector=DetectorConfig(threshold=0.0)), model)
    assert _run(commands, sentence) == []
    assert commands.spotter.commands == 0  # type: ignore[union-attr]
    running = Pipeline(Config(detector=DetectorConfig(mode="running", threshold=0.0)), model)
    assert _run(running, sentence)


def test_commands_mode_costs_no_inference_on_running_speech(model: Model, demo: np.ndarray) -> None:
    speech = np.concatenate([demo[16000:22000]] * 30)  # 6 s of voice without a pause
    pipeline = Pipeline(Config(), model)
    _run(pipeline, np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(8000, np.int16)]))
    assert pipeline.counters.windows == 0


def test_commands_mode_needs_the_vad() -> None:
    """Also where commands is only the model's default mode: the check runs against the model."""
    info = ModelInfo.load(default_model_dir())
    for data in ({"vad": {"enabled": False}}, {"vad": {"enabled": False}, "detector": {"mode": "commands"}}):
        with pytest.raises(ConfigError, match=r"detector\.mode: 'commands' needs the VAD"):
            parse(data).check_against(info)
    parse({"vad": {"enabled": False}, "detector": {"mode": "running"}}).check_against(info)


def _event(keyword: str, t: float, score: float = 0.9) -> KeywordEvent:
    return KeywordEvent(keyword, score, t, t_wall=1000 + t, t_mono=t)


def test_a_sequence_fires_when_its_words_follow_in_time() -> None:
    lights = SequenceConfig("lights", ("marvin", "on"), within_ms=2000)
    match = SequenceMatcher((lights,), reported={"stop"})
    out = match([_event("marvin", 1.0), _event("on", 2.5, 0.8)])
    assert [(e.keyword, e.score) for e in out] == [("lights", 0.8)]  # the words alone are not reported
    assert match([_event("marvin", 10.0), _event("on", 12.5)]) == []  # too late
    assert match([_event("marvin", 20.0), _event("stop", 20.5), _event("on", 21.0)]) == [_event("stop", 20.5)]
    assert [e.keyword for e in match([_event("on", 30.0), _event("marvin", 31), _event("on", 32)])] == [
        "lights"
    ]


def test_sequences_arm_their_words_and_route_their_hooks(model: Model, demo: np.ndarray) -> None:
    config = parse(
        {
            "keywords": ["up"],
            "sequences": [{"words": ["stop", "go"], "within_ms": 2500, "hooks": [{"jsonl": "-"}]}],
            "detector": {"threshold": 0.5},
        }
    )
    assert config.sequences[0].name == "stop+go"
    events = _run(Pipeline(config, model), demo)
    assert [e.keyword for e in events] == ["stop+go", "up"]


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(s * 16000), np.int16)


@pytest.fixture(scope="module")
def stop_go(demo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The demo's "stop" and "go", each cut around its voiced part."""
    return demo[int(2.75 * 16000) : int(3.4 * 16000)], demo[int(4.65 * 16000) : int(5.2 * 16000)]


def test_a_sequence_may_be_said_at_a_speaking_pace(
    model: Model, demo: np.ndarray, stop_go: tuple[np.ndarray, np.ndarray]
) -> None:
    """The second word follows the first after 0.4 s, far less than silence_before_ms: it counts
    because the first was a command. After running speech the same pause does not."""
    stop, go = stop_go
    config = parse(
        {"keywords": ["up"], "sequences": [{"words": ["stop", "go"]}], "detector": {"threshold": 0.5}}
    )
    said = np.concatenate([_silence(1), stop, _silence(0.4), go, _silence(1)])
    assert [e.keyword for e in _run(Pipeline(config, model), said)] == ["stop+go"]
    running = np.concatenate([demo[16000:22000]] * 5)  # 1.9 s of voice: no command
    events = _run(
        Pipeline(parse({"keywords": ["go"], "detector": {"threshold": 0.5}}), model),
        np.concatenate([_silence(1), running, _silence(0.4), go, _silence(1.2), go, _silence(1)]),
    )
    assert len(events) == 1 and events[0].keyword == "go" and events[0].time_s > 1 + 1.9 + 0.4 + 0.55 + 1.2


def test_the_windows_scored_do_not_depend_on_the_thresholds(
    model: Model, stop_go: tuple[np.ndarray, np.ndarray]
) -> None:
    """Replay and the threshold sweeps of eval, tune and the training report rely on it."""
    stop, go = stop_go
    audio = np.concatenate([_silence(1.2), stop, _silence(0.4), go, _silence(1.2)])
    windows, heard = [], []
    for threshold in (0.3, 0.99):  # "stop" fires at 0.3 only, and "go" after it needs no long pause
        pipeline = Pipeline(Config(detector=DetectorConfig(threshold=threshold)), model)
        heard.append([e.keyword for e in _run(pipeline, audio)])
        windows.append(pipeline.counters.windows)
    assert heard == [["stop", "go"], []]
    assert windows[0] == windows[1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sequences": [{"words": ["yes"]}]}, r"sequences\[0\]\.words: must be a list of two or more"),
        ({"sequences": [{"within_ms": 100}]}, r"sequences\[0\]\.words: is required"),
        ({"sequences": [{"words": ["a", "b"], "after": 1}]}, r"sequences\[0\]\.after: unknown key"),
        ({"endpointer": {"min_word_ms": 900, "max_word_ms": 800}}, r"endpointer\.min_word_ms"),
        ({"endpointer": {"quieter_db": -3}}, r"endpointer\.quieter_db: must be a number from 0 to 100"),
        ({"endpointer": {"core_db": "loud"}}, r"endpointer\.core_db: must be a number from 0 to 100"),
        (
            {"sequences": [{"words": ["marvin", "on"]}, {"words": ["marvin", "on"]}]},
            r"sequences: 'marvin\+on' is listed more than once",
        ),
        ({"detector": {"mode": "always"}}, r"detector\.mode: must be one of commands, running"),
        ({"near_misses": {"threshold": 0.3}}, r"near_misses\.dir: is required"),
    ],
)
def test_config_mistakes_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(data)


def test_the_level_rules_are_read_from_the_config() -> None:
    config = parse({"endpointer": {"quieter_db": 6, "core_db": 100}})
    assert (config.endpointer.quieter_db, config.endpointer.core_db) == (6.0, 100.0)
    assert (parse({}).endpointer.quieter_db, parse({}).endpointer.core_db) == (100.0, 20.0)


def test_unknown_sequence_words_are_reported_against_the_model() -> None:
    config = parse({"sequences": [{"words": ["marvin", "onn"]}]})
    with pytest.raises(ConfigError, match=r"sequences\[0\]\.words\[1\]: 'onn' .*did you mean 'on'"):
        config.check_against(ModelInfo.load(default_model_dir()))


def test_near_misses_keep_close_windows_within_the_budget(
    tmp_path: Path, model: Model, demo: np.ndarray
) -> None:
    recorder = NearMissRecorder(NearMissConfig(tmp_path / "near", threshold=0.3, max_mb=0.1))
    config = Config(keywords=(KeywordConfig("yes", 0.99),), detector=DetectorConfig(threshold=0.99))
    events = _run(Pipeline(config, model, near_misses=recorder), demo)
    recorder.close()
    assert events == []  # nothing reaches 0.99 ...
    files = sorted((tmp_path / "near").glob("*.wav"))
    assert recorder.saved >= 3 and len(files) == 2  # ... every word came close; 45 kB each, 100 kB kept
    names = [f.name for f in files]
    assert any("-go-" in n or "-up-" in n for n in names)
    with wave.open(str(files[0])) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1) and w.getnframes() > 15000


class _Decisions:
    """A VAD stand-in: the decisions of one block at a time, as VadGate exposes them."""

    def __init__(self) -> None:
        self.decisions: list[bool] = []


def test_a_command_waits_for_its_tail_and_scores_the_window_ending_there() -> None:
    from kws_daemon.spotting import Commands

    labels = ("yes", "_background_")
    asked: list[int] = []

    def score(end: int) -> np.ndarray:
        asked.append(end)
        return np.array([0.9, 0.1])

    spotter = Commands(
        labels, {"yes": 0.5}, EndpointerConfig(), FRAME, window=142, hop=10, tail=20, windows=1
    )
    vad = _Decisions()
    pattern = _frames("." * 40 + "#" * 12 + "." * 7)  # the word closes 210 ms after its voice ends
    frames_done, hits = 0, []
    for decision in [*pattern, *([False] * 10)]:
        vad.decisions = [decision]
        frames_done += 3  # 30 ms of 10 ms frames
        hits += spotter(vad, decision, frames_done, score)
        if asked:
            break
    word_end = (52 * FRAME) // 160 + 2
    assert asked == [word_end + 20]  # one window, 200 ms past the voiced end: waited for, not cut short
    assert frames_done >= word_end + 20
    assert [h.keyword for h in hits] == ["yes"]


def test_without_a_tail_a_command_is_decided_as_its_segment_closes() -> None:
    from kws_daemon.spotting import Commands

    asked: list[int] = []

    def score(end: int) -> np.ndarray:
        asked.append(end)
        return np.array([0.9, 0.1])

    spotter = Commands(("yes", "_background_"), {"yes": 0.5}, EndpointerConfig(), FRAME, window=100, hop=10)
    vad = _Decisions()
    frames_done = 0
    for decision in _frames("." * 40 + "#" * 12 + "." * 7):
        vad.decisions = [decision]
        frames_done += 3
        if spotter(vad, decision, frames_done, score):
            break
    assert asked and asked[0] == frames_done  # the AST's rule: windows end where the audio ends
