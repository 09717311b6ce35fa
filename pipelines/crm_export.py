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
- Dates are ISO 8601 (`YYYY-MM-DD`); booleans `true`/`false`; numbers in plain decimal notation, the shortest that
  reads back as the same double (never an exponent, never a thousands separator); every column is required, so
  there is no empty cell.
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

The columns, their types, lengths and allowed values are config/tables.yaml `exports.crm_next_best_actions` (plus the
catalogue's action ids, classes and channels); every row is checked against them before anything is written, and the
manifest describes them as a Frictionless Table Schema (`table_schema`). Every row is to be delivered:
`treatment_group` (treatment / control) labels the customer's arm of the uplift experiment and is never a send
filter; the hold-out is applied before the file is written (docs/crm.md).

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

import numpy as np

from pipelines import lake
from pipelines.config import Paths, settings
from pipelines.errors import GateFailed, SegoneError
from pipelines.ingest.core import FORMAT_REGEX
from pipelines.runs import describe_nights, read_run_metrics, write_run_metrics
from pipelines.schemas import table_schema as _lake_schema

log = logging.getLogger(__name__)

SCHEMA_VERSION = "crm-nba/2"
BASE_NAME = "next_best_actions"
MANIFEST = "manifest.json"
DEFAULT_MAX_BYTES = 100_000_000  # strictly below 100 MB, in both the decimal and the binary reading
CONTRACT = _lake_schema("exports", "crm_next_best_actions")  # config/tables.yaml: the file's columns and checks
EXPORT_COLUMNS = CONTRACT.column_names
# Export columns that are not gold columns: how each is made from gold next_best_actions (crm-nba/2 replaced
# is_control, which a CRM reads as "hold out", by these two).
DERIVED_SQL = {
    "as_of": "{as_of}",
    "treatment_group": "case when is_control then 'control' when not is_control then 'treatment' end",
    "must_deliver": "true",
}
# Identifiers the CRM matches records on: written verbatim, checked against the contract's id pattern.
KEY_COLUMNS = ("recommendation_id", "customer_id", "action_id")
TEXT_COLUMNS = {"action_class", "channel", "treatment_group", "explanation", "policy_version"}
DATE_COLUMNS = {"as_of", "valid_until"}
DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o644
_TABLE_SCHEMA_TYPES = {"varchar": "string", "date": "date", "integer": "integer", "bigint": "integer",
                       "double": "number", "boolean": "boolean"}
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
ID_PATTERN = re.compile(FORMAT_REGEX["id"])
_BATCH_ROWS = 100_000

# Money figures as pipelines.actions.render_template writes them ("£1585", "£-20", "£1,585.50"), with the words
# around them that only make sense with a figure.
_MONEY = r"[£€$]\s?-?\d[\d,]*(?:\.\d+)?"
# Each rule keeps the sentence true without its figure: "a single payment of £612.60 or more" is a large payment for
# the customer (the threshold is theirs), not any payment; "below its recent £2400 a month" is its recent level; an
# expected amount ("most likely around 15 December 2026, of about £820") is dropped with its clause.
_MONEY_RULES = [
    (re.compile(r"\ba single payment of " + _MONEY + r" or more"), "a large single payment"),
    (re.compile(r"\b(its|your) recent " + _MONEY + r" a month"), r"\1 recent monthly level"),
    (re.compile(r",? of (?:about |around )" + _MONEY), ""),
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
        if not math.isfinite(value):
            raise SegoneError(f"CRM export: {column} is {value!r}, not a finite number")
        return np.format_float_positional(value, trim="0")  # shortest round-trip digits, never an exponent
    if isinstance(value, int):
        return str(value)
    return text_cell(value)


# --- the contract: a Frictionless Table Schema, and the same checks on every row -------------------------------

def allowed_values() -> dict[str, list]:
    """The allowed values per column: config/tables.yaml `values`, plus the catalogue's action ids and the classes and
    channels config/actions.yaml may use (one source each)."""
    from pipelines.actions import CHANNELS, CLASSES, load_catalogue

    values = {column: list(allowed) for column, allowed in (CONTRACT.checks.get("values") or {}).items()}
    values["action_id"] = [action.id for action in load_catalogue()]
    values["action_class"] = list(CLASSES)
    values["channel"] = list(CHANNELS)
    return values


def table_schema() -> dict[str, Any]:
    """The export's Table Schema (Frictionless, https://specs.frictionlessdata.io/table-schema/): every column with
    its type, description and constraints (required, unique, maxLength in characters, pattern, enum, minimum and
    maximum), the primary key, and the empty string as the only missing value (no column may be missing)."""
    checks = CONTRACT.checks
    required = set(checks.get("not_null") or ())
    values = allowed_values()
    lengths = checks.get("max_length") or {}
    between = checks.get("between") or {}
    ids = set(checks.get("ids") or ())
    fields = []
    for column in CONTRACT.columns:
        kind = _TABLE_SCHEMA_TYPES[column.type]
        field: dict[str, Any] = {"name": column.name, "type": kind, "description": column.description}
        if kind == "date":
            field["format"] = "default"  # ISO 8601 YYYY-MM-DD
        elif kind == "boolean":
            field.update(trueValues=["true"], falseValues=["false"])
        elif kind == "number":
            field.update(decimalChar=".", bareNumber=True)
        constraints: dict[str, Any] = {}
        if column.name in required:
            constraints["required"] = True
        if column.name in CONTRACT.key:
            constraints["unique"] = True
        if column.name in lengths:
            constraints["maxLength"] = int(lengths[column.name])
        if column.name in ids:
            constraints["pattern"] = FORMAT_REGEX["id"]
        if column.name in values:
            constraints["enum"] = list(values[column.name])
        low, high = (between.get(column.name) or [None, None])
        if low is not None:
            constraints["minimum"] = low
        if high is not None:
            constraints["maximum"] = high
        field["constraints"] = constraints
        fields.append(field)
    return {"fields": fields, "primaryKey": list(CONTRACT.key), "missingValues": [""]}


def _row_checks(schema: dict[str, Any]) -> list[tuple[int, str, Any, str]]:
    """(position, column, test of the written cell, what a failure means) for each constraint of the schema except
    `unique` (checked over the whole export in SQL)."""
    tests: list[tuple[int, str, Any, str]] = []
    for i, field in enumerate(schema["fields"]):
        name, kind, c = field["name"], field["type"], field["constraints"]
        if c.get("required"):
            tests.append((i, name, lambda cell: cell != "", "is empty"))
        if "maxLength" in c:
            limit = c["maxLength"]
            tests.append((i, name, lambda cell, limit=limit: len(cell) <= limit,
                          f"is longer than the contract's {limit} characters"))
        if "pattern" in c:
            pattern = re.compile(c["pattern"])
            tests.append((i, name, lambda cell, pattern=pattern: pattern.fullmatch(cell) is not None,
                          f"does not match {c['pattern']}"))
        if "enum" in c:
            allowed = {("true" if v else "false") if kind == "boolean" else str(v) for v in c["enum"]}
            words = ", ".join(sorted(allowed)) if len(allowed) <= 8 else f"the {len(allowed)} allowed values " \
                f"(the catalogue's, config/actions.yaml)"
            tests.append((i, name, lambda cell, allowed=allowed: cell in allowed, f"is not one of {words}"))
        for bound, word, keep in (("minimum", "below", lambda x, b: x >= b), ("maximum", "above", lambda x, b: x <= b)):
            if bound in c:
                limit = c[bound]
                tests.append((i, name, lambda cell, limit=limit, keep=keep: keep(float(cell), limit),
                              f"is {word} {limit}"))
    return tests


def check_row(row: list[str], tests: list[tuple[int, str, Any, str]]) -> None:
    """SegoneError naming the recommendation, the column and the broken constraint (nothing is written then)."""
    for i, name, test, meaning in tests:
        if row[i] == "" and meaning != "is empty":
            continue  # an empty cell is reported by the `required` test
        if not test(row[i]):
            shown = row[i] if len(row[i]) <= 80 else row[i][:80] + "..."
            raise SegoneError(f"CRM export: recommendation {row[0]!r}: {name} {meaning} ({len(row[i])} characters: "
                              f"{shown!r}); the file would break its own schema (config/tables.yaml "
                              f"exports.crm_next_best_actions), nothing written")


# --- permissions --------------------------------------------------------------------------------------------------

def _mode(value: Any, name: str) -> int:
    try:
        mode = value if isinstance(value, int) else int(str(value), 8)
    except ValueError:
        raise SegoneError(f"config/segone.yaml crm_export.{name}: {value!r} is not an octal mode such as 0755") \
            from None
    if not 0 <= mode <= 0o777:
        raise SegoneError(f"config/segone.yaml crm_export.{name}: {value!r} is not a mode from 0000 to 0777")
    return mode


def export_modes() -> tuple[int, int, int | None]:
    """(folder mode, file mode, group id or None) of the export: config/segone.yaml `crm_export.dir_mode`,
    `file_mode` (defaults 0755 and 0644: another service account, the CRM's importer, can read them) and `group`
    (a group name: the files and folders are given that group, e.g. with 0750 / 0640 for a group-only read)."""
    cfg = settings().get("crm_export") or {}
    dir_mode = _mode(cfg.get("dir_mode", DEFAULT_DIR_MODE), "dir_mode")
    file_mode = _mode(cfg.get("file_mode", DEFAULT_FILE_MODE), "file_mode")
    if dir_mode & 0o700 != 0o700 or file_mode & 0o600 != 0o600:
        raise SegoneError("config/segone.yaml crm_export: dir_mode must give the owner rwx and file_mode rw "
                          f"(got {dir_mode:04o} and {file_mode:04o})")
    gid = None
    if cfg.get("group"):
        import grp

        try:
            gid = grp.getgrnam(str(cfg["group"])).gr_gid
        except KeyError:
            raise SegoneError(f"config/segone.yaml crm_export.group: there is no group {cfg['group']!r} on this "
                              f"machine") from None
    return dir_mode, file_mode, gid


def apply_modes(folder: Path, area: Iterable[Path] = ()) -> None:
    """Set the export's modes (and group) explicitly, whatever the process umask: the files of `folder`, `folder`
    itself, and the folders of `area` this process owns (exports/ and exports/crm/, which the CRM traverses)."""
    dir_mode, file_mode, gid = export_modes()
    for path in [*sorted(folder.iterdir()), folder]:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, dir_mode if path.is_dir() else file_mode)
    for path in area:
        if path.is_dir() and path.stat().st_uid == os.geteuid():
            if gid is not None:
                os.chown(path, -1, gid)
            os.chmod(path, dir_mode)


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


def night_missing(paths: Paths, day: date) -> str | None:
    """One line when night D has left nothing to export (no runs/D/ and no gold next_best_actions for D), naming
    what is missing and which nights exist; None otherwise."""
    d = day.isoformat()
    gold = lake.partition_path(paths, "gold", "next_best_actions", as_of=d)
    if (paths.runs / d).is_dir() or gold.is_dir():
        return None
    return (f"nothing to export for {d}: the night of {d} has not run in {paths.home} (no {paths.runs / d}, no gold "
            f"next_best_actions for {d}); {describe_nights(paths)}")


# --- the export -----------------------------------------------------------------------------------------------

# What the CRM is to do with the rows (also in the manifest, and explained in docs/crm.md).
DELIVERY = {
    "rule": "deliver every row on its channel: must_deliver is true on every row",
    "treatment_group": "the customer's arm of tonight's uplift experiment, an analysis label and NEVER a send filter: "
                       "the hold-out is applied before this file is written (a control customer's offers are not in "
                       "it), so a control row is a protective action that must be sent",
    "may_stop_a_row": "only a consent withdrawal or an unsubscribe the customer made after as_of (commercial rows are "
                      "marketing messages; protective and service rows are service messages under the service_alerts "
                      "consent, which marketing opt-outs, hold-outs and marketing frequency rules do not stop)",
}
SNAPSHOT = {
    "mode": "full",
    "covers": "every recommendation of every customer as of as_of: a customer without a row has none tonight",
    "earlier_exports": "superseded when this export is loaded: a row of an earlier as_of that has not been delivered "
                       "by then is not delivered any more (what still holds is in this file again, under a new "
                       "recommendation_id because the id includes as_of); rows already delivered are kept",
    "deliver_by": "before the next night's export is loaded, and never after valid_until",
    "valid_until": "inclusive: the last day the recommendation holds; responses to a delivered one are reported under "
                   "its recommendation_id until then, after which its record is closed (expired)",
}

def _query(paths: Paths, day: date) -> str:
    folder = lake.partition_path(paths, "gold", "next_best_actions", as_of=day.isoformat())
    files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if not files:
        raise SegoneError(f"no gold next_best_actions for {day} ({folder}): run the decide stage first")
    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    scan = f"read_parquet([{file_list}], hive_partitioning = false, union_by_name = true)"
    derived = {c: sql.format(as_of=f"date '{day.isoformat()}'") for c, sql in DERIVED_SQL.items()}
    select = ", ".join(f"{derived[c]} as {c}" if c in derived else c for c in EXPORT_COLUMNS)
    return f"select {select} from {scan}"


def _rows(con, query: str, tests: list[tuple[int, str, Any, str]] | None = None) -> Iterator[list[str]]:
    result = con.execute(f"{query} order by customer_id, rank, recommendation_id")
    while True:
        batch = result.fetchmany(_BATCH_ROWS)
        if not batch:
            return
        for row in batch:
            cells = [_cell(c, v) for c, v in zip(EXPORT_COLUMNS, row)]
            if tests:
                check_row(cells, tests)
            yield cells


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


def content_sha256(folder: Path, files: list[dict[str, Any]]) -> str:
    """The manifest's `sha256`: of the files' bytes concatenated in the order of `files`."""
    whole = hashlib.sha256()
    for f in files:
        with open(folder / f["name"], "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                whole.update(chunk)
    return whole.hexdigest()


def write_rows_export(paths: Paths, day: date, rows: Iterable[dict[str, Any]]) -> Path:
    """exports/crm/D/ written from the given rows (a dict per recommendation, by export column; a column it lacks is
    empty, a key that is no export column is ignored), for what steps the simulated world without running a night
    (tests/test_simulate_world.py, benchmarks/closed_loop_crn.py): the night's serialiser and file names
    (`write_parts`) and a manifest whose as_of, files, rows and sha256 are made as `stage_export` makes them, so
    `read_export` checks it as a CRM would. Not the night's export: no gate, no schema check of the rows, no swap."""
    folder = export_folder(paths, day)
    folder.mkdir(parents=True, exist_ok=True)
    cells = (["" if row.get(c) is None else str(row[c]) for c in EXPORT_COLUMNS] for row in rows)
    files = write_parts(cells, folder, default_max_bytes())
    manifest = {"schema_version": SCHEMA_VERSION, "as_of": day.isoformat(), "files": files,
                "rows": sum(f["rows"] for f in files), "sha256": content_sha256(folder, files),
                "columns": EXPORT_COLUMNS}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8", newline="\n")
    return folder


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
    (without the parts `summarise` leaves in the file) plus `folder` and `manifest`. Raises GateFailed, writing
    nothing, when a gate of D did not pass (the previous export of D, if any, stays as it was); SegoneError when the
    night never ran, there is nothing to export, recommendation_id is not unique or a row breaks the schema.

    run_id: the Airflow run id when there is one; by default `crm-D-<12 hex>` from D and the data's hash, so a
    re-run on the same inputs writes byte-identical files and manifest.

    The night's publish does not call this: it stages the export from the published generation
    (`stage_export`) and swaps it in with the warehouse and the report (`pipelines.publish`)."""
    tmp, manifest = stage_export(paths, day, max_bytes=max_bytes, run_id=run_id)
    final = export_folder(paths, day)
    try:
        lake.swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record_export(paths, day, manifest)


def export_folder(paths: Paths, day: date) -> Path:
    return paths.exports / "crm" / day.isoformat()


def record_export(paths: Paths, day: date, manifest: dict[str, Any]) -> dict[str, Any]:
    """After the swap: log it and write runs/D/crm_export.json (the `summarise`d manifest)."""
    final = export_folder(paths, day)
    log.info("CRM export of %s: %s rows in %s file(s) at %s", day, manifest["rows"], len(manifest["files"]), final)
    summary = summarise(manifest, final)
    write_run_metrics(paths, day.isoformat(), "crm_export", summary)
    return summary


def stage_export(paths: Paths, day: date, max_bytes: int | None = None, run_id: str | None = None
                 ) -> tuple[Path, dict[str, Any]]:
    """Build D's export in a staging folder beside exports/crm/D (`.D.staging-<pid>@<host>-*`) and return it with
    its manifest; the caller swaps it in. Same checks and refusals as export_crm."""
    from pipelines.locks import owner_tag

    max_bytes = int(max_bytes or default_max_bytes())
    missing = night_missing(paths, day)
    if missing:
        raise SegoneError(missing)
    problems = gate_failures(paths, day)
    if problems:
        raise GateFailed(f"CRM export of {day} refused, nothing written: " + " | ".join(problems))
    d = day.isoformat()
    query = _query(paths, day)
    final = export_folder(paths, day)
    final.parent.mkdir(parents=True, exist_ok=True)
    con = lake.connect(threads=2)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d}.staging-{owner_tag()}-", dir=final.parent))
    schema = table_schema()
    try:
        total, distinct, null_keys = con.execute(
            f"select count(*), count(distinct recommendation_id), count(*) - count(recommendation_id) "
            f"from ({query})").fetchone()
        if null_keys or distinct != total:
            raise SegoneError(f"CRM export of {d}: recommendation_id is not a unique upsert key "
                              f"({total:,} rows, {distinct:,} distinct ids, {null_keys:,} null)")
        files = write_parts(_rows(con, query, _row_checks(schema)), tmp, max_bytes)
        content_hash = content_sha256(tmp, files)
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
                       "boolean_values": ["true", "false"],
                       "number_format": "plain decimal with a point, no exponent, no thousands separator",
                       "empty_cells": "none (every column is required)",
                       "formula_prefix": "'", "formula_prefix_scope": "free-text columns; key_columns are verbatim",
                       "max_file_bytes": max_bytes},
            "delivery": DELIVERY,
            "snapshot": SNAPSHOT,
            "schema": schema,
            "created_by": _created_by(),
        }
        if manifest["rows"] != total:
            raise SegoneError(f"CRM export of {d}: wrote {manifest['rows']:,} rows of {total:,}")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8",
                                    newline="\n")
        apply_modes(tmp, area=[paths.exports, final.parent])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    return tmp, manifest


def summarise(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The manifest without its long descriptive parts (the Table Schema, the delivery and snapshot rules, which
    stay in manifest.json), plus where it is: what the run metrics keep and the CLI prints."""
    return {**{k: v for k, v in manifest.items() if k not in ("schema", "delivery", "snapshot")},
            "folder": str(folder), "manifest": str(folder / MANIFEST)}


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
