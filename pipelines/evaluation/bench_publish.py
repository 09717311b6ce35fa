"""`segone bench publish`: what publishing a night costs as the lake grows, without simulating a bank.

Publish does three kinds of work whose cost grows with the lake (pipelines/publish.py):
- links: one per table and partition of every published night (the previous generation's links, repeated in the
  new one: a generation is links to published partition folders), which grows with the number of nights kept,
  not with customers;
- hard links: one per Parquet file of the night being published, into its new published partition folders;
- rewrites: the night's partitions of the tables with restricted columns are rewritten without them, which grows
  with customers (decision_log, about 21 rows a customer a night, is most of it).
It then builds both warehouse files, whose views read every file's footer when they are created.

`bench_publish` lays out `nights` published nights with the lake's real layout (every silver and gold table of
config/tables.yaml, one file per bucket where the table is bucketed; each file a tiny Parquet file of the table's
columns), plus one new night whose restricted tables hold `customers` customers' rows, and times the generation and
the warehouse files over it. The CRM export and the report are measured by the stages' own benchmarks.
`bench_publish_nights` times one night's publish after N nights as the night pays it (the generation, the drop of
an old one, the removal of what was dropped), in CPU seconds and folders made and removed.
"""
from __future__ import annotations

import json
import os
import resource
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
    if kind.endswith("]") or kind.lower().startswith(("map(", "struct(")):
        return f"cast(null as {kind})"
    return f"cast(i % 1000 as {kind})"


def _write(con, schema: TableSchema, rows: int, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(f"{_value_sql(schema, c, rows)} as {c}" for c in schema.data_column_names
                        if c != "bucket" or "bucket" not in schema.partition)
    con.execute(f"copy (select {columns} from range({rows}) t(i)) to '{target}' ({lake.parquet_options()})")


def _leaves(schema: TableSchema) -> list[str]:
    """Where a partition value's files are, below its folder: `bucket=N` for every bucket, `<key>=bench` for another
    second partition key (model_registry's `family`), the folder itself otherwise."""
    if len(schema.partition) < 2:
        return [""]
    second = schema.partition[1]
    return [f"bucket={b}" for b in range(lake.n_buckets())] if second == "bucket" else [f"{second}=bench"]


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
            leaves = _leaves(schema)
            seed = Path(tmp) / "seed" / schema.layer / f"{schema.name}.parquet"
            _write(con, schema, 3, seed)
            trees = ["general"] + (["restricted"] if schema.is_restricted else [])
            for k in range(nights):
                value = (first + timedelta(days=k)).isoformat()
                for tree in trees:
                    folder = old / tree / schema.layer / schema.name / f"{key}={value}"
                    for leaf in leaves:
                        target = folder / leaf
                        target.mkdir(parents=True, exist_ok=True)
                        os.link(seed, target / "part-0.parquet")
                        n_files += 1
            # the new night in the live lake: real row counts for the restricted tables, tiny files otherwise
            night = lake.partition_path(paths, schema.layer, schema.name, **{key: "2026-11-20"})
            rows = int(customers * ROWS_PER_CUSTOMER.get(schema.name, 0)) if schema.is_restricted else 3
            for leaf in leaves:
                _write(con, schema, max(1, rows // len(leaves)), night / leaf / "part-0.parquet")
        con.close()
        setup = time.perf_counter() - started
        state = {"seq": 1, "generation": old.name, "previous": None, "day": first.isoformat(),
                 "loads": [(first + timedelta(days=k)).isoformat() for k in range(nights)],
                 "restricted": restricted, "pending": []}
        paths.published.mkdir(parents=True, exist_ok=True)
        (paths.published / "state.json").write_text(json.dumps(state))
        # the laid-out generation has the layout before published/parts/: carry it over first, as a home's first
        # publish does once (not timed)
        carried, _ = publish.build_generation(paths, set(), first, state)
        state = {**state, "seq": 2, "generation": carried, "previous": old.name}
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


def _folders(root: Path) -> int:
    """Real folders under `root` (links to folders not counted, not followed)."""
    n = 0
    for folder, names, _ in os.walk(root):
        n += sum(1 for name in names if not os.path.islink(os.path.join(folder, name)))
    return n


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def bench_publish_nights(nights: int, publishes: int = 3) -> dict[str, Any]:
    """What publishing one more night costs after `nights` published nights, as the nightly run pays it: the
    generation, the drop of the generation before the previous one (on the night's path) and the removal of what
    was dropped (a thread, off the night's path), each in CPU seconds, with the folders each creates or removes.

    The `nights` nights are laid out as one generation of the layout publish had before 2026-12-07 (a tree of
    folders and hard links); then `publishes` nights (tiny files, every table of config/tables.yaml) are published one
    after the other with publish's own functions. The first publish carries the laid-out nights into whatever the
    current layout is; the last one shows the steady cost (it drops a generation the current code made)."""
    from pipelines import publish

    everything = [t for t in (*tables("silver"), *tables("gold")) if t.warehouse]
    restricted = {f"{s.layer}.{s.name}": {"columns": list(s.restricted_columns), "rows": s.restricted_rows}
                  for s in everything if s.is_restricted}
    work = segone_home() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-publish-nights-", dir=work) as tmp:
        paths = Paths(Path(tmp) / "home")
        con = lake.connect(threads=2)
        old = paths.published / "g000001-bench"
        first = date(2026, 11, 20) - timedelta(days=nights)
        new_nights = [date(2026, 11, 20) + timedelta(days=j) for j in range(publishes)]
        for schema in everything:
            key = schema.partition[0]
            seed = Path(tmp) / "seed" / schema.layer / f"{schema.name}.parquet"
            _write(con, schema, 3, seed)
            laid = [(old / tree / schema.layer / schema.name, first + timedelta(days=k))
                    for k in range(nights) for tree in ["general"] + (["restricted"] if schema.is_restricted else [])]
            laid += [(paths.table(schema.layer, schema.name), day) for day in new_nights]
            for root, day in laid:
                for leaf in _leaves(schema):
                    target = root / f"{key}={day.isoformat()}" / leaf
                    target.mkdir(parents=True, exist_ok=True)
                    os.link(seed, target / "part-0.parquet")
        con.close()
        state = {"seq": 1, "generation": old.name, "previous": None, "day": first.isoformat(),
                 "loads": [(first + timedelta(days=k)).isoformat() for k in range(nights)],
                 "restricted": restricted, "pending": []}
        paths.published.mkdir(parents=True, exist_ok=True)
        publish._write_state(paths, state)
        real_empty_trash = publish.empty_trash
        for day in new_nights:
            folders_before = _folders(paths.published)
            cpu, clock = _cpu(), time.perf_counter()
            name, counts = publish.build_generation(paths, {day.isoformat()}, day, state)
            generation_cpu, generation_wall = _cpu() - cpu, time.perf_counter() - clock
            created = _folders(paths.published) - folders_before
            new_state = {**state, "seq": state["seq"] + 1, "generation": name, "previous": state["generation"],
                         "day": day.isoformat(), "loads": sorted({*state["loads"], day.isoformat()})}
            publish._write_state(paths, new_state)
            publish.empty_trash = lambda *args, **kwargs: None  # measured below, on its own
            try:
                cpu, clock = _cpu(), time.perf_counter()
                dropped = publish.drop_old_generations(paths, new_state)
                drop_cpu, drop_wall = _cpu() - cpu, time.perf_counter() - clock
            finally:
                publish.empty_trash = real_empty_trash
            trash = publish.trash_dir(paths)
            removed = _folders(trash) if trash.is_dir() else 0
            cpu, clock = _cpu(), time.perf_counter()
            publish.empty_trash(paths, wait=True)
            removal_cpu, removal_wall = _cpu() - cpu, time.perf_counter() - clock
            rows.append({"night": day.isoformat(), "generation_cpu_s": round(generation_cpu, 3),
                         "generation_wall_s": round(generation_wall, 3), "drop_cpu_s": round(drop_cpu, 3),
                         "drop_wall_s": round(drop_wall, 3), "folders_created": created,
                         "folders_in_generation": _folders(paths.published / name), "dropped": dropped,
                         "folders_removed": removed, "removal_cpu_s": round(removal_cpu, 3),
                         "removal_wall_s": round(removal_wall, 3), "files_linked": counts["linked"],
                         "files_rewritten": counts["rewritten"]})
            state = new_state
    return {"nights_published_before": nights, "buckets": lake.n_buckets(), "publishes": rows}


def format_publish_nights_table(results: list[dict[str, Any]]) -> str:
    lines = ["| nights before | publish | generation CPU s | drop CPU s | folders created | files linked | "
             "folders removed | removal CPU s | removal wall s |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for i, p in enumerate(r["publishes"], 1):
            lines.append(f"| {r['nights_published_before']} | {i} | {p['generation_cpu_s']} | {p['drop_cpu_s']} | "
                         f"{p['folders_created']:,} | {p['files_linked']:,} | {p['folders_removed']:,} | "
                         f"{p['removal_cpu_s']} | {p['removal_wall_s']} |")
    return "\n".join(lines)
