"""What machine a measurement was taken on, and how busy its CPUs were meanwhile, for benchmark
reports (runtime and toolchain alike)."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def busy_cpu_s() -> float | None:
    """Seconds all CPUs have spent busy since boot (/proc/stat), or None where there is no /proc."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def own_cpu_s() -> float:
    """This process's CPU seconds, plus its finished children's (hook commands)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Contention:
    """How many cores other processes kept busy meanwhile: numbers taken on a shared machine say so."""

    def __init__(self) -> None:
        self._busy, self._own, self._wall = busy_cpu_s(), own_cpu_s(), time.perf_counter()

    def other_cores(self) -> float | None:
        busy = busy_cpu_s()
        if busy is None or self._busy is None:
            return None
        others = (busy - self._busy) - (own_cpu_s() - self._own)
        return max(0.0, others) / (time.perf_counter() - self._wall)


def machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
