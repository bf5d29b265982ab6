"""Ablations: the recipe with one part taken away (or a dropped one put back), scored on the whole
held-out sources.

Each run trains the recipe's CNN (the teacher: the cheapest model the recipe trains, and the one
the AST student is distilled from and bounded by) for a few epochs and keeps its last epoch, so
that no run is selected on the set it is scored on. `seed` reruns the whole recipe with another
seed: a difference smaller than the one it shows is noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kws_daemon.toolchain.dataset import Augmentation, FeatureSet

# the channel augmentations at the probabilities of the v3 recipe, which the recipe dropped
BAND = (("band_8k", 0.15), ("telephone", 0.08), ("codec", 0.08))
CHANNEL = (("reverb", 0.3), ("eq", 0.5), *BAND)


@dataclass(frozen=True)
class Ablation:
    name: str
    what: str
    augmentation_changes: tuple[tuple[str, float], ...] = ()  # probabilities set, by name
    drop_origins: tuple[str, ...] = ()  # prefixes of the training origins left out
    negatives: bool = True
    seed_offset: int = 0

    @property
    def augmentation(self) -> Augmentation:
        return replace(Augmentation(), **dict(self.augmentation_changes))

    def training_set(self, train: FeatureSet, negatives: FeatureSet) -> FeatureSet:
        parts = [train, negatives] if self.negatives else [train]
        x = np.concatenate([p.x for p in parts])
        y = np.concatenate([p.y for p in parts])
        origin = np.concatenate([p.origin for p in parts])
        soft = np.concatenate([p.soft for p in parts]) if all(p.soft is not None for p in parts) else None
        if not self.drop_origins:
            return FeatureSet(x, y, origin, soft)
        keep = ~np.char.startswith(origin.astype(str), self.drop_origins)
        return FeatureSet(x[keep], y[keep], origin[keep], None if soft is None else soft[keep])


ABLATIONS = {
    a.name: a
    for a in (
        Ablation("full", "the whole recipe"),
        Ablation("seed", "the whole recipe, seed + 1 (run-to-run noise)", seed_offset=1),
        Ablation("synthetic-keywords", "no synthesised keyword clips", drop_origins=("synth",)),
        Ablation("hard-negatives", "no windows of synthesised running speech", negatives=False),
        Ablation(
            "speech-ocean", "no real running speech (speech-ocean) as background", drop_origins=("ocean",)
        ),
        Ablation(
            "channel",
            "with room, microphone EQ, 8 kHz, telephone and mu-law put back",
            augmentation_changes=CHANNEL,
        ),
        Ablation("band", "with 8 kHz, telephone and mu-law put back", augmentation_changes=BAND),
        Ablation("reverb", "with room impulse responses put back", augmentation_changes=CHANNEL[:1]),
        Ablation("eq", "with microphone and room EQ put back", augmentation_changes=CHANNEL[1:2]),
        Ablation("noise", "no recorded background noise", augmentation_changes=(("noise", 0.0),)),
        Ablation("speed", "no speed perturbation", augmentation_changes=(("speed", 0.0),)),
    )
}

# the held-out sources the table shows one by one (the rest count in the macro)
SHOWN = ("fsdd", "speech-ocean-digits", "sc_v001_vinsis_sample", "sc_anshulgupta0803_9words")


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: each run's cross-source macro, the big sources, background top-1 and test, with
    the difference to `full` in the macro."""
    base = results.get("full", {}).get("xval", {}).get("cross_source")
    head = ["run", "what", "maps", "xval macro", "Δ", "all xval clips", *SHOWN, "heard as background", "test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        x = r["xval"]
        delta = "" if base is None or name == "full" else f"{100 * (x['cross_source'] - base):+.1f}"
        sources = [
            f"{100 * x['per_source'][s]['accuracy']:.1f} %" if s in x["per_source"] else "-" for s in SHOWN
        ]
        lines.append(
            f"| {name} | {r['what']} | {r['maps']} | {100 * x['cross_source']:.1f} % | {delta} | "
            f"{100 * x['accuracy']:.1f} % | "
            + " | ".join(sources)
            + f" | {100 * x['background_top1']:.1f} % | {100 * r['test']:.1f} % |"
        )
    return "\n".join(lines) + "\n"
