"""Detector logic, the VAD gate, and the pipeline's windows against the batch front end."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.sources import read_audio
from kws_daemon.audio.vad import VadGate
from kws_daemon.config import DEFAULT_THRESHOLD, Config, DetectorConfig, KeywordConfig, VadConfig
from kws_daemon.detector import Detector
from kws_daemon.features import Fbank, pad_and_normalise
from kws_daemon.model import Model, ModelInfo, default_model_dir
from kws_daemon.pipeline import Pipeline
from tests.conftest import AST_MODEL, DEMO_WAV

LABELS = ("yes", "no", "_background_")
RUNNING = DetectorConfig(mode="running")
UNGATED = Config(vad=VadConfig(enabled=False), detector=RUNNING)


def _post(*p: float) -> np.ndarray:
    return np.array(p, dtype=np.float64)


def test_detector_threshold_smoothing_refractory() -> None:
    d2 = Detector(LABELS, {"yes": 0.6, "no": 0.6}, smoothing=2, refractory_s=1.0)
    assert d2(_post(0.2, 0.0, 0.8), 0.1) is None
    assert d2(_post(0.9, 0.0, 0.1), 0.2) is None  # mean 0.55 < 0.6
    hit = d2(_post(0.9, 0.0, 0.1), 0.3)
    assert hit is not None and hit[0] == "yes" and hit[1] == pytest.approx(0.9)
    assert d2(_post(0.95, 0.0, 0.05), 0.5) is None  # refractory
    assert d2(_post(0.0, 0.95, 0.05), 1.4) is None  # history was cleared after the hit: one window
    assert d2(_post(0.0, 0.95, 0.05), 1.5) == ("no", pytest.approx(0.95))


def test_detector_first_window_can_fire_with_smoothing_one() -> None:
    d = Detector(LABELS, {"yes": 0.6}, smoothing=1)
    assert d(_post(0.9, 0.05, 0.05), 0.1) == ("yes", pytest.approx(0.9))


def test_background_and_unconfigured_labels_never_fire() -> None:
    d = Detector(LABELS, {"yes": 0.0}, smoothing=1, refractory_s=0)
    assert d(_post(0.0, 0.0, 1.0), 0.1) is None  # background wins
    assert d(_post(0.0, 1.0, 0.0), 0.2) is None  # "no" is not configured
    assert d(_post(0.4, 0.3, 0.3), 0.3) == ("yes", pytest.approx(0.4))


def test_keyword_thresholds_default_to_all_non_background() -> None:
    info = ModelInfo.load(default_model_dir())
    all_kw = Config().keyword_thresholds(info)
    assert len(all_kw) == 35 and "_background_" not in all_kw
    config = Config(
        keywords=(KeywordConfig("yes", 0.9), KeywordConfig("stop")), detector=DetectorConfig(threshold=0.7)
    )
    assert config.keyword_thresholds(info) == {"yes": 0.9, "stop": 0.7}


def test_calibrated_thresholds_apply_where_the_config_gives_none() -> None:
    info = replace(
        ModelInfo.load(default_model_dir()),
        kws={"thresholds": {"commands": {"stop": 0.42, "nonsense": 0.1}, "running": {"stop": 0.97}}},
    )
    config = Config(keywords=(KeywordConfig("yes", 0.9), KeywordConfig("stop"), KeywordConfig("go")))
    assert config.keyword_thresholds(info) == {"yes": 0.9, "stop": 0.42, "go": DEFAULT_THRESHOLD}
    running = replace(config, detector=DetectorConfig(mode="running"))
    assert running.keyword_thresholds(info)["stop"] == 0.97
    explicit = replace(config, detector=DetectorConfig(threshold=0.6))  # `detect --threshold` sweeps
    assert explicit.keyword_thresholds(info) == {"yes": 0.9, "stop": 0.6, "go": 0.6}


def test_vad_gate_opens_on_speech_and_closes_after_hangover() -> None:
    demo, _ = read_audio(DEMO_WAV)
    gate = VadGate(aggressiveness=2, frame_ms=30, hangover_ms=300)
    assert not gate(np.zeros(16000, dtype=np.int16))
    speech = demo[16000:22000]  # "yes"
    assert gate(speech)
    assert gate.onset is not None and 16000 - 480 <= gate.onset < 22000  # a VAD frame straddles 16000
    assert gate(np.zeros(4000, dtype=np.int16))  # within the hangover
    assert not gate(np.zeros(4000, dtype=np.int16))
    assert gate.onset is None


class RecordingModel(Model):
    """The real ONNX model, keeping a copy of every window it was given."""

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []
        super().__init__(ModelInfo.load(AST_MODEL))
        self.windows.clear()  # only the pipeline's windows count, not a check made while loading

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        self.windows.extend(windows)
        return super().__call__(windows)


def _run(pipeline: Pipeline, audio: np.ndarray, block: int) -> list:
    events = []
    for i in range(0, len(audio), block):
        events += pipeline.process(AudioBlock(audio[i : i + block], 16000, time.monotonic(), time.time()))
    return events + pipeline.flush()


def test_windows_are_the_training_clips_of_the_same_audio() -> None:
    """Each window equals the AST front end applied to the last 1 s of audio (shorter at the start)."""
    audio, _ = read_audio(DEMO_WAV)
    audio = audio[: 16000 * 2]
    model = RecordingModel()
    config = replace(UNGATED, detector=DetectorConfig(mode="running", hop_ms=100))
    _run(Pipeline(config, model), audio, 480)
    params = model.info.fbank
    floats = audio.astype(np.float32) / 32768

    def clip(end_frame: int) -> np.ndarray:  # the 98 frames of 1 s ending at end_frame: 15,920 samples
        return floats[160 * max(0, end_frame - 98) : (end_frame - 1) * 160 + 400]

    # hops at frames 8..188 of 198 (the grid puts a window's last sample 5 ms before each 100 ms),
    # then the flush
    assert len(model.windows) == 19 + 1
    for k, window in enumerate(model.windows[:-1]):
        np.testing.assert_allclose(
            window, pad_and_normalise(Fbank(128)(clip((k + 1) * 10 - 2)), params), atol=1e-5
        )
    # the flush scores a last window ending on the final frame
    np.testing.assert_allclose(model.windows[-1], pad_and_normalise(Fbank(128)(clip(198)), params), atol=1e-5)


def test_each_100_ms_block_completes_one_window() -> None:
    """With blocks of hop_ms, every block brings exactly one window, whose audio ends in that block."""
    audio, _ = read_audio(DEMO_WAV)
    pipeline = Pipeline(UNGATED, Model(ModelInfo.load(default_model_dir())))
    for i in range(0, 16000 * 3, 1600):
        before = pipeline.counters.windows
        pipeline.process(AudioBlock(audio[i : i + 1600], 16000, time.monotonic(), time.time()))
        assert pipeline.counters.windows == before + 1
        assert (
            pipeline.spotter._last_end == pipeline._input.n_frames
        )  # the newest frame: nothing left waiting


def test_block_size_does_not_change_results_without_vad() -> None:
    audio, _ = read_audio(DEMO_WAV)
    config = replace(UNGATED, detector=DetectorConfig(mode="running", threshold=0.0))
    model = Model(ModelInfo.load(default_model_dir()))
    runs = [
        [(e.keyword, e.time_s, round(e.score, 5)) for e in _run(Pipeline(config, model), audio, b)]
        for b in (160, 480, 1600, 7000)
    ]
    assert runs[0] and all(r == runs[0] for r in runs)


def test_vad_gate_keeps_the_model_idle_in_silence() -> None:
    model = Model(ModelInfo.load(default_model_dir()))
    config = Config(detector=DetectorConfig(mode="running", threshold=0.0))
    silent = Pipeline(config, model)
    _run(silent, np.zeros(16000 * 5, dtype=np.int16), 480)
    assert silent.counters.windows == 0
    demo, _ = read_audio(DEMO_WAV)
    gated, ungated = Pipeline(config, model), Pipeline(replace(config, vad=VadConfig(enabled=False)), model)
    _run(gated, demo, 480)
    _run(ungated, demo, 480)
    assert 0 < gated.counters.windows < ungated.counters.windows


def test_resampled_input_is_processed_at_16k() -> None:
    import soxr

    demo, _ = read_audio(DEMO_WAV)
    at48 = soxr.resample(demo, 16000, 48000).astype(np.int16)
    pipeline = Pipeline(UNGATED, Model(ModelInfo.load(default_model_dir())))
    for i in range(0, len(at48), 1440):
        pipeline.process(AudioBlock(at48[i : i + 1440], 48000, time.monotonic(), time.time()))
    pipeline.flush()
    assert abs(pipeline.counters.samples - len(demo)) < 50
