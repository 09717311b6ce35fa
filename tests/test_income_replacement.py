"""A replaced income is no stopped income, and a second current account beside a steady income does not silence the
income claims (config/life_events.yaml stopped_streams and income_replacement, sql/features_income_payers.sql;
config/forecast.yaml income_history, sql/features_income_history.sql; docs/life_events.md, "A replaced income is
no job loss"; docs/forecasting.md, "A second current account"). Hand-made customers with 300 days of core history,
loaded through the real history load (which builds the feature store as of END), a rent and groceries each:

C_JOBCHANGE  a salary until May 25, a new employer's salary (another payer, a little more) on the same account from
             June 20: no job loss, no "a regular income seems to have stopped"; a new job
C_LOST       a salary until May 25, nothing since: a job loss, with its stopped-salary postings
C_ODDJOB     a salary until May 25, then a small payer on the salary channel twice (300 a month): still a job loss
C_SECOND     a small salary every month for 300 days on the old account, a second current account opened 30 days ago
             (money moved in from the old one, card spending): "your regular income is low" is still said
C_MOVED_HERE the same salary, its payer moved to a second current account opened 30 days ago (paid there in July):
             silenced, as before (30 days of income history)
C_SECOND_LOST the small salary until May 25, nothing since, a second current account opened 30 days ago: the income
             may have moved there under a name that does not read as income: silenced (30 days)

On main C_JOBCHANGE was flagged job_loss with "a regular income seems to have stopped", and C_SECOND had 30 days of
income history (no income claim)."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from pipelines import decide, features
from tests.landing_builder import LandingBank
from tests.test_decide import customers, run
from tests.test_features import loaded
from tests.test_income_account_history import (frame_row, life_features, monkeypatch_module,  # noqa: F401 (fixtures)
                                               night_rows, renting_customers)
from tests.test_income_history import context

END = date(2026, 7, 31)
CORE_START = END - timedelta(days=299)          # 300 days of core history
NEW_ACCOUNT = END - timedelta(days=29)          # a second current account opened here 30 days ago
MONTHS = [date(y, m, 1) for y in (2025, 2026) for m in range(1, 13)]
OLD_PAYDAYS = [d.replace(day=25) for d in MONTHS if CORE_START < d.replace(day=25) <= date(2026, 5, 25)]
ALL_PAYDAYS = [d.replace(day=25) for d in MONTHS if CORE_START < d.replace(day=25) <= END]
NEW_PAYDAYS = [date(2026, 6, 20), date(2026, 7, 20)]
NAMES = ("C_JOBCHANGE", "C_LOST", "C_ODDJOB", "C_SECOND", "C_MOVED_HERE", "C_SECOND_LOST")
SECOND = ("C_SECOND", "C_MOVED_HERE", "C_SECOND_LOST")


def make_bank() -> LandingBank:
    bank = LandingBank(end=END)
    renting_customers(bank, NAMES)
    # the old salary until May
    for customer in ("C_JOBCHANGE", "C_LOST", "C_ODDJOB"):
        bank.monthly(f"A_{customer}", OLD_PAYDAYS, "2400.00", "salary", f"EMP-OLD-{customer}",
                     f"SALARY EMP-OLD {customer}")
    # a new employer's salary on the same account from June 20
    bank.monthly("A_C_JOBCHANGE", NEW_PAYDAYS, "2550.00", "salary", "EMP-NEW-C_JOBCHANGE", "SALARY EMP-NEW JOBCHANGE")
    # a small payer on the salary channel after the salary stopped
    bank.monthly("A_C_ODDJOB", [date(2026, 6, 28), date(2026, 7, 22)], "300.00", "salary", "ODD-JOBS-C_ODDJOB",
                 "ODD JOBS LTD")
    # a small salary every month: all along (C_SECOND), until June then moved (C_MOVED_HERE), until May (C_SECOND_LOST)
    small = {"C_SECOND": ALL_PAYDAYS, "C_MOVED_HERE": [d for d in ALL_PAYDAYS if d < date(2026, 7, 1)],
             "C_SECOND_LOST": OLD_PAYDAYS}
    for customer, days in small.items():
        bank.monthly(f"A_{customer}", days, "900.00", "salary", f"EMP-{customer}", f"SALARY EMP {customer}")
        # a second current account opened 30 days ago: money moved in from the old one, card spending
        second = f"B_{customer}"
        bank.account(second, customer, NEW_ACCOUNT, opening_balance=0)
        moved = NEW_ACCOUNT
        bank.post(f"A_{customer}", moved, "-200.00", "transfer_out", description="TRANSFER TO CURRENT ACCOUNT")
        bank.post(second, moved, "200.00", "transfer_in", description="TRANSFER FROM CURRENT ACCOUNT")
        bank.card_spending(second, moved, END, every=5, amount="-6.00")
    bank.monthly("B_C_MOVED_HERE", [date(2026, 7, 25)], "900.00", "salary", "EMP-C_MOVED_HERE",
                 "SALARY EMP C_MOVED_HERE")
    return bank


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with loaded(tmp_path_factory, "income_replacement", make_bank()) as (paths, _metrics, con):
        yield paths, features.build_panel(con, [END])


def test_a_second_current_account_beside_a_steady_income_keeps_the_income_history(home) -> None:
    paths, panel = home
    expected = {"C_JOBCHANGE": 300, "C_LOST": 300, "C_ODDJOB": 300,
                "C_SECOND": 300, "C_MOVED_HERE": 30, "C_SECOND_LOST": 30}
    life = life_features(paths)
    for customer, days in expected.items():
        assert frame_row(panel.features, customer).history_days == 300, customer
        assert frame_row(panel.features, customer).income_history_days == days, customer
        assert life.loc[customer, "income_history_days"] == days, customer


def test_a_replaced_salary_did_not_stop(home) -> None:
    paths, panel = home
    stopped = {c: bool(frame_row(panel.features, c).is_income_stopped) for c in ("C_JOBCHANGE", "C_LOST", "C_ODDJOB")}
    assert stopped == {"C_JOBCHANGE": False, "C_LOST": True, "C_ODDJOB": True}
    life = life_features(paths)
    assert {c: int(life.loc[c, "salary_stopped"]) for c in stopped} == {"C_JOBCHANGE": 0, "C_LOST": 1, "C_ODDJOB": 1}
    assert {c: int(life.loc[c, "n_stopped_inflow_streams"]) for c in stopped} == \
        {"C_JOBCHANGE": 0, "C_LOST": 1, "C_ODDJOB": 1}
    # the new employer's salary is a new salary payer (the new_job rule's feature)
    assert life.loc["C_JOBCHANGE", "n_new_salary_payers_45d"] == 1


def test_what_is_said_of_the_income(home) -> None:
    """With a shortfall risk: "a regular income seems to have stopped" only where no new salary replaced it, "your
    regular income is low" for the small steady salary beside a second account, nothing of the income where the
    second account may hold it."""
    _, panel = home
    ctx = customers(*(context(panel, c, p_shortfall_30=0.55, p_shortfall_60=0.6) for c in NAMES))
    full = decide.complete_context(ctx)
    assert full["is_income_known"].tolist() == [True, True, True, True, False, False]
    nba = run(ctx, top_k=30).next_best_actions
    ids = {f"C{i:04d}": c for i, c in enumerate(NAMES)}

    def who(text: str) -> set[str]:
        return {ids[c] for c in nba.loc[nba["reasons"].astype(str).str.contains(text), "customer_id"]}

    assert who("regular income seems to have stopped") == {"C_LOST", "C_ODDJOB"}
    # (C_JOBCHANGE is told it too while the new salary, twice paid, is no stream yet: docs/life_events.md, left)
    assert "C_SECOND" in who("regular income is low")
    assert not who("regular income is low") & {"C_MOVED_HERE", "C_SECOND_LOST"}


def test_a_job_change_is_a_new_job_and_no_job_loss_on_the_night(night_rows) -> None:
    rows = night_rows
    flagged = {e: {c for (c, event), r in rows.iterrows() if event == e and r["flagged"]}
               for e in ("job_loss", "new_job")}
    assert flagged["job_loss"] == {"C_LOST", "C_ODDJOB"}
    # a salary from a new payer is a new job whatever its amount (the new_job rule): the odd job's too
    assert flagged["new_job"] == {"C_JOBCHANGE", "C_ODDJOB"}
    # a real job loss keeps its evidence: the old salary's postings, not the odd job's
    for customer in ("C_LOST", "C_ODDJOB"):
        evidence = json.loads(rows.loc[(customer, "job_loss"), "evidence"])
        assert {t["label"] for t in evidence["transactions"]} == {f"SALARY EMP-OLD {customer}"}, customer
        assert {t["signal"] for t in evidence["transactions"]} == {"stopped_salary"}
    shown = json.loads(rows.loc[("C_JOBCHANGE", "new_job"), "evidence"])
    assert {t["label"] for t in shown["transactions"]} == {"SALARY EMP-NEW JOBCHANGE"}
    # the steady salary beside a second account is judged (nothing flagged); the two whose second account may hold
    # the income are not
    assert not rows.loc[("C_SECOND", "job_loss"), "flagged"]
    assert "not judged" not in str(json.loads(rows.loc[("C_SECOND", "job_loss"), "evidence"]).get("note"))
    for customer in ("C_MOVED_HERE", "C_SECOND_LOST"):
        note = json.loads(rows.loc[(customer, "job_loss"), "evidence"])["note"]
        assert note.startswith("not judged") and "has 30 days of history" in note, customer
