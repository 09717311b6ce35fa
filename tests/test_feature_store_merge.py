"""The feature store's merge rules on hand-made frames (pipelines/store.py, sql/store_*.sql): every state merged
night by night equals the state computed from all the rows at once, and rows of one key delivered on two nights add
up to the rows of one delivery. What tests/test_feature_store.py proves on a simulated bank, here case by case:
a balance reported before the first series window, one reported inside the days that leave the window, an account
never reported, a posting delivered a night late, special-category postings, the first posting of a stream."""
from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest

from pipelines import sql, store
from pipelines.config import load_config

DAY0 = date(2026, 3, 1)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def row(customer: str, account: str, n_day: int, amount: float, **facts) -> dict:
    """One daily row as sql/store_day_rows.sql writes it (one posting), with the facts the states read."""
    return {"customer_id": customer, "account_id": account, "source": facts.get("source", "core"), "ds": day(n_day),
            "channel": facts.get("channel", "card"), "sign": 1 if amount > 0 else -1,
            "currency": facts.get("currency", "GBP"), "country": facts.get("country", "GB"),
            "stream_key": facts.get("stream_key"), "income_kind": facts.get("income_kind"),
            "outflow_kind": facts.get("outflow_kind"), "is_forbidden": facts.get("is_forbidden", False),
            "is_own_transfer": False, "is_transfer_text": False, "n": 1, "amount": amount}


def balance(customer: str, account: str, n_day: int, value: float, currency: str = "GBP") -> dict:
    return {"customer_id": customer, "account_id": account, "source": "core", "ds": day(n_day),
            "currency": currency, "balance": value}


def _register(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict], balances: bool = False) -> None:
    frame = pd.DataFrame(rows)
    frame["ds"] = pd.to_datetime(frame["ds"])
    con.register(f"{name}_frame", frame)
    if balances:
        con.execute(f"""create or replace temp table {name} as select customer_id, account_id, source,
            cast(ds as date) as ds, currency, cast(balance as decimal(18, 2)) as balance from {name}_frame""")
    else:
        con.execute(f"""create or replace temp table {name} as select * replace (cast(ds as date) as ds,
            cast(amount as decimal(18, 2)) as amount, cast(sign as tinyint) as sign, cast(n as integer) as n,
            cast(stream_key as varchar) as stream_key, cast(income_kind as varchar) as income_kind,
            cast(outflow_kind as varchar) as outflow_kind) from {name}_frame""")


STATES = ("account_state", "customer_state", "home_counts", "stream_first")


def _states(con: duckdb.DuckDBPyConnection, prefix: str) -> dict[str, pd.DataFrame]:
    return {name: con.execute(f"select * from {prefix}{name} order by all").df() for name in STATES}


# Night A: days 0-13, series window from day 4; night B: days 14-20 and a posting of day 12 delivered late, series
# window from day 10 (the days 4-9 leave the window: their postings and balances roll into the carry).
NIGHT_A = [
    *(row("C1", "A1", d, -10.0 - d) for d in range(0, 14)),
    row("C1", "A1", 1, 2500.0, channel="salary", stream_key="ACME", income_kind="salary"),
    *(row("C1", "A2", d, 5.0) for d in range(0, 14, 2)),
    row("C2", "B1", 2, -40.0, channel="card", is_forbidden=True, currency="EUR", country="FR"),
    row("C2", "B1", 3, -12.0, currency="EUR", country="FR"),
    row("C2", "B1", 8, -70.0, channel="direct_debit", stream_key="GYM", outflow_kind="other"),
    row("C2", "B1", 9, 30.0, channel="interest"),
]
BALANCES_A = [balance("C1", "A1", 2, 1000.0), balance("C1", "A1", 6, 900.0), balance("C1", "A1", 6, 950.0),
              balance("C2", "B1", 1, 10.0, "EUR")]
NIGHT_B = [
    *(row("C1", "A1", d, -10.0 - d) for d in range(14, 21)),
    row("C1", "A1", 12, -99.0),                                  # a posting of day 12 delivered a night late
    row("C1", "A1", 15, 2500.0, channel="salary", stream_key="ACME", income_kind="salary"),
    row("C2", "B1", 16, -70.0, channel="direct_debit", stream_key="GYM", outflow_kind="other"),
    row("C2", "B1", 17, -15.0, currency="USD", country="US"),
    row("C2", "B2", 18, 200.0, channel="cash_deposit"),          # an account with its first posting on night B
    row("C3", "D1", 19, -1.0, is_forbidden=True),                 # a customer with special-category postings only
]
BALANCES_B = [balance("C1", "A1", 16, 700.0), balance("C2", "B2", 18, 200.0)]


@pytest.fixture()
def con():
    con = duckdb.connect()
    sql.set_variables(con, series_start=day(4),
                      income_channels=[str(c) for c in load_config("forecast")["income_history"]["income_channels"]])
    for name, rows, is_balance in (("rows_a", NIGHT_A, False), ("rows_b", NIGHT_B, False),
                                   ("balances_a", BALANCES_A, True), ("balances_b", BALANCES_B, True)):
        _register(con, name, rows, is_balance)
    con.execute("create temp table rows_all as select * from rows_a union all select * from rows_b")
    con.execute("create temp table balances_all as select * from balances_a union all select * from balances_b")
    yield con
    con.close()


def test_states_merged_night_by_night_equal_the_states_of_all_rows(con):
    # night A from nothing, window from day 4
    store.build_states(con, "rows_a", "balances_a", None, carry_flows="rows_a", carry_balances="balances_a",
                       prefix="a_")
    # night B merged into A's states, window from day 10: the carry rolls over the days 4-9
    sql.set_variables(con, series_start=day(10), previous_series_start=day(4))
    store.roll_carry_inputs(con, "rows_a", "balances_a", "a_account_state")
    store.build_states(con, "rows_b", "balances_b", {
        "account_firsts": "(select customer_id, account_id, source, first_day, first_credit_day, first_balance_day, "
                          "first_income_day from a_account_state)",
        "customer_state": "a_customer_state", "home_counts": "a_home_counts", "stream_first": "a_stream_first"},
        carry_flows="carry_flow_rows", carry_balances="carry_balance_rows", prefix="b_")
    merged = _states(con, "b_")
    # everything at once, window from day 10
    store.build_states(con, "rows_all", "balances_all", None, carry_flows="rows_all", carry_balances="balances_all",
                       prefix="all_")
    rebuilt = _states(con, "all_")
    for name in STATES:
        pd.testing.assert_frame_equal(merged[name], rebuilt[name], check_exact=True, obj=name)

    state = rebuilt["account_state"].set_index("account_id")
    # A1: the last balance before day 10 (day 6: the larger of two reports of that day) and the postings after it
    assert state.loc["A1", "carry_reported_day"] == pd.Timestamp(day(6))
    assert float(state.loc["A1", "carry_reported"]) == 950.0
    assert float(state.loc["A1", "carry_flow"]) == -(17 + 18 + 19)
    # A2, never reported: every posting before the window
    assert float(state.loc["A2", "carry_flow"]) == 25.0 and pd.isna(state.loc["A2", "carry_reported_day"])
    # B1: reported in EUR on day 1, kept in its currency; interest is not a first credit
    assert state.loc["B1", "carry_currency"] == "EUR" and pd.isna(state.loc["B1", "first_credit_day"])
    assert state.loc["B2", "first_day"] == pd.Timestamp(day(18))
    # the first credit that could be an income (config/forecast.yaml income_history): A1's salary of night A, B2's
    # cash deposit of night B; B1's interest is none
    assert state.loc["A1", "first_income_day"] == pd.Timestamp(day(1))
    assert state.loc["B2", "first_income_day"] == pd.Timestamp(day(18)) and pd.isna(state.loc["B1", "first_income_day"])
    # special-category postings: no first posting, no home currency or country (C3 has nothing else)
    customers = rebuilt["customer_state"].set_index("customer_id")
    assert customers.loc["C2", "first_posting_day"] == pd.Timestamp(day(3)) and "C3" not in customers.index
    counts = rebuilt["home_counts"]
    assert int(counts[(counts["customer_id"] == "C2") & (counts["value"] == "EUR")]["n"].sum()) == 1  # not day 2
    firsts = rebuilt["stream_first"].set_index("stream_key")
    assert firsts.loc["ACME", "first_day"] == pd.Timestamp(day(1)) and firsts.loc["GYM", "kind"] == "other"


def test_rows_of_one_key_delivered_on_two_nights_add_up(con):
    """sql/store_day_rows.sql per delivery, then the store's merge (MERGE_ROWS), equals one delivery of all."""
    postings = pd.DataFrame([
        {"transaction_id": f"T{i}", "customer_id": "C1", "account_id": "A1", "source": "core", "ds": day(12),
         "counterparty_id": None, "is_own_description": False, "channel": "card", "category": "groceries", "sign": -1,
         "country": "GB", "currency": "GBP", "stream_key": "SHOP", "is_stream_candidate": False,
         "is_own_transfer": False, "is_own_channel": False, "is_forbidden": False, "signals": [],
         "income_kind": None, "outflow_kind": None, "is_transfer_text": False, "is_saving_text": False,
         "is_returned_payment": False, "is_arrears_fee": False, "is_stream_row": False, "amount": -amount}
        for i, amount in enumerate([12.5, 80.0, 3.25])])
    postings["ds"] = pd.to_datetime(postings["ds"])
    con.register("postings_frame", postings)

    def day_rows(where: str, table: str) -> None:
        con.execute(f"""create or replace temp table enriched_postings as select * replace (cast(ds as date) as ds,
            cast(amount as decimal(18, 2)) as amount, cast(sign as tinyint) as sign,
            cast(signals as varchar[]) as signals, cast(income_kind as varchar) as income_kind,
            cast(outflow_kind as varchar) as outflow_kind, cast(counterparty_id as varchar) as counterparty_id)
            from postings_frame where {where}""")
        sql.create_table(con, table, "store_day_rows")

    day_rows("transaction_id <> 'T1'", "first_night")
    day_rows("transaction_id = 'T1'", "second_night")
    day_rows("true", "one_delivery")
    merged = con.execute(store.MERGE_ROWS.format(rows="(select * from first_night union all select * from "
                                                      "second_night)") + " order by all").df()
    once = con.execute(store.MERGE_ROWS.format(rows="one_delivery") + " order by all").df()
    pd.testing.assert_frame_equal(merged, once, check_exact=True)
    assert len(once) == 1 and int(once["n"].iloc[0]) == 3
    assert float(once["amount"].iloc[0]) == -95.75 and float(once["max_neg_amount"].iloc[0]) == 80.0
