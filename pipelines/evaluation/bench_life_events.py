"""`segone bench life-events`: the life-event stage at scale, in one run (modelled on pipelines/evaluation/bench_forecast.py).

1. A bank of `base` customers with `days` of history is simulated, loaded and `segone train` run (the forecaster and
   the life-event classifiers; set-up, timed but not the point). `days` must leave the life-event trainer enough
   cut-offs (min_history_days 120 + several 14-day cut-offs): 300 is safe.
2. On that real lake: the nightly life-event stage (consent + features + scoring + evidence + writes, every shard,
   `pipelines.life_events.classify_all`) is timed end to end on the last day of data.
3. The base bank's life-event features at D are built the way the store's rebuild path builds them (consent_state,
   register_inputs, restrict_to_customers, compute_features; all buckets at once) and saved. For each size N, in a
   fresh process (so that its peak memory is its own), they are tiled to N customers (ids suffixed `~k`) and scored
   with the promoted model as the stage scores them (`score_rows`: per event the consent filter, calibrated
   probability + flag, path-attribution top features, evidence JSON).
   Excluded: the evidence transaction lookup of flagged rows (`evidence_postings`). It is a DuckDB query over the
   silver postings of the lake (transactions_in), which do not exist for tiled customers; in
   the tiled run it is replaced by an empty result (the flagged rows' evidence lists no transactions). Its cost is
   part of the nightly stage timed in step 2.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd

from pipelines.evaluation.bench_forecast import _peak_rss_mb, _run, set_up_bank, tile
from pipelines.config import Paths

EVIDENCE_NOTE = ("evidence transaction lookup excluded from the tiled scoring: evidence_postings is a DuckDB query "
                 "over the lake's silver postings, which tiled customers do not have (it is included in the nightly "
                 "stage timing)")


def _no_postings(con, flagged: pd.DataFrame, day, cfg) -> pd.DataFrame:
    """Stand-in for life_events.evidence_postings in the tiled run: no postings (no lake behind tiled customers)."""
    return pd.DataFrame(columns=["customer_id", "event_type", "transaction_id", "booking_date", "amount", "label",
                                 "signal"])


def _score_child(features_file: Path, home: Path, n: int) -> dict[str, Any]:
    """In a fresh process: n tiled customers scored for every event with the promoted model."""
    from pipelines import life_events

    paths = Paths(home)
    cfg = life_events.settings()
    model = life_events.load_model(paths)
    base = pd.read_parquet(features_file)
    consent = pd.read_parquet(features_file.with_name("le_consent.parquet"))
    features = tile(base, n)
    copies = -(-n // len(base))
    tiled_consent = pd.concat([consent.assign(customer_id=consent["customer_id"] + f"~{k}") for k in range(copies)],
                              ignore_index=True)
    tiled_consent = tiled_consent[tiled_consent["customer_id"].isin(set(features["customer_id"]))]
    day = pd.Timestamp(features["cutoff"].iloc[0]).date()
    events = [e for e in model.events if e in cfg["events"]]

    # as the stage scores: score_rows (consent, predict, explain, evidence JSON), evidence lookup stubbed out
    started = time.perf_counter()
    with mock.patch.object(life_events, "evidence_postings", _no_postings):
        rows = life_events.score_rows(model, None, features, tiled_consent, day, cfg)
    score_seconds = time.perf_counter() - started
    return {"customers": n, "events": len(events), "gold_rows": int(len(rows)),
            "flagged_rows": int(rows["flagged"].sum()), "scoring_seconds": round(score_seconds, 2),
            "peak_rss_mb": round(_peak_rss_mb())}


def base_features(paths: Paths, day) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features at D, consent) of every consented customer, built the way the store's rebuild path builds them per bucket."""
    from pipelines import lake, life_events

    cfg = life_events.settings()
    consent = life_events.consent_state(paths, day)
    consent = consent[consent["life_events"].astype(bool)].reset_index(drop=True)
    con = lake.connect()
    try:
        life_events.register_inputs(con, paths, day, [day], None, cfg)
        life_events.restrict_to_customers(con, consent["customer_id"])
        features = life_events.compute_features(con)
    finally:
        con.close()
    return features, consent


def bench_life_events(sizes: list[int], base_customers: int = 3000, days: int = 300) -> dict[str, Any]:
    from pipelines import forecast, life_events

    home, env, setup = set_up_bank("segone-bench-life-events-", base_customers, days)
    paths = Paths(home)
    day = forecast.data_end(paths)
    os.environ["SEGONE_HOME"] = str(home)
    started = time.perf_counter()
    stage = life_events.classify_all(paths, day)
    stage_seconds = time.perf_counter() - started
    features, consent = base_features(paths, day)
    features.to_parquet(home / "le_features.parquet", index=False)
    consent.to_parquet(home / "le_consent.parquet", index=False)

    results = []
    for n in sizes:
        out = _run([sys.executable, "-m", "pipelines.evaluation.bench_life_events", str(home / "le_features.parquet"),
                    str(home), str(n)], env)
        row = json.loads(out.strip().splitlines()[-1])
        row["ms_per_customer"] = round(1000 * row["scoring_seconds"] / n, 4)
        results.append(row)
    scored = max(stage["n_scored_customers"], 1)
    return {
        "base_customers": base_customers, "days": days, "as_of": day.isoformat(), "setup": setup,
        "nightly_stage_on_base_bank": {"customers": base_customers, "consented": stage["n_consented"],
                                       "scored_customers": stage["n_scored_customers"], "rows": stage["rows"],
                                       "flagged": stage["flagged"], "seconds": round(stage_seconds, 1),
                                       "ms_per_customer": round(1000 * stage_seconds / scored, 3),
                                       "ms_per_bank_customer": round(1000 * stage_seconds / max(base_customers, 1),
                                                                     3)},
        "base_feature_rows": int(len(features)), "model_version": stage["model_versions"],
        "scoring": results, "evidence_note": EVIDENCE_NOTE, "home": str(home),
    }


def format_life_events_table(result: dict[str, Any]) -> str:
    stage = result["nightly_stage_on_base_bank"]
    lines = [f"base bank: {result['base_customers']} customers x {result['days']} days, D = {result['as_of']} "
             f"(simulate {result['setup']['simulate_seconds']} s, load-history {result['setup']['load_history_seconds']}"
             f" s, train {result['setup']['train_seconds']} s)",
             f"nightly life-event stage on the base bank (consent + features + scoring + evidence + writes, all "
             f"shards): {stage['seconds']} s for {stage['scored_customers']} scored customers "
             f"({stage['consented']} consented) = {stage['ms_per_customer']} ms per scored customer "
             f"({stage['ms_per_bank_customer']} ms per bank customer); {stage['rows']} rows, flagged "
             f"{sum(stage['flagged'].values())}",
             f"tiled scoring (promoted model {', '.join(result['model_version'])}): {result['evidence_note']}",
             "",
             f"{'customers':>10} {'gold rows':>10} {'flagged':>8} "
             f"{'scoring s':>10} {'scoring ms/cust':>16} {'peak MB':>8}"]
    for row in result["scoring"]:
        lines.append(f"{row['customers']:>10} {row['gold_rows']:>10} {row['flagged_rows']:>8} "
                     f"{row['scoring_seconds']:>10} "
                     f"{row['ms_per_customer']:>16} {row['peak_rss_mb']:>8}")
    lines.append("scoring = as the stage scores (score_rows: consent per event, calibrated probability + flag, "
                 "path-attribution top features, evidence JSON), without the evidence lookup")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_score_child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
