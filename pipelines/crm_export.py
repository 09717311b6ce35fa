"""The CRM export of D's next best actions (DESIGN section 7): CSV files and a manifest a CRM bulk import takes as is.

`$SEGONE_HOME/exports/crm/D/` holds `next_best_actions.csv` (or `next_best_actions-0001.csv`, `-0002.csv`, ... when
the rows do not fit below the size limit) and `manifest.json`. The folder is built in a temporary folder beside it
and swapped in whole, so the CRM sees the previous night's export or this one, never half of one, and it is only
built when every gate of the night passed.

The file format, for the CRM team:
- UTF-8 without a byte-order mark, LF line endings (also inside a quoted cell: a CR is turned into LF), a header
  row, comma-separated, RFC 4180 quoting (a cell is quoted when it holds a comma, a quote or a line break; a quote
  is doubled).
- One row per recommendation; `recommendation_id` is the upsert key (unique in the export, checked).
- Dates are ISO 8601 (`YYYY-MM-DD`); booleans `true`/`false`; numbers in Python's shortest round-trip form; an
  empty cell is a null.
- No free-text cell starts with `=`, `+`, `-`, `@`, a tab or a line break (what a spreadsheet would run as a
  formula, OWASP "CSV injection"): such a cell gets a leading apostrophe `'`, which is part of the value. Control
  characters are dropped first, so a hidden one cannot move a formula past the check.
- The key columns (KEY_COLUMNS) are exported exactly as they are in the lake, never with an apostrophe: an upsert key
  that changed would create a second record in the CRM. Each must be an id of the landing contract (1-64 characters
  of A-Z a-z 0-9 _ . : -), which cannot hold a formula (no =, @, +, quote, space or bracket: at most a leading -
  before letters, digits and . : _); a key that is not one stops the export (SegoneError), nothing is written.
- Rows in (customer_id, rank) order, so a re-run of D on the same inputs gives byte-identical files.
- Every file is smaller than `max_bytes` (default 100 MB = 100,000,000 bytes), never cuts a row, and starts with the
  header.

Only what a CRM needs leaves the bank's lake (EXPORT_COLUMNS). Not exported: `reasons` (the customer's context in
figures: it stays in the lake for analysts and the app), `propensity` and `value` (internal model figures), and
no transaction description, merchant, balance or amount. The `explanation` is the customer-facing text; before it
leaves, every money figure in it is replaced with words ("about £1585 is safe to save" -> "some money is safe to
save"), so no balance or amount of the customer's money travels to the CRM in clear text (see docs/outputs.md).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipelines import lake
from pipelines.config import Paths, settings
from pipelines.errors import GateFailed, SegoneError
from pipelines.ingest.core import FORMAT_REGEX
from pipelines.runs import read_run_metrics, write_run_metrics

log = logging.getLogger(__name__)

SCHEMA_VERSION = "crm-nba/1"
BASE_NAME = "next_best_actions"
MANIFEST = "manifest.json"
DEFAULT_MAX_BYTES = 100_000_000  # strictly below 100 MB, in both the decimal and the binary reading
EXPORT_COLUMNS = ["recommendation_id", "customer_id", "as_of", "rank", "action_id", "action_class", "channel",
                  "priority", "logging_probability", "is_exploration", "is_control", "explanation",
                  "policy_version", "valid_until"]
# Identifiers the CRM matches records on: written verbatim, checked against the contract's id pattern.
KEY_COLUMNS = ("recommendation_id", "customer_id", "action_id")
TEXT_COLUMNS = {"action_class", "channel", "explanation", "policy_version"}
DATE_COLUMNS = {"as_of", "valid_until"}
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
ID_PATTERN = re.compile(FORMAT_REGEX["id"])
_BATCH_ROWS = 100_000

# Money figures as pipelines.actions.render_template writes them ("£1585", "£-20", "£1,585.50"), with the words
# around them that only make sense with a figure.
_MONEY = r"[£€$]\s?-?\d[\d,]*(?:\.\d+)?"
_MONEY_RULES = [
    (re.compile(r"\b(savings|balance|income|payments?|outgoings|spending) of (?:about |around )?" + _MONEY), r"\1"),
    (re.compile(r"\b(?:about|around|roughly|over|under|up to) " + _MONEY), "some money"),
    (re.compile(_MONEY), "some money"),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _Line:
    """A file-like sink for csv.writer that keeps the last line written (so each row's size is known)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


# --- cell formatting ------------------------------------------------------------------------------------------

def redact_money(text: str) -> str:
    """Replace every money figure in a customer-facing text with words (see the module docstring)."""
    for pattern, replacement in _MONEY_RULES:
        text = pattern.sub(replacement, text)
    return text


def neutralise_formula(text: str) -> str:
    """A leading apostrophe for a cell a spreadsheet would run as a formula (OWASP CSV injection guidance)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def text_cell(value: Any) -> str:
    """A text cell: CR and CRLF turned into LF, other control characters dropped, then formula-neutralised (in that
    order: "\x00=cmd" must not pass the check as a harmless cell and leave as "=cmd")."""
    if value is None:
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return neutralise_formula(_CONTROL.sub("", text))


def key_cell(column: str, value: Any) -> str:
    """A key cell, verbatim; SegoneError when it is not an id of the landing contract (never altered to fit)."""
    text = str(value)
    if ID_PATTERN.fullmatch(text) is None:
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise SegoneError(f"CRM export: {column} {shown!r} is not an id (1-64 characters of A-Z a-z 0-9 _ . : -): "
                          f"a key is exported as it is or not at all")
    return text


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in KEY_COLUMNS:
        return key_cell(column, value)
    if column == "explanation":
        return text_cell(redact_money(str(value)))
    if column in TEXT_COLUMNS:
        return text_cell(value)
    if column in DATE_COLUMNS:
        if isinstance(value, datetime):
            value = value.date()
        if isinstance(value, date):
            return value.isoformat()
        return text_cell(str(value)[:10])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return text_cell(value)


# --- the gates ------------------------------------------------------------------------------------------------

def gate_failures(paths: Paths, day: date) -> list[str]:
    """Why D may not be exported: runs/D/validate.json missing or not passed, or a gold or silver validation of D
    (runs/D/validate_*.json) that did not pass. Empty when every gate passed."""
    d = day.isoformat()
    problems: list[str] = []
    validate = read_run_metrics(paths, d, "validate")
    if validate is None:
        problems.append(f"no landing validation for {d} ({paths.runs / d / 'validate.json'}): the night's gates "
                        f"did not run")
    elif validate.get("passed") is not True:
        failed = [f"{g.get('name')}: {g.get('message')}" for g in validate.get("gates", []) if not g.get("passed")]
        failed += [f"suite landing_{t}" for t, s in (validate.get("suites") or {}).items() if not s.get("success")]
        problems.append("landing validation failed: " + ("; ".join(failed) or "passed is not true"))
    folder = paths.runs / d
    for file in sorted(folder.glob("validate_*.json")) if folder.exists() else []:
        try:
            metrics = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problems.append(f"{file.name} cannot be read: {error}")
            continue
        verdicts = [metrics.get("passed")] if "passed" in metrics else []
        verdicts += [v.get("passed") for v in metrics.values() if isinstance(v, dict) and "passed" in v]
        if any(v is not True for v in verdicts):
            failed = [f"gold_{t}" for t, s in (metrics.get("suites") or {}).items() if not s.get("success")]
            for value in metrics.values():
                if isinstance(value, dict):
                    failed += [f"gold_{t}" for t, s in (value.get("suites") or {}).items() if not s.get("success")]
            problems.append(f"{file.stem} failed" + (": " + ", ".join(sorted(set(failed))) if failed else ""))
    return problems


# --- the export -----------------------------------------------------------------------------------------------

def _query(paths: Paths, day: date) -> str:
    folder = lake.partition_path(paths, "gold", "next_best_actions", as_of=day.isoformat())
    files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if not files:
        raise SegoneError(f"no gold next_best_actions for {day} ({folder}): run the decide stage first")
    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    scan = f"read_parquet([{file_list}], hive_partitioning = false, union_by_name = true)"
    select = ", ".join(f"date '{day.isoformat()}' as as_of" if c == "as_of" else c for c in EXPORT_COLUMNS)
    return f"select {select} from {scan}"


def _rows(con, query: str) -> Iterator[list[str]]:
    result = con.execute(f"{query} order by customer_id, rank, recommendation_id")
    while True:
        batch = result.fetchmany(_BATCH_ROWS)
        if not batch:
            return
        for row in batch:
            yield [_cell(c, v) for c, v in zip(EXPORT_COLUMNS, row)]


def _serialise(rows: Iterable[list[str]]) -> Iterator[bytes]:
    sink = _Line()
    writer = csv.writer(sink, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, doublequote=True, strict=True)
    for row in rows:
        writer.writerow(row)
        yield sink.text.encode("utf-8")


class _Part:
    def __init__(self, path: Path, header: bytes) -> None:
        self.path = path
        self.handle = open(path, "wb")
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.rows = 0
        self.write(header)

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.bytes += len(data)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def write_parts(rows: Iterable[list[str]], folder: Path, max_bytes: int) -> list[dict[str, Any]]:
    """Write the rows as CSV files under folder, each (header included) smaller than max_bytes; returns
    [{name, rows, bytes, sha256}] in file order."""
    header = next(_serialise([EXPORT_COLUMNS]))
    parts: list[_Part] = []
    current: _Part | None = None
    for number, line in enumerate(_serialise(rows), start=1):
        if len(header) + len(line) >= max_bytes:
            raise SegoneError(f"row {number} of the CRM export ({len(line):,} bytes with the header "
                              f"{len(header):,}) does not fit in a file below {max_bytes:,} bytes")
        if current is None or current.bytes + len(line) >= max_bytes:
            if current is not None:
                current.close()
            current = _Part(folder / f"{BASE_NAME}-{len(parts) + 1:04d}.csv", header)
            parts.append(current)
        current.write(line)
        current.rows += 1
    if current is None:  # no recommendation tonight: one file with the header only
        current = _Part(folder / f"{BASE_NAME}-0001.csv", header)
        parts.append(current)
    current.close()
    if len(parts) == 1:
        single = folder / f"{BASE_NAME}.csv"
        os.rename(parts[0].path, single)
        parts[0].path = single
    return [{"name": p.path.name, "rows": p.rows, "bytes": p.bytes, "sha256": p.digest.hexdigest()} for p in parts]


def _created_by() -> str:
    try:
        from importlib.metadata import version

        return f"segone {version('segone')} pipelines.crm_export"
    except Exception:  # noqa: BLE001 - not installed as a package: the module name is enough
        return "segone pipelines.crm_export"


def default_max_bytes() -> int:
    return int((settings().get("crm_export") or {}).get("max_file_bytes", DEFAULT_MAX_BYTES))


def export_crm(paths: Paths, day: date, max_bytes: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Export D's gold next_best_actions (every bucket) to exports/crm/D/ with its manifest; returns the manifest
    plus `folder`. Raises GateFailed, writing nothing, when a gate of D did not pass (the previous export of D, if
    any, stays as it was); SegoneError when there is nothing to export or recommendation_id is not unique.

    run_id: the Airflow run id when there is one; by default `crm-D-<12 hex>` from D and the data's hash, so a
    re-run on the same inputs writes byte-identical files and manifest."""
    max_bytes = int(max_bytes or default_max_bytes())
    problems = gate_failures(paths, day)
    if problems:
        raise GateFailed(f"CRM export of {day} refused, nothing written: " + " | ".join(problems))
    d = day.isoformat()
    query = _query(paths, day)
    final = paths.exports / "crm" / d
    final.parent.mkdir(parents=True, exist_ok=True)
    con = lake.connect(threads=2)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d}.staging-", dir=final.parent))
    try:
        total, distinct, null_keys = con.execute(
            f"select count(*), count(distinct recommendation_id), count(*) - count(recommendation_id) "
            f"from ({query})").fetchone()
        if null_keys or distinct != total:
            raise SegoneError(f"CRM export of {d}: recommendation_id is not a unique upsert key "
                              f"({total:,} rows, {distinct:,} distinct ids, {null_keys:,} null)")
        files = write_parts(_rows(con, query), tmp, max_bytes)
        whole = hashlib.sha256()
        for f in files:
            with open(tmp / f["name"], "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    whole.update(chunk)
        content_hash = whole.hexdigest()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id or f"crm-{d}-" + hashlib.sha256(f"{d}|{content_hash}".encode()).hexdigest()[:12],
            "as_of": d,
            "files": files,
            "rows": sum(f["rows"] for f in files),
            "sha256": content_hash,
            "sha256_scope": "the files' bytes concatenated in the order of `files` (each file's own is in files[])",
            "columns": EXPORT_COLUMNS,
            "upsert_key": "recommendation_id",
            "key_columns": list(KEY_COLUMNS),
            "format": {"encoding": "utf-8", "bom": False, "line_terminator": "\n", "delimiter": ",",
                       "quoting": "RFC 4180 (minimal)", "header": True, "date_format": "YYYY-MM-DD",
                       "formula_prefix": "'", "formula_prefix_scope": "free-text columns; key_columns are verbatim",
                       "max_file_bytes": max_bytes},
            "created_by": _created_by(),
        }
        if manifest["rows"] != total:
            raise SegoneError(f"CRM export of {d}: wrote {manifest['rows']:,} rows of {total:,}")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8",
                                    newline="\n")
        lake.swap_in(tmp, final)
    finally:
        con.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("CRM export of %s: %s rows in %s file(s) at %s", d, manifest["rows"], len(files), final)
    write_run_metrics(paths, d, "crm_export", {**manifest, "folder": str(final)})
    return {**manifest, "folder": str(final)}


def read_export(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The manifest and the rows of an export folder, checked against the manifest (for tests and the CRM side):
    raises SegoneError when a file's size, hash or row count differs."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    rows: list[dict[str, str]] = []
    whole = hashlib.sha256()
    for f in manifest["files"]:
        data = (folder / f["name"]).read_bytes()
        whole.update(data)
        if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise SegoneError(f"{f['name']} does not match the manifest")
        part = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        if len(part) != f["rows"]:
            raise SegoneError(f"{f['name']}: {len(part)} rows, the manifest says {f['rows']}")
        rows += part
    if whole.hexdigest() != manifest["sha256"]:
        raise SegoneError("the export does not match the manifest's sha256")
    return manifest, rows
