"""The baseline engine on the young cut-offs of a loaded bank, with and without its unscheduled income
(docs/forecasting.md, "Short histories"): per history length at the cut-off and horizon, the share that went below
zero, the mean forecast, the share given 0.3 or more and the Brier score.

    SEGONE_HOME=<a loaded bank> python benchmarks/short_history_baseline.py [days after the first day ...]

"without" is the baseline before 2026-12-07 (no income on no stream projected). Reads the lake, writes nothing."""
from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd

from models.baseline_engine import BaselineEngine
from pipelines import forecast
from pipelines.config import Paths


def main(days: list[int]) -> pd.DataFrame:
    paths = Paths(Path(os.environ["SEGONE_HOME"]))
    first, end = forecast.data_start(paths), forecast.data_end(paths)
    panel = forecast.build_panel(paths, end, [first + timedelta(days=d) for d in days], with_labels=True,
                                 series_until=end)
    inputs = forecast.model_inputs(panel)
    known = forecast.known_payments(panel, inputs)
    parts = []
    for name, rows in (("without", inputs.assign(unscheduled_income_90=0.0)), ("with", inputs)):
        scored = forecast.predict(BaselineEngine(forecast.horizons()), rows, known, panel.streams).merge(
            panel.labels, on=["customer_id", "cutoff", "horizon_days"])
        scored["history"] = (pd.to_datetime(scored["cutoff"]) - pd.Timestamp(first)).dt.days
        scored["error"] = (scored["p_shortfall"] - scored["is_shortfall"].astype(float)) ** 2
        table = scored.groupby(["history", "horizon_days"]).agg(
            happened=("is_shortfall", "mean"), forecast=("p_shortfall", "mean"),
            warned=("p_shortfall", lambda p: (p >= 0.3).mean()), brier=("error", "mean"))
        parts.append(table.rename(columns=lambda c: c if c == "happened" else f"{c}_{name}"))
    return parts[0].join(parts[1].drop(columns="happened"))


if __name__ == "__main__":
    print(main([int(d) for d in sys.argv[1:]] or [30, 45, 60, 75, 90, 120, 150]).round(3).to_string())
