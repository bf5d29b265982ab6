"""Several keyword models as one: the 35 words of the default model and your own phrases, sharing
one front end, so each 10 ms of audio gets one mel frame and each 80 ms one embedding, whatever the
number of models (`models: [default, /var/lib/kws-daemon/hey-kitchen]`).

The group looks like one model to everything above it (pipelines, thresholds, sequences, serve's
batching, Wyoming `info`): its labels are every member's keywords, then one background; a window
holds the longest member's frames and each member reads its own last ones. Each member keeps its own
softmax: a keyword's score is what its own model says, and the background's is the lowest of the
members' (some model hearing its keyword is what lets a keyword win).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.embedding import EmbeddingParams
from kws_daemon.errors import ConfigError
from kws_daemon.model import KEYWORD_KINDS, MODES_OF, Model, ModelInfo, is_background_label, sha256_file

BACKGROUND = "_background_"


def _front_end(info: ModelInfo) -> Any:
    """What two members must share: the backbone's graphs (by content), or the AST's log-mel."""
    frontend = info.frontend
    if isinstance(frontend, EmbeddingParams):
        return (
            "embedding",
            sha256_file(info.path / frontend.melspectrogram),
            sha256_file(info.path / frontend.embedding),
        )
    return (info.kind, frontend)


def group_info(infos: list[ModelInfo]) -> ModelInfo:
    """The members as one ModelInfo: the first's front end (with the most frames), default mode and
    commands-mode window rule; every member's keywords and calibrated thresholds."""
    first = infos[0]
    shared = _front_end(first)  # sha256 of the backbone's graphs: read once, not once per member
    for info in infos:
        if info.kind not in KEYWORD_KINDS:
            raise ConfigError(
                f"models: {info.path} is a {info.kind} model; only keyword models can be combined"
            )
        if info is not first and _front_end(info) != shared:
            raise ConfigError(
                f"models: {info.path} and {first.path} do not share a front end ({info.kind}, {first.kind}); "
                "combine models made on the same backbone, or run two daemons"
            )
        if not any(is_background_label(label) for label in info.labels):
            raise ConfigError(f"models: {info.path} has no background label, so it cannot say 'none of mine'")
    seen: dict[str, Path] = {}
    for info in infos:
        for label in info.keyword_labels:
            if label in seen:
                raise ConfigError(f"models: the keyword '{label}' is in both {seen[label]} and {info.path}")
            seen[label] = info.path
    frontend = first.frontend
    if isinstance(frontend, EmbeddingParams):
        frames = max(i.frontend.frames for i in infos if isinstance(i.frontend, EmbeddingParams))
        frontend = replace(frontend, frames=frames)
    thresholds: dict[str, dict[str, float]] = {}
    for info in infos:
        for mode in MODES_OF[first.kind]:
            thresholds.setdefault(mode, {}).update(info.thresholds(mode))
    kws = {k: v for k, v in first.kws.items() if k != "sha256"} | {
        "thresholds": thresholds,
        "members": [str(i.path) for i in infos],
    }
    return ModelInfo(
        path=first.path,
        labels=(*seen, BACKGROUND),
        frontend=frontend,
        sample_rate=first.sample_rate,
        kws=kws,
    )


class ModelGroup(Model):
    """Members' posteriors side by side, as one model's."""

    def __init__(self, infos: list[ModelInfo], threads: int = 1) -> None:  # no session of its own
        self.info = group_info(infos)
        self.members = [Model(info, threads) for info in infos]
        self._frames = [m.window_shape[0] for m in self.members]
        # per member: where each of its labels goes in the group's, and which are its backgrounds
        self._keywords = [
            (
                np.array([i for i, label in enumerate(m.info.labels) if not is_background_label(label)]),
                np.array([self.info.labels.index(label) for label in m.info.keyword_labels]),
                np.array([i for i, label in enumerate(m.info.labels) if is_background_label(label)]),
            )
            for m in self.members
        ]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(windows), len(self.info.labels)), np.float32)
        background = np.ones(len(windows), np.float32)
        for member, frames, (mine, theirs, bg) in zip(
            self.members, self._frames, self._keywords, strict=True
        ):
            posteriors = member(windows[:, windows.shape[1] - frames :])
            out[:, theirs] = posteriors[:, mine]
            background = np.minimum(background, posteriors[:, bg].sum(axis=1))
        out[:, -1] = background
        return out


def load_group(paths: list[Path], threads: int) -> Model:
    """One model, or the group of several."""
    infos = [ModelInfo.load(p) for p in paths]
    return Model(infos[0], threads) if len(infos) == 1 else ModelGroup(infos, threads)


def load_info(paths: list[Path]) -> ModelInfo:
    infos = [ModelInfo.load(p) for p in paths]
    return infos[0] if len(infos) == 1 else group_info(infos)
