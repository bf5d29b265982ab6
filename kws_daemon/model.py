"""A model directory (the contract between the toolchain and the runtime) and its ONNX session.

models/<name>/ holds model.onnx (input "input_values" [batch, frames, mel_bins], output "logits"),
config.json (id2label), preprocessor_config.json (ASTFeatureExtractor fields) and, when written by
our toolchain, kws.json (sha256 of model.onnx, window defaults, provenance).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.errors import KwsError
from kws_daemon.features import FbankParams

_BACKGROUND_NAMES = {"background", "backgroundnoise", "silence", "unknown", "noise", "filler", "other"}


def is_background_label(label: str) -> bool:
    return label.lower().replace("_", "").replace("-", "").replace(" ", "") in _BACKGROUND_NAMES


def default_model_dir() -> Path:
    """The shipped model: inside the installed package, or at the root of a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "models" / "default", package.parent / "models" / "default"):
        if candidate.is_dir():
            return candidate
    return package.parent / "models" / "default"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KwsError(f"model directory {path.parent}: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KwsError(f"model directory {path.parent}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise KwsError(f"model directory {path.parent}: {path.name} must hold a JSON object")
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    labels: tuple[str, ...]
    fbank: FbankParams
    sample_rate: int
    kws: dict[str, Any] = field(default_factory=dict)

    @property
    def keyword_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if not is_background_label(label))

    @classmethod
    def load(cls, directory: str | Path) -> ModelInfo:
        path = Path(directory)
        if not path.is_dir():
            raise KwsError(f"model directory {path} does not exist (set `model:` to a model directory)")
        if not (path / "model.onnx").is_file():
            raise KwsError(f"model directory {path}: model.onnx is missing")
        config = _read_json(path / "config.json")
        pre = _read_json(path / "preprocessor_config.json")
        kws = _read_json(path / "kws.json") if (path / "kws.json").exists() else {}
        try:
            id2label = config["id2label"]
            labels = tuple(str(id2label[str(i)]) for i in range(len(id2label)))
            fbank = FbankParams(
                num_mel_bins=int(pre.get("num_mel_bins", config.get("num_mel_bins", 128))),
                mean=float(pre["mean"]),
                std=float(pre["std"]),
                max_length=int(pre.get("max_length", config.get("max_length", 1024))),
            )
            sample_rate = int(pre.get("sampling_rate", 16000))
        except (KeyError, TypeError, ValueError) as e:
            raise KwsError(
                f"model directory {path}: config.json/preprocessor_config.json lack a field ({e})"
            ) from None
        if sample_rate != 16000:
            raise KwsError(
                f"model directory {path}: sampling_rate {sample_rate} is not supported (16000 only)"
            )
        expected = kws.get("sha256")
        if expected and sha256_file(path / "model.onnx") != expected:
            raise KwsError(f"model directory {path}: model.onnx does not match the sha256 in kws.json")
        return cls(path=path, labels=labels, fbank=fbank, sample_rate=sample_rate, kws=kws)


class Model:
    """An onnxruntime session over one window of normalised log-mel frames."""

    def __init__(self, info: ModelInfo, threads: int = 1) -> None:
        import onnxruntime as ort

        self.info = info
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(info.path / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise KwsError(f"model directory {info.path}: model.onnx cannot be loaded ({e})") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        if "input_values" not in inputs:
            raise KwsError(f"model directory {info.path}: model.onnx has no input named input_values")
        shape = inputs["input_values"].shape
        for axis, want in ((1, info.fbank.max_length), (2, info.fbank.num_mel_bins)):
            if isinstance(shape[axis], int) and shape[axis] != want:
                raise KwsError(
                    f"model directory {info.path}: model.onnx expects {shape[axis]} on input axis {axis}, "
                    f"preprocessor_config.json says {want}"
                )

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Posteriors (softmax) for a batch [batch, max_length, mel_bins] of normalised windows."""
        (logits,) = self._session.run(["logits"], {"input_values": windows.astype(np.float32)})
        if logits.shape[-1] != len(self.info.labels):
            raise KwsError(
                f"model directory {self.info.path}: model.onnx gives {logits.shape[-1]} logits "
                f"for {len(self.info.labels)} labels"
            )
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))
