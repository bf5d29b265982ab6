"""detector.mode: utterances. Each VAD-delimited utterance is classified once, when it ends.

For models that label a whole utterance rather than spot a word in a window: an intent
(wav2vec2 on MINDS-14), a language (a Whisper encoder). The utterance is the voiced stretch the
endpointer closes after `utterance.silence_after_ms` of silence, from `vad.pre_roll_ms` before its
first voiced frame; shorter than `utterance.min_ms` or longer than `utterance.max_ms`, it is not
classified. Its label fires as an event, with its score, when the score reaches the label's
threshold; events, hooks and metrics are those of the keyword modes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.vad import VadGate
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent, threshold_vector
from kws_daemon.embedding import EmbeddingParams, SpeechEmbedding
from kws_daemon.endpointer import Endpointer, EndpointerConfig, Segment
from kws_daemon.features import Fbank, FbankParams, centred, int16_to_float, pad_and_normalise
from kws_daemon.frontends import (
    ClapInput,
    ClapParams,
    WaveformParams,
    WhisperInput,
    WhisperParams,
    waveform_input,
)
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Frontend, Model, is_background_label
from kws_daemon.pipeline import RATE, PipelineCounters


class UtteranceInput:
    """One utterance or clip (int16, 16 kHz) as a model's input row, by its front end (a CLAP
    model's at 48 kHz, for `eval`'s clips; a speech-embedding head's, whose backbone is in
    `directory`, with the clip in the middle of its window)."""

    def __init__(self, frontend: Frontend, directory: Path | None = None) -> None:
        self._frontend = frontend
        self._embedding: SpeechEmbedding | None = None
        if isinstance(frontend, EmbeddingParams):
            if directory is None:
                raise ValueError("a speech-embedding front end needs its model directory")
            self._embedding = SpeechEmbedding(directory, frontend)
        self._fbank = Fbank(frontend.num_mel_bins) if isinstance(frontend, FbankParams) else None
        self._whisper = WhisperInput(frontend) if isinstance(frontend, WhisperParams) else None
        self._clap = ClapInput(frontend) if isinstance(frontend, ClapParams) else None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._embedding is not None:
            return self._embedding.clip(samples)
        if isinstance(self._frontend, FbankParams):
            assert self._fbank is not None
            return pad_and_normalise(self._fbank(int16_to_float(centred(samples))), self._frontend)
        if self._whisper is not None:
            return self._whisper(samples)
        if self._clap is not None:
            at_rate = Resampler(RATE, self._clap.params.sample_rate)(samples, last=True)
            return self._clap(at_rate.astype(np.float32) / 32768)
        assert isinstance(self._frontend, WaveformParams)
        return waveform_input(samples, self._frontend)


class UtterancePipeline:
    """Audio blocks in, one event per classified utterance out; the same surface as Pipeline."""

    def __init__(
        self, config: Config, model: Model, source: str = "", stats: LatencyStats | None = None
    ) -> None:
        info = model.info
        self.model, self.source = model, source
        self.stats = stats if stats is not None else LatencyStats()
        self.counters = PipelineCounters()
        u, vad = config.utterance, config.vad
        self._vad = VadGate(vad.aggressiveness, vad.frame_ms, vad.hangover_ms)
        self._limits = EndpointerConfig(
            silence_before_ms=0,
            silence_after_ms=u.silence_after_ms,
            min_word_ms=u.min_ms,
            max_word_ms=u.max_ms,
            core_db=100,  # an utterance is as long as its voice, quiet parts and all
        )
        self._endpointer = Endpointer(self._limits, RATE * vad.frame_ms // 1000)
        self._pre_roll = RATE * vad.pre_roll_ms // 1000
        self._keep = RATE * u.max_ms // 1000 + self._pre_roll + RATE  # the longest utterance, and more
        self._audio = np.zeros(0, np.int16)
        self._first = 0  # stream sample index of _audio[0]
        self._labels = info.labels
        self._threshold = threshold_vector(info.labels, config.keyword_thresholds(info))
        self._background = np.array([is_background_label(label) for label in info.labels])
        self._input = UtteranceInput(info.frontend, info.path)
        self._resampler: Resampler | None = None

    def process(self, block: AudioBlock) -> list[KeywordEvent]:
        self.stats.observe("queue", (time.monotonic() - block.t_mono) * 1000)
        if self._resampler is None or self._resampler.in_rate != block.sample_rate:
            self._resampler = Resampler(block.sample_rate, RATE)
        return self._consume(self._resampler(block.samples), block.t_mono, block.t_wall)

    def flush(self) -> list[KeywordEvent]:
        tail = self._resampler(np.zeros(0, np.int16), last=True) if self._resampler else np.zeros(0, np.int16)
        events = self._consume(tail, time.monotonic(), time.time())
        return events + self._decide(self._endpointer.finish(), time.monotonic(), time.time())

    def _consume(self, samples: np.ndarray, t_mono: float, t_wall: float) -> list[KeywordEvent]:
        self.counters.blocks += 1
        self.counters.samples += len(samples)
        t0 = time.monotonic()
        if self._vad(samples):
            self.counters.gate_open_blocks += 1
        self.stats.observe("vad", (time.monotonic() - t0) * 1000)
        self._audio = np.concatenate([self._audio, samples])
        if len(self._audio) > self._keep:
            self._first += len(self._audio) - self._keep
            self._audio = self._audio[-self._keep :]
        return self._decide(self._endpointer(self._vad.decisions, self._vad.levels), t_mono, t_wall)

    def _decide(self, segments: list[Segment], t_mono: float, t_wall: float) -> list[KeywordEvent]:
        events = []
        for segment in segments:
            if not segment.is_command(self._limits):
                continue
            start = max(segment.start - self._pre_roll, self._first) - self._first
            audio = self._audio[start : segment.end - self._first]
            t_a = time.monotonic()
            posteriors = self.model(self._input(audio)[None])[0]
            self.stats.observe("inference", (time.monotonic() - t_a) * 1000)
            self.counters.windows += 1
            best = int(np.argmax(np.where(self._background, -1.0, posteriors)))
            if posteriors[best] < self._threshold[best] or self._background[best]:
                continue
            behind_s = max(0.0, (self.counters.samples - segment.end) / RATE)
            latency = (time.monotonic() - (t_mono - behind_s)) * 1000
            self.stats.observe("keyword_end_to_event", latency)
            events.append(
                KeywordEvent(
                    keyword=self._labels[best],
                    score=float(posteriors[best]),
                    time_s=segment.end / RATE,
                    t_wall=t_wall - behind_s,
                    t_mono=t_mono - behind_s,
                    source=self.source,
                    latency_ms={"keyword_end_to_event": latency},
                )
            )
        return events
