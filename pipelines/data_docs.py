"""Great Expectations data docs for each published load: every suite the night's gates ran (landing, silver, gold),
each expectation with its result, rendered by Great Expectations' own site builder (docs/outputs.md, "Data docs").

- The validating stages keep each suite's full validation result (`pipelines.quality.run_suite(..., keep=)`) as
  JSON under `runs/<load>/gx/<gate>/<suite>.json`, values of restricted or personal columns withheld (counts stay).
  A stage that rewrites data voids the results of the gates downstream with their verdicts
  (`stages.void_later_results`), so the folder only ever holds the results of the data as it now is.
- Publish copies runs/<load>/ into the published run metrics and builds the site from that copy into
  `reports/<D>/data_docs/` (staged beside it and swapped in at the commit, with the report that links to it): the
  docs describe exactly the verdicts that let the night be published. `segone report --date D` builds them again.
- Great Expectations is imported only inside `build_site` (seconds to import; never at DAG-parse time).
- The site's static files (fonts, images: about 4 MB, the same every night) are hard links to one copy per Great
  Expectations version under `reports/_data_docs_static/`, so a year of nights does not hold a year of copies.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.config import Paths

log = logging.getLogger(__name__)

RESULTS = "gx"          # runs/<load>/gx/<gate>/<suite>.json
FOLDER = "data_docs"    # reports/<D>/data_docs/index.html
SITE = "segone"
# Result entries that hold values of the validated rows; withheld for restricted or personal columns.
VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
              "unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows",
              "observed_value", "details")


def results_folder(paths: Paths, load: str, gate: str) -> Path:
    return paths.runs / load / RESULTS / gate


def clear_results(paths: Paths, load: str, gate: str) -> Path:
    """Remove a gate's kept results before it runs again (a suite that does not run this time leaves none)."""
    folder = results_folder(paths, load, gate)
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def sensitive_columns(suite_name: str) -> set[str]:
    """Columns whose values a kept result never shows: the restricted columns of the suite's table
    (config/tables.yaml; for a landing suite, those of the silver table of the same name) and its personal ones."""
    from pipelines.schemas import table_schema

    layer, _, table = suite_name.partition("_")
    layer = "silver" if layer == "landing" else layer
    try:
        schema = table_schema(layer, table)
    except KeyError:
        return set()
    return set(schema.restricted_columns) | set(schema.checks.get("personal", []))


def _columns_of(kwargs: dict[str, Any]) -> set[str]:
    names = {kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B")}
    names |= set(kwargs.get("column_list") or [])
    return {n for n in names if n}


def redact(result: dict[str, Any], sensitive: set[str]) -> dict[str, Any]:
    """The validation result (JSON) without any value of a sensitive column: those expectations keep their counts
    and percentages, their value lists are dropped (and a note says so)."""
    for item in result.get("results") or []:
        config = item.get("expectation_config") or {}
        personal = bool((config.get("meta") or {}).get("personal"))
        if not (personal or _columns_of(config.get("kwargs") or {}) & sensitive):
            continue
        values = item.get("result") or {}
        withheld = [k for k in VALUE_KEYS if k in values]
        for key in withheld:
            values.pop(key)
        if withheld:
            item.setdefault("meta", {})["segone"] = ("values withheld: a restricted or personal column "
                                                     "(config/tables.yaml); counts only")
    return result


def keep_result(folder: Path, suite_name: str, validation: Any, rows: int, asset: str, load: str) -> Path:
    """Write one suite's validation result (a Great Expectations ExpectationSuiteValidationResult) as JSON, redacted,
    with where it comes from; atomically."""
    data = json.loads(json.dumps(validation.to_json_dict(), default=str))
    data = redact(data, sensitive_columns(suite_name))
    meta = data.setdefault("meta", {})
    meta.setdefault("active_batch_definition", {})["data_asset_name"] = asset
    meta["segone"] = {"load": load, "asset": asset, "rows_validated": int(rows),
                      "validated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{suite_name}.json"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, target)
    return target


def kept_results(runs_of_load: Path) -> list[Path]:
    """Every kept result of a load (`runs/<load>/`, or its published copy), gate by gate."""
    root = runs_of_load / RESULTS
    return sorted(root.glob("*/*.json")) if root.is_dir() else []


def summary(runs_of_load: Path) -> dict[str, Any] | None:
    """What the data docs of a load show, for a link from the report: None when no result was kept."""
    files = kept_results(runs_of_load)
    if not files:
        return None
    failed = []
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not data.get("success"):
            failed.append(f"{file.parent.name}: {data.get('suite_name') or file.stem}")
    return {"href": f"{FOLDER}/index.html", "suites": len(files), "failed": failed}


def report_link(paths: Paths, day: date) -> dict[str, Any] | None:
    """The hook for the nightly report of D: where its data docs are (relative to reports/D/index.html) and what
    they hold (`summary`), or None when no suite result was kept for D (nor for the history load, when D is the
    history's last day). `paths` is what the report is built from (a published generation: its run metrics are
    the published ones)."""
    found = summary(paths.runs / day.isoformat())
    if found is None:
        history = paths.runs / "history"
        conform = history / "conform.json"
        if conform.is_file() and json.loads(conform.read_text(encoding="utf-8")).get("as_of") == day.isoformat():
            found = summary(history)
    return found


def folder(paths: Paths, day: date) -> Path:
    return paths.reports / day.isoformat() / FOLDER


# --- building the site ------------------------------------------------------------------------------------------

def build_site(results: list[Path], target: Path, static_store: Path | None = None) -> dict[str, Any]:
    """Render the data docs of kept results into `target` (a new folder): Great Expectations' site builder, an
    index of every validation and a page per validation and per suite."""
    from pipelines.logs import quiet_great_expectations

    quiet_great_expectations()
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (ExpectationSuiteIdentifier,
                                                                            ValidationResultIdentifier)
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    quiet_great_expectations()
    context = gx.get_context(mode="ephemeral")
    context.config.analytics_enabled = False
    context.add_data_docs_site(SITE, {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(target)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    suites: dict[str, Any] = {}
    for file in results:
        data = json.loads(file.read_text(encoding="utf-8"))
        name = data.get("suite_name") or file.stem
        result = ExpectationSuiteValidationResult(**{k: v for k, v in data.items() if k != "id"})
        if name not in suites:  # the suite as it was run: the expectations of the result
            suite = gx.ExpectationSuite(name=name)
            for item in data.get("results") or []:
                config = item["expectation_config"]
                kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
                suite.add_expectation_configuration(ExpectationConfiguration(
                    type=config["type"], kwargs=kwargs, meta=config.get("meta") or {}))
            suites[name] = context.suites.add(suite)
        meta = data.get("meta", {}).get("segone", {})
        run_time = meta.get("validated_at") or datetime.now(timezone.utc).isoformat()
        identifier = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=name),
            run_id=RunIdentifier(run_name=f"{meta.get('load', '')} {file.parent.name}".strip(),
                                 run_time=datetime.fromisoformat(run_time.replace("Z", "+00:00"))),
            batch_identifier=meta.get("asset") or name)
        context.validation_results_store.set(identifier, result)
    context.build_data_docs(site_names=[SITE])
    if static_store is not None:
        _share_static(target / "static", static_store / f"great_expectations-{gx.__version__}")
    return {"suites": len(suites), "validations": len(results)}


def _share_static(static: Path, store: Path) -> None:
    """Replace each static file of a site by a hard link to the same file in `store` (added there when missing)."""
    if not static.is_dir():
        return
    for folder, _, names in os.walk(static):
        for name in names:
            path = Path(folder) / name
            shared = store / path.relative_to(static)
            try:
                if not shared.exists():
                    shared.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, shared)
                elif shared.stat().st_size == path.stat().st_size and shared.read_bytes() == path.read_bytes():
                    tmp = path.with_name(f".{name}.link")
                    os.link(shared, tmp)
                    os.replace(tmp, path)
            except OSError:  # another file system, or no hard links: keep the site's own copy
                continue


def failure_page(target: Path, error: str) -> None:
    """The data docs could not be built: an index page that says so (the report's link never dangles)."""
    import html

    target.mkdir(parents=True, exist_ok=True)
    (target / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Data docs</title><h1>Data docs could not be built</h1>"
        f"<p>{html.escape(error)}</p><p>The gates' verdicts are in the nightly report and in the run metrics "
        "(runs/&lt;load&gt;/validate*.json).</p>", encoding="utf-8")


def stage(paths: Paths, runs_of_load: Path, day: date, staged: Path) -> dict[str, Any] | None:
    """Build the data docs of a load from its (published) run metrics into `staged`, for publish to swap in at
    `folder(paths, day)`. None when no result was kept (nothing to show); a build that fails leaves a page that
    says why rather than failing the publish."""
    results = kept_results(runs_of_load)
    if not results:
        return None
    shutil.rmtree(staged, ignore_errors=True)
    try:
        built = build_site(results, staged, paths.reports / "_data_docs_static")
    except Exception as error:  # noqa: BLE001 - a rendering bug must not withhold the night's export
        log.exception("the data docs of %s could not be built", day)
        shutil.rmtree(staged, ignore_errors=True)
        failure_page(staged, f"{type(error).__name__}: {error}")
        built = {"error": f"{type(error).__name__}: {error}"}
    os.chmod(staged, 0o755)
    return built
