"""CPU seconds of the open-banking parse alone, and an exact comparison of two parses (benchmarks/README.md,
"History load: the open-banking parse").

    python benchmarks/openbanking_parse_cpu.py LANDING_ROOT [--files N] [--save DIR]
    python benchmarks/openbanking_parse_cpu.py --compare DIR_A DIR_B

The first form parses the first N files (default all) of LANDING_ROOT/history/openbanking/*.json, sorted by name,
with `parse_openbanking_files` in this process (workers=1, the limits of config/segone.yaml) and prints one JSON
line: files, CPU seconds, wall seconds, peak RSS, the batch's counts. Run it from a worktree (PYTHONPATH) to
measure that worktree's code; alternate two worktrees on the same files to compare them on a shared machine.
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


def measure(root: Path, files_wanted: int | None, save: Path | None) -> int:
    from pipelines.config import load_config
    from pipelines.ingest.openbanking import parse_openbanking_files

    files = sorted((root / "history" / "openbanking").glob("*.json"))[:files_wanted]
    config = load_config("segone")["ingest"]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    batch = parse_openbanking_files(files, landing_root=root, max_bytes=int(config["max_json_bytes"]),
                                    max_depth=int(config["max_json_depth"]), workers=1,
                                    max_quarantine_rows=int(config["max_quarantine_rows_per_file"]))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"files": len(files), "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": after.ru_maxrss // 1024, "stats": batch.stats}))
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        with open(save / "batch.pickle", "wb") as handle:
            pickle.dump({"tables": batch.tables, "quarantine": batch.quarantine, "stats": batch.stats}, handle)
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
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.landing_root is None:
        parser.error("give LANDING_ROOT, or --compare DIR_A DIR_B")
    return measure(args.landing_root, args.files, args.save)


if __name__ == "__main__":
    sys.exit(main())
