"""One onnxruntime call for the windows that several streams need at the same moment.

Each stream's pipeline runs on a worker thread and gets a `StreamModel`: calling it queues the
stream's windows and waits. The batcher's thread runs a batch as soon as every stream that is busy
with a block is waiting for inference (nothing more can join), when `max_batch` windows are queued,
or `max_wait_s` after the oldest request (a stream still computing features does not hold the
others longer than that). A transformer's cost per window falls with the batch: the weights and the
graph's fixed overhead are paid once per call, not once per stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from kws_daemon.model import Model


@dataclass
class _Request:
    windows: np.ndarray
    t: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class BatchCounters:
    calls: int = 0  # onnxruntime runs
    windows: int = 0  # windows scored in them


class Batcher:
    def __init__(self, model: Model, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        self.model = model
        self.counters = BatchCounters()
        self._max_batch, self._max_wait_s = max_batch, max_wait_s
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = 0  # streams inside `working()`
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def stream_model(self) -> StreamModel:
        return StreamModel(self)

    @contextmanager
    def working(self) -> Iterator[None]:
        """Marks a stream as busy with a block: it may still ask for windows."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def score(self, windows: np.ndarray) -> np.ndarray:
        request = _Request(windows)
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher closed")
            self._queue.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].t + self._max_wait_s
            while not self._closed:
                queued = sum(len(r.windows) for r in self._queue)
                if queued >= self._max_batch or len(self._queue) >= self._busy:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request] = []
            n = 0
            while self._queue and (not batch or n + len(self._queue[0].windows) <= self._max_batch):
                n += len(self._queue[0].windows)
                batch.append(self._queue.pop(0))
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                posteriors = self.model(np.concatenate([r.windows for r in batch]))
            except BaseException as e:  # handed to every waiting stream, which fails on its own
                for r in batch:
                    r.error = e
                    r.done.set()
                continue
            self.counters.calls += 1
            self.counters.windows += len(posteriors)
            start = 0
            for r in batch:
                r.result = posteriors[start : start + len(r.windows)]
                start += len(r.windows)
                r.done.set()


class StreamModel(Model):
    """A stream's view of the shared model: the same info, its windows scored in batches."""

    def __init__(self, batcher: Batcher) -> None:  # no session of its own: the batcher's model has it
        self.info = batcher.model.info
        self._batcher = batcher

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self._batcher.score(windows)
