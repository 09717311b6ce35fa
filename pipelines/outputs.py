"""The one place a per-customer stage writes: its gold tables (one partition as_of=D/bucket=N each, with the
columns and types config/tables.yaml gives them, swapped in whole, even empty) and its run metrics.

Every per-customer stage has the same shape: read (the feature store, promoted models, persisted outputs of earlier
stages -> frames), a pure function (frames in, frames out), `write_stage` (this module).
"""
from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from pipelines import lake
from pipelines.config import Paths
from pipelines.runs import write_run_metrics
from pipelines.schemas import table_schema


def _for_lake(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            out[column] = out[column].astype(str).astype(object)
    return out


def write_gold(paths: Paths, table: str, frame: pd.DataFrame, day: date, bucket: int) -> int:
    """One gold partition (as_of=D/bucket=N) with the table's columns in config/tables.yaml's order and types.
    A column the frame lacks is written null; a column the schema does not name is an error (it would never be
    documented or published)."""
    schema = table_schema("gold", table)
    columns = schema.data_column_names
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        raise ValueError(f"gold {table}: columns {extra} are not in config/tables.yaml")
    types = {c.name: c.type for c in schema.columns}
    select = ", ".join(
        (f'cast("{name}" as {types[name]}) as "{name}"' if name in frame.columns
         else f'cast(null as {types[name]}) as "{name}"') for name in columns)
    final = lake.partition_path(paths, "gold", table, as_of=day.isoformat(), bucket=str(int(bucket)))
    con = lake.connect(shared=True)
    try:
        con.register("frame", _for_lake(frame))
        return lake.write_relation(con, f"select {select} from frame", final, paths)
    finally:
        con.close()


def write_stage(paths: Paths, day: date, bucket: int, stage: str, tables: dict[str, pd.DataFrame],
                metrics: dict[str, Any], extra_rows: dict[str, int] | None = None) -> dict[str, Any]:
    """Write a stage's gold partitions for one bucket, then its run metrics (runs/D/<stage>_bucket_N.json, with
    the rows written per table, and `extra_rows` of tables the stage wrote itself): the metrics exist only once
    every table is in place."""
    rows = {table: write_gold(paths, table, frame, day, bucket) for table, frame in tables.items()}
    rows.update(extra_rows or {})
    metrics = {**metrics, "bucket": int(bucket), "as_of": day.isoformat(), "rows": rows}
    write_run_metrics(paths, day.isoformat(), f"{stage}_bucket_{int(bucket)}", metrics)
    return metrics


def rows_written(metrics: dict[str, Any]) -> int:
    """All the rows a shard's metrics say it wrote (a count, or a count per table)."""
    rows = metrics.get("rows", 0)
    return int(sum(rows.values())) if isinstance(rows, dict) else int(rows)
