"""`kws-daemon bench-serve`: how many Wyoming streams one machine serves in real time.

A real `kws-daemon serve` process is started for each stream count, batched and unbatched, and N
clients stream generated speech to it in real time, as satellites do (1024-sample chunks, paced by
the clock). Latency is taken where a user feels it: from the moment the end of a spoken word was
sent (the voiced end, from the audio) to the moment its `detection` arrived. A stream count is
served in real time when, at the end, every stream's audio-stop is answered within 0.5 s (nothing
piled up) and no detection came later than 1 s after its word. CPU is the server process's own.
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
from kws_daemon.config import Config
from kws_daemon.console import table, write_json
from kws_daemon.errors import KwsError
from kws_daemon.machine import Contention, machine
from kws_daemon.model import ModelInfo

RATE = 16000
CHUNK = 1024  # samples per audio-chunk, as wyoming-satellite sends them
BACKLOG_S = 0.5
LATE_S = 1.0


@dataclass
class StreamResult:
    latencies_ms: list[float]
    detections: int
    backlog_s: float  # audio-stop sent -> its answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stream(port: int, audio: np.ndarray, word_ends_s: np.ndarray) -> StreamResult:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.ping import Ping
    from wyoming.wake import Detect, Detection

    latencies: list[float] = []
    detections = 0
    answered = asyncio.Event()
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def receive(start: float) -> None:
            nonlocal detections
            while (event := await client.read_event()) is not None:
                if Detection.is_type(event.type):
                    detections += 1
                    t = (Detection.from_event(event).timestamp or 0) / 1000
                    ended = word_ends_s[word_ends_s <= t + 0.05]
                    if len(ended) and t - ended[-1] <= 1.5:
                        latencies.append((time.monotonic() - start - ended[-1]) * 1000)
                elif event.type in ("not-detected", "pong"):
                    answered.set()
                    return

        await client.write_event(Detect().event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        start = time.monotonic()
        reader = asyncio.create_task(receive(start))
        for i in range(0, len(audio), CHUNK):
            due = start + (i + CHUNK) / RATE  # a chunk goes out when its last sample is captured
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chunk = audio[i : i + CHUNK]
            await client.write_event(
                AudioChunk(rate=RATE, width=2, channels=1, audio=chunk.tobytes()).event()
            )
        stopped = time.monotonic()
        await client.write_event(AudioStop().event())
        await client.write_event(Ping().event())
        await asyncio.wait_for(answered.wait(), 60)
        backlog = time.monotonic() - stopped
        await reader
    return StreamResult(latencies, detections, backlog)


def _serve(config_path: Path, port: int, batch: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "kws_daemon", "serve", "--config", str(config_path)]
    command += ["--uri", f"tcp://127.0.0.1:{port}"] + ([] if batch else ["--no-batch"])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise KwsError(f"bench-serve: the server did not start: {err.strip()[-300:]}") from None
            time.sleep(0.1)


def run_count(config_path: Path, streams: int, batch: bool, seconds: float) -> dict[str, Any]:
    audios = [generated_stream(seconds, seed=i) for i in range(streams)]
    ends = [np.array([e for _, e in voiced_runs(a, above_floor_db=18)]) / RATE for a in audios]
    port = _free_port()
    proc = _serve(config_path, port, batch)
    try:
        contention = Contention()
        cpu0, wall0 = _cpu_s(proc.pid), time.perf_counter()

        async def all_streams() -> list[StreamResult]:
            return await asyncio.gather(*(_stream(port, a, e) for a, e in zip(audios, ends, strict=True)))

        results = asyncio.run(all_streams())
        cpu = _cpu_s(proc.pid) - cpu0
        wall = time.perf_counter() - wall0
        others = contention.other_cores()
    finally:
        proc.terminate()
        proc.wait(30)
    latencies = [x for r in results for x in r.latencies_ms]
    backlog = max(r.backlog_s for r in results)
    p95 = float(np.percentile(latencies, 95)) if latencies else float("nan")
    worst = max(latencies) if latencies else float("nan")
    return {
        "streams": streams,
        "batched": batch,
        "audio_s_per_stream": seconds,
        "wall_s": round(wall, 2),
        "server_cpu_s": round(cpu, 2),
        "cpu_per_stream_percent": round(100 * cpu / wall / streams, 2),
        "detections": sum(r.detections for r in results),
        "timed_detections": len(latencies),
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "p95": round(p95, 1) if latencies else None,
            "max": round(worst, 1) if latencies else None,
        },
        "max_backlog_s": round(backlog, 3),
        "realtime": bool(backlog <= BACKLOG_S and (not latencies or worst <= LATE_S * 1000)),
        "other_cores_busy": None if others is None else round(others, 2),
    }


def report(result: dict[str, Any]) -> str:
    rows = [
        [
            str(r["streams"]),
            "batched" if r["batched"] else "unbatched",
            "yes" if r["realtime"] else "NO",
            f"{r['cpu_per_stream_percent']:.2f} %",
            f"{r['latency_ms']['p50']}",
            f"{r['latency_ms']['p95']}",
            f"{r['latency_ms']['max']}",
            f"{r['max_backlog_s']:.2f}",
            f"{r['timed_detections']}/{r['detections']}",
        ]
        for r in result["runs"]
    ]
    header = ["streams", "inference", "real time", "CPU/stream", "p50 ms", "p95 ms", "max ms", "backlog s"]
    lines = [
        f"kws-daemon serve on {result['machine']['cpu']} ({result['machine']['cores']} cores), "
        f"mode {result['mode']}, {result['seconds']:g} s of speech per stream, word end -> detection:",
        table([*header, "timed/all"], rows),
    ]
    return "\n".join(lines)


def command(args: argparse.Namespace, config: Config) -> int:
    counts = [int(x) for x in args.streams.split(",")]
    if not counts or min(counts) < 1 or max(counts) > config.serve.max_connections:
        raise KwsError(f"--streams: 1 to serve.max_connections ({config.serve.max_connections}) each")
    mode = args.mode or config.mode_for(ModelInfo.load(config.model))
    with tempfile.TemporaryDirectory(prefix="kws-bench-serve-") as work:
        config_path = Path(work) / "serve.yaml"
        threshold = args.threshold
        data: dict[str, Any] = {
            "model": str(config.model),
            "detector": {"mode": mode, "threshold": threshold},
            # one more slot: the readiness probe's connection may not have been released yet
            "serve": {"max_connections": min(1024, max(counts) + 1)},
        }
        config_path.write_text(json.dumps(data))
        runs = []
        for n in counts:
            for batch in (True, False) if not args.batched_only else (True,):
                print(
                    f"  {n} streams, {'batched' if batch else 'unbatched'} ...", file=sys.stderr, flush=True
                )
                runs.append(run_count(config_path, n, batch, args.duration))
    result = {
        "machine": machine(),
        "mode": mode,
        "seconds": args.duration,
        "threshold": args.threshold,
        "runs": runs,
    }
    print(report(result), flush=True)
    if args.json:
        write_json(Path(args.json), result)
    return 0
