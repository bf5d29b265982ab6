"""`kws-daemon run` on a live, real-time-paced microphone through real PortAudio."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.audio.sources import read_audio
from tests.conftest import DEMO_WAV, kws
from tests.virtual_mic import VirtualMic

pytestmark = [pytest.mark.live_audio, pytest.mark.slow]


@pytest.fixture
def mic():
    reason = VirtualMic.missing()
    if reason:
        pytest.skip(reason)
    with VirtualMic() as vm:
        yield vm


def _detections(lines: list[str]) -> list[tuple[str, float, float]]:
    return [(r["keyword"], r["time_s"], r["score"]) for r in map(json.loads, lines)]


def test_devices_lists_the_virtual_mic(mic: VirtualMic) -> None:
    result = kws("devices", "--json", env=mic.env)
    assert result.returncode == 0, result.stderr
    assert "pulse" in [d["name"] for d in json.loads(result.stdout)]


def test_live_hooks_equal_detect_on_the_same_audio(mic: VirtualMic, tmp_path: Path) -> None:
    events, record = tmp_path / "events.jsonl", tmp_path / "captured.wav"
    config = tmp_path / "config.yaml"
    config.write_text(f"detector: {{threshold: 0.0}}\nhooks: [{{jsonl: {events}}}]\n")
    daemon = mic.kws("run", "--config", str(config), "--device", "pulse", "--record", str(record))
    try:
        mic.wait_for_capture()
        time.sleep(0.3)
        started = time.monotonic()
        mic.play(DEMO_WAV)
        played_s = time.monotonic() - started
        time.sleep(1.5)  # the tail: hangover and the last windows
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err.decode()
    assert 7.5 < played_s < 12  # paced in real time (8.2 s of audio), not dumped at once

    # The capture path is bit-exact: the demo audio is inside what the daemon heard.
    demo, _ = read_audio(DEMO_WAV)
    heard, rate = read_audio(record)
    assert rate == 16000
    offset = int(np.flatnonzero(heard)[0])
    np.testing.assert_array_equal(heard[offset : offset + len(demo)], demo)

    live = _detections(events.read_text().splitlines())
    assert live, err.decode()
    offline = kws("detect", "--json", "--threshold", "0", str(record))
    assert offline.returncode == 0
    assert _detections(offline.stdout.decode().splitlines()) == live
    assert b"overflows" in err and b" 0 overflows" in err
