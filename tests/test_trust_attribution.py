"""One customer's fetch cannot touch another's account (issue 12, item 1), and the conform rules of item 4: a
currency without an FX rate, open-banking postings dated after D. Hand-made banks: core CSV files plus OBIE
envelopes built from the real v3.1 examples in reference/obie/examples, through ingest and conform."""
from __future__ import annotations

import copy
import gzip
import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.conform import conform
from pipelines.ingest.landing import ingest_landing

D = date(2026, 11, 20)
DAY = D.isoformat()
HISTORY_AS_OF = date(2026, 11, 19)
X, Y, Z = "C000001", "C000002", "C000003"  # X's files sort first: a first delivery of X must not win
TX_HEADER = ["transaction_id", "account_id", "booked_at", "amount", "currency", "description", "merchant_name", "mcc",
             "channel", "country", "counterparty_id"]


# --- building the landing files --------------------------------------------------------------------------------

def write_csv(path: Path, header: list[str], rows: list[dict], fmt: str = "csv") -> None:
    path = path.with_name(path.name.replace(".csv", f".{fmt}"))
    if fmt == "parquet":
        frame = pd.DataFrame([{c: r.get(c, "") for c in header} for r in rows], columns=header, dtype="object")
        con = duckdb.connect()
        con.register("f", frame)
        con.execute(f"copy (select {', '.join(f'cast({c} as varchar) as {c}' for c in header)} from f) "
                    f"to '{path}' (format parquet)")
        con.close()
        return
    lines = [",".join(header)] + [",".join(str(r.get(c, "")) for c in header) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if fmt == "csv.gz" else data)


def core_files(folder: Path, accounts: list[dict] = (), transactions: list[dict] = (), balances: list[dict] = (),
               customers: list[str] = (), consents: list[str] = (), fx: dict[str, str] | None = None,
               fmt: str = "csv") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "customers.csv", ["customer_id", "birth_year", "region", "customer_since",
                                         "known_vulnerability"],
              [{"customer_id": c, "birth_year": 1980, "region": "London", "customer_since": "2020-01-01"}
               for c in customers])
    write_csv(folder / "accounts.csv", ["account_id", "customer_id", "product", "currency", "opened_on", "closed_on",
                                        "overdraft_limit", "credit_limit"],
              [{"product": "current", "currency": "GBP", "opened_on": "2020-01-01"} | a for a in accounts])
    write_csv(folder / "transactions.csv", TX_HEADER,
              [{"booked_at": f"{DAY}T10:00:00+00:00", "currency": "GBP", "channel": "card", "country": "GB"} | t
               for t in transactions], fmt)
    write_csv(folder / "balances.csv", ["account_id", "as_of", "balance"], list(balances))
    write_csv(folder / "consents.csv", ["customer_id", "purpose", "granted", "recorded_at", "expires_at"],
              [{"customer_id": c, "purpose": "open_banking", "granted": "true",
                "recorded_at": "2026-01-01T00:00:00Z"} for c in consents])
    if fx is not None:
        write_csv(folder / "fx_rates.csv", ["currency", "rate_to_base"],
                  [{"currency": c, "rate_to_base": r} for c, r in fx.items()])


def example(reference: Path, name: str) -> dict:
    return json.loads((reference / "obie" / "examples" / f"obie_v3.1.11_{name}_ex1.json").read_text())


def ob_account(reference: Path, account_id: str) -> dict:
    return example(reference, "accounts")["Data"]["Account"][0] | {"AccountId": account_id,
                                                                   "OpeningDate": "2015-01-01T00:00:00+00:00"}


def ob_transaction(reference: Path, account_id: str, txn_id: str, booked: str, amount: str = "10.00",
                   currency: str = "GBP") -> dict:
    record = copy.deepcopy(example(reference, "transactions")["Data"]["Transaction"][0])
    record.update({"AccountId": account_id, "TransactionId": txn_id, "BookingDateTime": booked,
                   "ValueDateTime": booked, "Amount": {"Amount": amount, "Currency": currency}})
    record["Balance"]["Amount"]["Currency"] = currency
    return record


def ob_balance(reference: Path, account_id: str, when: str, amount: str = "100.00", currency: str = "GBP") -> dict:
    record = copy.deepcopy(example(reference, "balances")["Data"]["Balance"][1])
    record.update({"AccountId": account_id, "DateTime": when, "Type": "ClosingBooked",
                   "Amount": {"Amount": amount, "Currency": currency}})
    return record


def ob_standing_order(reference: Path, account_id: str, order_id: str) -> dict:
    record = copy.deepcopy(example(reference, "standing-orders")["Data"]["StandingOrder"][0])
    record.update({"AccountId": account_id, "StandingOrderId": order_id})
    return record


def write_envelope(folder: Path, customer: str, fetched_at: str, accounts: list[dict], transactions: list[dict] = (),
                   balances: list[dict] = (), standing_orders: list[dict] = (), tag: str = "1") -> None:
    out = folder / "openbanking"
    out.mkdir(parents=True, exist_ok=True)
    body = {"customer_id": customer, "provider": "alphabank", "consent_id": f"obc-{customer}", "fetched_at": fetched_at,
            "accounts": {"Data": {"Account": accounts}}}
    for key, records, data_key in (("transactions", transactions, "Transaction"), ("balances", balances, "Balance"),
                                   ("standing_orders", standing_orders, "StandingOrder")):
        if records:
            body[key] = {"Data": {data_key: list(records)}}
    (out / f"{customer}-alphabank-{tag}.json").write_text(json.dumps(body), encoding="utf-8")


def load(paths: Paths, load_date: str, as_of: date) -> dict:
    folder = paths.landing_history if load_date == "history" else paths.landing_day(load_date)
    ingest_landing(paths, load_date, folder, business_date=None if load_date == "history" else as_of)
    return conform(paths, load_date, as_of)


def silver(paths: Paths, table: str, where: str = "true") -> pd.DataFrame:
    scan = lake.scan_sql(paths, "silver", table)
    con = lake.connect()
    try:
        return con.execute(f"select * from {scan} where {where}").df()
    finally:
        con.close()


def quarantine(paths: Paths, load_date: str = DAY) -> pd.DataFrame:
    folder = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    con = lake.connect()
    try:
        return con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").df()
    finally:
        con.close()


def owners(paths: Paths, as_of: str) -> dict[str, str]:
    accounts = silver(paths, "accounts", f"as_of = '{as_of}'")
    return dict(zip(accounts["account_id"], accounts["customer_id"]))


@pytest.fixture
def y_holds_22289(paths, reference):
    """History: Y's fetch lists ob:alphabank:22289 and 31820 (balances, a posting, a standing order on 22289)."""
    folder = paths.landing_history
    core_files(folder, customers=[X, Y, Z], consents=[X, Y, Z], fx={"EUR": "0.850000"},
               accounts=[{"account_id": "A1", "customer_id": X}, {"account_id": "A2", "customer_id": Y},
                         {"account_id": "A3", "customer_id": Z}])
    write_envelope(folder, Y, "2026-11-19T02:00:00+00:00",
                   [ob_account(reference, "22289"), ob_account(reference, "31820")],
                   transactions=[ob_transaction(reference, "22289", "123", "2026-11-18T10:00:00+00:00")],
                   balances=[ob_balance(reference, "22289", "2026-11-18T23:00:00+00:00")],
                   standing_orders=[ob_standing_order(reference, "22289", "SO-Y")])
    load(paths, "history", HISTORY_AS_OF)
    assert owners(paths, "2026-11-19") == {"A1": X, "A2": Y, "A3": Z, "ob:alphabank:22289": Y,
                                           "ob:alphabank:31820": Y}


# --- item 1: attribution ---------------------------------------------------------------------------------------

def test_a_later_fetch_of_another_customer_cannot_take_an_account(paths, reference, y_holds_22289):
    folder = paths.landing_day(DAY)
    core_files(folder)
    # X's fetch lists Y's account 22289 (and its own 55555), re-sends Y's posting 123, adds a balance and a standing
    # order on 22289; it is fetched later than Y's and its file sorts first
    write_envelope(folder, X, "2026-11-20T03:00:00+00:00",
                   [ob_account(reference, "22289"), ob_account(reference, "55555")],
                   transactions=[ob_transaction(reference, "22289", "123", "2026-11-18T10:00:00+00:00"),
                                 ob_transaction(reference, "22289", "124", "2026-11-20T09:00:00+00:00"),
                                 ob_transaction(reference, "55555", "900", "2026-11-20T09:00:00+00:00")],
                   balances=[ob_balance(reference, "22289", "2026-11-20T08:00:00+00:00", "999.00")],
                   standing_orders=[ob_standing_order(reference, "22289", "SO-X")])
    write_envelope(folder, Y, "2026-11-20T02:00:00+00:00", [ob_account(reference, "22289")],
                   transactions=[ob_transaction(reference, "22289", "124", "2026-11-20T09:00:00+00:00")])
    metrics = load(paths, DAY, D)

    held = owners(paths, DAY)
    assert held["ob:alphabank:22289"] == Y and held["ob:alphabank:31820"] == Y  # ownership of an earlier night holds
    assert held["ob:alphabank:55555"] == X
    night = silver(paths, "transactions", f"load_date = '{DAY}'").set_index("transaction_id")
    assert night.loc["ob:alphabank:22289:124", "customer_id"] == Y  # Y's own delivery, not out-ranked by X's
    assert night.loc["ob:alphabank:55555:900", "customer_id"] == X
    assert sorted(night.index) == ["ob:alphabank:22289:124", "ob:alphabank:55555:900"]
    balances = silver(paths, "balances", f"load_date = '{DAY}'")
    assert "ob:alphabank:22289" not in set(balances["account_id"])
    orders = silver(paths, "standing_orders", f"as_of = '{DAY}'")
    assert orders[["account_id", "standing_order_id", "customer_id"]].values.tolist() == [
        ["ob:alphabank:22289", "SO-Y", Y]]
    q = quarantine(paths)
    mine = q[(q["stage"] == "conform") & q["file"].str.contains(X)]
    assert sorted(mine["reason"].str.split(":").str[0]) == [
        "open-banking account held by another customer"] * 5  # the claim, 2 postings, the balance, the order
    assert mine["raw_value"].str.contains("22289").all()
    assert metrics["tables"]["accounts"]["rejected"] == {
        "open-banking account held by another customer: the claim is not re-assigned": 1}


def test_an_account_claimed_by_two_customers_in_one_load_is_quarantined_for_both(paths, reference, y_holds_22289):
    folder = paths.landing_day(DAY)
    core_files(folder)
    for customer in (X, Z):
        write_envelope(folder, customer, "2026-11-20T03:00:00+00:00", [ob_account(reference, "77777")],
                       transactions=[ob_transaction(reference, "77777", f"T-{customer}", "2026-11-20T09:00:00+00:00")],
                       balances=[ob_balance(reference, "77777", "2026-11-20T08:00:00+00:00")])
    load(paths, DAY, D)
    assert "ob:alphabank:77777" not in owners(paths, DAY)
    assert silver(paths, "transactions", f"load_date = '{DAY}'").empty
    assert silver(paths, "balances", f"load_date = '{DAY}'").empty
    q = quarantine(paths)
    claims = q[q["column_name"] == "account_id"]
    assert len(claims[claims["reason"].str.startswith("open-banking account listed by 2 customers")]) == 2
    assert len(q[(q["stage"] == "conform")]) == 6  # two claims, two postings, two balances: nothing re-assigned


def test_records_on_accounts_an_envelope_does_not_list_are_quarantined_at_ingest(paths, reference, y_holds_22289):
    folder = paths.landing_day(DAY)
    core_files(folder)
    write_envelope(folder, X, "2026-11-20T03:00:00+00:00", [ob_account(reference, "55555")],
                   transactions=[ob_transaction(reference, "31820", "500", "2026-11-20T09:00:00+00:00"),
                                 ob_transaction(reference, "55555", "501", "2026-11-20T09:00:00+00:00")],
                   balances=[ob_balance(reference, "31820", "2026-11-20T08:00:00+00:00")],
                   standing_orders=[ob_standing_order(reference, "31820", "SO-1")])
    load(paths, DAY, D)
    night = silver(paths, "transactions", f"load_date = '{DAY}'")
    assert night[["transaction_id", "customer_id"]].values.tolist() == [["ob:alphabank:55555:501", X]]
    q = quarantine(paths)
    unlisted = q[q["reason"].str.contains("is not listed in this envelope's accounts")]
    assert sorted(unlisted["column_name"]) == ["balances.Data.Balance[0].AccountId",
                                              "standing_orders.Data.StandingOrder[0].AccountId",
                                              "transactions.Data.Transaction[0].AccountId"]
    assert set(unlisted["stage"]) == {"ingest"}
    assert silver(paths, "standing_orders", f"as_of = '{DAY}'")["standing_order_id"].tolist() == ["SO-Y"]


def test_core_ids_cannot_collide_with_open_banking_accounts(paths, reference, y_holds_22289):
    folder = paths.landing_day(DAY)
    core_files(folder, accounts=[{"account_id": "ob:alphabank:22289", "customer_id": Z}],
               transactions=[{"transaction_id": "T1", "account_id": "ob:alphabank:31820", "amount": "-5.00"},
                             {"transaction_id": "T2", "account_id": "A3", "amount": "-6.00"}],
               balances=[{"account_id": "ob:alphabank:31820", "as_of": DAY, "balance": "1.00"}])
    load(paths, DAY, D)
    assert owners(paths, DAY)["ob:alphabank:22289"] == Y
    assert silver(paths, "accounts", f"as_of = '{DAY}'")["account_id"].is_unique
    night = silver(paths, "transactions", f"load_date = '{DAY}'")
    assert night["transaction_id"].tolist() == ["T2"]
    assert silver(paths, "balances", f"load_date = '{DAY}'").empty
    q = quarantine(paths).set_index("raw_value")
    assert q.loc["ob:alphabank:22289", "reason"].startswith("account_id in the open-banking namespace")
    assert q.loc["ob:alphabank:31820", "reason"].tolist() == ["core posting or balance on an open-banking account"] * 2


# --- item 4 in conform: a currency without a rate, open-banking rows after D -------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_a_posting_in_a_currency_without_a_rate_is_quarantined(paths, reference, y_holds_22289, fmt):
    folder = paths.landing_day(DAY)
    core_files(folder, fmt=fmt, transactions=[
        {"transaction_id": "JPY1", "account_id": "A1", "amount": "-1500", "currency": "JPY"},
        {"transaction_id": "EUR1", "account_id": "A1", "amount": "-10.00", "currency": "EUR"},
        {"transaction_id": "GBP1", "account_id": "A1", "amount": "-2.50", "currency": "GBP"}])
    write_envelope(folder, Y, "2026-11-20T03:00:00+00:00", [ob_account(reference, "22289")],
                   transactions=[ob_transaction(reference, "22289", "125", "2026-11-20T09:00:00+00:00", "700",
                                                "JPY")],
                   balances=[ob_balance(reference, "22289", "2026-11-20T08:00:00+00:00", "5.00", "CHF")])
    metrics = load(paths, DAY, D)
    night = silver(paths, "transactions", f"load_date = '{DAY}'").set_index("transaction_id")
    assert sorted(night.index) == ["EUR1", "GBP1"]
    assert float(night.loc["EUR1", "amount_base"]) == -8.5 and float(night.loc["GBP1", "amount_base"]) == -2.5
    q = quarantine(paths)
    fx = q[q["reason"].str.startswith("no FX rate")]
    assert sorted(fx["reason"]) == ["no FX rate for CHF on 2026-11-20", "no FX rate for JPY on 2026-11-20",
                                    "no FX rate for JPY on 2026-11-20"]
    assert set(fx["column_name"]) == {"currency"} and set(fx["raw_value"]) == {"JPY", "CHF"}
    assert metrics["tables"]["transactions"]["rejected"] == {"no FX rate for JPY on 2026-11-20": 2}


def test_no_feature_counts_a_foreign_amount_as_base_currency(paths):
    """Silver written before the rule (amount_base null for a foreign posting, as older lakes hold) never reaches
    the features 1:1: a JPY amount without a rate is left out, a base-currency one counts as it is."""
    from pipelines.features import register_silver

    frame = pd.DataFrame({
        "transaction_id": ["T1", "T2", "T3"], "account_id": ["A1"] * 3, "customer_id": [X] * 3,
        "source": ["core"] * 3, "provider": [None] * 3,
        "booked_at": pd.to_datetime(["2026-11-20T10:00:00Z"] * 3), "booking_date": [D] * 3,
        "amount": [-1500.0, -2.5, -10.0], "currency": ["JPY", "GBP", "EUR"],
        "amount_base": pd.Series([None, None, None], dtype="float64"),
        "description": ["x"] * 3, "merchant_name": [None] * 3, "mcc": [None] * 3, "channel": ["card"] * 3,
        "country": ["GB"] * 3, "counterparty_id": [None] * 3, "load_date": [DAY] * 3,
        "bucket": [int(lake.bucket_of([X])[0])] * 3})
    lake.write_frame(frame.drop(columns="load_date"),
                     lake.partition_path(paths, "silver", "transactions", load_date=DAY), paths, partition_by=["bucket"])
    balances = pd.DataFrame({"account_id": ["A1", "A9"], "customer_id": [X, X], "source": ["core", "core"],
                             "as_of": [D, D], "balance": [5000.0, 7.0], "currency": ["JPY", "GBP"],
                             "load_date": [DAY] * 2, "bucket": [int(lake.bucket_of([X])[0])] * 2})
    lake.write_frame(balances.drop(columns="load_date"),
                     lake.partition_path(paths, "silver", "balances", load_date=DAY), paths, partition_by=["bucket"])
    for table, rows in (("fx_rates", {"currency": ["EUR"], "rate_to_base": [0.85], "updated_load_date": [DAY]}),
                        ("accounts", {"account_id": ["A1"], "customer_id": [X], "source": ["core"],
                                      "product": ["current"], "is_open": [True], "bucket": [0]}),
                        ("customers", {"customer_id": [X], "bucket": [0]})):
        lake.write_frame(pd.DataFrame(rows), lake.partition_path(paths, "silver", table, as_of=DAY), paths)
    con = lake.connect()
    try:
        register_silver(con, paths, D)
        values = dict(con.execute("select transaction_id, amount_value from transactions_in").fetchall())
        balance_values = dict(con.execute("select account_id, balance_value from balances_in").fetchall())
    finally:
        con.close()
    assert {k: float(v) for k, v in values.items()} == {"T2": -2.5, "T3": -8.5}
    assert {k: float(v) for k, v in balance_values.items()} == {"A9": 7.0}


def test_open_banking_rows_dated_after_d_never_reach_silver(paths, reference, y_holds_22289):
    folder = paths.landing_day(DAY)
    core_files(folder)
    # fetched before midnight: a posting booked the next day cannot be booked yet (a data error: quarantined)
    write_envelope(folder, Y, "2026-11-20T23:00:00+00:00", [ob_account(reference, "22289")], tag="a",
                   transactions=[ob_transaction(reference, "22289", "F1", "2026-11-21T08:00:00+00:00"),
                                 ob_transaction(reference, "22289", "OK", "2026-11-20T08:00:00+00:00")])
    # fetched after midnight: D+1's early postings and balance are real but belong to the next night (skipped)
    write_envelope(folder, Y, "2026-11-21T00:30:00+00:00", [ob_account(reference, "22289")], tag="b",
                   transactions=[ob_transaction(reference, "22289", "F2", "2026-11-21T00:10:00+00:00")],
                   balances=[ob_balance(reference, "22289", "2026-11-21T00:20:00+00:00")])
    metrics = load(paths, DAY, D)
    night = silver(paths, "transactions", f"load_date = '{DAY}'")
    assert night["transaction_id"].tolist() == ["ob:alphabank:22289:OK"]
    assert silver(paths, "balances", f"load_date = '{DAY}'").empty
    q = quarantine(paths)
    assert q.loc[q["raw_value"] == "ob:alphabank:22289:F1", "reason"].tolist() == [
        "open banking: booked after D and after the fetch that delivered it"]
    assert metrics["tables"]["transactions"]["skipped"] == {
        "open banking: booked after D (a later fetch delivers it)": 1}
    assert metrics["tables"]["balances"]["skipped"] == {"open banking: balance dated after D": 1}
