"""`kws-daemon bench`: the daemon's own pipeline over a long stream, timed the way a user meets it.

Three passes over one loaded model, each with a fresh Pipeline and a real jsonl hook:

- fast: blocks as fast as the pipeline takes them: real-time factor, CPU seconds per audio second
  (split by the VAD gate), per-stage compute latency, block-in → decision latency;
- realtime: the stream paced as a microphone delivers it (FileSource realtime → RingBuffer →
  Pipeline → HookDispatcher, the daemon's loop minus signals): per-stage latency with the capture
  queue, keyword end → hook started, CPU % of one core while the gate is open and while it is shut;
- idle: quiet-room noise in real time, the CPU a user sees while nobody speaks.

CPU is process CPU time (every thread: source, pipeline, hook workers), so it is what `top` shows.
The detector threshold defaults to 0 (the top label fires whenever it is a keyword, at most once
per refractory period), so keyword end → hook has samples with any model, trained or not.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.ringbuffer import RingBuffer
from kws_daemon.audio.sources import FileSource, file_blocks, read_audio
from kws_daemon.audio.streams import generated_stream, idle_stream, write_wav
from kws_daemon.audio.voicing import voiced_runs
from kws_daemon.compare import checkpoint_of, compare
from kws_daemon.config import Config, HookConfig
from kws_daemon.console import Progress, table, write_json
from kws_daemon.detector import KeywordEvent
from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookDispatcher
from kws_daemon.machine import Contention, machine
from kws_daemon.metrics import LatencyStats, distribution
from kws_daemon.model import Model
from kws_daemon.modes import make_pipeline
from kws_daemon.pipeline import RATE
from kws_daemon.service import load_model

STAGE_NAMES = {
    "queue": "capture queue",
    "vad": "VAD",
    "features": "features",
    "inference": "inference",
    "detection": "detection",
    "hook_dispatch": "hook dispatch",
    "keyword_end_to_event": "keyword end → event",
    "keyword_end_to_hook": "keyword end → hook started",
    "word_end_to_hook": "word end (audio) → hook started",
}


def input_stream(path: str, seconds: float | None) -> np.ndarray:
    """A recording (any rate, WAV/FLAC) at 16 kHz, cut to `seconds` when given."""
    samples, rate = read_audio(path)
    audio = Resampler(rate, RATE)(samples, last=True)
    return audio[: int(seconds * RATE)] if seconds else audio


def bench_config(config: Config, events_path: Path, threshold: float) -> Config:
    """The user's config with one jsonl hook instead of theirs (which never fire) and one threshold."""
    keywords = config.keywords and tuple(replace(k, threshold=None, hooks=()) for k in config.keywords)
    return replace(
        config,
        hooks=(HookConfig("jsonl", str(events_path)),),
        keywords=keywords,
        detector=replace(config.detector, threshold=threshold),
    )


class BenchStats(LatencyStats):
    """The pipeline's and the hooks' stages, for the events the bench dispatches, plus `hook_dispatch`.

    keyword_end_to_event is taken from the dispatched events only (see _Timed._emit). A hook worker
    reports keyword_end_to_hook = start − event.t_mono (ms); the bench notes each dispatched event's
    t_mono and the instant it dispatched it, so that report identifies its event (t_mono ≈ now − ms)
    and gives `hook_dispatch` = (t_mono + ms) − dispatched. `word_end_to_hook` adds how far the
    event's keyword end (the endpointer's, or a window's) lies after the end of the voiced word
    found in the audio itself (kws_daemon.audio.voicing), so it owes nothing to the VAD.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dispatched: dict[float, tuple[float, float | None]] = {}
        self._pending_lock = threading.Lock()

    def dispatching(self, event: KeywordEvent, behind_word_end_s: float | None) -> None:
        super().observe("keyword_end_to_event", event.latency_ms["keyword_end_to_event"])
        with self._pending_lock:
            self._dispatched[event.t_mono] = (time.monotonic(), behind_word_end_s)

    def observe(self, stage: str, ms: float) -> None:
        if stage == "keyword_end_to_event":
            return
        super().observe(stage, ms)
        if stage != "keyword_end_to_hook":
            return
        t_event = time.monotonic() - ms / 1000
        with self._pending_lock:
            if not self._dispatched:
                return
            key = min(self._dispatched, key=lambda t: abs(t - t_event))
            dispatched, behind_s = self._dispatched.pop(key)
        super().observe("hook_dispatch", (key + ms / 1000 - dispatched) * 1000)
        if behind_s is not None:
            super().observe("word_end_to_hook", ms + behind_s * 1000)


@dataclass
class GateSplit:
    """Process CPU seconds attributed block by block to the VAD gate's state, with the audio and wall
    seconds of those blocks.

    Per gate state, CPU is divided by audio seconds: in real time that is the share of a core
    while keeping up, and it stays meaningful while a slow model catches up on a backlog (when
    CPU per wall second of the catching-up blocks would read ~100 % whatever the gate did).
    """

    cpu: dict[bool, float] = field(default_factory=lambda: {True: 0.0, False: 0.0})
    audio: dict[bool, float] = field(default_factory=lambda: {True: 0.0, False: 0.0})
    wall: float = 0.0

    def add(self, is_open: bool, cpu: float, wall: float, audio: float) -> None:
        self.cpu[is_open] += cpu
        self.audio[is_open] += audio
        self.wall += wall

    def cpu_s(self) -> float:
        return self.cpu[True] + self.cpu[False]

    def per_audio_s(self, is_open: bool | None = None) -> float:
        if is_open is None:
            cpu, audio = self.cpu_s(), self.audio[True] + self.audio[False]
        else:
            cpu, audio = self.cpu[is_open], self.audio[is_open]
        return cpu / audio if audio else float("nan")

    def percent(self) -> float:
        """CPU over wall time, % of one core: what `top` shows for the whole run."""
        return 100 * self.cpu_s() / self.wall if self.wall else float("nan")

    def gate_open_share(self) -> float:
        total = self.audio[True] + self.audio[False]
        return self.audio[True] / total if total else float("nan")


def stage_table(stats: LatencyStats) -> dict[str, dict[str, float]]:
    out = {}
    for name, latency in stats.stages().items():
        p50, p95, p99 = latency.percentiles()
        out[name] = {"p50": p50, "p95": p95, "p99": p99, "count": latency.count}
    return out


class _Timed:
    """Runs blocks through a pipeline and its hooks, attributing CPU and wall time to gate states.

    In running mode only events on windows that end in the block just processed are dispatched and
    timed. The others are pre-roll windows, re-examined when the gate opens, which ended before the
    speech that opened it: no spoken keyword ends there, but the bench's threshold-0 detector fires
    on them, and counting them would charge the VAD's look-back to keyword-end latency. (A command
    is decided after its silence, so its word always ended in an earlier block.)
    `word_ends`: the voiced words' ends in the stream (seconds), for `word_end_to_hook`.
    """

    def __init__(
        self, config: Config, model: Model, source: str, word_ends: np.ndarray | None = None
    ) -> None:
        self._running = config.mode_for(model.info) == "running"
        self._word_ends = word_ends
        self.stats = BenchStats()
        self.pipeline = make_pipeline(config, model, source=source, stats=self.stats)
        self.hooks = HookDispatcher(config, self.stats)
        self.split = GateSplit()
        self.decision_ms: list[float] = []  # process() time of blocks that ended in a decision
        self.events = 0
        self.preroll_events = 0
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        self.started = self._wall

    def block(self, block: AudioBlock) -> None:
        counters = self.pipeline.counters
        opened, windows, samples = counters.gate_open_blocks, counters.windows, counters.samples
        start = time.perf_counter()
        self._emit(self.pipeline.process(block), samples)
        cpu, wall = time.process_time(), time.perf_counter()
        if self.pipeline.counters.windows > windows:
            self.decision_ms.append((wall - start) * 1000)
        is_open = self.pipeline.counters.gate_open_blocks > opened
        self.split.add(is_open, cpu - self._cpu, wall - self._wall, len(block.samples) / block.sample_rate)
        self._cpu, self._wall = cpu, wall

    def finish(self) -> float:
        """Flushes, drains the hooks; returns the wall seconds since the start."""
        self._emit(self.pipeline.flush(), self.pipeline.counters.samples)
        self.hooks.close()
        return time.perf_counter() - self.started

    def _emit(self, events: list[KeywordEvent], block_start: int) -> None:
        for event in events:
            if self._running and event.time_s * RATE <= block_start:
                self.preroll_events += 1
                continue
            self.events += 1
            self.stats.dispatching(event, self._behind_word_end(event.time_s))
            self.hooks(event)

    def _behind_word_end(self, time_s: float) -> float | None:
        """How far the event's keyword end lies after the last voiced word's end (None: no word
        ended within the 1.5 s before it)."""
        if self._word_ends is None:
            return None
        ended = self._word_ends[self._word_ends <= time_s + 0.05]
        if not len(ended) or time_s - ended[-1] > 1.5:
            return None
        return float(time_s - ended[-1])


def fast_pass(config: Config, model: Model, path: Path, seconds: float) -> dict[str, Any]:
    rate, blocks = file_blocks(path, config.audio.block_ms)
    timed = _Timed(config, model, str(path))
    progress = Progress("bench: fast", seconds, " s")
    for samples in blocks:
        timed.block(AudioBlock(samples, rate, time.monotonic(), time.time()))
        progress.advance(len(samples) / rate)
    wall = timed.finish()
    progress.close()
    split = timed.split
    return {
        "wall_s": wall,
        "cpu_s": split.cpu_s(),
        "real_time_factor": wall / seconds,
        "cpu_per_audio_s": split.per_audio_s(),
        "cpu_per_audio_s_gate_open": split.per_audio_s(True),
        "cpu_per_audio_s_gate_closed": split.per_audio_s(False),
        "gate_open_share": split.gate_open_share(),
        "windows": timed.pipeline.counters.windows,
        "events": timed.events,
        "decision_ms": distribution(timed.decision_ms),
        "stages": {
            k: v for k, v in stage_table(timed.stats).items() if not k.startswith(("keyword", "hook"))
        },
    }


def realtime_pass(
    config: Config,
    model: Model,
    path: Path,
    seconds: float,
    what: str,
    word_ends: np.ndarray | None = None,
) -> dict[str, Any]:
    """The daemon's loop on a paced file source: source thread → ring buffer → pipeline → hooks."""
    source = FileSource(str(path), config.audio.block_ms, realtime=True)
    capacity = max(4, int(config.audio.buffer_s * 1000 / config.audio.block_ms))
    ring = RingBuffer(source.block_size, capacity, source.sample_rate)
    timed = _Timed(config, model, str(path), word_ends)
    progress = Progress(f"bench: {what}", seconds, " s")
    source.start(ring)
    try:
        while True:
            block = ring.read(timeout=0.25)
            if block is not None:
                timed.block(block)
                progress.advance(len(block.samples) / block.sample_rate)
            elif ring.exhausted:
                break
    finally:
        source.stop()
    wall = timed.finish()
    progress.close()
    if source.error is not None:
        raise source.error
    split = timed.split
    return {
        "wall_s": wall,
        "cpu_percent": split.percent(),
        "cpu_percent_gate_open": 100 * split.per_audio_s(True),
        "cpu_percent_gate_closed": 100 * split.per_audio_s(False),
        "gate_open_share": split.gate_open_share(),
        "events": timed.events,
        "preroll_events_not_timed": timed.preroll_events,
        "overflows": ring.overflows,
        "stages": stage_table(timed.stats),
    }


@dataclass(frozen=True)
class BenchOptions:
    input: str | None = None
    duration: float | None = None  # None: 60 s generated, or the whole --input
    idle_s: float = 60.0
    threshold: float = 0.0
    compare: bool = False
    checkpoint: Path | None = None


def run(config: Config, options: BenchOptions) -> dict[str, Any]:
    """Every measurement of one bench run, as the JSON that --json writes."""
    contention = Contention()
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        work = Path(tmp)
        config = bench_config(config, work / "events.jsonl", options.threshold)
        if options.input:
            audio = input_stream(options.input, options.duration)
            described = options.input
        else:
            audio = generated_stream(options.duration or 60.0)
            described = "generated: demo/demo.wav at varied gain, digital silence, room noise"
        if len(audio) < RATE:
            raise KwsError(
                "bench: the stream is shorter than one second; give a longer --input or --duration"
            )
        stream = write_wav(work / "stream.wav", audio)
        seconds = len(audio) / RATE
        start = time.perf_counter()
        model = load_model(config)  # onnxruntime's import included, as a daemon start pays it
        load_s = time.perf_counter() - start
        checkpoint = checkpoint_of(model, options.checkpoint) if options.compare else None  # fail early
        result: dict[str, Any] = {"machine": machine()}
        result["model"] = {
            "path": str(model.info.path),
            "labels": len(model.info.labels),
            "sha256": model.info.kws.get("sha256", ""),
            "load_s": load_s,
        }
        result["settings"] = {
            "block_ms": config.audio.block_ms,
            "window_ms": config.detector.window_ms,
            "hop_ms": config.detector.hop_ms,
            "threshold": options.threshold,
            "mode": config.mode_for(model.info),
            "vad": config.vad.enabled,
            "onnx_threads": config.detector.threads,
            "hook": "jsonl to a temporary file",
        }
        result["stream"] = {"source": described, "seconds": seconds}
        result["fast"] = fast_pass(config, model, stream, seconds)
        word_ends = np.array([end for _, end in voiced_runs(audio, above_floor_db=18)]) / RATE
        result["realtime"] = realtime_pass(config, model, stream, seconds, "real time", word_ends)
        if options.idle_s > 0:
            idle = realtime_pass(
                config,
                model,
                write_wav(work / "idle.wav", idle_stream(options.idle_s)),
                options.idle_s,
                "idle",
            )
            result["idle"] = {
                "seconds": options.idle_s,
                "cpu_percent": idle["cpu_percent"],
                "gate_open_share": idle["gate_open_share"],
                "windows_per_s": idle["stages"].get("inference", {}).get("count", 0) / options.idle_s,
            }
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if checkpoint is not None:
            result["compare"] = compare(result, audio, config.detector, checkpoint)
    result["machine"]["other_processes_cores"] = contention.other_cores()
    return result


def _ms(values: dict[str, float]) -> list[float]:
    return [values["p50"], values["p95"], values["p99"]]


def report(result: dict[str, Any]) -> str:
    """The terminal summary: stages, end to end, CPU, memory, and the comparison when run."""
    fast, rt = result["fast"], result["realtime"]
    model, stream = result["model"], result["stream"]
    lines = [
        f"model {model['path']} ({model['labels']} labels), loaded in {model['load_s'] * 1000:.0f} ms",
        f"stream {stream['source']}: {stream['seconds']:.0f} s, VAD gate open "
        f"{fast['gate_open_share']:.0%} of it; {rt['events']} events (threshold "
        f"{result['settings']['threshold']:g})",
        "",
    ]
    rows = []
    for name, label in STAGE_NAMES.items():
        real = rt["stages"].get(name)
        quick = fast["stages"].get(name)
        if real is None and quick is None:
            continue
        blank = {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
        rows.append([label, *_ms(real or blank), *_ms(quick or blank)])
    header = ["stage (ms)", "real p50", "p95", "p99", "fast p50", "p95", "p99"]
    lines += [table(header, rows), ""]
    cpu_rows = [
        [
            "CPU s per audio s",
            fast["cpu_per_audio_s"],
            fast["cpu_per_audio_s_gate_open"],
            fast["cpu_per_audio_s_gate_closed"],
        ],
        [
            "CPU % of one core, real time",
            rt["cpu_percent"],
            rt["cpu_percent_gate_open"],
            rt["cpu_percent_gate_closed"],
        ],
    ]
    lines += [table(["", "all", "gate open", "gate shut"], cpu_rows), ""]
    lines.append(
        f"real-time factor (fast) {fast['real_time_factor']:.4f}; "
        f"block → decision p50/p95 {fast['decision_ms']['p50']:.2f}/{fast['decision_ms']['p95']:.2f} ms"
    )
    if "idle" in result:
        idle = result["idle"]
        lines.append(
            f"idle ({idle['seconds']:.0f} s of room noise, real time): CPU {idle['cpu_percent']:.2f} % "
            f"of one core, gate open {idle['gate_open_share']:.0%}"
        )
    lines.append(f"peak RSS {result['peak_rss_mib']:.0f} MiB (before any --compare engine is loaded)")
    others = result["machine"]["other_processes_cores"]
    if others is not None and others >= 0.05:
        lines.append(
            f"note: other processes kept {others:.2f} cores busy meanwhile; these numbers are contended"
        )
    if "compare" in result:
        lines += ["", compare_report(result)]
    return "\n".join(lines)


def compare_report(result: dict[str, Any]) -> str:
    """Ours and each alternative on the same stream; "× ours" is theirs divided by ours."""
    fast = result["fast"]
    ours = fast["decision_ms"]
    rows: list[list[object]] = [
        ["kws-daemon", fast["cpu_per_audio_s"], 1.0, ours["p50"], ours["p95"], 1.0, result["model"]["load_s"]]
    ]
    for name, engine in result["compare"]["engines"].items():
        d = engine["decision_ms"]
        rows.append(
            [
                name,
                engine["cpu_per_audio_s"],
                engine["cpu_ratio"],
                d["p50"],
                d["p95"],
                engine["latency_ratio_p95"],
                engine["load_s"],
            ]
        )
    header = ["same stream", "CPU s/audio s", "× ours", "decision p50 ms", "p95", "× ours (p95)", "load s"]
    skipped = [f"skipped {name}: {why}" for name, why in result["compare"]["skipped"].items()]
    return "\n".join([table(header, rows), *skipped])


def command(args: argparse.Namespace, config: Config) -> int:
    """`kws-daemon bench`: checks the optional extras first, so a long run never ends in an ImportError."""
    if args.plot:
        from kws_daemon.plot import require_matplotlib

        require_matplotlib("--plot")
    options = BenchOptions(
        input=args.input,
        duration=args.duration,
        idle_s=args.idle,
        threshold=args.threshold,
        compare=args.compare,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
    )
    result = run(config, options)
    print(report(result), flush=True)
    if args.json:
        write_json(Path(args.json), result)
    if args.plot:
        from kws_daemon.plot import bench_plot

        bench_plot(result, Path(args.plot))
    return 0
