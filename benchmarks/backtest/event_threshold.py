"""The large-expense threshold of 2026-12-07 (issue 16: the typical month, the median of the last six, instead of the
last 90 days' spend / 3) on one bank: the event rate per cut-off under both thresholds (from the same features, the
label SQL run twice), then `segone backtest events`'s own code (pipelines/evaluation/event_backtest.backtest) for
the events asked, with the new threshold.

    SEGONE_HOME=<bank> PYTHONPATH=. python benchmarks/backtest/event_threshold.py <dataset> <out.json> [expense,income]

(`none` as the third argument: the rates only, no backtest.)

Writes <out.json>: {"dataset", "rates": per cut-off and horizon the event rate and median threshold under "old" and
"new", "backtest": the backtest's result (rows as benchmarks/backtest/events.json), "seconds"}; written once the
rates are known, again after the backtest. The features are built once and handed to the backtest (its
build_training would build the same). docs/backtests.md, "Income drops and large expenses".
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import event_forecast as ef
from pipelines import forecast, lake, sql
from pipelines import features as feature_stage
from pipelines.config import Paths
from pipelines.evaluation import event_backtest
from pipelines.evaluation.backtest import test_cutoffs


def old_threshold(features: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The threshold until 2026-12-07: max(multiple x (fixed_spend_90 + flexible_spend_90) per 30 days of the
    history the 90 days cover, min_amount)."""
    seen = np.clip(np.nan_to_num(features["history_days"].to_numpy(float), nan=90.0), 1.0, 90.0)
    outflow = (features["fixed_spend_90"].to_numpy(float) + features["flexible_spend_90"].to_numpy(float)) / seen * 30
    base = ef.baselines(features, cfg)
    base["monthly_outflow"] = outflow.round(2)
    base["expense_threshold"] = np.maximum(float(cfg["expense"]["multiple"]) * outflow,
                                           float(cfg["expense"]["min_amount"])).round(2)
    return base


def main(dataset: str, out: Path, kinds: tuple[str, ...]) -> None:
    started = time.perf_counter()
    paths = Paths.from_env()
    cfg = ef.settings()
    spec, training = forecast.settings()["backtest"], forecast.settings()["training"]
    start, end = forecast.data_start(paths), forecast.data_end(paths)
    tests = test_cutoffs(start, end, int(spec["n_cutoffs"]), int(spec["cutoff_step_days"]))
    cutoffs = sorted(set(forecast.training_cutoffs(start, end, int(training["cutoff_step_days"]),
                                                   int(training["min_history_days"]), int(training["window_days"])))
                     | set(tests))
    con = lake.connect()
    rates = []
    try:
        feature_stage.register_silver(con, paths, end, None)
        panel = feature_stage.build_panel(con, cutoffs, ef.horizons(), with_labels=False, series_until=end)
        sql.set_variables(con, **ef.label_variables(cfg), last_year_days=int(cfg["calendar"]["last_year_days"]))
        frames = {}
        for name, base in (("old", old_threshold(panel.features, cfg)), ("new", ef.baselines(panel.features, cfg))):
            con.register("event_baselines_frame", base)
            con.execute("create or replace temp table event_baselines as select customer_id, "
                        "cast(cutoff as date) as cutoff, income_baseline, expense_threshold, history_days "
                        "from event_baselines_frame")
            labels = sql.frame(con, ef.LABEL_SQL, order_by="customer_id, cutoff, horizon_days")
            labels["cutoff"] = pd.to_datetime(labels["cutoff"])
            per = (labels.merge(base[["customer_id", "cutoff", "expense_threshold"]].assign(
                       customer_id=lambda f: f["customer_id"].astype(str)), on=["customer_id", "cutoff"])
                   .groupby(["cutoff", "horizon_days"])
                   .agg(n=("is_large_expense", "size"), rate=("is_large_expense", "mean"),
                        median_threshold=("expense_threshold", "median")).reset_index())
            rates += [{"threshold": name, "cutoff": r.cutoff.date().isoformat(), "horizon_days": int(r.horizon_days),
                       "n": int(r.n), "rate": float(r.rate), "median_threshold": float(r.median_threshold),
                       "is_test": r.cutoff.date() in tests} for r in per.itertuples()]
            frames[name] = labels
        last_year = sql.frame(con, "features_event_last_year", order_by="customer_id, cutoff, horizon_days")
        last_year["cutoff"] = pd.to_datetime(last_year["cutoff"])
        inputs = ef.event_inputs(panel.features, panel.streams, cfg)
    finally:
        con.close()
    built = round(time.perf_counter() - started, 1)
    print(f"features and labels built in {built} s", flush=True)
    out.write_text(json.dumps({"dataset": dataset, "rates": rates, "backtest": None, "features_seconds": built},
                              indent=1) + "\n")
    if not kinds:
        return
    # the backtest's own loop, on these frames (build_training would rebuild the same ones)
    event_backtest.build_training = lambda *a, **k: (inputs, frames["new"], last_year)
    event_backtest.KINDS = kinds
    result = event_backtest.backtest(paths, dataset=dataset)
    out.write_text(json.dumps({"dataset": dataset, "rates": rates, "backtest": result, "features_seconds": built,
                               "seconds": round(time.perf_counter() - started, 1)}, indent=1, default=str) + "\n")
    table = pd.DataFrame(result["rows"])
    if len(table):
        print(table[["event", "predictor", "horizon_days", "n_rows", "event_rate", "roc_auc", "brier",
                     "calibration_error"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]),
         tuple(k for k in (sys.argv[3] if len(sys.argv) > 3 else "expense,income").split(",") if k in ("expense", "income")))
