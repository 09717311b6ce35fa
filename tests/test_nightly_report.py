"""The nightly report on a tiny hand-made lake (tests/report_lake.py): written and self-contained; the headline
against last night; the banner from the current attempt's run metrics only; the compliance checks computed from
the tables (passing, and catching planted violations); fairness with intervals and the rule behind a gap; one
number for the control group; every section still there when its input is absent."""
from __future__ import annotations

import html
import os
import re
import time

import pandas as pd
import pytest

from pipelines import lake, nightly_report
from pipelines.config import Paths
from pipelines.night_status import night_status
from pipelines.runs import write_run_metrics
from tests import report_lake
from tests.report_lake import CONTROL, DAY, PREVIOUS
from pipelines.stages import GATES

N = len(GATES)  # every gate of the night

D = DAY.isoformat()


def text_of(page: str) -> str:
    page = re.sub(r"<img[^>]*>", " ", page)
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(re.sub(r"\s+", " ", page))


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for src in re.findall(r'src="([^"]*)"', page):
        assert src.startswith("data:image/png;base64,")


def assert_no_raw_missing(text: str) -> None:
    for marker in ("<NA>", "NaN", " nan ", "None", "NaT", "could not be built"):
        assert marker not in text, marker


@pytest.fixture
def home(tmp_path, monkeypatch) -> Paths:
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    return Paths(tmp_path)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Paths, str]:
    home = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(home))
        paths = Paths(home)
        report_lake.build(paths)
        target = nightly_report.build_nightly_report(paths, DAY)
        assert target == home / "reports" / D / "index.html"
        return paths, target.read_text(encoding="utf-8")


def section_text(page: str, heading: str) -> str:
    """The text of the h2 section whose heading starts with `heading` (up to the next h2)."""
    parts = re.split(r"(?=<h2[ >])", page)
    found = [p for p in parts if re.match(r"<h2[^>]*>" + re.escape(html.escape(heading, quote=False)), p)]
    assert len(found) == 1, heading
    return text_of(found[0])


def test_report_is_written_self_contained_and_complete(full_report) -> None:
    _, page = full_report
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') >= 6
    headings = [html.unescape(h) for h in re.findall(r"<h2[^>]*>(.*?)</h2>", page)]
    assert headings == list(nightly_report.SECTION_HEADINGS.values())
    text = text_of(page)
    assert_no_raw_missing(text)
    assert "not a decimal" in text and "not 4 digits" in text and "quarantine_share:transactions" in text
    assert "Missing landing kinds: fx_rates" in text


def test_a_passed_night_has_an_ok_banner(full_report) -> None:
    _, page = full_report
    assert 'class="banner banner-ok"' in page
    assert f"Every gate of 2026-11-19 passed ({N} of {N}); CRM export of this attempt: 400 rows" in text_of(page)


def test_the_headline_compares_tonight_with_last_night(full_report) -> None:
    _, page = full_report
    cards = re.findall(r'<div class="label">(.*?)</div>\s*<div class="value">(.*?)</div>\s*(?:<div class="change">'
                       r'(.*?)</div>)?', page)
    got = {label: (value, change) for label, value, change in cards}
    tonight = report_lake.decisions(DAY)
    before = report_lake.decisions(PREVIOUS, with_credit=False)
    at_risk = sum(report_lake.at_risk(i) for i in range(report_lake.N))
    assert got["Customers at risk"] == (f"{at_risk}", f"last night {at_risk}; no change")
    credit_now = int((tonight["next_best_actions"]["action_id"] == "credit_card").sum())
    assert credit_now > 0 and (before["next_best_actions"]["action_id"] == "credit_card").sum() == 0
    assert got["Credit offers"] == (f"{credit_now}", f"last night 0; +{credit_now}")
    commercial = int((tonight["next_best_actions"]["action_class"] == "commercial").sum())
    assert got["Commercial actions"][0] == str(commercial)
    assert got["Advisor queue"][0] == str(len(tonight["advisor_queue"]))
    assert got["Gates passed"][0] == f"{N} of {N}"
    assert "against the night before it in the lake, 2026-11-18" in text_of(page)


def test_one_number_for_the_control_group(full_report) -> None:
    paths, page = full_report
    n = len(CONTROL)
    assert re.search(rf'Control group</div>\s*<div class="value">{n}</div>', page)
    assert f"control group: {n} customers (decision_flags)" in section_text(page, "Action mix")
    assert f"outside the control group ({n} customers" in section_text(page, "Fairness across")
    con = lake.connect()
    try:
        assert nightly_report.control_group(paths, DAY, con) == (n, "decision_flags")
    finally:
        con.close()


def test_who_is_at_risk_and_the_advisor_queue(full_report) -> None:
    _, page = full_report
    risk = section_text(page, "Customers at risk")
    assert "known vulnerability <10 \u2013" in risk  # customers 1 and 2, of 210: under the minimum, not shown
    assert "with a credit offer (must be 0)" in risk
    sample = re.findall(r"C0\d{3}", risk)
    assert len(set(sample)) == 10 and all(report_lake.at_risk(int(c[1:])) for c in sample)
    queue = section_text(page, "Advisor queue")
    assert "10 customers in tonight's advisor queue" in queue and "104 met a condition" in queue
    assert "an income drop with a high shortfall risk 10" in queue
    assert "resilience" not in text_of(page)  # vulnerability types are never shown
    # per customer, only what every analyst may read: the restricted flags are counted, never listed by id
    assert "credit blocked by" in risk and "known vulnerability" not in risk.split("Sample of customers at risk")[1]
    vulnerable = [c for c in sample if c in ("C0001", "C0002")]
    for customer in vulnerable:
        row = risk.split(customer, 1)[1][:80]
        assert "another flag (restricted" in row, row


def test_the_checks_pass_on_a_clean_night(full_report) -> None:
    paths, page = full_report
    con = lake.connect()
    try:
        checks = nightly_report.compliance_checks(paths, DAY, con)
    finally:
        con.close()
    assert len(checks) >= 10
    assert [c["check"] for c in checks if c["result"] != "pass"] == []
    assert "13 of 13 checks passed" in section_text(page, "Compliance checks")


def test_the_checks_catch_what_breaks_the_rules(home) -> None:
    report_lake.build(home)
    tables = report_lake.decisions(DAY)
    nba = tables["next_best_actions"]
    extra = nba[nba["customer_id"] == "C0003"].iloc[[0]].assign(  # at risk (p 0.6): a credit card
        action_id="credit_card", action_class="commercial", channel="inapp", rank=2, recommendation_id="bad-1")
    control = nba[nba["customer_id"] == "C0021"].iloc[[0]].assign(  # control group: a commercial action
        action_id="isa", action_class="commercial", channel="email", rank=2, recommendation_id="bad-2")
    tables["next_best_actions"] = pd.concat([nba, extra, control], ignore_index=True)
    report_lake.write_gold(home, DAY, {"next_best_actions": tables["next_best_actions"]})
    lake.write_frame(report_lake.consent_state({"C0004": ["marketing_email"]}),  # C0004 has an ISA by email
                     lake.partition_path(home, "silver", "consent_state", as_of=D), home)
    signals = pd.DataFrame([{"customer_id": "C0005", "n_messages": 2, "last_message_at": pd.Timestamp(D, tz="UTC"),
                             "max_distress": 0.9, "is_distressed": True, "has_financial_difficulty": False,
                             "has_recent_complaint": False, "has_fraud_or_lost_card": False, "has_wish_to_leave": False,
                             "has_personal_details_change": False, "last_complaint_at": None,
                             "reasons": "distress", "model_version": "m"}])  # C0005 has an ISA and a credit card
    report_lake.write_gold(home, DAY, {"message_signals": report_lake._bucketed(signals)})
    con = lake.connect()
    try:
        checks = {c["check"]: c for c in nightly_report.compliance_checks(home, DAY, con)}
    finally:
        con.close()
    failed = {name: c["examples"] for name, c in checks.items() if c["result"] == "FAIL"}
    assert failed["No credit offer to a customer at risk"] == "C0003"
    assert failed["No credit offer to a customer with a predicted shortfall"] == "C0003"
    assert failed["No credit offer to a customer whose income is expected to drop"] == "C0003"  # p 0.45 at 60 days
    assert failed["No commercial or service action to a control-group customer"] == "C0021"
    assert failed["No action on a channel without its consent"] == "C0004"
    assert failed["No commercial action to a customer in distress"] == "restricted: see warehouse_restricted.duckdb"
    assert checks["No commercial action to a customer in distress"]["violations"] == 2  # an ISA and a credit card
    assert "C0021" in failed["Every candidate is published or logged with its reason"]  # isa twice for C0021
    assert checks["Vulnerable customers are offered only what is allowed"]["result"] == "pass"
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    assert 'class="banner banner-fail"' in page
    assert "compliance check(s) FAILED" in text_of(page)
    assert "Compliance check failed: No credit offer to a customer at risk (1 violations; e.g. C0003)" in text_of(page)


def test_fairness_flags_the_gap_with_its_interval_and_the_rule_behind_it(full_report) -> None:
    paths, page = full_report
    table, context = nightly_report.fairness_table(paths, DAY)
    rows = table.set_index(["metric", "dimension", "group"])
    old = rows.loc[("offer_rate", "age band", "65+")]
    assert old["rate"] == 0.0 and old["high"] == 0.0 and old["flag"] == "GAP (below)"
    young = rows.loc[("offer_rate", "age band", "25-34")]
    assert young["rate"] == 1.0 and young["low"] <= young["rate"] <= young["high"]
    assert rows.loc[("offer_rate", "age band", "50-64"), "flag"] == "too few (<30)"  # 10 customers aged 50
    # decide's bands, one source: 35-49 and 50-64, never 45-54
    groups = set(table.loc[table["dimension"] == "age band", "group"])
    assert groups == {"18-24", "25-34", "65+", "50-64"}
    # the population leaves the control group out
    overall = rows.loc[("offer_rate", "overall", "all customers")]
    assert overall["customers"] == report_lake.N - len(CONTROL)
    fairness = section_text(page, "Fairness across")
    assert "Gaps flagged tonight: offer rate of age band 18-24 (1.40x)" in fairness  # 65+ gets none: others above
    assert "offer rate of age band 65+ (0.00x)" in fairness
    assert re.search(r'The rule that drops this group more than the others: eligibility, "over 65 \(test rule\)" '
                     r'\(100\.0% of the group against 0\.0% of the others\)', fairness), fairness


def test_decision_traces_follow_customers_through_the_funnel(full_report) -> None:
    _, page = full_report
    traces = section_text(page, "Decision traces")
    assert "A customer at risk whose credit offer was suppressed" in traces
    assert "dropped at suitability restricted: see warehouse_restricted.duckdb" in traces  # the reason is restricted
    assert "credit not offered" not in traces
    assert "A customer in the control group" in traces and "dropped at control_group" in traces
    assert "published: rank 1 on" in traces


def _attempts(paths: Paths, *attempts: dict) -> None:
    clock = time.time() - 10_000
    for attempt in attempts:
        clock = report_lake.run_metrics(paths, DAY, start=clock, **attempt) + 100


def test_a_failed_night_shows_a_failure_banner(home) -> None:
    report_lake.build(home, fail_at="validate")
    status = night_status(home, D)
    assert status.state == "failed" and status.export is None
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    text = text_of(page)
    assert 'class="banner banner-fail"' in page
    assert "The night of 2026-11-19 FAILED: landing gates did not pass" in text
    assert "transactions: 200 of 1,003 rows quarantined" in text
    assert "The CRM export of this attempt was withheld." in text


def test_a_rerun_after_a_failure_shows_no_stale_failure(home) -> None:
    """Attempt 1 failed at the forecast suites; attempt 2 ran the whole night and passed."""
    report_lake.build(home)
    for file in (home.runs / D).iterdir():
        file.unlink()
    _attempts(home, {"fail_at": "validate_forecast"}, {})
    status = night_status(home, D)
    assert status.state == "passed" and status.export["rows"] == 400
    assert status.step("validate_forecast").verdict == "passed"
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    assert 'class="banner banner-ok"' in page and "FAILED" not in text_of(page)


def test_a_rerun_that_fails_ignores_the_earlier_attempts_verdicts_and_export(home) -> None:
    """Attempt 1 passed and exported; attempt 2 re-ran the ingest and failed at the silver suites: the forecast and
    decision verdicts and the export on disk are attempt 1's, and must not be shown as tonight's."""
    report_lake.build(home)
    for file in (home.runs / D).iterdir():
        file.unlink()
    _attempts(home, {"export_rows": 999}, {"fail_at": "validate_silver"})
    status = night_status(home, D)
    assert status.state == "failed" and status.export is None and status.stale_export["rows"] == 999
    assert [g.step for g in status.failed] == ["validate_silver"]
    assert status.step("validate_decisions").verdict == "earlier attempt (ignored)"
    text = text_of(nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8"))
    assert "The files in exports/crm/2026-11-19/ are from an earlier attempt of this night (run " \
           "crm-2026-11-19-test, 999 rows)" in text
    assert "999 rows" not in text.split("The files in exports")[0]
    assert re.search(r"validate_decisions decision suites earlier attempt \(ignored\)", text)


def test_a_stage_rerun_alone_voids_the_verdicts_after_it(home) -> None:
    """The night passed, then decide ran again by itself: the decision suites have not judged the new decisions."""
    report_lake.build(home)
    later = time.time() + 50
    write_run_metrics(home, D, "decide_bucket_3", {"done": True})
    os.utime(home.runs / D / "decide_bucket_3.json", (later, later))
    status = night_status(home, D)
    assert status.state == "incomplete"
    assert [g.step for g in status.pending] == ["validate_decisions"]
    assert status.export is None and status.stale_export is not None
    banner = status.banner()
    assert banner["level"] == "warn" and f"1 of {N} gates have not judged this attempt's data" in banner["title"]


def test_publish_passes_the_export_it_is_publishing(home) -> None:
    """At publish the export is staged, not yet recorded in runs/D: the report takes its manifest."""
    report_lake.build(home)
    (home.runs / D / "crm_export.json").unlink()
    assert night_status(home, D).export is None
    status = night_status(home, D, export={"rows": 7, "run_id": "crm-x"})
    assert status.banner()["level"] == "ok" and "7 rows (run crm-x)" in status.banner()["title"]


def test_realised_calibration_scores_the_forecast_of_30_days_ago(home, monkeypatch) -> None:
    from datetime import timedelta

    from pipelines import forecast

    report_lake.build(home)
    month_ago = DAY - timedelta(days=30)
    report_lake.write_gold(home, month_ago, {"cash_forecast": report_lake.decisions(month_ago)["cash_forecast"]})
    seen = {}

    def labels(paths, as_of, cutoffs, series_until=None, buckets=None):
        seen.update(as_of=as_of, cutoffs=list(cutoffs), series_until=series_until)
        ids = [f"C{i:04d}" for i in range(report_lake.N)]
        return pd.DataFrame({"customer_id": ids, "cutoff": pd.Timestamp(month_ago), "horizon_days": 30,
                             "is_shortfall": [i % 3 == 0 and i % 2 == 0 for i in range(report_lake.N)],
                             "min_balance": 0.0, "days_to_shortfall": None})

    monkeypatch.setattr(forecast, "build_labels", labels)
    con = lake.connect()
    try:
        tables, summary = nightly_report.realised_calibration(home, DAY, con)
    finally:
        con.close()
    assert seen == {"as_of": DAY, "cutoffs": [month_ago], "series_until": DAY}
    row = summary.iloc[0]
    assert (row.horizon_days, row.forecast_of, row.customers) == (30, month_ago.isoformat(), report_lake.N)
    assert row.realised_rate == pytest.approx(35 / 210)
    assert row.mean_predicted == pytest.approx((70 * 0.6 + 140 * 0.05) / 210)
    assert list(tables) == ["30 days"]
    text = text_of(nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8"))
    assert "30 days (forecast of 2026-10-20): realised 16.7% against a mean predicted 23.3% over 210 customers" in text


def test_every_section_says_what_is_missing_on_an_empty_home(home) -> None:
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    text = text_of(page)
    for heading in nightly_report.SECTION_HEADINGS.values():
        assert heading in text, heading
    assert_no_raw_missing(text)
    assert "The night of 2026-11-19 has not run" in text
    assert "runs/D/ingest.json is absent" in text
    assert "gold decision_flags has no partition" in text
    assert "no earlier night: this is the first night in the lake" in text
    assert "missing: next_best_actions" in text  # the checks say what they could not check


def test_a_night_without_decisions_yet(home) -> None:
    """After a history load: customers, no decisions. Every section says so, none fails."""
    lake.write_frame(report_lake.customers(), lake.partition_path(home, "silver", "customers", as_of=D), home)
    text = text_of(nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8"))
    assert_no_raw_missing(text)
    assert nightly_report.SECTION_HEADINGS["fairness"] in text


def test_a_new_section_is_one_function(home, monkeypatch) -> None:
    """Sections are (paths, day, con) -> [dict]: a new one renders with the generic template."""
    def extra(paths, day, con):
        return [{"key": "value", "heading": "Value against the control group", "text": "Uplift <b>2</b>.",
                 "table": pd.DataFrame({"arm": ["treated"], "value": [1234.5], "missing": [None]})}]

    monkeypatch.setattr(nightly_report, "SECTIONS", [*nightly_report.SECTIONS, ("value", extra)])
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    assert '<h2 id="value">Value against the control group</h2>' in page
    assert "Uplift &lt;b&gt;2&lt;/b&gt;." in page and ">1,234<" in page and ">\u2013<" in page


def test_a_later_attempt_after_publish_is_named_on_the_published_report(home) -> None:
    """The report of a published night reads the run metrics snapshot taken at publish; when the night has been run
    again since and failed, the banner says so, and the verdicts stay those of the published attempt."""
    import shutil

    from pipelines.publish import PublishedPaths

    report_lake.build(home)
    snapshot = home.home / "published" / "runs"
    shutil.copytree(home.runs / D, snapshot / D, copy_function=shutil.copy2)
    published = PublishedPaths(home=home.home, generation=home.home / "nowhere", runs_dir=snapshot)
    assert nightly_report.later_attempt(published, DAY, night_status(published, D)) is None
    report_lake.run_metrics(home, DAY, fail_at="validate", start=time.time() + 10)  # a re-run that fails
    status = night_status(published, D)
    assert status.state == "passed"
    later = nightly_report.later_attempt(published, DAY, status)
    assert later.startswith("A later attempt of this night, started ")
    assert "FAILED (landing gates did not pass)" in later


def test_steps_that_run_side_by_side_do_not_void_each_other(home) -> None:
    """The messages and the forecast run in parallel after the silver suites: messages finishing after the forecast
    suites void nothing, as long as decide came after both."""
    report_lake.build(home)
    folder = home.runs / D
    stamp = {f.name: f.stat().st_mtime for f in folder.iterdir()}
    late = stamp["validate_life_events.json"] + 0.5  # after the forecast's branch, before decide
    for name in ("messages_bucket_0.json", "validate_messages.json"):
        os.utime(folder / name, (late, late))
    status = night_status(home, D)
    assert status.state == "passed" and status.export is not None
    # but messages re-run after decide: the decisions did not see them, and their verdict is void
    later = stamp["crm_export.json"] + 5
    os.utime(folder / "messages_bucket_0.json", (later, later))
    status = night_status(home, D)
    assert status.state == "incomplete"
    assert [g.step for g in status.pending] == ["validate_messages", "validate_decisions"]


def test_the_app_signals_section_and_push_moves(home) -> None:
    """Gold app_signals, customer_roles and dashboard_layout as counts; published actions moved off push (decision_log
    stage contact_policy) are no drop: the funnel tells them apart and the coverage check still passes."""
    report_lake.build(home)
    tables = report_lake.decisions(DAY)
    nba = tables["next_best_actions"]
    pushed = nba[nba["action_id"] == "shortfall_warning"].head(3)
    moves = pushed[["customer_id", "action_id", "action_class", "bucket"]].assign(
        stage="contact_policy", policy_version="nba-test",
        reason="the customer dismissed 5 of the 5 push notifications they answered in the last 60 days: sent by "
               "inapp instead of push")
    tables["decision_log"] = pd.concat([tables["decision_log"], moves], ignore_index=True)
    customers = [f"C{i:04d}" for i in range(50)]

    def frame(rows: list[dict]) -> pd.DataFrame:
        out = pd.DataFrame(rows)
        return out.assign(bucket=lake.bucket_of(out["customer_id"]).astype("int32"))

    tables["app_signals"] = frame([{"customer_id": c, "n_events": 20, "is_app_user": i < 30,
                                    "is_push_fatigued": i < 4} for i, c in enumerate(customers)])
    tables["customer_roles"] = frame([{"customer_id": c, "role": "irregular_earner" if i < 7 else "retiree",
                                       "reason": "r"} for i, c in enumerate(customers[:10])])
    tables["dashboard_layout"] = frame([
        {"customer_id": c, "position": k + 1, "module": module, "reason": "r", "status": status}
        for i, c in enumerate(customers[:20])
        for k, (module, status) in enumerate([("tax_provisioning", "new" if i < 5 else "needed"),
                                              ("accounts_overview", "used"), ("spending_insights", "not_opened")])])
    report_lake.write_gold(home, DAY, tables)
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    text = section_text(page, nightly_report.SECTION_HEADINGS["app_signals"])
    assert ("50 customers with app events in the window (personalization consent), 30 app users (the layout follows "
            "what they open), 4 push-fatigued (fewer pushes).") in text
    assert "Roles: irregular_earner 7, retiree 3." in text
    assert "3 published actions sent by another channel instead of push (push fatigue)." in text
    assert ("Not counted here either: 3 published actions sent by another channel instead of push"
            in section_text(page, nightly_report.SECTION_HEADINGS["funnel"]))
    con = lake.connect()
    try:
        table = nightly_report._app_signals(home, DAY, con)[0]["table"].set_index("module")
        checks = {c["check"]: c["result"] for c in nightly_report.compliance_checks(home, DAY, con)}
    finally:
        con.close()
    assert (table.loc["tax_provisioning", "new"], table.loc["tax_provisioning", "needed"]) == (5, 15)
    assert table.loc["accounts_overview", "used"] == 20 and table.loc["spending_insights", "not_opened"] == 20
    assert checks["Every candidate is published or logged with its reason"] == "pass"
    # the same rows for an action that was NOT published are a drop, counted once: still a pass
    tables["next_best_actions"] = nba[~nba.index.isin(pushed.index)]
    tables["decision_log"] = tables["decision_log"][~((tables["decision_log"]["stage"] == "contact_policy")
                                                      & tables["decision_log"]["customer_id"].isin(
                                                          pushed["customer_id"]))]
    tables["decision_log"] = pd.concat([tables["decision_log"], moves.assign(reason="cap reached")],
                                       ignore_index=True)
    report_lake.write_gold(home, DAY, tables)
    con = lake.connect()
    try:
        checks = {c["check"]: c["result"] for c in nightly_report.compliance_checks(home, DAY, con)}
    finally:
        con.close()
    assert checks["Every candidate is published or logged with its reason"] == "pass"


def test_the_plans_section_checks_the_safety_rule_again(home) -> None:
    """Gold plans per action, and the safety rule checked again from the night's cash_forecast: a row that would
    take the P10 balance below zero is counted (the gate would have stopped such a night; the report never hides
    it)."""
    from datetime import timedelta

    report_lake.build(home)
    tables = report_lake.decisions(DAY)
    forecast = tables["cash_forecast"]
    forecast.loc[forecast["customer_id"].isin(["C0001", "C0002"]), "min_balance_p10"] = 500.0
    rows = [{"instruction_id": f"I{i}", "plan_id": f"P{i}", "customer_id": c, "kind": kind, "action": action,
             "priority": 1, "execute_on": DAY + timedelta(days=days), "amount": amount, "target": "t",
             "horizon_days": 30, "p10_before": 500.0, "p10_after": 500.0 - amount, "reason": "r", "reversal": "r",
             "consents": "personalization", "requires_mandate": True, "plan_version": "v", "policy_version": "p",
             "model_version": "global-test"}
            for i, (c, kind, action, days, amount) in enumerate([
                ("C0001", "savings", "savings_sweep", 1, 400.0), ("C0002", "debt", "debt_overpayment", 1, 100.0),
                ("C0002", "savings", "bill_provision", 40, 450.0)])]
    frame = pd.DataFrame(rows)
    tables["plans"] = frame.assign(bucket=lake.bucket_of(frame["customer_id"]).astype("int32"))
    report_lake.write_gold(home, DAY, tables)
    page = nightly_report.build_nightly_report(home, DAY).read_text(encoding="utf-8")
    text = section_text(page, nightly_report.SECTION_HEADINGS["plans"])
    assert "3 plan instructions for 2 customers" in text
    # C0002 moves 550 by D + 60 against a P10 of 500: two customer-horizons (60, 90) break the rule
    assert "6 customer-horizons checked, 2 where the plan would take the projected P10 balance below zero" in text
    assert "bill_provision" in text and "debt_overpayment" in text


def test_the_event_forecasts_section(full_report) -> None:
    """Income drops and large expenses ahead: per horizon the customers scored, those at the action level of
    config/decisioning.yaml event_forecasts, the mean probability against the model's base rate, the model version
    and, when the registry holds it, the held-out backtest; what decide published from them."""
    paths, page = full_report
    text = section_text(page, "Income drops and large expenses ahead")
    assert_no_raw_missing(text)
    at_risk = sum(1 for i in range(report_lake.N) if i % 3 == 0)
    fifth = sum(1 for i in range(report_lake.N) if i % 5 == 0)
    assert (f"Income drop (gold income_forecast, model {report_lake.INCOME_MODEL}): {report_lake.N:,} customers "
            f"scored; {at_risk:,} at or above the action level 0.3 at 30 or 60 days") in text
    assert (f"{report_lake.N:,} customers scored; {fifth:,} at or above the action level 0.5 at 30 or 60 days, "
            f"for whom decide considers large_bill_ahead") in text
    assert "The model registry holds no backtest for event-unregistered." in text
    con = lake.connect()
    try:
        sections = nightly_report._event_forecasts(paths, DAY, con)
    finally:
        con.close()
    tables = {t["caption"]: t["frame"] for t in sections[0]["tables"]}
    income = tables["Income drop: tonight per horizon"].set_index("horizon_days")
    assert income.loc[60, "at_action_level"] == at_risk and income.loc[30, "at_action_level"] == 0
    assert income.loc[30, "base_rate"] == 0.04 and bool(income.loc[60, "acted_on"]) and not income.loc[90, "acted_on"]
    assert abs(income.loc[90, "mean_probability"] - (0.5 * at_risk + 0.05 * (report_lake.N - at_risk))
               / report_lake.N) < 1e-9
    backtest = tables["Income drop: the model's held-out backtest (model registry)"]
    assert list(backtest["horizon_days"]) == [30, 60, 90] and (backtest["roc_auc"] == 0.81).all()
    assert (backtest["base_rate_brier"] == 0.07).all()
    expense = tables["Large one-off expense: tonight per horizon"].set_index("horizon_days")
    assert expense.loc[30, "with_expected_date"] == fifth and expense["base_rate"].isna().all()
    assert "Their actions published tonight" in tables


def night_with_regions(tmp_path, regions: dict[str, str]):
    """The report's hand-made night with these customers' regions set; its fairness table and page."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(tmp_path))
        paths = Paths(tmp_path)
        report_lake.build(paths)
        customers = report_lake.customers()
        for customer, region in regions.items():
            customers.loc[customers["customer_id"] == customer, "region"] = region
        lake.write_frame(customers, lake.partition_path(paths, "silver", "customers", as_of=DAY.isoformat()), paths)
        table, _ = nightly_report.fairness_table(paths, DAY)
        page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    return table, page


def test_a_region_of_one_customer_is_not_published_by_name(tmp_path) -> None:
    """A hand-made night where two customers' region is a typo ('Nrth') or a hostile value: before, each was a group
    of its own in the fairness table (one person, a rate of 0 or 100%), shown by name in the table and the figure."""
    table, page = night_with_regions(tmp_path, {"C0005": "Nrth", "C0007": "Sheffield Rd 12"})
    regions = table[table["dimension"] == "region"]
    hidden = "groups under 10 customers, fewer than 10 in all: not shown"
    assert set(regions["group"]) == {"North", "Yorkshire and The Humber", hidden}
    assert (regions.loc[regions["group"] == hidden, "customers"] == 2).all()
    assert regions.loc[regions["group"] == hidden, "rate"].isna().all()
    assert "Nrth" not in page and "Sheffield Rd 12" not in page
    fairness = section_text(page, "Fairness across")
    assert "Tonight: region not shown: 2 customers." in fairness
    # the 2 customers' count at risk is not shown either, and the note says so
    assert "neither is a group's count of customers at risk under 10 ('<10' in the at-risk column" in fairness
    assert regions.loc[regions["group"] == hidden, "customers_at_risk"].isna().all() or \
        (regions.loc[regions["group"] == hidden, "customers_at_risk"] == 0).all()


def test_customers_per_flag_shows_no_count_under_the_minimum_group_size(full_report) -> None:
    """The 'Customers per flag' table showed 'known vulnerability 2 1.0%': the two customers of a restricted flag,
    counted, beside a fairness table that hides any group under nightly_report.min_published_group_customers (10).
    A count of 1 to 9 shows as '<10' without its share; 0 is shown; so is any count of credit offers to customers at
    risk (must be 0), a breach whatever its size."""
    _, page = full_report
    risk = section_text(page, "Customers at risk")
    flags = risk.split("Customers per flag", 1)[1].split("What customers at risk were given tonight", 1)[0]
    assert "known vulnerability <10 \u2013" in flags and "known vulnerability 2" not in flags
    assert "gambling harm 0 0.0%" in flags  # nobody: shown
    shown = [int(n.replace(",", "")) for n in re.findall(r" ([0-9][0-9,]*) [0-9.]+%", flags)]
    assert shown and all(n == 0 or n >= 10 for n in shown)
    assert "'<10' without its share" in risk
    given = risk.split("What customers at risk were given tonight", 1)[1].split("Sample of customers at risk", 1)[0]
    assert "with a credit offer (must be 0)" in given


def test_the_advisor_queue_counts_no_condition_of_fewer_than_the_minimum_group(tmp_path) -> None:
    """Two customers of the queue with a known vulnerability and three in arrears: the 'Customers per condition'
    table said 'a known vulnerability with a shortfall risk 2', singling out two vulnerable customers. Counts of 1 to
    9 show as '<10'; 0 and the ten customers with an income drop are shown."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(tmp_path))
        paths = Paths(tmp_path)
        report_lake.build(paths)
        queue = report_lake.decisions(DAY)["advisor_queue"]
        queue.loc[queue.index[:2], "known_vulnerability"] = "health"
        queue.loc[queue.index[2:5], "in_arrears"] = True
        report_lake.write_gold(paths, DAY, {"advisor_queue": queue})
        page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    text = section_text(page, "Advisor queue")
    conditions = text.split("Customers per condition", 1)[1].split("Suggested action", 1)[0]
    assert "a known vulnerability with a shortfall risk <10" in conditions, conditions
    assert "arrears with a likely shortfall <10" in conditions, conditions
    assert "an income drop with a high shortfall risk 10" in conditions and "withdrawn 0" in conditions
    assert not re.search(r"(?:risk|shortfall|messages|withdrawn) [1-9](?![0-9])", conditions), conditions
    assert "'<10' (nightly_report.min_published_group_customers" in text


def test_the_pooled_small_groups_row_counts_exactly_the_customers_pooled(tmp_path) -> None:
    """Three regions of four customers each (typos, hostile values): pooled into one row whose customers are exactly
    the pooled customers outside the control group, and the section says how many."""
    chosen = [f"C{i:04d}" for i in range(3, 60) if f"C{i:04d}" not in CONTROL][:12]
    typos = {customer: ["Nrth", "Sheffield Rd 12", "X"][n % 3] for n, customer in enumerate(chosen)}
    table, page = night_with_regions(tmp_path, typos)
    regions = table[table["dimension"] == "region"]
    pooled = "other (groups under 10 customers)"
    assert set(regions["group"]) == {"North", "Yorkshire and The Humber", pooled}
    assert (regions.loc[regions["group"] == pooled, "customers"] == 12).all()
    overall = table.loc[table["dimension"] == "overall", "customers"].iloc[0]
    assert regions.drop_duplicates("group")["customers"].sum() == overall  # nobody lost or counted twice
    fairness = section_text(page, "Fairness across")
    assert "Tonight: region pooled: 12 customers." in fairness
    assert "Nrth" not in page and "Sheffield Rd 12" not in page


def test_a_region_is_shown_cut_to_the_display_bound(tmp_path) -> None:
    """A region of 5,000 characters in silver (loaded before the ingest's bounds, or from another source) was printed
    whole as a group of the fairness table; now as display_label shows it (text.display_max_chars)."""
    from pipelines.contract import text_limits

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(tmp_path))
        paths = Paths(tmp_path)
        report_lake.build(paths)
        customers = report_lake.customers()
        customers.loc[customers["region"] == "North", "region"] = "N" * 5_000
        lake.write_frame(customers, lake.partition_path(paths, "silver", "customers", as_of=DAY.isoformat()), paths)
        table, _ = nightly_report.fairness_table(paths, DAY)
        page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    shown = "N" * (text_limits().display_max_chars - 1) + "\u2026"
    assert shown in set(table["group"])
    assert "N" * text_limits().display_max_chars not in page
