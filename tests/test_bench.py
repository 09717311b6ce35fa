"""`segone bench ingest`'s comparison methods on a tiny bank: they count the same rows, and the table says how they
compare."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipelines import bench
from pipelines.config import Paths
from pipelines.lake import connect
from pipelines.simulate import simulate_command


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bench")
    simulate_command(Paths(home), customers=40, days=20, end_date=bench.END, seed=3, fmt="csv")
    return home


def _csv_rows(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            total += sum(1 for _ in csv.reader(handle)) - 1
    return total


def test_the_duckdb_floor_copies_every_core_row_once(home):
    result = bench._child("duckdb_copy_floor", home, "")
    assert result["rows"] == _csv_rows(home / "landing" / "history") > 0
    assert sorted(p.name for p in (home / "bench-duckdb").iterdir()) == sorted(
        f"{kind}.parquet" for kind in bench._landing_files(home / "landing" / "history"))


def test_the_lake_floor_writes_every_row_pandas_reads_twice(home):
    result = bench._child("duckdb_lake_floor", home, "")
    assert result["rows"] == bench._child("pandas_history", home, "")["rows"] > _csv_rows(home / "landing" / "history")
    con = connect()
    written = {}
    for kind in [*bench._landing_files(home / "landing" / "history"), "openbanking_transactions"]:
        written[kind] = [int(con.execute(f"select count(*) from read_parquet('{home / 'bench-duckdb-lake' / name}')"
                                         ).fetchall()[0][0]) for name in (f"{kind}.parquet", f"{kind}.silver.parquet")]
    assert all(first == second for first, second in written.values())
    assert sum(first for first, _ in written.values()) == result["rows"]


def test_plain_pandas_also_reads_the_open_banking_transactions(home):
    result = bench._child("pandas_history", home, "")
    assert result["rows"] > _csv_rows(home / "landing" / "history")


def test_the_parquet_floor_copies_the_parquet_landing_files(home):
    bench._copy_transactions_only(home)
    ingest = bench._child("segone_parquet_transactions", home, "")
    floor = bench._child("duckdb_parquet_floor", home, "")
    assert floor["rows"] == ingest["rows"] > 0
    assert [p.name for p in (home / "bench-duckdb-parquet").iterdir()] == ["transactions.parquet"]


def test_table_states_both_ratios():
    rows = [{"customers": 10, "method": m, "rows": 10**6, "seconds": s, "rows_per_second": 10**6 / s,
             "peak_rss_mb": 1.0}
            for m, s in (("segone_history", 4.0), ("pandas_history", 2.0), ("duckdb_copy_floor", 0.5),
                         ("duckdb_lake_floor", 1.0), ("segone_parquet_transactions", 0.4),
                         ("duckdb_parquet_floor", 0.1))]
    table = bench.format_table(rows)
    assert "runs at 0.50x the speed of the plain-pandas copy" in table
    assert "(no JSON, no checks, no silver) runs at 4.00x the speed" in table
    assert "(bronze and silver; still no checks) runs at 2.00x the speed" in table
    assert ("Parquet landing files runs at 2.50M rows/s; reading and writing the same files once, with no checks, at "
            "10.00M rows/s") in table
