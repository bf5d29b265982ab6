"""`kws-daemon serve`: a Wyoming wake-word service, for Home Assistant Assist and wyoming-satellite.

Both connection patterns work: Home Assistant opens a connection per pipeline run (`detect`,
`audio-start`, chunks, `audio-stop`); a satellite keeps one open, sends `detect` and then only
`audio-chunk`s, and sends `detect` again after each run. Each stream has its own WakeStream (VAD,
features, spotter). Unbatched, a stream's chunks are decided on the asyncio loop itself, one core per
process (`--workers` adds processes); batched, the streams' pipelines run on threads and their windows
meet in one onnxruntime call (kws_daemon.batching). Detections go back to the client, to the hooks
(their own threads) and to /metrics.

A client is not trusted: every length is checked before it is read, a connection that breaks the
protocol or sends nothing for serve.idle_timeout_s is closed with a log line, and a client that does
not read its detections holds only its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.wake import Detect, Detection, NotDetected

from kws_daemon import __version__
from kws_daemon.audio.pcm import check_format
from kws_daemon.batching import Batcher
from kws_daemon.config import Config
from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookCounters, HookDispatcher
from kws_daemon.metrics import LatencyStats, add_counters
from kws_daemon.model import KEYWORD_KINDS, Model
from kws_daemon.pipeline import RATE
from kws_daemon.prometheus import Exposition, MetricsServer, add_hooks, add_latency
from kws_daemon.sdnotify import Notifier
from kws_daemon.wakestream import Detected, WakeStream

log = logging.getLogger("kws_daemon.serve")

MAX_PAYLOAD = 1 << 20  # bytes of one event's data or payload: 1 MiB is 5 s of 16-bit 48 kHz stereo
WRITE_TIMEOUT_S = 10.0  # a client that does not read for this long is dropped
ATTRIBUTION = ("kws-daemon", "https://github.com/kws-daemon/kws-daemon")


class ProtocolError(Exception):
    """Why a connection is closed; one line."""


class BoundedReader:
    """The reader that wyoming's async_read_event reads through: a length is refused before a byte
    of it is buffered, and a silent client times out."""

    def __init__(self, reader: asyncio.StreamReader, idle_timeout_s: float) -> None:
        self._reader = reader
        self._timeout = idle_timeout_s
        self.eof = False

    async def readline(self) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.readuntil(b"\n"), self._timeout)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise ProtocolError("connection closed inside an event header") from None
            self.eof = True
            return b""
        except asyncio.LimitOverrunError:
            raise ProtocolError("event header line over 64 KiB") from None
        except TimeoutError:
            raise ProtocolError(f"nothing received for {self._timeout:g}s") from None

    async def readexactly(self, n: int) -> bytes:
        if not isinstance(n, int) or n > MAX_PAYLOAD:
            raise ProtocolError(f"event announces {n!r} bytes of data or payload (at most {MAX_PAYLOAD})")
        try:
            return await asyncio.wait_for(self._reader.readexactly(n), self._timeout)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside an event's data or payload") from None
        except TimeoutError:
            raise ProtocolError(f"nothing received for {self._timeout:g}s inside an event") from None


class HandedConnections(AsyncServer):
    """The connections that the `--workers` parent accepted and hands to this worker
    (kws_daemon.workers): one file descriptor per message on `handoff`, and a byte back for each
    that ends, which is the parent's count of this worker's streams."""

    def __init__(self, handoff: socket.socket, stopped: Callable[[], None]) -> None:
        """`stopped`: called when the parent is gone (no new connections can come)."""
        super().__init__()
        self._handoff = handoff
        self._stopped = stopped
        self._handoff.setblocking(False)
        self._opening: set[asyncio.Future[None]] = set()

    async def run(self, handler_factory: Any) -> None:
        raise NotImplementedError("a worker's WakeServer starts and stops it")

    async def start(self, handler_factory: Any) -> None:
        asyncio.get_running_loop().add_reader(self._handoff.fileno(), self._receive, handler_factory)

    def _receive(self, handler_factory: Any) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._handoff, 16, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:
                log.warning("the serve parent is gone: stopping")
                asyncio.get_running_loop().remove_reader(self._handoff.fileno())
                self._stopped()
                return
            for fd in fds:
                opening = asyncio.ensure_future(self._open(socket.socket(fileno=fd), handler_factory))
                self._opening.add(opening)
                opening.add_done_callback(self._opening.discard)

    async def _open(self, sock: socket.socket, handler_factory: Any) -> None:
        sock.setblocking(False)
        try:
            if sock.family == socket.AF_UNIX:
                reader, writer = await asyncio.open_unix_connection(sock=sock)
            else:
                reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            self._ended()
            return
        handler = handler_factory(reader, writer)
        task = asyncio.create_task(handler.run(), name="wyoming event handler")
        self._handlers[task] = handler
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._handlers.pop(task, None)
        self._ended()

    def _ended(self) -> None:
        with contextlib.suppress(OSError):
            self._handoff.send(b".")

    async def stop(self) -> None:
        if self._handoff.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._handoff.fileno())
        await super().stop()


class WakeServer:
    def __init__(self, config: Config, handoff: socket.socket | None = None, worker: int = 0) -> None:
        """`handoff`: worker `worker` of `serve --workers N` takes the connections its parent hands
        over there instead of listening on serve.uri; its streams are named wyoming:WORKER.SLOT."""
        from kws_daemon.service import load_model

        self.config = config
        self._handoff = handoff
        self._prefix = f"wyoming:{worker}." if handoff else "wyoming:"
        self.notifier = Notifier()  # first: it unsets NOTIFY_SOCKET before a hook command can inherit it
        self.stats = LatencyStats()
        t0 = time.monotonic()
        self.model: Model = load_model(config)
        self.model_load_s = time.monotonic() - t0
        serve = config.serve
        # utterances and sound windows differ in length from stream to stream: one call each.
        # Unbatched, a stream's audio is decided on the event loop itself: the worker is one thread
        # on one core, and more cores take more workers. Batching needs a thread per waiting stream
        # and pays for it in GIL hand-offs; an AST earns that back (its weights are paid once per
        # call), a head on the speech embedding does not (the backbone runs per stream anyway:
        # 96 streams on 2 workers: 1.10 cores inline, 1.34 batched on threads; docs/benchmarks.md).
        kind = self.model.info.kind
        batch = (kind == "ast" if serve.batch is None else serve.batch) and kind in KEYWORD_KINDS
        if batch and not self.model.scores_each_window_alone():
            log.warning(
                "%s/model.onnx quantises a whole batch at once (not exported by kws-daemon export), so "
                "streams would move each other's scores: serving unbatched",
                self.model.info.path,
            )
            batch = False
        self.batcher = Batcher(self.model, serve.max_batch, serve.batch_wait_ms / 1000) if batch else None
        self.hooks = HookDispatcher(config, self.stats)
        self.thresholds = config.keyword_thresholds(self.model.info)
        reported = config.reported
        names = [k for k in self.thresholds if reported is None or k in reported]
        self.names = names + [s.name for s in config.sequences]
        self.info = _info_event(self.names, self.model, config)  # built once: describe costs nothing
        # batched, a thread per connection: a stream waiting for its batch holds no other's thread
        self._workers = ThreadPoolExecutor(serve.max_connections, "stream") if self.batcher else None
        self._free = list(range(serve.max_connections))  # stream slots, the bounded metrics label
        self._lock = threading.Lock()  # what /metrics reads
        self.connections: Counter[str] = Counter()  # accepted / refused
        self.closed: Counter[str] = Counter()  # by reason
        self.detections: Counter[tuple[str, str]] = Counter()  # (keyword, slot)
        self.audio_s = 0.0
        self.windows = 0
        self.active = 0
        self._stop: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # the connections' tasks, awaited at shutdown
        listen = config.metrics.listen
        self.metrics = MetricsServer(*listen, self.render_metrics) if listen else None

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: log.warning("SIGHUP: serve does not reload its config; restart it")
        )
        uri = self.config.serve.uri
        if self._handoff is None:
            check_unix_path(uri)
        server = (
            AsyncServer.from_uri(uri)
            if self._handoff is None
            else HandedConnections(self._handoff, self._stop.set)
        )
        try:
            await server.start(lambda reader, writer: Connection(self, reader, writer))
        except OSError as e:
            raise KwsError(f"serve.uri {uri}: cannot listen ({e.strerror or e})") from None
        zeroconf = await announce(self.config) if self.config.serve.zeroconf else None
        if self.metrics is not None:
            self.metrics.start()
        log.info(
            "serving %d wake words on %s with model %s (%s mode, %s, loaded in %.2fs)",
            len(self.names),
            uri,
            self.model.info.path,
            self.config.mode_for(self.model.info),
            "batched" if self.batcher else "unbatched",
            self.model_load_s,
        )
        # a worker tells its parent where its /metrics are (systemd ignores a field it does not know)
        where = [f"KWS_METRICS={self.metrics.url}"] if self._handoff and self.metrics else []
        self.notifier.send("READY=1", f"STATUS={self._status()}", *where)
        watchdog = asyncio.create_task(self._watchdog()) if self.notifier.watchdog_s else None
        try:
            await self._stop.wait()
        finally:
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            if watchdog is not None:
                watchdog.cancel()
            if zeroconf is not None:
                await zeroconf.async_close()
            await server.stop()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=5.0)
            if self._workers is not None:
                self._workers.shutdown(wait=True)
            if self.batcher is not None:
                self.batcher.close()
            self.hooks.close()
            if self.metrics is not None:
                self.metrics.close()
            self.notifier.close()
            log.info("stopped: %s", self._status())
        return 0

    async def _watchdog(self) -> None:
        """Pings while the loop turns; a loop stuck in a call stops them and systemd restarts us."""
        assert self.notifier.watchdog_s is not None
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(self.notifier.watchdog_s / 4)

    def open_slot(self) -> int | None:
        with self._lock:
            if not self._free:
                self.connections["refused"] += 1
                return None
            self.connections["accepted"] += 1
            self.active += 1
            return self._free.pop(0)

    def close_slot(self, slot: int, reason: str) -> None:
        with self._lock:
            self._free.append(slot)
            self.active -= 1
            self.closed[reason] += 1
        self.notifier.send(f"STATUS={self._status()}")

    def stream(self, slot: int, rate: int, start_ms: int) -> WakeStream:
        model = self.batcher.stream_model() if self.batcher else self.model
        return WakeStream(self.config, model, f"{self._prefix}{slot}", self.stats, rate, start_ms)

    async def process(self, stream: WakeStream, call: Callable[[], list[Detected]]) -> list[Detected]:
        """Runs one of `stream`'s calls: here, or batched on a stream thread inside `working`."""
        if self._workers is None:
            return self._work(stream, call)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, self._work, stream, call)

    def _work(self, stream: WakeStream, call: Callable[[], list[Detected]]) -> list[Detected]:
        counters = stream.pipeline.counters
        samples, windows = counters.samples, counters.windows
        if self.batcher is None:
            detected = call()
        else:
            with self.batcher.working():
                detected = call()
        with self._lock:
            self.audio_s += (counters.samples - samples) / RATE
            self.windows += counters.windows - windows
        return detected

    def detected(self, slot: int, detection: Detected) -> None:
        event = detection.event
        with self._lock:
            self.detections[(event.keyword, str(slot))] += 1
        log.info(
            "detected '%s' (score %.3f) on stream %d at %.2fs", event.keyword, event.score, slot, event.time_s
        )
        self.hooks(event)

    def _status(self) -> str:
        with self._lock:
            n, active = sum(self.detections.values()), self.active
        return f"serving {self.config.serve.uri}; {active} streams; {n} detections"

    def render_metrics(self) -> str:
        with self._lock:
            detections = sorted(self.detections.items())
            connections, closed = dict(self.connections), dict(self.closed)
            audio_s, windows, active = self.audio_s, self.windows, self.active
        out = Exposition()
        out.add(
            "kws_detections_total",
            "counter",
            "Keyword detections, by stream slot (0 to serve.max_connections - 1, reused).",
            [({"keyword": k, "stream": s}, n) for (k, s), n in detections],
        )
        out.add("kws_wyoming_streams", "gauge", "Open Wyoming connections.", [({}, active)])
        out.add(
            "kws_wyoming_connections_total",
            "counter",
            "Wyoming connections, accepted or refused (serve.max_connections reached).",
            [({"result": r}, connections.get(r, 0)) for r in ("accepted", "refused")],
        )
        out.add(
            "kws_wyoming_closed_total",
            "counter",
            "Wyoming connections closed: by the client, or by us for a protocol error.",
            [({"reason": r}, n) for r, n in sorted(closed.items())],
        )
        out.add("kws_audio_seconds_total", "counter", "Audio processed (at 16 kHz).", [({}, audio_s)])
        out.add("kws_windows_total", "counter", "Windows scored by the model.", [({}, windows)])
        if self.batcher is not None:
            c = self.batcher.counters
            out.add("kws_batches_total", "counter", "onnxruntime calls of the batcher.", [({}, c.calls)])
            out.add("kws_batched_windows_total", "counter", "Windows scored in them.", [({}, c.windows)])
        add_latency(out, self.stats)
        by_kind: dict[str, HookCounters] = {}
        for runner in self.hooks.runners:
            add_counters(by_kind.setdefault(runner.hook.kind, HookCounters()), runner.counters)
        add_hooks(out, by_kind)
        return out.text()


class Connection(AsyncEventHandler):
    """One client. Its stream starts at `audio-start`, or at the first chunk when the client sends
    none (wyoming-satellite), and ends at `audio-stop`; `detect` arms names for the next run."""

    def __init__(self, server: WakeServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix socket"
        self.stream: WakeStream | None = None
        self.names: set[str] | None = None  # None: every name
        self.detected_in_run = False
        self._start_ms: int | None = None

    async def stop(self) -> None:
        """Server shutdown (wyoming's AsyncServer.stop): the read loop sees the end of the stream."""
        self.writer.close()
        self.reader.feed_eof()

    async def run(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)
        slot = self.server.open_slot()
        if slot is None:
            log.warning(
                "refused %s: serve.max_connections (%d) reached",
                self.peer,
                self.server.config.serve.max_connections,
            )
            self.writer.close()
            return
        self.slot = slot
        reader = BoundedReader(self.reader, self.server.config.serve.idle_timeout_s)
        reason = "client"
        log.debug("stream %d: %s connected", slot, self.peer)
        try:
            while True:
                event = await async_read_event(reader)  # type: ignore[arg-type]
                if event is None:
                    if reader.eof:
                        break
                    raise ProtocolError("malformed event (not a JSON object, or bad lengths)")
                await self.handle_event(event)
        except (ProtocolError, KwsError) as e:
            reason = "protocol"
            log.warning("closing %s (stream %d): %s", self.peer, slot, e)
        except (ConnectionError, asyncio.CancelledError):
            reason = "client"
        except Exception as e:  # a hostile event can raise anything in parsing; the server goes on
            reason = "protocol"
            log.warning("closing %s (stream %d): bad event: %s: %s", self.peer, slot, type(e).__name__, e)
        finally:
            self.writer.close()
            self.server.close_slot(slot, reason)

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write(self.server.info)
        elif Ping.is_type(event.type):
            await self.write(Pong(text=Ping.from_event(event).text).event())
        elif Detect.is_type(event.type):
            names = Detect.from_event(event).names
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise ProtocolError(f"detect: names must be a list of strings (got {names!r})")
            self.names = set(names) if names else None
            unknown = (self.names or set()) - set(self.server.names)
            if unknown:
                log.warning("stream %d: detect names %s are not served here", self.slot, sorted(unknown))
            self.detected_in_run = False
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            await self._end_stream()  # a start without a stop: the old stream ends here
            self._open(start.rate, start.timestamp)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if self.stream is None:
                self._open(chunk.rate, chunk.timestamp)
            stream = self.stream
            assert stream is not None
            feed = lambda: stream.feed(chunk.audio, chunk.rate, chunk.width, chunk.channels)  # noqa: E731
            await self._send(await self.server.process(stream, feed))
        elif AudioStop.is_type(event.type):
            await self._end_stream()
            if not self.detected_in_run:
                await self.write(NotDetected().event())
            self.detected_in_run = False
        else:
            log.debug("stream %d: ignoring a %r event", self.slot, event.type)
        return True

    def _open(self, rate: Any, timestamp: Any) -> None:
        rate, _, _ = check_format(rate, 2, 1)
        start_ms = timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else 0
        self.stream = self.server.stream(self.slot, rate, start_ms)

    async def _end_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await self._send(await self.server.process(stream, stream.finish))

    async def _send(self, detections: list[Detected]) -> None:
        for d in detections:
            if self.names is not None and d.name not in self.names:
                continue
            self.detected_in_run = True
            self.server.detected(self.slot, d)
            await self.write(Detection(name=d.name, timestamp=d.timestamp_ms).event())

    async def write(self, event: Event) -> None:
        try:
            await asyncio.wait_for(async_write_event(event, self.writer), WRITE_TIMEOUT_S)
        except TimeoutError:
            raise ProtocolError(f"client read nothing for {WRITE_TIMEOUT_S:g}s") from None


async def announce(config: Config) -> Any:
    """Announces serve.uri as _wyoming._tcp for Home Assistant; the zeroconf handle to close."""
    uri = config.serve.uri
    parsed = urlparse(uri)
    if parsed.scheme != "tcp" or parsed.port is None:
        raise KwsError(f"serve.zeroconf: needs a tcp:// uri (got {uri})")
    try:
        from wyoming.zeroconf import HomeAssistantZeroconf
    except ImportError:
        raise KwsError(
            "serve.zeroconf: needs the zeroconf package: pip install 'kws-daemon[zeroconf]'"
        ) from None
    host = None if parsed.hostname in ("0.0.0.0", "::") else parsed.hostname
    name = config.serve.zeroconf_name or os.uname().nodename
    announcer = HomeAssistantZeroconf(port=parsed.port, name=name, host=host)
    await announcer.register_server()
    log.info("announced %s._wyoming._tcp.local. on %s:%d", name, announcer.host, parsed.port)
    if announcer.host.startswith("127.") or announcer.host == "::1":
        log.warning(
            "serve.zeroconf announces %s, which only this machine reaches; for Home Assistant "
            "elsewhere set serve.uri: tcp://0.0.0.0:%d",
            announcer.host,
            parsed.port,
        )
    return announcer._aiozc  # the library's announcer has no close of its own


def _info_event(names: list[str], model: Model, config: Config) -> Event:
    """Built once: `describe` is answered without any work (Home Assistant waits 1 s at most)."""
    kws = model.info.kws
    listed = kws.get("languages")
    languages = [str(x) for x in listed] if isinstance(listed, list) and listed else ["en"]
    made_by = Attribution(name=str(kws.get("attribution", ATTRIBUTION[0])), url=ATTRIBUTION[1])
    sequences = {s.name: s.words for s in config.sequences}
    models = [
        WakeModel(
            name=name,
            attribution=made_by,
            installed=True,
            description=(
                f"'{' '.join(sequences[name])}' in sequence"
                if name in sequences
                else f"the {'phrase' if ' ' in name else 'word'} '{name}'"
            )
            + f" ({config.mode_for(model.info)} mode)",
            version=None,
            languages=languages,
            phrase=" ".join(sequences[name]) if name in sequences else name,
        )
        for name in names
    ]
    program = WakeProgram(
        name="kws-daemon",
        attribution=Attribution(name=ATTRIBUTION[0], url=ATTRIBUTION[1]),
        installed=True,
        description="Keyword spotting with an Audio Spectrogram Transformer (int8 ONNX)",
        version=__version__,
        models=models,
    )
    return Info(wake=[program]).event()


def check_unix_path(uri: str) -> None:
    """The wyoming library unlinks a unix socket's path before binding: never a file that is not a socket."""
    parsed = urlparse(uri)
    if parsed.scheme != "unix":
        return
    path = Path(parsed.path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise KwsError(f"serve.uri {uri}: directory {path.parent} does not exist") from None
        return
    if not stat.S_ISSOCK(mode):
        raise KwsError(f"serve.uri {uri}: {path} exists and is not a socket; not replacing it")
