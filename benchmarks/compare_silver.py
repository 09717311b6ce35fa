"""Are two loaded lakes' silver tables the same rows? Used to show that a cached bench lake of an earlier
`lake_version()` is what today's code would load (benchmarks/README.md, "An earlier lake version").

    python benchmarks/compare_silver.py HOME_A HOME_B

Every silver table of HOME_A is compared with HOME_B's on every column both have, as multisets of rows
(`EXCEPT ALL` both ways): one line per table with both row counts and the rows found in only one of them.
Exit status 1 when any table differs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import duckdb


def compare(a: Path, b: Path) -> list[tuple[str, int, int, int, int]]:
    con = duckdb.connect()
    rows = []
    tables = sorted({p.name for p in (a / "lake" / "silver").iterdir()} | {p.name for p in (b / "lake" / "silver").iterdir()})
    for table in tables:
        files = [sorted(str(f) for f in (home / "lake" / "silver" / table).rglob("*.parquet")) for home in (a, b)]
        if not files[0] or not files[1]:
            rows.append((table, sum(1 for _ in files[0]), sum(1 for _ in files[1]), -1, -1))
            continue
        scans = [f"read_parquet({f!r}, union_by_name=true)" for f in files]
        columns = [[r[0] for r in con.execute(f"describe select * from {s}").fetchall()] for s in scans]
        both = ", ".join(f'"{c}"' for c in columns[0] if c in columns[1])
        counts = [con.execute(f"select count(*) from {s}").fetchall()[0][0] for s in scans]
        only = [con.execute(f"select count(*) from (select {both} from {x} except all select {both} from {y})")
                .fetchall()[0][0] for x, y in (scans, scans[::-1])]
        rows.append((table, counts[0], counts[1], only[0], only[1]))
    return rows


def main() -> int:
    a, b = (Path(x) for x in sys.argv[1:3])
    rows = compare(a, b)
    for table, n_a, n_b, only_a, only_b in rows:
        state = "missing in one" if only_a < 0 else ("same" if only_a == only_b == 0 and n_a == n_b else "DIFFERENT")
        print(f"{table}: {n_a} rows vs {n_b}; only in A {max(only_a, 0)}, only in B {max(only_b, 0)}: {state}")
    return 0 if all(r[3] == r[4] == 0 and r[1] == r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
