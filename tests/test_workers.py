"""`serve --workers N`: real worker processes behind one port, supervised by the parent (issue 25)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from kws_daemon.audio.sources import read_audio
from kws_daemon.workers import merge_metrics
from tests.conftest import DEMO_WAV, kws
from tests.notify_socket import NotifySocket
from tests.wyoming_server import Server, chunks, detections, one_run, read_until, run

pytestmark = pytest.mark.slow
DEMO = [("yes", 1500), ("stop", 3300), ("go", 5190), ("up", 6780)]  # what `detect` finds in demo.wav


def _pids(server: Server, after: int = 0) -> list[int]:
    """The workers' pids from the parent's latest "serving"/"reloaded" line at or after `after`."""
    deadline = time.monotonic() + 60
    while True:
        found = re.findall(r"workers \(pids ([\d, ]+)\)", server.log.read_text()[after:])
        if found:
            return [int(p) for p in found[-1].split(", ")]
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)


def _streams(port: int, n: int) -> list[list[tuple[str, int]]]:
    audio, rate = read_audio(DEMO_WAV)

    async def many() -> list[list[tuple[str, int]]]:
        return [
            detections(r)
            for r in await asyncio.gather(*(one_run(port, chunks(audio, rate)) for _ in range(n)))
        ]

    return run(many())


def _accepted(server: Server) -> dict[str, int]:
    text = server.metrics()
    found = re.findall(r'kws_wyoming_connections_total\{worker="(\d+)",result="accepted"\} (\d+)', text)
    return {w: int(n) for w, n in found}


def test_streams_spread_over_the_workers_and_all_are_decided(tmp_path: Path) -> None:
    server = Server(tmp_path, serve="workers: 2")
    try:
        pids = _pids(server)
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert _streams(server.port, 12) == [DEMO] * 12
        accepted = _accepted(server)
        assert set(accepted) == {"0", "1"} and sum(accepted.values()) == 12
        assert min(accepted.values()) >= 2, accepted
        deadline = time.monotonic() + 10  # the jsonl hook writes on its own thread
        while server.events.read_text().count("\n") < 48:
            assert time.monotonic() < deadline, server.events.read_text()
            time.sleep(0.05)
        records = [json.loads(line) for line in server.events.read_text().splitlines()]
        assert len(records) == 48 and {r["source"].split(".")[0] for r in records} == {
            "wyoming:0",
            "wyoming:1",
        }
        assert "kws_serve_workers 2" in server.metrics()
    finally:
        assert server.stop() == 0, server.log.read_text()
    log = server.log.read_text()
    assert "stopped 2 workers" in log and "Traceback" not in log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def _open_streams(server: Server) -> dict[str, int]:
    text = server.metrics()
    return {w: int(n) for w, n in re.findall(r'kws_wyoming_streams\{worker="(\d+)"\} (\d+)', text)}


def test_each_connection_goes_to_the_worker_with_the_fewest_streams(tmp_path: Path) -> None:
    """Least connections, as HAProxy balances: whichever connections end, new ones refill the
    emptiest worker (a hash of the client's address would not)."""
    server = Server(tmp_path, serve="workers: 3")

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        clients = []

        async def connect() -> None:
            client = AsyncTcpClient("127.0.0.1", server.port)
            await client.connect()
            await client.write_event(Describe().event())
            await read_until(client, "info")
            clients.append(client)

        async def settled(total: int) -> dict[str, int]:
            deadline = time.monotonic() + 10
            while sum((counts := _open_streams(server)).values()) != total:
                assert time.monotonic() < deadline, counts
                await asyncio.sleep(0.05)
            return counts

        for _ in range(9):
            await connect()
        spread = await settled(9)
        for client in clients[1:7]:  # 6 of them, whichever workers they are on
            await client.disconnect()
        await settled(3)
        for _ in range(6):
            await connect()
        refilled = await settled(9)
        for client in [clients[0], *clients[7:]]:
            await client.disconnect()
        return spread, refilled

    try:
        spread, refilled = run(scenario())
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert spread == {"0": 3, "1": 3, "2": 3}
    assert refilled == {"0": 3, "1": 3, "2": 3}


def test_a_parent_out_of_descriptors_pauses_accepting_and_loses_no_client(tmp_path: Path) -> None:
    """The parent's descriptor limit lowered to what it holds: accept fails (EMFILE) and the
    connections wait in the backlog; once it is raised again every client is answered."""
    import resource

    server = Server(tmp_path, serve="workers: 2")
    try:
        _pids(server)
        held = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
        limits = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (held, limits[1]))

        async def describe(delay: float) -> str:
            async with AsyncTcpClient("127.0.0.1", server.port) as client:
                await asyncio.sleep(delay)
                await client.write_event(Describe().event())
                (event,) = await read_until(client, "info")
                return Info.from_event(event).wake[0].name

        async def clients() -> list[str]:
            pending = [asyncio.ensure_future(describe(i * 0.01)) for i in range(5)]
            await asyncio.sleep(2.0)
            assert not any(task.done() for task in pending)  # none accepted, none refused
            resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, limits)
            return list(await asyncio.gather(*pending))

        assert run(clients()) == ["kws-daemon"] * 5
    finally:
        assert server.stop() == 0, server.log.read_text()
    log = server.log.read_text()
    assert 1 <= log.count("cannot accept connections for a second") <= 4, log  # paused, not spinning


def test_a_hung_worker_is_killed_and_started_again(tmp_path: Path) -> None:
    """SIGSTOP freezes a worker as a deadlock would: its watchdog pings stop, the parent kills it,
    and the streams that come after are decided by the workers that remain and the new one."""
    server = Server(tmp_path, serve="workers: 2, worker_watchdog_s: 1.5")
    try:
        pids = _pids(server)
        os.kill(pids[0], signal.SIGSTOP)
        stopped = time.monotonic()
        deadline = stopped + 30
        while "is back" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        back_s = time.monotonic() - stopped
        log = server.log.read_text()
        assert f"worker 0 (pid {pids[0]}) sent no watchdog ping for" in log
        assert not Path(f"/proc/{pids[0]}").exists()  # killed and reaped
        print(f"hung worker replaced {back_s:.1f}s after it froze (worker_watchdog_s 1.5)")
        assert back_s < 15
        assert _streams(server.port, 6) == [DEMO] * 6
        assert "kws_serve_worker_restarts_total 1" in server.metrics()
        os.kill(pids[1], signal.SIGKILL)  # a worker that dies
        deadline = time.monotonic() + 30
        while server.log.read_text().count("is back") < 2:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        assert f"worker 1 (pid {pids[1]}) exited with status -9; starting it again" in server.log.read_text()
        assert _streams(server.port, 4) == [DEMO] * 4
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_sighup_replaces_the_workers_one_by_one_with_the_new_config(tmp_path: Path) -> None:
    notify = NotifySocket(str(tmp_path / "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
    server = Server(tmp_path, serve="workers: 2", env=env)
    try:
        old = _pids(server)
        notify.wait_for("READY=1")
        config = tmp_path / "serve.yaml"
        config.write_text(config.read_text() + "keywords: [yes, stop]\n")  # what the new workers read
        mark = len(server.log.read_text())
        server.proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")[-1]
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloading)
        notify.wait_for("READY=1", timeout=120)
        notify.close()  # no one reads it from here on: a full queue (10 datagrams) would block sd_notify
        new = _pids(server, mark)
        assert not set(new) & set(old)

        async def described() -> list[str]:
            async with AsyncTcpClient("127.0.0.1", server.port) as client:
                await client.write_event(Describe().event())
                info = Info.from_event((await read_until(client, "info"))[-1])
                return [m.name for m in info.wake[0].models]

        assert all(run(described()) == ["yes", "stop"] for _ in range(6))  # every worker is a new one
        assert _streams(server.port, 4) == [[d for d in DEMO if d[0] in ("yes", "stop")]] * 4
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_a_bad_config_is_one_error_not_one_per_worker(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("keywords: [yess]\nserve: {workers: 2}\n")
    result = kws("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and "did you mean 'yes'" in result.stderr.decode()


def test_metrics_of_workers_merge_into_one_exposition() -> None:
    one = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n# HELP h H.\n# TYPE h histogram\n"
    one += 'h_bucket{le="1"} 2\nh_sum 0.5\nh_count 2\n'
    two = '# HELP a_total A.\n# TYPE a_total counter\na_total 4\n# HELP b B.\n# TYPE b gauge\nb{x="y"} 1\n'
    assert merge_metrics({"0": one, "1": two}) == [
        "# HELP a_total A.",
        "# TYPE a_total counter",
        'a_total{worker="0"} 3',
        'a_total{worker="1"} 4',
        "# HELP h H.",
        "# TYPE h histogram",
        'h_bucket{worker="0",le="1"} 2',
        'h_sum{worker="0"} 0.5',
        'h_count{worker="0"} 2',
        "# HELP b B.",
        "# TYPE b gauge",
        'b{worker="1",x="y"} 1',
    ]
