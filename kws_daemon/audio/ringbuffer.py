"""Hand-off from the capture thread to the processing thread.

The PortAudio callback must never allocate, log or wait, so storage is preallocated and a write is
one copy under a briefly held lock. A live source that outruns the reader loses its oldest audio
(counted in `overflows`); a file or pipe source passes block=True and waits instead, so nothing
from a file is ever dropped.
"""

from __future__ import annotations

import threading

import numpy as np

from kws_daemon.audio.block import AudioBlock


class RingBuffer:
    def __init__(self, block_size: int, capacity: int, sample_rate: int) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._samples = np.zeros((capacity, block_size), dtype=np.int16)
        self._lengths = np.zeros(capacity, dtype=np.int64)
        self._t_mono = np.zeros(capacity, dtype=np.float64)
        self._t_wall = np.zeros(capacity, dtype=np.float64)
        self._head = 0  # blocks ever written
        self._tail = 0  # blocks ever read or dropped
        self._closed = False
        self._cond = threading.Condition()
        self.overflows = 0

    @property
    def closed(self) -> bool:
        """No more blocks will be written (what is in it can still be read)."""
        return self._closed

    def write(self, samples: np.ndarray, t_mono: float, t_wall: float, block: bool = False) -> bool:
        """Stores up to block_size samples; False when the buffer was closed meanwhile."""
        n = min(len(samples), self.block_size)
        with self._cond:
            while self._head - self._tail >= self.capacity:
                if not block:
                    self._tail += 1
                    self.overflows += 1
                    break
                if self._closed:
                    return False
                self._cond.wait(0.1)
            if self._closed:
                return False
            slot = self._head % self.capacity
            self._samples[slot, :n] = samples[:n]
            self._lengths[slot] = n
            self._t_mono[slot] = t_mono
            self._t_wall[slot] = t_wall
            self._head += 1
            self._cond.notify_all()
        return True

    def read(self, timeout: float | None = None) -> AudioBlock | None:
        """The oldest block, or None after `timeout` seconds or once closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._head > self._tail or self._closed, timeout):
                return None
            if self._head == self._tail:
                return None
            slot = self._tail % self.capacity
            block = AudioBlock(
                samples=self._samples[slot, : self._lengths[slot]].copy(),
                sample_rate=self.sample_rate,
                t_mono=float(self._t_mono[slot]),
                t_wall=float(self._t_wall[slot]),
            )
            self._tail += 1
            self._cond.notify_all()
            return block

    def close(self) -> None:
        """Marks the end of the stream; readers drain what is left, blocked writers give up."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def exhausted(self) -> bool:
        with self._cond:
            return self._closed and self._head == self._tail
