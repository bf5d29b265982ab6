"""`bench --compare`: the same stream through what users would otherwise run, in the same process.

- the seeds' way: transformers `pipeline("audio-classification")` in PyTorch on the model's own
  Hugging Face checkpoint, a 1 s window every hop over the whole stream (no VAD, as the seeds did);
- openWakeWord 0.4.0 with the models its wheel ships, fed 80 ms chunks as its README does;
- pymicro-wakeword 2.5.0 (microWakeWord, TFLite) with the four models its wheel ships, fed 30 ms
  chunks: its models' stride, so every chunk ends in a decision of each model.

Each is measured like the fast pass: process CPU seconds per audio second, and the wall time from
new audio to scores (a window, a chunk) per decision. torch, transformers, openwakeword and
pymicro_wakeword come from the optional `compare` extra and are imported only here. What cannot run
(a package missing; the seeds' way without a checkpoint, as for a model trained here) is skipped,
with the reason, and the others are still compared.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.config import DetectorConfig
from kws_daemon.console import Progress
from kws_daemon.errors import KwsError
from kws_daemon.metrics import distribution
from kws_daemon.model import Model
from kws_daemon.pipeline import RATE

OWW_CHUNK = 1280  # 80 ms, openWakeWord's frame
SEEDS = "seeds: transformers pipeline (torch)"
OWW = "openWakeWord 0.4.0"
MWW_CHUNK = 480  # 30 ms: three of microWakeWord's 10 ms feature frames, its models' stride
MWW = "pymicro-wakeword 2.5.0"


NEEDS = {SEEDS: ("torch", "transformers"), OWW: ("openwakeword",), MWW: ("pymicro_wakeword",)}


def missing(engine: str) -> str | None:
    """Why `engine` cannot run here (a package of the `compare` extra is not installed), or None."""
    absent = [name for name in NEEDS[engine] if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"needs {', '.join(absent)}: pip install torch==2.13.0 'kws-daemon[compare]'"


def checkpoint_of(model: Model, given: Path | None) -> tuple[Path | None, str]:
    """The Hugging Face checkpoint the ONNX model was exported from (--checkpoint, else kws.json's
    record), or None and why not. A --checkpoint that is not one is an error."""
    if given is not None:
        if not (given / "config.json").is_file():
            raise KwsError(f"--checkpoint {given}: not a checkpoint directory (it has no config.json)")
        return given, ""
    kws = model.info.kws
    recorded = kws.get("export", {}).get("source") or kws.get("provenance", {}).get("source")
    if recorded and (Path(recorded) / "config.json").is_file():
        return Path(recorded), ""
    if recorded:
        return None, f"its checkpoint {recorded} is not on this machine; pass --checkpoint DIR"
    return None, "the model has no Hugging Face checkpoint (trained here); pass --checkpoint DIR for one"


def _measure(
    what: str, chunks: Iterator[tuple[np.ndarray, float]], audio_s: float, call: Callable[[np.ndarray], Any]
) -> dict[str, Any]:
    """CPU per audio second and per-call wall time of `call` over (input, audio seconds it advances)."""
    progress = Progress(f"compare: {what}", audio_s, " s")
    times = []
    cpu, wall = time.process_time(), time.perf_counter()
    for data, advance in chunks:
        start = time.perf_counter()
        call(data)
        times.append((time.perf_counter() - start) * 1000)
        progress.advance(advance)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    progress.close()
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_per_audio_s": cpu / audio_s,
        "real_time_factor": wall / audio_s,
        "decisions": len(times),
        "decision_ms": distribution(times),
    }


def seeds_way(checkpoint: Path, audio: np.ndarray, detector: DetectorConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():  # its numpy mel filters warn about empty bands at 128 bins
        warnings.simplefilter("ignore")
        classify = transformers.pipeline("audio-classification", model=str(checkpoint), device="cpu")
    load_s = time.perf_counter() - start
    window, hop = RATE * detector.window_ms // 1000, RATE * detector.hop_ms // 1000
    floats = audio.astype(np.float32) / 32768

    def windows() -> Iterator[tuple[np.ndarray, float]]:
        for end in range(window, len(floats) + 1, hop):
            yield floats[end - window : end], hop / RATE

    classify(floats[:window], top_k=1)  # warm-up, as the daemon's first window is not timed apart
    result = _measure("seeds' way", windows(), (len(floats) - window) / RATE, lambda x: classify(x, top_k=1))
    result.update(
        load_s=load_s,
        checkpoint=str(checkpoint),
        hop_ms=detector.hop_ms,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        transformers=transformers.__version__,
    )
    return result


def openwakeword_way(audio: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    import openwakeword as oww
    from openwakeword.model import Model as OwwModel

    missing = [p for p in oww.get_pretrained_model_paths() if not Path(p).is_file()]
    if missing:
        raise KwsError(f"--compare: the installed openwakeword lacks its shipped models ({missing[0]})")
    with warnings.catch_warnings():  # it asks for CUDA first and warns that it is absent
        warnings.simplefilter("ignore")
        model = OwwModel()
    load_s = time.perf_counter() - start

    def chunks() -> Iterator[tuple[np.ndarray, float]]:
        for i in range(0, len(audio) - OWW_CHUNK + 1, OWW_CHUNK):
            yield audio[i : i + OWW_CHUNK], OWW_CHUNK / RATE

    result = _measure("openWakeWord", chunks(), len(audio) // OWW_CHUNK * OWW_CHUNK / RATE, model.predict)
    result.update(
        load_s=load_s,
        version=importlib.metadata.version("openwakeword"),
        models=sorted(model.models),
        hop_ms=OWW_CHUNK * 1000 // RATE,
    )
    return result


def microwakeword_way(audio: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
    from pymicro_wakeword import Model as MwwModel

    models = [MicroWakeWord.from_builtin(m) for m in MwwModel]
    features = MicroWakeWordFeatures()
    load_s = time.perf_counter() - start

    def chunks() -> Iterator[tuple[np.ndarray, float]]:
        for i in range(0, len(audio) - MWW_CHUNK + 1, MWW_CHUNK):
            yield audio[i : i + MWW_CHUNK], MWW_CHUNK / RATE

    def decide(chunk: np.ndarray) -> None:  # its front end takes 16-bit little-endian bytes
        for frame in features.process_streaming(chunk.astype("<i2").tobytes()):
            for model in models:
                model.process_streaming_prob(frame)

    audio_s = len(audio) // MWW_CHUNK * MWW_CHUNK / RATE
    result = _measure("pymicro-wakeword", chunks(), audio_s, decide)
    result.update(
        load_s=load_s,
        version=importlib.metadata.version("pymicro-wakeword"),
        models=sorted(m.id for m in models),
        hop_ms=MWW_CHUNK * 1000 // RATE,
    )
    return result


def compare(
    ours: dict[str, Any],
    audio: np.ndarray,
    detector: DetectorConfig,
    checkpoint: tuple[Path | None, str],
) -> dict[str, Any]:
    """The alternatives that can run on `audio`, with ratios to our fast pass (theirs ÷ ours: > 1
    means we use less), and why the others were skipped."""
    path, no_checkpoint = checkpoint
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        OWW: lambda: openwakeword_way(audio),
        MWW: lambda: microwakeword_way(audio),
    }
    if path is not None:
        runs = {SEEDS: lambda: seeds_way(path, audio, detector), **runs}
    engines, skipped = {}, {} if path is not None else {SEEDS: no_checkpoint}
    for name, measure in runs.items():
        why = missing(name)
        if why:
            skipped[name] = why
        else:
            engines[name] = measure()
    fast = ours["fast"]
    for engine in engines.values():
        engine["cpu_ratio"] = engine["cpu_per_audio_s"] / fast["cpu_per_audio_s"]
        engine["cpu_ratio_gate_open"] = engine["cpu_per_audio_s"] / fast["cpu_per_audio_s_gate_open"]
        for q in ("p50", "p95"):
            engine[f"latency_ratio_{q}"] = engine["decision_ms"][q] / fast["decision_ms"][q]
    return {"engines": engines, "skipped": skipped}
