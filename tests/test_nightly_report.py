"""The nightly report on a small hand-made lake: written, self-contained, every section, a fairness gap flagged,
and every section still there when its input is absent."""
from __future__ import annotations

import html
import json
import re
from datetime import date, timedelta

import pandas as pd
import pytest

from pipelines import lake, nightly_report
from pipelines.config import Paths
from pipelines.runs import write_run_metrics

DAY = date(2026, 11, 19)
D = DAY.isoformat()


def _customers() -> pd.DataFrame:
    # 100 customers aged 30 (25-34), 40 aged 20 (18-24), 60 aged 70 (65+, no commercial offers), and 10 aged 50
    # (45-54, too few to be judged).
    rows = []
    for i in range(210):
        age, region = (30, "North") if i < 100 else (20, "North") if i < 140 else (70, "South") if i < 200 \
            else (50, "South")
        rows.append({"customer_id": f"C{i:04d}", "birth_year": DAY.year - age, "region": region,
                     "customer_since": date(2020, 1, 1), "known_vulnerability": None})
    frame = pd.DataFrame(rows)
    frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    frame["updated_load_date"] = "history"
    return frame


def _nba(customers: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for customer, age in zip(customers["customer_id"], DAY.year - customers["birth_year"]):
        actions = [("shortfall_warning", "protective", "push")]
        if age < 65:
            actions += [("isa", "commercial", "email"), ("credit_card", "commercial", "inapp")]
        for rank, (action, cls, channel) in enumerate(actions, start=1):
            rows.append({"recommendation_id": f"{customer}-{action}", "customer_id": customer, "rank": rank,
                         "action_id": action, "action_class": cls, "channel": channel, "priority": 1.0 / rank,
                         "propensity": 0.1, "value": 10.0, "logging_probability": 1.0, "is_exploration": False,
                         "is_control": False, "reasons": "r", "explanation": "e", "policy_version": "nba-v1",
                         "valid_until": DAY + timedelta(days=7)})
    frame = pd.DataFrame(rows)
    frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    return frame


def _decision_log(customers: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, customer in enumerate(customers["customer_id"]):
        rows.append({"customer_id": customer, "action_id": "mortgage", "action_class": "commercial",
                     "stage": "applicability", "reason": "no home purchase flagged"})
        if i % 3 == 0:
            rows.append({"customer_id": customer, "action_id": "personal_loan", "action_class": "commercial",
                         "stage": "suitability", "reason": "credit not offered: an account is in arrears"})
        if i % 5 == 0:
            rows.append({"customer_id": customer, "action_id": "budgeting_tools", "action_class": "protective",
                         "stage": "arbitration", "reason": "ranked below the top 3 for this customer"})
    frame = pd.DataFrame(rows)
    frame["policy_version"] = "nba-v1"
    frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    return frame


def _forecast(customers: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, customer in enumerate(customers["customer_id"]):
        for k, horizon in enumerate((30, 60, 90)):
            p = min(1.0, (i % 10) / 10 + 0.05 * k)
            rows.append({"customer_id": customer, "horizon_days": horizon, "p_shortfall": p,
                         "min_balance_p10": -100.0, "min_balance_p50": 0.0, "min_balance_p90": 100.0,
                         "expected_shortfall_date": DAY + timedelta(days=10) if p >= 0.5 else None,
                         "safe_to_save": 0.0, "confidence": "high", "drivers": "d", "model_version": "global-test"})
    frame = pd.DataFrame(rows)
    frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    return frame


def build_lake(paths: Paths, with_decision_log: bool = True, with_life_events: bool = True) -> None:
    customers = _customers()
    lake.write_frame(customers, lake.partition_path(paths, "silver", "customers", as_of=D), paths)
    gold = {"next_best_actions": _nba(customers), "cash_forecast": _forecast(customers)}
    if with_decision_log:
        gold["decision_log"] = _decision_log(customers)
    if with_life_events:
        life = pd.DataFrame([{"customer_id": c, "event_type": e, "probability": 0.9 if j % 4 == 0 else 0.1,
                              "flagged": j % 4 == 0, "evidence": "x", "model_version": "le-test"}
                             for j, c in enumerate(customers["customer_id"]) for e in ("moving_home", "new_job")])
        life["bucket"] = lake.bucket_of(life["customer_id"]).astype("int32")
        gold["life_events"] = life
    for table, frame in gold.items():
        lake.write_frame(frame, lake.partition_path(paths, "gold", table, as_of=D), paths, partition_by=["bucket"])
    quarantine = pd.DataFrame({"stage": ["ingest"] * 3, "file": [f"{D}/transactions.csv"] * 3, "line": [4, 9, 12],
                               "column_name": ["amount", "amount", "mcc"],
                               "reason": ["not a decimal", "not a decimal", "not 4 digits"],
                               "raw_value": ["1,2", "abc", "12"]})
    lake.write_frame(quarantine, lake.partition_path(paths, "gold", "quarantine", load_date=D), paths)
    write_run_metrics(paths, D, "ingest", {"kinds": {
        "transactions": {"files": 1, "rows_read": 1003, "rows_accepted": 1000, "rows_quarantined": 3,
                         "files_quarantined": 0},
        "balances": {"files": 1, "rows_read": 500, "rows_accepted": 500, "rows_quarantined": 0,
                     "files_quarantined": 0}}, "missing_kinds": ["fx_rates"]})
    write_run_metrics(paths, D, "decide", {"capacity": {
        "phone": {"capacity": 20, "night_capacity": 20, "demand": 467, "served": 20, "over_capacity": 447,
                  "sent_digitally": 440, "not_sent": 7},
        "branch": {"capacity": 5, "night_capacity": 5, "demand": 0, "served": 0, "over_capacity": 0,
                   "sent_digitally": 0, "not_sent": 0},
        "advisor_queue": {"capacity": 10, "night_capacity": 10, "demand": 104, "served": 10, "over_capacity": 94}}})
    write_run_metrics(paths, D, "validate", {"passed": True, "suites": {"transactions": {"success": True}},
                                             "gates": [{"name": "quarantine_share:transactions", "passed": True,
                                                        "value": 0.003, "threshold": 0.05,
                                                        "message": "transactions: 3 of 1,003 rows quarantined"}]})


def text_of(page: str) -> str:
    page = re.sub(r"<img[^>]*>", " ", page)
    page = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(re.sub(r"\s+", " ", page))


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for src in re.findall(r'src="([^"]*)"', page):
        assert src.startswith("data:image/png;base64,")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Paths, str]:
    home = tmp_path_factory.mktemp("report") / "segone"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(home))
        paths = Paths(home)
        build_lake(paths)
        target = nightly_report.build_nightly_report(paths, DAY)
        assert target == home / "reports" / D / "index.html"
        return paths, target.read_text(encoding="utf-8")


def test_report_is_written_and_self_contained(full_report) -> None:
    _, page = full_report
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') >= 6


def test_report_has_every_section(full_report) -> None:
    _, page = full_report
    headings = [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", page)]
    for heading in nightly_report.SECTION_HEADINGS.values():
        assert heading in headings, heading
    text = text_of(page)
    assert "could not be built" not in text
    assert "not a decimal" in text and "not 4 digits" in text  # quarantine reasons
    assert "quarantine_share:transactions" in text  # the gates
    assert "Missing landing kinds: fx_rates" in text
    assert "moving_home" in text and "new_job" in text  # life-event rates
    assert "applicability" in text and "suitability" in text  # funnel stages
    assert "no backtest has been run" in text  # no earlier forecast, no backtest: said, not crashed


def test_report_flags_the_fairness_gap(full_report) -> None:
    _, page = full_report
    text = text_of(page)
    # the 65+ group (60 customers) gets no commercial offer: far below the overall rate
    assert re.search(r"Gaps flagged: .*offer rate of age band 65\+ is 0\.000, 0\.00x the overall", text), text
    assert "GAP (below)" in text
    # 45-54 holds 10 customers: too few to be judged, never flagged
    assert "age band 45-54 is" not in text
    assert "too few (<30)" in text


def test_fairness_table_rates_and_flags(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    build_lake(paths, with_life_events=False)
    table, notes = nightly_report.fairness_table(paths, DAY, high=1.25, low=0.8, min_customers=30)
    rows = table.set_index(["dimension", "group_name"])
    assert rows.loc[("overall", "all customers"), "customers"] == 210
    assert rows.loc[("age band", "65+"), "offer_rate"] == 0.0
    assert rows.loc[("age band", "25-34"), "offer_rate"] == 2.0
    assert rows.loc[("age band", "65+"), "offer_rate_flag"] == "GAP (below)"
    assert rows.loc[("age band", "45-54"), "offer_rate_flag"] == "too few (<30)"
    overall_offer = rows.loc[("overall", "all customers"), "offer_rate"]
    assert overall_offer == pytest.approx((150 * 2) / 210)
    assert rows.loc[("overall", "all customers"), "credit_suppression_rate"] == pytest.approx(70 / 210)
    # a looser threshold flags nothing on the credit suppression rate of evenly spread drops
    loose, _ = nightly_report.fairness_table(paths, DAY, high=10, low=0.0, min_customers=30)
    assert not loose["credit_suppression_rate_flag"].str.startswith("GAP").any()


def test_absent_life_events_and_decision_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    build_lake(paths, with_decision_log=False, with_life_events=False)
    page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    assert_self_contained(page)
    text = text_of(page)
    for heading in nightly_report.SECTION_HEADINGS.values():
        assert heading in text, heading
    assert "the gold life_events table has no partition for this date" in text
    assert "the gold decision_log table has no partition for this date" in text
    assert "Credit suppression rate not shown" in text
    assert "could not be built" not in text
    assert "offer rate of age band 65+" in text  # fairness still works on next_best_actions alone


def test_empty_home_still_writes_every_section(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    text = text_of(page)
    for heading in nightly_report.SECTION_HEADINGS.values():
        assert heading in text, heading
    assert "could not be built" not in text
    assert "runs/D/ingest.json is absent" in text
    assert "silver customers has no snapshot" in text


def test_backtest_fallback_is_shown_and_labelled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    build_lake(paths, with_life_events=False)
    folder = paths.reports / "backtest"
    (folder / "scored").mkdir(parents=True)
    (folder / "backtest.json").write_text(json.dumps([
        {"dataset": "sim", "engine": "global", "horizon_days": 30, "population": "all", "n_rows": 400,
         "n_positive": 100, "brier": 0.12, "calibration_error": 0.03, "roc_auc": 0.8}]), encoding="utf-8")
    scored = pd.DataFrame({"engine": "global", "horizon_days": 30, "p_shortfall": [i / 400 for i in range(400)],
                           "is_shortfall": [i % 4 == 0 for i in range(400)]})
    scored.to_parquet(folder / "scored" / "sim.parquet", index=False)
    page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    text = text_of(page)
    assert "the latest backtest's calibration instead" in text
    assert "could not be built" not in text


def test_a_night_with_customers_but_no_decisions_writes_the_fairness_section(tmp_path, monkeypatch) -> None:
    """After a history load there are customers but no next best actions yet: the section says so, no error."""
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    lake.write_frame(_customers(), lake.partition_path(paths, "silver", "customers", as_of=D), paths)
    page = nightly_report.build_nightly_report(paths, DAY).read_text(encoding="utf-8")
    text = text_of(page)
    assert SECTION_HEADINGS_FAIRNESS in text and "could not be built" not in text


SECTION_HEADINGS_FAIRNESS = nightly_report.SECTION_HEADINGS["fairness"]


def test_report_shows_the_staffed_queues_against_their_capacity(full_report) -> None:
    _, page = full_report
    text = text_of(page)
    assert "Staffed channels: capacity and demand" in text
    assert "Over capacity tonight: phone 467 for 20; advisor_queue 104 for 10." in text
    assert re.search(r"phone\s+20\s+467\s+20\s+447\s+440", text), text[text.find("Staffed"):][:800]
