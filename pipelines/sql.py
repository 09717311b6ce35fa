"""The one loader of sql/*.sql, and the one way values (D above all) enter SQL: DuckDB variables.

A SQL file is one statement named after what it builds, reading fixed view names and `getvariable('name')`; the
code sets the views and the variables, never formats a value into the text.
"""
from __future__ import annotations

import functools
from datetime import date
from typing import Any

import duckdb

from pipelines.config import REPO_ROOT

SQL_DIR = REPO_ROOT / "sql"


@functools.lru_cache(maxsize=None)
def text(name: str) -> str:
    """The statement of sql/<name>.sql (without a trailing semicolon)."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8").strip().rstrip(";")


def set_variables(con: duckdb.DuckDBPyConnection, **values: Any) -> None:
    """`set variable name = value` for each value, passed as a parameter (dates stay DATE, lists LIST)."""
    for name, value in values.items():
        if not name.isidentifier():
            raise ValueError(f"not a variable name: {name!r}")
        if isinstance(value, (list, tuple)) and not value:
            con.execute(f"set variable {name} = cast([] as varchar[])")
        elif isinstance(value, date):
            con.execute(f"set variable {name} = cast($value as date)", {"value": value})
        else:
            con.execute(f"set variable {name} = $value", {"value": value})


def create_table(con: duckdb.DuckDBPyConnection, table: str, name: str) -> None:
    """Materialise sql/<name>.sql as the temp table `table`."""
    con.execute(f"create or replace temp table {table} as {text(name)}")


def frame(con: duckdb.DuckDBPyConnection, name: str, order_by: str | None = None):
    """Run sql/<name>.sql and return its rows as a DataFrame (ordered when `order_by` names columns)."""
    query = text(name)
    if order_by:
        query = f"select * from ({query}) order by {order_by}"
    return con.execute(query).df()
