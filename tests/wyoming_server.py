"""`kws-daemon serve` in a subprocess, and a client's side of Wyoming, for the tests that talk to it."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.event import Event
from wyoming.ping import Ping
from wyoming.wake import Detect, Detection

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`kws-daemon serve` in a subprocess, with a jsonl hook and /metrics."""

    def __init__(
        self,
        tmp: Path,
        serve: str = "",
        uri: str | None = None,
        extra: str = "",
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """`args`: more of serve's command line (--model DIR, --threshold T)."""
        self.port = free_port()
        self.metrics_port = free_port()
        self.uri = uri or f"tcp://127.0.0.1:{self.port}"
        self.events = tmp / "events.jsonl"
        config = tmp / "serve.yaml"
        config.write_text(
            f"serve: {{uri: '{self.uri}', {serve}}}\n"
            f"hooks: [{{jsonl: {self.events}}}]\n"
            f"metrics: {{listen: '127.0.0.1:{self.metrics_port}'}}\n" + extra
        )
        self.log = tmp / "serve.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kws_daemon", "serve", "--config", str(config), *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while "serving" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self._log.close()
        return rc


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def chunks(audio: np.ndarray, rate: int, width: int = 2, channels: int = 1, size: int = 1024) -> list[Event]:
    return [
        AudioChunk(rate=rate, width=width, channels=channels, audio=audio[i : i + size].tobytes()).event()
        for i in range(0, len(audio), size)
    ]


async def read_until(client: AsyncClient, kind: str, timeout: float = 30) -> list[Event]:
    """Events up to and including the first of type `kind`."""
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        assert event is not None, f"connection closed before {kind}"
        events.append(event)
        if event.type == kind:
            return events


async def one_run(port: int, events: list[Event], names: list[str] | None = None) -> list[Event]:
    """Home Assistant's pattern: one connection per pipeline run, ended by audio-stop."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=names).event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for event in events:
            await client.write_event(event)
        await client.write_event(AudioStop().event())
        await client.write_event(Ping(text="end").event())
        return await read_until(client, "pong")


def detections(events: list[Event]) -> list[tuple[str, int]]:
    return [
        (d.name, d.timestamp)
        for d in (Detection.from_event(e) for e in events if Detection.is_type(e.type))
        if d.name is not None and d.timestamp is not None
    ]


def raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Sends raw bytes; returns what came back until the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # a truncated event is truncated for good
        except (BrokenPipeError, ConnectionResetError):
            return b""
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


# what a broken or hostile client sends, and a word of the log line that closes its connection
HOSTILE = [
    (b'{"type": "audio-chunk", "payload_length": 1000000000000}\n', "at most"),
    (b'{"type": "audio-chunk", "data_length": 99999999999}\n', "at most"),
    (b"not json at all\n", "malformed"),
    (b"[1, 2, 3]\n", "bad event"),
    (b'{"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 2}\nab', "bad event"),
    (
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 7, "channels": 1}, '
        b'"payload_length": 2}\nab',
        "not supported",
    ),
    (
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
        b'"payload_length": 3}\nabc',
        "whole frames",
    ),
    (b'{"type": "detect", "data": {"names": "stop"}}\n', "list of strings"),
    (b'{"type": "audio-start", "data": {"rate": -5, "width": 2, "channels": 1}}\n', "not supported"),
    (b"x" * 70000 + b"\n", "64 KiB"),
    (b'{"type": "audio-chunk", "payload_length": 100}\n' + b"\0" * 10, "inside an event"),
]
