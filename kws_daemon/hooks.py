"""Keyword events -> user actions (shell command, HTTP webhook, JSON lines), off the audio path.

Every hook has its own bounded queue and worker threads, so a slow, hanging or failing hook delays
neither detection nor the other hooks; when its queue is full the event is dropped for that hook
and counted. Event data reaches a command only through KWS_* environment variables, never through
its command line, so a label cannot inject shell syntax. A command's output is read by the daemon
and logged within a budget of lines a minute, and a webhook has a deadline for the whole request, so
neither a chatty nor a trickling hook can flood the journal, hold a worker or grow memory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TypeVar
from urllib.parse import urlsplit

from kws_daemon import __version__
from kws_daemon.config import Config, HookConfig
from kws_daemon.detector import KeywordEvent
from kws_daemon.metrics import LatencyStats

log = logging.getLogger("kws_daemon.hooks")
T = TypeVar("T")


@dataclass
class HookCounters:
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    dropped: int = 0


OUTPUT_LINES_PER_MINUTE = 60  # of each command hook's output that reach the log
OUTPUT_LINE_BYTES = 500  # longer lines are cut
DROPS_LOGGED_PER_MINUTE = 5  # per hook; kws_hook_dropped_total counts every one


class _Throttle:
    """At most `limit` log lines a minute for something that can repeat without bound (a hook's output,
    its dropped events): journald's rate limit would otherwise silence the daemon's own lines too."""

    def __init__(self, limit: int, what: str) -> None:
        self._limit = limit
        self._what = what
        self._lock = threading.Lock()
        self._period_end = 0.0
        self._used = 0
        self._held = 0

    def log(self, level: int, items: Sequence[T], render: Callable[[T], str]) -> None:
        """Logs the items the budget allows, and says so when it holds the rest back."""
        with self._lock:
            now = time.monotonic()
            held = 0
            if now >= self._period_end:
                self._period_end, self._used, held, self._held = now + 60.0, 0, self._held, 0
            allowed = min(len(items), self._limit - self._used)
            self._used += allowed
            exhausted = allowed < len(items) and self._held == 0
            self._held += len(items) - allowed
        if held:
            log.warning("%s: %d not logged in the last minute", self._what, held)
        for item in items[:allowed]:
            log.log(level, "%s", render(item))
        if exhausted:
            log.warning(
                "%s: more than %d a minute; the rest of this minute's are not logged", self._what, self._limit
            )


def _run_command(hook: HookConfig, env: dict[str, str], drain: Callable[[IO[bytes]], None]) -> str | None:
    """Runs the command in its own process group; returns an error, or None on exit status 0.

    stdout and stderr go to one pipe that `drain` reads on its own thread until every process holding
    it is gone, so a backgrounded child (`player sound.wav &`) keeps its output and is not killed."""
    argv = list(hook.target) if isinstance(hook.target, tuple) else ["/bin/sh", "-c", hook.target]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
        start_new_session=True,
    )
    assert proc.stdout is not None
    threading.Thread(target=drain, args=(proc.stdout,), name="hook-output", daemon=True).start()
    try:
        code = proc.wait(timeout=hook.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return None if code == 0 else f"exit status {code}"


def _post(hook: HookConfig, event: KeywordEvent) -> str | None:
    """POSTs the event; `timeout_s` bounds the whole request, not each socket operation (a server
    trickling a byte a second would otherwise hold the worker for hours). Redirects are not followed:
    a webhook goes where the config says."""
    assert isinstance(hook.target, str)
    url = urlsplit(hook.target)
    connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(url.hostname or "", url.port, timeout=hook.timeout_s)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)  # wakes the worker out of recv()

    timer = threading.Timer(hook.timeout_s, expire)
    timer.start()
    try:
        connection.request(
            "POST",
            (url.path or "/") + (f"?{url.query}" if url.query else ""),
            body=json.dumps(event.to_dict()).encode(),
            headers={"Content-Type": "application/json", "User-Agent": f"kws-daemon/{__version__}"},
        )
        status = connection.getresponse().status
        if expired.is_set():  # the shutdown can end a trickled response early enough to parse
            raise TimeoutError
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set() or isinstance(e, TimeoutError):
            raise subprocess.TimeoutExpired(hook.target, hook.timeout_s) from None
        return str(e) or type(e).__name__
    finally:
        timer.cancel()
        connection.close()
    return None if 200 <= status < 300 else f"HTTP {status}"


_stdout_lock = threading.Lock()


def _append_jsonl(hook: HookConfig, event: KeywordEvent) -> None:
    line = json.dumps(event.to_dict()) + "\n"
    if hook.target == "-":
        with _stdout_lock:
            sys.stdout.write(line)
            sys.stdout.flush()
    else:
        assert isinstance(hook.target, str)
        with open(hook.target, "a") as f:
            f.write(line)


class HookRunner:
    """One configured hook: a bounded queue and `workers` threads that run it."""

    def __init__(
        self, hook: HookConfig, stats: LatencyStats, queue_size: int = 16, workers: int | None = None
    ) -> None:
        """`workers` defaults to 2, so that a hanging run does not hold up the next event; a jsonl hook
        has 1, so that its lines stay in the order of the events (appending a line is quick)."""
        if workers is None:
            workers = 1 if hook.kind == "jsonl" else 2
        self.hook = hook
        self.counters = HookCounters()
        self._count_lock = threading.Lock()
        self._stats = stats
        self._drop_log = _Throttle(DROPS_LOGGED_PER_MINUTE, f"hook {hook.describe()}: dropped events")
        self._output_log = _Throttle(OUTPUT_LINES_PER_MINUTE, f"hook {hook.short()}: output lines")
        self._queue: queue.Queue[KeywordEvent | None] = queue.Queue(queue_size)
        self._threads = [
            threading.Thread(target=self._work, name=f"hook-{hook.kind}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, event: KeywordEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count("dropped")
            self._drop_log.log(
                logging.WARNING,
                [event],
                lambda e: f"hook {self.hook.describe()}: queue full, event '{e.keyword}' dropped",
            )

    def close(self, deadline: float) -> None:
        """Lets queued events run (each within its timeout) until `deadline` (monotonic), then returns."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _drain(self, pipe: IO[bytes]) -> None:
        """Reads a command's output to the end, logging whole lines within the hook's budget and
        holding at most one read (64 KiB) and one cut line in memory."""
        with pipe:
            pending = b""
            while chunk := pipe.read(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()[:OUTPUT_LINE_BYTES]
                self._log_output(lines)
            self._log_output([pending])

    def _log_output(self, lines: list[bytes]) -> None:
        name = self.hook.short()
        self._output_log.log(
            logging.INFO,
            [line for line in lines if line.strip()],
            lambda line: f"hook {name}: {line[:OUTPUT_LINE_BYTES].decode(errors='replace').rstrip()}",
        )

    def _count(self, name: str) -> None:
        with self._count_lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)

    def _work(self) -> None:
        while (event := self._queue.get()) is not None:
            self._run(event)

    def _run(self, event: KeywordEvent) -> None:
        latency_ms = (time.monotonic() - event.t_mono) * 1000
        self._stats.observe("keyword_end_to_hook", latency_ms)
        self._count("runs")
        try:
            if self.hook.kind == "command":
                env = dict(os.environ)
                env.update(
                    KWS_KEYWORD=event.keyword,
                    KWS_SCORE=f"{event.score:.4f}",
                    KWS_TIME=f"{event.t_wall:.3f}",
                    KWS_LATENCY_MS=f"{latency_ms:.1f}",
                )
                error = _run_command(self.hook, env, self._drain)
            elif self.hook.kind == "webhook":
                error = _post(self.hook, event)
            else:
                _append_jsonl(self.hook, event)
                error = None
        except subprocess.TimeoutExpired:
            self._count("timeouts")
            ended = "its process group killed" if self.hook.kind == "command" else "abandoned"
            log.warning("hook %s: timed out after %gs (%s)", self.hook.describe(), self.hook.timeout_s, ended)
            return
        except OSError as e:
            error = str(e)
        except Exception as e:  # a worker that dies would leave the queue to fill up for good
            error = f"internal error {type(e).__name__}: {e}"
        if error:
            self._count("failures")
            log.warning("hook %s failed for '%s': %s", self.hook.describe(), event.keyword, error)


class HookDispatcher:
    """Routes each event to the global hooks and to the hooks of its keyword or sequence."""

    def __init__(self, config: Config, stats: LatencyStats) -> None:
        self.runners = [HookRunner(h, stats) for h in config.hooks]
        own = [(kw.name, kw.hooks) for kw in config.keywords or ()]
        own += [(seq.name, seq.hooks) for seq in config.sequences]
        self._by_keyword = {name: [HookRunner(h, stats) for h in hooks] for name, hooks in own if hooks}
        self.runners += [r for rs in self._by_keyword.values() for r in rs]
        self._global = self.runners[: len(config.hooks)]
        self._timeout = max((r.hook.timeout_s for r in self.runners), default=0.0)

    def __call__(self, event: KeywordEvent) -> None:
        for runner in self._global + self._by_keyword.get(event.keyword, []):
            runner.submit(event)

    def close(self) -> None:
        """Drains queued hook runs within their timeouts (as on SIGTERM)."""
        deadline = time.monotonic() + self._timeout + 1.0
        for runner in self.runners:
            runner.close(deadline)
