"""Table schemas: silver and gold from config/tables.yaml, bronze from the landing contract.

One place says what each table holds; the conform stage builds empty inputs from it, the publish step writes
its descriptions into warehouse.duckdb, and the silver expectation suites are checked against it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class TableSchema:
    layer: str
    name: str
    description: str
    partition: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[ColumnSchema, ...]
    checks: dict = field(default_factory=dict)
    warehouse: bool = True

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def data_column_names(self) -> list[str]:
        """The columns inside the Parquet files (partition columns live in the folder names)."""
        return [c for c in self.column_names if c not in self.partition]

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
            tables[(layer, name)] = TableSchema(
                layer=layer, name=name, description=spec["description"],
                partition=tuple(spec.get("partition", ())), key=tuple(spec.get("key", ())),
                columns=tuple(ColumnSchema(*col) for col in spec["columns"]),
                checks=spec.get("checks", {}), warehouse=bool(spec.get("warehouse", True)),
            )
    return tables


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
