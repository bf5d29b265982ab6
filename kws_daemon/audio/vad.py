"""Voice-activity gate: the model runs only while someone may be speaking.

webrtcvad's GMM costs microseconds per 30 ms frame, against milliseconds for a transformer window,
so gating is what keeps the daemon near 0 % CPU in a silent room. The gate opens on the first
speech frame and stays open for `hangover_ms` after the last one, so the end of a word (often
unvoiced, "six", "stop") is still seen. Windows are look-back views, and the pipeline re-examines
the `pre_roll_ms` before an onset, so the start of a word is never lost to VAD latency.
"""

from __future__ import annotations

import numpy as np

from kws_daemon.audio.level import level_dbfs


class VadGate:
    def __init__(
        self, aggressiveness: int = 3, frame_ms: int = 30, hangover_ms: int = 500, sample_rate: int = 16000
    ) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame = sample_rate * frame_ms // 1000
        self._hangover = sample_rate * hangover_ms // 1000
        self._sample_rate = sample_rate
        self._pending = np.empty(0, dtype=np.int16)
        self._last_speech_end: int | None = None
        self.onset: int | None = None  # first speech sample of the current open stretch
        self.speech_frames = 0
        self.frames = 0
        self.frame_samples = self._frame
        self.decisions: list[bool] = []  # speech or not, per frame classified by the last call
        self.levels: list[float] = []  # and each frame's level, dBFS (kws_daemon.endpointer)
        self.seen = 0  # samples classified so far (the end of the last decision)

    def __call__(self, samples: np.ndarray) -> bool:
        """Classifies the new samples; True while the gate is open at the end of them."""
        self._pending = np.concatenate([self._pending, samples])
        n_frames = len(self._pending) // self._frame
        self.decisions, self.levels = [], []
        for i in range(n_frames):
            frame = self._pending[i * self._frame : (i + 1) * self._frame]
            start = self.seen
            self.seen += self._frame
            self.frames += 1
            speech = self._vad.is_speech(frame.tobytes(), self._sample_rate)
            self.decisions.append(speech)
            self.levels.append(level_dbfs(frame))
            if speech:
                self.speech_frames += 1
                if not self._open_at(start):
                    self.onset = start
                self._last_speech_end = self.seen
        self._pending = self._pending[n_frames * self._frame :]
        is_open = self._open_at(self.seen)
        if not is_open:
            self.onset = None
        return is_open

    def _open_at(self, sample: int) -> bool:
        return self._last_speech_end is not None and sample <= self._last_speech_end + self._hangover


class AlwaysOpen:
    """Stands in for the gate when `vad.enabled` is false (evaluation of pre-cut clips, benchmarks)."""

    onset: int | None = 0
    speech_frames = 0
    frames = 0

    def __call__(self, samples: np.ndarray) -> bool:
        return True
