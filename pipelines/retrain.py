"""`retrain_models` (DESIGN section 6): retrain the forecaster, the life-event classifiers and the policy, each a
challenger against the promoted champion, and record every decision in gold model_registry (the warehouse shows it).
The nightly run loads only promoted versions (models/<family>/promoted.json). The DAG `retrain_models` and
`segone retrain` call these same functions.

- cash_forecast: `pipelines.forecast.train`: a challenger on a rolling window of cut-offs, promoted when its held-out
  Brier score at 30 days is no worse than the champion's on the same held-out cut-off.
- life_events: `pipelines.life_events.train_life_events` (its own promotion rule).
- policy: `pipelines.policy.retrain_policy`: promoted only when the lower bound of its offline doubly robust
  estimate beats the champion's estimate on the same logged decisions.
"""
from __future__ import annotations

import json
import logging
import math
import time
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd

from pipelines import lake, registry
from pipelines.config import Paths
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILIES = ("cash_forecast", "life_events", "policy")
COLUMNS = {"decided_at": "timestamp with time zone", "challenger_version": "varchar", "champion_version": "varchar",
           "promoted": "boolean", "promoted_version": "varchar", "metric": "varchar", "challenger_score": "double",
           "challenger_ci_low": "double", "challenger_ci_high": "double", "champion_score": "double",
           "n_samples": "bigint", "reason": "varchar", "details": "varchar"}


def record(paths: Paths, day: date, decision: dict[str, Any]) -> int:
    """One decision as gold model_registry as_of=D/family=F (a re-run of the same day and family replaces it)."""
    row = {name: decision.get(name) for name in COLUMNS}
    row["decided_at"] = datetime.now(timezone.utc)
    row["details"] = json.dumps(decision.get("details", {}), default=str, sort_keys=True)
    for name in ("challenger_score", "challenger_ci_low", "challenger_ci_high", "champion_score"):
        value = row[name]
        row[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    final = lake.partition_path(paths, "gold", "model_registry", as_of=day.isoformat(), family=decision["family"])
    columns = ", ".join(f'cast("{name}" as {kind}) as "{name}"' for name, kind in COLUMNS.items())
    con = lake.connect()
    try:
        con.register("frame", pd.DataFrame([row]))
        return lake.write_relation(con, f"select {columns} from frame", final, paths)
    finally:
        con.close()


def retrain_forecast(paths: Paths, day: date) -> dict[str, Any]:
    from pipelines.forecast import FAMILY, train

    champion = registry.promoted_version(paths, FAMILY)
    result = train(paths, day)
    brier = (result.get("held_out", {}).get("30", {}) or {}).get("brier")
    decision = {"family": FAMILY, "challenger_version": result["version"], "champion_version": champion,
                "promoted": bool(result["promoted"]) and result["version"] != champion,
                "promoted_version": registry.promoted_version(paths, FAMILY),
                "metric": "held-out Brier score at 30 days (lower is better)", "challenger_score": brier,
                "champion_score": _champion_brier(result["reason"]), "n_samples": result.get("n_rows"),
                "reason": result["reason"], "details": {"held_out": result.get("held_out")}}
    return decision


def _champion_brier(reason: str) -> float | None:
    """The champion's Brier score as the forecast's promotion reason states it ('... <= 0.0321 of <version>')."""
    import re

    match = re.search(r"(?:<=|than) (\d+\.\d+) of ", reason)
    return float(match.group(1)) if match else None


def retrain_life_events(paths: Paths, day: date) -> dict[str, Any]:
    from pipelines.life_events import FAMILY, train_life_events

    champion = registry.promoted_version(paths, FAMILY)
    result = train_life_events(paths, day)
    validation = result.get("validation") or {}
    scores = [v.get("validation_pr_auc") for v in validation.values() if isinstance(v, dict)]
    scores = [float(s) for s in scores if s is not None and not (isinstance(s, float) and math.isnan(s))]
    return {"family": FAMILY, "challenger_version": result["version"], "champion_version": champion,
            "promoted": bool(result["promoted"]) and result["version"] != champion,
            "promoted_version": registry.promoted_version(paths, FAMILY),
            "metric": "held-out PR AUC, mean over events", "challenger_score": sum(scores) / len(scores) if scores
            else None, "champion_score": None, "n_samples": result.get("n_rows"), "reason": result["reason"],
            "details": {"validation": validation}}


def retrain_policy(paths: Paths, day: date) -> dict[str, Any]:
    from pipelines.policy import retrain_policy as run

    return run(paths, day)


STEPS = {"cash_forecast": retrain_forecast, "life_events": retrain_life_events, "policy": retrain_policy}


def retrain_family(paths: Paths, day: date, family: str) -> dict[str, Any]:
    """Retrain one family and record the decision (what each task of the DAG runs)."""
    if family not in STEPS:
        raise SegoneError(f"unknown model family {family!r}: one of {', '.join(FAMILIES)}")
    started = time.perf_counter()
    decision = STEPS[family](paths, day)
    decision["family"] = family
    record(paths, day, decision)
    decision["seconds"] = round(time.perf_counter() - started, 2)
    write_run_metrics(paths, day.isoformat(), f"retrain_{family}", {k: v for k, v in decision.items()
                                                                     if k != "details"})
    log.info("retrain %s for %s: %s", family, day, decision["reason"])
    return decision


def retrain_models(paths: Paths, day: date, families: tuple[str, ...] = FAMILIES) -> dict[str, Any]:
    """Every family in turn (the CLI); the DAG runs one task per family."""
    return {family: retrain_family(paths, day, family) for family in families}


def retrain_command(paths: Paths, day: date | None = None, family: str | None = None) -> dict[str, Any]:
    """`segone retrain [--date D] [--family F]`: D defaults to the last night that ran."""
    from pipelines.forecast import data_end

    day = day or data_end(paths)
    families = (family,) if family else FAMILIES
    out = retrain_models(paths, day, families)
    return {f: {k: v for k, v in d.items() if k != "details"} for f, d in out.items()}
