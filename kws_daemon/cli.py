"""`kws-daemon` command line. Every user-facing failure is one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kws_daemon import __version__, enroll, trainkwcli
from kws_daemon.audio.block import AudioBlock
from kws_daemon.audio.sources import file_blocks, list_devices
from kws_daemon.config import MODES, Config, load, wyoming_uri
from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookDispatcher
from kws_daemon.modelgroup import load_info
from kws_daemon.modes import Stream, make_pipeline
from kws_daemon.nearmiss import NearMissRecorder
from kws_daemon.service import Daemon, load_model, warn_if_writable

log = logging.getLogger("kws_daemon")


_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """Under systemd, a `<N>` syslog prefix gives each line its priority in the journal."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


def print_error(message: str) -> None:
    prefix = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
    one_line = " ".join(message.splitlines())  # a file name may hold a newline; the error stays one line
    print(f"{prefix}kws-daemon: error: {one_line}", file=sys.stderr, flush=True)


def _config(args: argparse.Namespace) -> Config:
    config = load(args.config) if args.config else Config()
    if getattr(args, "model", None):
        config = replace(config, model=Path(args.model), more_models=())
    if getattr(args, "threshold", None) is not None:
        config = replace(config, detector=replace(config.detector, threshold=args.threshold))
    if getattr(args, "mode", None):
        config = replace(config, detector=replace(config.detector, mode=args.mode))
    return config


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1440:
        raise argparse.ArgumentTypeError(f"must be minutes between 0 and 1440 (got {text!r})")
    return value


def _threshold(text: str) -> float:
    """--threshold as the config's detector.threshold allows it: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1 (got {text!r})")
    return value


def _workers(text: str) -> int:
    if not text.isdecimal() or not 0 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"must be 0 (one per core) to 256 (got {text!r})")
    return int(text)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.input:
        config = config.with_audio(input=args.input)
    if args.fast:
        config = config.with_audio(realtime=False)
    if args.device is not None:
        device: str | int = int(args.device) if args.device.isdigit() else args.device
        config = config.with_audio(device=device, input=None)
    if args.stats_interval is not None:
        config = replace(config, stats_interval_s=args.stats_interval * 60)
    return Daemon(config, record=args.record).run()


def cmd_serve(args: argparse.Namespace) -> int:
    """One process, or a supervisor of --workers N processes that share its socket."""
    from kws_daemon.serve import WakeServer

    config = _config(args)
    serve = config.serve
    if args.uri:
        serve = replace(serve, uri=wyoming_uri("--uri", args.uri))
    if args.zeroconf is not None:
        serve = replace(serve, zeroconf=True, zeroconf_name=args.zeroconf or serve.zeroconf_name)
    if args.batch is not None:
        serve = replace(serve, batch=args.batch)
    if args.workers is not None:
        serve = replace(serve, workers=args.workers)
    config = replace(config, serve=serve)
    if args.worker:  # a worker of the parent below: its socket, /metrics on a port of its own
        import socket

        index, fd = (int(x) for x in args.worker.split(":"))
        metrics = replace(config.metrics, listen=("127.0.0.1", 0) if config.metrics.listen else None)
        config = replace(config, serve=replace(serve, zeroconf=False), metrics=metrics)
        return WakeServer(config, handoff=socket.socket(fileno=fd), worker=index).run()
    from kws_daemon.workers import WorkerPool, default_workers

    workers = serve.workers or default_workers()
    if workers == 1:
        return WakeServer(config).run()
    info = load_info(config.models)  # a config error once, before N workers would each say it
    config.check_against(info)
    return WorkerPool(config, args.argv, workers).run()


def cmd_detect(args: argparse.Namespace) -> int:
    """Replays files through the daemon's own pipeline and hooks, one fresh pipeline per file."""
    config = _config(args)
    model = load_model(config)
    stats_pipeline: Stream | None = None
    dispatcher: HookDispatcher | None = None
    near_misses = NearMissRecorder(config.near_misses) if config.near_misses else None
    failed = detections = 0
    try:
        for path in args.files:
            try:
                rate, blocks = file_blocks(path, config.audio.block_ms)
                pipeline = make_pipeline(config, model, source=path, near_misses=near_misses)
                if dispatcher is None:
                    stats_pipeline = pipeline
                    dispatcher = HookDispatcher(config, pipeline.stats)
                events = []
                for samples in blocks:
                    events += pipeline.process(AudioBlock(samples, rate, time.monotonic(), time.time()))
                events += pipeline.flush()
            except KwsError as e:
                print_error(str(e))
                failed += 1
                continue
            for event in events:
                detections += 1
                if args.json:
                    record = {"file": path, **event.to_dict()}
                    print(json.dumps(record), flush=True)
                else:
                    print(f"{path}\t{event.time_s:.2f}s\t{event.keyword}\t{event.score:.3f}", flush=True)
                dispatcher(event)
    finally:
        if dispatcher is not None:
            dispatcher.close()
        if near_misses is not None:
            near_misses.close()
    summary = f"{_plural(detections, 'detection')} in {_plural(len(args.files) - failed, 'file')}"
    if failed:
        summary += f"; {failed} unreadable"
    log.info("%s", summary)
    if stats_pipeline is not None:
        log.debug("%s", stats_pipeline.stats.summary())
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kws_daemon.bench import command

    return command(args, _config(args))


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from kws_daemon.servebench import command

    return command(args, _config(args))


def cmd_eval(args: argparse.Namespace) -> int:
    from kws_daemon.evalcli import command

    return command(args, _config(args))


def cmd_tune(args: argparse.Namespace) -> int:
    from kws_daemon.tunecli import command

    return command(args, _config(args))


def cmd_info(args: argparse.Namespace) -> int:
    from kws_daemon.infocli import command

    return command(args)


def cmd_devices(args: argparse.Namespace) -> int:
    devices = list_devices()
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    if not devices:
        print("no input devices found")
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']} Hz)")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load(args.file)
    warn_if_writable(config)
    model = load_model(config)
    keywords = [k.name for k in config.keywords] if config.keywords else list(model.info.keyword_labels)
    own = [len(k.hooks) for k in config.keywords or ()] + [len(s.hooks) for s in config.sequences]
    hooks = len(config.hooks) + sum(own)
    counts = f"{_plural(len(keywords), 'keyword')}, {_plural(hooks, 'hook')}"
    print(f"{args.file}: OK (model {config.model}, {counts})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Imports the toolchain only here: the runtime commands never import torch."""
    from kws_daemon.toolchain.export import require_toolchain, write_model_dir
    from kws_daemon.toolchain.export_clap import is_clap_checkpoint, write_clap_model_dir
    from kws_daemon.toolchain.export_classifier import family_of, write_classifier_model_dir
    from kws_daemon.toolchain.report import report_lines

    require_toolchain()
    family = family_of(args.source)
    if is_clap_checkpoint(args.source):
        report = write_clap_model_dir(
            args.source,
            args.output,
            args.labels or [],
            template=args.template,
            quantize=args.quantize,
            calibration=args.calibration,
            force=args.force,
        )
    elif args.labels:
        raise KwsError("--labels: only a CLAP checkpoint takes text prompts")
    elif family is not None:
        report = write_classifier_model_dir(
            family,
            args.source,
            args.output,
            quantize=args.quantize,
            calibration=args.calibration,
            force=args.force,
        )
    else:
        report = write_model_dir(
            args.source, args.output, quantize=args.quantize, calibration=args.calibration, force=args.force
        )
    print(f"wrote {args.output}")
    for line in report_lines(report):
        print(f"  {line}")
    return 0


MODE_HELP = "detector.mode (overrides the config; default: the model's own, `kws-daemon info`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-daemon", description="Always-on keyword spotting for Linux.")
    parser.add_argument("--version", action="version", version=f"kws-daemon {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log messages of this level and above to stderr (default info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="listen and fire hooks until SIGINT/SIGTERM (or the end of --input)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--threshold", type=_threshold, help="detector threshold, 0 to 1 (overrides the config)")
    p.add_argument("--device", help="input device name or index (overrides audio.device)")
    p.add_argument(
        "--input", help="WAV/FLAC file (paced at real time), or - for raw s16le 16 kHz mono on stdin"
    )
    p.add_argument(
        "--fast", action="store_true", help="read --input as fast as possible (audio.realtime: false)"
    )
    p.add_argument("--record", metavar="WAV", help="also write the captured audio here (replay with detect)")
    p.add_argument(
        "--stats-interval", type=_minutes, metavar="MIN", help="also log the stats line every MIN minutes"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="Wyoming wake-word server for Home Assistant and wyoming-satellite")
    p.add_argument("--config", help="YAML config file (its serve section, detector, keywords and hooks)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--threshold", type=_threshold, help="detector threshold, 0 to 1 (overrides the config)")
    p.add_argument("--uri", help="tcp://HOST:PORT or unix:///PATH (default serve.uri: tcp://127.0.0.1:10400)")
    p.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="announce _wyoming._tcp for Home Assistant discovery (needs the zeroconf extra)",
    )
    p.add_argument(
        "--batch",
        action=argparse.BooleanOptionalAction,
        help="windows of several streams in one onnxruntime call (serve.batch; default: for an AST)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="processes sharing the socket (serve.workers; default: one per core)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # INDEX:FD, set by the parent of --workers
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("detect", help="replay audio files through the pipeline and print detections")
    p.add_argument("--config", help="YAML config file (hooks in it fire too)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--threshold", type=_threshold, help="detector threshold, 0 to 1 (overrides the config)")
    p.add_argument("--json", action="store_true", help="one JSON object per detection")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("bench", help="time the pipeline on a long stream: stages, end to end, CPU, memory")
    p.add_argument("--config", help="YAML config file (its hooks do not fire)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--input", metavar="AUDIO", help="recording (default: speech+silence+noise)")
    p.add_argument("--duration", type=float, metavar="S", help="stream length (default 60)")
    p.add_argument("--idle", type=float, default=60.0, metavar="S", help="room noise for idle CPU (0: skip)")
    p.add_argument(
        "--threshold", type=_threshold, default=0.0, metavar="T", help="for all keywords (default 0)"
    )
    p.add_argument("--json", metavar="OUT", help="write every measurement as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG plot (needs the plot extra)")
    p.add_argument(
        "--compare", action="store_true", help="also time a transformers pipeline and openWakeWord"
    )
    p.add_argument("--checkpoint", metavar="DIR", help="the model's Hugging Face checkpoint for --compare")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-serve", help="how many Wyoming streams this machine serves in real time")
    p.add_argument("--config", help="YAML config file (model, detector, serve.max_connections)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--streams", default="1,8,32", metavar="N,N,...", help="stream counts (default 1,8,32)")
    p.add_argument("--duration", type=float, default=30.0, metavar="S", help="speech per stream (default 30)")
    p.add_argument("--mode", choices=["commands", "running"], help="detector.mode (overrides the config)")
    p.add_argument(
        "--threshold", type=_threshold, default=0.0, metavar="T", help="for all keywords (default 0)"
    )
    p.add_argument(
        "--as-served",
        action="store_true",
        help="only the server's own choice (serve.batch: auto), not both batched and unbatched",
    )
    p.add_argument(
        "--workers", default="1", metavar="N,N,...", help="serve --workers of each run (default 1)"
    )
    p.add_argument(
        "--capacity",
        action="store_true",
        help="search the most real-time streams with p95 word end -> detection < --target-ms",
    )
    p.add_argument(
        "--target-ms", type=float, default=500.0, metavar="MS", help="for --capacity (default 500)"
    )
    p.add_argument("--json", metavar="OUT", help="write every measurement as JSON")
    p.set_defaults(func=cmd_bench_serve)

    p = sub.add_parser("eval", help="accuracy per word; false accepts/rejects per threshold")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", metavar="TSV", help="relpath and word columns, paths relative to it")
    source.add_argument("--dir", metavar="DIR", help="one subfolder of clips per word")
    p.add_argument("--negatives", nargs="+", default=[], metavar="AUDIO", help="long non-keyword recordings")
    p.add_argument("--config", help="YAML config file (detector and VAD settings)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9", metavar="T,T,...", help="the sweep")
    p.add_argument("--limit", type=int, metavar="N", help="at most N clips, spread over the list")
    p.add_argument("--json", metavar="OUT", help="write every number as JSON")
    p.add_argument("--det", metavar="OUT.png", help="write the DET curve (needs the plot extra)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tune", help="per-keyword thresholds for a target false-accept rate, from your audio")
    p.add_argument("--negatives", nargs="+", required=True, metavar="AUDIO", help="audio that must not fire")
    p.add_argument("--positives", metavar="DIR", help="one subfolder of your own command clips per word")
    p.add_argument(
        "--target", type=float, default=0.5, metavar="FA/H", help="false accepts an hour, all words"
    )
    p.add_argument(
        "--max-miss", type=float, default=0.1, metavar="RATE", help="with --positives (default 0.1)"
    )
    p.add_argument("--config", help="YAML config file (its mode, VAD and keywords)")
    p.add_argument("--model", help="model directory (overrides the config)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--json", metavar="OUT", help="write the sweep and the result as JSON")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("info", help="what a model directory is: kind, labels, modes, thresholds, licence")
    p.add_argument("directory", nargs="?", metavar="DIR", help="model directory (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="everything as one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("devices", help="list audio input devices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("check-config", help="validate a config file (and its model) without starting")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "export",
        help="export a Hugging Face audio classifier (AST, wav2vec2, Whisper, CLAP) to an int8 model dir",
    )
    p.add_argument("source", metavar="SOURCE", help="hub id (downloaded) or local checkpoint directory")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="model directory to write")
    p.add_argument("--quantize", default="int8", metavar="MODE", help="int8 (default), int8-static or none")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="AUDIO_DIR",
        help="your recordings: int8 agreement is measured on them (and int8-static calibrates on them)",
    )
    p.add_argument("--force", action="store_true", help="replace DIR; write it even if a parity check fails")
    p.add_argument("--labels", nargs="+", metavar="PROMPT", help="CLAP: the sounds to detect, as text")
    p.add_argument(
        "--template", default="This is a sound of {}.", help="CLAP: each prompt goes in {} (the pipeline's)"
    )
    p.set_defaults(func=cmd_export)

    trainkwcli.add_parser(sub)
    enroll.add_parser(sub)
    return parser


def one_blas_thread() -> None:
    """NumPy's BLAS on one thread. When the VAD gate opens, ~100 log-mel frames go through one matrix
    multiply; OpenBLAS splits it over spinning threads that cost twice the CPU of doing it on the
    pipeline's own thread (docs/benchmarks.md), while the gate is there to save CPU. threadpoolctl
    limits the BLAS already loaded at run time, whatever imported numpy first, where OPENBLAS_NUM_THREADS
    only counts if set before that import; the BLAS of torch, loaded later by export, is left alone."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what serve's workers run again
    one_blas_thread()
    handler = logging.StreamHandler()
    worker = getattr(args, "worker", None)
    who = f"kws-daemon[worker {worker.split(':')[0]}]" if worker else "kws-daemon"
    plain = logging.Formatter(f"{who}: %(levelname)s: %(message)s")
    handler.setFormatter(JournalFormatter() if os.environ.get("JOURNAL_STREAM") else plain)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler])
    np.seterr(all="ignore")
    try:
        return int(args.func(args))
    except KwsError as e:
        print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("KWS_DEBUG"):
            raise
        print_error(f"internal: {type(e).__name__}: {e} (set KWS_DEBUG=1 for a traceback)")
        return 70
