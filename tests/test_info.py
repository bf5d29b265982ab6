"""`kws-daemon info`: the shipped directories, read back against their own files (the exported
kinds are checked in test_export.py and test_families.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kws_daemon.model import default_model_dir
from tests.conftest import AST_MODEL, kws


@pytest.mark.parametrize("directory", [None, AST_MODEL], ids=["default-embedding", "ast"])
def test_info_matches_the_directory(directory: Path | None) -> None:
    path = directory or default_model_dir()
    result = kws("info", *([str(directory)] if directory else []), "--json")
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    kws_json = json.loads((path / "kws.json").read_text())
    pre = json.loads((path / "preprocessor_config.json").read_text())
    labels = json.loads((path / "config.json").read_text())["id2label"]
    assert info["path"] == str(path) and info["labels"] == [labels[str(i)] for i in range(len(labels))]
    assert info["keywords"] == [x for x in info["labels"] if x != "_background_"]
    assert info["kind"] == ("ast" if directory else "embedding") and info["default_mode"] == "commands"
    assert info["thresholds"] == {m: t for m, t in kws_json["thresholds"].items() if t}
    onnx = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.glob("*.onnx")}
    assert info["sha256"] == onnx and onnx["model.onnx"] == kws_json["sha256"]
    assert info["bytes"] == sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    assert info["licence"] == kws_json["licence"] and info["attribution"] == kws_json["attribution"]
    assert info["card"] == kws_json["evaluation"]["summary"] and info["window_ms"] == kws_json["window_ms"]
    if directory is None:  # the backbone's graphs, named by the preprocessor config, with the NOTICE
        assert {pre["melspectrogram"], pre["embedding_model"]} <= set(onnx) and info["notice"]
    text = kws("info", str(path)).stdout.decode()
    assert f"{info['kind']} model, 36 labels (35 keywords)" in text
    assert "modes: commands (default), running, utterances" in text
    assert f"sha256 model.onnx: {kws_json['sha256']} (matches kws.json)" in text


def _with_default_mode(tmp_path: Path, mode: str) -> Path:
    """A copy of the shipped directory whose kws.json names `mode` as its default."""
    copy = tmp_path / mode
    copy.mkdir()
    for p in default_model_dir().iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    kws_json = json.loads((copy / "kws.json").read_text())
    (copy / "kws.json").write_text(json.dumps({**kws_json, "default_mode": mode}))
    return copy


def test_info_on_a_bad_directory_is_one_line(tmp_path: Path) -> None:
    missing = kws("info", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.decode().count("\n") == 1
    assert "does not exist" in missing.stderr.decode()
    broken = _with_default_mode(tmp_path, "sounds")
    result = kws("info", str(broken))
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1
    assert (
        "kws.json default_mode 'sounds' is not a mode that embedding models run in" in result.stderr.decode()
    )


def test_a_default_mode_in_kws_json_is_what_runs(tmp_path: Path) -> None:
    """The model directory may name its own default mode: running here, so words inside speech count."""
    from tests.conftest import DEMO_WAV

    running = _with_default_mode(tmp_path, "running")
    assert json.loads(kws("info", str(running), "--json").stdout)["default_mode"] == "running"
    result = kws("run", "--model", str(running), "--input", str(DEMO_WAV), "--fast")
    assert result.returncode == 0 and "running mode" in result.stderr.decode()
    assert "commands mode" in kws("run", "--input", str(DEMO_WAV), "--fast").stderr.decode()
