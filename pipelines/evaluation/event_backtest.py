"""`segone backtest events`: the income-drop and large-expense engines (pipelines/event_forecast.py) against a rule
and the base rate, time-based and without leakage (docs/backtests.md, "Income drops and large expenses")."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines import forecast
from pipelines.config import Paths
from pipelines.event_forecast import KINDS, build_training, eligible, evaluate, fit, horizons, label_frame

def rule_scores(inputs: pd.DataFrame, last_year: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """The rules the engines are compared with, per customer, cut-off and horizon (0/1 claims, what a bank's rule
    says):
    - income, "the income of the last month continues": no drop, unless a regular income is already overdue
      (is_income_stopped: a mature stream of at most monthly cadence overdue by 1.5 cadences + 2 days);
    - expense, "a known scheduled payment, or last year's same window": a quarterly or yearly bill of at least the
      threshold is due within the horizon (known_large_due_h > 0), or a large one-off payment fell in the same
      window a year before; `rule_abstains` when the history does not reach a year back (then only the scheduled
      part speaks)."""
    rows = []
    for h in horizons():
        frame = inputs[["customer_id", "cutoff"]].copy()
        frame["horizon_days"] = h
        if kind == "income":
            frame["p_rule"] = (inputs["is_income_stopped"].to_numpy(float) > 0).astype(float)
            frame["rule_abstains"] = False
        else:
            frame["p_rule"] = (inputs[f"known_large_due_{h}"].to_numpy(float) > 0).astype(float)
            frame["rule_abstains"] = True
        rows.append(frame)
    out = pd.concat(rows, ignore_index=True)
    if kind == "expense" and last_year is not None and len(last_year):
        ly = last_year[["customer_id", "cutoff", "horizon_days", "has_last_year", "large_last_year"]]
        out = out.merge(ly, on=["customer_id", "cutoff", "horizon_days"], how="left")
        has = out["has_last_year"].astype("boolean").fillna(False).to_numpy(bool)
        large = out["large_last_year"].astype("boolean").fillna(False).to_numpy(bool)
        out["p_rule"] = np.maximum(out["p_rule"].to_numpy(float), (has & large).astype(float))
        out["rule_abstains"] = ~has
        out = out.drop(columns=["has_last_year", "large_last_year"])
    return out


def backtest(paths: Paths, n_cutoffs: int | None = None, step_days: int | None = None,
             dataset: str | None = None) -> dict[str, Any]:
    """Time-based, no leakage: at each test cut-off T (the last the longest horizon before the data's end, then
    `step_days` earlier), each event's engine is trained afresh on the training cut-offs before T whose outcome
    window of that horizon ends by T, and scored at T against what happened; the rule and the base rate (the event
    rate of the training rows) on the same rows. ROC AUC, Brier and calibration error per horizon, pooled over the
    test cut-offs."""
    from pipelines.evaluation.backtest import test_cutoffs

    spec = forecast.settings()["backtest"]
    training = forecast.settings()["training"]
    start, end = forecast.data_start(paths), forecast.data_end(paths)
    tests = test_cutoffs(start, end, int(n_cutoffs or spec["n_cutoffs"]), int(step_days or spec["cutoff_step_days"]))
    cutoffs = sorted(set(forecast.training_cutoffs(start, end, int(training["cutoff_step_days"]),
                                                   int(training["min_history_days"]), int(training["window_days"]))
                         ) | set(tests))
    inputs, raw, last_year = build_training(paths, end, cutoffs, series_until=end, with_last_year=True)
    scored: dict[str, list[pd.DataFrame]] = {k: [] for k in KINDS}
    notes: list[str] = []
    for test in tests:
        at = pd.Timestamp(test)
        for kind in KINDS:
            labels = label_frame(raw, kind)
            ends = labels["cutoff"] + pd.to_timedelta(labels["horizon_days"], unit="D")
            fit_labels = labels[(labels["cutoff"] < at) & (ends <= at)]
            fit_inputs = inputs[inputs["cutoff"] < at]
            try:
                engine = fit(fit_inputs.reset_index(drop=True), fit_labels.reset_index(drop=True), kind)
            except ValueError as error:
                notes.append(f"{kind} at {test}: not trained ({error})")
                continue
            rows = inputs[(inputs["cutoff"] == at)]
            rows = rows[eligible(rows, kind)].reset_index(drop=True)
            pred = engine.predict(rows)
            pred["p_base"] = pred["horizon_days"].map(engine.base_rates).astype(float)
            pred = pred.merge(rule_scores(rows, last_year, kind), on=["customer_id", "cutoff", "horizon_days"])
            pred = pred.merge(labels[labels["cutoff"] == at], on=["customer_id", "cutoff", "horizon_days"],
                              suffixes=("", "_true"))
            scored[kind].append(pred)
    table = []
    for kind, parts in scored.items():
        if not parts:
            continue
        frame = pd.concat(parts, ignore_index=True)
        for what, column in (("engine", "p_event"), ("rule", "p_rule"), ("base_rate", "p_base")):
            for h, m in evaluate(frame, frame[["customer_id", "cutoff", "horizon_days", "is_event"]],
                                 column).items():
                table.append({"dataset": dataset or paths.home.name, "event": kind, "predictor": what,
                              "horizon_days": int(h), **m,
                              "rule_abstains_share": float(frame.loc[frame["horizon_days"] == int(h),
                                                                     "rule_abstains"].mean())})
    return {"dataset": dataset or paths.home.name, "test_cutoffs": [t.isoformat() for t in tests],
            "rows": table, "notes": notes}


def backtest_command(paths: Paths, output: Any = None, cutoffs: int | None = None, dataset: str | None = None
                     ) -> str:
    """`segone backtest events`: runs `backtest`, writes reports/backtest/events.json (rows of other data sets kept)
    and prints the table."""
    import json
    from pathlib import Path

    result = backtest(paths, n_cutoffs=cutoffs, dataset=dataset)
    folder = Path(output) if output else paths.reports / "backtest"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "events.json"
    kept = []
    if target.exists():
        kept = [r for r in json.loads(target.read_text()).get("rows", []) if r["dataset"] != result["dataset"]]
    target.write_text(json.dumps({**result, "rows": kept + result["rows"]}, indent=2, default=str) + "\n")
    table = pd.DataFrame(result["rows"])
    if table.empty:
        return f"backtest of {result['dataset']}: nothing could be trained ({'; '.join(result['notes'])})"
    shown = table[["event", "predictor", "horizon_days", "n_rows", "event_rate", "roc_auc", "brier",
                   "calibration_error", "rule_abstains_share"]]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        text = shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    return (f"income-drop and large-expense backtest of {result['dataset']} (test cut-offs "
            f"{', '.join(result['test_cutoffs'])}):\n{text}\n" + "".join(f"note: {n}\n" for n in result["notes"])
            + f"written: {target}")
