"""PNG plots for `bench --plot` and `eval --det`, drawn with matplotlib from the optional `plot` extra.

matplotlib rather than a home-made PNG writer: a plot for people needs readable axes, ticks,
legends and log scales, which a numpy+zlib writer would have to reimplement (bitmap font
included). Only the plots need it, so it stays out of the runtime install; without it the
commands stop before measuring anything, with one line naming the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kws_daemon.errors import KwsError

STAGE_ORDER = ("queue", "vad", "features", "inference", "detection", "hook_dispatch", "keyword_end_to_hook")


def require_matplotlib(option: str) -> Any:
    """pyplot on the headless Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KwsError(f"{option} needs matplotlib: pip install 'kws-daemon[plot]'") from None
    return plt


def _save(fig: Any, path: Path) -> None:
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise KwsError(f"{path}: cannot write the plot ({e})") from None


def bench_plot(result: dict[str, Any], path: Path) -> None:
    """Per-stage p50/p95/p99 (real time, log scale), and CPU per audio second against the alternatives."""
    plt = require_matplotlib("--plot")
    stages = result["realtime"]["stages"]
    names = [s for s in STAGE_ORDER if s in stages]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.27
    for i, q in enumerate(("p50", "p95", "p99")):
        xs = [j + (i - 1) * width for j in range(len(names))]
        left.bar(xs, [max(stages[s][q], 1e-3) for s in names], width, label=q)
    left.set_xticks(range(len(names)), [s.replace("_", " ") for s in names], rotation=20, ha="right")
    left.set_yscale("log")
    left.set_ylabel("latency, ms (log)")
    left.set_title("per stage, real time")
    left.legend()
    left.grid(axis="y", alpha=0.3)

    bars = {"kws-daemon": result["fast"]["cpu_per_audio_s"]}
    for name, other in result.get("compare", {}).get("engines", {}).items():
        bars[name] = other["cpu_per_audio_s"]
    names = [name.replace(": ", ":\n") for name in bars]  # two lines: the engines' names are long
    right.bar(names, list(bars.values()), color=["C2"] + ["C7"] * (len(bars) - 1))
    right.set_yscale("log")
    right.set_ylabel("CPU seconds per audio second (log)")
    right.set_title(f"same {result['stream']['seconds']:.0f} s stream")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(f"kws-daemon bench: {Path(result['model']['path']).name} on {result['machine']['cpu']}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def det_plot(sweep: list[dict[str, Any]], path: Path, title: str) -> None:
    """DET curve: false-reject rate against false accepts per hour, one point per threshold."""
    plt = require_matplotlib("--det")
    points = [s for s in sweep if s.get("false_accepts_per_hour") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    fa = [max(p["false_accepts_per_hour"], 0.01) for p in points]
    fr = [p["false_reject_rate"] for p in points]
    ax.plot(fa, fr, marker="o")
    for x, y, p in zip(fa, fr, points, strict=True):
        ax.annotate(f"{p['threshold']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour (log; 0 drawn at 0.01)")
    ax.set_ylabel("false-reject rate")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
