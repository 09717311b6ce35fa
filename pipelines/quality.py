"""Data quality: the Great Expectations runner, the landing suites generated from the contract, and the gates.

The landing suites (expectations/landing_<kind>.json) are generated from config/landing.yaml, the same source as the
ingest's SQL rules, and run on the typed bronze rows of a load as a second, independent check. The gates turn the
ingest metrics (quarantine shares, required files, volumes) into a pass or a GateFailed that stops the run before
anything is published. Great Expectations is imported inside the functions that use it: it takes seconds to import,
and DAG files must parse fast.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import lake
from pipelines.config import REPO_ROOT, Paths, settings
from pipelines.contract import FileContract, landing_contract, text_limits
from pipelines.data_docs import build_gate_site, clear_results
from pipelines.ingest.core import (BIDI_REGEX, CONTROL_REGEX, FORMAT_REGEX, FULLWIDTH_REGEX, INVISIBLE_REGEX,
                                   REPLACEMENT_REGEX, bronze_columns_sql, python_combining_regex,
                                   python_mixed_script_regex)
from pipelines.errors import GateFailed, SegoneError
from pipelines.runs import write_run_metrics
from pipelines.schemas import TableSchema, table_schema, tables

log = logging.getLogger(__name__)

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
HISTORY = "history"
# The ingest's own regular expressions of the text-typed contract types, anchored for Great Expectations.
GX_REGEX = {kind: f"^{FORMAT_REGEX[kind]}$" for kind in ("id", "currency", "country", "mcc")}


# ---------------------------------------------------------------------------------------------------------------
# Running a suite
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SuiteResult:
    """The outcome of one suite on one DataFrame, in plain words."""

    suite: str
    success: bool
    rows: int
    statistics: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {self.statistics.get('evaluated_expectations', 0)} expectations met"
        return f"{self.suite}: " + "; ".join(f["message"] for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_suite_spec(suite_name: str, directory: Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    path = directory / f"{suite_name}.json"
    if not path.exists():
        raise SegoneError(f"no expectation suite {suite_name!r}: {path} does not exist (run `segone expectations`)")
    return json.loads(path.read_text(encoding="utf-8"))


_GX_CACHE: dict[str, Any] = {}



def _gx_batch_definition() -> Any:
    """A whole-DataFrame batch definition on one ephemeral context per process (a context makes a temporary folder
    and takes a moment to build); progress bars and INFO chatter off, they would flood the task logs."""
    if "batch_definition" not in _GX_CACHE:
        from pipelines.logs import quiet_great_expectations

        quiet_great_expectations()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        quiet_great_expectations()
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX_CACHE["context"] = context
        _GX_CACHE["batch_definition"] = (context.data_sources.add_pandas("frames").add_dataframe_asset("frame")
                                         .add_batch_definition_whole_dataframe("whole"))
    return _GX_CACHE["batch_definition"]


def _gx_ready(df: pd.DataFrame) -> pd.DataFrame:
    """Columns Great Expectations compares reliably: Decimals as floats (ranges only; exactness is checked in SQL)."""
    out = df
    for column in df.columns:
        if df[column].dtype == object:
            present = df[column].dropna()
            if len(present) and type(present.iloc[0]).__name__ == "Decimal":
                out = out.copy() if out is df else out
                out[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return out


def run_suite(df: pd.DataFrame, suite_name: str, directory: Path = EXPECTATIONS_DIR, keep: Path | None = None,
              asset: str = "", load: str = "") -> SuiteResult:
    """Validate a DataFrame against expectations/<suite_name>.json (GX 1.x suite JSON: name + expectations).

    `keep`: a folder where the full validation result is written as JSON (values of restricted or personal columns
    withheld) for the night's data docs (pipelines/data_docs.py); `asset` and `load` say what was validated."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    import great_expectations as gx

    spec = load_suite_spec(suite_name, directory)
    suite = gx.ExpectationSuite(name=spec.get("name", suite_name))
    for item in spec["expectations"]:
        suite.add_expectation_configuration(
            ExpectationConfiguration(type=item["type"], kwargs=item.get("kwargs", {}), meta=item.get("meta") or {})
        )
    batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": _gx_ready(df)})
    validation = batch.validate(suite)
    failures = [_describe_failure(r) for r in validation.results if not r.success]
    if keep is not None:
        from pipelines.data_docs import keep_result

        keep_result(keep, suite_name, validation, len(df), asset or suite_name, load)
    return SuiteResult(suite=suite_name, success=bool(validation.success), rows=int(len(df)),
                       statistics={k: v for k, v in dict(validation.statistics).items()}, failures=failures)


def _describe_failure(result: Any) -> dict[str, Any]:
    """One failed expectation as a dict with a plain-language message."""
    config = result.expectation_config
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k not in ("batch_id", "result_format")}
    details = dict(result.result or {})
    if (config.meta or {}).get("personal"):  # text a customer wrote: counts only, never a value
        details = {k: v for k, v in details.items() if k in ("element_count", "unexpected_count", "unexpected_percent",
                                                              "missing_count", "missing_percent")}
    target = kwargs.get("column") or ", ".join(kwargs.get("column_list", []) or []) or "table"
    what = config.type.removeprefix("expect_").replace("_", " ")
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = f"{target}: {what}: could not be evaluated: {result.exception_info.get('exception_message')}"
    elif "unexpected_count" in details:
        examples = [str(v) for v in (details.get("partial_unexpected_list") or [])[:5]]
        message = (f"{target}: {what}: {details['unexpected_count']} of {details.get('element_count')} rows "
                   f"do not ({_percent(details.get('unexpected_percent'))})"
                   + (f", e.g. {', '.join(examples)}" if examples else ""))
    else:
        message = f"{target}: {what}: observed {details.get('observed_value')!r}"
        mismatch = (details.get("details") or {}).get("mismatched")
        if mismatch:
            message += f" (mismatch: {mismatch})"
    return {
        "expectation": config.type, "column": target, "kwargs": _jsonable(kwargs), "message": message,
        "unexpected_count": details.get("unexpected_count"), "observed_value": _jsonable(details.get("observed_value")),
        "examples": _jsonable((details.get("partial_unexpected_list") or [])[:5]),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}%"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------------------------
# Suites generated from the landing contract
# ---------------------------------------------------------------------------------------------------------------

def bronze_column_names(contract: FileContract) -> list[str]:
    return [name for name, _ in bronze_columns_sql(contract)]


def escaped_pattern(regex: str) -> str:
    """A regular expression with its non-ASCII characters written as Python escapes (\\u200b): the same pattern
    for `re`, and a suite file that shows what it looks for (an invisible character written as itself is invisible)."""
    return "".join(c if c.isascii() else (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
                   for c in regex)


def landing_suite(contract: FileContract) -> dict[str, Any]:
    """The expectation suite of a landing kind's bronze rows, from the same contract as the ingest's SQL rules."""
    source = {"generated_from": "config/landing.yaml", "kind": contract.name}

    def expectation(kind: str, rule: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {**source, "rule": rule}}

    items = [expectation("expect_table_columns_to_match_set", "the bronze columns of the kind",
                         column_set=bronze_column_names(contract), exact_match=True)]
    for column in contract.columns:
        name = column.name
        first = len(items)
        if column.required:
            items.append(expectation("expect_column_values_to_not_be_null", "required", column=name))
        if column.type in GX_REGEX:
            items.append(expectation("expect_column_values_to_match_regex", f"type {column.type}", column=name,
                                     regex=GX_REGEX[column.type]))
        if column.type == "text":
            # One expectation per type and column (a suite keeps only one): C0 controls and bidi controls in one
            # class, and for a label the invisible characters, U+FFFD and the full-width forms too.
            rule, regex = "no control characters, no bidirectional controls", CONTROL_REGEX[:-1] + BIDI_REGEX[1:]
            if column.label:
                rule, regex = (rule + ", no invisible characters, no U+FFFD, no full-width forms",
                               regex[:-1] + INVISIBLE_REGEX[1:-1] + REPLACEMENT_REGEX + FULLWIDTH_REGEX[1:])
            items.append(expectation("expect_column_values_to_not_match_regex", rule, column=name,
                                     regex=escaped_pattern(regex)))
            if column.label:
                # The look-alikes the ingest refuses by RE2's script classes, spelt out for Python's `re`.
                max_marks = text_limits().label_max_combining_marks
                items.append(expectation(
                    "expect_column_values_to_not_match_regex_list",
                    f"no word mixing Latin with Cyrillic or Greek, no more than {max_marks} combining marks in a row",
                    column=name, regex_list=[escaped_pattern(python_mixed_script_regex()),
                                             escaped_pattern(python_combining_regex(max_marks))]))
        if column.type == "enum":
            items.append(expectation("expect_column_values_to_be_in_set", "values", column=name,
                                     value_set=list(column.values)))
        if column.type == "bool":
            items.append(expectation("expect_column_values_to_be_in_set", "type bool", column=name,
                                     value_set=[True, False]))
        if column.max_length is not None:
            items.append(expectation("expect_column_value_lengths_to_be_between", "max_length", column=name,
                                     max_value=int(column.max_length)))
        if column.type in ("int", "decimal2", "decimal6") and (column.min is not None or column.max is not None):
            bounds = {k: v for k, v in (("min_value", column.min), ("max_value", column.max)) if v is not None}
            items.append(expectation("expect_column_values_to_be_between", "min/max", column=name, **bounds))
        if column.personal:  # its failures report counts, never values (see _describe_failure)
            for item in items[first:]:
                item["meta"]["personal"] = True
    if contract.name == "transactions":
        items.append(expectation("expect_column_values_to_not_be_null", "booking date of booked_at",
                                 column="booking_date"))
    for name in ("source_file", "source_line"):
        items.append(expectation("expect_column_values_to_not_be_null", "lineage", column=name))
    # The key is unique within a landing file (several files of a kind may overlap; conform deduplicates them).
    items.append(expectation("expect_compound_columns_to_be_unique", "key unique within a file",
                             column_list=[*contract.key, "source_file"]))
    return {"name": f"landing_{contract.name}", "expectations": items,
            "meta": {**source, "note": "generated by `segone expectations`; edit config/landing.yaml, not this file"}}


def monotone_columns(schema: TableSchema) -> dict[str, str]:
    """Derived columns a `monotone` check needs: `<column>_previous` = the column on the previous row of the same
    group (e.g. the previous horizon of the same customer), made in SQL before any sampling."""
    spec = schema.checks.get("monotone")
    if not spec:
        return {}
    group, order = ", ".join(spec["group"]), spec["order"]
    return {f"{column}_previous": f"lag({column}) over (partition by {group} order by {order})"
            for column in [*spec.get("increasing", []), *spec.get("decreasing", [])]}


def table_suite(schema: TableSchema, layer: str = "silver") -> dict[str, Any]:
    """The expectation suite of one silver or gold partition, from config/tables.yaml (columns, key and `checks`:
    not_null, values, between, ordered column pairs, monotone along a group)."""
    source = {"generated_from": "config/tables.yaml", "table": schema.name}

    def expectation(kind: str, rule: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {**source, "rule": rule}}

    derived = monotone_columns(schema)
    columns = schema.data_column_names + list(derived)
    items = [expectation("expect_table_columns_to_match_set", "the columns of the table", column_set=columns,
                         exact_match=True)]
    for name in schema.checks.get("not_null", []):
        items.append(expectation("expect_column_values_to_not_be_null", "not null", column=name))
    personal = set(schema.checks.get("personal", []))
    for name, values in schema.checks.get("values", {}).items():
        items.append(expectation("expect_column_values_to_be_in_set", "allowed values", column=name,
                                 value_set=list(values)))
    for name, (low, high) in schema.checks.get("between", {}).items():
        items.append(expectation("expect_column_values_to_be_between", "within bounds", column=name,
                                 min_value=low, max_value=high))
    for low, high in schema.checks.get("ordered", []):
        items.append(expectation("expect_column_pair_values_a_to_be_greater_than_b", f"{low} <= {high}",
                                 column_A=high, column_B=low, or_equal=True,
                                 ignore_row_if="either_value_is_missing"))
    monotone = schema.checks.get("monotone", {})
    for name in monotone.get("increasing", []):
        items.append(expectation("expect_column_pair_values_a_to_be_greater_than_b",
                                 f"{name} does not fall as {monotone['order']} grows", column_A=name,
                                 column_B=f"{name}_previous", or_equal=True, ignore_row_if="either_value_is_missing"))
    for name in monotone.get("decreasing", []):
        items.append(expectation("expect_column_pair_values_a_to_be_greater_than_b",
                                 f"{name} does not rise as {monotone['order']} grows", column_A=f"{name}_previous",
                                 column_B=name, or_equal=True, ignore_row_if="either_value_is_missing"))
    if "bucket" in columns:
        items.append(expectation("expect_column_values_to_be_between", "bucket in range", column="bucket",
                                 min_value=0, max_value=lake.n_buckets() - 1))
    key = [k for k in schema.key if k in columns]
    if len(key) == 1:
        items.append(expectation("expect_column_values_to_be_unique", "key unique in a partition", column=key[0]))
    elif key:
        items.append(expectation("expect_compound_columns_to_be_unique", "key unique in a partition",
                                 column_list=key))
    for item in items:  # failures on a personal column report counts, never values (see _describe_failure)
        if item["kwargs"].get("column") in personal:
            item["meta"]["personal"] = True
    return {"name": f"{layer}_{schema.name}", "expectations": items,
            "meta": {**source, "note": "generated by `segone expectations`; edit config/tables.yaml, not this file"}}


def silver_suite(schema: TableSchema) -> dict[str, Any]:
    return table_suite(schema, "silver")


def write_suites_command(paths: Paths, directory: Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    """`segone expectations`: (re)write the landing suites (config/landing.yaml), the silver and gold suites and
    the data dictionary docs/data_dictionary.md (config/tables.yaml), beside `directory`."""
    from pipelines.data_dictionary import write as write_data_dictionary

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    suites = [landing_suite(c) for c in landing_contract().files.values()]
    suites += [silver_suite(t) for t in tables("silver")]
    suites += [table_suite(t, "gold") for t in tables("gold") if t.checks]
    for suite in suites:
        target = directory / f"{suite['name']}.json"
        text = json.dumps(suite, indent=2, ensure_ascii=False) + "\n"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        written.append(str(target.relative_to(directory.parent)) if directory.parent in target.parents
                       else str(target))
    dictionary = write_data_dictionary(directory.parent)
    return {"suites": written, "data_dictionary": str(dictionary.relative_to(directory.parent))}


# ---------------------------------------------------------------------------------------------------------------
# Gates
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class GateResult:
    name: str
    value: float | int | None
    threshold: Any
    passed: bool
    message: str


@dataclass
class GateReport:
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(g) for g in self.gates]


def _previous_nightly_volumes(paths: Paths, load_date: str, window: int) -> list[dict[str, Any]]:
    """The ingest metrics of up to `window` nightly loads before `load_date`, latest first (history skipped)."""
    if not paths.runs.exists():
        return []
    earlier = []
    for folder in paths.runs.iterdir():
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        metrics_file = folder / "ingest.json"
        if day.isoformat() < load_date and metrics_file.exists():
            earlier.append((day, metrics_file))
    earlier.sort(reverse=True)
    return [json.loads(f.read_text(encoding="utf-8")) for _, f in earlier[:window]]


def evaluate_gates(paths: Paths, load_date: str, ingest_metrics: dict[str, Any]) -> GateReport:
    """The gates of config/segone.yaml on a load's ingest metrics (and, for volumes, earlier nightly loads)."""
    config = settings()["gates"]
    max_share = float(config["max_quarantine_share"])
    gates: list[GateResult] = []
    kinds: dict[str, Any] = ingest_metrics.get("kinds", {})

    for kind, m in sorted(kinds.items()):
        read, bad = int(m.get("rows_read", 0)), int(m.get("rows_quarantined", 0))
        share = bad / read if read else 0.0
        gates.append(GateResult(
            name=f"quarantine_share:{kind}", value=round(share, 6), threshold=max_share, passed=share <= max_share,
            message=f"{kind}: {bad:,} of {read:,} rows quarantined ({share:.2%}; at most {max_share:.2%} allowed)",
        ))
    openbanking = (ingest_metrics.get("openbanking") or {}).get("stats") or {}
    if openbanking.get("records_read"):
        read, bad = int(openbanking["records_read"]), int(openbanking.get("records_rejected", 0))
        share = bad / read
        gates.append(GateResult(
            name="quarantine_share:openbanking", value=round(share, 6), threshold=max_share,
            passed=share <= max_share,
            message=f"open banking: {bad:,} of {read:,} records quarantined ({share:.2%}; at most {max_share:.2%})",
        ))

    for kind in config["required_files"]:
        m = kinds.get(kind, {})
        files, whole = int(m.get("files", 0)), int(m.get("files_quarantined", 0))
        if files == 0:
            message, passed = f"{kind}: required, but no file was delivered", False
        elif whole:
            message, passed = (f"{kind}: required, but {whole} of {files} files could not be read: "
                               f"{', '.join(m.get('files_quarantined_names', []))}"), False
        else:
            message, passed = f"{kind}: {files} file(s) delivered and read", True
        gates.append(GateResult(name=f"required_file:{kind}", value=files - whole, threshold=">= 1, none unreadable",
                                passed=passed, message=message))

    if load_date != HISTORY:
        window = int(config["volume_window"])
        low, high = float(config["volume_min_ratio"]), float(config["volume_max_ratio"])
        previous = _previous_nightly_volumes(paths, load_date, window)
        for kind in config["volume_tables"]:
            today = int(kinds.get(kind, {}).get("rows_accepted", 0))
            history = [int(p.get("kinds", {}).get(kind, {}).get("rows_accepted", 0)) for p in previous]
            name = f"volume:{kind}"
            if len(history) < 3:
                gates.append(GateResult(name=name, value=None, threshold=[low, high], passed=True,
                                        message=f"{kind}: {today:,} rows; only {len(history)} earlier nightly "
                                                f"loads (3 needed), volume not judged"))
                continue
            median = statistics.median(history)
            ratio = today / median if median else (1.0 if today == 0 else float("inf"))
            passed = low <= ratio <= high
            gates.append(GateResult(
                name=name, value=round(ratio, 4) if ratio != float("inf") else None, threshold=[low, high],
                passed=passed,
                message=f"{kind}: {today:,} rows accepted, {ratio:.2f}x the median {median:,.0f} of the last "
                        f"{len(history)} nightly loads (allowed {low}x-{high}x)",
            ))
    return GateReport(gates)


# ---------------------------------------------------------------------------------------------------------------
# The validate stage
# ---------------------------------------------------------------------------------------------------------------

def _sample_key(layer: str, table: str) -> tuple[str, ...]:
    """The key a table's rows are sampled by: the landing contract's key for bronze, tables.yaml's for the rest."""
    if layer == "bronze":
        contract = landing_contract()
        return tuple(contract[table].key) if table in contract.files else ()
    try:
        return tuple(table_schema(layer, table).key)
    except KeyError:
        return ()


def _read_partition(paths: Paths, layer: str, table: str, derived: dict[str, str] | None = None,
                    **keys: str) -> pd.DataFrame | None:
    """A partition as a DataFrame for Great Expectations: all of it, or a sample of about `quality.gx_max_rows`
    rows when it is larger, ordered by all columns.

    The ingest's SQL already checks every row against the same rules and quarantines what breaks them; the suites
    re-check the typed result as an independent second implementation. On millions of rows Great Expectations'
    pandas engine takes tens of seconds per table (measured: 14-23 s for 3.2M postings), so above the cap it checks
    a sample: the cost stays flat with volume. The sample is chosen by a hash of each row's key (the table's key,
    else the whole row): the rows whose hash falls in the first 1/k of its range, k = rows / cap rounded up. So it is
    the same rows on a re-run whatever the physical order of the rows, the number of files or of threads (the lake
    writes bronze and silver without preserving insertion order), and spread over the whole partition.
    """
    folder = lake.partition_path(paths, layer, table, **keys)
    files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if not files:
        return None
    cap = int(settings().get("quality", {}).get("gx_max_rows", 0))
    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    options = "hive_partitioning = false, union_by_name = true"
    if derived:  # window columns over the whole partition first, then a repeatable reservoir sample (one thread)
        con = lake.connect(threads=1)
        try:
            extra = ", ".join(f"{expression} as {name}" for name, expression in derived.items())
            sample = f" using sample reservoir({cap} rows) repeatable (42)" if cap else ""
            ordered = f"(select *, {extra} from read_parquet([{file_list}], {options}) order by all)"
            return con.execute(f"select * from {ordered}{sample}").df()
        finally:
            con.close()
    con = lake.connect()
    try:
        scan = f"read_parquet([{file_list}], {options})"
        rows = int(con.execute(f"select count(*) from {scan}").fetchall()[0][0])
        step = -(-rows // cap) if cap and rows > cap else 1
        sample = ""
        if step > 1:
            columns = {row[0] for row in con.execute(f"describe select * from {scan}").fetchall()}
            key = [c for c in _sample_key(layer, table) if c in columns]
            hashed = f"hash({', '.join(key)})" if key and len(key) == len(_sample_key(layer, table)) else "hash(t)"
            sample = f" where {hashed} < {2**64 // step}::ubigint"
        return con.execute(f"select * from {scan} as t{sample} order by all").df()
    finally:
        con.close()


def validate_day(paths: Paths, load_date: str) -> dict[str, Any]:
    """Stage 1b: the landing suites on every bronze table of the load, then the gates.

    Writes runs/<load_date>/validate.json and raises GateFailed, naming what failed, when anything did.
    """
    started = time.perf_counter()
    ingest_file = paths.runs / load_date / "ingest.json"
    if not ingest_file.exists():
        raise SegoneError(f"no ingest metrics for {load_date} ({ingest_file}): run the ingest first")
    ingest_metrics = json.loads(ingest_file.read_text(encoding="utf-8"))
    keep = clear_results(paths, load_date, "validate")
    suites: dict[str, Any] = {}
    tables = sorted(p.name for p in paths.layer("bronze").iterdir()) if paths.layer("bronze").exists() else []
    for table in tables:
        if not (EXPECTATIONS_DIR / f"landing_{table}.json").exists():
            continue
        frame = _read_partition(paths, "bronze", table, load_date=load_date)
        if frame is None:
            continue
        suites[table] = run_suite(frame, f"landing_{table}", keep=keep, asset=f"bronze.{table}",
                                  load=load_date).to_dict()
    build_gate_site(keep)  # the data docs of these suites, passed or not (pipelines/data_docs.py)
    report = evaluate_gates(paths, load_date, ingest_metrics)
    failed_suites = {t: s for t, s in suites.items() if not s["success"]}
    metrics = {
        "load_date": load_date,
        "suites": suites,
        "gates": report.to_list(),
        "passed": report.passed and not failed_suites,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_run_metrics(paths, load_date, "validate", metrics)
    for gate in report.gates:
        (log.info if gate.passed else log.error)("gate %s %s: %s", gate.name, "passed" if gate.passed else "FAILED",
                                                 gate.message)
    if not metrics["passed"]:
        problems = [f"gate {g.name}: {g.message}" for g in report.failed]
        problems += [f"suite landing_{t}: " + "; ".join(f["message"] for f in s["failures"])
                     for t, s in failed_suites.items()]
        raise GateFailed(f"load {load_date} failed validation: " + " | ".join(problems))
    return metrics


def validate_gold(paths: Paths, day: date, table_names: list[str], gate: str | None = None) -> dict[str, Any]:
    """The gold suites (expectations/gold_<table>.json) on D's partitions of the named tables; raises GateFailed
    when one fails, so nothing is published from a bad forecast. `gate`: the verdict these suites feed (e.g.
    validate_forecast), which names the folder of their kept results (runs/D/gx/<gate>/)."""
    started = time.perf_counter()
    name = "validate_gold_" + "_".join(table_names)  # its run metrics
    keep = clear_results(paths, day.isoformat(), gate or name)
    suites: dict[str, Any] = {}
    schemas = {t.name: t for t in tables("gold")}
    for table in table_names:
        frame = _read_partition(paths, "gold", table, derived=monotone_columns(schemas[table]),
                                as_of=day.isoformat())
        if frame is None:
            raise GateFailed(f"gold {table} has no partition for {day}: the stage that writes it did not run")
        suites[table] = run_suite(frame, f"gold_{table}", keep=keep, asset=f"gold.{table}",
                                  load=day.isoformat()).to_dict()
    build_gate_site(keep)
    failed = {t: s for t, s in suites.items() if not s["success"]}
    metrics = {"as_of": day.isoformat(), "suites": suites, "passed": not failed,
               "seconds": round(time.perf_counter() - started, 3)}
    write_run_metrics(paths, day.isoformat(), name, metrics)
    if failed:
        raise GateFailed(f"gold of {day} failed validation: " + " | ".join(
            f"suite gold_{t}: " + "; ".join(f["message"] for f in s["failures"]) for t, s in failed.items()))
    return metrics


def validate_silver(paths: Paths, load_date: str, day: date) -> dict[str, Any]:
    """Stage 2b: every expectations/silver_<table>.json suite on the silver partition this load wrote
    (`load_date=<load_date>` or, for snapshots, `as_of=<day>`); raises GateFailed when one fails."""
    started = time.perf_counter()
    keep = clear_results(paths, load_date, "validate_silver")
    suites: dict[str, Any] = {}
    for suite_file in sorted(EXPECTATIONS_DIR.glob("silver_*.json")):
        table = suite_file.stem.removeprefix("silver_")
        frame = _read_partition(paths, "silver", table, load_date=load_date)
        if frame is None:
            frame = _read_partition(paths, "silver", table, as_of=day.isoformat())
        if frame is None:
            continue
        suites[table] = run_suite(frame, suite_file.stem, keep=keep, asset=f"silver.{table}",
                                  load=load_date).to_dict()
    build_gate_site(keep)
    failed = {t: s for t, s in suites.items() if not s["success"]}
    metrics = {"load_date": load_date, "as_of": day.isoformat(), "suites": suites, "passed": not failed,
               "seconds": round(time.perf_counter() - started, 3)}
    if failed:
        write_run_metrics(paths, load_date, "validate_silver", metrics)
        raise GateFailed(f"silver of {load_date} failed validation: " + " | ".join(
            f"suite silver_{t}: " + "; ".join(f["message"] for f in s["failures"]) for t, s in failed.items()))
    return metrics
