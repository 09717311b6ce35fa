"""Hand-made customers whose right answer any banker would agree on, through the real history load, a real night's
ingest and conform for D, the features, the forecast stage and the decide stage (issue 12 items 8-9, issue 18
items 1-2). One small bank, loaded once:

- C_FOREIGN: a dozen foreign card payments with their non-sterling fees, a monthly account fee, no missed payment:
  not in arrears, no hardship call, credit not refused for arrears;
- C_RETURNED: a direct debit returned unpaid and its unpaid-item fee: in arrears, and told so in those words;
- C_LOAN: a loan held here still owing, repaid monthly until June, nothing since: in arrears (overdue repayment);
- C_SAVER: a monthly transfer from current to savings (and the savings interest) that stops while the salary goes
  on: no income stop;
- C_PAIRED: the same to an external account linked by open banking, no counterparty id (matched in and out);
- C_NOPERS_RISK: no personalization consent and at risk: a shortfall warning, nothing else of their data (no
  safe-to-save, no projected balances, no streams, no bill reminder, no subscription review, no budgeting tools,
  the default layout);
- C_NONE_RISK: no personalization and service alerts withdrawn: no forecast row at all, no warning;
- C_OBWD: open banking withdrawn on D: the postings and balances loaded before it feed nothing from D on;
- fillers at risk and safe, with personalization, so that a small engine can be trained on the bank.
"""
from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import decide, features, forecast, lake
from pipelines import life_events as le
from pipelines.config import Paths
from pipelines.stages import conform, ingest, load_history, update_features
from tests.landing_builder import LandingBank, _write_csv, days_between

START = date(2026, 1, 1)
D = date(2026, 9, 30)                     # the night under test
HISTORY_END = D - timedelta(days=1)
GRANTED = datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc)
MONTHS = range(1, 10)                      # January to September
PERSONAL = ("personalization", "marketing_email", "marketing_inapp")


def monthly(day_of_month: int, months=MONTHS) -> list[date]:
    return [date(2026, m, day_of_month) for m in months if date(2026, m, day_of_month) <= HISTORY_END]


def grant(bank: LandingBank, customer_id: str, *purposes: str) -> None:
    for purpose in purposes:
        bank.consent(customer_id, purpose, True, GRANTED)


def steady(bank: LandingBank, customer_id: str, opening: float = 4000, salary: str = "2600.00",
           rent: str = "-900.00") -> str:
    """A customer with one current account: salary on the 25th, rent on the 1st, groceries every third day."""
    bank.customer(customer_id)
    account = f"A_{customer_id}"
    bank.account(account, customer_id, date(2024, 1, 1), opening_balance=opening)
    bank.monthly(account, monthly(25), salary, "salary", f"EMP-{customer_id}", f"SALARY EMP {customer_id}")
    bank.monthly(account, monthly(1), rent, "standing_order", f"LET-{customer_id}", f"RENT {customer_id}")
    bank.card_spending(account, START, HISTORY_END)
    return account


def bills(bank: LandingBank, account: str, n: int = 6) -> None:
    """n small monthly direct debits: regular payments going out."""
    for i in range(n):
        bank.monthly(account, monthly(5 + i), "-12.00", "direct_debit", f"BILLER-{i}", f"BILLER {i} DD")


def make_bank() -> LandingBank:
    bank = LandingBank(end=HISTORY_END)

    # fillers for the engine: four at risk (spending more than they earn, below zero from January), four safe
    for i in range(4):
        steady(bank, f"C_RISK{i}", opening=200, salary="800.00")
        steady(bank, f"C_SAFE{i}")
        grant(bank, f"C_RISK{i}", *PERSONAL)
        grant(bank, f"C_SAFE{i}", *PERSONAL)

    # a dozen foreign card payments in two months, each with its non-sterling fee, and a monthly account fee
    account = steady(bank, "C_FOREIGN")
    grant(bank, "C_FOREIGN", *PERSONAL)
    for k in range(12):
        day = D - timedelta(days=5 + 5 * k)
        posting = bank.post(account, day, "-40.00", "card", description="RESTAURANT LISBOA", merchant_name="Tasca",
                            mcc="5812", currency="EUR")
        fee = (posting.settled * Decimal("0.0299")).quantize(Decimal("0.01"))
        bank.post(account, day, str(fee), "fee", description="NON-STERLING TRANSACTION FEE")
    for day in monthly(3):
        bank.post(account, day, "-3.00", "fee", description="MONTHLY ACCOUNT FEE")

    # a direct debit returned unpaid twenty days before D, and the unpaid-item fee the next day
    account = steady(bank, "C_RETURNED")
    grant(bank, "C_RETURNED", *PERSONAL)
    returned = D - timedelta(days=20)
    bank.monthly(account, monthly(returned.day), "-85.00", "direct_debit", "MBRITISHGAS", "BRITISH GAS DD")
    bank.post(account, returned, "85.00", "direct_debit", description="UNPAID DIRECT DEBIT BRITISH GAS",
              counterparty_id="MBRITISHGAS")
    bank.post(account, returned + timedelta(days=1), "-5.00", "fee", description="UNPAID ITEM FEE")

    # a loan held here, still owing: repaid on the 2nd from January to June, then nothing
    account = steady(bank, "C_LOAN")
    grant(bank, "C_LOAN", *PERSONAL)
    bank.account("L_C_LOAN", "C_LOAN", date(2025, 6, 1), product="loan", opening_balance=-6000, overdraft_limit=None)
    for day in monthly(2, range(1, 7)):
        bank.post(account, day, "-250.00", "direct_debit", description="BANK LOAN REPAYMENT",
                  counterparty_id="L_C_LOAN")
        bank.post("L_C_LOAN", day, "250.00", "transfer_in", description="REPAYMENT RECEIVED", counterparty_id=account)

    # a monthly transfer to savings here (January to June) while the salary goes on to September
    account = steady(bank, "C_SAVER", opening=3000)
    grant(bank, "C_SAVER", *PERSONAL)
    bank.account("S_C_SAVER", "C_SAVER", date(2024, 1, 1), product="savings", opening_balance=1000,
                 overdraft_limit=None)
    for day in monthly(26, range(1, 7)):
        bank.post(account, day, "-300.00", "standing_order", description="TRANSFER TO SAVINGS",
                  counterparty_id="S_C_SAVER")
        bank.post("S_C_SAVER", day, "300.00", "transfer_in", description="TRANSFER FROM CURRENT ACCOUNT",
                  counterparty_id=account)
        # and the savings interest, monthly until the money moved elsewhere: not an income either
        bank.post("S_C_SAVER", day + timedelta(days=3), "4.10", "interest", description="INTEREST PAID",
                  counterparty_id="BANK-INTEREST")

    # the same to an external current account (open banking), with no counterparty id and neutral words
    account = steady(bank, "C_PAIRED", opening=3000)
    grant(bank, "C_PAIRED", *PERSONAL, "open_banking")
    bank.account("OB_C_PAIRED", "C_PAIRED", START, opening_balance=500, provider="alphabank")
    for day in monthly(26, range(1, 7)):
        bank.post(account, day, "-400.00", "transfer_out", description="FASTER PAYMENT 40-11-22 8812")
        bank.post("OB_C_PAIRED", day, "400.00", "transfer_in", description="FASTER PAYMENT RECEIVED")
    bank.card_spending("OB_C_PAIRED", START, HISTORY_END, every=6, amount="-9.00")

    # no personalization consent, at risk, with regular bills: a shortfall warning and nothing else
    account = steady(bank, "C_NOPERS_RISK", opening=200, salary="800.00")
    bills(bank, account)
    # the same with service alerts withdrawn as well: nothing at all
    account = steady(bank, "C_NONE_RISK", opening=200, salary="800.00")
    bills(bank, account)
    bank.consent("C_NONE_RISK", "service_alerts", False, GRANTED)

    # open banking granted, and withdrawn on D (the withdrawal is in D's landing folder)
    steady(bank, "C_OBWD")
    grant(bank, "C_OBWD", *PERSONAL, "open_banking")
    bank.account("OB_C_OBWD", "C_OBWD", START, opening_balance=3000, provider="betabank")
    bank.monthly("OB_C_OBWD", monthly(15), "1500.00", "transfer_in", None, "SALARY ACME LTD")
    bank.monthly("OB_C_OBWD", monthly(8), "-60.00", "transfer_out", None, "GYM MEMBERSHIP")
    bank.card_spending("OB_C_OBWD", START, HISTORY_END, every=4, amount="-11.00")
    return bank


def write_night(bank: LandingBank, folder) -> None:
    """landing/D/: the open-banking withdrawal, and the end-of-day balances of D (no postings on D)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "consents.csv", ["customer_id", "purpose", "granted", "recorded_at", "expires_at"], [
        {"customer_id": "C_OBWD", "purpose": "open_banking", "granted": "false",
         "recorded_at": datetime(D.year, D.month, D.day, 9, 0, tzinfo=timezone.utc).isoformat(), "expires_at": ""}])
    _write_csv(folder / "balances.csv", ["account_id", "as_of", "balance"], [
        {"account_id": a.account_id, "as_of": D.isoformat(), "balance": f"{a.reported(D):.2f}"}
        for a in bank.accounts.values() if a.provider is None])


def tiny_engine(paths: Paths):
    """A real global engine fitted on this bank with settings small enough for a dozen customers."""
    from models.global_engine import GlobalEngine, GlobalEngineParams

    cutoffs = [D - timedelta(days=90 + 14 * k) for k in range(11)]
    panel = forecast.build_panel(paths, D, cutoffs, with_labels=True, series_until=D)
    params = GlobalEngineParams(n_estimators=40, regressor_estimators=20, learning_rate=0.3, num_leaves=4,
                                min_child_samples=3, calibration_share=0.0, min_date_positives=5,
                                horizons=forecast.horizons())
    engine = GlobalEngine().fit(forecast.model_inputs(panel), panel.labels, params)
    engine.version = "hand-made-test-engine"
    engine.attributors = {}
    return engine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("consent-arrears") / "segone"
    home.mkdir()
    # Two customer buckets instead of 16 (a SEGONE_SETTINGS overlay): the hand-made customers' shards are forecast and
    # decided one call each, and 16 buckets spread them over a dozen calls of the same fixed cost.
    overlay = home.parent / "settings.yaml"
    overlay.write_text(yaml.safe_dump({"segone": {"lake": {"n_buckets": 2}}}), encoding="utf-8")
    saved = {name: os.environ.get(name) for name in ("SEGONE_HOME", "SEGONE_SETTINGS")}
    os.environ["SEGONE_HOME"] = str(home)
    os.environ["SEGONE_SETTINGS"] = str(overlay)
    try:
        paths = Paths(home)
        bank = make_bank()
        bank.write(paths.landing_history)
        loaded = load_history(paths)
        assert loaded["conform"]["quarantined"] == 0
        write_night(bank, paths.landing_day(D.isoformat()))
        ingest(paths, D)
        conform(paths, D)
        update_features(paths, D)
        engine = tiny_engine(paths)
        buckets = sorted({int(b) for b in lake.bucket_of(bank.customers)})
        original = forecast.load_engine
        forecast.load_engine = lambda *args, **kwargs: engine
        try:
            for bucket in buckets:
                forecast.forecast_cash_shortfall(paths, D, bucket)
                decide.decide_next_best_actions(paths, D, bucket)
        finally:
            forecast.load_engine = original
        contexts = pd.concat([decide.build_context(paths, D, b) for b in buckets], ignore_index=True)
        panel = forecast.build_panel(paths, D, [D])

        def gold(table: str) -> pd.DataFrame:
            return pd.read_parquet(lake.partition_path(paths, "gold", table, as_of=D.isoformat()))

        yield {"paths": paths, "bank": bank, "panel": panel, "context": contexts.set_index("customer_id"),
               "forecast": gold("cash_forecast"), "streams": gold("recurring_streams"),
               "nba": gold("next_best_actions"), "log": gold("decision_log"), "layout": gold("dashboard_layout"),
               "advisor": gold("advisor_queue")}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def feature(world, customer_id: str) -> pd.Series:
    rows = world["panel"].features
    return rows[rows["customer_id"] == customer_id].iloc[0]


def actions(world, customer_id: str) -> set[str]:
    nba = world["nba"]
    return set(nba.loc[nba["customer_id"] == customer_id, "action_id"])


def logged(world, customer_id: str, action_id: str) -> pd.DataFrame:
    log = world["log"]
    return log[(log["customer_id"].astype(str) == customer_id) & (log["action_id"].astype(str) == action_id)]


def reasons(world, customer_id: str, action_id: str) -> str:
    nba = world["nba"]
    return nba.loc[(nba["customer_id"] == customer_id) & (nba["action_id"] == action_id), "reasons"].iloc[0]


def test_the_engine_separates_the_fillers(world) -> None:
    """The check the other tests lean on: the small engine sees who is at risk."""
    p30 = world["context"]["p_shortfall_30"]
    assert (p30[[f"C_RISK{i}" for i in range(4)]] >= 0.5).all()
    assert (p30[[f"C_SAFE{i}" for i in range(4)]] < 0.1).all()


# --- 18.1 arrears ------------------------------------------------------------------------------------------------

def test_foreign_card_fees_are_not_arrears(world) -> None:
    ctx = world["context"].loc["C_FOREIGN"]
    assert ctx.n_fees_90 >= 12                       # fees there are, many
    assert not ctx.in_arrears
    assert "hardship_support" not in actions(world, "C_FOREIGN")
    assert logged(world, "C_FOREIGN", "hardship_support")["stage"].astype(str).tolist() == ["applicability"]
    assert "C_FOREIGN" not in set(world["advisor"]["customer_id"])
    for credit in ("credit_card", "overdraft_increase", "personal_loan", "mortgage"):
        rows = logged(world, "C_FOREIGN", credit)
        assert not rows["reason"].astype(str).str.contains("arrears").any(), credit
    assert logged(world, "C_FOREIGN", "credit_card")["stage"].astype(str).tolist() != ["suitability"]
    row = feature(world, "C_FOREIGN")
    assert row.n_returned_payments == 0 and row.n_arrears_fees == 0 and row.n_missed_repayments == 0
    assert pd.isna(ctx.arrears_reason)


def test_a_returned_direct_debit_and_its_fee_are_arrears_in_true_words(world) -> None:
    ctx = world["context"].loc["C_RETURNED"]
    assert ctx.in_arrears
    row = feature(world, "C_RETURNED")
    assert row.n_returned_payments == 1 and row.n_arrears_fees == 1 and row.n_missed_repayments == 0
    assert ctx.arrears_reason == ("a payment from your account was returned unpaid recently and you were charged a "
                                  "fee for a missed or returned payment recently")
    assert "hardship_support" in actions(world, "C_RETURNED")
    text = reasons(world, "C_RETURNED", "hardship_support")
    assert "returned unpaid" in text and "a payment on one of your accounts is behind" not in text
    rows = logged(world, "C_RETURNED", "credit_card")
    assert rows["stage"].astype(str).tolist() == ["suitability"]
    assert rows["reason"].astype(str).iloc[0] == f"credit not offered: an account is in arrears ({ctx.arrears_reason})"


def test_an_overdue_loan_repayment_is_arrears(world) -> None:
    ctx = world["context"].loc["C_LOAN"]
    assert ctx.in_arrears
    row = feature(world, "C_LOAN")
    assert row.n_missed_repayments == 1 and row.n_returned_payments == 0
    assert ctx.arrears_reason == "a repayment on your loan or mortgage with us is overdue"
    # the repayments received on the loan account are the customer's own money moving, not an income that stopped
    assert not row.is_income_stopped and row.n_income_streams == 1
    assert "a repayment on your loan or mortgage with us is overdue" in reasons(world, "C_LOAN", "hardship_support")


# --- 18.2 own-account transfers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("customer_id", ["C_SAVER", "C_PAIRED"])
def test_a_transfer_between_own_accounts_that_stops_is_no_income_stop(world, customer_id) -> None:
    row = feature(world, customer_id)
    assert not row.is_income_stopped
    assert row.n_income_streams == 1 and row.has_regular_income      # the salary, which goes on
    assert row.monthly_recurring_income == pytest.approx(2600 * 30 / 30, rel=0.01)
    assert row.income_90 == pytest.approx(2600 * 3, abs=0.01)        # the salary only
    ctx = world["context"].loc[customer_id]
    assert not ctx.is_income_stopped
    for action in ("benefits_check", "hardship_support", "advisor_callback"):
        assert action not in actions(world, customer_id), action
    assert customer_id not in set(world["advisor"]["customer_id"])
    # still visible under its own name: the stream, flagged as an own-account transfer (a savings habit)
    streams = world["streams"][world["streams"]["customer_id"] == customer_id]
    own = streams[streams["is_own_transfer"]]
    assert len(own) >= 1 and (own["lifecycle"] == "stopped").all()
    incomes = ~streams["is_own_transfer"] & (streams["direction"] == "in") & (streams["channel"] != "interest")
    assert set(streams.loc[incomes, "stream_key"]) == {f"EMP-{customer_id}"}


def test_the_projection_keeps_only_the_cash_side_of_an_own_transfer(world) -> None:
    """The saver's transfer leaves the cash position (the current account side is projected); the credit on the
    savings account does not enter it."""
    streams = world["panel"].streams
    own = streams[(streams["customer_id"] == "C_SAVER") & streams["is_own_transfer"]]
    assert set(own["direction"]) == {"in", "out"}
    assert own.set_index("direction")["on_cash_position"].to_dict() == {"in": False, "out": True}
    projected = forecast.projected_streams(streams)
    projected = projected[(projected["customer_id"] == "C_SAVER") & projected["is_own_transfer"]]
    assert projected["direction"].tolist() == ["out"]


# --- 12.8 without personalization --------------------------------------------------------------------------------

def test_without_personalization_only_a_shortfall_warning(world) -> None:
    rows = world["forecast"][world["forecast"]["customer_id"] == "C_NOPERS_RISK"]
    assert len(rows) == 3
    assert (rows["p_shortfall"] >= 0.3).all() and rows["expected_shortfall_date"].notna().any()
    assert rows[["safe_to_save", "min_balance_p10", "min_balance_p50", "min_balance_p90"]].isna().all().all()
    assert "C_NOPERS_RISK" not in set(world["streams"]["customer_id"])
    got = actions(world, "C_NOPERS_RISK")
    assert "shortfall_warning" in got
    assert not got & {"bill_reminder", "subscription_review", "budgeting_tools", "salary_switch_help"}
    for insight in ("bill_reminder", "subscription_review", "budgeting_tools"):
        rows = logged(world, "C_NOPERS_RISK", insight)
        assert rows["stage"].astype(str).tolist() == ["consent"], insight
        assert rows["reason"].astype(str).iloc[0] == "no consent for using your banking data for recommendations"
    assert not (world["nba"].loc[world["nba"]["customer_id"] == "C_NOPERS_RISK", "action_class"] != "protective").any()
    layout = world["layout"][world["layout"]["customer_id"] == "C_NOPERS_RISK"]
    assert set(layout["module"]) == {"accounts_overview", "spending_insights"}
    # the same bank's consented customers keep everything
    full = world["forecast"][world["forecast"]["customer_id"] == "C_SAFE0"]
    assert full[["safe_to_save", "min_balance_p10"]].notna().all().all()
    assert "C_SAFE0" in set(world["streams"]["customer_id"])


def test_without_personalization_and_service_alerts_nothing(world) -> None:
    assert "C_NONE_RISK" not in set(world["forecast"]["customer_id"])
    assert "C_NONE_RISK" not in set(world["streams"]["customer_id"])
    assert not actions(world, "C_NONE_RISK")
    rows = logged(world, "C_NONE_RISK", "shortfall_warning")
    assert rows["stage"].astype(str).tolist() == ["applicability"]
    assert rows["reason"].astype(str).iloc[0] == "no cash forecast tonight (none made, or withheld by consent)"
    layout = world["layout"][world["layout"]["customer_id"] == "C_NONE_RISK"]
    assert set(layout["module"]) == {"accounts_overview", "spending_insights"}


# --- 12.9 open banking withdrawn on D --------------------------------------------------------------------------

def test_open_banking_withdrawn_on_d_feeds_nothing_from_d_on(world) -> None:
    paths = world["paths"]
    bank = world["bank"]
    con = lake.connect()
    try:
        features.register_silver(con, paths, HISTORY_END)
        before = con.execute("select count(*) from transactions_in where customer_id = 'C_OBWD' "
                             "and source = 'openbanking'").fetchall()[0][0]
        features.register_silver(con, paths, D)
        counts = [con.execute(f"select count(*) from {view} where customer_id = 'C_OBWD' and source = 'openbanking'")
                  .fetchall()[0][0] for view in ("transactions_in", "balances_in", "accounts_in")]
    finally:
        con.close()
    assert before > 0, "the open-banking postings were loaded while the consent held"
    assert counts == [0, 0, 0]
    row = feature(world, "C_OBWD")
    assert row.external_balance == 0 and row.n_external_accounts == 0
    assert row.n_income_streams == 1 and row.monthly_recurring_income == pytest.approx(2600, rel=0.01)
    streams = world["panel"].streams
    assert set(streams.loc[streams["customer_id"] == "C_OBWD", "stream_key"]) <= {
        "EMP-C_OBWD", "LET-C_OBWD"}
    assert not world["context"].loc["C_OBWD"].has_external_current
    # the life-event features see this bank's accounts only: the balance is the core current account's
    life = le.build_features(paths, D, [D], buckets=lake.bucket_of(["C_OBWD"]))
    life = life[life["customer_id"] == "C_OBWD"].iloc[0]
    core = bank.accounts["A_C_OBWD"]
    expected = np.mean([float(core.reported(day)) for day in days_between(D - timedelta(days=29), D)])
    assert life.balance_mean_30d == pytest.approx(expected, abs=0.01)
