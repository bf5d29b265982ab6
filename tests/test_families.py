"""Model families beyond the AST (issue 14): a wav2vec2/XLS-R intent classifier and a Whisper
language-ID classifier, each exported from a local stand-in (the real architecture, random
weights), its numpy front end held to transformers' extractor, the daemon's scores held to
transformers' own pipeline on real speech, and the utterance mode firing hooks in `detect` and
`run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.audio.sources import read_audio
from kws_daemon.frontends import WaveformParams, WhisperInput, WhisperParams, waveform_input
from tests.conftest import DEMO_WAV, ROOT, kws

pytestmark = [pytest.mark.toolchain, pytest.mark.slow]
OCEAN = Path(os.environ.get("KWS_OCEAN_DATA", ROOT.parent / "shared" / "data" / "speech-ocean"))


@pytest.fixture(scope="module", params=["wav2vec2", "whisper"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("torch", "transformers", "onnx"):
        pytest.importorskip(module, reason="needs the export extra: pip install torch==2.13.0 -e '.[export]'")
    from kws_daemon.toolchain import standin

    small = standin.AstSize(hidden=64, layers=2, heads=2, intermediate=128)
    save = (
        standin.save_wav2vec2_checkpoint if request.param == "wav2vec2" else standin.save_whisper_checkpoint
    )
    return save(tmp_path_factory.mktemp(request.param), small, seed=1)


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for quantize in ("none", "int8"):
        target = tmp_path_factory.mktemp("dirs") / quantize
        result = kws("export", str(checkpoint), "--output", str(target), "--quantize", quantize)
        assert result.returncode == 0, result.stderr.decode()
        out[quantize] = target
    return out


@pytest.fixture(scope="module")
def real_utterances() -> list[np.ndarray]:
    """20 real read sentences of 20 speakers (speech-ocean), 16 kHz int16."""
    manifest = OCEAN / "manifest.tsv"
    if not manifest.is_file():
        pytest.skip(f"speech-ocean not found at {OCEAN} (set KWS_OCEAN_DATA or provide ../shared/data)")
    rows = [line.split("\t") for line in manifest.read_text().splitlines()[1:]]
    by_speaker: dict[str, str] = {}
    for row in rows:
        by_speaker.setdefault(row[2], row[0])
    paths = sorted(by_speaker.values())[:20]
    clips = []
    for rel in paths:
        audio, rate = read_audio(OCEAN / rel)
        assert rate == 16000
        clips.append(audio)
    return clips


def test_the_front_ends_are_transformers_extractors(real_utterances: list[np.ndarray]) -> None:
    transformers = pytest.importorskip("transformers")
    wav2vec2 = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    whisper, ours = transformers.WhisperFeatureExtractor(feature_size=80), WhisperInput(WhisperParams())
    for audio in real_utterances[:5]:
        x = audio.astype(np.float32) / 32768
        theirs = wav2vec2(x, sampling_rate=16000).input_values[0]
        assert np.allclose(waveform_input(audio, WaveformParams()), theirs, atol=1e-5)
        theirs = whisper(x, sampling_rate=16000, return_tensors="np").input_features[0]
        assert np.abs(ours(audio) - theirs).max() < 1e-4  # torch's STFT in transformers, numpy's here


def test_the_daemon_scores_as_transformers_pipeline(
    checkpoint: Path, exported: dict[str, Path], real_utterances: list[np.ndarray]
) -> None:
    from transformers import pipeline

    from kws_daemon.model import Model, ModelInfo
    from kws_daemon.utterances import UtteranceInput

    classify = pipeline("audio-classification", model=str(checkpoint), device="cpu")
    labels = ModelInfo.load(exported["none"]).labels
    reference = []
    for audio in real_utterances:
        scores = {r["label"]: r["score"] for r in classify(audio.astype(np.float32) / 32768, top_k=None)}
        reference.append([scores[label] for label in labels])
    expected = np.array(reference)
    report = {}
    for quantize, directory in exported.items():
        model = Model(ModelInfo.load(directory))
        to_input = UtteranceInput(model.info.frontend)
        ours = np.concatenate([model(to_input(audio)[None]) for audio in real_utterances])
        agreement = float(np.mean(ours.argmax(-1) == expected.argmax(-1)))
        report[quantize] = (agreement, float(np.abs(ours - expected).max()))
    print(f"{checkpoint.name} stand-in vs transformers pipeline on 20 real utterances: {report}")
    agreement, max_diff = report["none"]
    assert agreement >= 0.95 and max_diff < 1e-4
    assert report["int8"][0] >= 0.8  # reported; int8 of a random model is not what is held to 95 %


def test_utterance_mode_fires_hooks_in_detect_and_run(exported: dict[str, Path], tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = tmp_path / "utterances.yaml"
    config.write_text(
        f"model: {exported['int8']}\ndetector: {{mode: utterances, threshold: 0.0}}\n"
        f"utterance: {{silence_after_ms: 300}}\nhooks: [{{jsonl: {events}}}]\n"
    )
    detected = kws("detect", "--config", str(config), "--json", str(DEMO_WAV))
    assert detected.returncode == 0, detected.stderr.decode()
    found = [json.loads(line) for line in detected.stdout.splitlines()]
    assert len(found) == 4  # the demo's four words, each said alone: four utterances
    labels = json.loads((exported["int8"] / "config.json").read_text())["id2label"].values()
    assert {f["keyword"] for f in found} <= set(labels) and all(0 < f["score"] <= 1 for f in found)
    assert len(events.read_text().splitlines()) == 4  # the config's hook fired for each
    events.unlink()
    ran = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--fast")
    assert ran.returncode == 0, ran.stderr.decode()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(r["keyword"], r["time_s"]) for r in records] == [(f["keyword"], f["time_s"]) for f in found]


def test_a_model_in_a_mode_it_does_not_run_is_a_config_error(exported: dict[str, Path]) -> None:
    result = kws("detect", "--model", str(exported["int8"]), "--mode", "commands", str(DEMO_WAV))
    assert result.returncode == 2
    assert "'commands' does not take a" in result.stderr.decode()
    assert "use detector.mode: utterances, or leave it out" in result.stderr.decode()


@pytest.fixture(scope="module")
def one_utterance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The demo's first word from its voice onset, 15 VAD frames (450 ms) long: the utterance the
    daemon classifies is then the whole file, which is what transformers' pipeline is given."""
    from kws_daemon.audio.streams import write_wav
    from kws_daemon.audio.voicing import voiced_runs

    audio, _ = read_audio(DEMO_WAV)
    start = voiced_runs(audio)[0][0]
    clip = audio[start : start + 15 * 480]
    return write_wav(tmp_path_factory.mktemp("utterance") / "word.wav", clip), clip


def _pipeline_top(checkpoint: Path, clip: np.ndarray) -> tuple[str, float]:
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(checkpoint), device="cpu")
    top = classify(clip.astype(np.float32) / 32768, top_k=1)[0]
    return top["label"], top["score"]


def test_with_no_config_detect_run_and_serve_follow_the_model(
    checkpoint: Path, exported: dict[str, Path], one_utterance: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Issue 26: no detector.mode anywhere; the model directory's kind picks utterances."""
    from tests.wyoming_server import Server, chunks, detections, one_run, run

    path, clip = one_utterance
    label, score = _pipeline_top(checkpoint, clip)
    model = str(exported["none"])
    detected = kws("detect", "--model", model, "--threshold", "0", "--json", str(path))
    assert detected.returncode == 0, detected.stderr.decode()
    (event,) = [json.loads(line) for line in detected.stdout.splitlines()]
    assert event["keyword"] == label and event["score"] == pytest.approx(score, abs=1e-3)

    ran = kws("run", "--model", model, "--threshold", "0", "--input", str(path), "--fast")
    assert ran.returncode == 0, ran.stderr.decode()
    log = ran.stderr.decode()
    assert "utterances mode" in log and f"detected '{label}' (score {score:.3f})" in log

    server = Server(tmp_path, args=("--model", model, "--threshold", "0"))
    try:
        found = detections(run(one_run(server.port, chunks(clip, 16000))))
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert [name for name, _ in found] == [label]
    assert "utterances mode" in server.log.read_text()


def test_info_says_what_an_exported_directory_is(checkpoint: Path, exported: dict[str, Path]) -> None:
    import hashlib

    for quantize, directory in exported.items():
        result = kws("info", str(directory), "--json")
        assert result.returncode == 0, result.stderr.decode()
        info = json.loads(result.stdout)
        labels = json.loads((directory / "config.json").read_text())["id2label"]
        kind = json.loads((directory / "kws.json").read_text())["kind"]
        assert (
            info["kind"] == kind and info["default_mode"] == "utterances" and info["modes"] == ["utterances"]
        )
        assert info["labels"] == [labels[str(i)] for i in range(len(labels))]
        files = {p.name: p for p in directory.iterdir()}
        assert info["files"] == {name: p.stat().st_size for name, p in files.items()}
        assert info["bytes"] == sum(p.stat().st_size for p in files.values())
        digest = hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
        assert info["sha256"] == {"model.onnx": digest} and info["sha256_checked"]
        assert info["licence"] == "mit (the checkpoint's model card)"  # the stand-in's README.md
        assert info["attribution"] == f"{checkpoint} (Hugging Face checkpoint)"
        assert info["card_from"] == "export" and "fp32_max_abs_diff" in info["card"]
        assert ("int8_top1_agreement" in info["card"]) == (quantize == "int8")
        text = kws("info", str(directory)).stdout.decode()
        assert f"{kind} model, {len(labels)} labels" in text and "modes: utterances (default)" in text


def test_calibration_recordings_are_what_int8_is_measured_on(
    checkpoint: Path, one_utterance: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    recordings = tmp_path / "mine"
    recordings.mkdir()
    for i in range(3):
        (recordings / f"{i}.wav").write_bytes(one_utterance[0].read_bytes())
    out = tmp_path / "calibrated"
    result = kws("export", str(checkpoint), "--output", str(out), "--calibration", str(recordings), "--force")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads((out / "kws.json").read_text())["export"]
    assert report["parity_data"] == f"3 recordings from {recordings}" and report["int8_parity_windows"] == 3


PROMPTS = ["dog barking", "smoke alarm", "glass breaking", "background"]


@pytest.fixture(scope="module")
def clap(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CLAP stand-in checkpoint and its fp32 and int8 sound-event directories."""
    for module in ("torch", "transformers", "onnx", "tokenizers"):
        pytest.importorskip(module, reason="needs the export extra: pip install torch==2.13.0 -e '.[export]'")
    from kws_daemon.toolchain.standin import ClapSize, save_clap_checkpoint

    small = ClapSize((1, 1, 1, 1), (1, 2, 4, 8), 128, 16, 32, 1, 2, 64, 32)
    out = {"checkpoint": save_clap_checkpoint(tmp_path_factory.mktemp("clap"), small, seed=1)}
    for quantize in ("none", "int8"):
        target = tmp_path_factory.mktemp("clapdirs") / quantize
        # --force: int8 of random weights may miss the 90 % agreement bar; it is reported, not held
        result = kws(
            "export",
            str(out["checkpoint"]),
            "--output",
            str(target),
            "--quantize",
            quantize,
            "--labels",
            *PROMPTS,
            "--force",
        )
        assert result.returncode == 0, result.stderr.decode()
        out[quantize] = target
    return out


def _at_48k(audio: np.ndarray) -> np.ndarray:
    import soxr

    return soxr.resample(audio.astype(np.float32) / 32768, 16000, 48000).astype(np.float32)


def test_the_clap_front_end_is_transformers_extractor(real_utterances: list[np.ndarray]) -> None:
    transformers = pytest.importorskip("transformers")
    from kws_daemon.frontends import ClapInput, ClapParams

    for truncation in ("rand_trunc", "fusion"):
        theirs_fe = transformers.ClapFeatureExtractor(truncation=truncation)
        ours = ClapInput(ClapParams(truncation=truncation))
        for audio in real_utterances[:5]:
            x = _at_48k(audio)
            theirs = theirs_fe(x, sampling_rate=48000, return_tensors="np").input_features[0]
            assert np.abs(ours(x) - theirs).max() < 1e-3  # dB values of -100 to +20


def test_clap_scores_as_the_zero_shot_pipeline(
    clap: dict[str, Path], real_utterances: list[np.ndarray]
) -> None:
    from transformers import pipeline

    from kws_daemon.frontends import ClapInput
    from kws_daemon.model import Model, ModelInfo

    classify = pipeline("zero-shot-audio-classification", model=str(clap["checkpoint"]), device="cpu")
    clips = [_at_48k(a) for a in real_utterances]
    expected = []
    for x in clips:
        scores = {r["label"]: r["score"] for r in classify(x, candidate_labels=PROMPTS)}
        expected.append([scores[p] for p in PROMPTS])
    reference = np.array(expected)
    report = {}
    for quantize in ("none", "int8"):
        model = Model(ModelInfo.load(clap[quantize]))
        assert list(model.info.labels) == PROMPTS
        to_input = ClapInput(model.info.frontend)  # type: ignore[arg-type]
        ours = np.concatenate([model(to_input(x)[None]) for x in clips])
        report[quantize] = (
            float(np.mean(ours.argmax(-1) == reference.argmax(-1))),
            float(np.abs(ours - reference).max()),
        )
    print(f"CLAP stand-in vs zero-shot pipeline on 20 real clips: {report}")
    assert report["none"][0] >= 0.95 and report["none"][1] < 1e-4


def test_sound_mode_fires_hooks_in_detect_and_run(clap: dict[str, Path], tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = tmp_path / "sounds.yaml"
    config.write_text(
        f"model: {clap['int8']}\ndetector: {{mode: sounds, threshold: 0.0}}\n"
        f"sounds: {{hop_s: 1.0, refractory_s: 0}}\nhooks: [{{jsonl: {events}}}]\n"
    )
    detected = kws("detect", "--config", str(config), "--json", str(DEMO_WAV))
    assert detected.returncode == 0, detected.stderr.decode()
    found = [json.loads(line) for line in detected.stdout.splitlines()]
    assert [f["time_s"] for f in found[:8]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # a window a second
    assert {f["keyword"] for f in found} <= set(PROMPTS) - {"background"}
    assert len(events.read_text().splitlines()) == len(found)
    events.unlink()
    ran = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--fast")
    assert ran.returncode == 0, ran.stderr.decode()
    assert [json.loads(line)["time_s"] for line in events.read_text().splitlines()] == [
        f["time_s"] for f in found
    ]


def test_with_no_config_a_clap_model_runs_in_sound_mode(clap: dict[str, Path]) -> None:
    from transformers import pipeline

    detected = kws("detect", "--model", str(clap["none"]), "--threshold", "0", "--json", str(DEMO_WAV))
    assert detected.returncode == 0, detected.stderr.decode()
    first = json.loads(detected.stdout.splitlines()[0])
    assert first["time_s"] == 1.0  # the sound mode's first window: the stream's first second
    audio, _ = read_audio(DEMO_WAV)
    classify = pipeline("zero-shot-audio-classification", model=str(clap["checkpoint"]), device="cpu")
    top = classify(_at_48k(audio[:16000]), candidate_labels=PROMPTS)[0]
    assert first["keyword"] == top["label"] and first["score"] == pytest.approx(top["score"], abs=1e-3)
    info = json.loads(kws("info", str(clap["int8"]), "--json").stdout)
    assert info["kind"] == "clap" and info["default_mode"] == "sounds" and info["labels"] == PROMPTS


def test_silence_opens_no_sound_window(clap: dict[str, Path], tmp_path: Path) -> None:
    from kws_daemon.audio.streams import write_wav

    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 5, np.int16))
    config = tmp_path / "sounds.yaml"
    config.write_text(f"model: {clap['int8']}\ndetector: {{mode: sounds, threshold: 0.0}}\n")
    result = kws("detect", "--config", str(config), str(quiet))
    assert result.returncode == 0 and result.stdout == b""  # below sounds.gate_dbfs: nothing scored


def _clip_dir(tmp_path: Path, labels: list[str]) -> Path:
    """Two clips of the demo's first word under each of the first two labels (eval's --dir layout)."""
    from kws_daemon.audio.streams import write_wav

    audio, _ = read_audio(DEMO_WAV)
    root = tmp_path / "clips"
    for label in labels[:2]:
        (root / label).mkdir(parents=True)
        for i in range(2):
            write_wav(root / label / f"{i}.wav", audio[8000 * i : 8000 * i + 16000])
    return root


def test_eval_and_bench_work_in_utterance_and_sound_modes(
    exported: dict[str, Path], clap: dict[str, Path], tmp_path: Path
) -> None:
    for model, mode in ((exported["int8"], "utterances"), (clap["int8"], "sounds")):
        config = tmp_path / f"{mode}.yaml"
        config.write_text(f"model: {model}\ndetector: {{mode: {mode}}}\n")
        labels = list(json.loads((model / "config.json").read_text())["id2label"].values())
        out = tmp_path / f"{mode}-eval.json"
        result = kws(
            "eval",
            "--dir",
            str(_clip_dir(tmp_path / mode, labels)),
            "--config",
            str(config),
            "--json",
            str(out),
        )
        assert result.returncode == 0, result.stderr.decode()
        assert json.loads(out.read_text())["clips"]["clips"] == 4
        bench = tmp_path / f"{mode}-bench.json"
        result = kws(
            "bench", "--config", str(config), "--duration", "12", "--idle", "0", "--json", str(bench)
        )
        assert result.returncode == 0, result.stderr.decode()
        assert json.loads(bench.read_text())["fast"]["windows"] > 0  # the model ran on the stream
