"""The event forecasts' calendar and calibration of 2026-12-07 (issue 16; docs/backtests.md "The calendar of
2026-12-07") on one bank: the training frames of `segone backtest events` built once (the same
pipelines/event_forecast.build_training), then `segone backtest events`'s own loop
(pipelines/evaluation/event_backtest.backtest) run on them per variant:

    SEGONE_HOME=<bank> PYTHONPATH=. python benchmarks/backtest/event_calendar.py build <folder> [income.usual=median]
    SEGONE_HOME=<bank> PYTHONPATH=. python benchmarks/backtest/event_calendar.py run <folder> <dataset> <variant> \\
        [expense,income]

Variants: `shipped` (config/event_forecast.yaml as it is), `no_calendar` (the calendar inputs taken out: the engine
before 2026-12-07), `no_month` (the calendar without target_month), plus any `key=value` overrides of the
`calibration` settings joined by '+' (e.g. `shipped+isotonic_min_events=200`, `shipped+follow_level=auto`, or one
event's: `shipped+shrink_to_base_rate.income=true`). Writes <folder>/<variant>.json
(rows as benchmarks/backtest/events.json) and prints the table; `rates` prints the event rate per cut-off and
horizon (the base-rate shift between the training cut-offs and the test ones).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipelines import event_forecast as ef
from pipelines import forecast, store
from pipelines.config import Paths
from pipelines.evaluation import event_backtest
from pipelines.evaluation.backtest import test_cutoffs

CALENDAR = ("has_last_year", "target_month", "ly_outflow_ratio_", "ly_largest_ratio_", "ly_large_")


def cutoffs(paths: Paths) -> tuple[list, list]:
    spec, training = forecast.settings()["backtest"], forecast.settings()["training"]
    start, end = forecast.data_start(paths), forecast.data_end(paths)
    tests = test_cutoffs(start, end, int(spec["n_cutoffs"]), int(spec["cutoff_step_days"]))
    return sorted(set(forecast.training_cutoffs(start, end, int(training["cutoff_step_days"]),
                                                int(training["min_history_days"]), int(training["window_days"])))
                  | set(tests)), tests


def build(folder: Path, overrides: list[str]) -> None:
    """The frames; `income.usual=median` style overrides of config/event_forecast.yaml change the labels built."""
    started = time.process_time()
    paths = Paths.from_env()
    cfg = copy.deepcopy(ef.settings())
    for item in overrides:
        key, value = item.split("=")
        section, name = key.split(".")
        cfg[section][name] = value
    ef.settings = lambda: cfg
    if cfg["calendar"]["last_year_rows"] == "all":
        # what the calendar inputs would be with a store that keeps every posting a year (training frames only:
        # pipelines/store.windows refuses it with config/features.yaml's posting_days)
        kept, windows = store.calendar, store.windows

        def checked():
            store.calendar = kept
            try:
                return windows()
            finally:
                store.calendar = every_row

        def every_row():
            return {**kept(), "last_year_rows": "all"}

        store.calendar, store.windows = every_row, checked
    folder.mkdir(parents=True, exist_ok=True)
    every, _ = cutoffs(paths)
    end = forecast.data_end(paths)
    inputs, raw, last_year = ef.build_training(paths, end, every, series_until=end, with_last_year=True)
    for name, frame in (("inputs", inputs), ("labels", raw), ("last_year", last_year)):
        frame.to_parquet(folder / f"{name}.parquet")
    print(f"built {len(inputs)} rows in {time.process_time() - started:.0f} CPU-s (this process)")


def rates(folder: Path) -> None:
    paths = Paths.from_env()
    _, tests = cutoffs(paths)
    raw = pd.read_parquet(folder / "labels.parquet")
    for kind in ef.KINDS:
        lab = ef.label_frame(raw, kind)
        per = lab.groupby(["horizon_days", "cutoff"])["is_event"].agg(["size", "mean"]).reset_index()
        per["test"] = per["cutoff"].dt.date.isin(tests)
        print(kind)
        print(per.pivot(index="cutoff", columns="horizon_days", values="mean").round(3).to_string())


def run(folder: Path, dataset: str, variant: str, kinds: tuple[str, ...]) -> None:
    started = time.process_time()
    paths = Paths.from_env()
    inputs = pd.read_parquet(folder / "inputs.parquet")
    raw = pd.read_parquet(folder / "labels.parquet")
    last_year = pd.read_parquet(folder / "last_year.parquet")
    name, *overrides = variant.split("+")
    cfg = copy.deepcopy(ef.settings())
    if name == "no_calendar":
        inputs = inputs[[c for c in inputs.columns if not c.startswith(CALENDAR)]]
    elif name == "no_month":
        inputs = inputs.drop(columns=["target_month"], errors="ignore")
    elif name != "shipped":
        raise SystemExit(f"unknown variant {name}")
    for item in overrides:
        key, value = item.split("=")
        key, _, kind = key.partition(".")
        section = "calibration" if key in cfg["calibration"] else "income"
        parsed = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
        if kind:   # one event's value: `shrink_to_base_rate.income=true`
            both = cfg[section][key]
            cfg[section][key] = {**(both if isinstance(both, dict) else {k: both for k in ef.KINDS}), kind: parsed}
        else:
            cfg[section][key] = parsed
    ef.settings = lambda: cfg
    event_backtest.build_training = lambda *a, **k: (inputs, raw, last_year)
    event_backtest.KINDS = kinds
    result = event_backtest.backtest(paths, dataset=dataset)
    result["variant"], result["cpu_seconds"] = variant, round(time.process_time() - started, 1)
    result["settings"] = {"calibration": cfg["calibration"], "calendar": cfg["calendar"]}
    (folder / f"{variant}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    table = pd.DataFrame(result["rows"])
    print(variant, f"{result['cpu_seconds']} CPU-s")
    print(table[["event", "predictor", "horizon_days", "n_rows", "event_rate", "roc_auc", "brier",
                 "calibration_error"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for note in result["notes"]:
        print("note:", note)


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "build":
        build(folder, sys.argv[3:])
    elif command == "rates":
        rates(folder)
    else:
        run(folder, sys.argv[3], sys.argv[4],
            tuple(k for k in (sys.argv[5] if len(sys.argv) > 5 else "expense,income").split(",")))
