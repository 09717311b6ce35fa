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
    decision = {"family": FAMILY, "challenger_version": result["version"], "champion_version": champion,
                "promoted": bool(result["promoted"]) and result["version"] != champion,
                "promoted_version": registry.promoted_version(paths, FAMILY),
                "metric": "mean Brier score over the horizons on the held-out cut-off (lower is better); both "
                          "scores on the same cut-off",
                "challenger_score": result.get("challenger_score"), "champion_score": result.get("champion_score"),
                "n_samples": result.get("n_rows"), "reason": result["reason"],
                "details": {"held_out": result.get("held_out")}}
    return decision


def retrain_life_events(paths: Paths, day: date) -> dict[str, Any]:
    """A challenger (`train_life_events`), then champion against challenger on held-out cut-offs: the challenger's
    PR AUC on its validation cut-offs (computed before its final refit, as its training reports it) against the
    champion's on the same validation cut-offs it did not train on (after its own last training cut-off), the mean
    over the events with held-out positives; the champion stays when it does better. Without a cut-off the champion
    has not seen, the newer model is promoted (and the decision says so)."""
    from pipelines import life_events as le

    champion = registry.promoted_version(paths, le.FAMILY)
    result = le.train_life_events(paths, day)
    challenger = result["version"]
    decision = {"family": le.FAMILY, "challenger_version": challenger, "champion_version": champion,
                "metric": "held-out PR AUC, mean over the events with held-out positives (higher is better)",
                "n_samples": result.get("n_rows"), "details": {"validation": result.get("validation") or {}}}
    if champion is None or champion == challenger:
        decision.update({"promoted": champion is None, "promoted_version": challenger, "reason": result["reason"],
                         "challenger_score": _mean_pr_auc(result.get("validation") or {})})
        return decision
    try:
        scores = _life_event_holdout(paths, day, challenger, champion)
    except Exception as error:  # a champion that cannot score today's features cannot defend its place
        decision.update({"promoted": True, "promoted_version": challenger,
                         "reason": f"the promoted model {champion} cannot be scored on the held-out cut-offs "
                                   f"({type(error).__name__}: {error})"})
        return decision
    decision["details"]["holdout"] = scores["per_event"]
    decision.update({"challenger_score": scores["challenger"], "champion_score": scores["champion"]})
    if scores["champion"] is None:
        decision.update({"promoted": True, "promoted_version": challenger,
                         "reason": f"no held-out cut-off that {champion} has not trained on: the newer model is "
                                   f"promoted (challenger held-out PR AUC {_fmt(scores['challenger'])})"})
    elif scores["challenger"] is None or scores["challenger"] >= scores["champion"]:
        decision.update({"promoted": True, "promoted_version": challenger,
                         "reason": f"held-out PR AUC {_fmt(scores['challenger'])} >= {_fmt(scores['champion'])} "
                                   f"of {champion}"})
    else:
        registry.promote(paths, le.FAMILY, champion, f"kept: challenger {challenger} scored "
                                                     f"{_fmt(scores['challenger'])} < {_fmt(scores['champion'])}")
        decision.update({"promoted": False, "promoted_version": champion,
                         "reason": f"held-out PR AUC {_fmt(scores['challenger'])} worse than "
                                   f"{_fmt(scores['champion'])} of {champion}: the champion stays"})
    return decision


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _mean_pr_auc(validation: dict[str, Any]) -> float | None:
    scores = [v.get("validation_pr_auc") for v in validation.values() if isinstance(v, dict)]
    scores = [float(s) for s in scores if s is not None and not (isinstance(s, float) and math.isnan(s))]
    return sum(scores) / len(scores) if scores else None


def _life_event_holdout(paths: Paths, day: date, challenger: str, champion: str) -> dict[str, Any]:
    """Both models on the challenger's validation cut-offs (the same features, labels and split as its training)."""
    from models.metrics import pr_auc
    from pipelines import life_events as le

    cfg = le.settings()
    first, last = le.data_range(paths)
    end = min(day, last)
    cutoffs = le.cutoff_grid(first, end, cfg)
    features = le.build_features(paths, end, cutoffs, cfg=cfg)
    labels = le.make_labels(features, le.declared_events(paths, end), cfg, le.declared_known_until(end, cfg))
    if cfg.get("train_consented_only", True):
        labels = le.mask_unconsented(labels, le.consent_state(paths, end), cfg)
    new, old = le.load_model(paths, challenger), le.load_model(paths, champion)
    seen_until = pd.Timestamp(registry.read_metadata(paths, le.FAMILY, champion)["training_window"]["last_cutoff"])
    data = features.merge(labels, on=["customer_id", "cutoff"], how="inner", suffixes=("", "__label"))
    per_event: dict[str, dict[str, float]] = {}
    for event, info in new.events.items():
        held_out = info.get("validation_pr_auc")
        if event not in old.events or held_out is None or pd.isna(held_out):
            continue
        column = event + "__label" if event + "__label" in data else event
        y = pd.to_numeric(data[column], errors="coerce").to_numpy(dtype=float, na_value=float("nan"))
        usable = ~pd.isna(y)
        if not usable.any():
            continue
        _, validation = new.split(data.loc[usable, "cutoff"])
        rows = data.loc[usable].loc[validation]
        truth = y[usable][validation]
        unseen = (pd.to_datetime(rows["cutoff"]) > seen_until).to_numpy()
        entry = {"challenger": float(held_out), "positives": int(truth.sum())}
        if unseen.any() and truth[unseen].sum() > 0:
            p = old.predict(rows[unseen], [event])["probability"].to_numpy()
            entry.update({"champion": float(pr_auc(truth[unseen], p)), "champion_rows": int(unseen.sum())})
        per_event[event] = entry
    judged = [v for v in per_event.values() if "champion" in v]
    mean = {"challenger": (sum(v["challenger"] for v in judged) / len(judged)) if judged else
            _mean_pr_auc({e: {"validation_pr_auc": v["challenger"]} for e, v in per_event.items()}),
            "champion": (sum(v["champion"] for v in judged) / len(judged)) if judged else None}
    return {"per_event": per_event, **mean}


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
