"""Run metrics: runs/<load_date>/<stage>.json, what each stage did, read by the gates and the summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.config import Paths


def write_run_metrics(paths: Paths, load_date: str, stage: str, metrics: dict[str, Any]) -> Path:
    """runs/<load_date>/<stage>.json, replaced atomically."""
    folder = paths.runs / load_date
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stage}.json"
    tmp = folder / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=str, sort_keys=True), encoding="utf-8")
    tmp.replace(target)
    return target


def read_run_metrics(paths: Paths, load_date: str, stage: str) -> dict[str, Any] | None:
    target = paths.runs / load_date / f"{stage}.json"
    return json.loads(target.read_text(encoding="utf-8")) if target.exists() else None


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
