"""`segone backtest`: the three cash-shortfall engines side by side, time-based and without leakage.

Test cut-offs are `backtest.cutoff_step_days` apart, the last one the longest horizon before the data's end. Before
each, the global engine is trained afresh, each horizon on the cut-offs whose outcome window of that horizon ends on
or before the test cut-off, so nothing it learns comes from after it; features only ever read data on or before their own cut-off. The baseline
needs no training; Prophet is fitted per customer on the series up to the cut-off, for a fixed sample of customers
(it costs ~40-90 ms a customer). Every engine is scored on the same rows: the sample for the three-way comparison
(`population = prophet_sample`), and all customers for global and baseline (`population = all`).

Writes reports/backtest/backtest.json (rows of other data sets kept) and reports/backtest/index.html.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import forecast
from pipelines.config import Paths
from pipelines.errors import SegoneError

log = logging.getLogger(__name__)

ENGINES = ("global", "baseline", "prophet")
METRIC_COLUMNS = ["dataset", "engine", "horizon_days", "population", "n_rows", "n_positive", "roc_auc", "pr_auc",
                  "brier", "calibration_error", "precision_top1pct", "precision_top5pct", "pinball_p10",
                  "pinball_p50", "pinball_p90", "coverage_p10_p90", "date_mae_days", "seconds_per_1k_customers"]


def test_cutoffs(start: date, end: date, n_cutoffs: int, step_days: int) -> list[date]:
    last = end - timedelta(days=max(forecast.horizons()))
    return sorted(last - timedelta(days=step_days * k) for k in range(n_cutoffs)
                  if last - timedelta(days=step_days * k) > start)


def _sample(customers: pd.Series, n: int) -> set[str]:
    """A fixed, data-independent sample: the n customers with the smallest md5 of their id."""
    ranked = sorted(customers.unique(), key=lambda c: hashlib.md5(str(c).encode()).hexdigest())
    return set(ranked[:n])


def metric_row(scored: pd.DataFrame) -> dict[str, Any]:
    from models import metrics

    y = scored["is_shortfall"].astype(int).to_numpy()
    p = scored["p_shortfall"].to_numpy(float)
    true_days = np.where(y == 1, scored["days_to_shortfall_true"].to_numpy(float), np.nan)
    return {
        "n_rows": int(len(scored)), "n_positive": int(y.sum()),
        "roc_auc": metrics.roc_auc(y, p), "pr_auc": metrics.pr_auc(y, p), "brier": metrics.brier(y, p),
        "calibration_error": metrics.calibration_error(y, p),
        "precision_top1pct": metrics.precision_at_top(y, p, 0.01),
        "precision_top5pct": metrics.precision_at_top(y, p, 0.05),
        "pinball_p10": metrics.pinball_loss(scored["min_balance"], scored["min_balance_p10"], 0.1),
        "pinball_p50": metrics.pinball_loss(scored["min_balance"], scored["min_balance_p50"], 0.5),
        "pinball_p90": metrics.pinball_loss(scored["min_balance"], scored["min_balance_p90"], 0.9),
        "coverage_p10_p90": metrics.coverage(scored["min_balance"], scored["min_balance_p10"],
                                             scored["min_balance_p90"]),
        "date_mae_days": metrics.date_mae_days(true_days, scored["days_to_shortfall"]),
    }


def run_backtest(paths: Paths, dataset: str, engines: tuple[str, ...] = ENGINES,
                 prophet_customers: int | None = None, n_cutoffs: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Scored forecasts of every engine at every test cut-off: (rows with forecasts and outcomes, timings)."""
    from models.baseline_engine import forecast_baseline
    from models.prophet_engine import forecast_prophet

    config = forecast.settings()
    spec, training = config["backtest"], config["training"]
    start, end = forecast.data_start(paths), forecast.data_end(paths)
    tests = test_cutoffs(start, end, int(n_cutoffs or spec["n_cutoffs"]), int(spec["cutoff_step_days"]))
    plans = {}
    for cutoff in tests:
        train = forecast.training_cutoffs(start, cutoff, int(training["cutoff_step_days"]),
                                          int(training["min_history_days"]), int(training["window_days"]))
        short = {h: len(c) for h, c in forecast.labelled_cutoffs(train, cutoff).items() if len(c) < 2}
        if not short:
            plans[cutoff] = train
        else:
            log.warning("test cut-off %s skipped: fewer than two training cut-offs with known outcomes before it "
                        "(%s)", cutoff, ", ".join(f"{h} days: {n}" for h, n in sorted(short.items())))
    if not plans:
        raise SegoneError(f"not enough history for a backtest: the data runs from {start} to {end}; a test cut-off "
                          f"needs {max(forecast.horizons())} days of outcomes after it and two training cut-offs "
                          f"with their own outcomes before it")
    all_cutoffs = sorted(set(plans) | {c for train in plans.values() for c in train})
    log.info("backtest %s: test cut-offs %s, panel of %d cut-offs", dataset, list(plans), len(all_cutoffs))
    # Prophet fits on up to a year of each customer's series: build it that far back
    panel = forecast.build_panel(paths, end, all_cutoffs, with_labels=True, series_until=end, series_days=365)
    inputs = forecast.model_inputs(panel)
    labels = panel.labels
    n_prophet = int(prophet_customers if prophet_customers is not None else spec["prophet_customers"])
    scored, seconds, customers = [], {e: 0.0 for e in engines}, {e: 0 for e in engines}
    for cutoff, train in plans.items():
        at = pd.Timestamp(cutoff)
        train_mask = inputs["cutoff"].isin(pd.to_datetime(train))
        test_inputs = inputs[inputs["cutoff"] == at].reset_index(drop=True)
        sample = _sample(test_inputs["customer_id"], n_prophet)
        forecasts = {}
        if "global" in engines:
            # each horizon learns from the cut-offs whose outcome of that horizon was known on the test cut-off
            known = forecast.known_labels(labels[labels["cutoff"].isin(pd.to_datetime(train))], cutoff)
            engine = forecast.fit_global(inputs[train_mask].reset_index(drop=True), known.reset_index(drop=True))
            started = time.perf_counter()
            forecasts["global"] = forecast.predict(engine, test_inputs, forecast.known_payments(panel, test_inputs))
            forecasts["global"] = forecasts["global"].drop(columns=["unmet_day"])
            seconds["global"] += time.perf_counter() - started
            customers["global"] += len(test_inputs)
        if "baseline" in engines:
            streams = forecast.projected_streams(panel.streams[panel.streams["cutoff"] == at])
            started = time.perf_counter()
            forecasts["baseline"] = forecast_baseline(test_inputs, streams, forecast.horizons())
            seconds["baseline"] += time.perf_counter() - started
            customers["baseline"] += len(test_inputs)
        if "prophet" in engines and sample:
            series = panel.series[panel.series["customer_id"].isin(sample)]
            cut = pd.DataFrame({"customer_id": sorted(sample), "cutoff": at})
            started = time.perf_counter()
            forecasts["prophet"] = forecast_prophet(series, cut, forecast.horizons(), processes=2)
            seconds["prophet"] += time.perf_counter() - started
            customers["prophet"] += len(sample)
        for name, frame in forecasts.items():
            frame = frame.copy()
            frame["cutoff"] = pd.to_datetime(frame["cutoff"])
            joined = frame.merge(labels, on=["customer_id", "cutoff", "horizon_days"], suffixes=("", "_true"))
            joined["engine"] = name
            joined["in_sample"] = joined["customer_id"].isin(sample)
            scored.append(joined)
    timing = {e: (1000 * seconds[e] / customers[e] if customers[e] else float("nan")) for e in engines}
    return pd.concat(scored, ignore_index=True), {"seconds_per_1k_customers": timing, "test_cutoffs":
                                                   [c.isoformat() for c in plans], "prophet_customers": n_prophet}


def summarise(scored: pd.DataFrame, dataset: str, timing: dict[str, float]) -> pd.DataFrame:
    rows = []
    for population in ("prophet_sample", "all"):
        for (engine, horizon), part in scored.groupby(["engine", "horizon_days"]):
            if population == "prophet_sample":
                part = part[part["in_sample"]]
            elif engine == "prophet":
                continue
            if part.empty:
                continue
            rows.append({"dataset": dataset, "engine": engine, "horizon_days": int(horizon),
                         "population": population, **metric_row(part),
                         "seconds_per_1k_customers": timing.get(engine, float("nan"))})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def write_outputs(table: pd.DataFrame, scored: pd.DataFrame, dataset: str, meta: dict, output: Path) -> Path:
    """Merge this data set's rows into backtest.json and redraw the HTML report from everything in it."""
    output.mkdir(parents=True, exist_ok=True)
    target = output / "backtest.json"
    rows = json.loads(target.read_text(encoding="utf-8")) if target.exists() else []
    rows = [r for r in rows if r.get("dataset") != dataset]
    rows += [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
             for r in table.to_dict(orient="records")]
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    tmp.replace(target)
    scored_dir = output / "scored"
    scored_dir.mkdir(exist_ok=True)
    scored.to_parquet(scored_dir / f"{dataset}.parquet", index=False)
    (output / f"meta_{dataset}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    return render_report(output)


def render_report(output: Path) -> Path:
    from models import metrics
    from pipelines.html_report import calibration_figure, lift_figure, render_report as render

    rows = pd.DataFrame(json.loads((output / "backtest.json").read_text(encoding="utf-8")))
    sections = [{"heading": "How to read this",
                 "text": "Each data set is cut at several dates; every engine forecasts from data before the cut-off "
                         "and is scored on what happened after it. The global engine is retrained before each "
                         "cut-off on earlier cut-offs whose outcomes had already happened. 'prophet_sample' rows "
                         "compare all three engines on the same customers; 'all' rows score global and baseline on "
                         "every customer. Reproduce with `make backtest`."}]
    for dataset, part in rows.groupby("dataset", sort=True):
        meta_file = output / f"meta_{dataset}.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        shown = part.drop(columns=["dataset"]).sort_values(["population", "horizon_days", "engine"])
        figures = []
        scored_file = output / "scored" / f"{dataset}.parquet"
        if scored_file.exists():
            scored = pd.read_parquet(scored_file)
            for horizon in sorted(scored["horizon_days"].unique()):
                same = scored[(scored["horizon_days"] == horizon) & scored["in_sample"]]
                calibration = {e: metrics.calibration_table(g["is_shortfall"].astype(int), g["p_shortfall"])
                               for e, g in same.groupby("engine")}
                lift = {e: metrics.lift_table(g["is_shortfall"].astype(int), g["p_shortfall"])
                        for e, g in same.groupby("engine")}
                figures.append(calibration_figure(calibration, f"{dataset}: calibration at {horizon} days"))
                figures.append(lift_figure(lift, f"{dataset}: cumulative gains at {horizon} days"))
        sections.append({"heading": f"Data set: {dataset}",
                         "text": f"Test cut-offs: {', '.join(meta.get('test_cutoffs', []))}. Prophet sample: "
                                 f"{meta.get('prophet_customers', '?')} customers per cut-off.",
                         "table": shown, "figures": figures})
    return render("Cash-shortfall backtest", sections, output / "index.html")


def backtest_command(paths: Paths, what: str = "forecast", dataset: str | None = None,
                     engines: str = ",".join(ENGINES), output: Path | None = None,
                     prophet_customers: int | None = None, cutoffs: int | None = None,
                     labelled: Path | None = None, held_out: bool = False, repeats: int | None = None,
                     test_size: float | None = None) -> str | dict:
    """`segone backtest`: run, write backtest.json and the HTML report, print the comparison table."""
    if what != "messages" and (held_out or repeats is not None or test_size is not None):
        raise SegoneError("--held-out, --repeats and --test-size are for `segone backtest messages`")
    if what == "messages":
        from pipelines.messages import backtest_messages

        if held_out:  # the intent model's training procedure on held-out splits of its training file
            if labelled is not None:
                raise SegoneError("choose one of --held-out (splits of the training file) and --labelled FILE")
            from pipelines.messages import heldout_messages

            return heldout_messages(paths, output, repeats, test_size)
        if repeats is not None or test_size is not None:
            raise SegoneError("--repeats and --test-size go with --held-out")
        if labelled is None:  # a simulated bank: how early messages tell of shortfalls and moves
            from pipelines.messages import lead_times

            return lead_times(paths, output)
        return backtest_messages(paths, labelled, output)
    if labelled is not None:
        raise SegoneError("--labelled is for `segone backtest messages`")
    if what == "life-events":
        from pipelines.life_events import backtest_life_events_command

        return backtest_life_events_command(paths, output)
    names = tuple(e.strip() for e in engines.split(",") if e.strip())
    unknown = set(names) - set(ENGINES)
    if unknown:
        raise SegoneError(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    dataset = dataset or paths.home.name
    output = output or paths.reports / "backtest"
    scored, meta = run_backtest(paths, dataset, names, prophet_customers, cutoffs)
    table = summarise(scored, dataset, meta["seconds_per_1k_customers"])
    report = write_outputs(table, scored, dataset, meta, output)
    shown = table[["engine", "horizon_days", "population", "n_rows", "roc_auc", "pr_auc", "brier",
                   "calibration_error", "coverage_p10_p90", "date_mae_days", "seconds_per_1k_customers"]]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        text = shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    return f"backtest of {dataset}:\n{text}\n\nwritten: {output / 'backtest.json'}\nreport:  {report}"
