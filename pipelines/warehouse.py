"""The analysts' warehouse: two DuckDB files of documented views, one per silver and gold table (except the tables
config/tables.yaml marks `warehouse: false`: silver messages, personal free text that stays with its stage).

- `warehouse.duckdb`, for every analyst: every table, without the restricted columns of `config/tables.yaml`
  (left out, or withheld on the restricted rows).
- `warehouse_restricted.duckdb`, for the few who need them (docs/access.md): every column.

The night's publish builds both over a published generation of the lake (`pipelines.publish`: immutable hard
links, so the views never see a night that is still running) and swaps them in with the export and the report.
Each file is built beside the old one and swapped in with a rename, so an analyst who has it open (read-only)
keeps reading the old file (and the old generation) undisturbed, and the next connection sees the new one. The
files hold only views over Parquet (absolute paths) and their comments: no data is copied.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipelines import lake
from pipelines.config import Paths
from pipelines.locks import owner_tag
from pipelines.schemas import TableSchema, tables

PARTITION_COMMENT = "Partition: the snapshot date this row belongs to."


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(paths: Paths, schema: TableSchema, restricted: bool = True) -> str:
    """The view over a table's Parquet files (under `paths`, which may be a published generation), with its
    documented columns in order (an empty view if no files yet). Without `restricted`, the columns
    warehouse.duckdb shows: restricted columns left out, or withheld (null) on the restricted rows."""
    scan = lake.scan_sql(paths, schema.layer, schema.name)
    partition_only = [p for p in schema.partition if p not in schema.column_names]
    names = schema.column_names if restricted else schema.general_column_names
    kinds = {c.name: c.type for c in schema.columns}
    if scan is None:
        empty = ", ".join([f"cast(null as {kinds[c]}) as {c}" for c in names]
                          + [f"cast(null as varchar) as {p}" for p in partition_only])
        return f"select {empty} where false"
    columns = names if restricted else [schema.general_expression(c) for c in names]
    return f"select {', '.join([*columns, *partition_only])} from {scan}"


def _view_comment(schema: TableSchema, restricted: bool) -> str:
    if not schema.is_restricted:
        return schema.description
    cols = ", ".join(schema.restricted_columns)
    if restricted:
        return f"{schema.description} Restricted columns ({cols}): {schema.restricted_why}"
    how = (f"withheld (null) where {schema.restricted_rows}" if schema.restricted_rows else "not in this file")
    return (f"{schema.description} Restricted: {cols} {how}; they are in warehouse_restricted.duckdb "
            f"(docs/access.md).")


def write_warehouse(source: Paths, target: Path, restricted: bool) -> list[str]:
    """Write one warehouse file at `target` (which must not exist): a documented view per silver and gold table
    over the Parquet files under `source`."""
    con = lake.connect(target)
    views = []
    try:
        con.execute("begin transaction")  # one commit for every view and comment (one per statement is slow)
        for layer in ("silver", "gold"):
            for schema in tables(layer):
                if not schema.warehouse:  # e.g. silver messages: personal free text stays with the stage that reads it
                    continue
                name = schema.name
                con.execute(f"create or replace view {name} as {view_sql(source, schema, restricted)}")
                con.execute(f"comment on view {name} is {_quote(_view_comment(schema, restricted))}")
                shown = schema.column_names if restricted else schema.general_column_names
                for column in schema.columns:
                    if column.name not in shown:
                        continue
                    text = column.description
                    if column.name in schema.restricted_columns and not restricted:
                        text += f" Withheld (null) where {schema.restricted_rows}: see warehouse_restricted.duckdb."
                    con.execute(f"comment on column {name}.{column.name} is {_quote(text)}")
                for partition in schema.partition:
                    if partition not in schema.column_names:
                        con.execute(f"comment on column {name}.{partition} is {_quote(PARTITION_COMMENT)}")
                views.append(name)
        con.execute("commit")
    finally:
        con.close()
    return views


def stage_warehouses(paths: Paths, general: Paths, full: Paths) -> list[tuple[Path, Path]]:
    """Build both warehouse files beside their final paths (`.<name>.<pid>@<host>.tmp`): warehouse.duckdb over
    `general`, warehouse_restricted.duckdb over `full`. Returns (staged, final) pairs for the caller to swap in."""
    staged = []
    for final, source, restricted in ((paths.warehouse, general, False),
                                      (paths.warehouse_restricted, full, True)):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{owner_tag()}.tmp")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        write_warehouse(source, tmp, restricted)
        os.chmod(tmp, 0o600 if restricted else 0o644)
        staged.append((tmp, final))
    return staged


def build_warehouse(paths: Paths, source: Paths | None = None) -> dict[str, Any]:
    """Build both warehouse files over `source` (default: the live lake under `paths`) and swap them in now.

    For tools and tests: the night's publish stages the files over the published generation and swaps them in
    with the export and the report instead (`pipelines.publish.publish_load`)."""
    started = time.perf_counter()
    source = source or paths
    staged = stage_warehouses(paths, source, source)
    for tmp, final in staged:
        os.replace(tmp, final)
    views = [t.name for layer in ("silver", "gold") for t in tables(layer) if t.warehouse]
    return {"warehouse": str(paths.warehouse), "warehouse_restricted": str(paths.warehouse_restricted),
            "views": views, "seconds": round(time.perf_counter() - started, 3)}


def example_query() -> str:
    """Customers with an overdrawn current account at the latest end-of-day balance, by region."""
    return ("select customers.region, count(distinct balances.customer_id) as n_overdrawn "
            "from balances "
            "join accounts on accounts.account_id = balances.account_id "
            "and accounts.as_of = (select max(as_of) from accounts) and accounts.product = 'current' "
            "join customers on customers.customer_id = balances.customer_id "
            "and customers.as_of = (select max(as_of) from customers) "
            "where balances.as_of = (select max(as_of) from balances) and balances.balance < 0 "
            "group by customers.region order by n_overdrawn desc limit 5")
