"""Hugging Face AST checkpoint -> parity-checked int8 ONNX model directory (the daemon's contract).

Exported with torch.onnx's TorchScript exporter (dynamo=False): the dynamo graph carries value_info
that makes onnxruntime's quantize_dynamic fail shape inference. Quantised with quantize_dynamic,
QInt8 weights, which uses the VNNI int8 kernels where the CPU has them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.errors import KwsError
from kws_daemon.model import sha256_file

FP32_TOLERANCE = 1e-3  # max abs logit difference torch vs ONNX fp32
MIN_INT8_AGREEMENT = 0.9  # top-1 agreement int8 vs fp32


def load_checkpoint(source: str | Path) -> tuple[Any, Any]:
    """An ASTForAudioClassification and its feature extractor from a local directory or hub id."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    try:
        model = AutoModelForAudioClassification.from_pretrained(str(source)).eval()
        extractor = AutoFeatureExtractor.from_pretrained(str(source))
    except (OSError, ValueError, KeyError) as e:
        raise KwsError(f"{source}: cannot load the checkpoint ({str(e).splitlines()[0]})") from None
    return model, extractor


def export_fp32(model: Any, path: Path, max_length: int, mel_bins: int) -> None:
    import torch

    example = torch.zeros(1, max_length, mel_bins)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input_values"],
            output_names=["logits"],
            dynamic_axes={"input_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)


def _logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input_values": x[None]})[0] for x in inputs])


def write_model_dir(
    source: str | Path,
    output: Path,
    *,
    quantize: str = "int8",
    inputs: np.ndarray | None = None,
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    card: str = "",
    window_ms: int = 1000,
    hop_ms: int = 100,
) -> dict[str, Any]:
    """Exports, checks parity on `inputs` (normalised feature windows), writes `output`; the report."""
    import torch

    model, extractor = load_checkpoint(source)
    max_length, mel_bins = int(extractor.max_length), int(extractor.num_mel_bins)
    if inputs is None:
        inputs = np.random.default_rng(0).standard_normal((16, max_length, mel_bins)).astype(np.float32)
    report: dict[str, Any] = {"source": str(source), "quantize": quantize, "parity_inputs": len(inputs)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        t0 = time.monotonic()
        export_fp32(model, fp32, max_length, mel_bins)
        report["export_s"] = round(time.monotonic() - t0, 2)
        with torch.no_grad():
            reference = model(torch.from_numpy(inputs)).logits.numpy()
        fp32_logits = _logits(fp32, inputs)
        report["fp32_max_abs_diff"] = float(np.abs(reference - fp32_logits).max())
        report["fp32_bytes"] = fp32.stat().st_size
        if report["fp32_max_abs_diff"] > FP32_TOLERANCE and not force:
            raise KwsError(
                f"ONNX fp32 export differs from torch by {report['fp32_max_abs_diff']:.2e} "
                f"(> {FP32_TOLERANCE}); not writing {output} (use --force to override)"
            )
        final = fp32
        if quantize == "int8":
            final = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, final)
            int8_logits = _logits(final, inputs)
            agreement = float(np.mean(int8_logits.argmax(-1) == fp32_logits.argmax(-1)))
            report["int8_top1_agreement"] = agreement
            report["int8_max_abs_diff"] = float(np.abs(int8_logits - fp32_logits).max())
            report["int8_bytes"] = final.stat().st_size
            if agreement < MIN_INT8_AGREEMENT and not force:
                raise KwsError(
                    f"int8 model agrees with fp32 on only {agreement:.0%} of top-1 labels "
                    f"(< {MIN_INT8_AGREEMENT:.0%}); not writing {output} (use --force to override)"
                )
        if output.exists():
            if not force:
                raise KwsError(f"{output} exists; use --force to replace it")
            shutil.rmtree(output)
        output.mkdir(parents=True)
        shutil.copyfile(final, output / "model.onnx")
    model.config.to_json_file(str(output / "config.json"))
    extractor.to_json_file(str(output / "preprocessor_config.json"))
    kws = {
        "format": 1,
        "sha256": sha256_file(output / "model.onnx"),
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "window_ms": window_ms,
        "hop_ms": hop_ms,
        "provenance": provenance or {"source": str(source)},
        "export": report,
    }
    (output / "kws.json").write_text(json.dumps(kws, indent=2) + "\n")
    if card:
        (output / "MODEL_CARD.md").write_text(card)
    return report
