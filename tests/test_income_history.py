"""Income claims need history on every source (docs/operations.md, "History lengths"; docs/outputs.md, "Every
sentence true of the customer"): hand-made customers with 300 days of core history and an open-banking account
connected later, whose salary arrives only there, loaded through the real history load; their features
(sql/features_customer.sql income_history_days) and what decide and the drivers say of them.

At 40 days of open-banking history a monthly salary has been paid twice (no stream yet) and a weekly one six
times (a mature stream on 40 days of data): nothing may be said of the customer's regular income, present, missing or
small. At 110 days (features.income_known_days is 102) it may."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from pipelines import decide, features
from pipelines import event_forecast as ef
from tests.landing_builder import LandingBank
from tests.test_decide import customers, run
from tests.test_features import loaded

END = date(2026, 7, 31)
CORE_START = END - timedelta(days=299)          # 300 days of core history
GRANTED = datetime(2025, 9, 1, 12, 0, tzinfo=timezone.utc)

# customer -> (days of open-banking history, days between two salaries there)
CASES = {"C_OB40_M": (40, 30), "C_OB40_W": (40, 7), "C_OB110_M": (110, 30), "C_OB110_W": (110, 7)}


def make_bank() -> LandingBank:
    bank = LandingBank(end=END)
    for customer, (ob_days, every) in CASES.items():
        bank.customer(customer, since=CORE_START)
        bank.consent(customer, "open_banking", True, GRANTED)
        core, external = f"A_{customer}", f"OB_{customer}"
        bank.account(core, customer, CORE_START, opening_balance=20000, overdraft_limit="500.00")
        # the core account: rent by standing order on the 1st, groceries; no income
        rent_days = [d for d in (date(y, m, 1) for y in (2025, 2026) for m in range(1, 13)) if CORE_START < d <= END]
        bank.monthly(core, rent_days, "-900.00", "standing_order", "LANDLORD-1", "RENT LANDLORD-1")
        bank.card_spending(core, CORE_START, END, every=3, amount="-9.00")
        # the open-banking account, connected `ob_days` before END: the salary arrives there only
        first = END - timedelta(days=ob_days - 1)
        bank.account(external, customer, first, opening_balance=300, provider="alphabank")
        bank.card_spending(external, first, END, every=4, amount="-6.00")
        pay = [first + timedelta(days=4 + k * every) for k in range(ob_days) if 4 + k * every < ob_days]
        amount = "2400.00" if every == 30 else "600.00"
        bank.monthly(external, pay, amount, "salary", f"EMP-{customer}", f"SALARY EMP-{customer}")
    return bank


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    with loaded(tmp_path_factory, "income_history", make_bank()) as (_paths, _metrics, con):
        yield features.build_panel(con, [END])


def row(panel, customer: str) -> pd.Series:
    frame = panel.features
    return frame[frame["customer_id"] == customer].iloc[0]


def test_the_income_history_is_the_shortest_source_s(panel) -> None:
    for customer, (ob_days, _) in CASES.items():
        r = row(panel, customer)
        assert r.history_days == 300, customer                  # the cash position: the core account
        assert r.income_history_days == ob_days, customer       # the open-banking account's own history
    assert list(features.income_unknown(panel.features.set_index("customer_id").loc[list(CASES)]
                                        .reset_index())) == [True, True, False, False]


def test_a_weekly_salary_on_forty_days_of_data_is_a_stream_the_product_says_nothing_of(panel) -> None:
    """The features see it (a model may use it); the words may not."""
    r = row(panel, "C_OB40_W")
    assert r.has_regular_income == 1 and r.monthly_recurring_income > 0


def context(panel, customer: str, **changes) -> dict:
    """The decide context of a customer from its features (FEATURE_FIELDS), every other field healthy."""
    r = row(panel, customer)
    out = {name: (bool(r[name] > 0) if name in ("has_regular_income", "is_income_stopped") else float(r[name]))
           for name in decide.FEATURE_FIELDS if name in r.index}
    return out | {"has_external_current": True} | changes


INCOME_WORDS = ("regular income", "steady", "income arrives", "salary")


def said(decisions, customer: str) -> list[str]:
    nba = decisions.next_best_actions
    texts = nba.loc[nba["customer_id"] == customer, "reasons"].astype(str).tolist()
    return [t for t in texts if any(w in t for w in INCOME_WORDS)]


def test_forty_days_of_the_salary_s_source_say_nothing_of_a_regular_income(panel) -> None:
    """C0000 monthly, C0001 weekly at 40 days: no "your regular bills are larger than your regular income",
    no "you have a steady regular income", no "a regular income arrives each month", no salary switch ("no
    regular income arrives in your account here" is not known either). C0002, C0003: the same at 110 days."""
    ctx = customers(*(context(panel, c, p_shortfall_30=0.01) for c in CASES))
    decisions = run(ctx, top_k=30)
    full = decide.complete_context(ctx)
    assert full["is_income_known"].tolist() == [False, False, True, True]
    assert not full["has_regular_income"].iloc[:2].any()
    assert said(decisions, "C0000") == [] and said(decisions, "C0001") == []
    # 110 days: the monthly salary is a stream, the bills are not larger; the regular income may be spoken of
    assert full["has_regular_income"].iloc[2:].all()
    assert said(decisions, "C0002") and said(decisions, "C0003")


def test_forty_days_of_the_salary_s_source_make_no_low_income_claim(panel) -> None:
    """With a shortfall risk, "your regular income is low" (benefits_check) only once every source can show it."""
    ctx = customers(context(panel, "C_OB40_M", p_shortfall_30=0.4), context(panel, "C_OB110_M", p_shortfall_30=0.4,
                                                                          monthly_recurring_income=1000.0))
    nba = run(ctx, top_k=30).next_best_actions
    low = nba[nba["reasons"].astype(str).str.contains("regular income is low")]
    assert low["customer_id"].tolist() == ["C0001"]
    bills = nba[nba["reasons"].astype(str).str.contains("bills are larger than your regular income")]
    assert "C0000" not in bills["customer_id"].tolist()


@pytest.mark.parametrize("name,value", [("n_income_streams", 1.0), ("income_regularity", 0.5),
                                        ("has_regular_income", 0.0), ("days_to_next_income", 40.0),
                                        ("is_income_stopped", 1.0), ("days_since_income", 25.0),
                                        ("income_stream_early", 1.0)])
def test_income_forecast_drivers_need_every_source_s_history(name, value) -> None:
    phrases = ef.driver_phrases("income")
    values = pd.DataFrame({name: [value] * 3, "history_days": [300.0] * 3,
                           "income_history_days": [40.0, 110.0, np.nan]})
    texts = ef.driver_texts([[name]] * 3, values, phrases)
    assert texts[0] == phrases["default"], texts[0]             # 40 days on the salary's source: nothing
    assert texts[1] != phrases["default"] and texts[2] == texts[1]
