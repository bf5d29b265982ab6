"""`kws-daemon info [DIR]`: what a model directory is and how it runs, read from its own files.

The loader's checks run first (ModelInfo.load: labels, front end, sha256), so what is shown is what
`run` would load; the ONNX session itself is not started.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from kws_daemon.config import DEFAULT_THRESHOLD
from kws_daemon.embedding import EMBED_DIM, EmbeddingParams
from kws_daemon.features import FbankParams
from kws_daemon.frontends import WaveformParams, WhisperParams
from kws_daemon.model import MODES_OF, Frontend, ModelInfo, default_model_dir, sha256_file

# the export report's headline numbers, for directories that carry no evaluation of their own
EXPORT_HEADLINES = (
    "parity_data",
    "fp32_max_abs_diff",
    "int8_top1_agreement",
    "int8_max_abs_diff",
    "fp32_latency_ms",
    "int8_latency_ms",
    "forced",
)


def front_end(frontend: Frontend, rate: int) -> str:
    if isinstance(frontend, FbankParams):
        return (
            f"log-mel (Kaldi fbank), {frontend.num_mel_bins} bins every 10 ms, {frontend.max_length} "
            f"frames a window, normalised with mean {frontend.mean:g} and std {frontend.std:g}"
        )
    if isinstance(frontend, EmbeddingParams):
        return (
            f"speech_embedding: 32-bin log-mel ({frontend.melspectrogram}) -> one {EMBED_DIM}-number "
            f"embedding every 80 ms ({frontend.embedding}); {frontend.frames} embeddings a window"
        )
    if isinstance(frontend, WaveformParams):
        return "raw waveform (wav2vec2)" + (", normalised per utterance" if frontend.do_normalize else "")
    if isinstance(frontend, WhisperParams):
        return (
            f"Whisper log-mel, {frontend.num_mel_bins} bins, each utterance padded to "
            f"{frontend.n_samples / rate:g} s"
        )
    return (
        f"CLAP log-mel, {frontend.num_mel_bins} bins, {frontend.max_samples / rate:g} s windows "
        f"({frontend.truncation}, {frontend.padding})"
    )


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def describe(info: ModelInfo) -> dict[str, Any]:
    kws = info.kws
    files = sorted(p for p in info.path.iterdir() if p.is_file())
    evaluation, export, provenance = (_table(kws, key) for key in ("evaluation", "export", "provenance"))
    card: dict[str, Any] = _table(evaluation, "summary")
    card_from: str | None = "evaluation"
    if not card:
        card = {k: export[k] for k in EXPORT_HEADLINES if k in export}
        card_from = "export" if card else None
    return {
        "path": str(info.path),
        "kind": info.kind,
        "default_mode": info.default_mode,
        "modes": list(MODES_OF[info.kind]),
        "labels": list(info.labels),
        "keywords": list(info.keyword_labels),
        "thresholds": {mode: info.thresholds(mode) for mode in MODES_OF[info.kind] if info.thresholds(mode)},
        "front_end": front_end(info.frontend, info.sample_rate),
        "sample_rate": info.sample_rate,
        "window_ms": kws.get("window_ms"),
        "hop_ms": kws.get("hop_ms"),
        "bytes": sum(p.stat().st_size for p in files),
        "files": {p.name: p.stat().st_size for p in files},
        "sha256": {p.name: sha256_file(p) for p in files if p.suffix == ".onnx"},
        "sha256_checked": "sha256" in kws,  # ModelInfo.load held model.onnx to kws.json's
        "licence": kws.get("licence"),
        "attribution": kws.get("attribution"),
        "notice": (info.path / "NOTICE").is_file(),
        "source": provenance.get("script") or provenance.get("source"),
        "card": card,
        "card_from": card_from,
    }


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(d: dict[str, Any]) -> str:
    wrap = textwrap.TextWrapper(width=100, initial_indent="  ", subsequent_indent="    ")
    modes = ", ".join(m + (" (default)" if m == d["default_mode"] else "") for m in d["modes"])
    lines = [
        f"{d['path']}: {d['kind']} model, {len(d['labels'])} labels "
        f"({len(d['keywords'])} keywords), {d['bytes'] / 1e6:.2f} MB",
        f"  modes: {modes}",
    ]
    lines += wrap.wrap(f"front end: {d['front_end']}; {d['sample_rate']} Hz")
    if d["window_ms"]:
        lines.append(f"  window: {d['window_ms']} ms, hop {d['hop_ms']} ms")
    lines += wrap.wrap("labels: " + ", ".join(d["labels"]))
    for mode, table in d["thresholds"].items():
        pairs = ", ".join(f"{k} {v:.2f}" for k, v in table.items())
        lines += wrap.wrap(f"thresholds ({mode}, calibrated; others {DEFAULT_THRESHOLD:g}): {pairs}")
    if not d["thresholds"]:
        lines.append(f"  thresholds: none calibrated (detector.threshold, default {DEFAULT_THRESHOLD:g})")
    for name, digest in d["sha256"].items():
        checked = " (matches kws.json)" if name == "model.onnx" and d["sha256_checked"] else ""
        lines.append(f"  sha256 {name}: {digest}{checked}")
    lines += wrap.wrap(f"licence: {d['licence'] or 'not recorded in kws.json'}")
    lines += wrap.wrap(f"attribution: {d['attribution'] or 'not recorded in kws.json'}")
    if d["notice"]:
        lines.append("  NOTICE: third-party files, see NOTICE in the directory")
    if d["source"]:
        lines.append(f"  made from: {d['source']}")
    if d["card"]:
        lines.append(f"  headline numbers ({d['card_from']}, kws.json; MODEL_CARD.md has the rest):")
        lines += [f"    {k}: {_number(v)}" for k, v in d["card"].items()]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    info = ModelInfo.load(Path(args.directory) if args.directory else default_model_dir())
    described = describe(info)
    print(json.dumps(described, indent=2) if args.json else report(described), flush=True)
    return 0
