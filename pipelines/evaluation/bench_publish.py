"""`segone bench publish`: what publishing a night costs as the lake grows, without simulating a bank.

Publish does two kinds of work whose cost grows with the lake (pipelines/publish.py):
- hard links: one per Parquet file of every published night (the previous generation's files, relinked into the
  new one), which grows with the number of nights kept, not with customers (a night writes one file per table, or
  per table and bucket);
- rewrites: the night's partitions of the tables with restricted columns are rewritten without them, which grows
  with customers (decision_log, about 21 rows a customer a night, is most of it).
It then builds both warehouse files, whose views read every file's footer when they are created.

The bench lays out `nights` published nights with the lake's real layout (every silver and gold table of
config/tables.yaml, one file per bucket where the table is bucketed; each file a tiny Parquet file of the table's
columns), plus one new night whose restricted tables hold `customers` customers' rows, and times the generation and
the warehouse files over it. The CRM export and the report are measured by the stages' own benchmarks.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines import lake
from pipelines.config import Paths, segone_home
from pipelines.schemas import TableSchema, tables

# Rows per customer per night of the restricted tables, as measured on the 2,000-customer bank (b2k240, night
# 2026-11-20): decision_log 42,664, advisor_queue 104, standing_orders 198, direct_debits 396, customers 2,000.
ROWS_PER_CUSTOMER = {"decision_log": 21.3, "customers": 1.0, "advisor_queue": 0.052, "standing_orders": 0.1,
                     "direct_debits": 0.2, "quarantine": 0.0}


def _value_sql(schema: TableSchema, column: str, n: int) -> str:
    kind = next(c.type for c in schema.columns if c.name == column)
    if column == "customer_id":
        return "'C' || lpad(cast(i as varchar), 8, '0')"
    if column == "stage":
        return "case when i % 7 = 0 then 'suitability' else 'eligibility' end"
    if kind.startswith("varchar"):
        return f"'{column} ' || cast(i % 97 as varchar)"
    if kind in ("integer", "bigint"):
        return "cast(i % 16 as integer)" if column == "bucket" else "i"
    if kind == "boolean":
        return "i % 2 = 0"
    if kind == "date":
        return "date '2026-11-20'"
    if kind.startswith("timestamp"):
        return "timestamptz '2026-11-20 10:00:00+00'"
    return f"cast(i % 1000 as {kind})"


def _write(con, schema: TableSchema, rows: int, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(f"{_value_sql(schema, c, rows)} as {c}" for c in schema.data_column_names
                        if c != "bucket" or "bucket" not in schema.partition)
    con.execute(f"copy (select {columns} from range({rows}) t(i)) to '{target}' ({lake.parquet_options()})")


def bench_publish(customers: int, nights: int) -> dict[str, Any]:
    from pipelines import publish

    everything = [t for t in (*tables("silver"), *tables("gold")) if t.warehouse]
    restricted = {f"{s.layer}.{s.name}": {"columns": list(s.restricted_columns), "rows": s.restricted_rows}
                  for s in everything if s.is_restricted}
    work = segone_home() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-publish-", dir=work) as tmp:
        paths = Paths(Path(tmp) / "home")
        con = lake.connect(threads=2)
        old = paths.published / "g000001-bench"
        first = date(2026, 11, 20) - timedelta(days=nights)
        started = time.perf_counter()
        n_files = 0
        for schema in everything:
            key = schema.partition[0]
            bucketed = "bucket" in schema.partition
            seed = Path(tmp) / "seed" / schema.layer / f"{schema.name}.parquet"
            _write(con, schema, 3, seed)
            trees = ["general"] + (["restricted"] if schema.is_restricted else [])
            for k in range(nights):
                value = (first + timedelta(days=k)).isoformat()
                for tree in trees:
                    folder = old / tree / schema.layer / schema.name / f"{key}={value}"
                    for bucket in range(lake.n_buckets()) if bucketed else [None]:
                        target = folder / f"bucket={bucket}" if bucket is not None else folder
                        target.mkdir(parents=True, exist_ok=True)
                        os.link(seed, target / "part-0.parquet")
                        n_files += 1
            # the new night in the live lake: real row counts for the restricted tables, tiny files otherwise
            night = lake.partition_path(paths, schema.layer, schema.name, **{key: "2026-11-20"})
            rows = int(customers * ROWS_PER_CUSTOMER.get(schema.name, 0)) if schema.is_restricted else 3
            for bucket in range(lake.n_buckets()) if bucketed else [None]:
                target = night / f"bucket={bucket}" if bucket is not None else night
                _write(con, schema, max(1, rows // (lake.n_buckets() if bucketed else 1)), target / "part-0.parquet")
        con.close()
        setup = time.perf_counter() - started
        state = {"seq": 1, "generation": old.name, "previous": None, "day": first.isoformat(),
                 "loads": [(first + timedelta(days=k)).isoformat() for k in range(nights)],
                 "restricted": restricted, "pending": []}
        paths.published.mkdir(parents=True, exist_ok=True)
        (paths.published / "state.json").write_text(json.dumps(state))
        clock = time.perf_counter()
        name, counts = publish.build_generation(paths, {"2026-11-20"}, date(2026, 11, 20), state)
        generation = time.perf_counter() - clock
        from pipelines.warehouse import stage_warehouses

        restricted_tables = frozenset(tuple(k.split(".", 1)) for k in restricted)
        clock = time.perf_counter()
        staged = stage_warehouses(paths, publish.generation_paths(paths, name, False, restricted_tables),
                                  publish.generation_paths(paths, name, True, restricted_tables))
        warehouses = time.perf_counter() - clock
        for tmp_file, _ in staged:
            os.unlink(tmp_file)
        rewritten_rows = sum(int(customers * ROWS_PER_CUSTOMER.get(s.name, 0)) for s in everything if s.is_restricted)
        return {"customers": customers, "nights_published_before": nights, "files_before": n_files,
                "files_linked": counts["linked"], "files_rewritten": counts["rewritten"],
                "rows_rewritten": rewritten_rows, "generation_seconds": round(generation, 2),
                "warehouses_seconds": round(warehouses, 2), "setup_seconds": round(setup, 1)}


def format_publish_table(results: list[dict[str, Any]]) -> str:
    lines = ["| customers | nights before | files linked | files rewritten | rows rewritten | generation s | "
             "warehouse files s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['customers']:,} | {r['nights_published_before']} | {r['files_linked']:,} | "
                     f"{r['files_rewritten']:,} | {r['rows_rewritten']:,} | {r['generation_seconds']} | "
                     f"{r['warehouses_seconds']} |")
    return "\n".join(lines)
