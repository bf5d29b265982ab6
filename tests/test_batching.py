"""Windows of several streams in one onnxruntime call, each stream getting its own posteriors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from kws_daemon.batching import Batcher
from kws_daemon.model import Model, ModelInfo, default_model_dir


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(ModelInfo.load(default_model_dir()))


def _windows(model: Model, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *model.window_shape)).astype(np.float32)


def test_busy_streams_share_calls_and_get_their_own_posteriors(model: Model) -> None:
    batcher = Batcher(model, max_batch=32, max_wait_s=1.0)  # a batch closes when every busy stream waits
    streams = 8
    inputs = [_windows(model, 1 + i % 3, seed=i) for i in range(streams)]
    results: dict[int, np.ndarray] = {}
    all_busy = threading.Barrier(streams)

    def stream(i: int) -> None:
        with batcher.working():
            all_busy.wait()
            results[i] = batcher.stream_model()(inputs[i])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    for i in range(streams):
        assert np.allclose(results[i], model(inputs[i]), atol=1e-5)
    assert batcher.counters.windows == sum(len(x) for x in inputs)
    assert batcher.counters.calls < streams  # shared calls, not one per stream


def test_a_lone_stream_is_not_held(model: Model) -> None:
    batcher = Batcher(model, max_wait_s=30.0)
    with batcher.working():
        out = batcher.stream_model()(_windows(model, 1, 0))  # the only busy stream: no wait for others
    batcher.close()
    assert out.shape == (1, len(model.info.labels))


def test_max_batch_splits_calls(model: Model) -> None:
    batcher = Batcher(model, max_batch=2, max_wait_s=0.0)
    out = batcher.stream_model()(_windows(model, 2, 0))
    batcher.close()
    assert out.shape[0] == 2 and batcher.counters.calls == 1


def test_a_model_error_reaches_the_stream(model: Model) -> None:
    batcher = Batcher(model)
    bad = np.zeros((1, 3, 3), np.float32)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception type
        batcher.stream_model()(bad)
    assert batcher.stream_model()(_windows(model, 1, 0)).shape[0] == 1  # the batcher goes on
    batcher.close()
