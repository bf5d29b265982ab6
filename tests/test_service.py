"""The daemon as systemd runs it: real `kws-daemon run` subprocesses, a real unix-datagram NOTIFY_SOCKET,
real signals, and /metrics scraped over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from kws_daemon.sdnotify import Notifier
from tests.conftest import DEMO_WAV, ROOT
from tests.notify_socket import TIMEOUT, NotifySocket

MODEL = ROOT / "models" / "default"
BLOCK = 1600  # samples in a 100 ms block at 16 kHz, the stdin source's default block


@pytest.fixture
def notify(tmp_path: Path):
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, config: dict[str, Any] | str) -> None:
    """JSON is YAML: a dict is written as JSON; a string as it is (to write broken files)."""
    path.write_text(config if isinstance(config, str) else json.dumps(config))


class DaemonProcess:
    """`python -m kws_daemon run`, with its log lines collected as they come."""

    def __init__(
        self,
        config: Path,
        notify: NotifySocket | None = None,
        watchdog_usec: int | None = None,
        stdin: bool = False,
    ) -> None:
        env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.address
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        argv = [sys.executable, "-m", "kws_daemon", "run", "--config", str(config)]
        self.proc = subprocess.Popen(
            argv + (["--input", "-"] if stdin else []),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    def wait_log(self, pattern: str, after: int = 0, timeout: float = TIMEOUT) -> int:
        """Index of the first log line from `after` on that matches `pattern`."""
        regex = re.compile(pattern)

        def found() -> int | None:
            return next((i for i in range(after, len(self.lines)) if regex.search(self.lines[i])), None)

        with self._changed:
            if not self._changed.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout
            ):
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s:\n" + self.log())
            index = found()
        if index is None:
            raise AssertionError(f"exited ({self.proc.poll()}) before logging {pattern!r}:\n" + self.log())
        return index

    def log(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


class Feeder:
    """Writes silent 100 ms blocks to the daemon's stdin at about real time, as a microphone would,
    until paused (the pipe stays open: a stalled capture) or stopped."""

    def __init__(self, daemon: DaemonProcess) -> None:
        assert daemon.proc.stdin is not None
        self._pipe = daemon.proc.stdin
        self._flowing = threading.Event()
        self._flowing.set()
        self._writing = threading.Lock()
        self._done = False
        self.blocks = 0  # written so far
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done:
            if not self._flowing.wait(0.1):
                continue
            with self._writing:
                if not self._flowing.is_set():
                    continue
                try:
                    self._pipe.write(bytes(BLOCK * 2))
                    self._pipe.flush()
                except (BrokenPipeError, ValueError):
                    return
                self.blocks += 1
            time.sleep(BLOCK / 16000)

    def pause(self) -> None:
        """Returns once no more audio is on its way."""
        self._flowing.clear()
        with self._writing:
            pass

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self.pause()
        self._done = True
        self._thread.join()


def wait_until(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (after {timeout}s)")
        time.sleep(0.2)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics and parse the Prometheus text format strictly: every family typed before its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    sample_re = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"family {name} typed twice"
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = sample_re.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels_text, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        labels = frozenset(label_re.findall(labels_text or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def wait_metric(port: int, name: str, predicate: Any, **labels: str) -> None:
    def holds() -> bool:
        try:
            return bool(predicate(metric(scrape(port), name, **labels)))
        except (KeyError, urllib.error.URLError):
            return False

    wait_until(holds, f"{name}{labels} never satisfied the test")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- sd_notify -----------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_datagrams_and_unsets_the_environment(tmp_path: Path, abstract: bool) -> None:
    address = f"@kws-test-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify")
    listener = NotifySocket(address)
    try:
        env = {
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "3000000",
            "WATCHDOG_PID": str(os.getpid()),
            "X": "1",
        }
        notifier = Notifier(env)
        assert env == {"X": "1"}, "hook commands must not inherit the notify socket"
        assert notifier.watchdog_s == 3.0
        notifier.send("READY=1", "STATUS=two\nlines")
        assert listener.next(5) == ["READY=1", "STATUS=two lines"]
        notifier.close()
    finally:
        listener.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    assert Notifier({}).watchdog_s is None
    Notifier({}).send("READY=1")
    other_pid = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(other_pid).watchdog_s is None, "a watchdog meant for another process is not ours"
    Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"}).send("READY=1")  # logged once, never raised


# --- the daemon under a notify socket ------------------------------------------------------------


@pytest.mark.slow
def test_ready_then_watchdog_only_while_audio_flows_then_stopping(
    tmp_path: Path, notify: NotifySocket
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, {"detector": {"threshold": 1.0}})
    with DaemonProcess(config, notify, watchdog_usec=4_000_000, stdin=True) as daemon:
        feeder = Feeder(daemon)
        ready = notify.wait_for("READY=1")
        assert any(f.startswith("STATUS=listening on stdin; 35 keywords") for f in ready[-1])
        for _ in range(3):
            notify.wait_for("WATCHDOG=1")

        feeder.pause()  # the capture stalls: the pipe stays open, nothing comes
        notify.wait_for("STATUS=stalled: no audio from stdin for 2s")
        assert ["WATCHDOG=1"] not in notify.collect(3.0), "watchdog pings went on while no audio arrived"
        daemon.wait_log(r"WARNING: no audio from stdin for 2s; watchdog pings stop")

        feeder.resume()
        notify.wait_for("WATCHDOG=1")

        daemon.signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert daemon.wait() == 0
        feeder.stop()


@pytest.mark.slow
def test_sigterm_lets_a_running_hook_finish_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    config = tmp_path / "config.yaml"
    hook = {"command": ["sh", "-c", f'sleep 1; echo "$KWS_KEYWORD" >> {out}'], "timeout_s": 10}
    audio = {"input": str(DEMO_WAV), "realtime": True, "loop": True}
    write_config(config, {"audio": audio, "detector": {"threshold": 0.0}, "hooks": [hook]})
    with DaemonProcess(config) as daemon:
        daemon.wait_log(r"detected '")
        daemon.signal(signal.SIGTERM)  # the hook is queued or sleeping now
        assert daemon.wait() == 0
        assert lines(out) > 0, "SIGTERM cut the hook short instead of draining it"
        assert re.search(r"stats: .* hooks [1-9]\d* runs, 0 failed, 0 timed out", daemon.log())


# --- reload --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reload_changes_thresholds_and_model_live_and_keeps_running_on_invalid_config(
    tmp_path: Path, notify: NotifySocket
) -> None:
    port = free_port()
    events = tmp_path / "events.jsonl"
    config = tmp_path / "config.yaml"
    base = {
        "audio": {"input": str(DEMO_WAV), "realtime": True, "loop": True},
        "hooks": [{"jsonl": str(events)}],
        "metrics": {"listen": f"127.0.0.1:{port}"},
    }
    write_config(config, {**base, "detector": {"threshold": 1.0}})
    with DaemonProcess(config, notify) as daemon:
        notify.wait_for("READY=1")
        wait_metric(port, "kws_audio_seconds_total", lambda s: s >= 2.0)
        assert not events.exists(), "threshold 1.0 cannot fire"

        # A lower threshold and another model directory, live
        model_b = tmp_path / "model-b"
        shutil.copytree(MODEL, model_b)
        write_config(config, {**base, "detector": {"threshold": 0.0}, "model": str(model_b)})
        daemon.signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        daemon.wait_log(r"reloaded .*: 35 keywords, 1 hooks, model .*model-b")
        wait_until(lambda: lines(events) > 0, "no detection after lowering the threshold")
        samples = scrape(port)
        assert metric(samples, "kws_keyword_threshold", keyword="yes") == 0.0
        model_info = [labels for (name, labels) in samples if name == "kws_model_info"]
        assert ("path", str(model_b)) in model_info[0]
        assert metric(samples, "kws_reloads_total", result="ok") == 1

        # Invalid configs, each caught at a different stage: the running config stays
        invalid = [
            ({**base, "detector": {"threshold": 2.0}}, r"detector\.threshold: must be a number from 0 to 1"),
            ({**base, "model": str(tmp_path / "missing")}, r"model directory .*missing does not exist"),
            ("detector: {threshold: [", r"YAML syntax error"),
        ]
        for broken, reason in invalid:
            write_config(config, broken)
            mark = len(daemon.lines)
            daemon.signal(signal.SIGHUP)
            daemon.wait_log(r"ERROR: reload failed, the running config stays: .*" + reason, after=mark)
            notify.wait_for("READY=1")
        assert daemon.proc.poll() is None
        before = lines(events)
        wait_until(lambda: lines(events) > before, "detection stopped after the rejected reloads")
        samples = scrape(port)
        assert metric(samples, "kws_reloads_total", result="failed") == 3
        assert metric(samples, "kws_keyword_threshold", keyword="yes") == 0.0
        assert metric(samples, "kws_audio_overflows_total", where="ring") == 0

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


@pytest.mark.slow
def test_reloads_lose_no_audio(tmp_path: Path, notify: NotifySocket) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, {"metrics": {"listen": f"127.0.0.1:{port}"}})
    with DaemonProcess(config, notify, stdin=True) as daemon:
        feeder = Feeder(daemon)
        notify.wait_for("READY=1")
        for threshold in (0.3, 0.6, 0.9):  # reload while audio streams in
            write_config(
                config, {"metrics": {"listen": f"127.0.0.1:{port}"}, "detector": {"threshold": threshold}}
            )
            daemon.signal(signal.SIGHUP)
            notify.wait_for("RELOADING=1")
            notify.wait_for("READY=1")
        feeder.pause()
        written = feeder.blocks * BLOCK / 16000
        wait_metric(port, "kws_audio_seconds_total", lambda s: s == written)
        samples = scrape(port)
        assert metric(samples, "kws_reloads_total", result="ok") == 3
        assert metric(samples, "kws_keyword_threshold", keyword="yes") == 0.9
        assert metric(samples, "kws_audio_overflows_total", where="ring") == 0
        feeder.stop()
        assert daemon.proc.stdin is not None
        daemon.proc.stdin.close()  # end of input: the daemon drains and exits
        assert daemon.wait() == 0


# --- metrics -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_scraped_over_http_and_parsed(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    hooks = [
        {"command": ["false"]},
        {"command": ["sleep", "5"], "timeout_s": 0.2},
        {"jsonl": str(tmp_path / "events.jsonl")},
    ]
    audio = {"input": str(DEMO_WAV), "realtime": True, "loop": True}
    write_config(
        config,
        {
            "audio": audio,
            "detector": {"threshold": 0.0},
            "hooks": hooks,
            "metrics": {"listen": f"127.0.0.1:{port}"},
        },
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")
        daemon.wait_log(r"hook command sleep 5: timed out")
        wait_metric(port, "kws_hook_timeouts_total", lambda n: n >= 1, kind="command")
        samples = scrape(port)

        detections = sum(v for (name, _), v in samples.items() if name == "kws_detections_total")
        assert detections >= 1
        assert metric(samples, "kws_hook_failures_total", kind="command") >= 1
        assert metric(samples, "kws_hook_runs_total", kind="command") >= 2
        assert metric(samples, "kws_hook_runs_total", kind="jsonl") >= 1
        assert metric(samples, "kws_audio_overflows_total", where="ring") == 0
        assert 0.0 < metric(samples, "kws_vad_open_ratio") <= 1.0
        assert metric(samples, "kws_audio_seconds_total") > 0
        assert metric(samples, "kws_last_detection_timestamp_seconds") > time.time() - 3600
        model_info = [dict(labels) for (name, labels) in samples if name == "kws_model_info"]
        assert model_info == [{"path": str(MODEL), "sha256": model_info[0]["sha256"], "labels": "36"}]

        stages = {dict(labels)["stage"] for (name, labels) in samples if name == "kws_latency_seconds_count"}
        assert {"queue", "vad", "features", "inference", "detection"} <= stages
        assert {"keyword_end_to_event", "keyword_end_to_hook"} <= stages  # end to end
        for stage in stages:
            buckets = sorted(
                (float(dict(labels)["le"]), value)
                for (name, labels), value in samples.items()
                if name == "kws_latency_seconds_bucket" and dict(labels)["stage"] == stage
            )
            counts = [count for _, count in buckets]
            assert counts == sorted(counts), f"{stage}: buckets are not cumulative"
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == metric(samples, "kws_latency_seconds_count", stage=stage) > 0
            assert metric(samples, "kws_latency_seconds_sum", stage=stage) >= 0

        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert missing.value.code == 404
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
