"""A landing folder -> bronze partitions (one per file kind) + the load's quarantine + runs/<load_date>/ingest.json.

Every file in the folder is accounted for: a core file (CSV, CSV.gz, Parquet) is validated by `core`, the
open-banking JSON under openbanking/ by `openbanking`, anything else is quarantined whole. Several files of one kind
are combined into one bronze partition. A re-run of a load replaces that load's partitions and nothing else.
"""
from __future__ import annotations

import logging
import os
import stat
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipelines import lake
from pipelines.runs import write_run_metrics
from pipelines.config import Paths, load_config, settings
from pipelines.contract import FileContract, classify_landing_file, landing_contract
from pipelines.errors import LandingError
from pipelines.ingest.core import (QUARANTINE_COLUMNS, CoreFileResult, drop_file_objects, empty_accepted_sql,
                                   quarantine_frame, read_landing_file)
from pipelines.ingest.limits import IngestLimits, ingest_limits, raw_value_cap

log = logging.getLogger(__name__)

HISTORY = "history"
OPENBANKING_FOLDER = "openbanking"
NOT_A_LANDING_FILE = "not a landing file kind"
REFUSED_LINK = "symbolic link: refused, not read (landing files must be regular files inside the landing folder)"
REFUSED_SPECIAL = "not a regular file (a device, FIFO or socket): refused, not read"
REFUSED_OUTSIDE = "resolves outside the landing folder: refused, not read"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def refusal(path: Path, root: Path) -> str | None:
    """Why an entry of a landing folder may not be read, or None: a symbolic link (to a file or a folder, followed
    never, wherever it points), anything but a regular file or folder, or a path that resolves outside `root` (the
    landing folder being ingested, resolved). Judged on the entry itself (lstat), not on what it points to."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        return f"cannot be examined ({error.strerror}): refused, not read"
    if stat.S_ISLNK(mode):
        return REFUSED_LINK
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return REFUSED_SPECIAL
    try:
        path.resolve(strict=True).relative_to(root)
    except (OSError, ValueError):
        return REFUSED_OUTSIDE
    return None


def find_landing_files(folder: Path, contract_kinds: set[str]
                       ) -> tuple[dict[str, list[Path]], list[Path], list[Path], list[tuple[Path, str]]]:
    """(core files by kind in name order, open-banking JSON files, everything else, refused entries with the
    reason) of a landing folder. Refused: links, special files and anything resolving outside the folder, also
    the openbanking/ folder itself (then none of it is read)."""
    root = folder.resolve(strict=True)
    by_kind: dict[str, list[Path]] = {}
    unknown: list[Path] = []
    refused: list[tuple[Path, str]] = []
    openbanking: list[Path] = []
    marker = load_config("landing")["completion_marker"]  # upstream's "D is complete", not data
    for path in sorted(folder.iterdir()):
        why = refusal(path, root)
        if why is not None:
            refused.append((path, why))
        elif path.name == marker and path.is_file():
            continue
        elif path.is_dir():
            if path.name != OPENBANKING_FOLDER:
                unknown.append(path)
                continue
            for inner in sorted(path.iterdir()):
                why = refusal(inner, root)
                if why is not None:
                    refused.append((inner, why))
                else:
                    (openbanking if inner.is_file() and inner.suffix == ".json" else unknown).append(inner)
        else:
            classified = classify_landing_file(path)
            if classified is None or classified[0] not in contract_kinds:
                unknown.append(path)
            else:
                by_kind.setdefault(classified[0], []).append(path)
    return by_kind, openbanking, unknown, refused


def ingest_landing(paths: Paths, load_date: str, folder: Path, business_date: date | None) -> dict[str, Any]:
    """Ingest every file of `folder` for load `load_date` (D, or 'history'); returns and writes the metrics.

    business_date: D for the not-after-D rules and, in a nightly load, the late-posting rule; None skips them.
    """
    if folder.is_symlink():
        raise LandingError(f"the landing folder {folder} is a symbolic link: refused (a night's files must be in a "
                           f"real folder under landing/)")
    if not folder.is_dir():
        raise LandingError(f"no landing folder {folder}")
    started = time.perf_counter()
    contract = landing_contract()
    config = settings()["ingest"]
    nightly = load_date != HISTORY and business_date is not None
    max_late_days = int(config["max_late_days"]) if nightly else None
    limits = ingest_limits()
    landing_root = paths.landing
    by_kind, openbanking_files, unknown, refused = find_landing_files(folder, set(contract.files))

    quarantines: list[pd.DataFrame] = []
    metrics: dict[str, Any] = {
        "load_date": load_date, "business_date": business_date.isoformat() if business_date else None,
        "folder": str(folder), "kinds": {}, "unknown_files": [], "refused_files": [], "missing_kinds": [],
        "warnings": [],
    }
    con = lake.connect()
    try:
        for kind, file_contract in contract.files.items():
            files = by_kind.get(kind, [])
            metrics["kinds"][kind] = _ingest_kind(con, paths, load_date, file_contract, files, business_date,
                                                  max_late_days, landing_root, quarantines, limits)
            metrics["warnings"] += metrics["kinds"][kind].pop("warnings_list")
            if not files:
                metrics["missing_kinds"].append(kind)
        if unknown:
            rows = [(_relative(p, landing_root), None, None,
                     NOT_A_LANDING_FILE + (" (a folder)" if p.is_dir() else ""), None) for p in unknown]
            quarantines.append(quarantine_frame(rows))
            metrics["unknown_files"] = [_relative(p, landing_root) for p in unknown]
        if refused:
            quarantines.append(quarantine_frame([(_relative(p, landing_root), None, None, why, None)
                                                 for p, why in refused]))
            metrics["refused_files"] = [_relative(p, landing_root) for p, _ in refused]
            log.warning("refused %d landing entries (links, special files): %s", len(refused),
                        ", ".join(metrics["refused_files"]))
        metrics["openbanking"] = _ingest_openbanking(con, paths, load_date, openbanking_files, landing_root, config,
                                                     quarantines)
        metrics["quarantine_rows"] = _write_quarantine(con, paths, load_date, quarantines)
    finally:
        con.close()
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    write_run_metrics(paths, load_date, "ingest", metrics)
    return metrics


def _ingest_kind(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str, contract: FileContract,
                 files: list[Path], business_date: date | None, max_late_days: int | None, landing_root: Path,
                 quarantines: list[pd.DataFrame], limits: IngestLimits) -> dict[str, Any]:
    """Validate every file of one kind and write their accepted rows as one bronze partition (empty when none)."""
    started = time.perf_counter()
    results: list[CoreFileResult] = []
    for path in files:
        result = read_landing_file(con, path, contract, business_date, _relative(path, landing_root),
                                   max_late_days=max_late_days, limits=limits)
        results.append(result)
        quarantines.append(result.quarantine)
    queries = [r.accepted_sql for r in results if not r.whole_file_quarantined] or [empty_accepted_sql(contract)]
    final = lake.partition_path(paths, "bronze", contract.name, load_date=load_date)
    # Bronze rows keep their line in source_line; every reader orders or groups them itself.
    written = lake.write_relation(con, " union all ".join(f"({q})" for q in queries), final, paths, keep_order=False)
    for result in results:
        drop_file_objects(result)
    accepted = sum(r.rows_accepted for r in results)
    if written != accepted:  # the filter that counted and the filter that wrote are the same SQL
        raise RuntimeError(f"bronze {contract.name}: wrote {written} rows but counted {accepted} accepted")
    rows_read = sum(r.rows_read for r in results)
    rows_quarantined = sum(r.rows_quarantined for r in results)
    log.info("%s: %d files, %d rows read, %d accepted, %d quarantined, %d files unreadable (%.2fs)", contract.name,
             len(files), rows_read, accepted, rows_quarantined, sum(r.whole_file_quarantined for r in results),
             time.perf_counter() - started)
    return {
        "files": len(files),
        "rows_read": rows_read,
        "rows_accepted": accepted,
        "rows_quarantined": rows_quarantined,
        "files_quarantined": sum(r.whole_file_quarantined for r in results),
        "files_quarantined_names": [r.file for r in results if r.whole_file_quarantined],
        "header_only_files": [r.file for r in results if not r.whole_file_quarantined and r.rows_read == 0],
        "optional": contract.optional,
        "seconds": round(time.perf_counter() - started, 3),
        "rows_per_second": round(rows_read / max(time.perf_counter() - started, 1e-9)),
        "warnings_list": [w for r in results for w in r.warnings],
    }


def _ingest_openbanking(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str, files: list[Path],
                        landing_root: Path, config: dict[str, Any], quarantines: list[pd.DataFrame]
                        ) -> dict[str, Any]:
    """Open-banking envelopes -> bronze ob_* tables (written even when empty, so a re-run leaves nothing stale)."""
    from pipelines.ingest.openbanking import parse_openbanking_files

    started = time.perf_counter()
    batch = parse_openbanking_files(files, landing_root=landing_root, max_bytes=int(config["max_json_bytes"]),
                                    max_depth=int(config["max_json_depth"]),
                                    max_quarantine_rows=int(config["max_quarantine_rows_per_file"]),
                                    workers=max(1, min(2, os.cpu_count() or 1)),
                                    columnar=bool(config["openbanking_columnar"]))
    tables: dict[str, int] = {}
    for name, frame in batch.tables.items():
        final = lake.partition_path(paths, "bronze", name, load_date=load_date)
        con.register(f"frame_{name}", frame)
        try:
            tables[name] = lake.write_relation(con, f"select * from frame_{name}", final, paths, keep_order=False)
        finally:
            con.unregister(f"frame_{name}")
    if len(batch.quarantine):
        quarantines.append(batch.quarantine[QUARANTINE_COLUMNS])
    return {
        "files": len(files),
        "tables": tables,
        "rows_quarantined": int(len(batch.quarantine)),
        "stats": {k: int(v) for k, v in getattr(batch, "stats", {}).items()},
        "seconds": round(time.perf_counter() - started, 3),
    }


def _write_quarantine(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str,
                      quarantines: list[pd.DataFrame]) -> int:
    """The load's quarantine partition (replaced whole: this is the first stage that writes it for a load)."""
    frames = [q for q in quarantines if len(q)]
    frame = pd.concat(frames, ignore_index=True) if frames else quarantine_frame([])
    frame = frame[QUARANTINE_COLUMNS].astype("object")
    frame["line"] = pd.array([None if pd.isna(v) else int(v) for v in frame["line"]], dtype="Int64")
    con.register("load_quarantine", frame)
    try:
        query = (f"select {_literal(load_date)} as load_date, 'ingest' as stage, cast(file as varchar) as file, "
                 f"cast(line as bigint) as line, cast(column_name as varchar) as column_name, "
                 f"cast(reason as varchar) as reason, left(cast(raw_value as varchar), {raw_value_cap()}) "
                 f"as raw_value from load_quarantine order by file, line nulls first, column_name")
        final = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
        return lake.write_relation(con, query, final, paths)
    finally:
        con.unregister("load_quarantine")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
