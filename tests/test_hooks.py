"""Hooks against real processes and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kws_daemon.config import Config, HookConfig, KeywordConfig
from kws_daemon.detector import KeywordEvent
from kws_daemon.hooks import HookDispatcher, HookRunner
from kws_daemon.metrics import LatencyStats


def _event(keyword: str = "yes", score: float = 0.91) -> KeywordEvent:
    return KeywordEvent(keyword, score, time_s=1.5, t_wall=1_700_000_000.25, t_mono=time.monotonic())


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    received: list[tuple[str, dict]]
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))
        if self.path == "/hang":
            self.server.release.wait(30)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        self.send_response(500 if self.path == "/fail" else 200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.received, server.release = [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_command_gets_event_only_through_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hostile = '$(touch pwned); `touch pwned2`; "; touch pwned3'
    hook = HookConfig(
        "command",
        f'cd {tmp_path} && printf "%s|%s|%s|%s" "$KWS_KEYWORD" "$KWS_SCORE" '
        f'"$KWS_TIME" "$KWS_LATENCY_MS" > {out}',
    )
    runner = HookRunner(hook, LatencyStats())
    runner.submit(_event(keyword=hostile))
    runner.close(time.monotonic() + 10)
    keyword, score, when, latency = out.read_text().split("|")
    assert keyword == hostile and score == "0.9100" and when == "1700000000.250" and float(latency) >= 0
    assert not list(tmp_path.glob("pwned*"))
    assert runner.counters.runs == 1 and runner.counters.failures == 0


def test_argv_command_and_failure_count(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    ok = HookRunner(HookConfig("command", ("sh", "-c", f'echo "$KWS_KEYWORD" > {out}')), LatencyStats())
    bad = HookRunner(HookConfig("command", ("false",)), LatencyStats())
    missing = HookRunner(HookConfig("command", ("/nonexistent/binary",)), LatencyStats())
    for r in (ok, bad, missing):
        r.submit(_event("stop"))
        r.close(time.monotonic() + 10)
    assert out.read_text() == "stop\n"
    assert (bad.counters.failures, missing.counters.failures) == (1, 1)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    hook = HookConfig("command", f"sleep 60 & echo $! > {child}; wait", timeout_s=0.5)
    runner = HookRunner(hook, LatencyStats())
    runner.submit(_event())
    runner.close(time.monotonic() + 10)
    assert runner.counters.timeouts == 1
    pid = int(child.read_text())
    assert _wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_webhook_posts_event_json(http_server: _Server) -> None:
    runner = HookRunner(HookConfig("webhook", _url(http_server, "/ok")), LatencyStats())
    runner.submit(_event("go", 0.77))
    runner.close(time.monotonic() + 10)
    ((path, body),) = http_server.received
    assert (
        path == "/ok" and body["keyword"] == "go" and body["score"] == 0.77 and body["time"] == 1700000000.25
    )
    assert runner.counters.runs == 1 and runner.counters.failures == 0


def test_webhook_errors_and_redirects_count_as_failures(http_server: _Server) -> None:
    fail = HookRunner(HookConfig("webhook", _url(http_server, "/fail")), LatencyStats())
    redirect = HookRunner(HookConfig("webhook", _url(http_server, "/redirect")), LatencyStats())
    refused = HookRunner(
        HookConfig("webhook", "http://127.0.0.1:9/nothing-listens", timeout_s=2), LatencyStats()
    )
    for r in (fail, redirect, refused):
        r.submit(_event())
        r.close(time.monotonic() + 10)
    assert [p for p, _ in http_server.received] == ["/fail", "/redirect"]  # the redirect was not followed
    assert (fail.counters.failures, redirect.counters.failures, refused.counters.failures) == (1, 1, 1)


def test_hanging_webhook_delays_neither_its_next_event_nor_other_hooks(
    http_server: _Server, tmp_path: Path
) -> None:
    jsonl = tmp_path / "events.jsonl"
    config = Config(
        hooks=(
            HookConfig("webhook", _url(http_server, "/hang"), timeout_s=20),
            HookConfig("jsonl", str(jsonl)),
        ),
        keywords=(
            KeywordConfig("yes"),
            KeywordConfig("no", hooks=(HookConfig("webhook", _url(http_server, "/ok")),)),
        ),
    )
    dispatcher = HookDispatcher(config, LatencyStats())
    start = time.monotonic()
    dispatcher(_event("yes"))
    assert _wait_for(lambda: len(http_server.received) == 1)
    dispatcher(_event("no"))
    assert _wait_for(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) == 2, timeout=5)
    assert _wait_for(lambda: ("/ok",) in [(p,) for p, _ in http_server.received], timeout=5)
    # the hanging hook's second event went to its second worker at once
    assert _wait_for(lambda: [p for p, _ in http_server.received].count("/hang") == 2, timeout=5)
    assert time.monotonic() - start < 10
    assert [json.loads(line)["keyword"] for line in jsonl.read_text().splitlines()] == ["yes", "no"]
    http_server.release.set()
    dispatcher.close()
    assert sum(r.counters.failures for r in dispatcher.runners) == 0


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    hook = HookConfig("command", "sleep 5", timeout_s=0.3)
    runner = HookRunner(hook, LatencyStats(), queue_size=2, workers=1)
    for _ in range(20):
        runner.submit(_event())
    assert runner.counters.dropped >= 17
    runner.close(time.monotonic() + 5)


def test_jsonl_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    runner = HookRunner(HookConfig("jsonl", "-"), LatencyStats())
    runner.submit(_event("up"))
    runner.close(time.monotonic() + 5)
    record = json.loads(capsys.readouterr().out)
    assert record["keyword"] == "up" and record["time_s"] == 1.5 and "keyword_end_to_hook" not in record


def test_hook_latency_is_recorded() -> None:
    stats = LatencyStats()
    runner = HookRunner(HookConfig("command", "true"), stats)
    runner.submit(_event())
    runner.close(time.monotonic() + 5)
    assert stats.stages()["keyword_end_to_hook"].count == 1
    assert os.environ.get("KWS_KEYWORD") is None  # never leaks into the daemon's own environment


@pytest.mark.parametrize(
    ("hook", "short"),
    [
        (HookConfig("command", ("/usr/bin/mpc", "stop")), "command mpc"),
        (HookConfig("command", 'logger -t kws "$KWS_KEYWORD $KWS_SCORE"'), "command logger"),
        (HookConfig("command", "(sleep 0.5; echo done) &"), "command sleep"),
        (HookConfig("command", ("",)), "command ?"),
        (HookConfig("jsonl", "-"), "jsonl -"),
    ],
)
def test_output_lines_name_a_hook_by_its_program_not_its_command_line(hook: HookConfig, short: str) -> None:
    assert hook.short() == short
