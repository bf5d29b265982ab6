"""Local AST checkpoints with MIT/ast-finetuned-speech-commands-v2's architecture and random weights.

The hub is unreachable here, so the export path is proved on a checkpoint directory that has exactly
the MIT model's config, feature extractor and label order (only the weights differ); smaller members
of the same family keep the tests fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kws_daemon.toolchain.labels import SC_MEAN, SC_STD, SPEECH_COMMANDS_V2


@dataclass(frozen=True)
class AstSize:
    hidden: int
    layers: int
    heads: int
    intermediate: int


MIT_SIZE = AstSize(hidden=768, layers=12, heads=12, intermediate=3072)  # ViT-Base, as the MIT checkpoint


def save_ast_checkpoint(
    directory: Path, size: AstSize = MIT_SIZE, labels: tuple[str, ...] = SPEECH_COMMANDS_V2, seed: int = 0
) -> Path:
    """Writes config.json, preprocessor_config.json and model.safetensors (seeded random weights)."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        max_length=128,
        num_mel_bins=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
    )
    torch.manual_seed(seed)
    ASTForAudioClassification(config).eval().save_pretrained(directory)
    ASTFeatureExtractor(mean=SC_MEAN, std=SC_STD, max_length=128).save_pretrained(directory)
    return directory
