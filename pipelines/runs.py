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
