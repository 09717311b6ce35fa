"""Features (pipelines/features.py, sql/features_*.sql) on a hand-made bank loaded through the real history load.

Every customer has a deterministic daily life (tests/landing_builder.py) written as landing files, loaded with
`stages.load_history`, and the panel is built once for the module; each test checks values it can work out from
the postings it wrote.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import features, lake
from pipelines.config import Paths
from pipelines.stages import load_history
from tests.landing_builder import LandingBank, days_between

START = date(2026, 1, 1)
END = date(2026, 7, 31)                  # the history's last day, and the main cut-off
EARLY = date(2026, 5, 31)                # a cut-off while the stopped salary was still paid
MID = date(2026, 6, 15)                  # a cut-off before the closed-account customer lost it
BEFORE_CLOSE = date(2026, 5, 1)
OB_FIRST_REPORT = date(2026, 6, 1)       # C_OBLATE's provider reports its first balance (after EARLY, before MID)          # a cut-off while both of C_TWO's current accounts were open
LABEL_CUT = date(2026, 6, 15)            # labels: the shortfall comes SHORTFALL_AFTER days after this cut-off
SHORTFALL_AFTER = 12
HORIZONS = (10, 11, 12, 30, 45, 60)      # 60 reaches past the history (2026-08-14): no label
GAP_DAY = date(2026, 6, 10)
CLOSED_ON = date(2026, 5, 15)


def month_days(day_of_month: int, first_month: int, last_month: int, year: int = 2026) -> list[date]:
    return [date(year, m, day_of_month) for m in range(first_month, last_month + 1)]


def daily_life(bank: LandingBank, account_id: str, salary: str = "2400.00", employer: str = "EMP-ACME",
               rent: str = "-900.00", landlord: str = "LANDLORD-1", salary_months: tuple[int, int] = (1, 7),
               rent_days: list[date] | None = None, first: date = START, last: date = END) -> None:
    """Salary from one employer on the 25th, rent by standing order on the 1st, groceries every third day."""
    bank.monthly(account_id, month_days(25, *salary_months), salary, "salary", employer, f"SALARY {employer}")
    bank.monthly(account_id, rent_days if rent_days is not None else month_days(1, 1, 7), rent, "standing_order",
                 landlord, f"RENT {landlord}")
    bank.card_spending(account_id, first, last)


def make_bank() -> LandingBank:
    bank = LandingBank(end=END)

    # 1. a salary paid Jan-May on the 25th, then nothing for 67 days before END
    bank.customer("C_SALSTOP")
    bank.account("A_SALSTOP", "C_SALSTOP", date(2025, 6, 1), opening_balance=3000)
    daily_life(bank, "A_SALSTOP", salary="2500.00", employer="EMP-STOPS", salary_months=(1, 5))

    # 2. rent on the 1st Jan-Apr, then on the 15th May-Jul
    bank.customer("C_RENTMOVE")
    bank.account("A_RENTMOVE", "C_RENTMOVE", date(2024, 3, 1), opening_balance=1500)
    daily_life(bank, "A_RENTMOVE", salary="2200.00", employer="EMP-BETA", rent="-850.00", landlord="LANDLORD-M",
               rent_days=month_days(1, 1, 4) + month_days(15, 5, 7))

    # 3. four days of history
    bank.customer("C_SHORT", since=date(2026, 7, 28))
    bank.account("A_SHORT", "C_SHORT", date(2026, 7, 28))
    bank.post("A_SHORT", date(2026, 7, 28), "300.00", "transfer_in", description="OPENING DEPOSIT")
    for i, amount in enumerate(("-20.00", "-15.00", "-10.00"), start=1):
        bank.post("A_SHORT", date(2026, 7, 28) + timedelta(days=i), amount, "card", description="CAFE",
                  merchant_name="Cafe Nero", mcc="5814")

    # 3b. a new customer paid twice so far: a monthly salary the history is too short to see as a stream yet
    bank.customer("C_NEWPAY", since=date(2026, 6, 20))
    bank.account("A_NEWPAY", "C_NEWPAY", date(2026, 6, 20), opening_balance=400)
    bank.monthly("A_NEWPAY", [date(2026, 6, 25), date(2026, 7, 25)], "2100.00", "salary", "EMP-NEW", "SALARY EMP-NEW")
    bank.card_spending("A_NEWPAY", date(2026, 6, 21), END, every=1, amount="-60.00")

    # 4a. two current accounts, the second closed on CLOSED_ON with 250.00 still reported on it
    bank.customer("C_TWO")
    bank.account("A_TWO_MAIN", "C_TWO", date(2023, 1, 1), opening_balance=2000, overdraft_limit="200.00")
    daily_life(bank, "A_TWO_MAIN", employer="EMP-TWO", landlord="LANDLORD-T")
    second = bank.account("A_TWO_SIDE", "C_TWO", date(2023, 1, 1), closed_on=CLOSED_ON, opening_balance=380,
                          overdraft_limit="500.00")
    bank.card_spending("A_TWO_SIDE", START, date(2026, 5, 10), every=10, amount="-10.00")
    assert second.eod(CLOSED_ON) == Decimal("250.00")

    # 4b. the only current account closed on 2026-06-30 (a savings account stays open)
    bank.customer("C_GONE")
    bank.account("A_GONE", "C_GONE", date(2022, 1, 1), closed_on=date(2026, 6, 30), opening_balance=1200)
    bank.card_spending("A_GONE", START, date(2026, 6, 28), every=4, amount="-5.00")
    bank.account("A_GONE_SAV", "C_GONE", date(2022, 1, 1), product="savings", opening_balance=5000,
                 overdraft_limit=None)
    bank.post("A_GONE_SAV", date(2026, 2, 1), "1.25", "interest", description="INTEREST")

    # 5. open banking only: no account at this bank, one consented external current account
    bank.customer("C_OBONLY")
    bank.consent("C_OBONLY", "open_banking", True, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc))
    bank.account("OBACC1", "C_OBONLY", START, opening_balance=800, provider="alphabank")
    bank.monthly("OBACC1", month_days(25, 1, 7), "1900.00", "transfer_in", None, "SALARY ACME LTD")
    bank.monthly("OBACC1", month_days(2, 1, 7), "-700.00", "transfer_out", None, "RENT FLAT B")
    bank.card_spending("OBACC1", START, END, every=2, amount="-8.40")

    # 5c. open banking only, the provider's balances first fetched on OB_FIRST_REPORT (postings from START): before
    # it the bank did not know where the account stood
    bank.customer("C_OBLATE")
    bank.consent("C_OBLATE", "open_banking", True, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc))
    late = bank.account("OBACC3", "C_OBLATE", START, opening_balance=4200, provider="alphabank")
    late.balances_from = OB_FIRST_REPORT
    bank.monthly("OBACC3", month_days(25, 1, 7), "1500.00", "transfer_in", None, "SALARY BETA LTD")
    bank.card_spending("OBACC3", START, END, every=1, amount="-45.00")

    # 5d. open banking only, a provider that never reports a balance (postings only)
    bank.customer("C_OBNOBAL")
    bank.consent("C_OBNOBAL", "open_banking", True, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc))
    bank.account("OBACC4", "C_OBNOBAL", START, opening_balance=3000, provider="betabank", balances="none")
    bank.card_spending("OBACC4", START, END, every=1, amount="-12.00")

    # 6. a reported balance 100.00 above the previous balance plus the postings, from GAP_DAY on
    bank.customer("C_RECON")
    recon = bank.account("A_RECON", "C_RECON", date(2021, 5, 1), opening_balance=1000)
    daily_life(bank, "A_RECON", employer="EMP-RECON", landlord="LANDLORD-R")
    recon.offsets[GAP_DAY] = Decimal("100.00")
    # two card purchases abroad: the account moves by the base-currency amount (100.00 EUR = 86.43 GBP)
    bank.post("A_RECON", date(2026, 7, 20), "-100.00", "card", description="RESTAURANT PARIS",
              merchant_name="Chez Paul", mcc="5812", currency="EUR")
    bank.post("A_RECON", date(2026, 7, 21), "-25.00", "card", description="DINER NYC", merchant_name="Diner",
              mcc="5812", currency="USD")
    assert [p.settled for p in recon.postings[-2:]] == [Decimal("-86.43"), Decimal("-19.75")]

    # 5b. a current account here and a consented external one: the cash position is this bank's account only
    bank.customer("C_MIXED")
    bank.consent("C_MIXED", "open_banking", True, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc))
    bank.account("A_MIXED", "C_MIXED", date(2021, 5, 1), opening_balance=900)
    daily_life(bank, "A_MIXED", employer="EMP-MIXED", landlord="LANDLORD-X")
    bank.account("OBACC2", "C_MIXED", START, opening_balance=3100, provider="betabank")
    bank.card_spending("OBACC2", START, END, every=5, amount="-21.00")

    # 7. balances reported only on days with postings (like the Berka data)
    bank.customer("C_SPARSE")
    bank.account("A_SPARSE", "C_SPARSE", date(2021, 5, 1), opening_balance=1500, balances="posting_days")
    bank.monthly("A_SPARSE", month_days(25, 1, 7), "1800.00", "salary", "EMP-SPARSE", "SALARY")
    for day in days_between(START, END):
        if day.weekday() in (0, 3):                       # Mondays and Thursdays
            bank.post("A_SPARSE", day, "-31.20", "card", description="SHOP", merchant_name="Shop", mcc="5411")

    # 7b. a balance reported only on Sundays, the first one three days after the first postings
    bank.customer("C_WEEKLY")
    weekly = bank.account("A_WEEKLY", "C_WEEKLY", date(2021, 5, 1), opening_balance=700, balances="sundays")
    daily_life(bank, "A_WEEKLY", employer="EMP-WEEKLY", landlord="LANDLORD-W")
    assert bank.balance_days(weekly)[0] == date(2026, 1, 4)

    # 8. a balance that goes below zero exactly SHORTFALL_AFTER days after LABEL_CUT, then recovers
    bank.customer("C_LABEL")
    bank.account("A_LABEL", "C_LABEL", date(2021, 5, 1), opening_balance=2000)
    for day in days_between(START, END):
        bank.post("A_LABEL", day, "-5.00", "card", description="COFFEE", merchant_name="Costa", mcc="5814")
    bank.post("A_LABEL", LABEL_CUT + timedelta(days=SHORTFALL_AFTER), "-1500.00", "direct_debit",
              description="CAR INSURANCE", counterparty_id="INSURER-1")
    bank.post("A_LABEL", date(2026, 7, 3), "1000.00", "transfer_in", description="FROM SAVINGS")
    return bank


@contextmanager
def loaded(tmp_path_factory, name: str, bank: LandingBank):
    """A private SEGONE_HOME holding `bank` loaded by the history load, and a connection registered as of END.

    In two customer buckets instead of 16 (a SEGONE_SETTINGS overlay, set while the bank is in use): the history
    load builds the feature store a bucket at a time, and 16 buckets of a few hand-made customers are 16 builds of
    the same fixed cost, most of them on no customer; two still split the bank (the bucket-by-bucket test checks it
    spans both)."""
    home = tmp_path_factory.mktemp(name) / "segone"
    home.mkdir()
    overlay = home.parent / "settings.yaml"
    overlay.write_text(yaml.safe_dump({"segone": {"lake": {"n_buckets": 2}}}), encoding="utf-8")
    saved = {key: os.environ.get(key) for key in ("SEGONE_HOME", "SEGONE_SETTINGS")}
    os.environ["SEGONE_HOME"] = str(home)
    os.environ["SEGONE_SETTINGS"] = str(overlay)
    try:
        paths = Paths(home)
        bank.write(paths.landing_history)
        metrics = load_history(paths)
        con = lake.connect()
        features.register_silver(con, paths, END)
        try:
            yield paths, metrics, con
        finally:
            con.close()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One hand-made bank, loaded once; the panel at BEFORE_CLOSE, EARLY, MID and END with labels."""
    bank = make_bank()
    with loaded(tmp_path_factory, "features", bank) as (paths, metrics, con):
        panel = features.build_panel(con, [BEFORE_CLOSE, EARLY, MID, END], horizons=HORIZONS, with_labels=True,
                                     series_days=400)
        yield {"paths": paths, "bank": bank, "metrics": metrics, "con": con, "panel": panel}


def test_a_short_series_window_gives_the_same_features_as_the_whole_history(world) -> None:
    """The nightly run builds the series from 120 days before D, seeded with the last balance reported before the
    window (carried forward with the postings in between): every feature must equal the whole-history build."""
    short = features.build_panel(world["con"], [END], horizons=HORIZONS)
    full = world["panel"].features
    full = full[full["cutoff"] == pd.Timestamp(END)].reset_index(drop=True)
    pd.testing.assert_frame_equal(short.features.reset_index(drop=True), full, check_exact=False, atol=0.01)
    assert short.series["ds"].min() == pd.Timestamp(END - timedelta(days=119))


def feature_row(panel, customer_id: str, cutoff: date) -> pd.Series:
    rows = panel.features[(panel.features.customer_id == customer_id)
                          & (panel.features.cutoff == pd.Timestamp(cutoff))]
    assert len(rows) == 1, f"{customer_id} at {cutoff}: {len(rows)} feature rows"
    return rows.iloc[0]


def series_of(panel, customer_id: str) -> pd.Series:
    rows = panel.series[panel.series.customer_id == customer_id]
    return pd.Series(rows["value"].to_numpy(), index=[ts.date() for ts in rows["ds"]])


def streams_of(panel, customer_id: str, cutoff: date) -> pd.DataFrame:
    s = panel.streams
    s = s[(s.customer_id == customer_id) & (pd.to_datetime(s.cutoff) == pd.Timestamp(cutoff))].copy()
    for column in ("first_date", "last_date", "next_expected_date"):
        s[column] = pd.to_datetime(s[column]).dt.date
    return s


def test_the_history_loads_clean(world) -> None:
    """Nothing hand-made is quarantined, so every later number is about the features, not the ingest."""
    conform = world["metrics"]["conform"]
    assert conform["quarantined"] == 0
    kinds = world["metrics"]["ingest"]["kinds"]
    assert all(int(k.get("rows_quarantined", 0)) == 0 for k in kinds.values()), kinds


# --- 1. a salary that stops ------------------------------------------------------------------------------------

def test_a_salary_that_stops_is_stopped_income(world) -> None:
    panel = world["panel"]
    stream = streams_of(panel, "C_SALSTOP", END)
    salary = stream[stream.stream_key == "EMP-STOPS"]
    assert len(salary) == 1
    salary = salary.iloc[0]
    assert (salary.direction, salary.cadence, salary.lifecycle) == ("in", "monthly", "stopped")
    assert salary.n_occurrences == 5 and salary.last_date == date(2026, 5, 25)
    assert salary.amount == pytest.approx(2500.0)

    row = feature_row(panel, "C_SALSTOP", END)
    assert row.is_income_stopped == 1
    assert row.has_regular_income == 0
    assert row.days_since_income == (END - date(2026, 5, 25)).days == 67
    assert row.n_income_streams == 0
    assert row.monthly_recurring_income == 0
    assert row.income_90 == pytest.approx(2500.0)       # only the 25 May salary is inside the 90 days
    assert pd.isna(row.days_to_next_income)


def test_the_same_salary_while_still_paid_is_mature_regular_income(world) -> None:
    panel = world["panel"]
    salary = streams_of(panel, "C_SALSTOP", EARLY)
    salary = salary[salary.stream_key == "EMP-STOPS"].iloc[0]
    assert (salary.direction, salary.cadence, salary.lifecycle) == ("in", "monthly", "mature")
    assert salary.regularity == pytest.approx(1.0)
    assert salary.next_expected_date == date(2026, 6, 25)

    row = feature_row(panel, "C_SALSTOP", EARLY)
    assert row.has_regular_income == 1
    assert row.is_income_stopped == 0
    assert row.days_since_income == 6
    assert row.n_income_streams == 1
    assert row.monthly_recurring_income == pytest.approx(2500.0)
    assert row.days_to_next_income == (date(2026, 6, 25) - EARLY).days


def test_income_on_no_stream_is_unscheduled_income(world) -> None:
    """A salary seen twice (a month or two of history) is income but no stream yet: unscheduled_income_90, which
    the baseline projects at its average rate; a salary on its stream is not, nor is a deposit on no income channel."""
    panel = world["panel"]
    new = feature_row(panel, "C_NEWPAY", END)
    assert new.n_income_streams == 0 and new.history_days == 41
    assert new.income_90 == pytest.approx(4200.0) and new.unscheduled_income_90 == pytest.approx(4200.0)
    assert feature_row(panel, "C_SALSTOP", EARLY).unscheduled_income_90 == 0       # the salary is on its stream
    assert feature_row(panel, "C_SHORT", END).unscheduled_income_90 == 0           # an opening deposit is no income


def test_the_baseline_projects_the_income_it_cannot_place_on_a_date_yet(world) -> None:
    """C_NEWPAY spends less than the two salaries seen: without its unscheduled income the baseline would project
    its balance down to zero within 60 days (every salary of a young bank missing, a shortfall warning for most)."""
    from models.baseline_engine import forecast_baseline

    panel = world["panel"]
    rows = panel.features[(panel.features.customer_id == "C_NEWPAY")
                          & (panel.features.cutoff == pd.Timestamp(END))].reset_index(drop=True)
    streams = panel.streams[panel.streams.customer_id == "C_NEWPAY"].reset_index(drop=True)
    assert streams.empty
    p = forecast_baseline(rows, streams, horizons=(30, 60, 90)).set_index("horizon_days")["p_shortfall"]
    assert p.max() < 0.05, p.to_dict()
    without = forecast_baseline(rows.assign(unscheduled_income_90=0.0), streams, horizons=(30, 60, 90))
    assert without.set_index("horizon_days").loc[60, "p_shortfall"] > 0.5       # what main forecast


# --- 2. a rent that moves ---------------------------------------------------------------------------------------

def test_a_rent_that_moves_day_stays_one_monthly_stream(world) -> None:
    panel = world["panel"]
    streams = streams_of(panel, "C_RENTMOVE", END)
    outgoing = streams[streams.direction == "out"]
    assert list(outgoing.stream_key) == ["LANDLORD-M"]
    rent = outgoing.iloc[0]
    assert rent.cadence == "monthly"
    assert rent.lifecycle == "mature"
    assert rent.n_occurrences == 7
    assert rent.last_date == date(2026, 7, 15)
    assert rent.next_expected_date == date(2026, 8, 15)
    assert rent.amount == pytest.approx(-850.0)

    row = feature_row(panel, "C_RENTMOVE", END)
    assert row.n_outgoing_streams == 1
    assert row.monthly_recurring_outgoings == pytest.approx(850.0)
    assert row.has_regular_income == 1


# --- 3. four days of history -------------------------------------------------------------------------------------

def test_a_customer_with_four_days_of_history(world) -> None:
    panel = world["panel"]
    row = feature_row(panel, "C_SHORT", END)
    assert row.history_days == 4
    assert row.balance_now == pytest.approx(255.0)
    assert row.n_days_negative_90 == 0
    assert row.n_income_streams == 0 and row.has_regular_income == 0
    assert (panel.features.customer_id == "C_SHORT").sum() == 1     # nothing at the earlier cut-offs
    assert list(series_of(panel, "C_SHORT").round(2)) == [300.0, 280.0, 265.0, 255.0]
    # no label at all: every window after END runs past the history
    assert not (panel.labels.customer_id == "C_SHORT").any()


def test_labels_only_for_windows_the_data_covers(world) -> None:
    """A second build on the same lake: at 29 July a two-day window is covered, a 30-day one is not."""
    con = world["con"]
    panel = features.build_panel(con, [date(2026, 7, 29), END], horizons=(2, 30), with_labels=True)
    short = panel.labels[panel.labels.customer_id == "C_SHORT"]
    assert list(zip(short.cutoff.dt.date, short.horizon_days)) == [(date(2026, 7, 29), 2)]
    assert short.iloc[0].min_balance == pytest.approx(255.0) and not short.iloc[0].is_shortfall
    assert feature_row(panel, "C_SHORT", date(2026, 7, 29)).history_days == 2
    # and no customer has a label at END, the history's last day
    assert not (panel.labels.cutoff == pd.Timestamp(END)).any()


# --- 4. closed accounts ------------------------------------------------------------------------------------------

def test_after_one_of_two_current_accounts_closes_the_series_is_the_other_one(world) -> None:
    bank, panel = world["bank"], world["panel"]
    main, side = bank.accounts["A_TWO_MAIN"], bank.accounts["A_TWO_SIDE"]
    series = series_of(panel, "C_TWO")
    assert series.index[0] == START and series.index[-1] == END
    assert len(series) == len(days_between(START, END))
    before = date(2026, 5, 14)
    assert series[before] == pytest.approx(float(main.eod(before) + side.eod(before)))
    for day in days_between(CLOSED_ON + timedelta(days=1), END):
        assert series[day] == pytest.approx(float(main.eod(day))), day
    row = feature_row(panel, "C_TWO", END)
    assert row.balance_now == pytest.approx(float(main.eod(END)))
    assert row.overdraft_limit == pytest.approx(200.0)               # the closed account's limit is gone
    assert row.headroom_now == pytest.approx(float(main.eod(END)) + 200.0)
    row = feature_row(panel, "C_TWO", BEFORE_CLOSE)
    assert row.balance_now == pytest.approx(float(main.eod(BEFORE_CLOSE) + side.eod(BEFORE_CLOSE)))
    assert row.overdraft_limit == pytest.approx(700.0)


def test_a_customer_whose_only_current_account_closed_has_no_row(world) -> None:
    bank, panel = world["bank"], world["panel"]
    assert not ((panel.features.customer_id == "C_GONE") & (panel.features.cutoff == pd.Timestamp(END))).any()
    row = feature_row(panel, "C_GONE", MID)          # still open at the middle cut-off
    assert row.balance_now == pytest.approx(float(bank.accounts["A_GONE"].eod(MID)))
    assert row.savings_balance == pytest.approx(5001.25)
    assert series_of(panel, "C_GONE").index[-1] == date(2026, 6, 30)
    # labels: a window that runs past the closing date is not covered, so it has no label
    labels = panel.labels[(panel.labels.customer_id == "C_GONE") & (panel.labels.cutoff == pd.Timestamp(MID))]
    assert sorted(labels.horizon_days) == [10, 11, 12]


# --- 5. open banking only ----------------------------------------------------------------------------------------

def test_a_customer_with_only_open_banking_data_gets_features(world) -> None:
    bank, panel = world["bank"], world["panel"]
    acc = bank.accounts["OBACC1"]
    row = feature_row(panel, "C_OBONLY", END)
    assert row.balance_now == pytest.approx(float(acc.eod(END)))
    assert row.history_days == (END - START).days + 1
    assert row.has_reported_balance == 1
    series = series_of(panel, "C_OBONLY")
    assert len(series) == len(days_between(START, END))
    assert all(series[d] == pytest.approx(float(acc.eod(d))) for d in series.index)
    streams = streams_of(panel, "C_OBONLY", END)
    income = streams[streams.direction == "in"]
    assert list(income.stream_key) == ["SALARY ACME LTD"]
    assert income.iloc[0].lifecycle == "mature" and income.iloc[0].cadence == "monthly"
    assert row.has_regular_income == 1
    assert row.n_outgoing_streams == 1                  # RENT FLAT B
    assert row.days_since_income == (END - date(2026, 7, 25)).days
    assert row.external_balance == 0 and row.n_external_accounts == 0   # it is the cash position, not a holding


def test_an_account_whose_level_the_bank_never_had_makes_no_cash_position(world) -> None:
    """Postings alone say how an account moved, not where it stood: summed from zero they made a position of
    a level far from the 4,200 the customer had. A cut-off before the provider's first balance
    report, or any cut-off for a provider that reports none, has no row for the customer; one after it has the true
    level, rebuilt back from that report."""
    bank, panel = world["bank"], world["panel"]
    keys = set(zip(panel.features["customer_id"], pd.to_datetime(panel.features["cutoff"]).dt.date))
    assert ("C_OBLATE", EARLY) not in keys and ("C_OBLATE", BEFORE_CLOSE) not in keys
    for cutoff in (MID, END):
        row = feature_row(panel, "C_OBLATE", cutoff)
        assert row.balance_now == pytest.approx(float(bank.accounts["OBACC3"].eod(cutoff)))
        assert row.balance_min_90 == pytest.approx(min(float(bank.accounts["OBACC3"].eod(cutoff - timedelta(days=k)))
                                                       for k in range(90)))
        assert row.has_reported_balance == 1
    assert not any(c == "C_OBNOBAL" for c, _ in keys)


def test_a_consented_external_account_next_to_a_current_account_here_is_a_holding(world) -> None:
    bank, panel = world["bank"], world["panel"]
    core, external = bank.accounts["A_MIXED"], bank.accounts["OBACC2"]
    series = series_of(panel, "C_MIXED")
    assert all(series[d] == pytest.approx(float(core.eod(d))) for d in series.index)
    row = feature_row(panel, "C_MIXED", END)
    assert row.balance_now == pytest.approx(float(core.eod(END)))
    assert row.external_balance == pytest.approx(float(external.eod(END)))
    assert row.n_external_accounts == 1
    assert row.n_outgoing_streams == 1                  # LANDLORD-X; the external card spending is not read


# --- 6. reconciliation -------------------------------------------------------------------------------------------

def test_a_balance_that_disagrees_with_the_postings_is_reported_and_kept(world) -> None:
    bank, panel = world["bank"], world["panel"]
    recon = panel.reconciliation
    assert list(recon.account_id) == ["A_RECON"]        # every other hand-made account reconciles
    gap = recon.iloc[0]
    assert gap.customer_id == "C_RECON"
    assert gap.n_gap_days == 1
    assert gap.total_abs_gap == pytest.approx(100.0)
    assert pd.Timestamp(gap.first_gap_day).date() == GAP_DAY == pd.Timestamp(gap.last_gap_day).date()
    acc = bank.accounts["A_RECON"]
    series = series_of(panel, "C_RECON")
    assert series[GAP_DAY] == pytest.approx(float(acc.reported(GAP_DAY)))
    assert series[GAP_DAY] == pytest.approx(float(acc.eod(GAP_DAY)) + 100.0)
    assert series[GAP_DAY - timedelta(days=1)] == pytest.approx(float(acc.eod(GAP_DAY - timedelta(days=1))))


# --- 7. balances only on posting days --------------------------------------------------------------------------

def test_balances_reported_only_on_posting_days_are_carried_forward(world) -> None:
    bank, panel = world["bank"], world["panel"]
    acc = bank.accounts["A_SPARSE"]
    reported = {day: acc.reported(day) for day in bank.balance_days(acc)}
    assert len(reported) < 100                          # two or three days a week
    series = series_of(panel, "C_SPARSE")
    first = min(reported)
    assert series.index[0] == first and series.index[-1] == END
    assert len(series) == len(days_between(first, END))
    last = None
    for day in days_between(first, END):
        last = reported.get(day, last)
        assert series[day] == pytest.approx(float(last)), day
    row = feature_row(panel, "C_SPARSE", END)
    assert row.balance_now == pytest.approx(float(last))
    assert row.has_reported_balance == 1


def test_between_weekly_balances_the_postings_move_the_series(world) -> None:
    """Carried forward from the last reported balance with the postings since, and back from the first one."""
    bank, panel = world["bank"], world["panel"]
    acc = bank.accounts["A_WEEKLY"]
    series = series_of(panel, "C_WEEKLY")
    assert series.index[0] == START and series.index[-1] == END
    assert len(series) == len(days_between(START, END))
    for day in days_between(START, END):
        assert series[day] == pytest.approx(float(acc.eod(day))), day
    assert "A_WEEKLY" not in set(panel.reconciliation.account_id)


# --- 8. labels ---------------------------------------------------------------------------------------------------

def test_labels_of_a_shortfall_twelve_days_after_the_cutoff(world) -> None:
    bank, panel = world["bank"], world["panel"]
    acc = bank.accounts["A_LABEL"]
    labels = panel.labels[(panel.labels.customer_id == "C_LABEL") & (panel.labels.cutoff == pd.Timestamp(LABEL_CUT))]
    by_horizon = labels.set_index("horizon_days")
    assert sorted(by_horizon.index) == [10, 11, 12, 30, 45]            # 60 days would run past END
    for horizon in (10, 11, 12, 30, 45):
        window = [acc.eod(LABEL_CUT + timedelta(days=i)) for i in range(1, horizon + 1)]
        label = by_horizon.loc[horizon]
        assert bool(label.is_shortfall) == (horizon >= SHORTFALL_AFTER), horizon
        assert label.min_balance == pytest.approx(float(min(window))), horizon
        if horizon >= SHORTFALL_AFTER:
            assert label.days_to_shortfall == SHORTFALL_AFTER
        else:
            assert pd.isna(label.days_to_shortfall)
    assert acc.eod(LABEL_CUT + timedelta(days=SHORTFALL_AFTER - 1)) > 0 > acc.eod(
        LABEL_CUT + timedelta(days=SHORTFALL_AFTER))
    # the features at that cut-off read nothing after it
    row = feature_row(panel, "C_LABEL", LABEL_CUT)
    assert row.balance_now == pytest.approx(float(acc.eod(LABEL_CUT)))
    assert row.n_days_negative_90 == 0


# --- the balance and flow features against the ledger ---------------------------------------------------------

def expected_features(values: dict[date, float], postings: list, cutoff: date) -> dict[str, float]:
    """The balance and flow features worked out by hand from the daily cash position and the postings."""
    days = [cutoff - timedelta(days=back) for back in range(90) if cutoff - timedelta(days=back) in values]
    v90 = np.array([values[d] for d in days])
    back = np.array([(cutoff - d).days for d in days])
    v30, v7 = v90[back < 30], v90[back < 7]
    recent = [p for p in postings if 0 <= (cutoff - p.day).days < 30]
    window = [p for p in postings if 0 <= (cutoff - p.day).days < 90]
    spend = {}
    for p in recent:
        if p.amount < 0 and p.channel == "card":
            spend[p.day] = spend.get(p.day, 0.0) + float(-p.settled)
    daily = np.array([spend.get(cutoff - timedelta(days=b), 0.0) for b in range(30)])
    return {
        "balance_now": values[cutoff],
        "change_30": values[cutoff] - values[cutoff - timedelta(days=30)],
        "balance_mean_7": v7.mean(), "balance_mean_30": v30.mean(), "balance_mean_90": v90.mean(),
        "balance_min_30": v30.min(), "balance_min_90": v90.min(), "balance_max_90": v90.max(),
        "balance_std_30": v30.std(), "balance_std_90": v90.std(),
        "n_days_negative_30": float((v30 < 0).sum()), "n_days_negative_90": float((v90 < 0).sum()),
        "slope_90": np.polyfit(-back, v90, 1)[0],
        "inflow_30": float(sum(p.settled for p in recent if p.settled > 0)),
        "outflow_30": float(-sum(p.settled for p in recent if p.settled < 0)),
        "net_flow_30": float(sum(p.settled for p in recent)),
        "net_flow_90": float(sum(p.settled for p in window)),
        "flexible_spend_30": float(daily.sum()),
        "flexible_spend_std_30": float(daily.std()),
        "overdraft_use_90": float((v90 < 0).sum()) / len(v90),
        "n_days_90": len(v90),
    }


@pytest.mark.parametrize("customer_id, account_id, cutoff", [
    ("C_LABEL", "A_LABEL", END),            # overdrawn 27 June - 2 July, inside the 30 and 90 days
    ("C_LABEL", "A_LABEL", LABEL_CUT),
    ("C_SPARSE", "A_SPARSE", END),          # balances carried forward between posting days
    ("C_RECON", "A_RECON", END),            # the reported balance, gap included
])
def test_balance_and_flow_features_match_the_ledger(world, customer_id, account_id, cutoff) -> None:
    bank, panel = world["bank"], world["panel"]
    acc = bank.accounts[account_id]
    first = min(p.day for p in acc.postings)
    values = {d: float(v) for d, v in bank.series(account_id, first, cutoff).items()}
    expected = expected_features(values, acc.postings, cutoff)
    row = feature_row(panel, customer_id, cutoff)
    for name, value in expected.items():
        if name == "n_days_90":
            continue
        if name.startswith("flexible_spend") and customer_id != "C_LABEL" and customer_id != "C_SPARSE":
            continue                                  # rent by standing order is a stream, not flexible spend
        assert row[name] == pytest.approx(value, abs=1e-6), name
    assert row.history_days == (cutoff - first).days + 1
    assert row.day_of_month == cutoff.day
    assert row.age == cutoff.year - 1985
    assert row.tenure_days == (cutoff - date(2020, 1, 1)).days


# --- edge cases: a foreign-currency current account; a switch to another bank --------------------------------

def make_edge_bank() -> LandingBank:
    bank = LandingBank(end=END)
    # a GBP and a EUR current account: the cash position is in the base currency (GBP), like the postings
    bank.customer("C_EURO")
    bank.account("A_EURO_GBP", "C_EURO", date(2021, 1, 1), opening_balance=1000)
    bank.card_spending("A_EURO_GBP", START, END, every=3)
    bank.account("A_EURO_EUR", "C_EURO", date(2021, 1, 1), opening_balance=2000, currency="EUR")
    bank.card_spending("A_EURO_EUR", START, END, every=4, amount="-10.00")
    # switched banks: the current account here closed on 30 April, the consented external one goes on
    bank.customer("C_SWITCH")
    bank.consent("C_SWITCH", "open_banking", True, datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc))
    bank.account("A_SWITCH", "C_SWITCH", date(2021, 1, 1), closed_on=date(2026, 4, 30), opening_balance=500)
    bank.card_spending("A_SWITCH", START, date(2026, 4, 30), every=3)
    bank.account("OBSWITCH", "C_SWITCH", START, opening_balance=1500, provider="gammabank")
    bank.card_spending("OBSWITCH", START, END, every=2, amount="-3.00")
    return bank


@pytest.fixture(scope="module")
def edge_world(tmp_path_factory):
    bank = make_edge_bank()
    with loaded(tmp_path_factory, "features-edge", bank) as (paths, metrics, con):
        assert metrics["conform"]["quarantined"] == 0
        panel = features.build_panel(con, [date(2026, 3, 31), END])
        yield {"bank": bank, "panel": panel}


def test_a_foreign_currency_current_account_is_in_the_base_currency(edge_world) -> None:
    bank, panel = edge_world["bank"], edge_world["panel"]
    gbp, eur = bank.accounts["A_EURO_GBP"], bank.accounts["A_EURO_EUR"]
    rate = float(bank.fx["EUR"])
    # the EUR account's reported balances agree with its postings: nothing to reconcile
    assert "A_EURO_EUR" not in set(panel.reconciliation.account_id)
    row = feature_row(panel, "C_EURO", END)
    assert row.balance_now == pytest.approx(float(gbp.eod(END)) + float(eur.eod(END)) * rate, abs=0.01)


def test_the_switched_customer_uses_the_external_account_as_a_holding_while_the_core_one_is_open(edge_world) -> None:
    bank, panel = edge_world["bank"], edge_world["panel"]
    row = feature_row(panel, "C_SWITCH", date(2026, 3, 31))
    assert row.balance_now == pytest.approx(float(bank.accounts["A_SWITCH"].eod(date(2026, 3, 31))))
    assert row.external_balance == pytest.approx(float(bank.accounts["OBSWITCH"].eod(date(2026, 3, 31))))


def test_after_switching_banks_the_external_current_account_is_the_cash_position(edge_world) -> None:
    bank, panel = edge_world["bank"], edge_world["panel"]
    row = feature_row(panel, "C_SWITCH", END)
    assert row.balance_now == pytest.approx(float(bank.accounts["OBSWITCH"].eod(END)))


def test_labels_alone_are_the_labels_of_the_panel(world) -> None:
    """build_labels (the nightly report's realised calibration) gives exactly the training labels, without the
    features."""
    labels = features.build_labels(world["con"], [BEFORE_CLOSE, EARLY, MID, END], horizons=HORIZONS,
                                   series_days=400)
    expected = world["panel"].labels
    pd.testing.assert_frame_equal(labels.reset_index(drop=True), expected.reset_index(drop=True))


def test_training_features_built_bucket_by_bucket_equal_the_whole_bank_at_once(world) -> None:
    """Training and the backtests build their features a customer bucket at a time (the whole bank at once spilled
    tens of GB at 10,000 customers): the cash forecast's panel, the event forecasts' inputs and labels and the
    life-event features equal one build over every bucket."""
    from pipelines import event_forecast, forecast, life_events

    paths, con = world["paths"], world["con"]
    cutoffs = [BEFORE_CLOSE, EARLY, MID, END]
    customers = world["panel"].features["customer_id"].unique()
    assert len(set(lake.bucket_of(customers))) > 1           # the bank spans several buckets
    whole = features.build_panel(con, cutoffs, horizons=forecast.horizons(), with_labels=True, series_until=END)
    parts = forecast.build_panel(paths, END, cutoffs, with_labels=True, series_until=END)
    for name in ("features", "streams", "series", "labels", "reconciliation"):
        pd.testing.assert_frame_equal(getattr(parts, name), getattr(whole, name), check_exact=False, atol=1e-9,
                                      obj=name)
    by_bucket = event_forecast.build_training(paths, END, cutoffs, series_until=END, with_last_year=True)
    at_once = event_forecast._training_of(paths, END, cutoffs, None, END, True)
    for got, want in zip(by_bucket, at_once, strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-9)
    whole_life = life_events.lake.connect()
    try:
        life_events.register_inputs(whole_life, paths, END, cutoffs, None, None)
        want = life_events.compute_features(whole_life)
    finally:
        whole_life.close()
    pd.testing.assert_frame_equal(life_events.build_features(paths, END, cutoffs), want, check_exact=False, atol=1e-9)


# --- the large-expense threshold's typical month: a heavy December does not move it ---------------------------

SEASON_CUTS = (date(2025, 11, 30), date(2025, 12, 31), date(2026, 1, 31), date(2026, 2, 28), END)


def make_season_bank() -> LandingBank:
    bank = LandingBank(end=END)
    # 40.00 a day, every day since the account opened (1,200 in every 30 days), and 100.00 more every day of December
    bank.customer("C_SEASON")
    bank.account("A_SEASON", "C_SEASON", date(2025, 6, 1), opening_balance=20000)
    bank.card_spending("A_SEASON", date(2025, 6, 1), END, every=1, amount="-40.00")
    for day in days_between(date(2025, 12, 1), date(2025, 12, 31)):
        bank.post("A_SEASON", day, "-100.00", "card", description="GIFTS", merchant_name="Toys", mcc="5945")
    # 45 days of history at END: one complete month; 20 days: none
    bank.customer("C_YOUNG", since=END - timedelta(days=44))
    bank.account("A_YOUNG", "C_YOUNG", END - timedelta(days=44), opening_balance=5000)
    bank.card_spending("A_YOUNG", END - timedelta(days=44), END, every=1, amount="-10.00")
    bank.post("A_YOUNG", END - timedelta(days=3), "-600.00", "card", description="SOFA", merchant_name="Sofas",
              mcc="5712")
    bank.customer("C_NEW", since=END - timedelta(days=19))
    bank.account("A_NEW", "C_NEW", END - timedelta(days=19), opening_balance=5000)
    bank.card_spending("A_NEW", END - timedelta(days=19), END, every=1, amount="-10.00")
    return bank


@pytest.fixture(scope="module")
def season_world(tmp_path_factory):
    bank = make_season_bank()
    with loaded(tmp_path_factory, "features-season", bank) as (paths, metrics, con):
        assert metrics["conform"]["quarantined"] == 0
        yield features.build_panel(con, list(SEASON_CUTS))


def test_a_heavy_december_does_not_move_the_typical_month(season_world) -> None:
    """The large-expense threshold's monthly outflow (typical_monthly_outflow) is the median of the last six
    complete 30-day months: 1,200 at every cut-off, before, in and after December, while the 90-day outflow a
    month jumps with December and stays up for the three months after it."""
    rows = season_world.features.set_index(["customer_id", "cutoff"])
    typical = {c: rows.loc[("C_SEASON", pd.Timestamp(c)), "typical_monthly_outflow"] for c in SEASON_CUTS}
    assert typical == pytest.approx({c: 1200.0 for c in SEASON_CUTS})
    trailing = {c: (rows.loc[("C_SEASON", pd.Timestamp(c)), "fixed_spend_90"]
                    + rows.loc[("C_SEASON", pd.Timestamp(c)), "flexible_spend_90"]) / 3 for c in SEASON_CUTS}
    assert trailing[date(2025, 11, 30)] == pytest.approx(1200.0)
    assert trailing[date(2026, 1, 31)] == pytest.approx(1200.0 + 3100.0 / 3)    # the old definition jumped


def test_a_short_history_has_the_median_of_its_complete_months_or_its_rate_so_far(season_world) -> None:
    rows = season_world.features.set_index(["customer_id", "cutoff"])
    young = rows.loc[("C_YOUNG", pd.Timestamp(END))]
    assert young["history_days"] == 45
    assert young["typical_monthly_outflow"] == pytest.approx(30 * 10.0 + 600.0)     # its one complete month
    new = rows.loc[("C_NEW", pd.Timestamp(END))]
    assert new["history_days"] == 20
    assert new["typical_monthly_outflow"] == pytest.approx(20 * 10.0 / 20 * 30)     # 10 a day, 30 days of it


# --- the event forecasts' calendar: the same weeks a year before (config/event_forecast.yaml calendar) -----------

def make_year_bank() -> LandingBank:
    bank = LandingBank(end=END)
    # a year and five months of history: a yearly insurance of 900 (a payment to a counterparty: a row the store keeps
    # for a year) in the first 30 days of the same weeks a year before END, a card payment of 500 (kept 180 days
    # only) in the second 30 days
    bank.customer("C_YEAR")
    bank.account("A_YEAR", "C_YEAR", date(2025, 3, 1), opening_balance=20000)
    bank.card_spending("A_YEAR", date(2025, 3, 1), END, every=1, amount="-10.00")
    bank.post("A_YEAR", date(2025, 8, 10), "-900.00", "transfer_out", description="HOME INSURANCE",
              counterparty_id="INSURER")
    bank.post("A_YEAR", date(2025, 9, 5), "-500.00", "card", description="BIKE", merchant_name="Bikes", mcc="5940")
    # seven months of history: no year before
    bank.customer("C_SHORT")
    bank.account("A_SHORT", "C_SHORT", date(2026, 1, 1), opening_balance=5000)
    bank.card_spending("A_SHORT", date(2026, 1, 1), END, every=1, amount="-10.00")
    return bank


@pytest.fixture(scope="module")
def year_world(tmp_path_factory):
    with loaded(tmp_path_factory, "features-year", make_year_bank()) as (paths, metrics, con):
        assert metrics["conform"]["quarantined"] == 0
        yield features.build_panel(con, [END])


def test_the_same_weeks_a_year_before_are_read_from_the_rows_the_store_keeps_a_year(year_world) -> None:
    """Per 30-day block of (END - 365, END - 275]: the outflow and the largest payment out, from the rows the store
    keeps for a year (last_year_rows 'kept': the insurance to a counterparty, not the card payment, whose row the
    night no longer has); null without a year of history."""
    rows = year_world.features.set_index("customer_id")
    year = rows.loc["C_YEAR"]
    assert year["has_last_year"] == 1.0
    assert year["ly_largest_1"] == pytest.approx(900.0) and year["ly_outflow_1"] == pytest.approx(900.0)
    assert year["ly_largest_2"] == 0.0 and year["ly_outflow_2"] == 0.0 and year["ly_largest_3"] == 0.0
    short = rows.loc["C_SHORT"]
    assert short["has_last_year"] == 0.0
    assert all(np.isnan(short[f"ly_{w}_{b}"]) for w in ("outflow", "largest") for b in (1, 2, 3))
