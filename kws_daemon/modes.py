"""Which pipeline a detector.mode runs: keyword windows (commands, running), whole utterances, or
sound-event windows.

Both take audio blocks and give KeywordEvents, so the daemon, `detect`, `serve` and the benchmarks
drive either without knowing which.
"""

from __future__ import annotations

from typing import Protocol

from kws_daemon.audio.block import AudioBlock
from kws_daemon.config import Config
from kws_daemon.detector import KeywordEvent
from kws_daemon.metrics import LatencyStats
from kws_daemon.model import Model
from kws_daemon.nearmiss import NearMissRecorder
from kws_daemon.pipeline import Pipeline, PipelineCounters


class Stream(Protocol):
    model: Model
    source: str
    stats: LatencyStats
    counters: PipelineCounters

    def process(self, block: AudioBlock) -> list[KeywordEvent]: ...

    def flush(self) -> list[KeywordEvent]: ...


def make_pipeline(
    config: Config,
    model: Model,
    source: str = "",
    stats: LatencyStats | None = None,
    near_misses: NearMissRecorder | None = None,
) -> Stream:
    mode = config.mode_for(model.info)
    if mode == "utterances":
        from kws_daemon.utterances import UtterancePipeline

        return UtterancePipeline(config, model, source=source, stats=stats)
    if mode == "sounds":
        from kws_daemon.sounds import SoundPipeline

        return SoundPipeline(config, model, source=source, stats=stats)
    return Pipeline(config, model, source=source, stats=stats, near_misses=near_misses)
