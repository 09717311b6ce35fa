"""CPU seconds and peak memory of the core ingest reading one transactions CSV of many malformed records
(docs/architecture.md, "Hostile files": ingest.max_malformed_records_per_file).

    python benchmarks/malformed_csv.py KIND LINES [FOLDER]

KIND: `mixed` (a third too many fields, a third too few, a third good), `stray-quote` (every other record has a
character after a closing quote), `clean` (every record good). The file is written to FOLDER (default: a temporary
folder, removed after), read once with the landing contract of transactions, and one line printed: rows read,
accepted, quarantined, whether the whole file was quarantined and why, CPU seconds and peak RSS of this process.
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HEADER = ("transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
          "counterparty_id\n")
GOOD = "T{i},A1,2026-11-20T10:00:00Z,-5.00,EUR,coffee,Cafe,5812,card,IE,\n"
BAD = {
    "mixed": lambda i: (f"T{i},A1,2026-11-20T10:00:00Z,-5.00,EUR,coffee,Cafe,5812,card,IE,,extra,extra2\n", 
                        f"T{i},A1,2026-11-20T10:00:00Z\n", GOOD.format(i=i))[i % 3],
    "stray-quote": lambda i: (f'T{i},A1,2026-11-20T10:00:00Z,-5.00,EUR,"coffee"x,Cafe,5812,card,IE,\n' if i % 2
                              else GOOD.format(i=i)),
    "clean": lambda i: GOOD.format(i=i),
}


def write(path: Path, kind: str, lines: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER)
        for start in range(0, lines, 100_000):
            out.write("".join(BAD[kind](i) for i in range(start, min(lines, start + 100_000))))


def measure(path: Path) -> str:
    from pipelines.contract import landing_contract
    from pipelines.ingest.core import read_landing_file
    from pipelines.lake import connect

    con = connect()
    started = time.process_time()
    read = read_landing_file(con, path, landing_contract()["transactions"], date(2026, 11, 20), f"x/{path.name}")
    cpu = time.process_time() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    why = read.quarantine["reason"].iloc[0][:120] if read.whole_file_quarantined and len(read.quarantine) else ""
    return (f"{path.name}: {read.rows_read} read, {read.rows_accepted} accepted, {read.rows_quarantined} quarantined "
            f"({len(read.quarantine)} quarantine rows), whole file {read.whole_file_quarantined} {why!r}; "
            f"{cpu:.1f} CPU-s, peak {peak_mb} MB")


def main() -> None:
    kind, lines = sys.argv[1], int(sys.argv[2])
    if kind not in BAD:
        raise SystemExit(f"error: KIND is one of {', '.join(BAD)}, not {kind!r}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(scratch)
        path = folder / f"transactions-{kind}-{lines}.csv"
        write(path, kind, lines)
        print(measure(path))


if __name__ == "__main__":
    main()
