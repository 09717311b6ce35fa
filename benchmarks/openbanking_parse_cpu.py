"""CPU seconds of the open-banking parse alone, and an exact comparison of two parses (benchmarks/README.md,
"History load: the open-banking parse").

    python benchmarks/openbanking_parse_cpu.py LANDING_ROOT [--files N] [--save DIR] [--columnar | --screen-only]
    python benchmarks/openbanking_parse_cpu.py --compare DIR_A DIR_B

The first form parses the first N files (default all) of LANDING_ROOT/history/openbanking/*.json, sorted by name,
with `parse_openbanking_files` in this process (workers=1, the limits of config/segone.yaml) and prints one JSON
line: files, CPU seconds, wall seconds, peak RSS, the batch's counts. Run it from a worktree (PYTHONPATH) to
measure that worktree's code; alternate two worktrees on the same files to compare them on a shared machine.
--columnar parses with the columnar path for transactions (pipelines/ingest/openbanking_fast.py; config/segone.yaml
ingest.openbanking_columnar). --screen-only measures that path's DuckDB query alone (the screen and the columnar rows
of every file that is plain ASCII, in batches of FAST_BATCH_FILES) and prints the files and rows it gives.
--save writes the six tables, the quarantine and the counts to DIR (pickles: the frames with their dtypes).
The second form compares two saved parses exactly: every table's columns, dtypes and rows in order
(`pandas.testing.assert_frame_equal`, check_exact), the quarantine and the counts; exit status 1 when they differ.
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import sys
import time
from pathlib import Path

import pandas as pd


def measure(root: Path, files_wanted: int | None, save: Path | None, columnar: bool = False) -> int:
    from pipelines.config import load_config
    from pipelines.ingest.openbanking import parse_openbanking_files

    files = sorted((root / "history" / "openbanking").glob("*.json"))[:files_wanted]
    config = load_config("segone")["ingest"]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    batch = parse_openbanking_files(files, landing_root=root, max_bytes=int(config["max_json_bytes"]),
                                    max_depth=int(config["max_json_depth"]), workers=1,
                                    max_quarantine_rows=int(config["max_quarantine_rows_per_file"]),
                                    columnar=columnar)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"files": len(files), "columnar": columnar, "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": after.ru_maxrss // 1024, "stats": batch.stats}))
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        with open(save / "batch.pickle", "wb") as handle:
            pickle.dump({"tables": batch.tables, "quarantine": batch.quarantine, "stats": batch.stats}, handle)
    return 0


def measure_screen(root: Path, files_wanted: int | None) -> int:
    from pipelines.ingest import openbanking_fast
    from pipelines.ingest.openbanking import FAST_BATCH_FILES, max_amount

    files = sorted((root / "history" / "openbanking").glob("*.json"))[:files_wanted]
    bound = max_amount("transactions")
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    passed = rows = plain = 0
    con = openbanking_fast.connect()
    for start in range(0, len(files), FAST_BATCH_FILES):
        documents = [(i, data) for i, data in ((i, files[i].read_bytes())
                                               for i in range(start, min(start + FAST_BATCH_FILES, len(files))))
                     if openbanking_fast.plain_ascii(data)]
        plain += len(documents)
        _, answer = openbanking_fast.screen_transactions(documents, bound, con)
        passed += len(answer)
        rows += sum(count for count, _ in answer.values())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"files": len(files), "plain_ascii": plain, "screened_through": passed, "rows": rows,
                      "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - started, 1)}))
    return 0


def compare(a: Path, b: Path) -> int:
    left, right = (pickle.loads((folder / "batch.pickle").read_bytes()) for folder in (a, b))
    same = True
    for name in sorted(set(left["tables"]) | set(right["tables"])) + ["quarantine"]:
        x = left["quarantine"] if name == "quarantine" else left["tables"].get(name)
        y = right["quarantine"] if name == "quarantine" else right["tables"].get(name)
        try:
            if x is None or y is None:
                raise AssertionError("missing in one")
            pd.testing.assert_frame_equal(x, y, check_exact=True)
            print(f"{name}: {len(x)} rows x {x.shape[1]} columns: same")
        except AssertionError as error:
            same = False
            print(f"{name}: DIFFERENT: {' '.join(str(error).split())[:300] or 'differs'}")
    if left["stats"] != right["stats"]:
        same = False
        print(f"counts: DIFFERENT: {left['stats']} vs {right['stats']}")
    else:
        print("counts: same")
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing_root", nargs="?", type=Path)
    parser.add_argument("--files", type=int, default=None, help="parse only the first N files")
    parser.add_argument("--save", type=Path, default=None, help="save the parse to this folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("DIR_A", "DIR_B"))
    parser.add_argument("--columnar", action="store_true", help="with the columnar path for transactions")
    parser.add_argument("--screen-only", action="store_true", help="the columnar path's DuckDB query alone")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.landing_root is None:
        parser.error("give LANDING_ROOT, or --compare DIR_A DIR_B")
    if args.screen_only:
        return measure_screen(args.landing_root, args.files)
    return measure(args.landing_root, args.files, args.save, args.columnar)


if __name__ == "__main__":
    sys.exit(main())
