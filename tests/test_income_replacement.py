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
C_ONEOFF     a salary until May 25, then one payment of its size from a new payer on the salary channel on July 10 (a
             one-off, or a new employer's first salary: nobody knows yet): it replaces nothing, the income is pending
             (nothing said of it, the income events not judged) until a second payment or 40 days
C_ONEOFF_OLD the same one-off on June 18, nothing since (43 days): the salary stopped, a job loss and no new job
C_SMALLPAY   a new payer on the salary channel paying 40 twice (July 3 and 24): under the new_job rule's 100 a payment
C_WEEKLY     weekly wages of 350 until May 29, then a new employer's monthly salary of 1,500 (June 15, July 15): the
             regular income is 1,500 a month, monthly (the new payer's cadence, not the old weekly one)

On main C_JOBCHANGE was flagged job_loss with "a regular income seems to have stopped", and C_SECOND had 30 days of
income history (no income claim). Before branch jobchange2 C_JOBCHANGE's regular income read as none until the new
salary was a stream (3 payments: "your regular income is low", salary_switch_help's "no regular income arrives in
your account here"), C_ONEOFF's one-off replaced the old salary for 40 days, and C_SMALLPAY and C_ONEOFF_OLD were
flagged new_job."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from models.life_event_rules import rule_fires
from pipelines import decide, features
from pipelines import life_events as le
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
NAMES = ("C_JOBCHANGE", "C_LOST", "C_ODDJOB", "C_SECOND", "C_MOVED_HERE", "C_SECOND_LOST", "C_ONEOFF", "C_ONEOFF_OLD",
         "C_SMALLPAY", "C_WEEKLY")
SECOND = ("C_SECOND", "C_MOVED_HERE", "C_SECOND_LOST")


def make_bank() -> LandingBank:
    bank = LandingBank(end=END)
    renting_customers(bank, NAMES)
    # the old salary until May
    for customer in ("C_JOBCHANGE", "C_LOST", "C_ODDJOB", "C_ONEOFF", "C_ONEOFF_OLD"):
        bank.monthly(f"A_{customer}", OLD_PAYDAYS, "2400.00", "salary", f"EMP-OLD-{customer}",
                     f"SALARY EMP-OLD {customer}")
    # a new employer's salary on the same account from June 20
    bank.monthly("A_C_JOBCHANGE", NEW_PAYDAYS, "2550.00", "salary", "EMP-NEW-C_JOBCHANGE", "SALARY EMP-NEW JOBCHANGE")
    # one payment of the salary's size from a new payer on the salary channel: 21 and 43 days before END
    bank.monthly("A_C_ONEOFF", [date(2026, 7, 10)], "2400.00", "salary", "ONEOFF-C_ONEOFF", "PAYMENT ONEOFF LTD")
    bank.monthly("A_C_ONEOFF_OLD", [date(2026, 6, 18)], "2400.00", "salary", "ONEOFF-C_ONEOFF_OLD",
                 "PAYMENT ONEOFF LTD")
    # weekly wages until May 29, a monthly salary from a new employer since June 15
    fridays = [CORE_START + timedelta(days=k) for k in range(0, 300, 7)]
    bank.monthly("A_C_WEEKLY", [d for d in fridays if d <= date(2026, 5, 29)], "350.00", "salary",
                 "WAGES-C_WEEKLY", "WEEKLY WAGES C_WEEKLY")
    bank.monthly("A_C_WEEKLY", [date(2026, 6, 15), date(2026, 7, 15)], "1500.00", "salary", "EMP-NEW-C_WEEKLY",
                 "SALARY EMP-NEW WEEKLY")
    # a payroll of 40 a payment, twice
    bank.monthly("A_C_SMALLPAY", [date(2026, 7, 3), date(2026, 7, 24)], "40.00", "salary", "SMALLCO-C_SMALLPAY",
                 "PAYROLL SMALLCO")
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
    known = dict(zip(NAMES, full["is_income_known"].tolist()))
    # the history gate (C_MOVED_HERE, C_SECOND_LOST) and the pending one-off (C_ONEOFF)
    assert {c for c, k in known.items() if not k} == {"C_MOVED_HERE", "C_SECOND_LOST", "C_ONEOFF"}
    nba = run(ctx, top_k=30).next_best_actions
    ids = {f"C{i:04d}": c for i, c in enumerate(NAMES)}

    def who(text: str, action: str | None = None) -> set[str]:
        rows = nba if action is None else nba[nba["action_id"].astype(str) == action]
        return {ids[c] for c in rows.loc[rows["reasons"].astype(str).str.contains(text), "customer_id"]}

    assert who("regular income seems to have stopped") == {"C_LOST", "C_ODDJOB", "C_ONEOFF_OLD"}
    assert "C_SECOND" in who("regular income is low")
    assert not who("regular income is low") & {"C_MOVED_HERE", "C_SECOND_LOST"}


def test_a_job_changer_s_regular_income_is_the_new_salary(home) -> None:
    """C_JOBCHANGE's old salary stopped in May and a new employer's (2,550) has paid twice: no recurring stream of its
    own yet (3 payments), but the old stream goes on under it (sql/features_customer.sql continued_streams): a
    regular income of 2,550 a month, next due a month after the new payer's latest payment. With a shortfall risk,
    no "your regular income is low" and no "help moving your salary here" (it arrives here)."""
    _, panel = home
    job = frame_row(panel.features, "C_JOBCHANGE")
    assert (job.has_regular_income, job.monthly_recurring_income, job.n_income_streams) == (1.0, 2550.0, 1.0)
    assert job.days_to_next_income == (date(2026, 8, 20) - END).days
    # weekly wages replaced by a monthly salary: monthly now, at the salary's amount, due a month after the last
    weekly = frame_row(panel.features, "C_WEEKLY")
    assert (weekly.has_regular_income, weekly.monthly_recurring_income, weekly.is_income_stopped) == (1.0, 1500.0, 0.0)
    assert weekly.days_to_next_income == (date(2026, 8, 15) - END).days
    lost = frame_row(panel.features, "C_LOST")
    assert (lost.has_regular_income, lost.monthly_recurring_income) == (0.0, 0.0)
    ctx = customers(*(context(panel, c, p_shortfall_30=0.55, p_shortfall_60=0.6) for c in NAMES))
    nba = run(ctx, top_k=30).next_best_actions
    told = nba[nba["customer_id"] == f"C{NAMES.index('C_JOBCHANGE'):04d}"]
    assert not told["reasons"].astype(str).str.contains("regular income is low|no regular income").any()
    assert "salary_switch_help" not in set(told["action_id"].astype(str))
    # the customer without any salary since May is still told it
    lost_told = nba[nba["customer_id"] == f"C{NAMES.index('C_LOST'):04d}"]
    assert lost_told["reasons"].astype(str).str.contains("regular income seems to have stopped").any()


def test_one_payment_of_a_new_payer_replaces_nothing(home) -> None:
    """C_ONEOFF: one payment of the salary's size from a new payer 21 days ago, after the salary stopped: no
    replacement (a bonus, a refund or a one-off transfer looks the same), but nothing said of the income either while
    it may be a new employer's first salary (is_income_pending: features.income_unknown). C_ONEOFF_OLD: the same
    payment 43 days ago and nothing since: the salary stopped. C_JOBCHANGE: the new payer's second payment
    confirmed the replacement."""
    paths, panel = home
    state = {c: (frame_row(panel.features, c).is_income_pending, frame_row(panel.features, c).is_income_stopped)
             for c in ("C_ONEOFF", "C_ONEOFF_OLD", "C_JOBCHANGE", "C_LOST")}
    assert state == {"C_ONEOFF": (1.0, 0.0), "C_ONEOFF_OLD": (0.0, 1.0), "C_JOBCHANGE": (0.0, 0.0),
                     "C_LOST": (0.0, 1.0)}
    assert frame_row(panel.features, "C_ONEOFF").has_regular_income == 0.0
    frame = panel.features.set_index("customer_id").loc[["C_ONEOFF", "C_ONEOFF_OLD", "C_JOBCHANGE"]].reset_index()
    assert list(features.income_unknown(frame)) == [True, False, False]
    life = life_features(paths)
    assert {c: (int(life.loc[c, "salary_stopped"]), int(life.loc[c, "is_income_pending"]))
            for c in ("C_ONEOFF", "C_ONEOFF_OLD")} == {"C_ONEOFF": (0, 1), "C_ONEOFF_OLD": (1, 0)}
    cfg = le.settings()
    for event in cfg["events"]:
        assert "is_income_pending" not in le.event_feature_columns(cfg, event, life.columns)


def test_the_new_job_rule_needs_a_salary_of_100_a_payment() -> None:
    """config/life_events.yaml new_job: a new salary payer, still paying, of 100 or more a payment (the largest
    new payer's typical payment, new_salary_payment_45d), on both sides of the threshold."""
    rule = le.settings()["events"]["new_job"]["rule"]
    frame = pd.DataFrame({"n_new_salary_payers_45d": [1, 1, 1, 0, 1],
                          "new_salary_payment_45d": [99.99, 100.0, 2550.0, 0.0, 0.0]})
    assert rule_fires(frame, rule).tolist() == [False, True, True, False, False]


def test_the_new_salary_payment_is_the_new_payer_s_typical_payment(home) -> None:
    paths, _ = home
    life = life_features(paths)
    # C_ONEOFF_OLD's one payment is 43 days old: it no longer pays, so it is no new job
    assert {c: life.loc[c, "new_salary_payment_45d"] for c in ("C_JOBCHANGE", "C_ODDJOB", "C_SMALLPAY", "C_ONEOFF_OLD")} \
        == {"C_JOBCHANGE": 2550.0, "C_ODDJOB": 300.0, "C_SMALLPAY": 40.0, "C_ONEOFF_OLD": 0.0}
    assert {c: life.loc[c, "n_new_salary_payers_45d"] for c in ("C_SMALLPAY", "C_ONEOFF_OLD")} == \
        {"C_SMALLPAY": 1, "C_ONEOFF_OLD": 1}


def test_a_one_off_and_a_small_payroll_on_the_night(night_rows) -> None:
    rows = night_rows
    # the pending one-off: neither a job loss nor a new job, not judged until a second payment or 40 days
    for event in ("job_loss", "new_job", "retirement"):
        row = rows.loc[("C_ONEOFF", event)]
        note = json.loads(row["evidence"])["note"]
        assert not row["flagged"] and note.startswith("not judged") and "paid once" in note, (event, note)
    # 43 days after the one-off: the salary stopped (its postings the evidence), and no new job
    assert rows.loc[("C_ONEOFF_OLD", "job_loss"), "flagged"]
    evidence = json.loads(rows.loc[("C_ONEOFF_OLD", "job_loss"), "evidence"])
    assert {t["label"] for t in evidence["transactions"]} == {"SALARY EMP-OLD C_ONEOFF_OLD"}
    assert not rows.loc[("C_ONEOFF_OLD", "new_job"), "flagged"]
    # a payroll of 40 a payment is judged and no new job
    assert not rows.loc[("C_SMALLPAY", "new_job"), "flagged"]
    assert not str(json.loads(rows.loc[("C_SMALLPAY", "new_job"), "evidence"]).get("note")).startswith("not judged")


def test_a_job_change_is_a_new_job_and_no_job_loss_on_the_night(night_rows) -> None:
    rows = night_rows
    flagged = {e: {c for (c, event), r in rows.iterrows() if event == e and r["flagged"]}
               for e in ("job_loss", "new_job")}
    assert flagged["job_loss"] == {"C_LOST", "C_ODDJOB", "C_ONEOFF_OLD"}
    # a salary from a new payer of 100 or more a payment is a new job (the new_job rule): the odd job's 300 too
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
