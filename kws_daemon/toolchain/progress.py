"""Numbered steps with elapsed times on stderr: a full-size export spends minutes in a few long calls."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Steps:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Prints `[i/n] what ...` before the step and its duration (or `failed`) after it."""
        self.done += 1
        print(f"[{self.done}/{self.total}] {what} ...", end="", file=self._stream, flush=True)
        start = time.monotonic()
        try:
            yield
        except BaseException:
            print(" failed", file=self._stream, flush=True)
            raise
        print(f" {time.monotonic() - start:.1f} s", file=self._stream, flush=True)


@contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Holds loggers ("" is the root) at ERROR: third-party advice and retries would break the lines."""
    saved = [(logger, logger.level) for logger in map(logging.getLogger, loggers)]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
