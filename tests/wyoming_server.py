"""`kws-daemon serve` in a subprocess, for the tests that talk Wyoming to it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
    ) -> None:
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
            [sys.executable, "-m", "kws_daemon", "serve", "--config", str(config)],
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
