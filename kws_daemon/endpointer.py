"""Voiced segments from the VAD's frame decisions: where a spoken command starts and ends.

A command is a word said on its own: silence, about one word of voice, silence. A keyword inside a
sentence sits in a voiced stretch that is too long, or that has too little silence before it, so
it never makes a command segment however well the model knows the word. Pauses shorter than
`silence_after_ms` inside a segment (the closure of "six", a breath) do not end it, and a click
shorter than `min_word_ms` does not break the silence before the next word.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointerConfig:
    # at least this much silence before the word: readers and talkers pause 0.3-0.7 s inside and
    # between sentences, and one word after such a pause is where false accepts come from
    # (docs/benchmarks.md, "The endpointer against real speech")
    silence_before_ms: int = 1000
    silence_after_ms: int = 160  # this much silence ends the word: the latency it costs (webrtcvad
    # itself marks about 100 ms past a word's end as speech, so the audio's pause is longer)
    min_word_ms: int = 120
    max_word_ms: int = 1100


@dataclass(frozen=True)
class Segment:
    """A stretch of voice, in samples of the 16 kHz stream."""

    start: int
    end: int
    silence_before: int  # samples of silence before it (huge for the stream's first segment)

    def duration_ms(self, rate: int = 16000) -> float:
        return (self.end - self.start) * 1000 / rate

    def is_command(self, config: EndpointerConfig, rate: int = 16000, after_command: bool = False) -> bool:
        """About one word long, with silence before it (the silence after is what closed it).
        `after_command`: the segment before it was a command heard as a keyword, so the pause
        between the two is a speaker's pace through a sequence ("marvin, on"), not a sentence
        running on."""
        return (
            after_command or self.silence_before * 1000 >= config.silence_before_ms * rate
        ) and config.min_word_ms <= self.duration_ms(rate) <= config.max_word_ms


class Endpointer:
    """Streams VAD decisions (one per frame of `frame_samples`) into closed segments."""

    def __init__(self, config: EndpointerConfig, frame_samples: int, rate: int = 16000) -> None:
        self.config = config
        self._frame, self._rate = frame_samples, rate
        self._close_after = config.silence_after_ms * rate // 1000
        self._position = 0  # samples decided so far
        self._start: int | None = None  # the open segment's first voiced sample
        self._last_voice = 0  # end of the last voiced frame
        # end of the last closed segment; the stream's start counts as long silence (a file or a
        # microphone opened just before the word is no sentence running into it)
        self._previous_end = -(10**9)

    @property
    def is_open(self) -> bool:
        return self._start is not None

    def __call__(self, decisions: list[bool]) -> list[Segment]:
        closed = []
        for speech in decisions:
            self._position += self._frame
            if speech:
                if self._start is None:
                    self._start = self._position - self._frame
                self._last_voice = self._position
            elif self._start is not None and self._position - self._last_voice >= self._close_after:
                closed.append(self._close())
        return closed

    def finish(self) -> list[Segment]:
        """End of stream: the open segment, if any, closed at its last voice."""
        return [self._close()] if self._start is not None else []

    def _close(self) -> Segment:
        assert self._start is not None
        segment = Segment(self._start, self._last_voice, self._start - self._previous_end)
        if segment.duration_ms(self._rate) >= self.config.min_word_ms:  # a click keeps the silence
            self._previous_end = self._last_voice
        self._start = None
        return segment
