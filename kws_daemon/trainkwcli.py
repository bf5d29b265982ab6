"""`kws-daemon train-keyword PHRASE --output DIR`: the user's own keyword, trained here.

Every mistake in the arguments is one line before any work starts; the training itself lives in
kws_daemon.toolchain.wakeword (the train extra: torch, onnx).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from kws_daemon.errors import KwsError, UsageError

MAX_PHRASE = 60


def phrase_of(text: str) -> str:
    """The phrase as the model's label and the event's keyword: lower case, single spaces."""
    phrase = " ".join(text.lower().split())
    if not phrase:
        raise UsageError("the phrase is empty: say what to listen for, such as 'hey kitchen'")
    if not re.search(r"[^\W\d_]", phrase):
        raise UsageError(f"the phrase {text!r} has no letters: voices read words, such as 'lights on'")
    if not re.fullmatch(r"[\w' -]+", phrase) or "_" in phrase:
        raise UsageError(
            f"the phrase {text!r} may hold only letters, digits, spaces, hyphens and apostrophes"
        )
    if len(phrase) > MAX_PHRASE:
        raise UsageError(
            f"the phrase is {len(phrase)} characters long; keep it to {MAX_PHRASE} (a few words)"
        )
    return phrase


def command(args: argparse.Namespace) -> int:
    phrase = phrase_of(args.phrase)
    output: Path = args.output
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.force:
        raise UsageError(f"--output {output} exists; pass --force to replace it")
    if args.voices < 0 or args.epochs < 1 or args.calibration_hours <= 0:
        raise UsageError("--voices must be 0 or more, --epochs and --calibration-hours above 0")
    if args.target_fa <= 0:
        raise UsageError("--target-fa must be above 0 (false accepts an hour)")
    for path in [*([args.recordings] if args.recordings else []), *args.negatives]:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise KwsError(
            f"train-keyword needs the train extra ({e.name} is missing): "
            "pip install torch==2.13.0 'kws-daemon[train]'"
        ) from None
    from kws_daemon.toolchain.wakeword import Recipe, train

    recipe = Recipe(
        phrase=phrase,
        recordings=(args.recordings,) if args.recordings else (),
        negatives=tuple(args.negatives),
        target_fa=args.target_fa,
        seed=args.seed,
        epochs=args.epochs,
        max_voices=args.voices,
        calibration_hours=args.calibration_hours,
    )
    workdir = args.workdir or output.with_name(output.name + ".work")
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:5.0f} s] {message}", file=sys.stderr, flush=True)

    kws = train(recipe, output, workdir, log)
    cal = kws["calibration"]
    print(f"wrote {output}: '{phrase}' in {kws['trained']['seconds'] / 60:.1f} min")
    for mode in ("commands", "running"):
        point = cal[mode]["at_threshold"]
        print(
            f"  {mode}: threshold {cal[mode]['threshold']:.2f}, recall {point['recall']:.1%} on held-out "
            f"voices, {point['fa_per_hour']:.2f} false accepts/h on {cal['negative_hours']} h of other speech"
        )
    print(f"try it: kws-daemon run --model {output}   (the stages are kept in {workdir})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-keyword",
        help="train your own keyword or phrase here, from offline voices (and your recordings)",
    )
    p.add_argument("phrase", metavar="PHRASE", help="what to listen for, such as 'hey kitchen'")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="model directory to write")
    p.add_argument(
        "--recordings", type=Path, metavar="DIR", help="your own recordings of the phrase (kws-daemon enroll)"
    )
    p.add_argument(
        "--negatives", nargs="+", type=Path, default=[], metavar="AUDIO", help="audio that must not fire"
    )
    p.add_argument(
        "--target-fa", type=float, default=0.5, metavar="FA/H", help="false accepts an hour (default 0.5)"
    )
    p.add_argument(
        "--voices",
        type=int,
        default=0,
        metavar="N",
        help="at most N voices (faster, less varied; default all)",
    )
    p.add_argument("--epochs", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--calibration-hours", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, metavar="DIR", help="where the stages are kept (default DIR.work)")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=command)
