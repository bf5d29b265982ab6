from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_WAV = ROOT / "demo" / "demo.wav"
# the AST that shipped before the speech-embedding head: AST-specific tests run on it
AST_MODEL = ROOT / "models" / "ast"
KWS_REAL = Path(os.environ.get("KWS_REAL_DATA", ROOT.parent / "shared" / "data" / "kws-real"))


def kws(*args: str, input: bytes | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Runs the real command line in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kws_daemon", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=kw.pop("cwd", ROOT),
        **kw,
    )


@pytest.fixture
def kws_real() -> Path:
    if not (KWS_REAL / "manifest.tsv").is_file():
        pytest.skip(f"real recordings not found at {KWS_REAL} (set KWS_REAL_DATA or provide ../shared/data)")
    return KWS_REAL
