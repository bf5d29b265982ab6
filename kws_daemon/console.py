"""Terminal output for `bench` and `eval`: a progress bar on stderr and plain aligned tables.

No tqdm or rich: both commands must run on a Raspberry Pi with the runtime install alone.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from kws_daemon.errors import KwsError


class Progress:
    """`what [#####.....] 12/40 3s` on one stderr line, redrawn at most 10 times a second.

    On a pipe or a log (not a terminal) it prints only the finished line, so logs stay readable.
    """

    def __init__(self, what: str, total: float, unit: str = "", stream: TextIO | None = None) -> None:
        self.what = what
        self.total = max(total, 1e-9)
        self.unit = unit
        self.done = 0.0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._start = self._drawn = time.monotonic()

    def advance(self, amount: float = 1.0) -> None:
        self.done += amount
        now = time.monotonic()
        if self._tty and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw("\r", "")

    def close(self) -> None:
        self._draw("\r" if self._tty else "", "\n")

    def _draw(self, start: str, end: str) -> None:
        share = min(1.0, self.done / self.total)
        bar = "#" * round(share * 30)
        count = f"{self.done:.0f}/{self.total:.0f}{self.unit}"
        elapsed = time.monotonic() - self._start
        line = f"{start}{self.what} [{bar:.<30}] {count} {elapsed:.0f}s{end}"
        self._stream.write(line)
        self._stream.flush()


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing was measured
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _finite(value: Any) -> Any:
    """NaN (nothing measured) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(_finite(data), indent=2) + "\n")
    except OSError as e:
        raise KwsError(f"{path}: cannot write ({e})") from None
