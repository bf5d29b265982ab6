"""wyoming-satellite (PyPI) as a real satellite: its microphone is the paced virtual mic, its wake
service is `kws-daemon serve`, and this test plays Home Assistant to it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from wyoming.asr import Transcript
from wyoming.client import AsyncTcpClient
from wyoming.pipeline import RunPipeline
from wyoming.satellite import RunSatellite

from tests.conftest import DEMO_WAV, ROOT, kws
from tests.virtual_mic import VirtualMic
from tests.wyoming_server import Server, free_port

pytestmark = [pytest.mark.live_audio, pytest.mark.slow]

# wyoming-satellite 1.0.0 pins wyoming 1.4.1, so it lives in its own venv (.ci/run makes it)
SATELLITE_PYTHON = Path(
    os.environ.get("KWS_SATELLITE_PYTHON", ROOT / "build" / "wyoming-satellite" / "bin" / "python")
)


def _satellite_missing() -> str | None:
    if not SATELLITE_PYTHON.exists():
        return (
            f"wyoming-satellite not found at {SATELLITE_PYTHON} (python3 -m venv build/wyoming-satellite && "
            "build/wyoming-satellite/bin/pip install wyoming-satellite==1.0.0, or set KWS_SATELLITE_PYTHON)"
        )
    if shutil.which("parec") is None:
        return "parec not found (apt-get install pulseaudio-utils): the satellite's microphone command"
    return VirtualMic.missing()


async def _home_assistant(port: int, runs: list[float], stop: asyncio.Event) -> None:
    """Connects to the satellite as Home Assistant does, and ends each pipeline run at once."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client = AsyncTcpClient("127.0.0.1", port)
            await client.connect()
            break
        except OSError:
            assert time.monotonic() < deadline, "the satellite did not start"
            await asyncio.sleep(0.2)
    try:
        await client.write_event(RunSatellite().event())
        while not stop.is_set():
            try:
                event = await asyncio.wait_for(client.read_event(), 0.2)
            except TimeoutError:
                continue
            assert event is not None, "the satellite hung up"
            if RunPipeline.is_type(event.type):  # a wake word: answer as if the command were done
                runs.append(time.monotonic())
                await client.write_event(Transcript(text="").event())
    finally:
        await client.disconnect()


def test_satellite_detections_equal_detect(tmp_path: Path) -> None:
    reason = _satellite_missing()
    if reason:
        pytest.skip(reason)
    expected = [
        json.loads(line)["keyword"] for line in kws("detect", "--json", str(DEMO_WAV)).stdout.splitlines()
    ]
    assert len(expected) >= 3
    detections = tmp_path / "detections.txt"
    server = Server(tmp_path)
    satellite_port = free_port()
    with VirtualMic() as mic:
        satellite = subprocess.Popen(
            [
                str(SATELLITE_PYTHON),
                "-m",
                "wyoming_satellite",
                "--uri",
                f"tcp://127.0.0.1:{satellite_port}",
                "--mic-command",
                "parec --format=s16le --rate=16000 --channels=1 --latency-msec=20",
                "--wake-uri",
                server.uri,
                "--detection-command",
                f"sh -c 'cat >> {detections}; echo >> {detections}'",
                "--debug",
            ],
            env=mic.env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "satellite.log").open("wb"),
        )
        runs: list[float] = []

        async def session() -> None:
            stop = asyncio.Event()
            ha = asyncio.create_task(_home_assistant(satellite_port, runs, stop))
            await asyncio.to_thread(mic.wait_for_capture)
            await asyncio.sleep(1.0)  # the satellite connects to the wake service and sends detect
            await asyncio.to_thread(mic.play, DEMO_WAV)
            await asyncio.sleep(2.0)  # the last word's silence, the endpointer, the detection
            stop.set()
            await ha

        try:
            asyncio.run(asyncio.wait_for(session(), 120))
        finally:
            satellite.terminate()
            satellite.wait(10)
    assert server.stop() == 0, server.log.read_text()
    log = (tmp_path / "satellite.log").read_text()
    found = detections.read_text().split() if detections.exists() else []
    assert found == expected, log[-3000:] + server.log.read_text()[-3000:]
    assert len(runs) == len(expected)  # each detection started one pipeline run on the satellite
