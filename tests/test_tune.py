"""`kws-daemon tune`: thresholds from the user's own negatives, as a config snippet that loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kws_daemon.cli import main
from kws_daemon.config import _Loader as Loader  # the daemon's own YAML reading (yes/no are words)
from kws_daemon.config import parse
from kws_daemon.detector import KeywordEvent
from kws_daemon.operating import OperatingPoint, calibrate, false_accepts_at, recall_at
from tests.conftest import DEMO_WAV


def _e(keyword: str) -> KeywordEvent:
    return KeywordEvent(keyword, 0.9, 1.0, 0.0, 0.0)


def test_calibrate_gives_each_keyword_the_lowest_threshold_within_its_share() -> None:
    thresholds = [0.5, 0.7, 0.9]
    runs = [[_e("yes")] * 3 + [_e("no")], [_e("yes")] * 2, []]
    # 2 h, 1 false accept/h in all, two words: one event each is allowed
    assert calibrate(thresholds, runs, 2.0, 1.0, ["yes", "no"]) == {"yes": 0.9, "no": 0.5}
    # three words: a share of 2/3 of an event, so "no" must not fire at all
    assert calibrate(thresholds, runs, 2.0, 1.0, ["yes", "no", "up"]) == {"yes": 0.9, "no": 0.7, "up": 0.5}
    assert calibrate(thresholds, runs, 2.0, 1.0, ["yes", "no"], floor=0.7) == {"yes": 0.9, "no": 0.7}


def test_operating_figures() -> None:
    curve = [OperatingPoint(0.5, 0.02, 3.0), OperatingPoint(0.8, 0.06, 0.4), OperatingPoint(0.9, 0.2, 0.0)]
    assert recall_at(curve, 0.5) == pytest.approx(0.94)
    assert false_accepts_at(curve, 0.05) == 3.0
    assert false_accepts_at(curve, 0.01) is None


def test_tune_raises_the_words_that_fire_on_the_negatives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """demo.wav says yes, stop, go and up: as negatives, those four must be raised above their
    scores and the others keep the lowest threshold; the snippet loads as a config."""
    out = tmp_path / "tune.json"
    assert main(["tune", "--negatives", str(DEMO_WAV), "--target", "0.5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    thresholds = result["thresholds"]
    assert {w for w, t in thresholds.items() if t > 0.3} == {"yes", "stop", "go", "up"}
    assert result["false_accepts_per_hour"] == 0.0
    import yaml

    config = parse(yaml.load(capsys.readouterr().out, Loader=Loader))
    assert config.detector.mode == "commands"
    assert {k.name: k.threshold for k in config.keywords or ()} == thresholds


def test_tune_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--negatives", str(tmp_path / "none.wav")]) == 2
    assert capsys.readouterr().err.strip().endswith("no such file")
