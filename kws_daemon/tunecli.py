"""`kws-daemon tune`: per-keyword thresholds for a target false-accept rate, from the user's own
recordings of what must not fire (an hour of their TV or kitchen) and, optionally, of commands.

The negatives run through the daemon's pipeline once, under the config's mode; the sweep replays
the posteriors (kws_daemon.evaluate). Each keyword gets an equal share of the false-accept budget
(kws_daemon.operating.calibrate); with positives, no threshold is set below the one that still
misses at most --max-miss of them. The result is a config snippet on stdout.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from kws_daemon.config import Config, KeywordConfig
from kws_daemon.console import write_json
from kws_daemon.detector import KeywordEvent
from kws_daemon.errors import UsageError
from kws_daemon.evalcli import dir_clips, keyword_stream, load_16k
from kws_daemon.evaluate import replay_runs, score_stream, sweep_events
from kws_daemon.operating import SWEEP as THRESHOLDS
from kws_daemon.operating import calibrate
from kws_daemon.pipeline import RATE
from kws_daemon.service import load_model


def command(args: argparse.Namespace, config: Config) -> int:
    if not 0 < args.target <= 1000:
        raise UsageError(f"--target {args.target:g}: give false accepts per hour above 0")
    if not 0 <= args.max_miss < 1:
        raise UsageError(f"--max-miss {args.max_miss:g}: give a share from 0 to 1, such as 0.1")
    paths = [Path(p) for p in args.negatives]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--negatives {path}: no such file")
    model = load_model(config)
    names = [k.name for k in config.keywords] if config.keywords else list(model.info.keyword_labels)
    names += [w for s in config.sequences for w in s.words if w not in names]
    armed = replace(config, keywords=tuple(KeywordConfig(n) for n in names), sequences=(), hooks=())
    negative_runs: list[list[KeywordEvent]] = [[] for _ in THRESHOLDS]
    seconds = 0.0
    negatives = []
    for path in paths:
        audio = load_16k(path)
        negatives.append(audio)
        seconds += len(audio) / RATE
        for total, run in zip(
            negative_runs, sweep_events(armed, model, audio, THRESHOLDS, path.name), strict=True
        ):
            total += run
    hours = seconds / 3600
    floor, positives = THRESHOLDS[0], None
    if args.positives:
        clips = [c for c in dir_clips(Path(args.positives)) if c.word in names]
        if not clips:
            raise UsageError(f"--positives {args.positives}: no subfolder is named after an armed keyword")
        positives = keyword_stream([load_16k(c.path) for c in clips], clips)
        runs = sweep_events(armed, model, positives[0], THRESHOLDS, "positives")
        ok = [
            t
            for t, run in zip(THRESHOLDS, runs, strict=True)
            if score_stream(run, positives[1]).false_reject_rate <= args.max_miss
        ]
        floor = max(ok, default=THRESHOLDS[0])
    chosen = calibrate(THRESHOLDS, negative_runs, hours, args.target, names, floor=floor)
    tuned = replace(armed, keywords=tuple(KeywordConfig(n, chosen[n]) for n in names))
    fires = sum(len(replay_runs([tuned], model, audio, "check")[0]) for audio in negatives)
    result = {
        "negatives_hours": round(hours, 3),
        "mode": config.mode_for(model.info),
        "target_per_hour": args.target,
        "floor": floor,
        "thresholds": chosen,
        "false_accepts_per_hour": round(fires / hours, 2) if hours else None,
    }
    if positives is not None:
        run = replay_runs([tuned], model, positives[0], "check")[0]
        result["miss_rate"] = round(score_stream(run, positives[1]).false_reject_rate, 4)
    print(snippet(result), flush=True)
    if args.json:
        write_json(Path(args.json), result)
    return 0


def snippet(result: dict) -> str:
    lines = [
        f"# kws-daemon tune: {result['negatives_hours']} h of negatives, target {result['target_per_hour']:g}"
        f" false accepts/h; these thresholds gave {result['false_accepts_per_hour']}/h on them"
        + (f" and missed {result['miss_rate']:.1%} of the positives" if "miss_rate" in result else ""),
        "# (few hours of negatives measure a rate coarsely: record more for a finer answer)",
        "detector:",
        f"  mode: {result['mode']}",
        "keywords:",
    ]
    lines += [f"  - name: {name}\n    threshold: {t:g}" for name, t in result["thresholds"].items()]
    return "\n".join(lines)
