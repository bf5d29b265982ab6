"""Keyword events -> user actions (shell command, HTTP webhook, JSON lines), off the audio path.

Every hook has its own bounded queue and worker threads, so a slow, hanging or failing hook delays
neither detection nor the other hooks; when its queue is full the event is dropped for that hook
and counted. Event data reaches a command only through KWS_* environment variables, never through
its command line, so a label cannot inject shell syntax.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from kws_daemon import __version__
from kws_daemon.config import Config, HookConfig
from kws_daemon.detector import KeywordEvent
from kws_daemon.metrics import LatencyStats

log = logging.getLogger("kws_daemon.hooks")


@dataclass
class HookCounters:
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    dropped: int = 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook goes where the config says, not where a server redirects it."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _run_command(hook: HookConfig, env: dict[str, str]) -> str | None:
    """Runs the command in its own process group; returns an error, or None on exit status 0."""
    argv = list(hook.target) if isinstance(hook.target, tuple) else ["/bin/sh", "-c", hook.target]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),  # stdout may carry JSON lines: hook chatter goes to the log
        stderr=sys.stderr.fileno(),
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=hook.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return None if code == 0 else f"exit status {code}"


def _post(hook: HookConfig, event: KeywordEvent) -> str | None:
    assert isinstance(hook.target, str)
    request = urllib.request.Request(
        hook.target,
        data=json.dumps(event.to_dict()).encode(),
        headers={"Content-Type": "application/json", "User-Agent": f"kws-daemon/{__version__}"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=hook.timeout_s) as response:
            response.read(65536)
            return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except TimeoutError:
        raise subprocess.TimeoutExpired(hook.target, hook.timeout_s) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise subprocess.TimeoutExpired(hook.target, hook.timeout_s) from None
        return str(e.reason)


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

    def __init__(self, hook: HookConfig, stats: LatencyStats, queue_size: int = 16, workers: int = 2) -> None:
        self.hook = hook
        self.counters = HookCounters()
        self._count_lock = threading.Lock()
        self._stats = stats
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
            log.warning("hook %s: queue full, event '%s' dropped", self.hook.describe(), event.keyword)

    def close(self, deadline: float) -> None:
        """Lets queued events run (each within its timeout) until `deadline` (monotonic), then returns."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

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
                error = _run_command(self.hook, env)
            elif self.hook.kind == "webhook":
                error = _post(self.hook, event)
            else:
                _append_jsonl(self.hook, event)
                error = None
        except subprocess.TimeoutExpired:
            self._count("timeouts")
            log.warning("hook %s: timed out after %gs (killed)", self.hook.describe(), self.hook.timeout_s)
            return
        except OSError as e:
            error = str(e)
        if error:
            self._count("failures")
            log.warning("hook %s failed for '%s': %s", self.hook.describe(), event.keyword, error)


class HookDispatcher:
    """Routes each event to the global hooks and to the hooks of its keyword."""

    def __init__(self, config: Config, stats: LatencyStats) -> None:
        self.runners = [HookRunner(h, stats) for h in config.hooks]
        self._by_keyword = {
            kw.name: [HookRunner(h, stats) for h in kw.hooks] for kw in config.keywords or () if kw.hooks
        }
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
