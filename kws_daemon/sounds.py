"""detector.mode: sounds. Sound events named by text prompts (CLAP), in windows of the model's length.

No VAD: a smoke alarm or breaking glass is not speech. An energy gate opens while a block's level
is at least `sounds.gate_dbfs`, and stays open for one window after the last loud block, so a short
sound is seen in every window that holds it. While open, the last `window_s` seconds are scored every
`hop_s` against the prompts baked into the model at export; the best prompt that is not background
fires when its score reaches its threshold, then not again for `refractory_s`. Audio is resampled
from the source's own rate straight to the model's (48 kHz for CLAP): going through 16 kHz would
drop everything above 8 kHz.
"""

from __future__ import annotations

import time

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.level import level_dbfs
from kws_daemon.audio.resample import Resampler
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent, threshold_vector
from kws_daemon.frontends import ClapInput, ClapParams
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Model, is_background_label
from kws_daemon.pipeline import PipelineCounters


class SoundPipeline:
    """Audio blocks in, sound events out; the same surface as Pipeline."""

    def __init__(
        self, config: Config, model: Model, source: str = "", stats: LatencyStats | None = None
    ) -> None:
        info = model.info
        assert isinstance(info.frontend, ClapParams)  # Config.check_against: sounds needs a CLAP model
        self.model, self.source = model, source
        self.stats = stats if stats is not None else LatencyStats()
        self.counters = PipelineCounters()
        self.rate = info.frontend.sample_rate
        s = config.sounds
        window_s = s.window_s or info.frontend.max_samples / self.rate
        self._window = int(window_s * self.rate)
        self._hop = int(s.hop_s * self.rate)
        self._keep = self._window + 5 * self.rate  # windows due earlier in a long block still fit
        self._gate_dbfs, self._refractory_s = s.gate_dbfs, s.refractory_s
        self._input = ClapInput(info.frontend)
        self._audio = np.zeros(0, np.int16)
        self._first = 0  # stream sample (at the model's rate) of _audio[0]
        self._open_until = -1  # the gate stays open to this sample
        self._next_end = self._hop  # the next window's end
        self._last_fired: dict[int, float] = {}
        self._labels = info.labels
        self._threshold = threshold_vector(info.labels, config.keyword_thresholds(info))
        self._background = np.array([is_background_label(label) for label in info.labels])
        self._resampler: Resampler | None = None

    def process(self, block: AudioBlock) -> list[KeywordEvent]:
        self.stats.observe("queue", (time.monotonic() - block.t_mono) * 1000)
        if self._resampler is None or self._resampler.in_rate != block.sample_rate:
            self._resampler = Resampler(block.sample_rate, self.rate)
        return self._consume(self._resampler(block.samples), block.t_mono, block.t_wall)

    def flush(self) -> list[KeywordEvent]:
        tail = self._resampler(np.zeros(0, np.int16), last=True) if self._resampler else np.zeros(0, np.int16)
        events = self._consume(tail, time.monotonic(), time.time())
        end = self._first + len(self._audio)
        if end > self._next_end - self._hop and end <= self._open_until:  # the audio after the last window
            events += self._score(end, time.monotonic(), time.time())
        return events

    def _consume(self, samples: np.ndarray, t_mono: float, t_wall: float) -> list[KeywordEvent]:
        self.counters.blocks += 1
        self.counters.samples += len(samples) * 16000 // self.rate  # counted at 16 kHz, like the others
        start = self._first + len(self._audio)
        self._audio = np.concatenate([self._audio, samples])
        if len(self._audio) > self._keep:
            self._first += len(self._audio) - self._keep
            self._audio = self._audio[-self._keep :]
        if len(samples) and level_dbfs(samples) >= self._gate_dbfs:
            self._open_until = start + len(samples) + self._window
            self.counters.gate_open_blocks += 1
        end = self._first + len(self._audio)
        events = []
        while self._next_end <= end:
            if self._next_end <= self._open_until:
                behind = end - self._next_end
                events += self._score(
                    self._next_end, t_mono - behind / self.rate, t_wall - behind / self.rate
                )
            self._next_end += self._hop
        return events

    def _score(self, end: int, t_mono: float, t_wall: float) -> list[KeywordEvent]:
        audio = self._audio[max(0, end - self._window - self._first) : end - self._first]
        t0 = time.monotonic()
        posteriors = self.model(self._input(audio.astype(np.float32) / 32768)[None])[0]
        self.stats.observe("inference", (time.monotonic() - t0) * 1000)
        self.counters.windows += 1
        best = int(np.argmax(np.where(self._background, -1.0, posteriors)))
        time_s = end / self.rate
        if posteriors[best] < self._threshold[best] or self._background[best]:
            return []
        if time_s - self._last_fired.get(best, -1e9) < self._refractory_s:
            return []
        self._last_fired[best] = time_s
        latency = (time.monotonic() - t_mono) * 1000
        self.stats.observe("keyword_end_to_event", latency)
        return [
            KeywordEvent(
                keyword=self._labels[best],
                score=float(posteriors[best]),
                time_s=time_s,
                t_wall=t_wall,
                t_mono=t_mono,
                source=self.source,
                latency_ms={"keyword_end_to_event": latency},
            )
        ]
