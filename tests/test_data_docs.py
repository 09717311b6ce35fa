"""Great Expectations data docs of each published night (issue 15, item 8): the gates keep every suite's result
(restricted and personal values withheld), publish renders them with Great Expectations' site builder into
reports/D/data_docs/ at the same commit as the report, and a re-run that voids a gate voids its kept results."""
from __future__ import annotations

import json
import os
import re
import shutil
from datetime import date

import pandas as pd
import pytest

from pipelines import data_docs, publish, stages
from pipelines.quality import monotone_columns, run_suite
from pipelines.schemas import table_schema
from tests.night_builder import pass_gates, write_night

D = date(2026, 11, 20)
SECRET = "SECRET-VULNERABILITY"


def customers_frame() -> pd.DataFrame:
    """silver customers with a null id (a failure whose example may be shown) and a vulnerability value outside
    the allowed set (a failure on a restricted column: its value must never be kept)."""
    return pd.DataFrame({
        "customer_id": ["C1", None, "C3"], "birth_year": [1950, 1960, 1970], "region": ["north", "south", "east"],
        "customer_since": [date(2020, 1, 1)] * 3, "known_vulnerability": ["health", SECRET, None],
        "bucket": [1, 2, 3], "updated_load_date": ["history"] * 3})


def keep_night(paths, day: date = D) -> None:
    """Results of two gates of night D, as the validating stages keep them."""
    load = day.isoformat()
    run_suite(customers_frame(), "silver_customers", keep=data_docs.results_folder(paths, load, "validate_silver"),
              asset="silver.customers", load=load)
    forecast = pd.DataFrame({"customer_id": ["C1"], "horizon_days": [30], "p_shortfall": [0.4],
                             "min_balance_p10": [-10.0], "min_balance_p50": [5.0], "min_balance_p90": [20.0],
                             "expected_shortfall_date": [None], "safe_to_save": [0.0], "confidence": ["high"],
                             "drivers": ["d"], "model_version": ["m1"]})
    for column in monotone_columns(table_schema("gold", "cash_forecast")):
        forecast[column] = None
    kept = run_suite(forecast, "gold_cash_forecast",
                     keep=data_docs.results_folder(paths, load, "validate_forecast"),
                     asset="gold.cash_forecast", load=load)
    assert kept.success, kept.summary()
    for gate in ("validate_silver", "validate_forecast"):  # what the validating stages do next
        data_docs.build_gate_site(data_docs.results_folder(paths, load, gate))


def test_a_kept_result_withholds_restricted_and_personal_values(paths):
    keep_night(paths)
    kept = data_docs.results_folder(paths, D.isoformat(), "validate_silver") / "silver_customers.json"
    text = kept.read_text(encoding="utf-8")
    assert SECRET not in text
    result = json.loads(text)
    assert result["success"] is False and result["meta"]["segone"]["rows_validated"] == 3
    assert result["meta"]["active_batch_definition"]["data_asset_name"] == "silver.customers"
    by_column = {r["expectation_config"]["kwargs"].get("column"): r for r in result["results"]
                 if r["expectation_config"]["type"] in ("expect_column_values_to_be_in_set",
                                                        "expect_column_values_to_not_be_null")}
    vulnerability = by_column["known_vulnerability"]
    assert vulnerability["success"] is False and vulnerability["result"]["unexpected_count"] == 1
    assert "partial_unexpected_list" not in vulnerability["result"] and "withheld" in vulnerability["meta"]["segone"]
    # a failure on an ordinary column keeps its examples (the null customer id)
    assert by_column["customer_id"]["result"]["partial_unexpected_list"] == [None]
    # the messages' text is personal: its failures keep counts only
    messages = pd.DataFrame({"message_id": ["m1"], "customer_id": ["C1"], "received_at": [pd.Timestamp("2026-11-20",
                             tz="UTC")], "channel": ["fax"], "text": [None], "bucket": [1], "load_date": ["x"]})
    folder = data_docs.results_folder(paths, D.isoformat(), "validate_silver")
    run_suite(messages.drop(columns=["load_date"]), "silver_messages", keep=folder, asset="silver.messages",
              load=D.isoformat())
    kept_messages = json.loads((folder / "silver_messages.json").read_text(encoding="utf-8"))
    text_results = [r for r in kept_messages["results"] if r["expectation_config"]["kwargs"].get("column") == "text"]
    assert text_results and all("partial_unexpected_list" not in r["result"] for r in text_results)


def test_each_gate_renders_its_site_and_the_night_assembles_them_with_shared_static_files(paths, tmp_path):
    keep_night(paths)
    runs = paths.runs / D.isoformat()
    assert [p.name for p in data_docs.kept_results(runs)] == ["gold_cash_forecast.json", "silver_customers.json"]
    gate_site = data_docs.results_folder(paths, D.isoformat(), "validate_silver") / "site"
    page = next((gate_site / "validations" / "silver_customers").rglob("*.html")).read_text(encoding="utf-8")
    assert "known_vulnerability" in page and SECRET not in page
    assert "silver.customers" in (gate_site / "index.html").read_text(encoding="utf-8")
    nights = [tmp_path / "night-1", tmp_path / "night-2"]
    for staged in nights:
        built = data_docs.stage(paths, runs, D, staged)
        assert built == {"suites": 2, "failed": 1, "rendered_here": []}  # the gates' sites, linked
    index = (nights[0] / "index.html").read_text(encoding="utf-8")
    assert "1 FAILED" in index and "silver_customers" in index and "gold.cash_forecast" in index
    for href in re.findall(r"href='([^']+)'", index):
        assert (nights[0] / href).is_file(), href
    # the static files of both nights are one copy in the store
    static = sorted(p for p in nights[0].rglob("static/**/*") if p.is_file())
    assert static
    for file in static:
        twin = nights[1] / file.relative_to(nights[0])
        assert os.stat(file).st_ino == os.stat(twin).st_ino, file
    # a site older than its results (the results changed after it was rendered) is rendered again at publish
    result = data_docs.results_folder(paths, D.isoformat(), "validate_silver") / "silver_customers.json"
    result.write_text(result.read_text(encoding="utf-8").replace('"rows_validated": 3', '"rows_validated": 4'))
    built = data_docs.stage(paths, runs, D, tmp_path / "night-3")
    assert built["rendered_here"] == ["validate_silver"]
    assert ">4<" in (tmp_path / "night-3" / "index.html").read_text(encoding="utf-8")


def test_publish_puts_the_nights_data_docs_beside_its_report(paths):
    write_night(paths, D, "v1")
    pass_gates(paths, D)
    keep_night(paths)
    metrics = stages.publish(paths, D)
    docs = data_docs.folder(paths, D)
    assert (docs / "index.html").exists() and "data_docs" in metrics["step_seconds"]
    published_copy = publish.published_runs(paths) / D.isoformat() / "gx" / "validate_silver" / "silver_customers.json"
    assert published_copy.exists()  # built from the published run metrics
    link = data_docs.report_link(publish.current_paths(paths), D)
    assert link == {"href": "data_docs/index.html", "suites": 2, "failed": ["validate_silver: silver_customers"]}
    assert (paths.reports / D.isoformat() / link["href"]).exists()
    assert not list((paths.reports / D.isoformat()).glob(".*"))  # nothing staged is left behind
    # the night's report links to them (relative to reports/D/index.html) and says what failed
    report = (paths.reports / D.isoformat() / "index.html").read_text(encoding="utf-8")
    hrefs = [h for h in re.findall(r'<a href="([^"]+)">', report) if not h.startswith("#")]  # not the contents
    assert hrefs == ["data_docs/index.html"] and (paths.reports / D.isoformat() / hrefs[0]).is_file()
    assert "2 expectation suites ran" in report and "1 failed (validate_silver: silver_customers)" in report
    # `segone report` builds them again from the published run metrics, even after the live ones are gone
    stages.void_later_results(paths, D.isoformat(), "ingest")
    assert not (paths.runs / D.isoformat() / "gx" / "validate_silver").exists()
    before = (docs / "index.html").stat().st_ino
    stages.report(paths, D)
    assert (docs / "index.html").exists() and (docs / "index.html").stat().st_ino != before


def test_a_rerun_voids_the_kept_results_of_the_gates_it_makes_stale(paths):
    keep_night(paths)
    stages.void_later_results(paths, D.isoformat(), "forecast")  # the forecast re-runs: its gold gate is stale
    kept = [p.parent.name for p in data_docs.kept_results(paths.runs / D.isoformat())]
    assert kept == ["validate_silver"]
    stages.void_later_results(paths, D.isoformat(), "conform")
    assert data_docs.kept_results(paths.runs / D.isoformat()) == []


def test_a_site_that_cannot_be_rendered_leaves_a_page_that_says_so_and_the_night_is_published(paths, monkeypatch):
    write_night(paths, D, "v1")
    pass_gates(paths, D)
    keep_night(paths)

    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(data_docs, "build_site", broken)
    data_docs.build_gate_site(data_docs.results_folder(paths, D.isoformat(), "validate_silver"))
    page = data_docs.results_folder(paths, D.isoformat(), "validate_silver") / "site" / "index.html"
    assert "renderer exploded" in page.read_text(encoding="utf-8")  # the gate's own site says so
    for gate in ("validate_silver", "validate_forecast"):
        shutil.rmtree(data_docs.results_folder(paths, D.isoformat(), gate) / "site")
    stages.publish(paths, D)
    assert D.isoformat() in publish.published_loads(paths)
    docs = data_docs.folder(paths, D)
    assert "silver_customers" in (docs / "index.html").read_text(encoding="utf-8")  # the night's index stands
    page = (docs / "validate_silver" / "index.html").read_text(encoding="utf-8")
    assert "could not be built" in page and "renderer exploded" in page


@pytest.mark.parametrize("suite, expected", [("landing_customers", {"birth_year", "known_vulnerability"}),
                                             ("gold_decision_log", {"reason"}), ("silver_messages", {"text"}),
                                             ("landing_transactions", set()), ("gold_unknown", set())])
def test_the_columns_whose_values_are_never_kept(suite, expected):
    assert data_docs.sensitive_columns(suite) == expected


def test_the_history_loads_data_docs_go_with_the_report_of_its_last_day(paths):
    last_day = date(2026, 11, 19)
    write_night(paths, last_day, "h", tables=("customers",))
    pass_gates(paths, "history", publish.HISTORY_GATES)
    folder = data_docs.results_folder(paths, "history", "validate_silver")
    run_suite(customers_frame(), "silver_customers", keep=folder, asset="silver.customers", load="history")
    data_docs.build_gate_site(folder)
    (paths.runs / "history" / "conform.json").write_text(json.dumps({"as_of": last_day.isoformat()}))
    publish.publish_history(paths, last_day)
    index = (data_docs.folder(paths, last_day) / "index.html").read_text(encoding="utf-8")
    assert "history load of 2026-11-19" in index and "silver_customers" in index
    assert data_docs.report_link(publish.current_paths(paths), last_day)["suites"] == 1
