"""Training data for a head on speech_embedding: the backbone's two ONNX files, taken from the
openwakeword wheel with their licence, and the training clips turned into embedding windows.

The clips and their augmentation are the AST recipe's (kws_daemon.toolchain.dataset), on a canvas
of the head's window instead of one second; only the featuriser differs.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from kws_daemon.embedding import SpeechEmbedding
from kws_daemon.errors import KwsError
from kws_daemon.model import sha256_file
from kws_daemon.toolchain.dataset import Corpus, FeatureSet, Featuriser, Item, build_corpus

BATCH = 64
BACKBONE_FILES = ("melspectrogram.onnx", "embedding_model.onnx")
ATTRIBUTION = (
    "speech_embedding by Google (Lin et al., 'Training keyword spotters with limited and synthesized "
    "speech data', ICASSP 2020), Apache-2.0; ONNX port from openWakeWord 0.4.0 (David Scripka), Apache-2.0"
)
NOTICE = f"""This model directory contains two files that are not kws-daemon's own work:

  melspectrogram.onnx, embedding_model.onnx

{ATTRIBUTION}.
Original model: https://tfhub.dev/google/speech_embedding/1 (Apache License 2.0).
ONNX files as distributed in the openwakeword 0.4.0 wheel (openwakeword/resources/models/),
https://github.com/dscripka/openWakeWord, Apache License 2.0.

Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files except
in compliance with the License. You may obtain a copy of the License at
http://www.apache.org/licenses/LICENSE-2.0. Unless required by applicable law or agreed to in
writing, software distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
"""


def backbone_source() -> Path:
    """A folder holding the backbone's two ONNX files: the shipped default model's copies (checked
    against their sha256 there), else the openwakeword 0.4.0 wheel's originals."""
    from kws_daemon.model import ModelInfo, default_model_dir

    try:
        shipped = ModelInfo.load(default_model_dir())  # raises if a graph differs from its sha256
        if all((shipped.path / f).is_file() for f in BACKBONE_FILES):
            return shipped.path
    except KwsError:
        pass
    try:
        import openwakeword
    except ImportError:
        raise KwsError(
            "the speech-embedding backbone comes from the shipped default model or the openwakeword "
            "0.4.0 wheel: pip install 'openwakeword==0.4.0' (or the compare extra)"
        ) from None
    folder = Path(openwakeword.__file__).parent / "resources" / "models"
    missing = [f for f in BACKBONE_FILES if not (folder / f).is_file()]
    if missing:
        raise KwsError(f"openwakeword at {folder} lacks {', '.join(missing)}")
    return folder


def copy_backbone(directory: Path) -> dict[str, str]:
    """Copies the two graphs and the NOTICE into a model directory; their sha256 by name."""
    source = backbone_source()
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in BACKBONE_FILES:
        shutil.copyfile(source / name, directory / name)
        digests[name] = sha256_file(directory / name)
    (directory / "NOTICE").write_text(NOTICE)
    return digests


def window_batches(
    items: Iterable[Item], length: int, size: int = BATCH
) -> Iterator[tuple[np.ndarray, list[int], list[str]]]:
    """Items as batches of windows [n, length] (each cut, or padded with silence at its end),
    with their labels and origins: the backbone runs on a batch at a time."""
    batch: list[Item] = []

    def windows() -> tuple[np.ndarray, list[int], list[str]]:
        out = np.zeros((len(batch), length), np.float32)
        for i, (audio, _, _) in enumerate(batch):
            out[i, : min(len(audio), length)] = audio[:length]
        made = out, [y for _, y, _ in batch], [o for _, _, o in batch]
        batch.clear()
        return made

    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield windows()
    if batch:
        yield windows()


def embedding_featuriser(backbone: SpeechEmbedding) -> Featuriser:
    """A dataset.Featuriser: windows of float audio -> [n, frames, 96] float16 embeddings."""

    def featurise(items: Iterable[Item]) -> FeatureSet:
        xs, ys, origins = [], [], []
        for windows, labels, froms in window_batches(items, backbone.params.window_samples):
            xs.append(backbone.windows(windows * 32768).astype(np.float16))
            ys += labels
            origins += froms
        x = np.concatenate(xs) if xs else np.zeros((0, backbone.params.frames, 96), np.float16)
        return FeatureSet(x, np.asarray(ys, dtype=np.int64), np.asarray(origins))

    return featurise


def cached_corpus(path: Path, real_root: Path, ocean_root: Path, log: Callable[[str], None]) -> Corpus:
    """The synthesised and loaded clips, kept in `path` (both training scripts write the same file:
    one synthesis can serve both). Without speech-ocean's manifest, no real running speech."""
    if path.is_file():
        return load_corpus(path)
    ocean = ocean_root if (ocean_root / "manifest.tsv").is_file() else None
    if ocean is None:
        log(f"no {ocean_root}/manifest.tsv: training without real running speech")
    corpus = build_corpus(real_root, ocean)
    save_pickle(corpus, path)
    return corpus


def save_pickle(what: object, path: Path) -> None:
    """A stage's synthesised clips (a Corpus, a custom phrase's Speech), written whole or not at all,
    so that later stages and reruns skip the synthesis."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(what, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_corpus(path: Path) -> Corpus:
    with path.open("rb") as f:
        corpus = pickle.load(f)
    assert isinstance(corpus, Corpus)
    return corpus
