"""`kws-daemon export`: a small AST of the MIT family end to end into the daemon, and the refusals."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws_daemon.audio.sources import read_audio
from kws_daemon.features import Fbank, FbankParams, pad_and_normalise
from tests.conftest import DEMO_WAV, ROOT, kws

MODEL_FILES = {"model.onnx", "config.json", "preprocessor_config.json", "kws.json", "MODEL_CARD.md"}


def test_runtime_commands_never_import_torch() -> None:
    code = "import sys, kws_daemon.cli as c; c.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


@pytest.fixture(scope="module")
def toolchain() -> None:
    for module in ("torch", "transformers", "onnx"):
        pytest.importorskip(module, reason="needs the export extra: pip install torch==2.13.0 -e '.[export]'")


@pytest.fixture(scope="module")
def checkpoint(toolchain: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kws_daemon.toolchain.standin import AstSize, save_ast_checkpoint

    return save_ast_checkpoint(
        tmp_path_factory.mktemp("ckpt"), AstSize(hidden=64, layers=2, heads=2, intermediate=128)
    )


def _export(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, list[str]]:
    """Runs `kws-daemon export` in this process; its exit code, stdout, and stderr less progress lines."""
    from kws_daemon.cli import main

    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if not line.startswith("[")]


def _assert_refused(code: int, errors: list[str], output: Path, *fragments: str) -> None:
    assert code == 1 and len(errors) == 1 and errors[0].startswith("kws-daemon: error: "), errors
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")], (
        "staging left behind"
    )


def test_a_staged_model_directory_replaces_the_old_one_only_when_whole(tmp_path: Path) -> None:
    from kws_daemon.toolchain.export import staged

    output = tmp_path / "model"
    output.mkdir()
    (output / "kws.json").write_text("old")
    with pytest.raises(RuntimeError), staged(output) as staging:
        (staging / "kws.json").write_text("half")
        raise RuntimeError("a check failed")
    assert (output / "kws.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind
    with staged(output) as staging:
        (staging / "kws.json").write_text("new")
    assert (output / "kws.json").read_text() == "new" and oct(output.stat().st_mode & 0o777) == "0o755"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _demo_windows(params: FbankParams) -> np.ndarray:
    """Half-second hops over demo.wav (espeak words in pink noise), through the daemon's front end."""
    samples, _ = read_audio(DEMO_WAV)
    frames = Fbank(params.num_mel_bins)(samples.astype(np.float32) / 32768.0)
    return np.stack([pad_and_normalise(frames[i : i + 100], params) for i in range(0, len(frames) - 100, 50)])


@pytest.mark.toolchain
def test_export_end_to_end_loads_in_daemon_with_torch_top1(checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from transformers import ASTForAudioClassification

    from kws_daemon.model import Model, ModelInfo, sha256_file
    from kws_daemon.toolchain.labels import SC_MEAN, SPEECH_COMMANDS_V2
    from kws_daemon.toolchain.windows import synthetic_windows

    output = tmp_path / "models" / "small-ast"
    result = kws("export", str(checkpoint), "--output", str(output), timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    assert "top-1 agreement" in result.stdout.decode() and b"[8/8]" in result.stderr
    assert {p.name for p in output.iterdir()} == MODEL_FILES

    kws_json = json.loads((output / "kws.json").read_text())
    assert kws_json["sha256"] == sha256_file(output / "model.onnx")
    assert kws_json["provenance"]["weights_sha256"] == sha256_file(checkpoint / "model.safetensors")
    assert kws_json["export"]["fp32_max_abs_diff"] < 1e-4
    # MatMul weights are int8; the patch-embedding convolution stays fp32 (large in a model this small)
    assert kws_json["export"]["int8_bytes"] < kws_json["export"]["fp32_bytes"] * 0.7

    info = ModelInfo.load(output)
    assert info.labels == SPEECH_COMMANDS_V2 and info.fbank.mean == pytest.approx(SC_MEAN)
    windows = np.concatenate([synthetic_windows(info.fbank, 16, seed=7), _demo_windows(info.fbank)])
    torch_model = ASTForAudioClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        reference = torch_model(torch.from_numpy(windows)).logits.numpy()
    assert len(set(reference.argmax(-1))) > 1, "inputs that all give one label would prove nothing"
    model = Model(info)
    daemon = np.concatenate([model(window[None]) for window in windows]).argmax(-1)  # one a call, as it runs
    top2 = np.sort(reference, axis=-1)[:, -2:]
    # int8 moves each logit by about int8_max_abs_diff, so a gap over twice that cannot flip (3x: headroom)
    clear = top2[:, 1] - top2[:, 0] > 3 * kws_json["export"]["int8_max_abs_diff"]
    assert clear.mean() > 0.5, "a random model's near ties would leave too little to compare"
    np.testing.assert_array_equal(daemon[clear], reference.argmax(-1)[clear])
    assert np.mean(daemon == reference.argmax(-1)) >= 0.9


@pytest.mark.toolchain
def test_an_exported_ast_runs_in_commands_mode_with_no_config(checkpoint: Path, tmp_path: Path) -> None:
    """Issue 26: the kind picks the mode; each event's label and score are what transformers'
    pipeline gives the second of audio before it, within 0.01 (the stream's frames are not quite the
    cut clip's, and a random model's labels are near ties: its top may be a neighbour of ours)."""
    from transformers import pipeline

    output = tmp_path / "ast"
    assert kws("export", str(checkpoint), "--output", str(output), "--quantize", "none").returncode == 0
    plain = kws("detect", "--model", str(output), "--threshold", "0", "--json", str(DEMO_WAV))
    assert plain.returncode == 0, plain.stderr.decode()
    events = [json.loads(line) for line in plain.stdout.splitlines()]
    assert len(events) == 4  # one per word said alone, as commands mode decides
    explicit = kws(
        "detect", "--model", str(output), "--threshold", "0", "--json", "--mode", "commands", str(DEMO_WAV)
    )
    assert [e["keyword"] for e in map(json.loads, explicit.stdout.splitlines())] == [
        e["keyword"] for e in events
    ]
    audio, _ = read_audio(DEMO_WAV)
    classify = pipeline("audio-classification", model=str(checkpoint), device="cpu")
    for event in events:
        end = round(event["time_s"] * 16000)
        ranked = classify(audio[end - 16000 : end].astype(np.float32) / 32768, top_k=None)
        scores = {r["label"]: r["score"] for r in ranked}
        assert event["score"] == pytest.approx(scores[event["keyword"]], abs=0.01)
        assert ranked[0]["score"] - scores[event["keyword"]] < 0.01
    info = json.loads(kws("info", str(output), "--json").stdout)
    assert info["kind"] == "ast" and info["default_mode"] == "commands"
    assert info["modes"] == ["commands", "running", "utterances"] and info["licence"].startswith("mit")


@pytest.mark.toolchain
def test_int8_static_calibrates_on_recordings(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kws_daemon.model import Model, ModelInfo

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):  # one-second clips of tones and noise, written as WAV and 8 kHz FLAC
        t = np.arange(16000) / 16000
        clip = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(16000)
        rate, suffix = (8000, "flac") if i % 2 else (16000, "wav")
        sf.write(recordings / f"clip{i}.{suffix}", clip[:: 16000 // rate], rate, subtype="PCM_16")
    output = tmp_path / "static"
    code, _, errors = _export(
        capsys, checkpoint, "--output", output, "--quantize", "int8-static", "--calibration", recordings
    )
    assert code == 0 and not errors, errors
    report = json.loads((output / "kws.json").read_text())["export"]
    assert report["method"].startswith("static QDQ") and report["parity_data"].startswith("12 recordings")
    assert report["int8_parity_windows"] == 6 and report["int8_top1_agreement"] >= 0.9
    assert Model(ModelInfo.load(output))(np.zeros((1, 128, 128), np.float32)).shape == (1, 35)


@pytest.mark.toolchain
@pytest.mark.real_data
def test_parity_on_real_recordings(
    checkpoint: Path, kws_real: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, errors = _export(capsys, checkpoint, "--output", tmp_path / "m", "--calibration", kws_real)
    assert code == 0 and not errors, errors
    report = json.loads((tmp_path / "m" / "kws.json").read_text())["export"]
    assert report["parity_data"] == f"200 recordings from {kws_real}"
    assert report["int8_top1_agreement"] >= 0.9 and report["fp32_max_abs_diff"] < 1e-4


@pytest.mark.toolchain
@pytest.mark.parametrize(
    "damage", ["no-preprocessor", "corrupt-weights", "no-classifier", "not-ast-features"]
)
def test_broken_checkpoint_is_one_line_error(
    damage: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import Wav2Vec2FeatureExtractor

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (broken / name).write_bytes((checkpoint / name).read_bytes())
    expected = {
        "no-preprocessor": "not a checkpoint directory (preprocessor_config.json missing)",
        "corrupt-weights": "cannot load the checkpoint",
        "no-classifier": "the weights lack 4 tensors the model needs (classifier.dense.bias, ",
        "not-ast-features": "Wav2Vec2FeatureExtractor is not supported",
    }[damage]
    if damage == "no-preprocessor":
        (broken / "preprocessor_config.json").unlink()
    elif damage == "corrupt-weights":
        (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    elif damage == "no-classifier":  # an encoder-only checkpoint: the head would be random
        encoder = {k: v for k, v in load_file(broken / "model.safetensors").items() if "classifier" not in k}
        save_file(encoder, broken / "model.safetensors", metadata={"format": "pt"})
    else:
        Wav2Vec2FeatureExtractor().save_pretrained(broken)
    output = tmp_path / "out"
    code, _, errors = _export(capsys, broken, "--output", output)
    _assert_refused(code, errors, output, str(broken), expected)


@pytest.mark.toolchain
def test_unreachable_hub_id_is_one_line_error(toolchain: None, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    output = tmp_path / "out"
    result = kws("export", "MIT/ast-finetuned-speech-commands-v2", "--output", str(output), env=env)
    errors = [line for line in result.stderr.decode().splitlines() if not line.startswith("[")]
    _assert_refused(
        result.returncode, errors, output, "MIT/ast-finetuned-speech-commands-v2: cannot load the hub id"
    )


@pytest.mark.toolchain
def test_fp32_mismatch_is_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from kws_daemon.toolchain import export

    original = export.export_fp32

    def drifted(model: torch.nn.Module, *args: object) -> None:
        twin = copy.deepcopy(model)
        with torch.no_grad():
            twin.classifier.dense.bias.add_(0.01)  # the ONNX file no longer computes the torch model
        original(twin, *args)

    monkeypatch.setattr(export, "export_fp32", drifted)
    output = tmp_path / "out"
    code, _, errors = _export(capsys, checkpoint, "--output", output)
    _assert_refused(code, errors, output, "ONNX fp32 export differs from torch by 1.00e-02", "--force")


@pytest.mark.toolchain
def test_int8_disagreement_is_refused_unless_forced(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import ASTForAudioClassification

    from kws_daemon.toolchain import export

    def wrong_quantizer(fp32: Path, out: Path) -> None:
        other = ASTForAudioClassification.from_pretrained(checkpoint).eval()
        torch.manual_seed(1)
        torch.nn.init.normal_(other.classifier.dense.weight, std=1.0)  # other weights: other labels
        export.export_fp32(other, out, 128, 128)

    monkeypatch.setattr(export, "quantize_dynamic_int8", wrong_quantizer)
    output = tmp_path / "out"
    code, _, errors = _export(capsys, checkpoint, "--output", output)
    _assert_refused(
        code,
        errors,
        output,
        "int8 agrees with fp32 on",
        "of top-1 labels (< 90%)",
        "try --quantize int8-static --calibration DIR (recordings of your own",
        "or --quantize none",
    )

    code, out, _ = _export(capsys, checkpoint, "--output", output, "--force")
    assert code == 0 and "FORCED past a failed check: int8 agrees" in out
    assert json.loads((output / "kws.json").read_text())["export"]["forced"]


@pytest.mark.toolchain
def test_existing_output_is_kept_without_force(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep")
    code, _, errors = _export(capsys, checkpoint, "--output", output)
    assert code == 1 and errors == [f"kws-daemon: error: {output} exists; use --force to replace it"]
    assert (output / "mine.txt").read_text() == "keep"
