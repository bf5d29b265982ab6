"""Keyword heads on the speech_embedding sequence, their training and their int8 ONNX export.

A head takes the last 9 embeddings ([batch, 9, 96], 1.42 s) and gives logits over the Speech
Commands words and `_background_`. Three shapes, compared on whole held-out recording sources:
- `linear`: logistic regression on the 864 numbers, the floor any head must beat;
- `conv`: two 1-D convolutions over time, then max and mean over time (a word may sit anywhere);
- `transformer`: the AST idea on the embedding sequence, two pre-norm layers over 9 tokens.
Each normalises its input with the training set's per-dimension mean and std, baked into the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kws_daemon.embedding import EMBED_DIM

HEADS = ("linear", "conv", "transformer")


@dataclass(frozen=True)
class HeadShape:
    kind: str = "conv"
    frames: int = 9
    width: int = 128
    layers: int = 2
    dropout: float = 0.2


class _Normalise(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LinearHead(nn.Module):
    def __init__(self, shape: HeadShape, labels: int, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.norm = _Normalise(mean, std)
        self.out = nn.Linear(shape.frames * EMBED_DIM, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x).flatten(1))


class ConvHead(nn.Module):
    def __init__(self, shape: HeadShape, labels: int, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.norm = _Normalise(mean, std)
        layers: list[nn.Module] = []
        width_in = EMBED_DIM
        for _ in range(shape.layers):
            layers += [nn.Conv1d(width_in, shape.width, 3, padding=1), nn.BatchNorm1d(shape.width), nn.GELU()]
            width_in = shape.width
        self.convs = nn.Sequential(*layers)
        self.drop = nn.Dropout(shape.dropout)
        self.out = nn.Linear(2 * shape.width, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.norm(x).transpose(1, 2))  # [b, width, frames]
        pooled = torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1)
        return self.out(self.drop(pooled))


class TransformerHead(nn.Module):
    def __init__(self, shape: HeadShape, labels: int, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.norm = _Normalise(mean, std)
        self.proj = nn.Linear(EMBED_DIM, shape.width)
        self.position = nn.Parameter(torch.zeros(1, shape.frames, shape.width))
        layer = nn.TransformerEncoderLayer(
            shape.width,
            nhead=4,
            dim_feedforward=2 * shape.width,
            dropout=shape.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)
        self.final = nn.LayerNorm(shape.width)
        self.out = nn.Linear(shape.width, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.proj(self.norm(x)) + self.position)
        return self.out(self.final(h).mean(dim=1))


def make_head(shape: HeadShape, labels: int, mean: np.ndarray, std: np.ndarray, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    kinds: dict[str, Callable[..., nn.Module]] = {
        "linear": LinearHead,
        "conv": ConvHead,
        "transformer": TransformerHead,
    }
    return kinds[shape.kind](shape, labels, mean, std)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Cached float16 embeddings as the head's input."""
    return x.float()


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Embedding-space augmentation on top of the audio's: a little noise and, on a quarter of the
    windows, one embedding frame dropped to the mean (a cough or a click over 80 ms)."""
    std = x.std(dim=(0, 1), keepdim=True)
    noisy = x + 0.1 * std * torch.randn(x.shape, generator=gen).to(x.device)
    b, t, _ = x.shape
    drop = (torch.rand(b, generator=gen) < 0.25).to(x.device)
    frame = torch.randint(0, t, (b,), generator=gen).to(x.device)
    mask = drop[:, None] & (torch.arange(t, device=x.device)[None] == frame[:, None])
    mean = x.mean(dim=(0, 1), keepdim=True)
    return torch.where(mask[..., None], mean.expand_as(x), noisy)


def export_head(model: nn.Module, frames: int, path: Path) -> None:
    """fp32 ONNX: input "embeddings" [batch, frames, 96], output "logits"."""
    from kws_daemon.toolchain.export import torch_to_onnx

    torch_to_onnx(model.eval().cpu(), torch.zeros(1, frames, EMBED_DIM), "embeddings", path)
