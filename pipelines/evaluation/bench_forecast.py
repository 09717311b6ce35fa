"""`segone bench forecast`: the cash-shortfall engines side by side, in one run.

1. A bank of `base` customers with a year of history is simulated, loaded and the global engine trained (set-up,
   timed but not the point).
2. On that real lake: the nightly forecast stage (features + scoring + writes, every shard) is timed end to end.
3. For each size N: the base bank's model inputs at D (real feature distributions) are tiled to N customers, and in
   a fresh process (so that its peak memory is its own) the global engine scores them into cash_forecast rows
   (probabilities, quantiles, dates, safe-to-save, confidence, drivers), and the baseline engine projects them.
4. Prophet fits `prophet_sample` real customers of the base bank (CmdStan per customer, two processes); its time per
   customer times N is the Prophet cost at N, labelled as projected: 1M fits would take about half a day here.
The ratio global vs Prophet per customer is measured in the same run, on the same machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Paths

END = date(2026, 11, 20)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tile(inputs: pd.DataFrame, n: int) -> pd.DataFrame:
    """n customers made of copies of the base customers (ids suffixed), in the same order every time."""
    copies = -(-n // len(inputs))
    frames = []
    for k in range(copies):
        part = inputs.copy()
        part["customer_id"] = part["customer_id"] + f"~{k}"
        frames.append(part)
    return pd.concat(frames, ignore_index=True).iloc[:n].reset_index(drop=True)


def _score_child(inputs_file: Path, home: Path, n: int) -> dict[str, Any]:
    """In a fresh process: global scoring into cash_forecast rows, then the baseline, for n tiled customers."""
    from models.baseline_engine import forecast_baseline
    from pipelines import forecast
    from pipelines.features import Panel

    paths = Paths(home)
    base = pd.read_parquet(inputs_file)
    streams = pd.read_parquet(inputs_file.with_name("streams.parquet"))
    engine = forecast.load_engine(paths)
    inputs = tile(base, n)
    features = inputs[[c for c in base.columns if c in set(pd.read_parquet(inputs_file.with_name("features.parquet"))
                                                                   .columns)]]
    started = time.perf_counter()
    panel = Panel(features=features, streams=pd.DataFrame(), series=pd.DataFrame(), labels=None,
                  reconciliation=pd.DataFrame())
    rows = _score(engine, panel, inputs)
    global_seconds = time.perf_counter() - started
    copies = -(-n // len(base))
    tiled_streams = pd.concat([streams.assign(customer_id=streams["customer_id"] + f"~{k}") for k in range(copies)],
                              ignore_index=True)
    started = time.perf_counter()
    forecast_baseline(features, tiled_streams, forecast.horizons())
    baseline_seconds = time.perf_counter() - started
    return {"customers": n, "global_seconds": round(global_seconds, 2), "cash_forecast_rows": len(rows),
            "baseline_seconds": round(baseline_seconds, 2), "peak_rss_mb": round(_peak_rss_mb())}


def _score(engine, panel, inputs: pd.DataFrame) -> pd.DataFrame:
    """cash_forecast rows from ready model inputs: everything the nightly stage does after the features."""
    from pipelines import forecast

    return forecast.cash_forecast_rows(engine, panel, pd.Timestamp(inputs["cutoff"].iloc[0]).date(), inputs)


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def set_up_bank(prefix: str, base_customers: int, days: int) -> tuple[Path, dict[str, str], dict[str, float]]:
    """A simulated, loaded and trained bank in a fresh temporary $SEGONE_HOME: (home, its environment, the seconds
    each set-up step took)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    segone = str(Path(sys.executable).parent / "segone")
    setup = {}
    for name, args in (("simulate", ["simulate", "--customers", str(base_customers), "--days", str(days),
                                     "--end-date", END.isoformat(), "--seed", "42"]),
                       ("load_history", ["load-history"]), ("train", ["train"])):
        started = time.perf_counter()
        _run([segone, *args], env)
        setup[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
    return home, env, setup


def bench_forecast(sizes: list[int], base_customers: int = 10_000, days: int = 365,
                   prophet_sample: int = 300) -> dict[str, Any]:
    from models.prophet_engine import forecast_prophet
    from pipelines import forecast

    home, env, setup = set_up_bank("segone-bench-forecast-", base_customers, days)
    paths = Paths(home)
    day = forecast.data_end(paths)
    os.environ["SEGONE_HOME"] = str(home)
    started = time.perf_counter()
    stage = forecast.forecast_all(paths, day)
    stage_seconds = time.perf_counter() - started
    panel = forecast.build_panel(paths, day, [day], series_days=365)
    inputs = forecast.model_inputs(panel)
    inputs.to_parquet(home / "inputs.parquet", index=False)
    panel.features.to_parquet(home / "features.parquet", index=False)
    panel.streams.to_parquet(home / "streams.parquet", index=False)

    sample = sorted(panel.features["customer_id"])[:prophet_sample]
    started = time.perf_counter()
    forecast_prophet(panel.series[panel.series["customer_id"].isin(sample)], None, forecast.horizons(), processes=2)
    prophet_per_customer = (time.perf_counter() - started) / len(sample)

    results = []
    for n in sizes:
        out = _run([sys.executable, "-m", "pipelines.evaluation.bench_forecast", str(home / "inputs.parquet"), str(home), str(n)],
                   env)
        row = json.loads(out.strip().splitlines()[-1])
        row["global_ms_per_customer"] = round(1000 * row["global_seconds"] / n, 4)
        row["prophet_seconds_projected"] = round(prophet_per_customer * n, 1)
        row["prophet_ms_per_customer"] = round(1000 * prophet_per_customer, 2)
        row["global_vs_prophet_speedup"] = round(prophet_per_customer * n / row["global_seconds"], 1)
        results.append(row)
    return {
        "base_customers": base_customers, "days": days, "as_of": day.isoformat(), "setup": setup,
        "nightly_stage_on_base_bank": {"customers": stage["n_customers"], "seconds": round(stage_seconds, 1),
                                       "ms_per_customer": round(1000 * stage_seconds / max(stage["n_customers"], 1),
                                                                3)},
        "prophet_sample": len(sample), "prophet_ms_per_customer": round(1000 * prophet_per_customer, 2),
        "scoring": results, "home": str(home),
    }


def format_forecast_table(result: dict[str, Any]) -> str:
    lines = [f"base bank: {result['base_customers']} customers x {result['days']} days "
             f"(simulate {result['setup']['simulate_seconds']} s, load-history {result['setup']['load_history_seconds']}"
             f" s, train {result['setup']['train_seconds']} s)",
             f"nightly forecast stage on the base bank (features + scoring + writes, 16 shards): "
             f"{result['nightly_stage_on_base_bank']['seconds']} s = "
             f"{result['nightly_stage_on_base_bank']['ms_per_customer']} ms per customer",
             f"prophet: {result['prophet_ms_per_customer']} ms per customer (measured on {result['prophet_sample']})",
             "",
             f"{'customers':>10} {'global s':>9} {'global ms/cust':>15} {'baseline s':>11} {'peak MB':>8} "
             f"{'prophet s (proj.)':>18} {'speed-up':>9}"]
    for row in result["scoring"]:
        lines.append(f"{row['customers']:>10} {row['global_seconds']:>9} {row['global_ms_per_customer']:>15} "
                     f"{row['baseline_seconds']:>11} {row['peak_rss_mb']:>8} {row['prophet_seconds_projected']:>18} "
                     f"{row['global_vs_prophet_speedup']:>9}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_score_child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
