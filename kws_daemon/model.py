"""A model directory (the contract between the toolchain and the runtime) and its ONNX session.

models/<name>/ holds model.onnx (output "logits"), config.json (id2label), preprocessor_config.json
(the feature extractor's fields, which say the model's kind and input) and, when written by our
toolchain, kws.json (sha256 of model.onnx, window defaults, provenance). A speech-embedding head
(kind "embedding", input "embeddings" [batch, 9, 96]) also holds the backbone's two graphs and
their NOTICE.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.embedding import EMBED_DIM, EmbeddingParams
from kws_daemon.errors import ConfigError, KwsError
from kws_daemon.features import FbankParams
from kws_daemon.frontends import ClapParams, WaveformParams, WhisperParams
from kws_daemon.shipped import shipped

_BACKGROUND_NAMES = {"background", "backgroundnoise", "silence", "unknown", "noise", "filler", "other"}


def is_background_label(label: str) -> bool:
    return label.lower().replace("_", "").replace("-", "").replace(" ", "") in _BACKGROUND_NAMES


def default_model_dir() -> Path:
    """The shipped model: inside the installed package, or at the root of a source checkout."""
    return shipped("models/default")


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


def _labels(path: Path, id2label: Any) -> tuple[str, ...]:
    """config.json's id2label as a tuple. Labels reach logs, STATUS= and hook environments, so
    unprintable characters (a newline forging a log line, a NUL) are refused."""
    if not isinstance(id2label, dict) or not id2label:
        raise KwsError(f'model directory {path}: config.json needs an "id2label" object of labels')
    try:
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
    except KeyError as e:
        raise KwsError(f"model directory {path}: config.json id2label lacks index {e}") from None
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label or not label.isprintable():
            raise KwsError(
                f"model directory {path}: config.json label {i} must be a non-empty string of printable "
                f"characters (got {label!r})"
            )
    if len(set(labels)) != len(labels):
        raise KwsError(f"model directory {path}: config.json id2label repeats a label")
    return labels


def _one_line(error: Exception) -> str:
    """onnxruntime's messages can span lines; a user error is one."""
    return " ".join(str(error).split())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Frontend = FbankParams | EmbeddingParams | WaveformParams | WhisperParams | ClapParams
KIND_OF = {
    FbankParams: "ast",
    EmbeddingParams: "embedding",
    WaveformParams: "waveform",
    WhisperParams: "whisper",
    ClapParams: "clap",
}
KEYWORD_KINDS = ("ast", "embedding")  # models of keyword windows (commands, running)
# the detector modes each kind runs in, its default first (kws.json "default_mode" may pick another)
MODES_OF = {
    "ast": ("commands", "running", "utterances"),
    "embedding": ("commands", "running", "utterances"),
    "waveform": ("utterances",),
    "whisper": ("utterances",),
    "clap": ("sounds",),
}
INPUT_OF = {
    "ast": "input_values",
    "embedding": "embeddings",
    "waveform": "input_values",
    "whisper": "input_features",
    "clap": "input_features",
}
# [batch, frames, mels], [batch, embeddings, 96], [batch, samples], [batch, mels, frames],
# [batch, channels, frames, mels]
RANK_OF = {
    "ast": 3,
    "embedding": 3,
    "waveform": 2,
    "whisper": 3,
    "clap": 4,
}  # [batch, frames, mels], [batch, samples], [batch, mels, frames]


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    labels: tuple[str, ...]
    frontend: Frontend  # what the model takes: AST log-mel or embedding windows, or an utterance
    sample_rate: int
    kws: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KIND_OF[type(self.frontend)]

    @property
    def default_mode(self) -> str:
        """The mode a config that names none runs this model in (checked at load)."""
        return str(self.kws.get("default_mode", MODES_OF[self.kind][0]))

    @property
    def fbank(self) -> FbankParams:
        """The AST's log-mel parameters."""
        if not isinstance(self.frontend, FbankParams):
            raise ConfigError(f"model {self.path} is a {self.kind} model, not an AST on log-mel windows")
        return self.frontend

    @property
    def keyword_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if not is_background_label(label))

    def thresholds(self, mode: str) -> dict[str, float]:
        """Per-keyword thresholds calibrated for `mode` (kws.json "thresholds"), where it has them."""
        tables = self.kws.get("thresholds")
        table = tables.get(mode) if isinstance(tables, dict) else None
        if not isinstance(table, dict):
            return {}
        return {
            k: float(v)
            for k, v in table.items()
            if k in self.labels and isinstance(v, (int, float)) and 0.0 <= v <= 1.0
        }

    @classmethod
    def load(cls, directory: str | Path) -> ModelInfo:
        path = Path(directory)
        # os.path, not Path: it answers False for names the kernel refuses (too long, NUL) instead of raising
        if not os.path.isdir(path):
            # a mistake in `model:` or --model (exit 2), unlike a broken directory (exit 1)
            raise ConfigError(f"model directory {path} does not exist (set `model:` to a model directory)")
        if not os.path.isfile(path / "model.onnx"):
            raise KwsError(f"model directory {path}: model.onnx is missing")
        config = _read_json(path / "config.json")
        pre = _read_json(path / "preprocessor_config.json")
        kws = _read_json(path / "kws.json") if (path / "kws.json").exists() else {}
        labels = _labels(path, config.get("id2label"))
        try:
            sample_rate = int(pre.get("sampling_rate", 16000))
            frontend = frontend_of(path, pre, config)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise KwsError(
                f"model directory {path}: preprocessor_config.json lacks or garbles a field ({e})"
            ) from None
        wanted = 48000 if isinstance(frontend, ClapParams) else 16000
        if sample_rate != wanted:
            raise KwsError(
                f"model directory {path}: sampling_rate {sample_rate} is not supported ({wanted} only)"
            )
        expected = kws.get("sha256")
        if expected and sha256_file(path / "model.onnx") != expected:
            raise KwsError(f"model directory {path}: model.onnx does not match the sha256 in kws.json")
        info = cls(path=path, labels=labels, frontend=frontend, sample_rate=sample_rate, kws=kws)
        if info.default_mode not in MODES_OF[info.kind]:
            raise KwsError(
                f"model directory {path}: kws.json default_mode {info.default_mode!r} is not a mode "
                f"that {info.kind} models run in ({', '.join(MODES_OF[info.kind])})"
            )
        return info


def frontend_of(path: Path, pre: dict[str, Any], config: dict[str, Any]) -> Frontend:
    """The front end a preprocessor config (a feature extractor's fields) describes; KeyError and
    ValueError for the caller's one-line message. The exporters read their checkpoints' extractors
    through it too, so export checks parity on the input the daemon will compute."""
    extractor = str(pre.get("feature_extractor_type", "ASTFeatureExtractor"))
    if extractor == "Wav2Vec2FeatureExtractor":
        return WaveformParams(do_normalize=bool(pre.get("do_normalize", True)))
    if extractor == "ClapFeatureExtractor":
        return ClapParams(
            num_mel_bins=int(pre["feature_size"]),
            n_fft=int(pre["fft_window_size"]),
            hop_length=int(pre["hop_length"]),
            max_samples=int(pre["nb_max_samples"]),
            fmin=float(pre["frequency_min"]),
            fmax=float(pre["frequency_max"]),
            truncation=str(pre["truncation"]),
            padding=str(pre["padding"]),
            sample_rate=int(pre.get("sampling_rate", 48000)),
        )
    if extractor == EMBEDDING_EXTRACTOR:
        return _embedding(path, pre)
    if extractor == "WhisperFeatureExtractor":
        return WhisperParams(
            num_mel_bins=int(pre["feature_size"]),
            n_fft=int(pre["n_fft"]),
            hop_length=int(pre["hop_length"]),
            n_samples=int(pre["n_samples"]),
        )
    return _fbank(path, pre, config)


EMBEDDING_EXTRACTOR = "SpeechEmbeddingFeatureExtractor"


def _embedding(path: Path, pre: dict[str, Any]) -> EmbeddingParams:
    """The backbone's two graphs must be in the directory, as the sha256 in the config says."""
    params = EmbeddingParams(
        frames=int(pre["embedding_frames"]),
        melspectrogram=str(pre["melspectrogram"]),
        embedding=str(pre["embedding_model"]),
    )
    if not 1 <= params.frames <= 100:
        raise ValueError(f"embedding_frames {params.frames} is not 1 to 100")
    digests = pre.get("sha256", {})
    for name in (params.melspectrogram, params.embedding):
        if Path(name).name != name:
            raise KwsError(
                f"model directory {path}: preprocessor_config.json names {name!r}, not a file name"
            )
        if not os.path.isfile(path / name):
            raise KwsError(f"model directory {path}: {name} (the speech-embedding backbone) is missing")
        if isinstance(digests, dict) and digests.get(name) and sha256_file(path / name) != digests[name]:
            raise KwsError(
                f"model directory {path}: {name} does not match its sha256 in preprocessor_config.json"
            )
    return params


def _fbank(path: Path, pre: dict[str, Any], config: dict[str, Any]) -> FbankParams:
    """ASTFeatureExtractor's fields; KeyError and ValueError for the caller's one-line message."""
    extractor = pre.get("feature_extractor_type", "ASTFeatureExtractor")
    if extractor != "ASTFeatureExtractor":
        raise KwsError(
            f"model directory {path}: feature extractor {extractor} is not supported "
            f"(ASTFeatureExtractor, {EMBEDDING_EXTRACTOR}, Wav2Vec2FeatureExtractor, "
            "WhisperFeatureExtractor, ClapFeatureExtractor)"
        )
    fbank = FbankParams(
        num_mel_bins=int(pre.get("num_mel_bins", config.get("num_mel_bins", 128))),
        mean=float(pre["mean"]),
        std=float(pre["std"]),
        max_length=int(pre.get("max_length", config.get("max_length", 1024))),
    )
    if not (
        1 <= fbank.num_mel_bins <= 1024
        and 1 <= fbank.max_length <= 100_000
        and math.isfinite(fbank.mean)
        and math.isfinite(fbank.std)
        and fbank.std > 0
    ):
        raise KwsError(
            f"model directory {path}: preprocessor_config.json needs num_mel_bins 1 to 1024, "
            f"max_length 1 to 100000, a finite mean and a std above 0 (got {fbank})"
        )
    return fbank


class Model:
    """An onnxruntime session over a batch of model inputs (windows, or utterances)."""

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
            reason = _one_line(e)
            raise KwsError(f"model directory {info.path}: model.onnx cannot be loaded ({reason})") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        self._input = INPUT_OF[info.kind]
        if self._input not in inputs:
            raise KwsError(f"model directory {info.path}: model.onnx has no input named {self._input}")
        shape = inputs[self._input].shape
        rank = RANK_OF[info.kind]
        if len(shape) != rank:
            raise KwsError(f"model directory {info.path}: model.onnx {self._input} must have {rank} axes")
        if info.kind == "ast":
            for axis, want in ((1, info.fbank.max_length), (2, info.fbank.num_mel_bins)):
                if isinstance(shape[axis], int) and shape[axis] != want:
                    raise KwsError(
                        f"model directory {info.path}: model.onnx expects {shape[axis]} on input axis "
                        f"{axis}, preprocessor_config.json says {want}"
                    )
        self._probe()

    def _probe(self) -> None:
        """Scores one silent input at load, so that a model which loads but cannot run (no "logits"
        output, a label count that does not match) fails here, not in the running daemon."""
        info = self.info
        frontend = info.frontend
        if isinstance(frontend, FbankParams):
            silent = np.zeros((1, frontend.max_length, frontend.num_mel_bins), np.float32)
        elif isinstance(frontend, EmbeddingParams):
            silent = np.zeros((1, frontend.frames, EMBED_DIM), np.float32)
        elif isinstance(frontend, ClapParams):
            frames = frontend.max_samples // frontend.hop_length + 1
            channels = 4 if frontend.truncation == "fusion" else 1
            silent = np.full((1, channels, frames, frontend.num_mel_bins), -100.0, np.float32)
        elif isinstance(frontend, WhisperParams):
            frames = frontend.n_samples // frontend.hop_length
            silent = np.full((1, frontend.num_mel_bins, frames), -1.5, np.float32)  # log-mel of silence
        else:
            silent = np.zeros((1, info.sample_rate), np.float32)
        try:
            posteriors = self(silent)
        except Exception as e:  # onnxruntime raises its own exception types
            raise KwsError(
                f"model directory {info.path}: model.onnx fails on a silent input ({_one_line(e)})"
            ) from None
        if posteriors.shape != (1, len(info.labels)):
            raise KwsError(
                f"model directory {info.path}: model.onnx gives {posteriors.shape[-1]} logits "
                f"for {len(info.labels)} labels"
            )

    @property
    def window_shape(self) -> tuple[int, int]:
        """One keyword window's input: log-mel frames x bins, or embeddings x 96."""
        frontend = self.info.frontend
        if isinstance(frontend, EmbeddingParams):
            return (frontend.frames, EMBED_DIM)
        return (self.info.fbank.max_length, self.info.fbank.num_mel_bins)

    def scores_each_window_alone(self) -> bool:
        """Whether a window scores the same in any batch. Plain dynamic int8 quantises activations
        over the whole batch, so batched windows would move each other's scores; our exports
        quantise per window (kws_daemon.toolchain.perwindow)."""
        shape = self.window_shape
        windows = np.random.default_rng(0).standard_normal((2, *shape))
        windows[1] *= 8.0
        alone = np.concatenate([self(w[None]) for w in windows])
        return bool(np.allclose(self(windows), alone, rtol=0, atol=1e-6))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Posteriors (softmax) for a batch of model inputs."""
        (logits,) = self._session.run(["logits"], {self._input: windows.astype(np.float32)})
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))


class Replay(Model):
    """The wrapped model on the first pass over a stream; its recorded posteriors on every later
    pass. Which windows get scored depends on the audio and the VAD, never on thresholds, so a
    threshold sweep costs one model pass (and the pipeline skips the features while `replaying`)."""

    def __init__(self, model: Model) -> None:  # no session of its own: it wraps `model`'s
        self.info = model.info
        self._model = model
        self._recorded: list[np.ndarray] = []
        self._next: int | None = None

    @property
    def replaying(self) -> bool:
        return self._next is not None

    def rewind(self) -> None:
        self._next = 0

    def __call__(self, windows: np.ndarray | None) -> np.ndarray:
        """`windows` may be None while replaying: the recorded posteriors do not depend on them."""
        if self._next is None:
            assert windows is not None
            self._recorded.append(self._model(windows))
            return self._recorded[-1]
        out = self._recorded[self._next]
        self._next += 1
        return out
