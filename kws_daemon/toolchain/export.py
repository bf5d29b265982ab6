"""Hugging Face AST checkpoint -> parity-checked int8 ONNX model directory (the daemon's contract).

Exported with torch.onnx's TorchScript exporter (dynamo=False): the dynamo graph carries value_info
that makes quantize_dynamic's shape inference fail, and optimum's exporter (the same TorchScript
exporter underneath) would add a dependency pinned to transformers<4.58 for no measured gain
(docs/export.md). Parity and latency are measured on the daemon's own features and session
options; the directory is staged beside `output`, loaded back through kws_daemon.model, and only
then moved into place, so a refused or failed export leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kws_daemon import __version__
from kws_daemon.errors import KwsError
from kws_daemon.features import FbankParams
from kws_daemon.machine import cpu_name
from kws_daemon.model import Model, ModelInfo, sha256_file
from kws_daemon.toolchain import perwindow
from kws_daemon.toolchain.measure import latency_ms, onnx_logits
from kws_daemon.toolchain.progress import Steps, quiet
from kws_daemon.toolchain.quantize import METHODS, quantize_dynamic_int8, quantize_static_int8
from kws_daemon.toolchain.report import model_card
from kws_daemon.toolchain.windows import audio_files, recorded_windows, synthetic_windows

log = logging.getLogger("kws_daemon.export")

QUANTIZE_CHOICES = (*METHODS, "none")
FP32_TOLERANCE = 1e-3  # max abs logit difference, torch vs ONNX fp32
MIN_INT8_AGREEMENT = 0.9  # top-1 agreement, int8 vs ONNX fp32
# said when int8 is refused; the agreement is measured on --calibration's recordings when given
INT8_ADVICE = (
    "try --quantize int8-static --calibration DIR (recordings of your own, which the agreement is "
    "then measured on too), or --quantize none"
)
INT8_DYNAMIC_ADVICE = (
    "measure it on recordings of your own (--calibration DIR), or keep fp32 with --quantize none"
)
TORCH_PARITY_WINDOWS = 32  # eager torch is several times slower than ONNX; few windows bound the diff
CHECKPOINT_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def require_toolchain() -> None:
    missing = [name for name in ("torch", "transformers", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise KwsError(
            f"export needs {', '.join(missing)}: pip install torch==2.13.0 'kws-daemon[export]' (CPU build)"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def pretrained(source: str | Path, what: str, *loaders: Callable[[str], Any]) -> list[Any]:
    """What each loader makes of `source` (a checkpoint directory or hub id), with transformers'
    progress bar and log lines silenced. transformers, huggingface_hub and safetensors each raise
    their own types: any failure is one KwsError line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar on stderr
    try:
        with quiet("transformers", "huggingface_hub"):
            return [load(str(source)) for load in loaders]
    except Exception as e:
        raise KwsError(f"{source}: cannot load the {what}: {_first_line(e)}") from None


def refuse_existing(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise KwsError(f"{output} exists; use --force to replace it")


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A fresh folder beside `output` to write the model directory into. It replaces `output` only
    when the block ends without an error (every check passed), and is removed whatever happens: a
    failed export leaves the old directory as it was."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the daemon may run as another user
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(source: str | Path) -> tuple[Any, Any]:
    """An audio-classification model and its AST feature extractor, from a local directory or hub id."""
    path = Path(source)
    if path.exists():
        missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
        if missing:
            raise KwsError(f"{source}: not a checkpoint directory ({', '.join(missing)} missing)")
    from transformers import AutoFeatureExtractor

    what = "checkpoint" if path.exists() else "hub id (and no local directory of that name)"
    with warnings.catch_warnings():
        # the extractor's own mel filter bank (not the one we use) warns about 128 bins
        warnings.filterwarnings("ignore", "At least one mel filter has all zero values")
        loaded = pretrained(source, what, _load_model, AutoFeatureExtractor.from_pretrained)
    (model, loading), extractor = loaded
    missing = sorted(loading["missing_keys"])
    if missing:
        raise KwsError(
            f"{source}: the weights lack {len(missing)} tensors the model needs ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); they would be random"
        )
    if not all(hasattr(extractor, a) for a in ("mean", "std", "num_mel_bins", "max_length")):
        raise KwsError(
            f"{source}: {type(extractor).__name__} is not supported; the daemon computes "
            "ASTFeatureExtractor log-mel features only"
        )
    if int(extractor.sampling_rate) != 16000:
        raise KwsError(f"{source}: sampling_rate {extractor.sampling_rate} is not supported (16000 only)")
    return model.eval(), extractor


def _load_model(source: str | Path) -> tuple[Any, dict[str, list[str]]]:
    from transformers import AutoConfig, AutoModelForAudioClassification

    config = AutoConfig.from_pretrained(str(source))
    if getattr(config, "kws_stem", "linear") == "conv":
        # the project's own student: an AST whose patch projection is a conv stem (toolchain/train.py)
        from kws_daemon.toolchain.train import student_class

        return student_class(config).from_pretrained(str(source), output_loading_info=True)  # type: ignore[no-any-return]
    return AutoModelForAudioClassification.from_pretrained(str(source), output_loading_info=True)


def export_fp32(model: Any, path: Path, max_length: int, mel_bins: int) -> None:
    import torch

    torch_to_onnx(model, torch.zeros(1, max_length, mel_bins), "input_values", path)


def torch_to_onnx(model: Any, example: Any, input_name: str, path: Path) -> None:
    """fp32 ONNX with a batch axis, output "logits"; the TorchScript exporter on purpose (see the
    docstring), with the fused attention fast path off (that op has no ONNX export)."""
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=["logits"],
                dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def torch_logits(model: Any, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.from_numpy(windows[i : i + batch])).logits.numpy()
                for i in range(0, len(windows), batch)
            ]
        )


def _parity_windows(
    params: FbankParams, inputs: np.ndarray | None, calibration: Path | None, recordings: list[Path]
) -> tuple[np.ndarray, str]:
    if inputs is not None:
        return inputs.astype(np.float32), f"{len(inputs)} windows given by the caller"
    if recordings:
        return recorded_windows(recordings, params), f"{len(recordings)} recordings from {calibration}"
    windows = synthetic_windows(params)
    return windows, f"{len(windows)} generated clips (voiced sweeps and noise bursts)"


def _provenance(source: str | Path, model: Any, extra: dict[str, Any] | None) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    path = Path(source)
    provenance: dict[str, Any] = {
        "source": str(source),
        "source_kind": "local directory" if path.is_dir() else "hub",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tools": {
            "kws-daemon": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    revision = getattr(model.config, "_commit_hash", None)
    if revision:
        provenance["revision"] = revision
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is not None:
        provenance["weights_sha256"] = sha256_file(weights)
    return {**provenance, **(extra or {})}


TRAINED_CREDITS = {  # a model our scripts trained (they pass `provenance`); its card credits the data
    "attribution": "kws-daemon",
    "licence": "MIT (kws-daemon); the training data is credited in MODEL_CARD.md",
}


def credits(source: str | Path) -> dict[str, str]:
    """kws.json's attribution and licence for an exported checkpoint: the licence its model card
    states (the `license:` of README.md's front matter, as the Hub shows it), where it states one."""
    readme = Path(source) / "README.md"
    if not readme.is_file() and not Path(source).exists():
        try:
            from huggingface_hub import hf_hub_download

            with quiet("huggingface_hub"):
                readme = Path(hf_hub_download(str(source), "README.md"))
        except Exception:  # offline, or a repository without a card: the licence is not stated
            pass
    licence = "not stated by the checkpoint's model card"
    try:
        front = readme.read_text().split("---")
        meta = yaml.safe_load(front[1]) if readme.is_file() and len(front) > 2 else None
        if isinstance(meta, dict) and meta.get("license"):
            licence = f"{meta['license']} (the checkpoint's model card)"
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return {"attribution": f"{source} (Hugging Face checkpoint)", "licence": licence}


@dataclass
class _Run:
    """One export's destination, policy and growing report; `check` refuses or records an override."""

    output: Path
    force: bool
    report: dict[str, Any]
    steps: Steps

    def check(self, ok: bool, message: str, advice: str = "") -> None:
        """`advice`: what to try instead, said with the refusal."""
        if ok:
            return
        if not self.force:
            instead = f"; {advice}" if advice else ""
            raise KwsError(f"{message}; not writing {self.output}{instead} (--force writes it anyway)")
        log.warning("%s; writing it anyway (--force)", message)
        self.report.setdefault("forced", []).append(message)


def _fp32(run: _Run, model: Any, params: FbankParams, windows: np.ndarray, path: Path) -> np.ndarray:
    """Exports fp32 ONNX, holds it to torch; its logits on every window."""
    with run.steps.step("exporting to ONNX fp32"):
        start = time.monotonic()
        export_fp32(model, path, params.max_length, params.num_mel_bins)
        run.report["export_s"] = round(time.monotonic() - start, 2)
    checked = windows[:TORCH_PARITY_WINDOWS]
    with run.steps.step(f"fp32 parity: torch vs ONNX on {len(checked)} windows"):
        logits = onnx_logits(path, windows)
        diff = float(np.abs(torch_logits(model, checked) - logits[: len(checked)]).max())
    run.report.update(
        fp32_max_abs_diff=diff,
        fp32_parity_windows=len(checked),
        fp32_tolerance=FP32_TOLERANCE,
        fp32_bytes=path.stat().st_size,
    )
    run.check(
        diff <= FP32_TOLERANCE,
        f"ONNX fp32 export differs from torch by {diff:.2e} logits (> {FP32_TOLERANCE:g})",
    )
    return logits


def _int8(
    run: _Run, quantize: str, fp32: Path, out: Path, windows: np.ndarray, fp32_logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Quantises, holds int8 to fp32 on the windows not used to calibrate; those windows, int8 logits."""
    with run.steps.step(f"quantising: {run.report['method']}"):
        start = time.monotonic()
        if quantize == "int8-static":
            quantize_static_int8(fp32, out, windows[::2])
            windows, fp32_logits = windows[1::2], fp32_logits[1::2]
        else:
            quantize_dynamic_int8(fp32, out)
            run.report["per_window_quantisers"] = perwindow.rewrite(out)
        run.report["quantize_s"] = round(time.monotonic() - start, 2)
    with run.steps.step(f"int8 parity: ONNX fp32 vs int8 on {len(windows)} windows"):
        logits = onnx_logits(out, windows)
    agreement = float(np.mean(logits.argmax(-1) == fp32_logits.argmax(-1)))
    run.report.update(
        int8_top1_agreement=agreement,
        int8_max_abs_diff=float(np.abs(logits - fp32_logits).max()),
        int8_min_agreement=MIN_INT8_AGREEMENT,
        int8_parity_windows=len(windows),
        int8_bytes=out.stat().st_size,
    )
    run.check(
        agreement >= MIN_INT8_AGREEMENT,
        f"int8 agrees with fp32 on {agreement:.1%} of top-1 labels (< {MIN_INT8_AGREEMENT:.0%})",
        INT8_ADVICE if quantize == "int8" else "try --quantize none (fp32), or other recordings",
    )
    return windows, logits


def write_model_dir(
    source: str | Path,
    output: str | Path,
    *,
    quantize: str = "int8",
    inputs: np.ndarray | None = None,
    calibration: Path | None = None,
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    card: str = "",
    window_ms: int = 1000,
    hop_ms: int = 100,
) -> dict[str, Any]:
    """Exports, checks parity, writes the model directory `output`; returns the parity report.

    Parity runs on `inputs` (normalised windows), else on windows of the recordings under
    `calibration`, else on generated audio; int8-static calibrates on every other one of them and
    is checked on the rest. `force` replaces an existing `output` and overrides failed checks.
    """
    require_toolchain()
    output = Path(output)
    if quantize not in QUANTIZE_CHOICES:
        raise KwsError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize == "int8-static" and inputs is None and calibration is None:
        raise KwsError("--quantize int8-static needs --calibration AUDIO_DIR (recordings to calibrate on)")
    refuse_existing(output, force)
    recordings = audio_files(calibration) if calibration is not None and inputs is None else []
    steps = Steps(6 if quantize == "none" else 8)
    with steps.step(f"loading {source}"):
        model, extractor = load_checkpoint(source)
    params = FbankParams(
        num_mel_bins=int(extractor.num_mel_bins),
        mean=float(extractor.mean),
        std=float(extractor.std),
        max_length=int(extractor.max_length),
    )
    with steps.step("preparing parity windows"):
        windows, data = _parity_windows(params, inputs, calibration, recordings)
    if quantize == "int8-static" and len(windows) < 4:
        raise KwsError("--quantize int8-static needs at least 4 recordings to calibrate on and check")
    run = _Run(output, force, {"source": str(source), "quantize": quantize, "parity_data": data}, steps)
    if quantize != "none":
        run.report["method"] = METHODS[quantize]
    with staged(output) as staging:
        fp32, final = staging / "fp32.onnx", staging / "model.onnx"
        evaluate = windows
        final_logits = _fp32(run, model, params, windows, fp32)
        if quantize == "none":
            fp32 = fp32.rename(final)
        else:
            evaluate, final_logits = _int8(run, quantize, fp32, final, windows, final_logits)
        with steps.step("latency per window, 1 thread"):
            run.report["cpu"] = cpu_name()
            run.report["fp32_latency_ms"] = latency_ms(fp32, windows[0])
            if quantize != "none":
                run.report["int8_latency_ms"] = latency_ms(final, windows[0])
                fp32.unlink()
        _write_metadata(staging, model, extractor, run.report, provenance, card, window_ms, hop_ms)
        with steps.step("loading the directory as the daemon does"):
            _check_daemon_loads(staging, evaluate[:4], final_logits[:4])
    return run.report


def _write_metadata(
    directory: Path,
    model: Any,
    extractor: Any,
    report: dict[str, Any],
    provenance: dict[str, Any] | None,
    card: str,
    window_ms: int,
    hop_ms: int,
) -> None:
    """config.json and preprocessor_config.json as transformers writes them, kws.json, MODEL_CARD.md."""
    model.config.to_json_file(str(directory / "config.json"))
    extractor.to_json_file(str(directory / "preprocessor_config.json"))
    kws = {
        "format": 1,
        "sha256": sha256_file(directory / "model.onnx"),
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "window_ms": window_ms,
        "hop_ms": hop_ms,
        "provenance": _provenance(report["source"], model, provenance),
        "export": report,
        **(TRAINED_CREDITS if provenance else credits(report["source"])),
    }
    (directory / "kws.json").write_text(json.dumps(kws, indent=2) + "\n")
    (directory / "MODEL_CARD.md").write_text(card or model_card(model.config, kws))


def _check_daemon_loads(directory: Path, windows: np.ndarray, logits: np.ndarray) -> None:
    """The runtime's loader accepts the directory (sha256, labels, input shape) and scores as measured.

    Posteriors are compared, not rankings: near-tied labels (random weights) may rank either way.
    """
    model = Model(ModelInfo.load(directory))
    posteriors = np.concatenate([model(window[None]) for window in windows])  # one per call, as it runs
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    expected = shifted / shifted.sum(-1, keepdims=True)
    if not np.allclose(posteriors, expected, atol=1e-4):
        raise KwsError(f"{directory}: the daemon's loader scores differently from the parity check")
