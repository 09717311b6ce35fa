"""warehouse.duckdb: one documented view per silver and gold table, for analysts, named after the table (except
the tables config/tables.yaml marks `warehouse: false`: silver messages).

The file is built beside the old one and swapped in with a rename, so an analyst who has it open (read-only)
keeps reading the old file undisturbed while a run writes, and the next connection sees the new one. It holds
only views over the Parquet lake (absolute paths) and their comments: no data is copied.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipelines import lake
from pipelines.config import Paths
from pipelines.schemas import TableSchema, tables


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(paths: Paths, schema: TableSchema) -> str:
    """The view over a table's Parquet files, with its documented columns in order (empty if no files yet)."""
    scan = lake.scan_sql(paths, schema.layer, schema.name)
    partition_only = [p for p in schema.partition if p not in schema.column_names]
    columns = [*schema.column_names, *partition_only]
    if scan is None:
        empty = ", ".join([f"cast(null as {c.type}) as {c.name}" for c in schema.columns]
                          + [f"cast(null as varchar) as {p}" for p in partition_only])
        return f"select {empty} where false"
    return f"select {', '.join(columns)} from {scan}"


def build_warehouse(paths: Paths) -> dict[str, Any]:
    started = time.perf_counter()
    target = paths.warehouse
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    con = lake.connect(tmp)
    views = []
    for layer in ("silver", "gold"):
        for schema in tables(layer):
            if not schema.warehouse:  # e.g. silver messages: personal free text stays with the stage that reads it
                continue
            name = schema.name
            con.execute(f"create or replace view {name} as {view_sql(paths, schema)}")
            con.execute(f"comment on view {name} is {_quote(schema.description)}")
            for column in schema.columns:
                con.execute(f"comment on column {name}.{column.name} is {_quote(column.description)}")
            for partition in schema.partition:
                if partition not in schema.column_names:
                    con.execute(f"comment on column {name}.{partition} is "
                                f"{_quote('Partition: the snapshot date this row belongs to.')}")
            views.append(name)
    con.close()
    os.replace(tmp, target)
    return {"warehouse": str(target), "views": views, "seconds": round(time.perf_counter() - started, 3)}


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
