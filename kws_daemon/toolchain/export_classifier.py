"""Utterance classifiers -> int8 ONNX model directory: the wav2vec2 family (wav2vec2, HuBERT, WavLM,
XLS-R: the raw 16 kHz waveform, `input_values` [batch, samples] of any length) and Whisper
(WhisperForAudioClassification: `input_features` [batch, mels, 3000], 30 s of log-mel).

The daemon computes each family's input in numpy (kws_daemon/frontends.py) and classifies one
utterance per call (detector.mode: utterances). Exported with torch.onnx's TorchScript exporter like
the AST; convolutions stay fp32 (ConvInteger has no fast kernel), the transformer's MatMuls go int8
per window. Parity: torch vs ONNX fp32 on every parity utterance, int8 top-1 agreement.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.errors import KwsError
from kws_daemon.machine import cpu_name
from kws_daemon.model import Model, ModelInfo, frontend_of, sha256_file
from kws_daemon.toolchain import perwindow
from kws_daemon.toolchain.export import (
    FP32_TOLERANCE,
    INT8_DYNAMIC_ADVICE,
    MIN_INT8_AGREEMENT,
    _provenance,
    _Run,
    credits,
    pretrained,
    refuse_existing,
    staged,
)
from kws_daemon.toolchain.measure import latency_ms, onnx_logits
from kws_daemon.toolchain.progress import Steps, quiet
from kws_daemon.toolchain.quantize import METHODS, quantize_dynamic_int8
from kws_daemon.toolchain.windows import audio_files, recorded_audio
from kws_daemon.utterances import UtteranceInput


@dataclass(frozen=True)
class Family:
    kind: str  # the model directory's kind (kws.json, kws_daemon.model)
    model_types: tuple[str, ...]  # config.json model_type
    extractor: str
    input_name: str
    dynamic: dict[int, str]  # the input's dynamic axes


FAMILIES = (
    Family(
        "waveform",
        ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech-sat"),
        "Wav2Vec2FeatureExtractor",
        "input_values",
        {0: "batch", 1: "samples"},
    ),
    Family("whisper", ("whisper",), "WhisperFeatureExtractor", "input_features", {0: "batch"}),
)


def family_of(source: str | Path) -> Family | None:
    """The checkpoint's family (local directory or hub id), from its config; None: not one of these."""
    from transformers import AutoConfig

    try:
        with quiet("transformers", "huggingface_hub"):
            model_type = AutoConfig.from_pretrained(str(source)).model_type
    except Exception:
        return None
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def _utterances(calibration: Path | None) -> tuple[list[np.ndarray], str]:
    """Parity audio: the recordings under `calibration` (int16, 16 kHz), else voiced sweeps and
    noise of 0.6-2.5 s."""
    if calibration is not None:
        files = audio_files(calibration)
        return recorded_audio(files), f"{len(files)} recordings from {calibration}"
    rng = np.random.default_rng(0)
    out = []
    for i in range(12):
        n = int(rng.uniform(0.6, 2.5) * 16000)
        t = np.arange(n) / 16000
        f0 = rng.uniform(90, 250) * (1 + 0.3 * t)
        voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 8))
        audio = voiced if i % 3 else rng.standard_normal(n)
        out.append((audio / np.abs(audio).max() * rng.uniform(2000, 20000)).astype(np.int16))
    return out, f"{len(out)} generated utterances (voiced sweeps and noise)"


def onnx_stages(
    run: _Run,
    module: Any,
    staging: Path,
    inputs: list[np.ndarray],
    expected: np.ndarray,
    name: str,
    dynamic: dict[int, str],
    quantize: str,
    probe: np.ndarray,
    what: str,
    timing: str,
) -> Path:
    """torch -> ONNX fp32 held to `expected` (torch's logits, taken before tracing), int8 per window
    held to fp32, latency of `probe`; the report in `run`. Returns staging/model.onnx."""
    import torch

    fp32, final = staging / "fp32.onnx", staging / "model.onnx"
    report, steps = run.report, run.steps
    with steps.step("exporting to ONNX fp32"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.monotonic()
        torch.onnx.export(
            module,
            (torch.from_numpy(inputs[0][None]),),
            str(fp32),
            input_names=[name],
            output_names=["logits"],
            dynamic_axes={name: dynamic, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        report["export_s"] = round(time.monotonic() - start, 2)
    with steps.step(f"fp32 parity: torch vs ONNX on {len(inputs)} {what}"):
        logits = onnx_logits(fp32, inputs, name)
    diff = float(np.abs(expected - logits).max())
    report.update(
        fp32_max_abs_diff=diff,
        fp32_parity_windows=len(inputs),
        fp32_tolerance=FP32_TOLERANCE,
        fp32_bytes=fp32.stat().st_size,
    )
    run.check(diff <= FP32_TOLERANCE, f"ONNX fp32 differs from torch by {diff:.2e} logits")
    if quantize == "none":
        fp32.rename(final)
    else:
        with steps.step(f"quantising: {METHODS['int8']}"):
            quantize_dynamic_int8(fp32, final)
            report["per_window_quantisers"] = perwindow.rewrite(final)
        q = onnx_logits(final, inputs, name)
        agreement = float(np.mean(q.argmax(-1) == logits.argmax(-1)))
        report.update(
            method=METHODS["int8"],
            int8_top1_agreement=agreement,
            int8_max_abs_diff=float(np.abs(q - logits).max()),
            int8_parity_windows=len(inputs),
            int8_min_agreement=MIN_INT8_AGREEMENT,
            int8_bytes=final.stat().st_size,
        )
        run.check(
            agreement >= MIN_INT8_AGREEMENT,
            f"int8 agrees with fp32 on {agreement:.1%} of top-1 labels (< {MIN_INT8_AGREEMENT:.0%})",
            INT8_DYNAMIC_ADVICE,
        )
    with steps.step(f"{timing}, 1 thread"):
        report["cpu"] = cpu_name()
        report["fp32_latency_ms"] = latency_ms(fp32 if fp32.exists() else final, probe, runs=10, name=name)
        if quantize != "none":
            report["int8_latency_ms"] = latency_ms(final, probe, runs=10, name=name)
            fp32.unlink()
    return final


def write_classifier_model_dir(
    family: Family,
    source: str | Path,
    output: str | Path,
    *,
    quantize: str = "int8",
    calibration: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Exports, checks parity (on the recordings under `calibration` when given), writes `output`;
    returns the parity report."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    output = Path(output)
    if quantize not in ("int8", "none"):
        raise KwsError(f"--quantize {quantize}: a {family.kind} model takes int8 or none")
    refuse_existing(output, force)
    steps = Steps(5 if quantize == "none" else 6)
    with steps.step(f"loading {source}"):
        model, extractor = pretrained(
            source,
            "checkpoint",
            AutoModelForAudioClassification.from_pretrained,
            AutoFeatureExtractor.from_pretrained,
        )
    model.eval()
    if type(extractor).__name__ != family.extractor or int(extractor.sampling_rate) != 16000:
        raise KwsError(f"{source}: needs a 16 kHz {family.extractor} (got {type(extractor).__name__})")
    to_input = UtteranceInput(frontend_of(Path(str(source)), extractor.to_dict(), {}))
    audio, data = _utterances(calibration)
    inputs = [to_input(a) for a in audio]
    report: dict[str, Any] = {
        "source": str(source),
        "kind": family.kind,
        "quantize": quantize,
        "parity_data": data,
    }
    run = _Run(output, force, report, steps)
    with staged(output) as staging:
        with torch.no_grad():
            expected = np.concatenate([model(torch.from_numpy(x[None])).logits.numpy() for x in inputs])
        noise = np.random.default_rng(0).integers(-3000, 3000, 32000).astype(np.int16)
        final = onnx_stages(
            run,
            model,
            staging,
            inputs,
            expected,
            family.input_name,
            family.dynamic,
            quantize,
            to_input(noise),
            "utterances",
            "latency per utterance of 2 s",
        )
        model.config.to_json_file(str(staging / "config.json"))
        extractor.to_json_file(str(staging / "preprocessor_config.json"))
        kws = {
            "format": 1,
            "kind": family.kind,
            "sha256": sha256_file(final),
            "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
            "provenance": _provenance(source, model, None),
            "export": report,
            **credits(source),
        }
        (staging / "kws.json").write_text(json.dumps(kws, indent=2) + "\n")
        with steps.step("loading the directory as the daemon does"):
            loaded = Model(ModelInfo.load(staging))
            if loaded.info.kind != family.kind:
                raise KwsError(f"{staging}: the daemon does not load it as a {family.kind} model")
    return report
