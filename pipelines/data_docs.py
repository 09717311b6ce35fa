"""Great Expectations data docs for each published load: every suite the night's gates ran (landing, silver, gold),
each expectation with its result, rendered by Great Expectations' own site builder (docs/outputs.md, "Data docs").

- Each validating stage keeps its suites' full validation results (`pipelines.quality.run_suite(..., keep=)`) as
  JSON under `runs/<load>/gx/<gate>/<suite>.json`, values of restricted or personal columns withheld (counts stay),
  and renders them into `runs/<load>/gx/<gate>/site/` (`build_gate_site`) where Great Expectations is already
  imported: a failed gate's site is there too, for the operator. A stage that rewrites data voids the results and
  sites of the gates downstream with their verdicts (`stages.void_later_results`), and a gate clears its own before
  it runs, so the folder only ever holds the results of the data as it now is.
- Publish copies runs/<load>/ into the published run metrics (hard links) and assembles the night's data docs from
  that copy into `reports/<D>/data_docs/` (`stage`): each gate's site linked in, and an index of every suite of the
  night; staged beside it and swapped in at the commit with the report that links to it, so the docs describe
  exactly the verdicts that let the night be published. Publish does not import Great Expectations unless a gate's
  site is missing or older than its results (then it renders it). `segone report --date D` assembles them again.
- The sites' static files (fonts, images: about 4 MB, the same every night) are hard links to one copy of each file
  under `reports/_data_docs_static/` (named by content), so a year of nights does not hold a year of copies.
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import shutil
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipelines.config import Paths

log = logging.getLogger(__name__)

RESULTS = "gx"          # runs/<load>/gx/<gate>/<suite>.json
FOLDER = "data_docs"    # reports/<D>/data_docs/index.html
SITE = "segone"
STATIC_STORE = "_data_docs_static"  # reports/_data_docs_static/<sha256>: one copy of each static file of the sites
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
    return summary(runs_of_load(paths, day))


def runs_of_load(paths: Paths, day: date) -> Path:
    """The run metrics of the load whose data docs go with the report of D: the night D's, or the history's when
    D is the last day the history covers and no night D ran."""
    night = paths.runs / day.isoformat()
    if kept_results(night):
        return night
    history = paths.runs / "history"
    conform = history / "conform.json"
    if conform.is_file() and json.loads(conform.read_text(encoding="utf-8")).get("as_of") == day.isoformat():
        return history
    return night


def folder(paths: Paths, day: date) -> Path:
    return paths.reports / day.isoformat() / FOLDER


# --- rendering --------------------------------------------------------------------------------------------------

def build_site(results: list[Path], target: Path) -> dict[str, Any]:
    """Render kept results into `target` (a new folder) with Great Expectations' site builder: its index of every
    validation, a page per validation and per suite."""
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
    suites: set[str] = set()
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
            context.suites.add(suite)
            suites.add(name)
        meta = data.get("meta", {}).get("segone", {})
        run_time = meta.get("validated_at") or datetime.now(timezone.utc).isoformat()
        identifier = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=name),
            run_id=RunIdentifier(run_name=str(meta.get("load") or "load"),
                                 run_time=datetime.fromisoformat(run_time.replace("Z", "+00:00"))),
            batch_identifier=meta.get("asset") or name)
        context.validation_results_store.set(identifier, result)
    context.build_data_docs(site_names=[SITE])
    (target / MANIFEST).write_text(json.dumps(_fingerprint(results), indent=1), encoding="utf-8")
    return {"suites": len(suites), "validations": len(results), "great_expectations": gx.__version__}


MANIFEST = "segone-results.json"  # in a site: the results it was rendered from (name -> sha256)


def _fingerprint(results: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in results}


def _site_is_current(gate: Path) -> bool:
    manifest = gate / "site" / MANIFEST
    if not (gate / "site" / "index.html").is_file() or not manifest.is_file():
        return False
    return json.loads(manifest.read_text(encoding="utf-8")) == _fingerprint(sorted(gate.glob("*.json")))


def build_gate_site(gate: Path) -> dict[str, Any] | None:
    """Render one gate's kept results into `gate`/site/ (swapped in whole). Called by the validating stages after
    their suites ran, passed or not: a rendering error is logged and leaves a page that says so, never fails the
    gate."""
    results = sorted(gate.glob("*.json"))
    if not results:
        return None
    tmp = gate / f".site.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        built = build_site(results, tmp)
    except Exception as error:  # noqa: BLE001 - the docs must never change a gate's verdict
        log.exception("the data docs of %s could not be rendered", gate)
        shutil.rmtree(tmp, ignore_errors=True)
        failure_page(tmp, f"{type(error).__name__}: {error}")
        built = {"error": f"{type(error).__name__}: {error}"}
    from pipelines.lake import swap_in

    swap_in(tmp, gate / "site")
    _share_static(gate / "site" / "static", gate.parents[2] / STATIC_STORE)  # runs/_data_docs_static
    return built


def _share_static(static: Path, store: Path) -> None:
    """Replace each static file of a site by a hard link to the file of the same content in `store` (a content-
    addressed folder: <sha256>), added there when missing; a file that cannot be linked keeps its own copy."""
    if not static.is_dir():
        return
    for folder, _, names in os.walk(static):
        for name in names:
            path = Path(folder) / name
            try:
                shared = store / hashlib.sha256(path.read_bytes()).hexdigest()
                if not shared.exists():
                    store.mkdir(parents=True, exist_ok=True)
                    os.link(path, shared)
                elif not os.path.samefile(shared, path):
                    tmp = path.with_name(f".{name}.link")
                    os.link(shared, tmp)
                    os.replace(tmp, path)
            except OSError:  # another file system, or no hard links
                continue


def failure_page(target: Path, error: str) -> None:
    """The data docs could not be built: an index page that says so (a link to them never dangles)."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Data docs</title><h1>Data docs could not be built</h1>"
        f"<p>{html.escape(error)}</p><p>The gates' verdicts are in the nightly report and in the run metrics "
        "(runs/&lt;load&gt;/validate*.json).</p>", encoding="utf-8")


# --- the night's data docs, assembled at publish ------------------------------------------------------------------

def _link_tree(src: Path, dst: Path) -> None:
    for folder, _, names in os.walk(src):
        target = dst / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                os.link(Path(folder) / name, target / name)
            except OSError:
                shutil.copy2(Path(folder) / name, target / name)


def _index(day: date, load: str, rows: list[dict[str, Any]]) -> str:
    """Our index of the night's data docs: every suite of every gate, its verdict and its page."""
    failed = sum(1 for r in rows if not r["success"])
    head = (f"{len(rows)} suites validated by the gates of the {'history load' if load == 'history' else 'night'}"
            f" of {day.isoformat()}: " + (f"{failed} FAILED." if failed else "all passed."))
    body = []
    for r in rows:
        status = "passed" if r["success"] else "FAILED"
        link = f"<a href='{html.escape(r['page'])}'>{html.escape(r['suite'])}</a>" if r["page"] else \
            html.escape(r["suite"])
        body.append(f"<tr class='{status.lower()}'><td>{html.escape(r['gate'])}</td><td>{link}</td>"
                    f"<td>{html.escape(r['asset'])}</td><td class='n'>{r['rows']:,}</td>"
                    f"<td class='n'>{r['successful']:,} of {r['evaluated']:,}</td><td>{status}</td></tr>")
    gates = sorted({r["gate"] for r in rows})
    sites = " · ".join(f"<a href='{quote(g)}/index.html'>{html.escape(g)}</a>" for g in gates)
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Data docs: {day.isoformat()}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}td.n{text-align:right}"
            "tr.failed td{background:#fde8e8}</style></head><body>"
            f"<h1>Data quality of the {'history load' if load == 'history' else 'night'} of {day.isoformat()}</h1>"
            f"<p>{html.escape(head)} Rendered by Great Expectations from the results the gates kept (values of "
            "restricted or personal columns withheld; a large partition is validated on a systematic sample: "
            "rows counts what was checked).</p>"
            f"<p>Great Expectations' own index per gate: {sites}</p>"
            "<table><thead><tr><th>gate</th><th>suite</th><th>table</th><th>rows</th><th>expectations met</th>"
            f"<th>verdict</th></tr></thead><tbody>{''.join(body)}</tbody></table></body></html>\n")


def stage(paths: Paths, runs_of_load: Path, day: date, staged: Path) -> dict[str, Any] | None:
    """Assemble the data docs of a load from its (published) run metrics into `staged`, for publish to swap in at
    `folder(paths, day)`: each gate's site linked in (rendered here only when missing or stale) and the night's
    index. None when no result was kept (nothing to show)."""
    results = kept_results(runs_of_load)
    if not results:
        return None
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    rows, rendered = [], []
    for gate in sorted({p.parent for p in results}):
        target = staged / gate.name
        if _site_is_current(gate):
            _link_tree(gate / "site", target)
        else:  # e.g. results kept by an older version, or a stage killed before it rendered
            rendered.append(gate.name)
            try:
                build_site(sorted(gate.glob("*.json")), target)
            except Exception as error:  # noqa: BLE001 - a rendering bug must not withhold the night's export
                log.exception("the data docs of %s could not be rendered", gate)
                shutil.rmtree(target, ignore_errors=True)
                failure_page(target, f"{type(error).__name__}: {error}")
        (target / MANIFEST).unlink(missing_ok=True)
        _share_static(target / "static", paths.reports / STATIC_STORE)
        for file in sorted(gate.glob("*.json")):
            data = json.loads(file.read_text(encoding="utf-8"))
            suite = data.get("suite_name") or file.stem
            pages = sorted((target / "validations" / suite).rglob("*.html"))
            stats = data.get("statistics") or {}
            meta = (data.get("meta") or {}).get("segone") or {}
            rows.append({"gate": gate.name, "suite": suite, "asset": str(meta.get("asset") or suite),
                         "rows": int(meta.get("rows_validated") or 0), "success": bool(data.get("success")),
                         "evaluated": int(stats.get("evaluated_expectations") or 0),
                         "successful": int(stats.get("successful_expectations") or 0),
                         "page": quote(str(pages[0].relative_to(staged))) if pages else ""})
    (staged / "index.html").write_text(_index(day, runs_of_load.name, rows), encoding="utf-8")
    for path in [staged, *staged.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o755)
    return {"suites": len(rows), "failed": sum(1 for r in rows if not r["success"]), "rendered_here": rendered}
