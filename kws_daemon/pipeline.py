"""Audio blocks in, keyword events out: VAD gate, streaming features, sliding windows, model, detector.

Single-threaded and free of I/O, so the daemon, `detect` and the benchmarks all run this same code.
Only the VAD runs on every block. Log-mel frames and the transformer are computed only for the
windows the gate lets through (pre-roll included), so a silent room costs almost nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.vad import AlwaysOpen, VadGate
from kws_daemon.config import Config
from kws_daemon.detector import Detector, KeywordEvent
from kws_daemon.features import (
    FRAME_LENGTH,
    FRAME_SHIFT,
    FrameStore,
    frame_count,
    int16_to_float,
    pad_and_normalise,
)
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Model

RATE = 16000
GRID_LAG = 2  # a frame ends 15 ms past its 10 ms slot: 1.5 frames, rounded up


def keyword_thresholds(
    config: Config, labels: tuple[str, ...], keyword_labels: tuple[str, ...]
) -> dict[str, float]:
    """The configured keywords (default: every non-background label) and their thresholds."""
    default = config.detector.threshold
    if config.keywords is None:
        return {name: default for name in keyword_labels}
    return {
        k.name: default if k.threshold is None else k.threshold for k in config.keywords if k.name in labels
    }


@dataclass
class PipelineCounters:
    samples: int = 0  # at 16 kHz
    windows: int = 0
    gate_open_blocks: int = 0
    blocks: int = 0


class Pipeline:
    def __init__(
        self, config: Config, model: Model, source: str = "", stats: LatencyStats | None = None
    ) -> None:
        """Pass `stats` to go on with the latency histograms of a pipeline this one replaces (a reload)."""
        info = model.info
        self.model = model
        self.source = source
        self.stats = stats if stats is not None else LatencyStats()
        self.counters = PipelineCounters()
        self._params = info.fbank
        self._vad: VadGate | AlwaysOpen = (
            VadGate(config.vad.aggressiveness, config.vad.frame_ms, config.vad.hangover_ms)
            if config.vad.enabled
            else AlwaysOpen()
        )
        self._window = min(frame_count(RATE * config.detector.window_ms // 1000), info.fbank.max_length)
        self._hop = config.detector.hop_ms // 10
        self._pre_roll = config.vad.pre_roll_ms // 10
        # room for a window reaching back over the pre-roll from the end of the longest block (200 ms)
        self._store = FrameStore(info.fbank.num_mel_bins, self._window + self._pre_roll + 2048)
        self._next_end = self._grid_end(1)  # frame count at which the next window ends
        self._last_end = 0  # end of the last evaluated window
        self._was_open = False
        self._resampler: Resampler | None = None
        self.detector = Detector(
            info.labels,
            keyword_thresholds(config, info.labels, info.keyword_labels),
            smoothing=config.detector.smoothing,
            refractory_s=config.detector.refractory_ms / 1000,
        )

    def process(self, block: AudioBlock) -> list[KeywordEvent]:
        t0 = time.monotonic()
        self.stats.observe("queue", (t0 - block.t_mono) * 1000)
        if self._resampler is None or self._resampler.in_rate != block.sample_rate:
            self._resampler = Resampler(block.sample_rate, RATE)
        samples = self._resampler(block.samples)
        return self._consume(samples, block.t_mono, block.t_wall, t0)

    def flush(self) -> list[KeywordEvent]:
        """End of stream: drains the resampler and scores a last window on the final frame."""
        t0 = time.monotonic()
        tail = (
            self._resampler(np.zeros(0, dtype=np.int16), last=True)
            if self._resampler
            else np.zeros(0, np.int16)
        )
        events = self._consume(tail, t0, time.time(), t0)
        n_frames = self._store.n_frames
        if n_frames > self._last_end and self._was_open:
            events += self._evaluate([n_frames], t0, time.time())
        return events

    def _consume(self, samples: np.ndarray, t_mono: float, t_wall: float, t0: float) -> list[KeywordEvent]:
        self.counters.blocks += 1
        self.counters.samples += len(samples)
        is_open = self._vad(samples)
        self.stats.observe("vad", (time.monotonic() - t0) * 1000)
        self._store.push(int16_to_float(samples))
        n_frames = self._store.n_frames
        ends = []
        if is_open:
            self.counters.gate_open_blocks += 1
            if not self._was_open and self._vad.onset is not None:
                onset_frame = max(0, self._vad.onset // FRAME_SHIFT - self._pre_roll)
                after_last = self._last_end + self._hop if self._last_end else 1
                self._next_end = max(after_last, self._grid_end(max(1, onset_frame)))
            while self._next_end <= n_frames:
                ends.append(self._next_end)
                self._next_end += self._hop
        else:
            if self._was_open:
                self.detector.reset()
            self._next_end = self._grid_end(n_frames + 1)
        self._was_open = is_open
        return self._evaluate(ends, t_mono, t_wall) if ends else []

    def _grid_end(self, frame: int) -> int:
        """The first window end at or after `frame` on the hop grid.

        The grid is phased so that a window's last sample falls just before a multiple of hop_ms:
        with blocks of hop_ms (or a multiple), each window is complete when its block arrives
        instead of waiting most of a block for the 15 ms by which a frame overhangs its hop.
        """
        return math.ceil((frame + GRID_LAG) / self._hop) * self._hop - GRID_LAG

    def _evaluate(self, ends: list[int], t_mono: float, t_wall: float) -> list[KeywordEvent]:
        events = []
        for end in ends:
            end_sample = (end - 1) * FRAME_SHIFT + FRAME_LENGTH
            behind_s = max(0.0, (self.counters.samples - end_sample) / RATE)
            t_f = time.monotonic()
            frames = self._store.frames(max(0, end - self._window), end)
            t_a = time.monotonic()
            window = pad_and_normalise(frames, self._params)
            posteriors = self.model(window[None])[0]
            t_b = time.monotonic()
            if self._last_end and end > self._last_end + self._hop:
                self.detector.reset()
            self._last_end = end
            hit = self.detector(posteriors, end_sample / RATE)
            t_c = time.monotonic()
            self.counters.windows += 1
            self.stats.observe("features", (t_a - t_f) * 1000)
            self.stats.observe("inference", (t_b - t_a) * 1000)
            self.stats.observe("detection", (t_c - t_b) * 1000)
            if hit:
                keyword, score = hit
                end_mono = t_mono - behind_s
                self.stats.observe("keyword_end_to_event", (t_c - end_mono) * 1000)
                events.append(
                    KeywordEvent(
                        keyword=keyword,
                        score=score,
                        time_s=end_sample / RATE,
                        t_wall=t_wall - behind_s,
                        t_mono=end_mono,
                        source=self.source,
                        latency_ms={
                            "inference": (t_b - t_a) * 1000,
                            "detection": (t_c - t_b) * 1000,
                            "keyword_end_to_event": (t_c - end_mono) * 1000,
                        },
                    )
                )
        return events
