"""Near-miss capture: the audio of every scored window in which a keyword came close, as WAV files,
for tuning thresholds and mining hard negatives from the user's own room.

The audio thread only hands a copy of the window to a bounded queue; a worker thread of its own
writes the files and deletes the oldest ones beyond `max_mb`, so disk never stalls detection and
never fills up. A full queue drops the window and counts it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import wave
from collections import deque
from pathlib import Path

import numpy as np

from kws_daemon.config import NearMissConfig
from kws_daemon.errors import KwsError

log = logging.getLogger("kws_daemon")
RATE = 16000


class NearMissRecorder:
    def __init__(self, config: NearMissConfig, min_gap_s: float = 1.0) -> None:
        self.config = config
        try:
            config.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KwsError(f"near_misses.dir {config.dir}: cannot be created ({e.strerror})") from None
        self._budget = int(config.max_mb * 1e6)
        self._files: deque[tuple[Path, int]] = deque(
            (p, p.stat().st_size) for p in sorted(config.dir.glob("*.wav"), key=lambda p: p.stat().st_mtime)
        )
        self._used = sum(size for _, size in self._files)
        self._queue: queue.Queue[tuple[str, float, float, np.ndarray] | None] = queue.Queue(maxsize=32)
        self._min_gap_s = min_gap_s  # a word is scored in several windows: keep one of them
        self._last_s = -np.inf
        self.saved = self.dropped = 0
        self._thread = threading.Thread(target=self._work, name="near-misses", daemon=True)
        self._thread.start()

    def offer(self, keyword: str, score: float, time_s: float, audio: np.ndarray) -> None:
        """Called from the audio thread for every scored window; never blocks."""
        if score < self.config.threshold or time_s - self._last_s < self._min_gap_s:
            return
        self._last_s = time_s
        try:
            self._queue.put_nowait((keyword, score, time_s, audio.copy()))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            keyword, score, time_s, audio = item
            stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
            path = self.config.dir / f"{stamp}-{time_s:09.2f}s-{keyword}-{score:.2f}.wav"
            try:
                with wave.open(str(path), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(RATE)
                    w.writeframes(np.clip(audio * 32768, -32768, 32767).astype("<i2").tobytes())
            except OSError as e:
                log.warning("near_misses: cannot write %s (%s)", path, e.strerror)
                continue
            self.saved += 1
            size = path.stat().st_size
            self._files.append((path, size))
            self._used += size
            while self._used > self._budget and self._files:
                old, old_size = self._files.popleft()
                old.unlink(missing_ok=True)
                self._used -= old_size
