"""The capture device disappears under a running daemon and comes back: a real PulseAudio server (the
virtual microphone) is killed or stopped and a new one started on the same socket, while
`kws-daemon run` captures from it through real PortAudio and reports over a real NOTIFY_SOCKET and
/metrics."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_service import DaemonProcess, NotifySocket, free_port, metric, scrape, wait_until
from tests.virtual_mic import VirtualMic

pytestmark = [pytest.mark.live_audio, pytest.mark.slow]


@pytest.fixture
def mic(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualMic]:
    """A virtual mic whose server the daemon reaches: DaemonProcess passes os.environ on."""
    reason = VirtualMic.missing()
    if reason:
        pytest.skip(reason)
    with VirtualMic() as vm:
        for key in ("PULSE_SERVER", "PULSE_COOKIE", "PULSE_CLIENTCONFIG", "HOME"):
            monkeypatch.setenv(key, vm.env[key])
        yield vm


def audio_seconds(port: int) -> float:
    return metric(scrape(port), "kws_audio_seconds_total")


@pytest.mark.parametrize("kill", [True, False], ids=["killed", "stopped"])
def test_lost_device_is_reported_and_reopened_without_restart(
    mic: VirtualMic, tmp_path: Path, kill: bool
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"audio": {"device": "pulse"}, "metrics": {"listen": f"127.0.0.1:{port}"}}))
    notify = NotifySocket(str(tmp_path / "notify"))
    with DaemonProcess(config, notify, watchdog_usec=4_000_000) as daemon:
        notify.wait_for("READY=1")
        wait_until(lambda: audio_seconds(port) > 0.5, "no audio from the virtual mic")
        assert metric(scrape(port), "kws_audio_device_up") == 1

        mic.stop_server(kill=kill)  # the device is gone
        lost = notify.wait_for("STATUS=audio device lost: mic:pulse", timeout=5)
        daemon.wait_log(r"ERROR: audio device mic:pulse lost")
        samples = scrape(port)
        assert metric(samples, "kws_audio_device_up") == 0
        assert metric(samples, "kws_audio_device_errors_total") == 1
        before = audio_seconds(port)
        # While it reopens the device, the daemon lives, and keeps the watchdog fed: a restart could do
        # no better. The capture is not reported as a stall.
        during = lost + notify.collect(2.5)
        assert ["WATCHDOG=1"] in during
        assert not any(f.startswith("STATUS=stalled") for message in during for f in message)
        daemon.wait_log(r"WARNING: audio device mic:pulse: cannot reopen")
        assert daemon.proc.poll() is None and audio_seconds(port) == before

        mic.start()  # the device is back, on the same socket
        back = time.monotonic()
        wait_until(lambda: audio_seconds(port) > before + 0.3, "audio did not flow again", timeout=10)
        resumed_s = time.monotonic() - back
        assert resumed_s < 5.0, f"audio resumed {resumed_s:.1f}s after the device came back"
        notify.wait_for("STATUS=listening on mic:pulse", timeout=5)
        daemon.wait_log(r"INFO: audio device mic:pulse is back after")
        samples = scrape(port)
        assert metric(samples, "kws_audio_device_up") == 1
        assert metric(samples, "kws_audio_device_errors_total") == 1

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    notify.close()
