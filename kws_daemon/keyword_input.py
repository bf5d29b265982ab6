"""A keyword model's input for the window ending at any frame of a stream: normalised log-mel
frames for an AST, the last embeddings for a speech-embedding head.

The spotters count time in the AST's 10 ms frames (kws_daemon.features); a window ending at frame
`end` ends at sample `frame_end_sample(end)` for either kind, so commands, running mode, sequences
and near misses work the same over both.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kws_daemon.embedding import EmbeddingParams, EmbeddingStore, SpeechEmbedding
from kws_daemon.features import FRAME_SHIFT, FrameStore, frame_count, frame_end_sample, pad_and_normalise
from kws_daemon.model import ModelInfo

RATE = 16000


class KeywordInput(Protocol):
    window_frames: int  # 10 ms frames that one window spans

    @property
    def n_frames(self) -> int: ...

    def push(self, samples: np.ndarray) -> None: ...

    def audio(self, start: int, end: int) -> np.ndarray: ...

    def window(self, end: int) -> np.ndarray: ...


class LogMelWindows:
    """An AST's windows: the frames of the last window_ms (at most max_length), normalised."""

    def __init__(self, info: ModelInfo, window_ms: int, spare_frames: int) -> None:
        self._params = info.fbank
        self.window_frames = min(frame_count(RATE * window_ms // 1000), self._params.max_length)
        self._store = FrameStore(self._params.num_mel_bins, self.window_frames + spare_frames)

    @property
    def n_frames(self) -> int:
        return self._store.n_frames

    def push(self, samples: np.ndarray) -> None:
        self._store.push(samples.astype(np.float32) / 32768.0)

    def audio(self, start: int, end: int) -> np.ndarray:
        return self._store.audio(start, end)

    def window(self, end: int) -> np.ndarray:
        frames = self._store.frames(max(0, end - self.window_frames), end)
        return pad_and_normalise(frames, self._params)


class EmbeddingWindows:
    """A speech-embedding head's windows: its last `frames` embeddings, each computed once."""

    def __init__(self, info: ModelInfo, spare_frames: int, threads: int = 1) -> None:
        params = info.frontend
        assert isinstance(params, EmbeddingParams)
        self.window_frames = params.window_samples // FRAME_SHIFT
        capacity = params.window_samples + (spare_frames + 8) * FRAME_SHIFT
        self.store = EmbeddingStore(SpeechEmbedding(info.path, params, threads), capacity)

    @property
    def n_frames(self) -> int:
        return frame_count(self.store.samples)

    def push(self, samples: np.ndarray) -> None:
        self.store.push(samples.astype(np.float32))

    def audio(self, start: int, end: int) -> np.ndarray:
        return self.store.audio(start, end) / 32768.0

    def window(self, end: int) -> np.ndarray:
        return self.store.window(frame_end_sample(end))


def keyword_input(info: ModelInfo, window_ms: int, spare_frames: int) -> KeywordInput:
    """`spare_frames`: how far back beyond one window the pipeline may still ask (pre-roll, blocks)."""
    if isinstance(info.frontend, EmbeddingParams):
        return EmbeddingWindows(info, spare_frames)
    return LogMelWindows(info, window_ms, spare_frames)
