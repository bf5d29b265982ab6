"""examples/haproxy.cfg for real (issue 25): HAProxy in front of two `kws-daemon serve` processes on
loopback. Streams spread; a backend killed mid-stream loses only the words said while its clients
were cut off, they reconnect to the other and every word after that is found; the backend comes back
and takes load again; hostile clients are closed through the proxy as without it."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.ping import Ping
from wyoming.wake import Detect, Detection

from kws_daemon.audio.sources import read_audio
from tests.conftest import DEMO_WAV, ROOT
from tests.wyoming_server import HOSTILE, Server, free_port, raw, read_until, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt install haproxy)"),
]
DEMO = ["yes", "stop", "go", "up"]


class Dropped(Exception):
    """The connection went away in the middle of a run."""


def _config(port: int, backends: list[int], path: Path) -> Path:
    text = (ROOT / "examples" / "haproxy.cfg").read_text()
    text = text.replace("bind 0.0.0.0:10400", f"bind 127.0.0.1:{port}")
    for i, backend in enumerate(backends):
        text = re.sub(rf"server kws{i + 1} \S+", f"server kws{i + 1} 127.0.0.1:{backend}", text)
    path.write_text(text)
    return path


class Proxy:
    def __init__(self, tmp: Path, backends: list[int]) -> None:
        self.port = free_port()
        config = _config(self.port, backends, tmp / "haproxy.cfg")
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = tmp / "haproxy.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log.read_text())) < count:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


async def _paced_run(port: int, audio: np.ndarray) -> list[str]:
    """One pipeline run as Home Assistant makes it, the audio sent at the pace it is spoken."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        found: list[str] = []

        async def receive() -> bool:
            while (event := await client.read_event()) is not None:
                if Detection.is_type(event.type):
                    found.append(Detection.from_event(event).name or "")
                elif event.type == "pong":
                    return True
            return False

        await client.write_event(Detect().event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        reader = asyncio.create_task(receive())
        start = time.monotonic()
        for i in range(0, len(audio), 1024):
            await asyncio.sleep(max(0.0, start + (i + 1024) / 16000 - time.monotonic()))
            if reader.done():
                raise Dropped
            chunk = AudioChunk(rate=16000, width=2, channels=1, audio=audio[i : i + 1024].tobytes())
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        await client.write_event(Ping().event())
        if not await asyncio.wait_for(reader, 30):
            raise Dropped
        return found


async def _reconnect(port: int) -> float:
    """The moment (monotonic) a new connection through the proxy answers a ping."""
    while True:
        try:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Ping().event())
                await read_until(client, "pong", timeout=2)
                return time.monotonic()
        except (OSError, AssertionError, TimeoutError):
            await asyncio.sleep(0.05)


async def _speaker(port: int, audio: np.ndarray, runs: int) -> tuple[list[list[str]], list[float]]:
    """`runs` pipeline runs; a run cut off is given up (its words were said to no one) and the
    speaker reconnects and starts the next."""
    done: list[list[str]] = []
    reconnects: list[float] = []
    while len(done) + len(reconnects) < runs:
        try:
            done.append(await _paced_run(port, audio))
        except (Dropped, OSError, asyncio.IncompleteReadError):
            reconnects.append(await _reconnect(port))
    return done, reconnects


Spoken = tuple[list[list[str]], list[float]]  # each run's detections, and when it reconnected


async def _speakers(port: int, audio: np.ndarray, n: int, runs: int) -> list[Spoken]:
    return list(await asyncio.gather(*(_speaker(port, audio, runs) for _ in range(n))))


def _streams_of(server: Server) -> int:
    match = re.search(r"^kws_wyoming_streams (\d+)", server.metrics(), re.M)
    assert match, server.metrics()
    return int(match[1])


def _audio_s(server: Server) -> float:
    match = re.search(r"^kws_audio_seconds_total (\S+)", server.metrics(), re.M)
    return float(match[1]) if match else 0.0


def test_haproxy_spreads_streams_and_survives_a_backend(tmp_path: Path) -> None:
    audio, _ = read_audio(DEMO_WAV)
    audio = audio[: 16000 * 8]  # the four words, 8 s
    ports = [free_port(), free_port()]
    for i in range(2):
        (tmp_path / f"b{i}").mkdir()
    servers = [
        Server(tmp_path / f"b{i}", uri=f"tcp://127.0.0.1:{p}", serve="workers: 1")
        for i, p in enumerate(ports)
    ]
    proxy = Proxy(tmp_path, ports)
    try:
        time.sleep(2.5)  # both checked healthy (rise 2, every second)
        assert "is DOWN" not in proxy.log.read_text()

        # 1. eight streams at once, spread by least connections
        task_results: list[Spoken] = []

        async def spread() -> list[int]:
            job = asyncio.create_task(_speakers(proxy.port, audio, 8, 1))
            await asyncio.sleep(3)
            streams = [_streams_of(s) for s in servers]
            task_results.extend(await job)
            return streams

        per_backend = run(spread())
        print(f"streams per backend with 8 at once: {per_backend}")
        assert sorted(per_backend) == [4, 4]
        assert [done for done, _ in task_results] == [[DEMO]] * 8

        # 2. one backend killed mid-stream: its clients reconnect to the other
        killed: list[float] = []

        async def kill_one() -> list[Spoken]:
            job = asyncio.create_task(_speakers(proxy.port, audio, 6, 3))
            await asyncio.sleep(4)
            killed.append(_streams_of(servers[0]))
            servers[0].proc.kill()
            killed.append(time.monotonic())
            return await job

        results = run(kill_one())
        servers[0].proc.wait(10)
        on_killed, killed_at = killed
        reconnects = [t - killed_at for _, r in results for t in r]
        completed = [found for done, _ in results for found in done]
        lost = sum(len(set(DEMO) - set(found)) for found in completed)
        print(
            f"killed backend (streams on it: {on_killed:g}): {len(reconnects)} streams cut off and "
            f"reconnected, {max(reconnects):.2f}s after the kill at most "
            f"(median {np.median(reconnects):.2f}s); "
            f"{len(completed)} runs after it, detections lost: {lost}"
        )
        assert on_killed >= 2 and len(reconnects) == on_killed  # each of its streams cut once
        assert lost == 0 and len(completed) == 6 * 3 - on_killed
        assert max(reconnects) < 5

        # 3. the backend comes back and takes load again
        proxy.wait_for(r"Server kws/kws1 is DOWN")
        ups = proxy.log.read_text().count("Server kws/kws1 is UP")
        servers[0] = Server(tmp_path / "b0", uri=f"tcp://127.0.0.1:{ports[0]}", serve="workers: 1")
        proxy.wait_for(r"Server kws/kws1 is UP", ups + 1)
        before = _audio_s(servers[0])
        back = run(_speakers(proxy.port, audio, 4, 1))
        assert [done for done, _ in back] == [[DEMO]] * 4
        assert _audio_s(servers[0]) - before >= 2 * 7.9  # at least two of the four streams

        # 4. a hostile client is closed through the proxy as it is without it
        for data, why in HOSTILE:
            t0 = time.monotonic()
            raw(proxy.port, data)
            assert time.monotonic() - t0 < 4, why
        deadline = time.monotonic() + 5
        while missing := [
            why for _, why in HOSTILE if why not in "".join(s.log.read_text() for s in servers)
        ]:
            assert time.monotonic() < deadline, missing
            time.sleep(0.05)
        assert run(_speakers(proxy.port, audio, 1, 1))[0][0] == [DEMO]
    finally:
        proxy.stop()
        for server in servers:
            if server.proc.poll() is None:
                server.stop()
