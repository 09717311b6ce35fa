"""`segone bench features`: what the feature store (stage 3, docs/feature_store.md) costs a night, against what the
night cost when every stage computed its features from the whole history.

On a home whose silver holds the history and the night D (ingested and conformed), each method in a fresh process
(its peak memory, VmHWM, is its own), in this order:
- `rebuild_previous`: `segone features rebuild --date D-1`, the state the night starts from (set-up, timed);
- `update`: `segone features update --date D`, the night: D's silver merged into the store of D-1, every feature
  table of D written (what the DAG's update_features tasks do, shard after shard);
- `rebuild`: `segone features rebuild --date D`, the same tables computed from silver alone (every posting of the
  history read, classified and aggregated again);
- `recompute`: what the stages computed before the store, every night: the forecast's features from silver for
  every shard (`forecast.build_panel`, which decide computed a second time) and the life-event features of the
  consented customers of every shard (`life_events.register_inputs` + `compute_features`), with today's SQL;
- `floor`: one DuckDB pass reading every silver posting and grouping it by customer (issue 17's floor).
The home is modified (the store's partitions): run it on a copy (`cp -a`). Without `--home`, a bank of each size is
simulated, its history loaded and its night D ingested and conformed first (not timed), under
$SEGONE_HOME/bench/features-<N>/.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.config import Paths

METHODS = ("rebuild_previous", "update", "rebuild", "recompute", "floor")
DAYS = 240   # days of history of a simulated bank (the shared 2,000-customer bank's)


def _cpu() -> float:
    """CPU seconds of this process so far, every thread (DuckDB's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(method: str, home: Path, day: date) -> dict[str, Any]:
    """One method in this (fresh) process."""
    from pipelines import lake, store
    from pipelines.evaluation.bench import _peak_rss_mb

    paths = Paths(home)
    cpu_before = _cpu()
    started = time.perf_counter()
    out: dict[str, Any] = {}
    if method == "rebuild_previous":
        store.rebuild(paths, day - timedelta(days=1))
    elif method == "update":
        metrics = store.update_all(paths, day)
        out.update(modes=metrics["modes"], n_rebuilt_customers=metrics["n_rebuilt_customers"],
                   buckets_rebuilt=metrics["buckets_rebuilt"])
    elif method == "rebuild":
        store.rebuild(paths, day)
    elif method == "recompute":
        from pipelines import forecast
        from pipelines import life_events as le

        cfg = le.settings()
        parts = {"forecast_features": 0.0, "life_event_features": 0.0}
        forecast_cpu = 0.0
        for bucket in store.shards():
            begin, begin_cpu = time.perf_counter(), _cpu()
            forecast.build_panel(paths, day, [day], buckets=[bucket])
            parts["forecast_features"] += 2 * (time.perf_counter() - begin)   # the forecast's and decide's
            forecast_cpu += _cpu() - begin_cpu
            begin = time.perf_counter()
            consent = le.consent_state(paths, day, [bucket])
            consented = consent.loc[consent["life_events"] & consent["personalization"], "customer_id"]
            con = lake.connect()
            try:
                le.register_inputs(con, paths, day, [day], [bucket], cfg)
                le.restrict_to_customers(con, consented)
                le.compute_features(con, cfg)
            finally:
                con.close()
            parts["life_event_features"] += time.perf_counter() - begin
        out["parts_seconds"] = {k: round(v, 2) for k, v in parts.items()}
        out["seconds"] = round(sum(parts.values()), 2)   # decide's second build, counted, was not run twice
        out["cpu_seconds"] = round(_cpu() - cpu_before + forecast_cpu, 2)   # the same for the CPU
    elif method == "floor":
        scan = lake.scan_sql(paths, "silver", "transactions")
        con = lake.connect()
        try:
            out["postings"] = int(con.execute(f"select sum(n) from (select customer_id, count(*) as n, "
                                              f"sum(amount_base) as s from {scan} group by customer_id)"
                                              ).fetchall()[0][0])
        finally:
            con.close()
    else:
        raise ValueError(f"unknown method {method!r}")
    out.setdefault("seconds", round(time.perf_counter() - started, 2))
    out.setdefault("cpu_seconds", round(_cpu() - cpu_before, 2))   # all threads: the figure a busy shared machine
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)                   # distorts least
    return out


def _run_child(method: str, home: Path, day: date) -> dict[str, Any]:
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "pipelines.evaluation.bench_features", method, str(home), day.isoformat()],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare_bank(paths: Paths, customers: int, days: int, day: date) -> Path:
    """A simulated bank of `customers` with `days` of history, its history loaded and its night `day` ingested and
    conformed (reused when already there)."""
    from pipelines import stages
    from pipelines.sources.simulate import simulate_command

    home = paths.home / "bench" / f"features-{customers}-{days}"
    bank = Paths(home)
    if not (bank.runs / day.isoformat() / "conform.json").exists():
        home.mkdir(parents=True, exist_ok=True)
        simulate_command(bank, customers=customers, days=days, end_date=day, seed=42, fmt="csv")
        stages.load_history(bank)
        stages.ingest(bank, day)
        stages.conform(bank, day)
    return home


def bench_features(home: Path, day: date) -> dict[str, Any]:
    """Every method on `home` (see the module's docstring), one row."""
    from pipelines import lake

    paths = Paths(home)
    con = lake.connect()
    try:
        scan = lake.scan_sql(paths, "silver", "customers")
        customers = int(con.execute(f"select count(distinct customer_id) from {scan}").fetchall()[0][0])
    finally:
        con.close()
    row: dict[str, Any] = {"home": str(home), "as_of": day.isoformat(), "customers": customers,
                           "measured": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()[0]}
    for method in METHODS:
        row[method] = _run_child(method, home, day)
    row["update_vs_recompute"] = round(row["recompute"]["seconds"] / row["update"]["seconds"], 2)
    row["update_vs_rebuild"] = round(row["rebuild"]["seconds"] / row["update"]["seconds"], 2)
    row["update_vs_floor"] = round(row["update"]["seconds"] / max(row["floor"]["seconds"], 0.01), 1)
    return row


def format_features_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| customers | night: store update | rebuild from silver | before: the stages' own features | "
             "one-pass floor | update peak memory |", "|---:|---:|---:|---:|---:|---:|",
             ]
    for r in rows:
        cells = [f"{r[m]['seconds']} s ({r[m]['cpu_seconds']} s CPU)" for m in ("update", "rebuild", "recompute",
                                                                                 "floor")]
        lines.append(f"| {r['customers']:,} | {' | '.join(cells)} | {r['update']['peak_rss_mb']:,.0f} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], Path(sys.argv[2]), date.fromisoformat(sys.argv[3]))))
