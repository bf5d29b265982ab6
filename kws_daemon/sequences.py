"""Wake-word sequences: "marvin" then "on" within two seconds is one event, "lights on".

Runs after the spotter, on its keyword events, so it works the same in every mode. A word that is
armed only because a sequence uses it is swallowed here: on its own it fires nothing.
"""

from __future__ import annotations

from dataclasses import replace

from kws_daemon.config import SequenceConfig
from kws_daemon.detector import KeywordEvent


class SequenceMatcher:
    def __init__(self, sequences: tuple[SequenceConfig, ...], reported: set[str] | None) -> None:
        """`reported`: the keywords whose own events pass through (None: all of them)."""
        self.sequences = sequences
        self._reported = reported
        self._progress = [0] * len(sequences)  # words matched so far, per sequence
        self._last: list[KeywordEvent | None] = [None] * len(sequences)
        self._scores: list[list[float]] = [[] for _ in sequences]

    def __call__(self, events: list[KeywordEvent]) -> list[KeywordEvent]:
        out = []
        for event in events:
            if self._reported is None or event.keyword in self._reported:
                out.append(event)
            for i, sequence in enumerate(self.sequences):
                done = self._advance(i, sequence, event)
                if done is not None:
                    out.append(done)
        return out

    def _advance(self, i: int, sequence: SequenceConfig, event: KeywordEvent) -> KeywordEvent | None:
        last = self._last[i]
        in_time = last is not None and event.time_s - last.time_s <= sequence.within_ms / 1000
        if self._progress[i] and in_time and event.keyword == sequence.words[self._progress[i]]:
            self._progress[i] += 1
            self._scores[i].append(event.score)
        elif event.keyword == sequence.words[0]:  # a (new) start
            self._progress[i], self._scores[i] = 1, [event.score]
        else:  # another word in between, or too late: start over
            self._progress[i], self._scores[i] = 0, []
        self._last[i] = event
        if self._progress[i] < len(sequence.words):
            return None
        score = min(self._scores[i])
        self._progress[i], self._scores[i] = 0, []
        return replace(event, keyword=sequence.name, score=score)
