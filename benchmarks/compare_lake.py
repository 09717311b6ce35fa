"""Are two loaded lakes the same, table by table, column by column, row by row? Used to show that a change of the
ingest leaves bronze (and what is built from it) as it was (benchmarks/README.md, "History load").

    python benchmarks/compare_lake.py HOME_A HOME_B [LAYER ...]     (layers: bronze silver gold; default all three)

For every table of each layer in either home: the column names and DuckDB types must be the same, in the same
order, and the rows the same multiset (`EXCEPT ALL` both ways over every column; a lake's row order is not part
of its contract: docs/architecture.md, "Row order"). One line per table; exit status 1 when any table differs.
Unlike compare_silver.py (which compares the columns both lakes have, for lakes of different versions), a column
added, dropped or retyped is a difference here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import duckdb

LAYERS = ("bronze", "silver", "gold")


def compare_layer(con: duckdb.DuckDBPyConnection, a: Path, b: Path, layer: str) -> list[tuple[str, str]]:
    """(layer/table, verdict) per table of `layer` in either home."""
    roots = [home / "lake" / layer for home in (a, b)]
    tables = sorted({p.name for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir()})
    out = []
    for table in tables:
        files = [sorted(str(f) for f in (root / table).rglob("*.parquet")) for root in roots]
        if not files[0] or not files[1]:
            out.append((f"{layer}/{table}", f"DIFFERENT: {len(files[0])} vs {len(files[1])} files"))
            continue
        scans = [f"read_parquet({f!r}, union_by_name=true, hive_partitioning=true)" for f in files]
        schemas = [con.execute(f"describe select * from {s}").fetchall() for s in scans]
        if [r[:2] for r in schemas[0]] != [r[:2] for r in schemas[1]]:
            out.append((f"{layer}/{table}", f"DIFFERENT columns: {[r[:2] for r in schemas[0]]} vs "
                                            f"{[r[:2] for r in schemas[1]]}"))
            continue
        counts = [con.execute(f"select count(*) from {s}").fetchone()[0] for s in scans]
        only = [con.execute(f"select count(*) from (select * from {x} except all select * from {y})").fetchone()[0]
                for x, y in (scans, scans[::-1])]
        same = counts[0] == counts[1] and only == [0, 0]
        out.append((f"{layer}/{table}", f"{counts[0]} rows vs {counts[1]}, {len(schemas[0])} columns; only in A "
                                        f"{only[0]}, only in B {only[1]}: {'same' if same else 'DIFFERENT'}"))
    return out


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: python benchmarks/compare_lake.py HOME_A HOME_B [bronze|silver|gold ...]", file=sys.stderr)
        return 2
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    layers = sys.argv[3:] or list(LAYERS)
    unknown = [x for x in layers if x not in LAYERS]
    if unknown:
        print(f"unknown layer {unknown[0]!r}; expected one of {', '.join(LAYERS)}", file=sys.stderr)
        return 2
    con = duckdb.connect()
    con.execute("set threads = 2")
    rows = [row for layer in layers for row in compare_layer(con, a, b, layer)]
    for name, verdict in rows:
        print(f"{name}: {verdict}")
    return 0 if rows and all(v.endswith(": same") for _, v in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
