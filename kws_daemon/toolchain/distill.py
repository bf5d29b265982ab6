"""A speech-embedding head as the AST student's teacher.

The head generalises across recording setups (88.7 % cross-source macro against the from-scratch
CNN teacher's 72-75 %), so its posteriors are the better soft targets. Each training window is made
at the head's length (1.42 s) and seen by both: the head scores the whole window, the student gets
the log-mel of its loudest second, where the word is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from kws_daemon.embedding import SpeechEmbedding
from kws_daemon.model import Model, ModelInfo
from kws_daemon.toolchain.dataset import CLIP, LABELS, FeatureSet, Featuriser, Item, featurise
from kws_daemon.toolchain.embedding_data import window_batches


def loudest_second(audio: np.ndarray, length: int = CLIP) -> np.ndarray:
    """The `length` samples of `audio` with the most energy, on a 10 ms grid."""
    if len(audio) <= length:
        return audio
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(0, len(audio) - length + 1, 160)
    start = int(starts[np.argmax(energy[starts + length] - energy[starts])])
    return audio[start : start + length]


class HeadTeacher:
    """An embedding-kind model directory scoring windows of its own length."""

    def __init__(self, model_dir: Path, threads: int = 0) -> None:
        info = ModelInfo.load(model_dir)
        if info.kind != "embedding":
            raise SystemExit(f"distill: {model_dir} is a {info.kind} model, not a speech-embedding head")
        if info.labels != LABELS:
            raise SystemExit(f"distill: {model_dir}'s labels are not the recipe's {len(LABELS)} labels")
        self.info = info
        self.model = Model(info, threads=threads)
        self.backbone = SpeechEmbedding(info.path, info.frontend, threads=threads)  # type: ignore[arg-type]
        self.length = self.backbone.params.window_samples

    def log_posteriors(self, windows: np.ndarray) -> np.ndarray:
        """[n, labels] log-softmax (logits up to a constant) for float windows in [-1, 1]."""
        posteriors = self.model(self.backbone.windows(windows * 32768))
        return np.log(np.maximum(posteriors, 1e-12)).astype(np.float32)

    def featuriser(self) -> Featuriser:
        """A dataset.Featuriser: windows of the head's length -> the student's log-mel of their
        loudest second, with the head's log-posteriors as `soft`."""

        def run(items: Iterable[Item]) -> FeatureSet:
            soft: list[np.ndarray] = []

            def crops() -> Iterator[Item]:
                for windows, labels, origins in window_batches(items, self.length):
                    soft.append(self.log_posteriors(windows))
                    yield from zip(map(loudest_second, windows), labels, origins, strict=True)

            made = featurise(crops())
            return replace(
                made, soft=np.concatenate(soft) if soft else np.zeros((0, len(LABELS)), np.float32)
            )

        return run
