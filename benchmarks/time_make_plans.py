"""CPU seconds of the night's `make_plans` (pipelines/plans.py) for one day, shard by shard, and a digest of what it
plans, so that two checkouts can be compared on the same home.

    SEGONE_HOME=<a home whose night D ran through the forecast> python benchmarks/time_make_plans.py D [--buckets 0,1]

For every shard of D (or the listed ones), in this process: the read step (`plans.read_inputs`) and the plan
(`plans.plan_frame`), timed with resource.getrusage (user + system CPU of the process and DuckDB's threads; on a
shared machine CPU seconds are the figure to compare, wall seconds measure the queue), without the write (nothing in
the home changes, so the same home can be timed with main's code and a branch's, alternately). Prints one JSON line:
CPU seconds per shard, the bills found and plan rows, and an md5 of each shard's bills and plans frames (every
column, every row, in order): equal digests from two checkouts mean identical outputs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import date


def digest(frame) -> str:
    return hashlib.md5(frame.to_csv(index=False).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("day", type=date.fromisoformat)
    parser.add_argument("--buckets", default=None, help="comma-separated shards (default: every shard)")
    args = parser.parse_args(argv)

    from pipelines import plans
    from pipelines.config import Paths
    from pipelines.stages import cpu_seconds

    paths = Paths.from_env()
    buckets = plans.shards() if args.buckets is None else [int(b) for b in args.buckets.split(",")]
    cfg = plans.settings()
    started_cpu, started = cpu_seconds(), time.perf_counter()
    shards = []
    for bucket in buckets:
        before = cpu_seconds()
        inputs = plans.read_inputs(paths, args.day, bucket, cfg)
        planned = plans.plan_frame(args.day, cfg=cfg, **inputs)
        shards.append({"bucket": bucket, "cpu_seconds": round(cpu_seconds() - before, 3),
                       "n_bills": int(len(inputs["bills"])), "n_plan_rows": int(len(planned)),
                       "bills_md5": digest(inputs["bills"]), "plans_md5": digest(planned)})
    cpu = cpu_seconds() - started_cpu
    print(json.dumps({"day": args.day.isoformat(), "shards": len(shards), "cpu_seconds": round(cpu, 3),
                      "wall_seconds": round(time.perf_counter() - started, 3),
                      "cpu_seconds_per_shard": round(cpu / len(shards), 3),
                      "outputs_md5": hashlib.md5("".join(s["bills_md5"] + s["plans_md5"]
                                                         for s in shards).encode()).hexdigest(),
                      "per_shard": shards}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
