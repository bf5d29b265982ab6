"""The running daemon: a source feeds the ring buffer, one processing thread owns the pipeline, and
events go to the hook workers. Signals only set flags; the loop acts on them between blocks.

Under systemd (Type=notify) the loop sends READY=1 once audio flows, pings the watchdog only while
blocks keep arriving (a stalled capture stops the pings, so systemd restarts the service) or while the
microphone source reopens a device it lost (a restart could do no better), and keeps STATUS= current.
SIGHUP builds a new config, model, pipeline and hook dispatcher on a helper thread while the loop goes
on processing; the loop swaps them in between two blocks, and only if all of it built. The source and
the ring buffer outlive reloads, so capture never pauses and no block is lost.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.ringbuffer import RingBuffer
from kws_daemon.audio.sources import MicSource, Source, open_source
from kws_daemon.config import Config, load, writable_by_others
from kws_daemon.detector import KeywordEvent
from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookCounters, HookDispatcher
from kws_daemon.metrics import LatencyStats, add_counters
from kws_daemon.model import Model
from kws_daemon.modelgroup import load_group
from kws_daemon.modes import Stream, make_pipeline
from kws_daemon.nearmiss import NearMissRecorder
from kws_daemon.pipeline import RATE, PipelineCounters
from kws_daemon.prometheus import Exposition, MetricsServer, add_hooks, add_latency
from kws_daemon.sdnotify import Notifier

log = logging.getLogger("kws_daemon")

STALL_S = 5.0  # without a systemd watchdog, this long without audio is logged as a stalled capture


def _open_recorder(path: str, rate: int) -> Any:
    """A WAV writer for exactly the audio the pipeline receives (for replay with `detect`)."""
    import soundfile as sf

    try:
        return sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV")
    except (sf.LibsndfileError, OSError) as e:
        raise KwsError(f"--record {path}: cannot write ({e})") from None


def warn_if_writable(config: Config) -> None:
    """Logged at start, at each reload and by check-config."""
    warning = writable_by_others(config)
    if warning:
        log.warning("%s", warning)


def load_model(config: Config) -> Model:
    """The config's model, or its `models:` as one group."""
    model = load_group(config.models, threads=config.detector.threads)
    config.check_against(model.info)
    return model


@dataclass(frozen=True)
class Runtime:
    """Everything one config builds; a reload replaces it whole or not at all."""

    config: Config
    pipeline: Stream
    hooks: HookDispatcher
    thresholds: dict[str, float]
    model_load_s: float


class Daemon:
    def __init__(self, config: Config, record: str | None = None) -> None:
        self.notifier = Notifier()  # first: it unsets NOTIFY_SOCKET before a hook command can inherit it
        self.stats = LatencyStats()  # shared by every pipeline and dispatcher, so reloads reset no histogram
        self.source: Source = open_source(config.audio)
        # from the config at start: a reload keeps it (its directory and budget are not reloaded)
        self.near_misses = NearMissRecorder(config.near_misses) if config.near_misses else None
        self.runtime = self._build(config)
        blocks = max(4, int(config.audio.buffer_s * 1000 / config.audio.block_ms))
        self.ring = RingBuffer(self.source.block_size, blocks, self.source.sample_rate)
        self._recorder = _open_recorder(record, self.source.sample_rate) if record else None
        self._lock = threading.Lock()  # what the metrics threads read together
        self.detections: Counter[str] = Counter()
        self.last_event: KeywordEvent | None = None
        self.reloads: Counter[str] = Counter()  # "ok" / "failed"
        self._replaced = PipelineCounters()  # the counts of pipelines that reloads replaced
        self._retired: list[tuple[HookDispatcher, threading.Thread]] = []  # replaced, draining or drained
        self._stop = threading.Event()
        self._reload_requested = False
        self._reloader = ThreadPoolExecutor(1, "reload")
        self._pending: Future[Runtime] | None = None
        watchdog = self.notifier.watchdog_s
        self._stall_s = watchdog / 2 if watchdog else STALL_S
        self._ready = False
        self._capture = "flowing"  # or "stalled" (no audio for _stall_s) or "lost" (device being reopened)
        self._lost = ""  # why the device was lost, when _capture is "lost"
        self._last_audio = self._next_ping = self._next_report = 0.0
        listen = config.metrics.listen
        self.metrics = MetricsServer(*listen, self.render_metrics) if listen else None

    def _build(self, config: Config) -> Runtime:
        t0 = time.monotonic()
        model = load_model(config)
        load_s = time.monotonic() - t0
        info = model.info
        pipeline = make_pipeline(
            config, model, source=self.source.name, stats=self.stats, near_misses=self.near_misses
        )
        thresholds = config.keyword_thresholds(info)
        return Runtime(config, pipeline, HookDispatcher(config, self.stats), thresholds, load_s)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop.set()

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._reload_requested = True

    def run(self) -> int:
        """Runs until a signal or the end of a file/stdin input; returns the exit status."""
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        model = self.runtime.pipeline.model
        log.info(
            "listening on %s (%d Hz) with model %s (%d labels, %s mode, loaded in %.2fs)",
            self.source.name,
            self.source.sample_rate,
            model.info.path,
            len(model.info.labels),
            self.runtime.config.mode_for(model.info),
            self.runtime.model_load_s,
        )
        warn_if_writable(self.runtime.config)
        if self.metrics is not None:
            self.metrics.start()
            log.info("metrics on %s", self.metrics.url)
            if not self.metrics.loopback:
                log.warning(
                    "metrics on %s are reachable from other machines and have no authentication; "
                    'use metrics.listen: "127.0.0.1:PORT" unless a remote Prometheus must scrape them',
                    self.metrics.url,
                )
        self.source.start(self.ring)
        try:
            self._loop()
        finally:
            self._shutdown()
        if self.source.error is not None:
            log.error("%s", self.source.error)
            return 1
        return 0

    def _loop(self) -> None:
        tick = min(0.25, self._stall_s / 4)
        self._last_audio = time.monotonic()
        self._schedule_report(self._last_audio)
        while not self._stop.is_set():
            block = self.ring.read(timeout=tick)
            now = time.monotonic()
            if block is not None:
                self._process(block, now)
            elif self.ring.exhausted:
                for event in self.runtime.pipeline.flush():
                    self._emit(event)
                break
            self._keepalive(now)
            self._poll_reload(now)
            if now >= self._next_report:
                self.report()
                self._schedule_report(now)

    def _process(self, block: AudioBlock, now: float) -> None:
        self._last_audio = now
        if self._recorder is not None:
            self._recorder.write(block.samples)
        for event in self.runtime.pipeline.process(block):
            self._emit(event)
        if not self._ready:
            self._ready = True
            self.notifier.send("READY=1", f"STATUS={self._status()}")

    def _keepalive(self, now: float) -> None:
        """Tracks the capture state, and pings the watchdog unless the capture stalled."""
        lost = self.source.lost if isinstance(self.source, MicSource) else None
        if lost is not None:
            self._lost = lost
            self._last_audio = now  # the stall clock starts again when the device is back
        state = "lost" if lost else "stalled" if now - self._last_audio > self._stall_s else "flowing"
        if state != self._capture:
            previous, self._capture = self._capture, state
            if state == "stalled":
                restart = (
                    "; watchdog pings stop, systemd restarts the service" if self.notifier.watchdog_s else ""
                )
                log.warning("no audio from %s for %gs%s", self.source.name, self._stall_s, restart)
            elif previous == "stalled":
                log.info("audio from %s flows again", self.source.name)
            self.notifier.send(f"STATUS={self._status()}")
        watchdog = self.notifier.watchdog_s
        if watchdog and self._ready and state != "stalled" and now >= self._next_ping:
            self.notifier.send("WATCHDOG=1")
            self._next_ping = now + watchdog / 4

    def _poll_reload(self, now: float) -> None:
        if self._pending is not None:
            if self._pending.done():
                self._swap(self._pending, now)
                self._pending = None
            return
        if not self._reload_requested:
            return
        self._reload_requested = False
        path = self.runtime.config.source
        if path is None:
            log.warning("SIGHUP: nothing to reload (started without --config)")
            return
        log.info("reloading %s", path)
        self.notifier.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", f"STATUS=reloading {path}"
        )
        self._pending = self._reloader.submit(self._rebuild, path)

    def _rebuild(self, path: Path) -> Runtime:
        """Runs on the reload thread. The source and the metrics endpoint keep running as they are."""
        config = load(path)
        warn_if_writable(config)
        running = self.runtime.config
        for section in ("audio", "metrics"):
            if getattr(config, section) != getattr(running, section):
                log.warning("%s: the %s section changed; it takes effect at the next restart", path, section)
        return self._build(replace(config, audio=running.audio, metrics=running.metrics))

    def _swap(self, pending: Future[Runtime], now: float) -> None:
        try:
            new = pending.result()
        except Exception as e:  # whatever the new config does wrong, the running one stays
            reason = str(e) if isinstance(e, KwsError) else f"internal error {type(e).__name__}: {e}"
            self.reloads["failed"] += 1
            log.error("reload failed, the running config stays: %s", reason)
        else:
            old = self.runtime
            closer = threading.Thread(target=old.hooks.close, name="hooks-retire", daemon=True)
            closer.start()  # the old hooks finish their queued runs off the audio path
            with self._lock:  # the metrics threads count the old pipeline and hooks exactly once
                add_counters(self._replaced, old.pipeline.counters)
                self._retired.append((old.hooks, closer))
                self.runtime = new
            self.reloads["ok"] += 1
            self._schedule_report(now)
            log.info(
                "reloaded %s: %d keywords, %d hooks, model %s (loaded in %.2fs)",
                new.config.source,
                len(new.thresholds),
                len(new.hooks.runners),
                new.pipeline.model.info.path,
                new.model_load_s,
            )
        self.notifier.send("READY=1", f"STATUS={self._status()}")

    def _schedule_report(self, now: float) -> None:
        interval = self.runtime.config.stats_interval_s
        self._next_report = now + interval if interval else float("inf")

    def _shutdown(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping: draining hooks")
        self.source.stop()
        self._reloader.shutdown(wait=False, cancel_futures=True)
        if self._recorder is not None:
            self._recorder.close()
        if self.near_misses is not None:
            self.near_misses.close()
        self.runtime.hooks.close()
        for _, closer in self._retired:
            closer.join()
        if self.metrics is not None:
            self.metrics.close()
        self.report()
        self.notifier.close()

    def _emit(self, event: KeywordEvent) -> None:
        with self._lock:
            self.detections[event.keyword] += 1
            self.last_event = event
        log.info("detected '%s' (score %.3f) at %.2fs", event.keyword, event.score, event.time_s)
        self.runtime.hooks(event)
        self.notifier.send(f"STATUS={self._status()}")

    def _status(self) -> str:
        """E.g. "listening on mic:default; 35 keywords; last: yes 0.93 at 12:01:05"."""
        if self._capture == "stalled":
            return f"stalled: no audio from {self.source.name} for {self._stall_s:g}s"
        if self._capture == "lost":
            return f"audio device lost: {self.source.name}: {self._lost}; reopening"
        status = f"listening on {self.source.name}; {len(self.runtime.thresholds)} keywords; "
        last = self.last_event
        if last is None:
            return status + "no detection yet"
        when = time.strftime("%H:%M:%S", time.localtime(last.t_wall))
        return status + f"last: {last.keyword} {last.score:.2f} at {when}"

    def _totals(self) -> tuple[PipelineCounters, dict[str, HookCounters]]:
        """Pipeline counts, and hook counts per hook kind, over everything since start (reloads included)."""
        with self._lock:
            pipeline = replace(self._replaced)
            add_counters(pipeline, self.runtime.pipeline.counters)
            dispatchers = [d for d, _ in self._retired] + [self.runtime.hooks]
        hooks: dict[str, HookCounters] = {}
        for dispatcher in dispatchers:
            for runner in dispatcher.runners:
                add_counters(hooks.setdefault(runner.hook.kind, HookCounters()), runner.counters)
        return pipeline, hooks

    def report(self) -> None:
        c, by_kind = self._totals()
        hooks = HookCounters()
        for counters in by_kind.values():
            add_counters(hooks, counters)
        log.info(
            "stats: %.1fs audio, %d windows, %d detections, %d overflows; hooks %d runs, %d failed, "
            "%d timed out, %d dropped; %s",
            c.samples / RATE,
            c.windows,
            sum(self.detections.values()),
            self.ring.overflows,
            hooks.runs,
            hooks.failures,
            hooks.timeouts,
            hooks.dropped,
            self.stats.summary(),
        )

    def render_metrics(self) -> str:
        """The /metrics page. Runs on the endpoint's threads, so it only reads."""
        runtime = self.runtime
        c, by_kind = self._totals()
        with self._lock:
            detections, last = sorted(self.detections.items()), self.last_event
        out = Exposition()
        out.add(
            "kws_detections_total",
            "counter",
            "Keyword detections.",
            [({"keyword": k}, n) for k, n in detections],
        )
        if last is not None:
            out.add(
                "kws_last_detection_timestamp_seconds",
                "gauge",
                "Unix time at which the audio of the last detection was captured.",
                [({}, last.t_wall)],
            )
        add_latency(out, self.stats)
        out.add(
            "kws_audio_seconds_total", "counter", "Audio processed (at 16 kHz).", [({}, c.samples / RATE)]
        )
        out.add("kws_audio_blocks_total", "counter", "Audio blocks processed.", [({}, c.blocks)])
        out.add(
            "kws_vad_open_blocks_total",
            "counter",
            "Blocks the VAD gate let through.",
            [({}, c.gate_open_blocks)],
        )
        out.add(
            "kws_vad_open_ratio",
            "gauge",
            "Share of blocks the VAD gate let through, since start.",
            [({}, c.gate_open_blocks / c.blocks if c.blocks else 0.0)],
        )
        out.add("kws_windows_total", "counter", "Windows scored by the model.", [({}, c.windows)])
        overflows = [({"where": "ring"}, self.ring.overflows)]
        if isinstance(self.source, MicSource):
            overflows.append(({"where": "device"}, self.source.overflows))
            out.add(
                "kws_audio_device_errors_total",
                "counter",
                "Times the capture stream ended on its own (device unplugged, sound server gone).",
                [({}, self.source.device_errors)],
            )
            out.add(
                "kws_audio_device_up",
                "gauge",
                "1 while the capture device is open, 0 while it is lost and being reopened.",
                [({}, 0 if self.source.lost else 1)],
            )
        out.add(
            "kws_audio_overflows_total",
            "counter",
            "Audio lost: ring = blocks dropped as processing lagged; device = PortAudio input overflows.",
            overflows,
        )
        add_hooks(out, by_kind)
        info = runtime.pipeline.model.info
        model_labels = {
            "path": str(info.path),
            "sha256": str(info.kws.get("sha256", "")),
            "labels": str(len(info.labels)),
        }
        out.add("kws_model_info", "gauge", "The model in use (always 1).", [(model_labels, 1)])
        out.add(
            "kws_model_load_seconds",
            "gauge",
            "Time the model in use took to load.",
            [({}, runtime.model_load_s)],
        )
        out.add(
            "kws_keyword_threshold",
            "gauge",
            "Detection threshold of each active keyword.",
            [({"keyword": k}, t) for k, t in sorted(runtime.thresholds.items())],
        )
        out.add(
            "kws_reloads_total",
            "counter",
            "Config reloads (SIGHUP) by result.",
            [({"result": r}, self.reloads[r]) for r in ("ok", "failed")],
        )
        return out.text()
