"""One Wyoming audio stream: raw chunks in, keyword events out, through the daemon's own Pipeline.

Chunks arrive at whatever size the client picks (Home Assistant forwards its satellites' chunks,
wyoming-satellite sends 1024 samples). They are cut back into blocks of audio.block_ms, as the
microphone source delivers them, so a stream served over Wyoming is decided exactly as `detect`
decides the same audio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.pcm import check_format, to_mono_int16
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Model
from kws_daemon.modes import make_pipeline


@dataclass(frozen=True)
class Detected:
    """A detection as the client gets it: timestamp in milliseconds of its stream."""

    name: str
    timestamp_ms: int
    event: KeywordEvent


class WakeStream:
    """A stream's resampler, VAD, features and spotter state, and its audio not yet a whole block."""

    def __init__(
        self,
        config: Config,
        model: Model,
        source: str,
        stats: LatencyStats,
        rate: int,
        start_ms: int = 0,
    ) -> None:
        self.pipeline = make_pipeline(config, model, source=source, stats=stats)
        self.rate = rate
        self._block_ms = config.audio.block_ms
        self._start_ms = start_ms
        self._pending = np.zeros(0, np.int16)

    def feed(self, payload: bytes, rate: int, width: int, channels: int) -> list[Detected]:
        rate, width, channels = check_format(rate, width, channels)
        samples = to_mono_int16(payload, width, channels)
        events: list[KeywordEvent] = []
        if rate != self.rate:  # the rest at the old rate goes first; the pipeline resamples each
            events += self._process(self._pending)
            self._pending, self.rate = np.zeros(0, np.int16), rate
        self._pending = np.concatenate([self._pending, samples])
        size = self.rate * self._block_ms // 1000
        while len(self._pending) >= size:
            block, self._pending = self._pending[:size], self._pending[size:]
            events += self._process(block)
        return self._detected(events)

    def finish(self) -> list[Detected]:
        """audio-stop: the partial block, then whatever the spotter still holds open."""
        events = self._process(self._pending)
        self._pending = np.zeros(0, np.int16)
        return self._detected(events + self.pipeline.flush())

    def _process(self, samples: np.ndarray) -> list[KeywordEvent]:
        if not len(samples):
            return []
        return self.pipeline.process(AudioBlock(samples, self.rate, time.monotonic(), time.time()))

    def _detected(self, events: list[KeywordEvent]) -> list[Detected]:
        return [Detected(e.keyword, self._start_ms + round(e.time_s * 1000), e) for e in events]
