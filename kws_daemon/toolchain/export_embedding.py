"""A trained speech-embedding head -> a model directory the daemon loads.

The head goes to ONNX, then to int8 as every model of ours does (dynamic, 7-bit weights, each
window's activations quantised on their own: kws_daemon.toolchain.quantize and perwindow); its
top-1 agreement with fp32 is measured on the given windows and refused below `min_agreement`.
The backbone's two graphs are copied in beside it with their NOTICE and sha256.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.errors import KwsError
from kws_daemon.model import EMBEDDING_EXTRACTOR, Model, ModelInfo, sha256_file
from kws_daemon.toolchain.embedding_data import ATTRIBUTION, copy_backbone
from kws_daemon.toolchain.export import staged
from kws_daemon.toolchain.heads import export_head
from kws_daemon.toolchain.perwindow import rewrite
from kws_daemon.toolchain.quantize import quantize_dynamic_int8

HOP_MS = 80  # one new embedding per window: a shorter hop would score the same input again
# Commands mode: one window, ending 200 ms after the word's voiced end. On 400 held-out commands
# (build/models/emb-v2, threshold 0.5) it found 78.7 %, against 72.0 % for three windows ending as the
# segment closes (the AST's rule): the head was trained on words centred or ending 50-450 ms before
# the window's end, and the earlier of the AST's windows cut the word's tail too close.
COMMAND_TAIL_MS = 200
COMMAND_WINDOWS = 1


def _logits(path: Path, windows: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [
            session.run(["logits"], {"embeddings": windows[i : i + 256]})[0]
            for i in range(0, len(windows), 256)
        ]
    )


def write_embedding_model_dir(
    head: Any,
    labels: tuple[str, ...],
    frames: int,
    directory: Path,
    windows: np.ndarray,
    provenance: dict[str, Any],
    min_agreement: float = 0.98,
) -> dict[str, Any]:
    """Writes `directory` (replacing it) and returns the export's measurements."""
    windows = windows.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "model.onnx"
        export_head(head, frames, fp32)
        quantize_dynamic_int8(fp32, int8)
        rewrite(int8)
        a, b = _logits(fp32, windows), _logits(int8, windows)
        agreement = float(np.mean(a.argmax(-1) == b.argmax(-1)))
        if agreement < min_agreement:
            raise KwsError(
                f"int8 head agrees with fp32 on {agreement:.1%} of windows (< {min_agreement:.0%})"
            )
        with staged(directory) as staging:
            shutil.copyfile(int8, staging / "model.onnx")
            digests = copy_backbone(staging)
            (staging / "config.json").write_text(
                json.dumps(
                    {
                        "model_type": "speech-embedding-head",
                        "architecture": provenance.get("head", {}),
                        "id2label": {str(i): label for i, label in enumerate(labels)},
                        "label2id": {label: i for i, label in enumerate(labels)},
                    },
                    indent=2,
                )
            )
            (staging / "preprocessor_config.json").write_text(
                json.dumps(
                    {
                        "feature_extractor_type": EMBEDDING_EXTRACTOR,
                        "sampling_rate": 16000,
                        "embedding_frames": frames,
                        "melspectrogram": "melspectrogram.onnx",
                        "embedding_model": "embedding_model.onnx",
                        "sha256": digests,
                    },
                    indent=2,
                )
            )
            measured = {
                "int8_top1_agreement": round(agreement, 4),
                "int8_max_abs_logit_diff": round(float(np.abs(a - b).max()), 4),
                "parity_windows": len(windows),
            }
            kws = {
                "sha256": sha256_file(staging / "model.onnx"),
                "window_ms": (frames - 1) * 80 + 782,
                "hop_ms": HOP_MS,
                "command_tail_ms": COMMAND_TAIL_MS,
                "command_windows": COMMAND_WINDOWS,
                "labels": list(labels),
                "attribution": ATTRIBUTION,
                "licence": "model.onnx: MIT (kws-daemon); melspectrogram.onnx, embedding_model.onnx: "
                "Apache-2.0 (NOTICE)",
                "export": measured,
                "provenance": provenance,
            }
            (staging / "kws.json").write_text(json.dumps(kws, indent=2))
            Model(ModelInfo.load(staging))  # the daemon's own loader must take it
    return measured
