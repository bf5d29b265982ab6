"""Audio blocks in, keyword events out: VAD gate, streaming features, windows, model, spotter.

Single-threaded and free of I/O, so the daemon, `detect` and the benchmarks all run this same code.
Only the VAD runs on every block. The model's input (log-mel frames, or speech embeddings) and the
model are computed only for the windows the spotter asks for (kws_daemon.spotting: every hop while
voiced in `running` mode, once per spoken command in `commands` mode), so a silent room costs almost
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.vad import AlwaysOpen, VadGate
from kws_daemon.config import Config
from kws_daemon.detector import Detector, KeywordEvent
from kws_daemon.errors import KwsError
from kws_daemon.features import FRAME_SHIFT, frame_end_sample
from kws_daemon.keyword_input import keyword_input
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Model, Replay
from kws_daemon.nearmiss import NearMissRecorder
from kws_daemon.sequences import SequenceMatcher
from kws_daemon.spotting import Commands, Hit, SlidingWindows

RATE = 16000


@dataclass
class PipelineCounters:
    samples: int = 0  # at 16 kHz
    windows: int = 0
    gate_open_blocks: int = 0
    blocks: int = 0


class Pipeline:
    def __init__(
        self,
        config: Config,
        model: Model,
        source: str = "",
        stats: LatencyStats | None = None,
        near_misses: NearMissRecorder | None = None,
    ) -> None:
        """Pass `stats` to go on with the latency histograms of a pipeline this one replaces (a reload);
        `near_misses` gets the audio of every scored window where a keyword came close."""
        info = model.info
        self.model = model
        self.source = source
        self.stats = stats if stats is not None else LatencyStats()
        self.counters = PipelineCounters()
        self._vad: VadGate | AlwaysOpen = (
            VadGate(config.vad.aggressiveness, config.vad.frame_ms, config.vad.hangover_ms)
            if config.vad.enabled
            else AlwaysOpen()
        )
        hop = config.detector.hop_ms // 10
        pre_roll = config.vad.pre_roll_ms // 10
        # room for a window reaching back over the pre-roll from the end of the longest block (200 ms)
        self._input = keyword_input(info, config.detector.window_ms, pre_roll + 2048)
        window = self._window = self._input.window_frames
        self._resampler: Resampler | None = None
        self._scoring_s = 0.0  # time spent in _score during the current spotter call
        self._near_misses = near_misses
        self._keyword_index = np.array(
            [i for i, label in enumerate(info.labels) if label in info.keyword_labels]
        )
        thresholds = config.keyword_thresholds(info)
        self.spotter: SlidingWindows | Commands
        if config.mode_for(info) == "commands":
            if not config.vad.enabled:
                raise KwsError("detector.mode 'commands' needs the VAD (vad.enabled: true)")
            frame = RATE * config.vad.frame_ms // 1000
            tail_ms, count = info.kws.get("command_tail_ms"), info.kws.get("command_windows")
            self.spotter = Commands(
                info.labels,
                thresholds,
                config.endpointer,
                frame,
                window,
                hop,
                tail=tail_ms // 10 if isinstance(tail_ms, int) and 0 <= tail_ms <= 2000 else None,
                windows=count if isinstance(count, int) and 1 <= count <= 10 else Commands.WINDOWS,
            )
        else:
            detector = Detector(
                info.labels,
                thresholds,
                smoothing=config.detector.smoothing,
                refractory_s=config.detector.refractory_ms / 1000,
            )
            self.spotter = SlidingWindows(detector, window, hop, pre_roll)
        self._sequences = SequenceMatcher(config.sequences, config.reported)

    def process(self, block: AudioBlock) -> list[KeywordEvent]:
        t0 = time.monotonic()
        self.stats.observe("queue", (t0 - block.t_mono) * 1000)
        if self._resampler is None or self._resampler.in_rate != block.sample_rate:
            self._resampler = Resampler(block.sample_rate, RATE)
        samples = self._resampler(block.samples)
        return self._consume(samples, block.t_mono, block.t_wall, t0)

    def flush(self) -> list[KeywordEvent]:
        """End of stream: drains the resampler and lets the spotter decide on what is still open."""
        t0 = time.monotonic()
        tail = (
            self._resampler(np.zeros(0, dtype=np.int16), last=True)
            if self._resampler
            else np.zeros(0, np.int16)
        )
        events = self._consume(tail, t0, time.time(), t0)
        hits = self.spotter.flush(self._input.n_frames, self._score)
        return events + self._events(hits, t0, time.time())

    def _consume(self, samples: np.ndarray, t_mono: float, t_wall: float, t0: float) -> list[KeywordEvent]:
        self.counters.blocks += 1
        self.counters.samples += len(samples)
        is_open = self._vad(samples)
        self.stats.observe("vad", (time.monotonic() - t0) * 1000)
        self._input.push(samples)
        if is_open:
            self.counters.gate_open_blocks += 1
        t_s, self._scoring_s = time.monotonic(), 0.0
        hits = self.spotter(self._vad, is_open, self._input.n_frames, self._score)
        self.stats.observe("detection", (time.monotonic() - t_s - self._scoring_s) * 1000)
        return self._events(hits, t_mono, t_wall) if hits else []

    def _score(self, end: int) -> np.ndarray:
        """Posteriors of the window ending at frame `end`."""
        self.counters.windows += 1
        if isinstance(self.model, Replay) and self.model.replaying:  # a sweep's later pass
            return self.model(None)[0]
        t_f = time.monotonic()
        window = self._input.window(end)
        t_a = time.monotonic()
        posteriors = self.model(window[None])[0]
        t_b = time.monotonic()
        self.stats.observe("features", (t_a - t_f) * 1000)
        self.stats.observe("inference", (t_b - t_a) * 1000)
        self._scoring_s += t_b - t_f
        if self._near_misses is not None:
            best = self._keyword_index[int(np.argmax(posteriors[self._keyword_index]))]
            end_sample = frame_end_sample(end)
            self._near_misses.offer(
                self.model.info.labels[best],
                float(posteriors[best]),
                end_sample / RATE,
                self._input.audio(end_sample - self._window * FRAME_SHIFT, end_sample),
            )
        return posteriors

    def _events(self, hits: list[Hit], t_mono: float, t_wall: float) -> list[KeywordEvent]:
        """Events stamped from the end of each keyword's audio: `t_mono`/`t_wall` are the capture
        times of the newest sample."""
        now = time.monotonic()
        events = []
        for hit in hits:
            behind_s = max(0.0, (self.counters.samples - hit.word_end) / RATE)
            end_mono = t_mono - behind_s
            self.stats.observe("keyword_end_to_event", (now - end_mono) * 1000)
            events.append(
                KeywordEvent(
                    keyword=hit.keyword,
                    score=hit.score,
                    time_s=hit.word_end / RATE,
                    t_wall=t_wall - behind_s,
                    t_mono=end_mono,
                    source=self.source,
                    latency_ms={"keyword_end_to_event": (now - end_mono) * 1000},
                )
            )
        return self._sequences(events)
