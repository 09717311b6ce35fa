"""CPU seconds of each step of `segone load-history` on $SEGONE_HOME (benchmarks/README.md, "History load").

    SEGONE_HOME=... python benchmarks/history_stage_cpu.py [LAST_STEP]

Runs `pipelines.stages.load_history` with a progress object that reads this process's CPU time and that of the
children it waited for (the ingest's process pool) when each step starts and ends; stops after LAST_STEP when
given (e.g. validate_silver: the features and publish steps are not run). Prints one JSON line: per step cpu_s
and wall_s, the total, and the 1-minute load average at the end. The home must hold a fresh landing/history/
(a home loaded before gives other figures).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from pipelines.config import Paths
from pipelines.stages import HISTORY_STEPS, load_history


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Stop(Exception):
    pass


class _Step:
    def __init__(self, name: str) -> None:
        self.name = name


class StageClock:
    """The progress interface load_history calls (steps, start, finish), recording CPU and wall seconds."""

    def __init__(self, last: str | None) -> None:
        self.steps = [_Step(name) for name in HISTORY_STEPS]
        self.last = last
        self.figures: dict[str, dict[str, float]] = {}
        self._started = (0.0, 0.0)

    def start(self, step: _Step) -> None:
        self._started = (cpu_seconds(), time.perf_counter())

    def finish(self, step: _Step) -> None:
        self.figures[step.name] = {"cpu_s": round(cpu_seconds() - self._started[0], 2),
                                   "wall_s": round(time.perf_counter() - self._started[1], 1)}
        if step.name == self.last:
            raise _Stop


def main() -> int:
    last = sys.argv[1] if len(sys.argv) > 1 else None
    if last is not None and last not in HISTORY_STEPS:
        print(f"unknown step {last!r}; expected one of {', '.join(HISTORY_STEPS)}", file=sys.stderr)
        return 2
    home = os.environ.get("SEGONE_HOME")
    if not home:
        print("set SEGONE_HOME to a home with a fresh landing/history/", file=sys.stderr)
        return 2
    clock, began = StageClock(last), cpu_seconds()
    try:
        load_history(Paths(Path(home)), clock)
    except _Stop:
        pass
    print(json.dumps(clock.figures | {"total_cpu_s": round(cpu_seconds() - began, 2),
                                      "load_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
