from __future__ import annotations

import threading

import numpy as np

from kws_daemon.audio.ringbuffer import RingBuffer


def test_overflow_drops_oldest_and_counts() -> None:
    ring = RingBuffer(block_size=4, capacity=3, sample_rate=16000)
    for i in range(5):
        ring.write(np.full(4, i, dtype=np.int16), t_mono=float(i), t_wall=100.0 + i)
    assert ring.overflows == 2
    blocks = [ring.read(timeout=0) for _ in range(3)]
    assert [int(b.samples[0]) for b in blocks] == [2, 3, 4]
    assert [b.t_mono for b in blocks] == [2.0, 3.0, 4.0] and blocks[0].t_wall == 102.0
    assert ring.read(timeout=0.01) is None and not ring.exhausted


def test_short_block_keeps_its_length_and_close_drains() -> None:
    ring = RingBuffer(block_size=4, capacity=2, sample_rate=8000)
    ring.write(np.array([1, 2], dtype=np.int16), 0.0, 0.0)
    ring.close()
    block = ring.read(timeout=0)
    assert block is not None and block.samples.tolist() == [1, 2] and block.sample_rate == 8000
    assert ring.read(timeout=0) is None and ring.exhausted
    assert not ring.write(np.zeros(4, dtype=np.int16), 0.0, 0.0)


def test_blocking_writer_loses_nothing() -> None:
    ring = RingBuffer(block_size=16, capacity=4, sample_rate=16000)
    n = 2000

    def produce() -> None:
        for i in range(n):
            ring.write(np.full(16, i % 30000, dtype=np.int16), 0.0, 0.0, block=True)
        ring.close()

    threading.Thread(target=produce).start()
    got = []
    while (block := ring.read(timeout=5)) is not None:
        got.append(int(block.samples[0]))
    assert got == [i % 30000 for i in range(n)] and ring.overflows == 0
