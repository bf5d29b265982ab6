"""Logits and per-window latency of an ONNX file, in sessions set up as the daemon sets up its own.

Parity and speed are only worth recording if they are measured the way the runtime will run the
model: CPU provider, default (full) graph optimisation, sequential execution, one window per call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.metrics import distribution


def session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime session with kws_daemon.model.Model's options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, windows: Any, name: str = "input_values") -> np.ndarray:
    """Logits for each window (or utterance: a list of any shapes), one at a time as the daemon runs them."""
    runner = session(path)
    return np.concatenate([runner.run(["logits"], {name: w[None]})[0] for w in windows])


def latency_ms(
    path: Path, window: np.ndarray, threads: int = 1, runs: int = 20, name: str = "input_values"
) -> dict[str, float]:
    """p50/p95 wall time of one window, after warm-up runs (first runs allocate and pre-pack)."""
    runner = session(path, threads)
    feed = {name: window[None]}
    for _ in range(3):
        runner.run(["logits"], feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(["logits"], feed)
        times.append((time.perf_counter() - start) * 1000)
    return distribution(times)
