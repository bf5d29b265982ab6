"""`kws-daemon serve` as Home Assistant and satellites meet it: a real server process, the wyoming
library's own AsyncTcpClient, raw sockets for what a broken or hostile client sends."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.wake import Detect

from kws_daemon.audio.sources import read_audio
from tests.conftest import DEMO_WAV, kws
from tests.notify_socket import NotifySocket
from tests.wyoming_server import HOSTILE, Server, chunks, detections, one_run, raw, read_until, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("serve"))
    yield s
    assert s.stop() == 0, s.log.read_text()
    assert "Traceback" not in s.log.read_text()


@pytest.fixture(scope="module")
def demo_detections() -> list[tuple[str, float]]:
    """What `kws-daemon detect` finds in the demo audio: what every stream must find."""
    result = kws("detect", "--json", str(DEMO_WAV))
    assert result.returncode == 0, result.stderr
    found = [(r["keyword"], r["time_s"]) for r in map(json.loads, result.stdout.splitlines())]
    assert len(found) >= 3
    return found


def test_describe_answers_info_with_every_keyword_within_100_ms(server: Server) -> None:
    async def describe() -> tuple[Info, float]:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Describe().event())
            await read_until(client, "info")  # the first connection warms up
            t0 = time.monotonic()
            await client.write_event(Describe().event())
            (event,) = await read_until(client, "info")
            return Info.from_event(event), time.monotonic() - t0

    info, seconds = run(describe())
    assert seconds < 0.1
    (program,) = info.wake
    names = {m.name for m in program.models}
    assert {"yes", "no", "stop", "go", "marvin"} <= names and "_background_" not in names
    model = next(m for m in program.models if m.name == "stop")
    assert model.phrase == "stop" and model.languages == ["en"] and model.installed


def test_a_pipeline_run_detects_what_detect_finds(server: Server, demo_detections) -> None:
    audio, rate = read_audio(DEMO_WAV)
    events = run(one_run(server.port, chunks(audio, rate)))
    assert [e.type for e in events][-1] == "pong" and "not-detected" not in [e.type for e in events]
    assert [(n, t / 1000) for n, t in detections(events)] == [(k, round(t, 2)) for k, t in demo_detections]


def test_any_rate_width_and_channels_are_converted(server: Server, demo_detections) -> None:
    audio, _ = read_audio(DEMO_WAV)
    import soxr

    at_48k = soxr.resample(audio, 16000, 48000).astype(np.int32) << 16  # 32-bit
    stereo = np.stack([at_48k, at_48k], axis=1).reshape(-1)
    found = run(one_run(server.port, chunks(stereo, 48000, width=4, channels=2, size=2 * 3000)))
    assert [n for n, _ in detections(found)] == [k for k, _ in demo_detections]


def test_silence_ends_with_not_detected(server: Server) -> None:
    silence = np.zeros(16000 * 2, np.int16)
    events = run(one_run(server.port, chunks(silence, 16000)))
    assert [e.type for e in events] == ["not-detected", "pong"]


def test_detect_names_restrict_what_is_reported(server: Server, demo_detections) -> None:
    audio, rate = read_audio(DEMO_WAV)
    wanted = demo_detections[1][0]
    events = run(one_run(server.port, chunks(audio, rate), names=[wanted]))
    assert [n for n, _ in detections(events)] == [k for k, _ in demo_detections if k == wanted]


def test_a_satellite_keeps_one_connection_and_re_sends_detect(server: Server, demo_detections) -> None:
    """wyoming-satellite's pattern: detect, then chunks with no audio-start, detect again after each
    run, on one connection."""
    audio, rate = read_audio(DEMO_WAV)

    async def satellite() -> list[list[str]]:
        runs = []
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            for _ in range(2):
                await client.write_event(Detect(names=None).event())
                for event in chunks(audio, rate):
                    await client.write_event(event)
                for event in chunks(np.zeros(16000, np.int16), rate):  # the silence that ends the last word
                    await client.write_event(event)
                await client.write_event(Ping(text="run").event())
                runs.append([n for n, _ in detections(await read_until(client, "pong"))])
        return runs

    expected = [k for k, _ in demo_detections]
    assert run(satellite()) == [expected, expected]


def test_hooks_and_metrics_see_every_stream(server: Server, demo_detections) -> None:
    audio, rate = read_audio(DEMO_WAV)
    before = server.events.read_text().count("\n") if server.events.exists() else 0

    async def streams() -> None:
        await asyncio.gather(*(one_run(server.port, chunks(audio, rate)) for _ in range(3)))

    run(streams())
    deadline = time.monotonic() + 10
    while server.events.read_text().count("\n") < before + 3 * len(demo_detections):
        assert time.monotonic() < deadline, server.events.read_text()
        time.sleep(0.05)
    records = [json.loads(line) for line in server.events.read_text().splitlines()[before:]]
    # wyoming:WORKER.SLOT: the default is a worker per core (two here)
    assert {r["source"] for r in records} <= {f"wyoming:{w}.{i}" for w in range(2) for i in range(32)}
    assert len({r["source"] for r in records}) == 3  # three streams at once, three slots
    text = server.metrics()
    first = demo_detections[0][0]
    assert re.search(rf'kws_detections_total{{worker="[01]",keyword="{first}",stream="\d+"}} [1-9]', text)
    assert "kws_wyoming_connections_total" in text
    assert "kws_batches_total" not in text  # the default model's streams are decided inline


def test_batched_streams_share_calls_and_decide_as_detect(tmp_path: Path, demo_detections) -> None:
    """`--batch` forces what serve.batch: auto keeps for an AST: the windows of streams that need the
    model at the same moment go in one call, and each stream still finds what `detect` finds."""
    server = Server(tmp_path, args=("--batch", "--workers", "1"))
    audio, rate = read_audio(DEMO_WAV)

    async def streams() -> list[list[str]]:
        runs = await asyncio.gather(*(one_run(server.port, chunks(audio, rate)) for _ in range(4)))
        return [[n for n, _ in detections(events)] for events in runs]

    try:
        assert run(streams()) == [[k for k, _ in demo_detections]] * 4
        text = server.metrics()
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert "mode, batched" in server.log.read_text()
    calls = float(re.search(r"^kws_batches_total (\S+)", text, re.M).group(1))
    windows = float(re.search(r"^kws_batched_windows_total (\S+)", text, re.M).group(1))
    assert 0 < calls < windows  # some calls scored windows of several streams


def _still_serving(port: int) -> None:
    async def ping() -> None:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Ping(text="ok").event())
            await read_until(client, "pong", timeout=5)

    run(ping())


@pytest.mark.parametrize("data, why", HOSTILE)
def test_a_broken_client_is_closed_with_a_log_line(server: Server, data: bytes, why: str) -> None:
    t0 = time.monotonic()
    raw(server.port, data)
    assert time.monotonic() - t0 < 4  # closed by the server, not by our timeout
    deadline = time.monotonic() + 5
    while why not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.05)
    _still_serving(server.port)


def test_events_in_the_wrong_order_are_survived(server: Server) -> None:
    """A stop without a start, chunks before detect, a start in the middle of a stream."""
    audio, rate = read_audio(DEMO_WAV)

    async def disorder() -> list[str]:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(AudioStop().event())
            for event in chunks(audio[:8000], rate):
                await client.write_event(event)
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await client.write_event(AudioStart(rate=22050, width=2, channels=1).event())
            await client.write_event(Event(type="no-such-event", data={"x": 1}))
            await client.write_event(AudioStop().event())
            await client.write_event(Ping().event())
            return [e.type for e in await read_until(client, "pong")]

    assert run(disorder()) == ["not-detected", "not-detected", "pong"]


def test_random_bytes_never_take_the_server_down(server: Server) -> None:
    rng = random.Random(0)
    audio = AudioChunk(rate=16000, width=2, channels=1, audio=b"\1\0" * 512).event()
    header = json.dumps({"type": "audio-chunk", "data": audio.data, "payload_length": 1024}).encode()
    valid = header + b"\n" + audio.payload  # type: ignore[operator]
    for _ in range(60):
        kind = rng.randrange(3)
        if kind == 0:  # noise
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        elif kind == 1:  # a valid event cut anywhere
            data = valid * rng.randrange(1, 4)
            data = data[: rng.randrange(1, len(data))]
        else:  # a valid event with bytes flipped
            flipped = bytearray(valid * 2)
            for _ in range(rng.randrange(1, 8)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            data = bytes(flipped)
        raw(server.port, data, wait=0.3)
    _still_serving(server.port)
    assert server.proc.poll() is None


def test_a_client_that_never_reads_stalls_only_itself(server: Server, demo_detections) -> None:
    """Thousands of describes unread fill that connection's buffers; another stream is served on time."""
    audio, rate = read_audio(DEMO_WAV)
    with socket.create_connection(("127.0.0.1", server.port)) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.settimeout(0.5)
        try:
            for _ in range(2000):
                hog.sendall(b'{"type": "describe"}\n')
        except TimeoutError:
            pass  # the server stopped reading from us: our own connection is stuck, as it should be
        t0 = time.monotonic()
        events = run(one_run(server.port, chunks(audio, rate)))
        elapsed = time.monotonic() - t0
    assert [n for n, _ in detections(events)] == [k for k, _ in demo_detections]
    assert elapsed < 8  # the 8.2 s demo, sent as fast as possible, is not held by the hog


def test_connections_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    server = Server(tmp_path, serve="max_connections: 2, idle_timeout_s: 1, workers: 1")  # a process's limit
    try:

        async def limit() -> bytes:
            async with (
                AsyncTcpClient("127.0.0.1", server.port) as a,
                AsyncTcpClient("127.0.0.1", server.port) as b,
            ):
                for client in (a, b):
                    await client.write_event(Ping().event())
                    await read_until(client, "pong")
                third = await asyncio.to_thread(raw, server.port, Ping().event().type.encode())
            return third

        assert run(limit()) == b""  # closed at once
        assert "refused 127.0.0.1" in server.log.read_text()
        _still_serving(server.port)  # the two slots are free again
        assert 'kws_wyoming_connections_total{result="refused"} 1' in server.metrics()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
            stalled.sendall(b'{"type": "audio-chunk", "payload_length": 100}\n')  # then nothing
            t0 = time.monotonic()
            assert stalled.recv(100) == b""  # a slow-loris client loses its slot
            assert 0.8 < time.monotonic() - t0 < 5
        assert "nothing received for 1s inside an event" in server.log.read_text()
    finally:
        assert server.stop() == 0


def test_serve_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "wyoming.sock"
    server = Server(tmp_path, uri=f"unix://{path}")
    try:

        async def ping() -> str:
            async with AsyncClient.from_uri(f"unix://{path}") as client:
                await client.write_event(Ping(text="unix").event())
                (event,) = await read_until(client, "pong")
                return str(event.data["text"])

        assert run(ping()) == "unix"
    finally:
        assert server.stop() == 0
    assert not path.exists()  # removed at exit


def test_serve_on_a_unix_socket_never_replaces_a_file(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    result = kws("serve", "--uri", f"unix://{precious}", timeout=60)
    assert result.returncode == 1 and precious.read_text() == "keep me"
    assert result.stderr.decode().count("\n") == 1 and "is not a socket" in result.stderr.decode()


def test_serve_reports_a_port_in_use_in_one_line(server: Server) -> None:
    result = kws("serve", "--uri", f"tcp://127.0.0.1:{server.port}", timeout=60)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "cannot listen" in result.stderr.decode()


@pytest.mark.parametrize("uri", ["http://x:1", "tcp://127.0.0.1", "unix://relative", "tcp://:99"])
def test_a_bad_uri_is_a_config_error(uri: str) -> None:
    result = kws("serve", "--uri", uri, timeout=60)
    assert result.returncode == 2 and "tcp://HOST:PORT" in result.stderr.decode()


def test_under_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(str(tmp_path / "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000")
    server = Server(tmp_path, env=env)
    try:
        ready = notify.wait_for("READY=1")[-1]
        assert any(f.startswith("STATUS=serving tcp://127.0.0.1:") for f in ready)
        pings = [m for m in notify.collect(1.0) if "WATCHDOG=1" in m]
        assert len(pings) >= 3  # every 0.1 s (a quarter of WatchdogSec) while the loop turns
        _still_serving(server.port)
        statuses = [f for m in notify.collect(0.5) for f in m if f.startswith("STATUS=")]
        # the parent's, summing its workers' (one per core by default: two here)
        assert f"STATUS=serving {server.uri}; 0 streams; 0 detections; 2/2 workers" in statuses
    finally:
        assert server.stop() == 0
    assert any("STOPPING=1" in m for m in notify.collect(0.5))
    notify.close()


def test_zeroconf_announces_the_service_for_home_assistant(tmp_path: Path) -> None:
    zeroconf = pytest.importorskip("zeroconf", reason="the zeroconf extra is not installed")
    server = Server(tmp_path, serve="zeroconf: true, zeroconf_name: kws-test")
    try:
        found: dict[str, int] = {}

        class Listener(zeroconf.ServiceListener):
            def add_service(self, zc, type_, name) -> None:
                info = zc.get_service_info(type_, name)
                found[name] = info.port if info else 0

            update_service = remove_service = lambda *args: None

        zc = zeroconf.Zeroconf()
        zeroconf.ServiceBrowser(zc, "_wyoming._tcp.local.", Listener())
        deadline = time.monotonic() + 10
        while "kws-test._wyoming._tcp.local." not in found and time.monotonic() < deadline:
            time.sleep(0.1)
        zc.close()
    finally:
        assert server.stop() == 0
    assert found.get("kws-test._wyoming._tcp.local.") == server.port
    assert "only this machine reaches" in server.log.read_text()  # it listens on 127.0.0.1


def test_bench_serve_streams_in_real_time_and_times_detections(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = kws("bench-serve", "--streams", "2", "--duration", "9", "--as-served", "--json", str(out))
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert run["streams"] == 2 and not run["batched"] and run["realtime"]  # the default model: inline
    assert run["timed_detections"] >= 2  # a command per stream, timed from its voiced end
    assert 0 < run["latency_ms"]["p50"] < 1000
    # each detection matched in the unloaded reference run: the server's own delay, well under 1 s
    assert 0 <= run["server_delay_ms"]["p50"] <= run["server_delay_ms"]["max"] < 1000
    assert "word end -> detection" in result.stdout.decode()


def test_bench_serve_refuses_more_streams_than_connections() -> None:
    result = kws("bench-serve", "--streams", "0")
    assert result.returncode == 1 and "--streams" in result.stderr.decode()
