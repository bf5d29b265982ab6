"""The export's parity report as text: printed by `kws-daemon export` and kept in MODEL_CARD.md."""

from __future__ import annotations

from typing import Any


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _latency(report: dict[str, Any], kind: str) -> str:
    latency = report[f"{kind}_latency_ms"]
    return f"{kind} p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms"


def report_lines(report: dict[str, Any]) -> list[str]:
    """The parity report, one measurement a line."""
    lines = [
        f"parity data: {report['parity_data']}",
        f"torch vs ONNX fp32 on {report['fp32_parity_windows']} windows: max |logit diff| "
        f"{report['fp32_max_abs_diff']:.2e} (limit {report['fp32_tolerance']:g})",
    ]
    sizes = f"size: fp32 {_mb(report['fp32_bytes'])}"
    latency = f"latency per window ({report['cpu']}, 1 thread): {_latency(report, 'fp32')}"
    if "int8_bytes" in report:
        lines += [
            f"quantisation: {report['method']}",
            f"ONNX fp32 vs int8 on {report['int8_parity_windows']} windows: top-1 agreement "
            f"{report['int8_top1_agreement']:.1%} (min {report['int8_min_agreement']:.0%}), "
            f"max |logit diff| {report['int8_max_abs_diff']:.3f}",
        ]
        sizes += f", int8 {_mb(report['int8_bytes'])}"
        latency += f"; {_latency(report, 'int8')}"
    lines += [sizes, latency, f"export {report['export_s']:.1f} s" + _quantize_time(report)]
    lines += [f"FORCED past a failed check: {message}" for message in report.get("forced", ())]
    return lines


def _quantize_time(report: dict[str, Any]) -> str:
    return f", quantisation {report['quantize_s']:.1f} s" if "quantize_s" in report else ""


_SHAPE_FIELDS = {
    "hidden_size": "hidden",
    "num_hidden_layers": "layers",
    "num_attention_heads": "heads",
    "patch_size": "patch",
    "max_length": "frames",
    "num_mel_bins": "mel bins",
}


def _shape(config: Any) -> str:
    return ", ".join(
        f"{name} {getattr(config, key)}" for key, name in _SHAPE_FIELDS.items() if hasattr(config, key)
    )


def model_card(config: Any, kws: dict[str, Any]) -> str:
    """MODEL_CARD.md for an exported checkpoint: what it is, how it was made, what it was measured on."""
    provenance, report = kws["provenance"], kws["export"]
    revision = f" (revision {provenance['revision']})" if "revision" in provenance else ""
    measured = "\n".join(f"- {line}" for line in report_lines(report))
    return f"""# {provenance["source"]}, exported for kws-daemon

Exported by `kws-daemon export` on {provenance["created"]} from `{provenance["source"]}`{revision}.
Model type `{config.model_type}` ({_shape(config)}), {len(kws["labels"])} labels:
{", ".join(kws["labels"])}.

## How it was made and measured

ONNX export with torch.onnx (TorchScript, opset 17), checked for parity on the daemon's own log-mel
features:

{measured}

## What it is good and bad at

It recognises what its source checkpoint recognises, no more: its accuracy is the source's (read that
model card for its training data and evaluation). The agreement above says how closely this file
follows the original on the parity data, not how well either recognises speech. Words outside the
label list are forced onto the nearest label unless the source has a background class; set
detector thresholds from your own recordings (`kws-daemon detect` on them).
"""
