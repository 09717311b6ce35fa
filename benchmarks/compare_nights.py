"""Are two homes' outputs of night D the same? Every gold table's partition as_of=D and every feature-store table's
partition as_of=D, compared row for row with DuckDB (`except all` both ways, so duplicates count).

    python benchmarks/compare_nights.py HOME_A HOME_B 2026-11-20 [--ignore table.column ...]

Used to prove that a speed change leaves the night's outputs unchanged: run the same night from two copies of one
home, once with the old code and once with the new, and compare. Exit status 0 when every table is identical.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb


def partitions(home: Path, layer: str, day: str) -> dict[str, Path]:
    """table -> its folder as_of=D in a layer of the lake (tables with no such partition left out)."""
    root = home / "lake" / layer
    out = {}
    for table in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        folder = table / f"as_of={day}"
        if folder.is_dir() and any(folder.rglob("*.parquet")):
            out[table.name] = folder
    return out


def compare(a: Path, b: Path, day: str, ignore: set[str]) -> list[str]:
    con = duckdb.connect()
    problems = []
    for layer in ("gold", "features"):
        left, right = partitions(a, layer, day), partitions(b, layer, day)
        for table in sorted(set(left) ^ set(right)):
            problems.append(f"{layer}.{table}: partition as_of={day} only in {'A' if table in left else 'B'}")
        for table in sorted(set(left) & set(right)):
            scans = [f"read_parquet('{side[table]}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
                     for side in (left, right)]
            columns = [r[0] for r in con.execute(f"describe select * from {scans[0]}").fetchall()]
            other = [r[0] for r in con.execute(f"describe select * from {scans[1]}").fetchall()]
            if columns != other:
                problems.append(f"{layer}.{table}: columns differ {columns} vs {other}")
                continue
            kept = ", ".join(f'"{c}"' for c in columns if f"{table}.{c}" not in ignore)
            n_a, n_b = (con.execute(f"select count(*) from {s}").fetchall()[0][0] for s in scans)
            only_a = con.execute(f"select count(*) from (select {kept} from {scans[0]} except all "
                                 f"select {kept} from {scans[1]})").fetchall()[0][0]
            only_b = con.execute(f"select count(*) from (select {kept} from {scans[1]} except all "
                                 f"select {kept} from {scans[0]})").fetchall()[0][0]
            status = "same" if not (only_a or only_b) and n_a == n_b else "DIFFERENT"
            print(f"{layer}.{table}: {n_a} rows vs {n_b}; only in A {only_a}, only in B {only_b}: {status}")
            if status != "same":
                problems.append(f"{layer}.{table}: {only_a} rows only in A, {only_b} only in B")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("day")
    parser.add_argument("--ignore", nargs="*", default=[], help="table.column to leave out (wall-clock stamps)")
    args = parser.parse_args(argv)
    problems = compare(args.a, args.b, args.day, set(args.ignore))
    for problem in problems:
        print("DIFFERENT:", problem)
    print("identical" if not problems else f"{len(problems)} tables differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
