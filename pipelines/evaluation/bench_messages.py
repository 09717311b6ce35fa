"""`segone bench messages`: many messages through the understand_messages stage, as the DAG runs it.

A bench lake holds one night: N customers (all with the message_analysis consent) and M messages in silver, whose
texts are drawn (with a seed) from the intent model's training file, one in five an email or call transcript of two
to four such sentences, so that lengths vary as in a real inbox. The stage then runs over every shard, two shards at a
time in two processes (the DAG's `max_active_tis_per_dagrun=2` on two cores): silver read, intent, sentiment,
distress, signals, gold message_insights and message_signals written. Reported: wall time, messages per second, the
slowest shard, the CPU seconds the workers spent (a figure that the machine's other load does not inflate as much as
the wall time), the load average, and the peak memory of a worker.
"""
from __future__ import annotations

import os
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake, registry
from pipelines.config import Paths

DAY = date(2026, 11, 20)
CHANNELS = np.array(["chat", "email", "call_transcript", "app_review", "complaint_form"], dtype=object)
_WORKER: dict[str, Any] = {}


def build_bench_lake(paths: Paths, n_customers: int, n_messages: int, seed: int = 0) -> None:
    from pipelines.messages import read_labelled, training_file

    rng = np.random.default_rng(seed)
    customers = np.array([f"B{i:08d}" for i in range(n_customers)], dtype=object)
    buckets = lake.bucket_of(customers)
    snapshot = lake.partition_path(paths, "silver", "consent_state", as_of=DAY.isoformat())
    lake.write_frame(pd.DataFrame({"customer_id": customers, "is_message_analysis_allowed": True,
                                   "bucket": buckets.astype(np.int32)}), snapshot, paths)
    texts = np.array(read_labelled(training_file())["text"].tolist(), dtype=object)
    picks = rng.integers(0, len(texts), size=n_messages)
    body = texts[picks]
    channel = CHANNELS[rng.choice(5, size=n_messages, p=[0.55, 0.15, 0.05, 0.05, 0.20])]
    long = np.flatnonzero(np.isin(channel, ["email", "call_transcript"]))
    extra = rng.integers(1, 4, size=len(long))
    for k, i in enumerate(long):
        body[i] = " ".join([body[i], *texts[rng.integers(0, len(texts), size=extra[k])]])
    who = rng.integers(0, n_customers, size=n_messages)
    seconds = rng.integers(0, 86400, size=n_messages)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
    frame = pd.DataFrame({"message_id": [f"BM{i:09d}" for i in range(n_messages)], "customer_id": customers[who],
                          "received_at": pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s"),
                          "channel": channel, "text": body, "bucket": buckets[who].astype(np.int32)})
    frame = frame.sort_values(["bucket", "customer_id"], kind="stable")
    lake.write_frame(frame, lake.partition_path(paths, "silver", "messages", load_date=DAY.isoformat()), paths)


def _init_worker(home: str) -> None:
    from pipelines.messages import load_model, scorer

    paths = Paths(Path(home))
    _WORKER.update(paths=paths, model=load_model(paths), scorer=scorer())


def _run_shard(bucket: int) -> dict[str, Any]:
    from pipelines.messages import understand_messages_shard

    cpu = time.process_time()
    metrics = understand_messages_shard(_WORKER["paths"], DAY, bucket, _WORKER["model"], _WORKER["scorer"])
    metrics["cpu_seconds"] = round(time.process_time() - cpu, 2)
    metrics["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return metrics


def _model_into(paths: Paths, source: Paths) -> str:
    """The promoted messages model of `source` (copied), or one trained here when it has none."""
    from pipelines.messages import FAMILY, train_messages

    version = registry.promoted_version(source, FAMILY)
    if version is None:
        return train_messages(paths)["version"]
    shutil.copytree(registry.family_dir(source, FAMILY) / version, registry.family_dir(paths, FAMILY) / version)
    registry.promote(paths, FAMILY, version, "copied for the benchmark")
    return version


def bench_messages(source: Paths, n_customers: int, n_messages: int, workers: int = 2) -> dict[str, Any]:
    from pipelines.messages import shards, summarise_shards

    home = source.home / "bench" / f"messages-{n_customers}-{n_messages}"
    shutil.rmtree(home, ignore_errors=True)
    paths = Paths(home)
    version = _model_into(paths, source)
    started = time.perf_counter()
    build_bench_lake(paths, n_customers, n_messages)
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(str(home),)) as pool:
        per_shard = list(pool.map(_run_shard, shards()))
    wall = time.perf_counter() - started
    summary = summarise_shards(paths, DAY, per_shard)
    result = {"customers": n_customers, "messages": n_messages, "scored": summary["n_messages_scored"],
              "workers": workers, "model_version": version, "seconds": round(wall, 1),
              "messages_per_second": round(summary["n_messages_scored"] / wall),
              "slowest_shard_seconds": max(m["seconds"] for m in per_shard),
              "shard_score_seconds_total": round(sum(m["score_seconds"] for m in per_shard), 1),
              "cpu_seconds_total": round(sum(m["cpu_seconds"] for m in per_shard), 1),
              "cpu_microseconds_per_message": round(1e6 * sum(m["cpu_seconds"] for m in per_shard)
                                                    / max(summary["n_messages_scored"], 1), 1),
              "load_average_1min_at_end": round(os.getloadavg()[0], 2),
              "shard_read_seconds_total": round(sum(m["read_seconds"] for m in per_shard), 1),
              "worker_peak_rss_mb": max(m["worker_peak_rss_mb"] for m in per_shard),
              "customers_with_signals": summary["n_customers_with_signals"], "signals": summary["signals"],
              "bench_lake_build_seconds": round(build_seconds, 1), "cpu_count": os.cpu_count()}
    shutil.rmtree(home, ignore_errors=True)
    return result


def format_messages_table(results: list[dict[str, Any]]) -> str:
    lines = ["customers | messages | workers | seconds | messages/s | CPU s | CPU us/message | load | worker peak MB"]
    for r in results:
        lines.append(f"{r['customers']:,} | {r['scored']:,} | {r['workers']} | {r['seconds']} | "
                     f"{r['messages_per_second']:,} | {r['cpu_seconds_total']} | {r['cpu_microseconds_per_message']} | "
                     f"{r['load_average_1min_at_end']} | {r['worker_peak_rss_mb']}")
    return "\n".join(lines)
