"""Run metrics: runs/<load_date>/<stage>.json, what each stage did, read by the gates and the summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipelines import progress
from pipelines.config import Paths


def write_run_metrics(paths: Paths, load_date: str, stage: str, metrics: dict[str, Any]) -> Path:
    """runs/<load_date>/<stage>.json, replaced atomically."""
    folder = paths.runs / load_date
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stage}.json"
    tmp = folder / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=str, sort_keys=True), encoding="utf-8")
    tmp.replace(target)
    checkpoint(stage)
    progress.notify(stage)
    return target


def read_run_metrics(paths: Paths, load_date: str, stage: str) -> dict[str, Any] | None:
    target = paths.runs / load_date / f"{stage}.json"
    return json.loads(target.read_text(encoding="utf-8")) if target.exists() else None


def checkpoint(name: str) -> None:
    """A named point of a run where the crash tests stop it (a no-op unless SEGONE_PAUSE_AT names it).

    With `SEGONE_PAUSE_AT=<name>[,<name>...]` and `SEGONE_PAUSE_FILE=<path>`, the process writes `<pid> <name>` to
    that file on reaching a named point and waits there until the file is removed (the test then looks at what is
    visible, and either removes the file to let the run go on or kills the process: a real SIGKILL at a known
    point). Names: every stage metrics file when it is written (`conform`, `forecast_cash_shortfall_bucket_7`,
    `decide_bucket_7`, ...) and the steps of publish (`publish:generation`, `publish:staged`, `publish:committed`,
    `publish:applied`)."""
    points = os.environ.get("SEGONE_PAUSE_AT")
    marker = os.environ.get("SEGONE_PAUSE_FILE")
    if not points or not marker or name not in points.split(","):
        return
    path = Path(marker)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()} {name}", encoding="utf-8")
    tmp.replace(path)
    while path.exists():
        time.sleep(0.05)


def nights_run(paths: Paths) -> list[str]:
    """The business dates D (YYYY-MM-DD, sorted) whose night has at least started: runs/D/ingest.json exists."""
    if not paths.runs.is_dir():
        return []
    return sorted(p.name for p in paths.runs.iterdir()
                  if p.is_dir() and p.name != "history" and (p / "ingest.json").exists())


def nights_published(paths: Paths) -> list[str]:
    """The business dates whose night published (runs/D/publish.json exists), sorted."""
    return [d for d in nights_run(paths) if (paths.runs / d / "publish.json").exists()]


def describe_nights(paths: Paths, limit: int = 5) -> str:
    """One line for an error message: which nights exist (the last few), or that none has run."""
    nights = nights_run(paths)
    if not nights:
        history = " (the history is loaded)" if (paths.runs / "history" / "conform.json").exists() else ""
        return f"no night has run yet{history}"
    published = set(nights_published(paths))
    shown = [f"{d}{'' if d in published else ' (not published)'}" for d in nights[-limit:]]
    more = f" and {len(nights) - limit} earlier" if len(nights) > limit else ""
    return f"nights run: {', '.join(shown)}{more}"
