"""The analysts' warehouse: two DuckDB files of documented views, one per silver and gold table (except the tables
config/tables.yaml marks `warehouse: false`: silver messages, personal free text that stays with its stage).

- `warehouse.duckdb`, for every analyst: every table, without the restricted columns of `config/tables.yaml`
  (left out, or withheld on the restricted rows).
- `warehouse_restricted.duckdb`, for the few who need them (docs/access.md): every column.

What each file holds (docs/access.md, "The warehouse files"):
- a view per table, over every published night; `as_of`, load dates and every date column are DATE (a load column,
  a VARCHAR D or 'history' in the Parquet files, becomes the night's date, or the history's last day for the
  history load, with `is_history` beside `load_date`);
- `latest_<table>` for each gold table and silver snapshot: the same view restricted to the latest published night
  (one night for every such view, so they join; `published_loads` says which);
- small dimension tables (`pipelines.dimensions`): `action_catalogue`, `published_loads`.

The views read the Parquet files by paths *relative to the folder that holds the warehouse file* (the home), so a
home moved or copied elsewhere keeps working: DuckDB resolves a relative path against its working directory and
then the `file_search_path` setting, so an analyst opens the file from the home (`cd $SEGONE_HOME`) or sets
`file_search_path` to it (`connect` below does). Only views, comments and the small tables are in the files: no
lake data is copied.

The night's publish builds both over a published generation of the lake (`pipelines.publish`: immutable hard links,
so the views never see a night that is still running) and swaps them in with the export and the report. Each file
is built beside the old one and swapped in with a rename, so an analyst who has it open (read-only) keeps reading
the old file (and the old generation) undisturbed, and the next connection sees the new one.
"""
from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from pipelines import lake
from pipelines.config import Paths, min_published_group_customers
from pipelines.locks import owner_tag
from pipelines.schemas import LOAD_COLUMNS, TableSchema, tables

HISTORY = "history"
LATEST_PREFIX = "latest_"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def warehouse_tables() -> list[TableSchema]:
    """The tables that have a view: every silver and gold table but those marked `warehouse: false`."""
    return [t for layer in ("silver", "gold") for t in tables(layer) if t.warehouse]


def has_latest_view(schema: TableSchema) -> bool:
    """Gold tables and silver snapshots (partitioned by as_of) get a latest_<table> view."""
    key = schema.partition[0] if schema.partition else None
    return schema.warehouse and (key == "as_of" or (schema.layer == "gold" and key == "load_date"))


# --- where a table's files are ----------------------------------------------------------------------------------

class TableFiles:
    """One walk over a table's folder: its partition values (top-level `key=value` folders that hold Parquet
    files), the hive keys of its paths and the depth of its files."""

    def __init__(self, source: Paths, schema: TableSchema):
        self.root = source.table(schema.layer, schema.name)
        self.key = schema.partition[0] if schema.partition else None
        self.values: set[str] = set()
        self.depth: int | None = None
        self.hive_keys: list[str] = []
        self.files: list[str] = []
        self.newest: str | None = None
        self._absent: set[str] | None = None
        if not self.root.is_dir():
            return
        depths = set()
        newest, newest_time = None, -1.0
        for folder, _, files in os.walk(self.root, followlinks=True):  # published partitions are links
            parquet = [f for f in files if f.endswith(".parquet")]
            if not parquet:
                continue
            for name in parquet:
                path = os.path.join(folder, name)
                self.files.append(path)
                written = os.stat(path).st_mtime
                if written > newest_time:
                    newest, newest_time = path, written
            rel = Path(folder).relative_to(self.root)
            depths.add(len(rel.parts) + 1)
            if not self.hive_keys:
                self.hive_keys = [part.split("=", 1)[0] for part in rel.parts if "=" in part]
            if self.key and rel.parts and rel.parts[0].startswith(f"{self.key}="):
                self.values.add(rel.parts[0].split("=", 1)[1])
        if len(depths) > 1:
            raise RuntimeError(f"{self.root}: Parquet files at mixed depths {sorted(depths)}; the lake is corrupt")
        self.depth = depths.pop() if depths else None
        self.newest = newest

    def absent_columns(self, schema: TableSchema) -> set[str]:
        """The schema's data columns that no file of the table has: columns config/tables.yaml gained after the
        table's files were written (a lake upgraded to a newer version). The view shows them as null. The newest file
        is read first (one footer); only when it lacks a column are all the files' schemas read."""
        if self._absent is None:
            self._absent = set()
            if self.newest is not None:
                import pyarrow.parquet as pq

                wanted = set(schema.data_column_names) - set(self.hive_keys)
                missing = wanted - set(pq.read_schema(self.newest).names)
                if missing:
                    for path in self.files:
                        missing -= set(pq.read_schema(path).names)
                        if not missing:
                            break
                self._absent = missing
        return self._absent


def load_day(value: str, history_day: date | None) -> date | None:
    """The date of a partition value: the night's date, or the history's last day for 'history'."""
    return history_day if value == HISTORY else date.fromisoformat(value)


def _relative(path: Path, home: Path) -> str:
    """`path` relative to the home when it is inside it (the views then survive a move of the home). The last part
    is kept as it is: a published partition is a link, and the view reads it through its generation."""
    try:
        return str((path.parent.resolve() / path.name).relative_to(home.resolve()))
    except ValueError:
        return str(path)


def _scan(files: TableFiles, home: Path, only: list[str] | None = None) -> str | None:
    """read_parquet over the table's files (or only the partitions `only` of its first partition key), with paths
    relative to `home`; None when there is no file to read."""
    if files.depth is None:
        return None
    below = "/".join(["*"] * (files.depth - 1) + ["*.parquet"])
    if only is None:
        patterns = [f"{_relative(files.root, home)}/{below}"]
    else:
        present = [v for v in only if v in files.values]
        if not present:
            return None
        rest = "/".join(["*"] * (files.depth - 2) + ["*.parquet"])
        patterns = [f"{_relative(files.root / f'{files.key}={value}', home)}/{rest}" for value in sorted(present)]
    types = {"bucket": "integer", "as_of": "date"}
    hive = ", ".join(f"'{k}': {types[k]}" for k in files.hive_keys if k in types)
    listed = ", ".join(_quote(p) for p in patterns)
    return (f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true, "
            f"hive_types_autocast = false{', hive_types = {' + hive + '}' if hive else ''})")


def _date_literal(day: date | None) -> str:
    return f"date '{day.isoformat()}'" if day is not None else "cast(null as date)"


def view_columns(schema: TableSchema, restricted: bool) -> list:
    """The view's columns (schemas.TableSchema.view_columns) that this file shows."""
    shown = set(schema.column_names if restricted else schema.general_column_names)
    return [c for c in schema.view_columns if c.name in shown or c.name not in schema.column_names]


def view_sql(source: Paths, schema: TableSchema, restricted: bool = True, history_day: date | None = None,
             only: list[str] | None = None, home: Path | None = None, files: TableFiles | None = None) -> str:
    """The view over a table's Parquet files under `source` (which may be a published generation): its documented
    columns in order, dates as DATE (schemas.TableSchema.view_columns), paths relative to `home` (default: the
    source's home). `only`: just these partition values (the latest_* views). An empty view when there are no
    files. Without `restricted`, the columns warehouse.duckdb shows: restricted columns left out, or withheld (null)
    on the restricted rows."""
    files = files or TableFiles(source, schema)
    columns = view_columns(schema, restricted)
    scan = _scan(files, home or source.home, only)
    if scan is None:
        return "select " + ", ".join(f"cast(null as {c.type}) as {c.name}" for c in columns) + " where false"
    expressions = []
    absent = files.absent_columns(schema)
    for column in columns:
        name = column.name
        if name in absent:                   # added to the schema after these files were written
            expressions.append(f"cast(null as {column.type}) as {name}")
        elif name in LOAD_COLUMNS:
            expressions.append(f"case when {name} = '{HISTORY}' then {_date_literal(history_day)} "
                               f"else cast({name} as date) end as {name}")
        elif name == "is_history":
            expressions.append(f"(load_date = '{HISTORY}') as is_history")
        elif not restricted and name in schema.restricted_columns:
            expressions.append(schema.general_expression(name))
        else:
            expressions.append(name)
    return f"select {', '.join(expressions)} from {scan}"


# --- the files ----------------------------------------------------------------------------------------------------

def _view_comment(schema: TableSchema, restricted: bool) -> str:
    if not schema.is_restricted:
        return schema.description
    cols = ", ".join(schema.restricted_columns)
    if restricted:
        return f"{schema.description} Restricted columns ({cols}): {schema.restricted_why}"
    how = (f"withheld (null) where {schema.restricted_rows}" if schema.restricted_rows else "not in this file")
    return (f"{schema.description} Restricted: {cols} {how}; they are in warehouse_restricted.duckdb "
            f"(docs/access.md).")


def _column_comments(con: duckdb.DuckDBPyConnection, name: str, schema: TableSchema, restricted: bool) -> None:
    for column in view_columns(schema, restricted):
        text = column.description
        if column.name in schema.restricted_columns and not restricted:
            text += f" Withheld (null) where {schema.restricted_rows}: see warehouse_restricted.duckdb."
        con.execute(f"comment on column {name}.{column.name} is {_quote(text)}")


def published_days(source: Paths, history_day: date | None) -> list[date]:
    """Every load the source shows, as dates (a night's D; the history load as the last day it covers), from the
    partition folders of every warehouse table."""
    days: set[date] = set()
    for schema in warehouse_tables():
        key = schema.partition[0] if schema.partition else None
        root = source.table(schema.layer, schema.name)
        if key not in ("as_of", "load_date") or not root.is_dir():
            continue
        for folder in root.iterdir():
            if folder.is_dir() and folder.name.startswith(f"{key}="):
                day = load_day(folder.name.split("=", 1)[1], history_day)
                if day is not None:
                    days.add(day)
    return sorted(days)


def latest_values(schema: TableSchema, latest: date | None, history_day: date | None) -> list[str]:
    """The partition values of `schema` that hold the latest load."""
    if latest is None:
        return []
    values = [latest.isoformat()]
    if schema.partition[0] == "load_date" and history_day == latest:
        values.append(HISTORY)
    return values


def _write_dimension(con: duckdb.DuckDBPyConnection, schema: TableSchema, frame) -> None:
    """A small table of config/tables.yaml `dimensions:` from a frame with exactly its columns, documented."""
    if list(frame.columns) != schema.column_names:
        raise RuntimeError(f"dimension {schema.name}: the frame's columns {list(frame.columns)} are not "
                           f"config/tables.yaml's {schema.column_names}")
    frame = frame.copy()
    selects = []
    for column in schema.columns:
        if column.type.lower().startswith("map("):
            frame[f"{column.name}__keys"] = [list(v) for v in frame[column.name]]
            frame[f"{column.name}__values"] = [list(v.values()) for v in frame[column.name]]
            selects.append(f"cast(map({column.name}__keys, {column.name}__values) as {column.type}) as {column.name}")
        else:
            selects.append(f"cast({column.name} as {column.type}) as {column.name}")
    frame = frame.drop(columns=[c.name for c in schema.columns if c.type.lower().startswith("map(")])
    con.register("dimension_frame", frame)
    try:
        ddl = ", ".join(f"{c.name} {c.type}" for c in schema.columns)
        con.execute(f"create or replace table {schema.name} ({ddl})")
        con.execute(f"insert into {schema.name} select {', '.join(selects)} from dimension_frame")
    finally:
        con.unregister("dimension_frame")
    con.execute(f"comment on table {schema.name} is {_quote(schema.description)}")
    for column in schema.columns:
        con.execute(f"comment on column {schema.name}.{column.name} is {_quote(column.description)}")


def _table_files(source: Paths, schema: TableSchema, cache: dict[Path, TableFiles] | None) -> TableFiles:
    root = source.table(schema.layer, schema.name)
    if cache is None:
        return TableFiles(source, schema)
    if root not in cache:
        cache[root] = TableFiles(source, schema)
    return cache[root]


def write_warehouse(source: Paths, target: Path, restricted: bool, history_day: date | None = None,
                    days: list[date] | None = None, cache: dict[Path, TableFiles] | None = None) -> list[str]:
    """Write one warehouse file at `target` (which must not exist): a documented view per silver and gold table
    over the Parquet files under `source` (paths relative to `target`'s folder), the latest_* views and the
    dimension tables. Returns the names of the views and tables."""
    from pipelines.dimensions import action_catalogue, published_loads
    from pipelines.schemas import table_schema

    home = target.parent
    days = published_days(source, history_day) if days is None else days
    latest = max(days) if days else None
    con = lake.connect(target)
    con.execute(f"set file_search_path = {_quote(str(home))}")  # the relative paths start there, whatever the cwd
    made = []
    try:
        con.execute("begin transaction")  # one commit for every view and comment (one per statement is slow)
        for schema in warehouse_tables():
            table_files = _table_files(source, schema, cache)
            name = schema.name
            con.execute(f"create or replace view {name} as "
                        f"{view_sql(source, schema, restricted, history_day, home=home, files=table_files)}")
            con.execute(f"comment on view {name} is {_quote(_view_comment(schema, restricted))}")
            _column_comments(con, name, schema, restricted)
            made.append(name)
            if has_latest_view(schema):
                latest_name = LATEST_PREFIX + name
                sql = view_sql(source, schema, restricted, history_day,
                               only=latest_values(schema, latest, history_day), home=home, files=table_files)
                con.execute(f"create or replace view {latest_name} as {sql}")
                night = latest.isoformat() if latest else "none yet"
                key = schema.partition[0]
                comment = (f"{name} of the latest published night only ({key} = {night}; published_loads lists "
                           f"every load). " + _view_comment(schema, restricted))
                con.execute(f"comment on view {latest_name} is {_quote(comment)}")
                _column_comments(con, latest_name, schema, restricted)
                made.append(latest_name)
        _write_dimension(con, table_schema("dimensions", "action_catalogue"), action_catalogue())
        _write_dimension(con, table_schema("dimensions", "published_loads"), published_loads(days, history_day, latest))
        made += ["action_catalogue", "published_loads"]
        con.execute("commit")
    finally:
        con.close()
    return made


def history_last_day(paths: Paths) -> date | None:
    """The last day the history load covers (the as_of of its snapshots): from published/state.json, else the
    history's conform metrics (published copy first); None when there is no history load."""
    from pipelines.publish import published_runs, read_state

    state = read_state(paths) or {}
    if state.get("history_as_of"):
        return date.fromisoformat(state["history_as_of"])
    for folder in (published_runs(paths) / HISTORY, paths.runs / HISTORY):
        metrics = folder / "conform.json"
        if metrics.is_file():
            as_of = json.loads(metrics.read_text(encoding="utf-8")).get("as_of")
            if as_of:
                return date.fromisoformat(str(as_of))
    return None


def stage_warehouses(paths: Paths, general: Paths, full: Paths, history_day: date | None = None
                     ) -> list[tuple[Path, Path]]:
    """Build both warehouse files beside their final paths (`.<name>.<pid>@<host>.tmp`): warehouse.duckdb over
    `general`, warehouse_restricted.duckdb over `full`. Returns (staged, final) pairs for the caller to swap in.
    `history_day`: the history's last day (default: `history_last_day`)."""
    if history_day is None:
        history_day = history_last_day(paths)
    days = published_days(general, history_day)
    cache: dict[Path, TableFiles] = {}  # a table whose files both sources share is walked once
    staged = []
    for final, source, restricted in ((paths.warehouse, general, False),
                                      (paths.warehouse_restricted, full, True)):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{owner_tag()}.tmp")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        write_warehouse(source, tmp, restricted, history_day, days, cache)
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
    views = [t.name for t in warehouse_tables()]
    return {"warehouse": str(paths.warehouse), "warehouse_restricted": str(paths.warehouse_restricted),
            "views": views, "seconds": round(time.perf_counter() - started, 3)}


def connect(database: str | Path, read_only: bool = True, **config: Any) -> duckdb.DuckDBPyConnection:
    """Open a warehouse file from any working directory: `file_search_path` is set to the folder that holds it,
    where the views' relative paths start (what an analyst does with `SET file_search_path = '<home>'`)."""
    database = Path(database).resolve()
    return duckdb.connect(str(database), read_only=read_only,
                          config={"file_search_path": str(database.parent), **config})


def example_query(k: int | None = None) -> str:
    """Customers with an overdrawn current account at the latest end-of-day balance, by region: the five largest
    regions of at least k overdrawn customers (config min_published_group_customers, the nightly report's minimum):
    a region under it is not named, as a count of a few people singles them out."""
    k = min_published_group_customers() if k is None else int(k)
    return ("select customers.region, count(distinct balances.customer_id) as n_overdrawn "
            "from balances "
            "join latest_accounts as accounts on accounts.account_id = balances.account_id "
            "and accounts.product = 'current' "
            "join latest_customers as customers on customers.customer_id = balances.customer_id "
            "where balances.as_of = (select max(as_of) from balances) and balances.balance < 0 "
            f"group by customers.region having count(distinct balances.customer_id) >= {k} "
            "order by n_overdrawn desc limit 5")
