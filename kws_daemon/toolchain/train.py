"""Training of the default model: a small CNN teacher, then an AST student distilled from it.

A transformer from scratch on ~30k clips is data-starved (measured: 16 % on held-out speakers after
31 CPU-minutes), while a CNN of 400k parameters learns the same data in minutes. The student is a
Hugging Face ASTForAudioClassification (so the export path, the input contract and the front end
stay those of any AST checkpoint) trained on the labels and on the teacher's soft posteriors, with
non-overlapping patches (few tokens, fast on a CPU) and random position-embedding initialisation.
Every stage checkpoints, so a CPU run can stop and resume.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kws_daemon.toolchain.dataset import LABELS, FeatureSet
from kws_daemon.toolchain.labels import BACKGROUND, SC_MEAN, SC_STD

MAX_LENGTH = 100
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class StudentShape:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    frequency_stride: int = 16
    time_stride: int = 16
    stem: str = "conv"  # "conv": ConvStem; "linear": the AST's own 16x16 patch projection


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[b, 98, 128] raw log-mel -> [b, MAX_LENGTH, 128] as ASTFeatureExtractor pads and normalises."""
    x = F.pad(x.float(), (0, 0, 0, MAX_LENGTH - x.shape[1]))
    return (x - SC_MEAN) / (2 * SC_STD)


def spec_augment(
    x: torch.Tensor, gen: torch.Generator, time_masks: int = 2, freq_masks: int = 2
) -> torch.Tensor:
    x = x.clone()
    b, t, f = x.shape
    for _ in range(time_masks):
        width = torch.randint(0, 12, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (t - width)).long()
        idx = torch.arange(t)[None]
        x[(idx >= start[:, None]) & (idx < (start + width)[:, None])] = 0.0
    for _ in range(freq_masks):
        width = torch.randint(0, 16, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (f - width)).long()
        idx = torch.arange(f)[None]
        mask = (idx >= start[:, None]) & (idx < (start + width)[:, None])
        x = x.masked_fill(mask[:, None, :], 0.0)
    return x


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TeacherCNN(nn.Module):
    """A ResNet-style CNN of about 0.5M parameters: the distillation teacher, never shipped."""

    def __init__(self, n_labels: int = len(LABELS)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(_Block(32, 48, (2, 2)), _Block(48, 96, (2, 2)), _Block(96, 128, (2, 1)))
        self.head = nn.Linear(128, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x[:, None]))
        return self.head(y.mean(dim=(2, 3)))


class ConvStem(nn.Module):
    """Three stride-2 3x3 convolutions in place of the AST's one 16x16 patch projection.

    Early convolutions make a small transformer train like a CNN (Xiao et al., 2021) instead of
    needing 100+ passes over the data; the tokens keep the AST's grid (8 x 6 for strides 16/16),
    so position embeddings, the input contract and the ONNX export are unchanged.
    """

    def __init__(self, hidden: int, grid: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = (1, 16, 32, hidden)
        for cin, cout in itertools.pairwise(channels):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
            size = ((size[0] - 1) // 2 + 1, (size[1] - 1) // 2 + 1)
        # a last stride-2 convolution whose kernel lands exactly on the AST's token grid
        kernel = (size[0] - 2 * (grid[0] - 1), size[1] - 2 * (grid[1] - 1))
        if min(kernel) < 1:
            raise ValueError(f"a conv stem cannot make a {grid} token grid from {size}")
        self.convs = nn.Sequential(*layers, nn.Conv2d(hidden, hidden, kernel, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)  # [b, 1, mel, time] -> [b, hidden, *grid]


def student_config(shape: StudentShape) -> Any:
    from transformers import ASTConfig

    config = ASTConfig(
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=4 * shape.hidden,
        patch_size=16,
        frequency_stride=shape.frequency_stride,
        time_stride=shape.time_stride,
        max_length=MAX_LENGTH,
        num_mel_bins=128,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    config.kws_stem = shape.stem
    return config


def _conv_stem_ast() -> type:
    """ASTForAudioClassification with the conv stem: a class of its own, so that transformers'
    from_pretrained loads it (renaming weights across transformers 4 and 5)."""
    from transformers import ASTForAudioClassification

    class ConvStemAST(ASTForAudioClassification):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            embeddings = self.audio_spectrogram_transformer.embeddings
            grid = embeddings.get_shape(config)
            embeddings.patch_embeddings.projection = ConvStem(
                config.hidden_size, grid, (config.num_mel_bins, config.max_length)
            )

    return ConvStemAST


def student_class(config: Any) -> Any:
    """The model class of a student config: the AST, or the AST with the conv stem."""
    from transformers import ASTForAudioClassification

    return _conv_stem_ast() if getattr(config, "kws_stem", "linear") == "conv" else ASTForAudioClassification


def student_from_config(config: Any) -> nn.Module:
    """An ASTForAudioClassification with the stem its config names."""
    return student_class(config)(config)  # type: ignore[no-any-return]


def make_student(shape: StudentShape, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = student_from_config(student_config(shape))
    embeddings = model.audio_spectrogram_transformer.embeddings
    for p in (embeddings.position_embeddings, embeddings.cls_token, embeddings.distillation_token):
        nn.init.trunc_normal_(p, std=0.02)
    return model


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def predict(
    model: nn.Module,
    features: FeatureSet,
    batch: int = 512,
    inputs: Callable[[torch.Tensor], torch.Tensor] = normalise,
) -> np.ndarray:
    """`inputs` turns cached features into the model's input (default: the AST's normalised log-mel)."""
    model.eval().to(DEVICE)
    chunks = [
        logits_of(model, inputs(torch.from_numpy(features.x[i : i + batch]).to(DEVICE))).cpu().numpy()
        for i in range(0, len(features.y), batch)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, len(LABELS)))


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(-1) == y)) if len(y) else float("nan")


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    batch: int = 128
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    distill_weight: float = 0.7  # share of the loss from the teacher's posteriors
    temperature: float = 2.0
    background_share: float | None = None  # of the draws; None: like any other label


def _sampling_weights(y: np.ndarray, background_share: float | None) -> torch.Tensor:
    """Every label drawn equally often; or `_background_` with this share of the draws, the words
    equally among the rest (background covers silence, noise and all other speech: it needs more)."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    weights = 1.0 / np.maximum(counts[y], 1)
    if background_share is not None:
        is_background = y == LABELS.index(BACKGROUND)
        words = (counts > 0).sum() - 1
        share = np.where(is_background, background_share, (1 - background_share) / words)
        weights = weights * share
    return torch.from_numpy(weights)


def fit(
    model: nn.Module,
    train: FeatureSet,
    val: FeatureSet,
    schedule: Schedule,
    checkpoint: Path,
    seed: int,
    teacher_logits: np.ndarray | None = None,
    log: Callable[[str], None] = print,
    keep_best: bool = True,
    score: Callable[[np.ndarray], float] | None = None,
    inputs: Callable[[torch.Tensor], torch.Tensor] = normalise,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = spec_augment,
) -> list[dict[str, Any]]:
    """Trains with AdamW and a cosine schedule on the GPU if there is one; resumes from `checkpoint`.

    Ends with the weights of the best validation epoch, or with the last (`keep_best=False`) when
    validation cannot see what the training is for (it holds keywords only, no background).
    `score` rates the validation logits (default: top-1 accuracy over all clips); `inputs` and
    `augment` (default: SpecAugment) prepare a batch of cached features for other model kinds.
    """
    rate = score or (lambda logits: accuracy(logits, val.y))
    model.to(DEVICE)
    optimiser = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    steps_per_epoch = len(train.y) // schedule.batch
    total = steps_per_epoch * schedule.epochs
    warmup = int(steps_per_epoch * schedule.warmup_epochs)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    history: list[dict[str, Any]] = []
    start_epoch, best, elapsed, cpu = 0, -1.0, 0.0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False, map_location=DEVICE)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history, elapsed = (
            state["epoch"],
            state["best"],
            state["history"],
            state["elapsed"],
        )
        cpu = state.get("cpu", 0.0)
        log(f"resumed {checkpoint.name} at epoch {start_epoch}")
    weights = _sampling_weights(train.y, schedule.background_share)
    soft = None
    if teacher_logits is not None:
        soft = torch.from_numpy(teacher_logits).float().to(DEVICE)
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y).to(DEVICE)
    for epoch in range(start_epoch, schedule.epochs):
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.multinomial(weights, steps_per_epoch * schedule.batch, replacement=True, generator=gen)
        model.train()
        t0, c0, losses = time.monotonic(), time.process_time(), []
        for step in range(steps_per_epoch):
            idx = order[step * schedule.batch : (step + 1) * schedule.batch]
            x = augment(inputs(x_all[idx]), gen)
            logits = logits_of(model, x)
            loss = F.cross_entropy(logits, y_all[idx], label_smoothing=0.1)
            if soft is not None:
                t = schedule.temperature
                kd = F.kl_div(
                    F.log_softmax(logits / t, -1), F.softmax(soft[idx] / t, -1), reduction="batchmean"
                )
                loss = (1 - schedule.distill_weight) * loss + schedule.distill_weight * kd * t * t
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        elapsed += time.monotonic() - t0
        cpu += time.process_time() - c0
        val_acc = rate(predict(model, val, inputs=inputs))
        record = {
            "epoch": epoch + 1,
            "minutes": round(elapsed / 60, 2),
            "cpu_minutes": round(cpu / 60, 2),  # the process's CPU time: comparable on a shared machine
            "loss": round(float(np.mean(losses)), 4),
            "val_acc": round(val_acc, 4),
            "samples_per_s": round(steps_per_epoch * schedule.batch / (time.monotonic() - t0), 1),
        }
        history.append(record)
        log(json.dumps(record))
        if val_acc > best:
            best = val_acc
            torch.save(model.state_dict(), checkpoint.with_suffix(".best.pt"))
        torch.save(
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "history": history,
                "elapsed": elapsed,
                "cpu": cpu,
                "schedule": asdict(schedule),
            },
            checkpoint,
        )
    if keep_best:
        model.load_state_dict(torch.load(checkpoint.with_suffix(".best.pt"), map_location=DEVICE))
    return history
