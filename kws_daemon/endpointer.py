"""Voiced segments from the VAD's frame decisions: where a spoken command starts and ends.

A command is a word said on its own: silence, about one word of voice, silence. A keyword inside a
sentence sits in a voiced stretch that is too long, or that has too little silence before it, so
it never makes a command segment however well the model knows the word. Pauses shorter than
`silence_after_ms` inside a segment (the closure of "six", a breath) do not end it, and a click
shorter than `min_word_ms` does not break the silence before the next word.

With the VAD's frame levels, loudness decides two things the VAD's yes/no cannot. A word is as
long as its frames near its loudest (`core_db`): a noise floor the VAD voices around the word
lengthens the segment, not the word. And, where asked, voice far quieter than the word
(`quieter_db`) does not break the silence before it: room noise the VAD takes for speech, dishes
or a fan, sits well below a word said to the device, while the words of a sentence sit within a
few dB of each other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
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
    # 100 (off): any voice breaks the silence before a word. 10 won back 1-3 points of misses in
    # room noise and let in 3 more false accepts in 1.52 h of speech (docs/benchmarks.md): opt in
    quieter_db: float = 100.0
    core_db: float = 20.0  # 100: a word is as long as its segment


@dataclass(frozen=True)
class Segment:
    """A stretch of voice, in samples of the 16 kHz stream."""

    start: int
    end: int
    silence_before: int  # samples since voice that is not far quieter (huge for the stream's first segment)
    peak_db: float  # its loudest frame, dBFS
    word: int  # samples from its first to its last frame within core_db of its loudest

    def duration_ms(self, rate: int = 16000) -> float:
        return (self.end - self.start) * 1000 / rate

    def word_ms(self, rate: int = 16000) -> float:
        return self.word * 1000 / rate

    def is_command(self, config: EndpointerConfig, rate: int = 16000, after_command: bool = False) -> bool:
        """About one word long, with silence before it (the silence after is what closed it).
        `after_command`: the segment before it was a command heard as a keyword, so the pause
        between the two is a speaker's pace through a sequence ("marvin, on"), not a sentence
        running on."""
        return (
            after_command or self.silence_before * 1000 >= config.silence_before_ms * rate
        ) and config.min_word_ms <= self.word_ms(rate) <= config.max_word_ms


class Endpointer:
    """Streams VAD decisions (one per frame of `frame_samples`), with the frames' levels in dBFS
    where known, into closed segments."""

    def __init__(self, config: EndpointerConfig, frame_samples: int, rate: int = 16000) -> None:
        self.config = config
        self._frame, self._rate = frame_samples, rate
        self._close_after = config.silence_after_ms * rate // 1000
        self._position = 0  # samples decided so far
        self._start: int | None = None  # the open segment's first voiced sample
        self._last_voice = 0  # end of the last voiced frame
        self._levels: list[float] = []  # of the open segment's frames, to its last voiced one
        # (end, peak dBFS) of the words closed within silence_before_ms; before them, the end of
        # the last one forgotten. The stream's start counts as long silence (a file or a
        # microphone opened just before the word is no sentence running into it)
        self._recent: deque[tuple[int, float]] = deque()
        self._forgotten = -(10**9)

    @property
    def is_open(self) -> bool:
        return self._start is not None

    def __call__(self, decisions: list[bool], levels: Sequence[float] | None = None) -> list[Segment]:
        closed = []
        for i, speech in enumerate(decisions):
            self._position += self._frame
            if speech and self._start is None:
                self._start, self._levels = self._position - self._frame, []
            if self._start is None:
                continue
            self._levels.append(0.0 if levels is None else levels[i])
            if speech:
                self._last_voice = self._position
            elif self._position - self._last_voice >= self._close_after:
                closed.append(self._close())
        return closed

    def finish(self) -> list[Segment]:
        """End of stream: the open segment, if any, closed at its last voice."""
        return [self._close()] if self._start is not None else []

    def _close(self) -> Segment:
        assert self._start is not None
        start, end, config = self._start, self._last_voice, self.config
        levels = self._levels[: (end - start) // self._frame]
        peak = max(levels)
        near = [i for i, level in enumerate(levels) if level >= peak - config.core_db]
        word = (near[-1] - near[0] + 1) * self._frame
        horizon = start - config.silence_before_ms * self._rate // 1000
        while self._recent and self._recent[0][0] < horizon:
            self._forgotten = self._recent.popleft()[0]
        loud = [e for e, p in self._recent if p > peak - config.quieter_db]
        segment = Segment(start, end, start - max(loud, default=self._forgotten), peak, word)
        if segment.duration_ms(self._rate) >= config.min_word_ms:  # a click keeps the silence
            self._recent.append((end, peak))
        self._start = None
        return segment
