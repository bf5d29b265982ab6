"""Local AST checkpoints with MIT/ast-finetuned-speech-commands-v2's architecture and random weights.

The hub is unreachable here, so the export path is proved on a checkpoint directory that has exactly
the MIT model's config, feature extractor and label order (only the weights differ); smaller members
of the same family keep the tests fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kws_daemon.toolchain.labels import SC_MEAN, SC_STD, SPEECH_COMMANDS_V2


def _card(directory: Path, of: str) -> None:
    """A README.md as the Hub's model cards have it (front matter with `license:`), so the exporter's
    reading of a checkpoint's licence is proved too. The weights are random, made here: MIT, as this
    project; the real checkpoint's licence is on its own card."""
    (directory / "README.md").write_text(
        f"---\nlicense: mit\ntags: [kws-daemon-stand-in]\n---\n# Stand-in for {of}\n\n"
        "The real architecture with seeded random weights, written by kws_daemon.toolchain.standin.\n"
    )


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
    _card(directory, "MIT/ast-finetuned-speech-commands-v2")
    return directory


# anton-l/xtreme_s_xlsr_300m_minds14's labels, in its order (the MINDS-14 intents)
MINDS14_INTENTS = (
    "abroad",
    "address",
    "app_error",
    "atm_limit",
    "balance",
    "business_loan",
    "card_issues",
    "cash_deposit",
    "direct_debit",
    "freeze",
    "high_value_payment",
    "joint_account",
    "latest_transactions",
    "pay_bill",
)
XLSR_300M_SIZE = AstSize(hidden=1024, layers=24, heads=16, intermediate=4096)  # facebook/wav2vec2-xls-r-300m


def save_wav2vec2_checkpoint(
    directory: Path, size: AstSize = XLSR_300M_SIZE, labels: tuple[str, ...] = MINDS14_INTENTS, seed: int = 0
) -> Path:
    """An XLS-R-style Wav2Vec2ForSequenceClassification (stable layer norm, layer-norm feature
    encoder, as facebook/wav2vec2-xls-r-300m) with seeded random weights, and its extractor."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    conv = 512 if size.hidden >= 512 else 64
    config = Wav2Vec2Config(
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        conv_dim=(conv,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128 if size.hidden >= 512 else 16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        classifier_proj_size=256,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    Wav2Vec2ForSequenceClassification(config).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(directory)
    _card(directory, "anton-l/xtreme_s_xlsr_300m_minds14")
    return directory


# sanchit-gandhi/whisper-medium-fleurs-lang-id classifies FLEURS's 102 languages; a stand-in keeps a
# few of its labels (the count does not change the architecture)
FLEURS_LANGUAGES = (
    "English",
    "French",
    "German",
    "Spanish",
    "Mandarin Chinese",
    "Hindi",
    "Arabic",
    "Swahili",
)
WHISPER_MEDIUM_SIZE = AstSize(hidden=1024, layers=24, heads=16, intermediate=4096)  # openai/whisper-medium


def save_whisper_checkpoint(
    directory: Path,
    size: AstSize = WHISPER_MEDIUM_SIZE,
    labels: tuple[str, ...] = FLEURS_LANGUAGES,
    seed: int = 0,
) -> Path:
    """A WhisperForAudioClassification (the encoder, 80 mel bins, 1500 positions, as whisper-medium)
    with seeded random weights, and its feature extractor."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(
        d_model=size.hidden,
        encoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        encoder_ffn_dim=size.intermediate,
        decoder_layers=1,
        decoder_attention_heads=size.heads,
        decoder_ffn_dim=size.intermediate,
        num_mel_bins=80,
        max_source_positions=1500,
        classifier_proj_size=256,
        dropout=0.0,
        attention_dropout=0.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    WhisperForAudioClassification(config).eval().save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    _card(directory, "sanchit-gandhi/whisper-medium-fleurs-lang-id")
    return directory


@dataclass(frozen=True)
class ClapSize:
    """HTSAT audio tower and RoBERTa text tower sizes."""

    audio_depths: tuple[int, ...]
    audio_heads: tuple[int, ...]
    audio_hidden: int  # the last stage's width (patch_embeds_hidden_size * 8)
    patch_hidden: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    projection: int


# laion/clap-htsat-unfused: HTSAT-tiny (depths 2-2-6-2) and RoBERTa-base, projection 512
CLAP_HTSAT_UNFUSED_SIZE = ClapSize((2, 2, 6, 2), (4, 8, 16, 32), 768, 96, 768, 12, 12, 3072, 512)
CLAP_PROMPTS = ("Sound of a dog", "Sound of a smoke alarm", "Sound of glass breaking", "Sound of speech")


def save_clap_checkpoint(directory: Path, size: ClapSize = CLAP_HTSAT_UNFUSED_SIZE, seed: int = 0) -> Path:
    """A ClapModel with laion/clap-htsat-unfused's layout (no fusion, rand_trunc features) and seeded
    random weights, its feature extractor and a byte-level BPE tokenizer trained on a few sentences
    (the real one is RoBERTa's; the model's cost and contract do not depend on the vocabulary)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizerFast,
    )

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    corpus = [
        " ".join(CLAP_PROMPTS),
        "the sound of a cat a car a bell music rain a door knocking a baby crying",
    ]
    bpe.train_from_iterator(
        corpus * 50, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(directory / "vocab.json"),
        merges_file=str(directory / "merges.txt"),
        model_max_length=77,
    )
    audio = ClapAudioConfig(
        depths=list(size.audio_depths),
        num_attention_heads=list(size.audio_heads),
        hidden_size=size.audio_hidden,
        patch_embeds_hidden_size=size.patch_hidden,
        projection_dim=size.projection,
        enable_fusion=False,
    )
    text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        intermediate_size=size.text_intermediate,
        projection_dim=size.projection,
        max_position_embeddings=80,
    )
    config = ClapConfig(
        text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=size.projection
    )
    torch.manual_seed(seed)
    ClapModel(config).eval().save_pretrained(directory)
    ClapProcessor(ClapFeatureExtractor(truncation="rand_trunc"), tokenizer).save_pretrained(directory)
    _card(directory, "laion/clap-htsat-unfused")
    return directory
