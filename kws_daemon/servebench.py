"""`kws-daemon bench-serve`: how many Wyoming streams one machine serves in real time.

A real `kws-daemon serve` process is started for each stream count, batched and unbatched, and N
clients stream generated speech to it in real time, as satellites do (1024-sample chunks, paced by
the clock). Latency is taken where a user feels it: from the moment the end of a spoken word was
sent (the voiced end, from the audio) to the moment its `detection` arrived. A stream count is
served in real time when, at the end, every stream's audio-stop is answered within 0.5 s (nothing
piled up) and the server delayed no detection by more than 1 s: each stream is first run through the
same pipeline here, unloaded, which gives the chunk whose arrival decides each detection, and the
delay is from sending that chunk to the detection's arrival. (A word end is not that reference: the
detector may rightly decide a word 1.5 s after it ended, the same with one stream as with 100.)
CPU is the server process's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.audio.streams import generated_stream
from kws_daemon.audio.voicing import voiced_runs
from kws_daemon.config import Config, parse
from kws_daemon.console import table, write_json
from kws_daemon.errors import KwsError
from kws_daemon.machine import Contention, machine
from kws_daemon.metrics import LatencyStats, distribution
from kws_daemon.model import Model
from kws_daemon.modelgroup import load_group, load_info
from kws_daemon.wakestream import WakeStream

RATE = 16000
CHUNK = 1024  # samples per audio-chunk, as wyoming-satellite sends them
BACKLOG_S = 0.5
LATE_S = 1.0
JOIN_S = 4.0  # the streams join one after another over this time


@dataclass
class StreamResult:
    latencies_ms: list[float]  # word end -> detection
    delays_ms: list[float]  # deciding chunk sent -> detection: the server's own delay
    detections: int
    backlog_s: float  # audio-stop sent -> its answer


def decided_at(config: Config, model: Model, audio: np.ndarray) -> dict[int, float]:
    """Each detection's timestamp (ms) -> when, in the stream, the chunk that decides it ends: the
    pipeline run here with no load, on the chunks the client sends."""
    stream = WakeStream(config, model, "reference", LatencyStats(), RATE)
    decided: dict[int, float] = {}
    for i in range(0, len(audio), CHUNK):
        for d in stream.feed(audio[i : i + CHUNK].tobytes(), RATE, 2, 1):
            decided.setdefault(d.timestamp_ms, min(i + CHUNK, len(audio)) / RATE)
    return decided


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its children (a `--workers` server's worker processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_s(int(child)) for child in children)


def _encoded(audio: np.ndarray) -> list[bytes]:
    """Each 1024-sample chunk as the bytes of its Wyoming event, made before the clock starts: the
    client's own cost stays out of what the server is timed on."""
    import io

    from wyoming.audio import AudioChunk
    from wyoming.event import write_event

    out = []
    for i in range(0, len(audio), CHUNK):
        buffer = io.BytesIO()
        write_event(
            AudioChunk(rate=RATE, width=2, channels=1, audio=audio[i : i + CHUNK].tobytes()).event(), buffer
        )
        out.append(buffer.getvalue())
    return out


async def _stream(
    port: int, chunks: list[bytes], word_ends_s: np.ndarray, decided: dict[int, float], phase_s: float
) -> StreamResult:
    """One satellite, joining `phase_s` after the first: satellites are connected at different times
    and send on clocks of their own. (All joining at once, each entering its speech, is a reconnect
    storm: the VAD gates of all streams open in one instant, and each opening computes a second of
    embeddings; that burst, not the streams' steady cost, would set the capacity.)"""
    from wyoming.audio import AudioStart, AudioStop
    from wyoming.event import async_read_event, async_write_event
    from wyoming.ping import Ping
    from wyoming.wake import Detect, Detection

    latencies: list[float] = []
    delays: list[float] = []
    detections = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def receive(start: float) -> float:
            """Reads until the answer to the ping after audio-stop; the time it came."""
            nonlocal detections
            while (event := await async_read_event(reader)) is not None:
                if Detection.is_type(event.type):
                    detections += 1
                    now = time.monotonic() - start
                    timestamp_ms = Detection.from_event(event).timestamp or 0
                    t = timestamp_ms / 1000
                    ended = word_ends_s[word_ends_s <= t + 0.05]
                    if len(ended) and t - ended[-1] <= 1.5:
                        latencies.append((now - ended[-1]) * 1000)
                    if timestamp_ms in decided:
                        delays.append((now - decided[timestamp_ms]) * 1000)
                elif event.type in ("not-detected", "pong"):
                    return time.monotonic()
            raise KwsError("bench-serve: the server closed a stream before answering it")

        await async_write_event(Detect().event(), writer)
        await async_write_event(AudioStart(rate=RATE, width=2, channels=1).event(), writer)
        await asyncio.sleep(phase_s)
        start = time.monotonic()
        answer = asyncio.create_task(receive(start))
        for i, data in enumerate(chunks):
            due = start + (i + 1) * CHUNK / RATE  # a chunk goes out when its last sample is captured
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()
        stopped = time.monotonic()
        await async_write_event(AudioStop().event(), writer)
        await async_write_event(Ping().event(), writer)
        backlog = await asyncio.wait_for(answer, 60) - stopped
    finally:
        writer.close()
    return StreamResult(latencies, delays, detections, backlog)


def independent_stream(seconds: float, i: int) -> np.ndarray:
    """Stream `i`'s audio: generated speech entered 1.7 s later in its cycle than stream i-1's (modulo
    8 s, so every stream still starts among words). Satellites are independent speakers; streams
    that all said their words at the same instant would measure one burst of N decisions, not the N
    streams a capacity is about."""
    start = int(i * 1.7 * RATE) % (8 * RATE)
    return generated_stream(seconds + 8.0, seed=i)[start : start + int(seconds * RATE)]


def _serve(
    config_path: Path, port: int, batch: bool | None, workers: int
) -> tuple[subprocess.Popen[bytes], bool]:
    """A server on `port`, once every worker is ready (its log, beside the config, says so), and
    whether it batches (`batch` None: its own choice for the model)."""
    command = [sys.executable, "-m", "kws_daemon", "serve", "--config", str(config_path)]
    command += ["--uri", f"tcp://127.0.0.1:{port}", "--workers", str(workers)]
    command += [] if batch is None else ["--batch" if batch else "--no-batch"]
    log = config_path.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)
    ready = f"with {workers} workers" if workers > 1 else "serving"
    deadline = time.monotonic() + 120
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = log.read_text(errors="replace").strip()[-300:]
            raise KwsError(f"bench-serve: the server did not start: {err}")
        time.sleep(0.1)
    return proc, " mode, batched" in log.read_text(errors="replace")


class Satellites:
    """Stream i's chunks, word ends and reference decisions, made once for every stream count."""

    def __init__(self, config: Config, seconds: float) -> None:
        self.config, self.seconds = config, seconds
        self._model = load_group(list(config.models), config.detector.threads)
        self._made: dict[int, tuple[list[bytes], np.ndarray, dict[int, float]]] = {}

    def __getitem__(self, i: int) -> tuple[list[bytes], np.ndarray, dict[int, float]]:
        if i not in self._made:
            audio = independent_stream(self.seconds, i)
            ends = np.array([e for _, e in voiced_runs(audio, above_floor_db=18)]) / RATE
            self._made[i] = (_encoded(audio), ends, decided_at(self.config, self._model, audio))
        return self._made[i]


def run_count(
    config_path: Path, satellites: Satellites, streams: int, batch: bool | None, workers: int = 1
) -> dict[str, Any]:
    chunks, ends, decided = zip(*(satellites[i] for i in range(streams)), strict=True)
    seconds = satellites.seconds
    port = _free_port()
    proc, batched = _serve(config_path, port, batch, workers)
    try:
        contention = Contention()
        cpu0, wall0, client0 = _cpu_s(proc.pid), time.perf_counter(), time.process_time()

        async def all_streams() -> list[StreamResult]:
            phases = [i / streams * JOIN_S for i in range(streams)]
            return await asyncio.gather(
                *(_stream(port, c, e, d, f) for c, e, d, f in zip(chunks, ends, decided, phases, strict=True))
            )

        results = asyncio.run(all_streams())
        cpu = _cpu_s(proc.pid) - cpu0
        wall = time.perf_counter() - wall0
        client = time.process_time() - client0
        others = contention.other_cores()
    finally:
        proc.terminate()
        proc.wait(30)
    latencies = [x for r in results for x in r.latencies_ms]
    delays = [x for r in results for x in r.delays_ms]
    backlog = max(r.backlog_s for r in results)
    return {
        "streams": streams,
        "workers": workers,
        "batched": batched,
        "audio_s_per_stream": seconds,
        "wall_s": round(wall, 2),
        "server_cpu_s": round(cpu, 2),
        "cpu_per_stream_percent": round(100 * cpu / (seconds * streams), 2),  # a core per real-time stream
        "client_cpu_s": round(client, 2),  # the streams' senders, on the same machine
        "detections": sum(r.detections for r in results),
        "timed_detections": len(latencies),
        "latency_ms": distribution(latencies),
        "server_delay_ms": distribution(delays),
        "max_backlog_s": round(backlog, 3),
        "realtime": bool(backlog <= BACKLOG_S and max(delays, default=0.0) <= LATE_S * 1000),
        "other_cores_busy": None if others is None else round(others, 2),
    }


def report(result: dict[str, Any]) -> str:
    rows = [
        [
            str(r["streams"]),
            str(r.get("workers", 1)),
            "batched" if r["batched"] else "unbatched",
            "yes" if r["realtime"] else "NO",
            f"{r['cpu_per_stream_percent']:.2f} %",
            f"{r['latency_ms']['p50']:.1f}",
            f"{r['latency_ms']['p95']:.1f}",
            f"{r['latency_ms']['max']:.1f}",
            f"{r['server_delay_ms']['p95']:.1f} / {r['server_delay_ms']['max']:.1f}",
            f"{r['max_backlog_s']:.2f}",
            f"{r['timed_detections']}/{r['detections']}",
        ]
        for r in result["runs"]
    ]
    header = [
        "streams",
        "workers",
        "inference",
        "real time",
        "CPU/stream",
        "p50 ms",
        "p95 ms",
        "max ms",
        "delay p95 / max",
        "backlog s",
    ]
    lines = [
        f"kws-daemon serve on {result['machine']['cpu']} ({result['machine']['cores']} cores), "
        f"mode {result['mode']}, {result['seconds']:g} s of speech per stream, word end -> detection "
        "(delay: the server's, from the chunk that decides it):",
        table([*header, "timed/all"], rows),
    ]
    capacity = result.get("capacity")
    if capacity:
        one = capacity.get("1", {}).get("streams")
        parts = []
        for workers, c in capacity.items():
            ratio = f", {c['streams'] / one:.2f}x one worker's" if one and workers != "1" else ""
            parts.append(
                f"{workers} worker(s): {c['streams']} streams ({c['streams_per_core']:g} per core{ratio})"
            )
        lines.append(
            f"capacity (real time, p95 word end -> detection < {result['target_ms']:g} ms): "
            + "; ".join(parts)
        )
    return "\n".join(lines)


def capacity(
    config_path: Path, satellites: Satellites, workers: int, start: int, target_ms: float
) -> tuple[int, list[dict[str, Any]]]:
    """The most streams within the target: doubling from `start` to the first miss, then halving
    the gap until it is within a sixteenth (a ratio of two capacities is then good to about 6 %)."""
    ok, bad, n = 0, None, start
    runs = []

    def attempt(count: int) -> bool:
        print(f"  {count} streams, {workers} worker(s) ...", file=sys.stderr, flush=True)
        runs.append(run_count(config_path, satellites, count, None, workers))
        r = runs[-1]
        return bool(r["realtime"] and r["timed_detections"] and r["latency_ms"]["p95"] < target_ms)

    while n <= 1023:
        if not attempt(n):
            bad = n
            break
        ok, n = n, n * 2
    while bad is not None and bad - ok > max(1, ok // 16):
        mid = (ok + bad) // 2
        if attempt(mid):
            ok = mid
        else:
            bad = mid
    return ok, runs


def _counts(flag: str, text: str, most: int) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > most:
        raise KwsError(f"{flag}: numbers from 1 to {most}, comma-separated (got {text!r})")
    return counts


def command(args: argparse.Namespace, config: Config) -> int:
    counts = _counts("--streams", args.streams, 1023)  # the server's own config allows them
    worker_counts = _counts("--workers", args.workers, 256)
    mode = args.mode or config.mode_for(load_info(config.models))
    with tempfile.TemporaryDirectory(prefix="kws-bench-serve-") as work:
        config_path = Path(work) / "serve.yaml"
        threshold = args.threshold
        data: dict[str, Any] = {
            "models": [str(path) for path in config.models],
            "detector": {"mode": mode, "threshold": threshold},
            "serve": {"max_connections": 1024},
        }
        config_path.write_text(json.dumps(data))
        satellites = Satellites(parse(data), args.duration)
        runs = []
        found: dict[str, dict[str, Any]] = {}
        cores = machine()["cores"]
        for workers in worker_counts:
            if args.capacity:
                streams, tried = capacity(config_path, satellites, workers, counts[0], args.target_ms)
                runs += tried
                per_core = round(streams / min(workers, cores), 1)
                found[str(workers)] = {"streams": streams, "streams_per_core": per_core}
                continue
            for n in counts:
                for batch in (None,) if args.as_served else (True, False):
                    inference = {None: "as served", True: "batched", False: "unbatched"}[batch]
                    print(f"  {n} streams, {workers} worker(s), {inference} ...", file=sys.stderr, flush=True)
                    runs.append(run_count(config_path, satellites, n, batch, workers))
    result = {
        "machine": machine(),
        "mode": mode,
        "seconds": args.duration,
        "threshold": args.threshold,
        "runs": runs,
        **({"capacity": found, "target_ms": args.target_ms} if args.capacity else {}),
    }
    print(report(result), flush=True)
    if args.json:
        write_json(Path(args.json), result)
    return 0
