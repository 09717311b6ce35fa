"""CPU seconds of the open-banking parse alone (benchmarks/README.md, "History load: the open-banking parse").

    python benchmarks/openbanking_parse_cpu.py LANDING_ROOT [N_FILES]

Parses the first N_FILES (default all) of LANDING_ROOT/history/openbanking/*.json, sorted by name, with
`parse_openbanking_files` in this process (workers=1, the limits of config/segone.yaml) and prints one line: files,
CPU seconds, wall seconds, peak RSS, and the batch's counts. Run it from the worktree to measure, alternating two
worktrees on the same files to compare them on a shared machine.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from pipelines.config import load_config
from pipelines.ingest.openbanking import parse_openbanking_files


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python benchmarks/openbanking_parse_cpu.py LANDING_ROOT [N_FILES]", file=sys.stderr)
        return 2
    root = Path(sys.argv[1])
    files = sorted((root / "history" / "openbanking").glob("*.json"))
    if len(sys.argv) > 2:
        files = files[:int(sys.argv[2])]
    config = load_config("segone")["ingest"]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    batch = parse_openbanking_files(files, landing_root=root, max_bytes=int(config["max_json_bytes"]),
                                    max_depth=int(config["max_json_depth"]), workers=1,
                                    max_quarantine_rows=int(config["max_quarantine_rows_per_file"]))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"files": len(files), "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": after.ru_maxrss // 1024, "stats": batch.stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
