"""CPU seconds of each step of `segone load-history` (benchmarks/README.md, "conform and checks, 2026-12-07 night").

    SEGONE_HOME=/tmp/a python benchmarks/load_history_cpu.py

Runs `pipelines.stages.load_history` on $SEGONE_HOME (its landing/history/ into an empty lake) with a progress
object that reads `resource.getrusage` when each step starts and ends: the process and its threads (`cpu`), and the
children it waited for (`cpu_children`: the ingest's open-banking pool). Prints one JSON object, step by step.
"""
from __future__ import annotations

import json
import resource
import time
from typing import Any

from pipelines.config import Paths
from pipelines.progress import Step
from pipelines.stages import HISTORY_STEPS, load_history


def _clock() -> tuple[float, float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime, time.perf_counter()


class StepClock:
    """The `progress` load_history reports to: the CPU and wall seconds between each step's start and finish."""

    def __init__(self) -> None:
        self.steps = [Step(name) for name in HISTORY_STEPS]
        self.started: dict[str, tuple[float, float, float]] = {}
        self.seconds: dict[str, dict[str, float]] = {}

    def start(self, step: Step) -> None:
        self.started[step.name] = _clock()

    def finish(self, step: Step) -> None:
        (cpu0, children0, wall0), (cpu1, children1, wall1) = self.started[step.name], _clock()
        self.seconds[step.name] = {"cpu": round(cpu1 - cpu0, 2), "cpu_children": round(children1 - children0, 2),
                                   "wall": round(wall1 - wall0, 1)}


def main() -> dict[str, Any]:
    clock = StepClock()
    load_history(Paths.from_env(), clock)
    own_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(s["cpu"] + s["cpu_children"] for s in clock.seconds.values())
    return {"steps": clock.seconds, "cpu_total": round(total, 2),
            "peak_rss_mb": round(own_peak_mb)}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
