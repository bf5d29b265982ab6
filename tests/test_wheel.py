"""The wheel as a new user meets it: built, installed into a fresh venv, run from outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_WAV, ROOT

pytestmark = pytest.mark.slow
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KWS_DEBUG")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _pip(argv: list[str], cwd: Path) -> None:
    result = _run(argv, cwd, timeout=900)
    if result.returncode != 0 and any(sign in result.stderr for sign in OFFLINE):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_wheel_installs_into_a_fresh_venv_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist, venv, away = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    away.mkdir()
    _pip([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], away)
    (wheel,) = dist.glob("kws_daemon-*.whl")
    assert _run([sys.executable, "-m", "venv", str(venv)], away, timeout=300).returncode == 0
    python = str(venv / "bin" / "python")
    _pip([python, "-m", "pip", "install", "-q", str(wheel)], away)
    where = _run([python, "-c", "import kws_daemon; print(kws_daemon.__file__)"], away, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel, not the checkout

    kws = str(venv / "bin" / "kws-daemon")
    bench = _run([kws, "bench", "--duration", "5", "--idle", "2"], away, timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "stream generated: demo/demo.wav" in bench.stdout and "CPU s per audio s" in bench.stdout

    clip = shutil.copy(DEMO_WAV, away / "clip.wav")
    detect = _run([kws, "detect", "--json", str(clip)], away, timeout=120)
    assert detect.returncode == 0, detect.stderr[-3000:]
    assert [json.loads(line)["keyword"] for line in detect.stdout.splitlines()] == ["yes", "stop", "go", "up"]
