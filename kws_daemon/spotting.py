"""The two ways windows become keyword hits: every hop while voiced (`running`), or once per
spoken command (`commands`).

Both get their posteriors from the pipeline's `score(end_frame)`, which computes the log-mel frames
and runs the model for the window ending at that frame, so neither knows about features or ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kws_daemon.audio.vad import AlwaysOpen, VadGate
from kws_daemon.detector import Detector, threshold_vector
from kws_daemon.endpointer import Endpointer, EndpointerConfig, Segment
from kws_daemon.features import FRAME_SHIFT, frame_end_sample

GRID_LAG = 2  # a frame ends 15 ms past its 10 ms slot: 1.5 frames, rounded up
Score = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class Hit:
    keyword: str
    score: float
    end_frame: int  # the detecting window's end
    word_end: int  # sample at which the keyword's audio ends: the voiced end, or the window's


class SlidingWindows:
    """A window every hop while the VAD gate is open, through the smoothing detector: a keyword
    anywhere in running speech fires."""

    def __init__(self, detector: Detector, window: int, hop: int, pre_roll: int) -> None:
        self.detector = detector
        self._window, self._hop, self._pre_roll = window, hop, pre_roll
        self._next_end = self._grid_end(1)  # frame count at which the next window ends
        self._last_end = 0  # end of the last evaluated window
        self._was_open = False

    def __call__(self, vad: VadGate | AlwaysOpen, is_open: bool, n_frames: int, score: Score) -> list[Hit]:
        ends = []
        if is_open:
            if not self._was_open and vad.onset is not None:
                onset_frame = max(0, vad.onset // FRAME_SHIFT - self._pre_roll)
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
        return self._evaluate(ends, score)

    def flush(self, n_frames: int, score: Score) -> list[Hit]:
        """End of stream: a last window on the final frame, if the gate was open."""
        if n_frames > self._last_end and self._was_open:
            return self._evaluate([n_frames], score)
        return []

    def _grid_end(self, frame: int) -> int:
        """The first window end at or after `frame` on the hop grid.

        The grid is phased so that a window's last sample falls just before a multiple of hop_ms:
        with blocks of hop_ms (or a multiple), each window is complete when its block arrives
        instead of waiting most of a block for the 15 ms by which a frame overhangs its hop.
        """
        return math.ceil((frame + GRID_LAG) / self._hop) * self._hop - GRID_LAG

    def _evaluate(self, ends: list[int], score: Score) -> list[Hit]:
        hits = []
        for end in ends:
            posteriors = score(end)
            if self._last_end and end > self._last_end + self._hop:
                self.detector.reset()
            self._last_end = end
            hit = self.detector(posteriors, frame_end_sample(end) / 16000)
            if hit:
                hits.append(Hit(hit[0], hit[1], end, frame_end_sample(end)))
        return hits


class Commands:
    """One decision per spoken command: when the endpointer closes a segment that is one word with
    silence around it, the windows holding it are scored and averaged; other speech is never
    scored at all, so running speech costs no inference either."""

    WINDOWS = 3  # windows averaged per command (by default), a hop apart, each ending after the word

    def __init__(
        self,
        labels: tuple[str, ...],
        thresholds: dict[str, float],
        config: EndpointerConfig,
        frame_samples: int,
        window: int,
        hop: int,
        tail: int | None = None,
        windows: int = WINDOWS,
    ) -> None:
        """`tail`: frames from the word's voiced end to the end of its last window, where the model
        wants the word to sit (kws.json `command_tail_ms`), waiting for them if the segment closed
        sooner; None: the audio's end when the segment closes. `windows`: how many are averaged
        (kws.json `command_windows`)."""
        self.labels = labels
        self._tail = tail
        self._windows = windows
        self._pending: list[Segment] = []  # closed, waiting for their tail
        self._threshold = threshold_vector(labels, thresholds)
        self.endpointer = Endpointer(config, frame_samples)
        self._config = config
        self._window, self._hop = window, hop
        self.segments = 0  # closed segments
        self.commands = 0  # of them, spoken as commands (scored)
        # the last segment closed was a command whose top label is an armed keyword, whatever its
        # score: so which windows get scored never depends on the thresholds (Replay, sweeps)
        self._after_heard = False

    def __call__(self, vad: VadGate | AlwaysOpen, is_open: bool, n_frames: int, score: Score) -> list[Hit]:
        self._pending += self.endpointer(getattr(vad, "decisions", []), getattr(vad, "levels", None))
        return self._due(n_frames, score, everything=False)

    def flush(self, n_frames: int, score: Score) -> list[Hit]:
        """End of stream: a word still open is taken as ended where the audio ends."""
        self._pending += self.endpointer.finish()
        return self._due(n_frames, score, everything=True)

    def _due(self, n_frames: int, score: Score, everything: bool) -> list[Hit]:
        """Decisions on the closed segments whose tail has arrived, in order."""
        hits = []
        while self._pending:
            segment = self._pending[0]
            if not everything and self._tail is not None and self._word_end(segment) + self._tail > n_frames:
                break
            self._pending.pop(0)
            if (hit := self._decide(segment, n_frames, score)) is not None:
                hits.append(hit)
        return hits

    @staticmethod
    def _word_end(segment: Segment) -> int:
        return segment.end // FRAME_SHIFT + 2

    def _decide(self, segment: Segment, n_frames: int, score: Score) -> Hit | None:
        self.segments += 1
        after_command, self._after_heard = self._after_heard, False
        if not segment.is_command(self._config, after_command=after_command):
            return None
        self.commands += 1
        word_end_frame = self._word_end(segment)
        last = n_frames if self._tail is None else min(n_frames, word_end_frame + self._tail)
        ends = [last - k * self._hop for k in range(self._windows)]
        ends = [e for e in ends if e >= word_end_frame and e - self._window <= segment.start // FRAME_SHIFT]
        if not ends:
            ends = [min(n_frames, max(word_end_frame, segment.start // FRAME_SHIFT + self._window))]
        posteriors = np.mean([score(e) for e in ends], axis=0)
        best = int(np.argmax(posteriors))
        self._after_heard = bool(np.isfinite(self._threshold[best]))
        if posteriors[best] < self._threshold[best]:
            return None
        return Hit(self.labels[best], float(posteriors[best]), ends[0], segment.end)
