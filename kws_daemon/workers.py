"""`serve --workers N`: N serve processes on one listening socket, supervised as systemd supervises one.

The parent listens on serve.uri, accepts, and hands each connection (its file descriptor, over a
socketpair) to the ready worker with the fewest open streams; a worker sends a byte back for each
stream that ends. Least connections, as HAProxy balances machines: SO_REUSEPORT's hash of the
address split 48 satellites 21/27, and the fuller worker falls behind first. A worker being
restarted gets nothing: its clients reconnect to the others, and with none ready connections wait
in the backlog, never refused.
Each worker is a `kws-daemon serve` process whose NOTIFY_SOCKET is the parent's, so it reports READY,
STATUS and WATCHDOG pings exactly as it would to systemd (plus where its /metrics are). The parent
says READY to systemd once every worker is ready and pings systemd's watchdog while its own loop
turns; a worker whose pings stop for serve.worker_watchdog_s is killed and started again (its
clients reconnect to the others), as is one that exits. SIGTERM stops all of them; SIGHUP replaces
them one at a time, each new one reading the config afresh before its predecessor stops.
/metrics serves every worker's families with a `worker` label, and the parent's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kws_daemon.config import Config
from kws_daemon.errors import KwsError
from kws_daemon.prometheus import Exposition, MetricsServer
from kws_daemon.sdnotify import Notifier
from kws_daemon.serve import announce, check_unix_path

log = logging.getLogger("kws_daemon.workers")

READY_TIMEOUT_S = 120.0  # loading a model and opening the socket, on a slow board
STOP_TIMEOUT_S = 60.0  # a worker's graceful stop: hooks finish within their own timeouts
_STATUS = re.compile(r"; (\d+) streams; (\d+) detections")


def default_workers() -> int:
    """One per core this process may run on (its CPU affinity, as a container or systemd sets it)."""
    return len(os.sched_getaffinity(0))


def listen(uri: str) -> socket.socket:
    """serve.uri's listening socket, the parent's."""
    parsed = urlparse(uri)
    try:
        if parsed.scheme == "unix":
            check_unix_path(uri)  # an old socket may be replaced, never another file
            Path(parsed.path).unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(parsed.path)
            sock.listen(1024)
        else:
            assert parsed.hostname is not None and parsed.port is not None  # config.wyoming_uri checked
            family = socket.AF_INET6 if ":" in parsed.hostname else socket.AF_INET
            sock = socket.create_server((parsed.hostname, parsed.port), family=family, backlog=1024)
    except OSError as e:
        raise KwsError(f"serve.uri {uri}: cannot listen ({e.strerror or e})") from None
    sock.setblocking(False)
    return sock


def merge_metrics(texts: dict[str, str]) -> list[str]:
    """Prometheus text of several workers as one exposition: each family's HELP and TYPE once,
    then every worker's samples with its `worker` label."""
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in texts.items():
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                family = line.split()[2]
                heads.setdefault(family, [])
                if len(heads[family]) < 2 and line not in heads[family]:
                    heads[family].append(line)
                continue
            if not line.strip():
                continue
            name, brace, rest = line.partition("{")
            if brace:
                labelled = f'{name}{{worker="{worker}",{rest}'
            else:
                name, _, value = line.partition(" ")
                labelled = f'{name}{{worker="{worker}"}} {value}'
            samples.setdefault(family, []).append(labelled.replace(",}", "}"))
    return [line for family, head in heads.items() for line in (*head, *samples.get(family, []))]


@dataclass
class Worker:
    """One serve process and the datagram socket it reports to."""

    index: int
    proc: asyncio.subprocess.Process
    notify: socket.socket
    handoff: socket.socket  # the parent's end of the pair that carries connections over
    started: float
    streams: int = 0  # handed over and not yet ended
    ready: bool = False
    last_ping: float = 0.0
    status: str = ""
    metrics_url: str | None = None
    retired: bool = False  # dead or killed: being replaced, not supervised any more
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def takes_connections(self) -> bool:
        """Ready, supervised, and its end of the handoff pair still open (closed: it exited)."""
        return self.ready and not self.retired and self.handoff.fileno() >= 0


class WorkerPool:
    def __init__(self, config: Config, argv: list[str], workers: int) -> None:
        """`argv`: this `serve` command line; each worker runs it with its slot added."""
        self.notifier = Notifier()  # first: it unsets NOTIFY_SOCKET, which the workers get their own of
        self.config = config
        self.argv = argv
        self.count = workers
        self.watchdog_s = config.serve.worker_watchdog_s
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._listening = listen(config.serve.uri)
        self._waiting: list[socket.socket] = []  # accepted while no worker was ready
        self._dir = Path(tempfile.mkdtemp(prefix="kws-serve-workers-"))
        self._stop: asyncio.Event | None = None
        self._reloading = False
        self._tasks: set[asyncio.Task[Any]] = set()
        listen_at = config.metrics.listen
        self.metrics = MetricsServer(*listen_at, self.render_metrics) if listen_at else None

    def run(self) -> int:
        try:
            return asyncio.run(self._main())
        finally:
            for sock in [self._listening, *self._waiting]:
                sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            uri = urlparse(self.config.serve.uri)
            if uri.scheme == "unix":
                Path(uri.path).unlink(missing_ok=True)

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        started: list[Worker] = []
        try:
            for i in range(self.count):
                started.append(await self._spawn(i))
            for worker in started:
                if not await self._ready(worker):
                    code = worker.proc.returncode
                    raise KwsError(
                        f"serve worker {worker.index} did not become ready"
                        + (f" (exit status {code})" if code is not None else "")
                    )
                self.workers[worker.index] = worker
        except BaseException:
            await asyncio.gather(*(self._terminate(w) for w in started if w.proc.returncode is None))
            raise
        zeroconf = None
        if self.config.serve.zeroconf:
            zeroconf = await announce(self.config)
        if self.metrics is not None:
            self.metrics.start()
        loop.add_reader(self._listening.fileno(), self._accept)
        log.info("serving %s with %d workers (pids %s)", self.config.serve.uri, self.count, self._pids())
        self.notifier.send("READY=1", f"STATUS={self._status()}")
        try:
            await self._supervise()
        finally:
            loop.remove_reader(self._listening.fileno())
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            if zeroconf is not None:
                await zeroconf.async_close()
            await asyncio.gather(*(self._terminate(w) for w in self.workers.values()))
            if self.metrics is not None:
                self.metrics.close()
            log.info("stopped %d workers", self.count)
            self.notifier.close()
        return 0

    async def _supervise(self) -> None:
        assert self._stop is not None
        ping_every = self.notifier.watchdog_s / 4 if self.notifier.watchdog_s else None
        next_ping = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            for index, worker in list(self.workers.items()):
                if worker.retired:
                    continue
                if worker.proc.returncode is not None:
                    log.warning(
                        "worker %d (pid %d) exited with status %d; starting it again",
                        index,
                        worker.proc.pid,
                        worker.proc.returncode,
                    )
                    self._replace(worker)
                elif now - worker.last_ping > self.watchdog_s:
                    log.warning(
                        "worker %d (pid %d) sent no watchdog ping for %.1fs; killing and restarting it",
                        index,
                        worker.proc.pid,
                        now - worker.last_ping,
                    )
                    worker.proc.kill()
                    self._replace(worker)
            if ping_every is not None and now >= next_ping:
                self.notifier.send("WATCHDOG=1")
                next_ping = now + ping_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(0.25, self.watchdog_s / 4))

    def _replace(self, old: Worker) -> None:
        """Starts worker `old.index` again; `old` is dead or killed."""
        self.restarts += 1
        old.retired = True
        task = asyncio.ensure_future(self._restart(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, old: Worker) -> None:
        await old.proc.wait()
        self._close_sockets(old)
        await asyncio.sleep(1.0 if old.ready else 5.0)  # one that never got ready may fail again
        if self._stop is not None and self._stop.is_set():
            return
        new = await self._spawn(old.index)
        self.workers[old.index] = new
        if await self._ready(new):
            log.info("worker %d is back (pid %d)", new.index, new.proc.pid)

    def _reload(self) -> None:
        if self._reloading:
            log.warning("SIGHUP: a reload is already under way")
            return
        task = asyncio.ensure_future(self._roll())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _roll(self) -> None:
        """One worker at a time: the new one ready (the config read afresh) before the old one stops."""
        self._reloading = True
        self.notifier.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading workers"
        )
        log.info("reloading: replacing %d workers one at a time", self.count)
        try:
            for index in range(self.count):
                new = await self._spawn(index)
                if not await self._ready(new):
                    log.error("reload: the new worker %d did not become ready; keeping the others", index)
                    await self._terminate(new)
                    return
                old, self.workers[index] = self.workers.get(index), new
                if old is not None:
                    await self._terminate(old)
            log.info("reloaded: %d workers (pids %s)", self.count, self._pids())
        finally:
            self._reloading = False
            self.notifier.send("READY=1", f"STATUS={self._status()}")

    async def _spawn(self, index: int) -> Worker:
        path = self._dir / f"worker-{index}-{time.monotonic_ns()}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(str(path))
        notify.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC=str(int(self.watchdog_s * 1e6)))
        env.pop("WATCHDOG_PID", None)
        env.pop("LISTEN_FDS", None)
        handoff, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        handoff.setblocking(False)
        fd = theirs.fileno()
        command = [sys.executable, "-m", "kws_daemon", *self.argv, "--worker", f"{index}:{fd}"]
        try:
            proc = await asyncio.create_subprocess_exec(*command, env=env, pass_fds=(fd,))
        finally:
            theirs.close()
        now = time.monotonic()
        worker = Worker(index, proc, notify, handoff, started=now, last_ping=now)
        loop = asyncio.get_running_loop()
        loop.add_reader(notify.fileno(), self._notified, worker)
        loop.add_reader(handoff.fileno(), self._ended, worker)
        return worker

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, say: connections wait in the backlog
                log.warning("serve: cannot accept connections for a second: %s", e)
                loop = asyncio.get_running_loop()
                loop.remove_reader(self._listening.fileno())
                loop.call_later(1.0, self._listen_again)
                return
            self._waiting.append(conn)
            self._hand_waiting()

    def _listen_again(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            asyncio.get_running_loop().add_reader(self._listening.fileno(), self._accept)

    def _hand_waiting(self) -> None:
        """Each waiting connection to the ready worker with the fewest streams."""
        while self._waiting:
            ready = [w for w in self.workers.values() if w.takes_connections]
            for worker in sorted(ready, key=lambda w: (w.streams, w.index)):
                try:
                    socket.send_fds(worker.handoff, [b"c"], [self._waiting[0].fileno()])
                    break
                except BlockingIOError:  # its end is full: hung, which its watchdog will tell
                    continue
                except OSError:  # exited: the supervisor replaces it
                    self._close_handoff(worker)
            else:
                return  # none takes it now: handed over when a worker is ready
            worker.streams += 1
            self._waiting.pop(0).close()  # the worker has its own descriptor of it

    def _ended(self, worker: Worker) -> None:
        """A byte from a worker for each of its streams that ended."""
        while True:
            try:
                message = worker.handoff.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:  # the worker is gone
                self._close_handoff(worker)
                return
            worker.streams -= len(message)

    def _close_handoff(self, worker: Worker) -> None:
        if worker.handoff.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(worker.handoff.fileno())
            worker.handoff.close()

    def _notified(self, worker: Worker) -> None:
        try:
            message = worker.notify.recv(4096).decode(errors="replace")
        except OSError:
            return
        worker.last_ping = time.monotonic()
        for line in message.split("\n"):
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                worker.ready = True
                worker.ready_event.set()
                self._hand_waiting()
            elif key == "STATUS":
                worker.status = value
            elif key == "KWS_METRICS":
                worker.metrics_url = value
        if worker.ready and self.workers.get(worker.index) is worker and not self._reloading:
            self.notifier.send(f"STATUS={self._status()}")

    async def _ready(self, worker: Worker) -> bool:
        exited = asyncio.ensure_future(worker.proc.wait())
        readied = asyncio.ensure_future(worker.ready_event.wait())
        await asyncio.wait({exited, readied}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        readied.cancel()
        return worker.ready and worker.proc.returncode is None

    async def _terminate(self, worker: Worker) -> None:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("worker %d (pid %d) did not stop; killing it", worker.index, worker.proc.pid)
                worker.proc.kill()
                await worker.proc.wait()
        self._close_sockets(worker)

    def _close_sockets(self, worker: Worker) -> None:
        self._close_handoff(worker)
        if worker.notify.fileno() < 0:
            return
        asyncio.get_running_loop().remove_reader(worker.notify.fileno())
        path = worker.notify.getsockname()
        worker.notify.close()
        Path(path).unlink(missing_ok=True)

    def _pids(self) -> str:
        return ", ".join(str(w.proc.pid) for w in self.workers.values())

    def _status(self) -> str:
        """The workers' STATUS lines summed: "serving URI; 3 streams; 5 detections; 2/2 workers"."""
        streams = detections = ready = 0
        for worker in self.workers.values():
            ready += worker.ready and worker.proc.returncode is None
            if match := _STATUS.search(worker.status):
                streams += int(match[1])
                detections += int(match[2])
        return (
            f"serving {self.config.serve.uri}; {streams} streams; {detections} detections; "
            f"{ready}/{self.count} workers"
        )

    def render_metrics(self) -> str:
        texts = {}
        for index, worker in sorted(self.workers.items()):
            if worker.metrics_url is None or worker.proc.returncode is not None:
                continue
            try:
                with urllib.request.urlopen(worker.metrics_url, timeout=2) as response:
                    texts[str(index)] = response.read().decode()
            except OSError as e:  # a hung or restarting worker: the others are still served
                log.debug("metrics of worker %d: %s", index, e)
        own = Exposition()
        ready = sum(w.ready and w.proc.returncode is None for w in self.workers.values())
        own.add("kws_serve_workers", "gauge", "Serve worker processes that are ready.", [({}, ready)])
        own.add(
            "kws_serve_worker_restarts_total",
            "counter",
            "Workers started again after they exited or stopped answering their watchdog.",
            [({}, self.restarts)],
        )
        return "\n".join([*merge_metrics(texts), own.text().rstrip("\n")]) + "\n"
