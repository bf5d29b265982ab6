"""Scores on held-out clips by recording source, word and speaker.

A held-out clip's origin reads `real:<source>|<speaker>`. New speakers from the training sources
measure little of what a user meets (a new microphone, room and trimming), so recipe decisions and
model selection use the macro over whole held-out sources (`cross_source_score`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kws_daemon.toolchain.dataset import BACKGROUND, LABELS, XVAL_SOURCES, FeatureSet

# The sources a model is selected on: those held out whole (at least this many clips each).
MIN_SOURCE_CLIPS = 15
SELECTION_SOURCES = (*XVAL_SOURCES, "fsdd", "speech-ocean-digits")


def _parts(features: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    origin = np.char.partition(features.origin.astype(str), "|")
    source = np.char.replace(origin[:, 0], "real:", "")
    return source, origin[:, 2]


def _rate(hits: np.ndarray) -> float:
    return round(float(np.mean(hits)), 4) if len(hits) else float("nan")


def source_report(logits: np.ndarray, features: FeatureSet) -> dict[str, Any]:
    """Top-1 per source (with its words), per word, speaker-weighted, and how often `_background_`
    swallows a keyword."""
    pred = logits.argmax(-1)
    hits = pred == features.y
    source, speaker = _parts(features)
    background = pred == LABELS.index(BACKGROUND)
    per_source = {}
    for name in sorted(set(source.tolist())):
        mask = source == name
        per_source[name] = {
            "clips": int(mask.sum()),
            "words": len(set(features.y[mask].tolist())),
            "accuracy": _rate(hits[mask]),
            "background_top1": _rate(background[mask]),
        }
    per_word = {
        LABELS[label]: {"n": int((features.y == label).sum()), "accuracy": _rate(hits[features.y == label])}
        for label in sorted(set(features.y.tolist()))
    }
    speakers = sorted(set(speaker.tolist()))
    return {
        "clips": len(hits),
        "accuracy": _rate(hits),
        "macro_over_words": round(float(np.mean([w["accuracy"] for w in per_word.values()])), 4),
        "speaker_weighted": round(float(np.mean([hits[speaker == s].mean() for s in speakers])), 4),
        "speakers": len(speakers),
        "background_top1": _rate(background),
        "cross_source": cross_source_score(logits, features),
        "per_source": per_source,
        "per_word": per_word,
    }


def cross_source_score(logits: np.ndarray, features: FeatureSet) -> float:
    """Macro over the whole held-out sources: each recording setup counts once, however big."""
    hits = logits.argmax(-1) == features.y
    source, _ = _parts(features)
    scores = [
        hits[source == name].mean()
        for name in SELECTION_SOURCES
        if (source == name).sum() >= MIN_SOURCE_CLIPS
    ]
    return round(float(np.mean(scores)), 4) if scores else float("nan")
