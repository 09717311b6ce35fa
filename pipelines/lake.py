"""The Parquet lake: customer buckets, partition paths, atomic partition swaps, DuckDB connections.

Layout: lake/<layer>/<table>/<key>=<value>/[bucket=NN/]part-*.parquet (hive style). A write goes to
lake/_staging/<uuid>/ and is swapped in whole, so a reader sees the old partition or the new one, never half.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipelines.config import Paths, settings


def n_buckets() -> int:
    return int(settings()["lake"]["n_buckets"])


def bucket_sql(column: str, buckets: int | None = None) -> str:
    """SQL for the stable customer bucket: the first 8 hex digits of md5(customer_id), modulo n_buckets."""
    buckets = buckets or n_buckets()
    return f"cast((('0x' || md5(cast({column} as varchar))[1:8])::ubigint % {buckets}) as integer)"


def bucket_of(customer_ids: Iterable[str], buckets: int | None = None) -> np.ndarray:
    """The same bucket as bucket_sql, computed in Python (for small inputs and tests)."""
    buckets = buckets or n_buckets()
    return np.array(
        [int(hashlib.md5(str(c).encode("utf-8")).hexdigest()[:8], 16) % buckets for c in customer_ids],
        dtype=np.int32,
    )


# The in-memory databases this process shares out (`connect(shared=True)`), by process and configuration.
_SHARED: dict[tuple, duckdb.DuckDBPyConnection] = {}


def _forget_parent_databases() -> None:
    """In a forked child: the parent's shared databases are not this process's (their threads did not come along),
    and DuckDB's destructor run on such a copy crashes the process (a segmentation fault, seen when a forked pool
    worker opened its own and the oldest was dropped). They are set aside for good, never destroyed here, and the
    child starts its own."""
    for database in _SHARED.values():
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(database))  # one reference never given back: never destroyed
    _SHARED.clear()


os.register_at_fork(after_in_child=_forget_parent_databases)


def connect(database: str | Path = ":memory:", read_only: bool = False, threads: int | None = None,
            memory_limit: str | None = None, shared: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never tries to download an extension (parquet, json and icu are built in).

    Memory is capped (`lake.duckdb_memory_limit`; DuckDB's own default is 80% of the machine) and what does not
    fit spills to $SEGONE_HOME/tmp/duckdb, so that a stage at a million customers shares the machine.

    `shared` (in-memory only): a new connection (`cursor()`) to one in-memory database this process keeps per
    configuration, instead of a new database. Starting a database costs about 20 ms of CPU, a connection to a
    running one a fraction of a millisecond, and a night's shards open hundreds (the per-shard stages' reads and
    writes ask for it). What a connection registers (frames), creates as temp tables, views and macros, and sets as
    variables is its own and goes with it when it is closed; what the database holds is shared: a shared
    connection creates nothing that is not temp, attaches nothing and changes no global setting for good
    (`insertion_order` changes one and puts it back).
    """
    from pipelines.config import segone_home

    config = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "true",
              "memory_limit": memory_limit or str(settings()["lake"].get("duckdb_memory_limit", "8GB"))}
    if not read_only:
        spill = segone_home() / "tmp" / "duckdb"
        spill.mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(spill)
    if threads:
        config["threads"] = str(threads)
    if shared and not read_only and str(database) == ":memory:":
        key = (os.getpid(), tuple(sorted(config.items())))  # a forked child never uses its parent's database
        database_ = _SHARED.get(key)
        if database_ is None:
            if len(_SHARED) >= 4:  # another home or setting (tests): the oldest goes once its connections close
                _SHARED.pop(next(iter(_SHARED)))
            database_ = _SHARED[key] = duckdb.connect(":memory:", config=config)
        con = database_.cursor()
    else:
        con = duckdb.connect(str(database), read_only=read_only, config=config)
    con.execute("set TimeZone = 'UTC'")  # the connection's own (a new one has the machine's zone)
    return con


def partition_path(paths: Paths, layer: str, table: str, **keys: str) -> Path:
    path = paths.table(layer, table)
    for key, value in keys.items():
        path = path / f"{key}={value}"
    return path


def partition_values(paths: Paths, layer: str, table: str, key: str = "as_of", bucket: int | None = None) -> list[str]:
    """The values of a table's top-level `key=value` folders that hold Parquet files (within bucket=N when given),
    sorted."""
    root = paths.table(layer, table)
    if not root.exists():
        return []
    values = []
    for folder in root.glob(f"{key}=*"):
        where = folder / f"bucket={int(bucket)}" if bucket is not None else folder
        if where.is_dir() and any(where.rglob("*.parquet")):
            values.append(folder.name.split("=", 1)[1])
    return sorted(values)


def latest_partition(paths: Paths, layer: str, table: str, on_or_before: date | str, key: str = "as_of",
                     bucket: int | None = None, strictly_before: bool = False) -> str | None:
    """The latest `key` value of a table on or before a day (strictly before it with `strictly_before`): the
    snapshot a run for that day reads. None when there is none. The one helper for "the latest partition on or
    before D"; `history` (the history load's folder) is not a date and never matches."""
    limit = on_or_before.isoformat() if isinstance(on_or_before, date) else str(on_or_before)
    values = [v for v in partition_values(paths, layer, table, key, bucket)
              if v != "history" and (v < limit if strictly_before else v <= limit)]
    return values[-1] if values else None


def parquet_files(folder: Path) -> list[Path]:
    """Every Parquet file under `folder`, through links to folders: a published generation's partitions are links
    (docs/architecture.md, "Only finished nights are visible"), which `Path.rglob` and DuckDB's `**` do not follow."""
    return [Path(where) / name for where, _, files in os.walk(folder, followlinks=True)
            for name in files if name.endswith(".parquet")]


def _table_files(paths: Paths, layer: str, table: str) -> tuple[Path, list[Path]]:
    root = paths.table(layer, table)
    return root, parquet_files(root)


def table_stamp(paths: Paths, layer: str, table: str) -> tuple:
    """What identifies a table's contents on disk: every Parquet file's path, inode, size and modification time.
    Every write swaps in new files (`write_relation`), so any write changes it: a per-process cache of what was
    read from the table is keyed by it."""
    _, files = _table_files(paths, layer, table)
    return tuple(sorted((str(p), s.st_ino, s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()]))


def table_glob(paths: Paths, layer: str, table: str) -> str | None:
    """A glob over all of a table's Parquet files; None when the table has none yet."""
    root, files = _table_files(paths, layer, table)
    depths = {len(p.relative_to(root).parts) for p in files}
    if not depths:
        return None
    if len(depths) != 1:
        raise RuntimeError(f"{root}: Parquet files at mixed depths {sorted(depths)}; the lake is corrupt")
    return "/".join([str(root), *["*"] * depths.pop()]).removesuffix("*") + "*.parquet"


def scan_sql(paths: Paths, layer: str, table: str) -> str | None:
    """`read_parquet(...)` over a table with its hive partition columns (filter on them to prune files).

    Partition values are VARCHAR (load_date may be 'history') except `bucket`, an INTEGER.
    """
    pattern = table_glob(paths, layer, table)
    if pattern is None:
        return None
    _, files = _table_files(paths, layer, table)
    bucketed = any(part.startswith("bucket=") for part in files[0].parts)
    types = ", hive_types = {'bucket': integer}" if bucketed else ""
    return (f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true, "
            f"hive_types_autocast = false{types})")


def staging_dir(paths: Paths) -> Path:
    """A fresh folder under lake/_staging/, named `<uuid>.<pid>@<host>` so that the next run can tell a killed
    writer's leftovers from a live writer's work (`publish.housekeeping`)."""
    from pipelines.locks import owner_tag

    path = paths.lake / "_staging" / f"{uuid.uuid4().hex}.{owner_tag()}"
    path.mkdir(parents=True)
    return path


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE) where the kernel offers it."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


def swap_in(new: Path, final: Path) -> None:
    """Make `new` (a file or folder) appear at `final` in one step, replacing what was there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(new, final)
        return
    if _exchange(new, final):
        _remove(new)
        return
    trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
    os.rename(final, trash)
    os.rename(new, final)
    _remove(trash)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


@contextmanager
def staged(paths: Paths, final: Path) -> Iterator[Path]:
    """Write into the yielded folder; on success it replaces `final` whole, on error it is thrown away."""
    tmp = staging_dir(paths)
    try:
        yield tmp
        swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def parquet_options() -> str:
    """COPY options of every lake write. A small string-dictionary page keeps DuckDB's writer from building one
    huge dictionary per row group on a single thread (about twice as fast, and no larger)."""
    row_group = int(settings()["lake"]["row_group_size"])
    return (f"format parquet, row_group_size {row_group}, compression zstd, "
            "string_dictionary_page_size_limit 65536")


@contextmanager
def insertion_order(con: duckdb.DuckDBPyConnection, keep: bool) -> Iterator[None]:
    """Run the block with DuckDB's `preserve_insertion_order` set to `keep`, then put the setting back.

    A COPY that need not keep its rows in the order they were produced (keep=False: bronze and silver rows, which
    every reader orders or groups itself) is written by all threads at once instead of in order. A query's own ORDER
    BY is kept either way.
    """
    if keep:
        yield
        return
    before = con.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("set preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"set preserve_insertion_order = {'true' if before else 'false'}")


def write_relation(con: duckdb.DuckDBPyConnection, query: str, final: Path, paths: Paths,
                   partition_by: list[str] | None = None, keep_order: bool = True) -> int:
    """COPY a query's rows into Parquet under `final` (optionally hive-partitioned), swapped in whole.

    Returns the number of rows written. Without partitioning an empty result still writes an empty file with the
    schema; either way a re-run of a day that now has no rows removes the rows it had. keep_order=False lets the
    writer reorder rows the query does not order (see `insertion_order`).
    """
    options = parquet_options()
    with staged(paths, final) as tmp, insertion_order(con, keep_order):
        if partition_by:
            result = con.execute(
                f"copy ({query}) to '{tmp}' ({options}, partition_by ({', '.join(partition_by)}), "
                f"overwrite_or_ignore true, filename_pattern 'part-{{i}}')"
            ).fetchall()
        else:
            result = con.execute(f"copy ({query}) to '{tmp}/part-0.parquet' ({options})").fetchall()
    return int(result[0][0]) if result else 0


def write_partitions(con: duckdb.DuckDBPyConnection, query: str, table_root: Path, paths: Paths,
                     partition_by: list[str], replace: list[str] = ()) -> int:
    """COPY a query hive-partitioned by `partition_by`; each top-level partition it produces is swapped in whole.

    `replace` names top-level folders (e.g. `load_date=2026-11-20`) that this write owns: one that the query no
    longer produces is removed, so that a re-run with fewer rows leaves no stale partition behind.
    """
    with PartitionedWrite(paths, table_root, partition_by, replace) as write:
        return write.add(con, query)


class PartitionedWrite:
    """Several COPYs into one hive-partitioned staging folder, swapped in whole (as by `write_partitions`) when
    the block ends without an error. Each COPY must write partitions of its own: one that writes into a partition
    an earlier COPY wrote is an error, never a silent overwrite."""

    def __init__(self, paths: Paths, table_root: Path, partition_by: list[str], replace: list[str] = (),
                 keep_order: bool = True) -> None:
        self.paths, self.table_root, self.partition_by, self.replace = paths, table_root, partition_by, list(replace)
        self.keep_order = keep_order
        self.tmp = staging_dir(paths)
        self.n_copies = 0

    def __enter__(self) -> "PartitionedWrite":
        return self

    def add(self, con: duckdb.DuckDBPyConnection, query: str) -> int:
        """COPY one query into the staging folder; returns its rows."""
        out = self.tmp / "out"
        before = {p.parent for p in out.rglob("*.parquet")} if out.exists() else set()
        pattern = "part-{i}" if self.n_copies == 0 else f"part-{self.n_copies}-{{i}}"
        with insertion_order(con, self.keep_order):
            result = con.execute(
                f"copy ({query}) to '{out}' ({parquet_options()}, partition_by ({', '.join(self.partition_by)}), "
                f"overwrite_or_ignore true, filename_pattern '{pattern}')"
            ).fetchall()
        self.n_copies += 1
        written = {p.parent for p in out.rglob(pattern.replace("{i}", "*") + ".parquet")} if out.exists() else set()
        if written & before:
            raise RuntimeError(f"a partitioned write into {self.table_root} wrote into partitions an earlier part of "
                               f"it wrote: {sorted(str(p.relative_to(out)) for p in written & before)}")
        return int(result[0][0]) if result else 0

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                out = self.tmp / "out"
                produced = sorted(p.name for p in out.iterdir()) if out.exists() else []
                for name in produced:
                    swap_in(out / name, self.table_root / name)
                for name in set(self.replace) - set(produced):
                    _remove(self.table_root / name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def write_frame(df: pd.DataFrame, final: Path, paths: Paths, partition_by: list[str] | None = None) -> int:
    """Write a DataFrame the same way as write_relation."""
    con = connect()
    con.register("frame", df)
    try:
        return write_relation(con, "select * from frame", final, paths, partition_by)
    finally:
        con.close()
