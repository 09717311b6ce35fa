"""Income claims and income events need the history of every ACCOUNT the income could arrive on, not only of every
source (sql/features_income_history.sql; docs/forecasting.md, "Short histories"; docs/life_events.md, "Income
events need the income's history"). Hand-made customers with 300 days of core history, loaded through the real
history load (which builds the feature store as of END), whose salary moved lately:

C_SWITCH   no income seen for 300 days (paid at another bank), then a current account opened here 30 days ago and
           the salary switched to it (one payment so far): not "your regular income is low", not "no regular income
           arrives here", not a new job (the salary is new to the data, not to the customer)
C_MOVED    a salary on the old account until May, a salary from another payer on a current account opened here 30
           days ago: not "a regular income seems to have stopped", not a job loss
C_OBJOB    a salary on the core account until May, then a salary on an external account connected through open
           banking 40 days ago: not a job loss
C_STOPPED  (300 days, nothing new) a salary until May, nothing since: the income stopped, a job loss, both said
C_STEADY   (300 days, nothing new) a small salary every month: "your regular income is low" is said

Before this, income_history_days was the history of the newest SOURCE (core: 300 days for C_SWITCH and C_MOVED),
and the life events had no history gate at all (C_MOVED and C_OBJOB flagged as job losses, C_SWITCH as a new job)."""
from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest

from models.life_event_classifier import LifeEventClassifier
from pipelines import decide, features, lake
from pipelines import life_events as le
from tests.landing_builder import LandingBank
from tests.test_decide import customers, run
from tests.test_features import loaded
from tests.test_income_history import context, said
from tests.test_life_events import FlagEveryone

END = date(2026, 7, 31)
CORE_START = END - timedelta(days=299)          # 300 days of core history
NEW_ACCOUNT = END - timedelta(days=29)          # a current account opened here 30 days ago
OB_FIRST = END - timedelta(days=39)             # an external account connected 40 days ago
GRANTED = datetime(2025, 9, 1, 12, 0, tzinfo=timezone.utc)
OLD_PAYDAYS = [date(2026, m, 25) for m in range(1, 6)] + [date(2025, m, 25) for m in (10, 11, 12)]
SHORT = ("C_SWITCH", "C_MOVED", "C_OBJOB")
LONG = ("C_STOPPED", "C_STEADY")


RENT_DAYS = [d for d in (date(y, m, 1) for y in (2025, 2026) for m in range(1, 13)) if CORE_START < d <= END]


def renting_customers(bank: LandingBank, names: tuple[str, ...]) -> None:
    """Customers of 300 days with the personalization and life-event consents, a core current account `A_<id>`, a
    monthly rent and card spending every third day."""
    for customer in names:
        bank.customer(customer, since=CORE_START)
        for purpose in ("personalization", "life_events"):
            bank.consent(customer, purpose, True, GRANTED)
        core = f"A_{customer}"
        bank.account(core, customer, CORE_START, opening_balance=20000, overdraft_limit="500.00")
        bank.monthly(core, RENT_DAYS, "-900.00", "standing_order", f"LANDLORD-{customer}", f"RENT {customer}")
        bank.card_spending(core, CORE_START, END, every=3, amount="-9.00")


def make_bank() -> LandingBank:
    bank = LandingBank(end=END)
    renting_customers(bank, (*SHORT, *LONG))
    old = [d for d in OLD_PAYDAYS if d > CORE_START]
    # the old salary, on the core account, until May
    for customer in ("C_MOVED", "C_OBJOB", "C_STOPPED"):
        bank.monthly(f"A_{customer}", old, "2400.00", "salary", f"EMP-OLD-{customer}", f"SALARY EMP-OLD {customer}")
    # a new current account here, 30 days old, carrying the (new) salary
    for customer in ("C_SWITCH", "C_MOVED"):
        new = f"B_{customer}"
        bank.account(new, customer, NEW_ACCOUNT, opening_balance=0)
        bank.card_spending(new, NEW_ACCOUNT, END, every=5, amount="-6.00")
        bank.monthly(new, [NEW_ACCOUNT + timedelta(days=5)], "2400.00", "salary", f"EMP-NEW-{customer}",
                     f"SALARY EMP-NEW {customer}")
    # an external current account connected 40 days ago, carrying the salary since
    bank.consent("C_OBJOB", "open_banking", True, GRANTED)
    bank.account("OB_C_OBJOB", "C_OBJOB", OB_FIRST, opening_balance=300, provider="alphabank")
    bank.card_spending("OB_C_OBJOB", OB_FIRST, END, every=4, amount="-6.00")
    bank.monthly("OB_C_OBJOB", [OB_FIRST + timedelta(days=10)], "2400.00", "salary", "PAYROLL-OBJOB",
                 "PAYROLL OBJOB LTD")
    # a small salary every month for 300 days
    bank.monthly("A_C_STEADY", [d + timedelta(days=24) for d in RENT_DAYS if d + timedelta(days=24) <= END], "900.00",
                 "salary", "EMP-STEADY", "SALARY EMP-STEADY")
    return bank


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with loaded(tmp_path_factory, "income_accounts", make_bank()) as (paths, _metrics, con):
        yield paths, features.build_panel(con, [END])


def frame_row(frame: pd.DataFrame, customer: str) -> pd.Series:
    return frame[frame["customer_id"] == customer].iloc[0]


def test_the_income_history_is_that_of_the_newest_current_account_or_source(home) -> None:
    _, panel = home
    expected = {"C_SWITCH": 30, "C_MOVED": 30, "C_OBJOB": 40, "C_STOPPED": 300, "C_STEADY": 300}
    for customer, days in expected.items():
        r = frame_row(panel.features, customer)
        assert r.history_days == 300, customer                  # the cash position: the core account since then
        assert r.income_history_days == days, customer
    frame = panel.features.set_index("customer_id").loc[list(expected)].reset_index()
    assert list(features.income_unknown(frame)) == [True, True, True, False, False]
    # what the features see: C_OBJOB's and C_STOPPED's old salaries stopped (the open-banking payroll does not read as
    # a salary, so it replaces none: the history gate holds C_OBJOB); C_MOVED's was replaced by a new payer's salary
    # (sql/features_income_payers.sql: no stopped income); C_SWITCH's is one payment
    assert [bool(frame_row(panel.features, c).is_income_stopped) for c in expected] == \
        [False, False, True, True, False]


def test_a_salary_switched_to_a_new_account_makes_no_income_claim(home) -> None:
    """With a shortfall risk: "your regular income is low" (benefits_check) and "a regular income seems to have
    stopped" only for the customers whose every account has the history to show it."""
    _, panel = home
    names = (*SHORT, *LONG)
    ctx = customers(*(context(panel, c, p_shortfall_30=0.55, p_shortfall_60=0.6) for c in names))
    full = decide.complete_context(ctx)
    assert full["is_income_known"].tolist() == [False, False, False, True, True]
    assert full["is_income_stopped"].tolist() == [False, False, False, True, False]
    nba = run(ctx, top_k=30).next_best_actions
    ids = {f"C{i:04d}": c for i, c in enumerate(names)}

    def who(text: str) -> set[str]:
        return {ids[c] for c in nba.loc[nba["reasons"].astype(str).str.contains(text), "customer_id"]}

    assert who("regular income is low") == {"C_STEADY"}
    assert who("regular income seems to have stopped") == {"C_STOPPED"}
    # the salary switch's "no regular income arrives in your account here": true of C_STOPPED alone
    assert who("no regular income arrives") == {"C_STOPPED"}
    for customer in SHORT:
        assert said(run(customers(context(panel, customer, p_shortfall_30=0.55)), top_k=30), "C0000") == [], customer


# ------------------------------------------------------------------------------------------------ the life events

@pytest.fixture(scope="module")
def night_rows(home, monkeypatch_module):
    """The night's life-event stage on the store load-history built as of END, every event on its rule."""
    paths, _ = home
    cfg = le.settings()
    model = LifeEventClassifier.rules_only(le.event_specs(cfg, []), "hand-made customers", le.model_params(cfg))
    model.version = "rules-only"                 # what the registry gives a loaded model
    monkeypatch_module.setattr(le, "load_model", lambda _paths, version=None: model)
    monkeypatch_module.setenv("SEGONE_HOME", str(paths.home))
    for bucket in le.shards():
        le.classify_life_events(paths, END, bucket)
    path = lake.partition_path(paths, "gold", "life_events", as_of=END.isoformat())
    rows = duckdb.sql(f"select * from read_parquet('{path}/**/*.parquet') order by customer_id, event_type").df()
    return rows.set_index(["customer_id", "event_type"])


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def life_features(paths) -> pd.DataFrame:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGONE_HOME", str(paths.home))
        return le.build_features(paths, END, [END]).set_index("customer_id")


def test_the_life_event_features_carry_the_same_history(home) -> None:
    paths, panel = home
    life = life_features(paths)
    for customer in (*SHORT, *LONG):
        assert life.loc[customer, "income_history_days"] == frame_row(panel.features, customer).income_history_days
    # the features still see the new salaries (the models may); the gate is on what is said. A salary that a new
    # payer's replaced did not stop (C_MOVED: tests/test_income_replacement.py)
    assert [int(life.loc[c, "salary_stopped"]) for c in ("C_MOVED", "C_OBJOB", "C_STOPPED")] == [0, 1, 1]
    assert life.loc["C_SWITCH", "n_new_salary_payers_45d"] == 1
    cfg = le.settings()
    for event in cfg["events"]:
        assert "income_history_days" not in le.event_feature_columns(cfg, event, life.columns)


def test_a_salary_moved_to_a_new_account_is_no_job_loss_on_the_night(night_rows) -> None:
    rows = night_rows
    flagged = {c for (c, e), r in rows.iterrows() if e == "job_loss" and r["flagged"]}
    assert flagged == {"C_STOPPED"}
    evidence = json.loads(rows.loc[("C_STOPPED", "job_loss"), "evidence"])
    assert {t["label"] for t in evidence["transactions"]} == {"SALARY EMP-OLD C_STOPPED"}
    assert {t["signal"] for t in evidence["transactions"]} == {"stopped_salary"}
    for customer in ("C_MOVED", "C_OBJOB", "C_SWITCH"):
        row = rows.loc[(customer, "job_loss")]
        shown = json.loads(row["evidence"])
        assert not row["flagged"] and "transactions" not in shown, customer
        assert shown["note"].startswith("not judged: the event is inferred from the customer's income"), shown
    days = {"C_MOVED": 30, "C_OBJOB": 40, "C_SWITCH": 30}
    for customer, n in days.items():
        assert f"has {n} days of history" in json.loads(rows.loc[(customer, "job_loss"), "evidence"])["note"]
    # a salary new to the data, on a 30-day account, is no new job; the rule-published events keep their rule note
    assert not rows.loc[("C_SWITCH", "new_job"), "flagged"]
    assert not rows.loc[("C_MOVED", "new_job"), "flagged"]
    assert json.loads(rows.loc[("C_STOPPED", "moving_home"), "evidence"])["note"].startswith("published by the")


def test_a_model_s_income_event_is_neither_flagged_nor_scored_on_a_short_history(home) -> None:
    """A model that flags everyone (tests/test_life_events.FlagEveryone): the income events of the customers whose
    newest account is too new to show the income are withheld, probability and flag; every other event and
    customer stays as the model scored it."""
    paths, _ = home
    cfg = le.settings()
    life = life_features(paths).reset_index()
    life["cutoff"] = pd.Timestamp(END)
    life = le.add_rule_features(life, cfg)
    consent = pd.DataFrame({"customer_id": life["customer_id"], "life_events": True, "personalization": True,
                            "location": True})
    con = lake.connect()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SEGONE_HOME", str(paths.home))
            le.register_inputs(con, paths, END, [END], None, cfg)
            rows = le.score_rows(FlagEveryone(cfg), con, life, consent, END, cfg).set_index(
                ["customer_id", "event_type"])
    finally:
        con.close()
    income_events = [e for e, spec in cfg["events"].items() if spec.get("needs_income_history")]
    assert sorted(income_events) == ["job_loss", "new_job", "retirement"]
    for (customer, event), row in rows.iterrows():
        withheld = customer in SHORT and event in income_events
        assert bool(row["flagged"]) is (not withheld), (customer, event)
        assert bool(np.isnan(row["probability"])) is withheld, (customer, event)


def test_an_event_citing_an_income_stream_must_need_the_income_s_history() -> None:
    cfg = copy.deepcopy(le.settings())
    le.check_settings(cfg)
    del cfg["events"]["job_loss"]["needs_income_history"]
    with pytest.raises(le.SegoneError, match="job_loss cites income streams"):
        le.check_settings(cfg)
