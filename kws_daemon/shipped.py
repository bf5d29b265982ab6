"""Files that ship with kws-daemon: in the source tree, and inside the wheel (pyproject's force-include)."""

from __future__ import annotations

from pathlib import Path


def shipped(relative: str) -> Path:
    """`relative` inside the installed package (a wheel), else at the root of a source checkout
    (an editable install); where neither holds it, the checkout's path, for the error to name."""
    package = Path(__file__).resolve().parent
    for candidate in (package / relative, package.parent / relative):
        if candidate.exists():
            return candidate
    return package.parent / relative
