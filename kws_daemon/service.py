"""The running daemon: a source feeds the ring buffer, one processing thread owns the pipeline, and
events go to the hook workers. Signals only set flags; the loop acts on them between blocks."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from kws_daemon.audio.ringbuffer import RingBuffer
from kws_daemon.audio.sources import Source, open_source
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent
from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookDispatcher
from kws_daemon.model import Model, ModelInfo
from kws_daemon.pipeline import Pipeline

log = logging.getLogger("kws_daemon")


def _open_recorder(path: str, rate: int) -> Any:
    """A WAV writer for exactly the audio the pipeline receives (for replay with `detect`)."""
    import soundfile as sf

    try:
        return sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV")
    except (sf.LibsndfileError, OSError) as e:
        raise KwsError(f"--record {path}: cannot write ({e})") from None


def load_model(config: Config) -> Model:
    info = ModelInfo.load(config.model)
    config.check_against(info)
    return Model(info, threads=config.detector.threads)


class Daemon:
    def __init__(self, config: Config, record: str | None = None) -> None:
        self.config = config
        t0 = time.monotonic()
        self.model = load_model(config)
        self.model_load_s = time.monotonic() - t0
        self.source: Source = open_source(config.audio)
        self.pipeline = Pipeline(config, self.model, source=self.source.name)
        self.hooks = HookDispatcher(config, self.pipeline.stats)
        blocks = max(4, int(config.audio.buffer_s * 1000 / config.audio.block_ms))
        self.ring = RingBuffer(self.source.block_size, blocks, self.source.sample_rate)
        self.detections = 0
        self._stop = threading.Event()
        self._recorder = _open_recorder(record, self.source.sample_rate) if record else None

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop.set()

    def run(self) -> int:
        """Runs until a signal or the end of a file/stdin input; returns the exit status."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.stop)
        log.info(
            "listening on %s (%d Hz) with model %s (%d labels, loaded in %.2fs)",
            self.source.name,
            self.source.sample_rate,
            self.model.info.path,
            len(self.model.info.labels),
            self.model_load_s,
        )
        self.source.start(self.ring)
        interval = self.config.stats_interval_s
        next_report = time.monotonic() + interval if interval else float("inf")
        try:
            while not self._stop.is_set():
                block = self.ring.read(timeout=0.25)
                if block is not None:
                    if self._recorder is not None:
                        self._recorder.write(block.samples)
                    for event in self.pipeline.process(block):
                        self._emit(event)
                elif self.ring.exhausted:
                    for event in self.pipeline.flush():
                        self._emit(event)
                    break
                if time.monotonic() >= next_report:
                    self.report()
                    next_report += interval
        finally:
            self.source.stop()
            if self._recorder is not None:
                self._recorder.close()
            self.hooks.close()
            self.report()
        if self.source.error is not None:
            log.error("%s", self.source.error)
            return 1
        return 0

    def _emit(self, event: KeywordEvent) -> None:
        self.detections += 1
        log.info("detected '%s' (score %.3f) at %.2fs", event.keyword, event.score, event.time_s)
        self.hooks(event)

    def report(self) -> None:
        c = self.pipeline.counters
        totals = self.hooks.totals()
        log.info(
            "stats: %.1fs audio, %d windows, %d detections, %d overflows; hooks %d runs, %d failed, "
            "%d timed out, %d dropped; %s",
            c.samples / 16000,
            c.windows,
            self.detections,
            self.ring.overflows,
            totals.runs,
            totals.failures,
            totals.timeouts,
            totals.dropped,
            self.pipeline.stats.summary(),
        )
