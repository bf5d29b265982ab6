"""The speech-embedding kind: streaming equals batch, the model directory is checked, the pipeline
feeds the head what the batch front end computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.embedding import (
    EMBED_SPAN,
    EMBED_STEP,
    EmbeddingParams,
    EmbeddingStore,
    SpeechEmbedding,
    embedding_count,
)
from kws_daemon.errors import KwsError
from kws_daemon.keyword_input import EmbeddingWindows
from kws_daemon.model import Model, ModelInfo
from tests.conftest import ROOT, kws

BACKBONE = ("melspectrogram.onnx", "embedding_model.onnx")


def _backbone_folder() -> Path:
    shipped = ROOT / "models" / "default"
    if all((shipped / f).is_file() for f in BACKBONE):
        return shipped
    try:
        import openwakeword
    except ImportError:
        pytest.skip(
            "no speech-embedding backbone: the shipped model is not of that kind and openwakeword is absent"
        )
    return Path(openwakeword.__file__).parent / "resources" / "models"


@pytest.fixture(scope="module")
def backbone() -> SpeechEmbedding:
    return SpeechEmbedding(_backbone_folder(), EmbeddingParams())


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory) -> Path:
    """A model directory with a random conv head, written by the exporter."""
    pytest.importorskip("torch")
    pytest.importorskip("openwakeword")
    from kws_daemon.toolchain.dataset import LABELS
    from kws_daemon.toolchain.export_embedding import write_embedding_model_dir
    from kws_daemon.toolchain.heads import HeadShape, make_head

    head = make_head(HeadShape(kind="conv"), len(LABELS), np.zeros(96), np.ones(96), seed=0)
    windows = np.random.default_rng(0).standard_normal((200, 9, 96)).astype(np.float32)
    out = tmp_path_factory.mktemp("embedding") / "model"
    write_embedding_model_dir(head, LABELS, 9, out, windows, {"kind": "test"}, min_agreement=0.9)
    return out


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    envelope = 0.5 + 0.5 * np.sin(np.arange(n) / 16000 * 2 * np.pi * 3)
    return (rng.standard_normal(n) * 3000 * envelope).astype(np.float32)


def test_stream_embeddings_equal_the_batch_ones_for_any_blocks(backbone: SpeechEmbedding) -> None:
    audio = _speech_like(4.0)
    batch = backbone.embed(backbone.mel(audio))
    assert len(batch) == embedding_count(len(audio))
    rng = np.random.default_rng(1)
    store = EmbeddingStore(backbone, 16000 * 3)
    i = 0
    while i < len(audio):
        n = int(rng.integers(1, 4000))
        store.push(audio[i : i + n])
        i += n
        last = (store.samples - EMBED_SPAN) // EMBED_STEP
        if last >= 8 and rng.random() < 0.5:
            np.testing.assert_allclose(store.window(store.samples), batch[last - 8 : last + 1], atol=1e-3)
    # each embedding computed once however the windows overlapped: the stream's, plus those of
    # the silence before it that the first windows reached back over
    assert store.computed <= len(batch) + 9


def test_a_clip_is_centred_in_the_window(backbone: SpeechEmbedding) -> None:
    clip = _speech_like(0.8, seed=2).astype(np.int16)
    length = backbone.params.window_samples
    before = (length - len(clip)) // 2
    placed = np.pad(clip.astype(np.float32), (before, length - len(clip) - before))
    np.testing.assert_allclose(backbone.clip(clip), backbone.embed(backbone.mel(placed)), atol=1e-3)
    assert backbone.clip(clip).shape == (9, 96)


def test_the_pipeline_gives_the_head_the_batch_embeddings(head_dir: Path) -> None:
    info = ModelInfo.load(head_dir)
    assert info.kind == "embedding"
    windows = EmbeddingWindows(info, spare_frames=100)
    audio = _speech_like(3.0, seed=3).astype(np.int16)
    windows.push(audio[:20000])
    windows.push(audio[20000:])
    end_frame = windows.n_frames
    end_sample = (end_frame - 1) * 160 + 400
    last = (end_sample - EMBED_SPAN) // EMBED_STEP
    backbone = SpeechEmbedding(head_dir, info.frontend)  # type: ignore[arg-type]
    batch = backbone.embed(backbone.mel(audio.astype(np.float32)))
    np.testing.assert_allclose(windows.window(end_frame), batch[last - 8 : last + 1], atol=1e-3)


def test_a_missing_or_altered_backbone_is_a_one_line_error(head_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(head_dir, broken)
    (broken / "embedding_model.onnx").unlink()
    with pytest.raises(KwsError, match=r"embedding_model\.onnx .*missing"):
        ModelInfo.load(broken)
    shutil.copyfile(head_dir / "embedding_model.onnx", broken / "embedding_model.onnx")
    with (broken / "melspectrogram.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(KwsError, match=r"melspectrogram\.onnx does not match its sha256"):
        ModelInfo.load(broken)
    done = kws("detect", "--model", str(broken), str(ROOT / "demo" / "demo.wav"))
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_the_directory_carries_notice_and_digests(head_dir: Path) -> None:
    pre = json.loads((head_dir / "preprocessor_config.json").read_text())
    assert set(pre["sha256"]) == set(BACKBONE)
    assert "Apache" in (head_dir / "NOTICE").read_text()
    kws_json = json.loads((head_dir / "kws.json").read_text())
    assert "speech_embedding" in kws_json["attribution"]
    assert kws_json["export"]["int8_top1_agreement"] >= 0.9


@pytest.mark.parametrize("mode", ["commands", "running"])
def test_detect_runs_an_embedding_head_in_both_keyword_modes(
    head_dir: Path, tmp_path: Path, mode: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {head_dir}\ndetector:\n  mode: {mode}\n  threshold: 0.0\n")
    done = kws("detect", "--config", str(config), "--json", str(ROOT / "demo" / "demo.wav"))
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    # threshold 0: every scored window's best keyword fires, so the demo's speech must give events
    assert events and all(e["keyword"] in ModelInfo.load(head_dir).labels for e in events)


def test_batched_windows_score_as_alone(head_dir: Path) -> None:
    assert Model(ModelInfo.load(head_dir)).scores_each_window_alone()
