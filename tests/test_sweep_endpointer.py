"""scripts/sweep-endpointer: the DET points behind the endpointer's defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KWS_REAL, ROOT

OCEAN = Path(os.environ.get("KWS_OCEAN_DATA", ROOT.parent / "shared" / "data" / "speech-ocean"))


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "scripts" / "sweep-endpointer"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.mark.parametrize("setting", ["1000/160", "1000/160/1100/10", "1000/160/1100/ten/20"])
def test_a_bad_setting_is_a_one_line_error(setting: str) -> None:
    result = sweep(setting)
    assert result.returncode == 2
    assert "expected BEFORE/AFTER/MAX_WORD in ms" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_is_a_one_line_error(tmp_path: Path) -> None:
    result = sweep("--real-data", str(tmp_path), "1000/160/1100")
    assert result.returncode == 2
    assert result.stderr.strip() == f"sweep-endpointer: {tmp_path}/manifest.tsv not found"


@pytest.mark.slow
@pytest.mark.real_data
def test_higher_thresholds_trade_misses_for_false_accepts() -> None:
    for root in (KWS_REAL, OCEAN):
        if not (root / "manifest.tsv").is_file():
            pytest.skip(f"needs {root}/manifest.tsv (provide ../shared/data)")
    result = sweep("--real-data", str(KWS_REAL), "--ocean-data", str(OCEAN), "1000/160/1100")
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| 1000 / 160")]
    assert [float(r[1]) for r in rows] == [0.5, 0.7, 0.8, 0.9]
    misses = [float(r[3].rstrip(" %")) for r in rows]  # half B
    false_accepts = [float(r[7]) for r in rows]
    assert misses == sorted(misses) and 0 < misses[0] < 100
    assert false_accepts == sorted(false_accepts, reverse=True)
