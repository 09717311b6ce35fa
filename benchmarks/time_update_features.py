"""CPU seconds of the night's `update_features` (pipelines/store.update_features) for one day, shard by shard.

    SEGONE_HOME=<a copy of a home whose silver holds D> python benchmarks/time_update_features.py D [--buckets 0,1]

Every shard of D (or the listed ones) merged into the store of the night before, in this process, each timed with
resource.getrusage (user + system CPU of the process and DuckDB's threads; on a shared machine CPU seconds are the
figure to compare, wall seconds measure the queue). A re-run of D recomputes D from the state of the night before,
so the same copy can be timed again; run main's code and a branch's on two copies of one home (`cp -a`: the copies
keep the store's input fingerprints) and compare the results with benchmarks/compare_nights.py.
Prints one JSON line: total and per-shard CPU and wall seconds, and per shard its mode and customers.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("day", type=date.fromisoformat)
    parser.add_argument("--buckets", default=None, help="comma-separated shards (default: every shard)")
    args = parser.parse_args(argv)

    from pipelines import lake, store
    from pipelines.config import Paths
    from pipelines.schemas import table_schema

    paths = Paths.from_env()
    buckets = (list(range(lake.n_buckets())) if args.buckets is None
               else [int(b) for b in args.buckets.split(",")])
    store.definition_fingerprint()            # the settings and the schemas loaded once, as a night's process has
    table_schema("features", "flow_days")
    started_cpu, started = cpu_seconds(), time.perf_counter()
    shards = []
    for bucket in buckets:
        before = cpu_seconds()
        metrics = store.update_features(paths, args.day, bucket)
        shards.append({"bucket": bucket, "cpu_seconds": round(cpu_seconds() - before, 3), "mode": metrics.get("mode"),
                       "n_rebuilt_customers": metrics.get("n_rebuilt_customers"),
                       "n_customers_with_features": metrics["n_customers_with_features"]})
    cpu = cpu_seconds() - started_cpu
    customers = sum(s["n_customers_with_features"] for s in shards)
    print(json.dumps({"day": args.day.isoformat(), "shards": len(shards), "cpu_seconds": round(cpu, 3),
                      "wall_seconds": round(time.perf_counter() - started, 3),
                      "cpu_seconds_per_shard": round(cpu / len(shards), 3),
                      "cpu_ms_per_customer": round(1000 * cpu / max(customers, 1), 3), "per_shard": shards}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
