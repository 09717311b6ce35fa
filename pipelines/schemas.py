"""Table schemas: silver and gold from config/tables.yaml, bronze from the landing contract.

One place says what each table holds; the conform stage builds empty inputs from it, the publish step writes
its descriptions into warehouse.duckdb, and the silver expectation suites are checked against it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pipelines.config import load_config
from pipelines.contract import landing_contract

BRONZE_TYPES = {
    "id": "varchar", "text": "varchar", "enum": "varchar", "currency": "varchar", "country": "varchar",
    "mcc": "varchar", "int": "bigint", "decimal2": "decimal(18,2)", "decimal6": "decimal(18,6)", "date": "date",
    "timestamptz": "timestamp with time zone", "bool": "boolean",
}


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str
    description: str = ""


# The warehouse views show dates as DATE (docs/access.md, "Dates in the views"). A *load column* names the load that
# wrote or last changed a row: in the Parquet files a VARCHAR holding the night's date D as YYYY-MM-DD or the literal
# 'history' (the one-off history load). The views turn it into a DATE, the history load's rows carrying the last day
# the history covers (the `as_of` of the snapshots it wrote), and tables partitioned by load_date get `is_history`.
LOAD_COLUMNS = ("load_date", "updated_load_date")
HISTORY_FLAG = ColumnSchema(
    "is_history", "boolean",
    "True for the rows of the one-off history load (their load_date is the last day the history covers); false for "
    "the rows of a nightly load.")
LOAD_COLUMN_NOTE = {
    "load_date": " In the warehouse views a DATE: the night D, or for the history load the last day the history "
                 "covers (is_history tells them apart).",
    "updated_load_date": " In the warehouse views a DATE: the night D, or for the history load the last day the "
                         "history covers.",
}
SNAPSHOT_DATE = "Partition: the snapshot date this row belongs to (the business date D of the night that wrote it)."


@dataclass(frozen=True)
class TableSchema:
    layer: str
    name: str
    description: str
    partition: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[ColumnSchema, ...]
    checks: dict = field(default_factory=dict)
    # Access (docs/access.md): columns only warehouse_restricted.duckdb shows. With `restricted_rows` (a SQL
    # condition on the row's own columns) only those rows' values are withheld (null) in warehouse.duckdb;
    # without it the columns are left out of warehouse.duckdb altogether.
    restricted_columns: tuple[str, ...] = ()
    restricted_rows: str | None = None
    restricted_why: str = ""
    warehouse: bool = True
    # The feature store's wide tables: every column beyond the listed ones is a feature of this type, named by the
    # SQL that computes it (config/tables.yaml `feature_columns`).
    feature_type: str | None = None
    # `publish: live`: every publish takes the table's partitions as the live lake has them, not only those of the
    # loads being published (a table written outside the night, or rewritten by later nights; docs/architecture.md)
    publish_live: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def data_column_names(self) -> list[str]:
        """The columns inside the Parquet files (partition columns live in the folder names)."""
        return [c for c in self.column_names if c not in self.partition]

    @property
    def is_restricted(self) -> bool:
        return bool(self.restricted_columns)

    @property
    def general_column_names(self) -> list[str]:
        """The columns warehouse.duckdb shows (all of them unless some are restricted as a whole)."""
        if self.restricted_rows:
            return self.column_names
        return [c for c in self.column_names if c not in self.restricted_columns]

    def general_expression(self, column: str) -> str:
        """The SQL that gives `column` as warehouse.duckdb shows it: withheld (null) on the restricted rows."""
        if self.restricted_rows and column in self.restricted_columns:
            kind = next(c.type for c in self.columns if c.name == column)
            return f"case when ({self.restricted_rows}) then cast(null as {kind}) else {column} end as {column}"
        return column

    @property
    def view_columns(self) -> list[ColumnSchema]:
        """The columns of the table's warehouse view (every column; warehouse.duckdb then leaves out or withholds
        the restricted ones), in order, with the types and descriptions the view shows: load columns and `as_of` as
        DATE, the partition columns that are not data columns (a snapshot's `as_of`), and `is_history` for tables
        partitioned by load_date."""
        out = []
        for column in self.columns:
            if column.name in LOAD_COLUMNS:
                out.append(ColumnSchema(column.name, "date", column.description + LOAD_COLUMN_NOTE[column.name]))
            elif column.name == "as_of":
                out.append(ColumnSchema(column.name, "date", column.description))
            else:
                out.append(column)
        for partition in self.partition:
            if partition not in self.column_names:
                kind = "integer" if partition == "bucket" else "date"
                text = SNAPSHOT_DATE if partition == "as_of" else "Partition."
                out.append(ColumnSchema(partition, kind, text))
        if "load_date" in self.partition:
            out.append(HISTORY_FLAG)
        return out

    def empty_select(self) -> str:
        """A query with this table's columns and types and no rows (the input when a table does not exist yet)."""
        cols = ", ".join(f"cast(null as {c.type}) as {c.name}" for c in self.columns)
        return f"select {cols} where false"


@functools.lru_cache(maxsize=1)
def _tables() -> dict[tuple[str, str], TableSchema]:
    raw = load_config("tables")
    tables = {}
    for layer, entries in raw.items():
        for name, spec in entries.items():
            restricted = spec.get("restricted") or {}
            columns = [ColumnSchema(*col) for col in spec["columns"]]
            if spec.get("columns_of"):   # another table's columns first (its partition columns left out)
                other_layer, other_name = str(spec["columns_of"]).split(".", 1)
                other = tables.get((other_layer, other_name))
                if other is None:
                    raise ValueError(f"config/tables.yaml {layer}.{name}: columns_of {spec['columns_of']} must name "
                                     f"a table defined before it")
                columns = [c for c in other.columns if c.name not in other.partition] + columns
            schema = TableSchema(
                layer=layer, name=name, description=spec["description"],
                partition=tuple(spec.get("partition", ())), key=tuple(spec.get("key", ())),
                columns=tuple(columns), feature_type=spec.get("feature_columns"),
                checks=spec.get("checks", {}), warehouse=bool(spec.get("warehouse", True)),
                publish_live=_publish_mode(layer, name, spec.get("publish", "load")) == "live",
                restricted_columns=tuple(restricted.get("columns") or ()),
                restricted_rows=restricted.get("rows") or None,
                restricted_why=str(restricted.get("why") or ""),
            )
            unknown = [c for c in schema.restricted_columns if c not in schema.column_names]
            in_partition = [c for c in schema.restricted_columns if c in schema.partition]
            if unknown or in_partition or (schema.restricted_rows and not schema.restricted_columns):
                raise ValueError(f"config/tables.yaml {layer}.{name}: `restricted` must name data columns of the "
                                 f"table (unknown: {unknown}, partition columns: {in_partition})")
            tables[(layer, name)] = schema
    return tables


def _publish_mode(layer: str, name: str, mode: Any) -> str:
    if mode not in ("load", "live"):
        raise ValueError(f"config/tables.yaml {layer}.{name}: `publish` is load or live, not {mode!r}")
    return str(mode)


def table_schema(layer: str, name: str) -> TableSchema:
    return _tables()[(layer, name)]


def tables(layer: str) -> list[TableSchema]:
    return [t for (lay, _), t in _tables().items() if lay == layer]


def bronze_schema(kind: str) -> TableSchema:
    """Bronze columns of a landing kind: the typed contract columns plus lineage (and booking_date for postings)."""
    contract = landing_contract()[kind]
    columns = [ColumnSchema(c.name, BRONZE_TYPES[c.type]) for c in contract.columns]
    if kind == "transactions":
        columns.append(ColumnSchema("booking_date", "date", "Calendar date of booked_at as written."))
    columns += [ColumnSchema("source_file", "varchar"), ColumnSchema("source_line", "bigint")]
    return TableSchema("bronze", kind, f"Landing file kind {kind} as parsed.", ("load_date",), contract.key,
                       tuple(columns))
