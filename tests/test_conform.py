"""Conform: bronze into silver on a hand-made bank — snapshots, consent, dedup, rejects and re-runs."""
from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipelines import lake
from pipelines import conform as conform_module
from pipelines.conform import bucket_groups, conform
from pipelines.schemas import bronze_schema

D = date(2026, 11, 20)


def write_bronze(paths, kind: str, load_date: str, rows: list[dict]) -> None:
    """Bronze rows typed as the ingest writes them (missing columns are null, lineage filled in)."""
    schema = bronze_schema(kind)
    frame = pd.DataFrame(rows)
    for i, row in enumerate(rows):
        frame.loc[i, "source_file"] = row.get("source_file", f"{load_date}/{kind}.csv")
        frame.loc[i, "source_line"] = row.get("source_line", i + 2)
    con = lake.connect()
    con.register("raw", frame)
    present = set(frame.columns)
    cols = ", ".join(f"cast({c.name if c.name in present else 'null'} as {c.type}) as {c.name}"
                     for c in schema.columns)
    lake.write_relation(con, f"select {cols} from raw",
                        lake.partition_path(paths, "bronze", kind, load_date=load_date), paths)


def write_ob(paths, resource: str, load_date: str, rows: list[dict]) -> None:
    lake.write_frame(pd.DataFrame(rows), lake.partition_path(paths, "bronze", f"ob_{resource}", load_date=load_date),
                     paths)


def silver(paths, table: str, where: str = "true") -> pd.DataFrame:
    con = lake.connect()
    scan = lake.scan_sql(paths, "silver", table)
    return con.execute(f"select * from {scan} where {where}").df()


def quarantine(paths, load_date: str) -> pd.DataFrame:
    con = lake.connect()
    path = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    return con.execute(f"select * from read_parquet('{path}/*.parquet')").df()


def tx(tid: str, account: str, day: str, amount: str, **extra) -> dict:
    return {"transaction_id": tid, "account_id": account, "booked_at": f"{day}T10:00:00+00:00",
            "booking_date": day, "amount": amount, "currency": "GBP", "channel": "card", "mcc": "5411",
            "country": "GB"} | extra


def ob_tx(tid: str, account: str, day: str, amount: str, fetched: str) -> dict:
    return {"transaction_id": f"ob:alphabank:{account}:{tid}", "provider_transaction_id": tid,
            "account_id": f"ob:alphabank:{account}", "status": "booked",
            "booked_at": pd.Timestamp(f"{day}T09:00:00Z"), "booking_date": pd.Timestamp(day).date(),
            "amount": amount, "currency": "GBP", "description": "coffee", "merchant_name": "Cafe", "mcc": None,
            "proprietary_code": None, "bank_transaction_code": None, "customer_id": "C2", "provider": "alphabank",
            "fetched_at": pd.Timestamp(fetched), "source_file": f"x/openbanking/C2-alphabank-{fetched[:10]}.json"}


@pytest.fixture
def history(paths):
    """Three customers, four core accounts, three days of postings; C2 consents to open banking, C3 does not."""
    write_bronze(paths, "customers", "history", [
        {"customer_id": "C1", "birth_year": 1980, "region": "London", "customer_since": "2020-01-01"},
        {"customer_id": "C2", "birth_year": 1990, "region": "Wales", "customer_since": "2021-01-01"},
        {"customer_id": "C3", "birth_year": 1970, "region": "Scotland", "customer_since": "2019-05-01"},
    ])
    write_bronze(paths, "accounts", "history", [
        {"account_id": "A1", "customer_id": "C1", "product": "current", "currency": "GBP", "opened_on": "2020-01-01",
         "overdraft_limit": "500.00"},
        {"account_id": "A2", "customer_id": "C2", "product": "current", "currency": "GBP", "opened_on": "2021-01-01"},
        {"account_id": "A3", "customer_id": "C3", "product": "current", "currency": "GBP", "opened_on": "2019-05-01"},
        {"account_id": "A4", "customer_id": "C1", "product": "savings", "currency": "GBP", "opened_on": "2020-01-01",
         "closed_on": "2026-11-18"},
    ])
    write_bronze(paths, "transactions", "history", [
        tx("T1", "A1", "2026-11-17", "-10.50"), tx("T2", "A1", "2026-11-18", "2000.00", channel="salary"),
        tx("T3", "A2", "2026-11-18", "-3.20"), tx("T4", "A3", "2026-11-19", "-99.99", currency="EUR"),
    ])
    write_bronze(paths, "balances", "history", [
        {"account_id": "A1", "as_of": "2026-11-17", "balance": "-10.50"},
        {"account_id": "A1", "as_of": "2026-11-18", "balance": "1989.50"},
    ])
    write_bronze(paths, "consents", "history", [
        {"customer_id": "C2", "purpose": "open_banking", "granted": True, "recorded_at": "2026-01-01T00:00:00Z"},
        {"customer_id": "C2", "purpose": "personalization", "granted": True, "recorded_at": "2026-01-01T00:00:00Z",
         "expires_at": "2026-11-20T12:00:00Z"},
        {"customer_id": "C3", "purpose": "open_banking", "granted": False, "recorded_at": "2026-01-01T00:00:00Z"},
        {"customer_id": "C1", "purpose": "service_alerts", "granted": False, "recorded_at": "2026-02-01T00:00:00Z"},
    ])
    write_bronze(paths, "fx_rates", "history", [{"currency": "EUR", "rate_to_base": "0.85"},
                                                  {"currency": "GBP", "rate_to_base": "1"}])
    write_ob(paths, "accounts", "history", [
        {"account_id": "ob:alphabank:X2", "customer_id": "C2", "provider": "alphabank", "product": "current",
         "currency": "GBP", "opening_date": pd.Timestamp("2018-01-01").date(),
         "fetched_at": pd.Timestamp("2026-11-19T01:00:00Z"), "source_file": "history/openbanking/C2.json"},
        {"account_id": "ob:alphabank:X3", "customer_id": "C3", "provider": "alphabank", "product": "current",
         "currency": "GBP", "opening_date": pd.Timestamp("2018-01-01").date(),
         "fetched_at": pd.Timestamp("2026-11-19T01:00:00Z"), "source_file": "history/openbanking/C3.json"},
    ])
    write_ob(paths, "transactions", "history", [
        ob_tx("E1", "X2", "2026-11-18", "-4.00", "2026-11-19T01:00:00Z"),
        ob_tx("E2", "X2", "2026-11-19", "-5.00", "2026-11-19T01:00:00Z"),
        ob_tx("E9", "X3", "2026-11-19", "-7.00", "2026-11-19T01:00:00Z") | {"account_id": "ob:alphabank:X3",
                                                                           "transaction_id": "ob:alphabank:X3:E9",
                                                                           "customer_id": "C3"},
    ])
    metrics = conform(paths, "history", date(2026, 11, 19))
    return metrics


def test_history_lands_in_one_partition_split_by_bucket(paths, history):
    txs = silver(paths, "transactions").sort_values("transaction_id")
    assert txs["transaction_id"].tolist() == ["T1", "T2", "T3", "T4", "ob:alphabank:X2:E1", "ob:alphabank:X2:E2"]
    assert set(txs.load_date) == {"history"}
    assert sorted(p.name for p in paths.table("silver", "transactions").iterdir()) == ["load_date=history"]
    assert (txs.bucket.to_numpy() == lake.bucket_of(txs.customer_id)).all()
    assert float(txs.set_index("transaction_id").loc["T4", "amount_base"]) == pytest.approx(-84.99)
    assert set(txs[txs.source == "openbanking"].channel) == {"transfer_out"}
    # C3's external account and posting are left out for lack of consent, and counted
    assert history["tables"]["transactions"]["skipped"] == {"open banking: account not held with consent on D": 1}
    assert history["tables"]["accounts"]["skipped"] == {"no open_banking consent on D": 1}


def test_snapshot_accounts_customers_and_consent_state(paths, history):
    accounts = silver(paths, "accounts").set_index("account_id")
    assert sorted(accounts.index) == ["A1", "A2", "A3", "A4", "ob:alphabank:X2"]
    assert not accounts.loc["A4", "is_open"] and accounts.loc["A1", "is_open"]
    assert accounts.loc["ob:alphabank:X2", "source"] == "openbanking"
    assert set(accounts.as_of) == {"2026-11-19"}
    state = silver(paths, "consent_state").set_index("customer_id")
    assert state.loc["C2", "is_open_banking_allowed"] and not state.loc["C3", "is_open_banking_allowed"]
    assert state.loc["C2", "is_personalization_allowed"]  # expires on the 20th, after the 19th
    assert not state.loc["C1", "is_service_alerts_allowed"] and state.loc["C2", "is_service_alerts_allowed"]
    assert not state.loc["C1", "is_marketing_email_allowed"]


@pytest.fixture
def night(paths, history):
    """Night D: an unknown account, a re-delivered posting, an overlapping fetch, a region change, a withdrawal."""
    write_bronze(paths, "customers", D.isoformat(), [
        {"customer_id": "C1", "birth_year": 1980, "region": "Bristol", "customer_since": "2020-01-01"}])
    write_bronze(paths, "transactions", D.isoformat(), [
        tx("T10", "A1", "2026-11-20", "-1.00"),
        tx("T11", "NOPE", "2026-11-20", "-2.00", source_line=3),
        tx("T2", "A1", "2026-11-18", "2000.00", source_line=4),
    ])
    write_bronze(paths, "balances", D.isoformat(), [{"account_id": "A1", "as_of": "2026-11-20", "balance": "1988.50"},
                                                    {"account_id": "ZZ", "as_of": "2026-11-20", "balance": "1.00"}])
    write_ob(paths, "transactions", D.isoformat(), [
        ob_tx("E2", "X2", "2026-11-19", "-5.00", "2026-11-20T01:00:00Z"),
        ob_tx("E3", "X2", "2026-11-20", "-6.00", "2026-11-20T01:00:00Z"),
    ])
    return conform(paths, D.isoformat(), D)


def test_night_rejects_unknown_account_and_redelivered_posting(paths, night):
    q = quarantine(paths, D.isoformat())
    assert set(q.stage) == {"conform"}
    by_value = q.set_index("raw_value")
    assert by_value.loc["NOPE", "reason"] == "unknown account_id"
    assert by_value.loc["NOPE", "column_name"] == "account_id"
    assert int(by_value.loc["NOPE", "line"]) == 3
    assert by_value.loc["T2", "reason"] == "duplicate transaction_id, already loaded on history"
    assert by_value.loc["ZZ", "reason"] == "unknown account_id"
    night_txs = silver(paths, "transactions", f"load_date = '{D}'")
    assert sorted(night_txs.transaction_id) == ["T10", "ob:alphabank:X2:E3"]
    assert night["tables"]["transactions"]["skipped"] == {"open banking: already loaded by an overlapping fetch": 1}


def test_night_updates_snapshots_and_expires_consent(paths, night):
    customers = silver(paths, "customers", f"as_of = '{D}'").set_index("customer_id")
    assert customers.loc["C1", "region"] == "Bristol" and customers.loc["C1", "updated_load_date"] == D.isoformat()
    assert customers.loc["C2", "updated_load_date"] == "history"
    state = silver(paths, "consent_state", f"as_of = '{D}'").set_index("customer_id")
    assert not state.loc["C2", "is_personalization_allowed"]  # the grant expired during D


def test_rerun_of_a_night_replaces_that_night_only(paths, night):
    before = silver(paths, "transactions", f"load_date <> '{D}'").sort_values("transaction_id")
    write_bronze(paths, "transactions", D.isoformat(), [tx("T10", "A1", "2026-11-20", "-1.00")])
    write_ob(paths, "transactions", D.isoformat(), [ob_tx("E2", "X2", "2026-11-19", "-5.00", "2026-11-20T01:00:00Z")])
    again = conform(paths, D.isoformat(), D)
    assert sorted(silver(paths, "transactions", f"load_date = '{D}'").transaction_id) == ["T10"]
    after = silver(paths, "transactions", f"load_date <> '{D}'").sort_values("transaction_id")
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    assert again["quarantined"] == 1  # only the unknown balance account is left in D's quarantine
    assert len(quarantine(paths, D.isoformat())) == 1


def test_withdrawn_open_banking_consent_drops_external_accounts_next_run(paths, night):
    write_bronze(paths, "consents", "2026-11-21", [
        {"customer_id": "C2", "purpose": "open_banking", "granted": False, "recorded_at": "2026-11-21T08:00:00Z"}])
    conform(paths, "2026-11-21", date(2026, 11, 21))
    accounts = silver(paths, "accounts", "as_of = '2026-11-21'")
    assert "ob:alphabank:X2" not in set(accounts.account_id)
    assert "ob:alphabank:X2" in set(silver(paths, "accounts", f"as_of = '{D}'").account_id)


def test_deliveries_repeated_within_one_load_keep_one_row_each(paths, history):
    """The first core delivery of a posting wins, the last balance of an account-day wins, a second
    open-banking fetch of a posting is skipped; the repeats are quarantined or counted, never lost."""
    night = D.isoformat()
    write_bronze(paths, "transactions", night, [
        tx("T20", "A1", "2026-11-20", "-1.00", source_file=f"{night}/transactions-1.csv", source_line=2),
        tx("T21", "A1", "2026-11-20", "-2.00", source_file=f"{night}/transactions-1.csv", source_line=3),
        tx("T20", "A1", "2026-11-20", "-9.00", source_file=f"{night}/transactions-2.csv", source_line=2),
    ])
    write_bronze(paths, "balances", night, [
        {"account_id": "A1", "as_of": "2026-11-20", "balance": "10.00", "source_file": f"{night}/balances-1.csv"},
        {"account_id": "A1", "as_of": "2026-11-20", "balance": "20.00", "source_file": f"{night}/balances-2.csv"},
        {"account_id": "A2", "as_of": "2026-11-20", "balance": "5.00", "source_file": f"{night}/balances-1.csv"},
    ])
    write_ob(paths, "transactions", night, [
        ob_tx("E7", "X2", "2026-11-20", "-6.00", "2026-11-20T01:00:00Z"),
        ob_tx("E7", "X2", "2026-11-20", "-6.00", "2026-11-20T02:00:00Z"),
    ])
    metrics = conform(paths, night, D)

    txs = silver(paths, "transactions", f"load_date = '{night}'").set_index("transaction_id")
    assert sorted(txs.index) == ["T20", "T21", "ob:alphabank:X2:E7"]
    assert float(txs.loc["T20", "amount"]) == -1.0
    balances = silver(paths, "balances", f"load_date = '{night}'").set_index("account_id")
    assert sorted(balances.index) == ["A1", "A2"]
    assert float(balances.loc["A1", "balance"]) == 20.0
    q = quarantine(paths, night)
    assert sorted(q.reason) == [
        "duplicate balance for this account and date within this load (the last one is used)",
        "duplicate transaction_id within this load"]
    assert q.set_index("reason").loc["duplicate transaction_id within this load", "file"].endswith("transactions-2.csv")
    assert metrics["tables"]["transactions"]["skipped"] == {"open banking: already loaded by an overlapping fetch": 1}


def test_bucket_groups_deal_every_bucket_to_exactly_one_group():
    assert bucket_groups(100, 8_000_000, buckets=16) == [list(range(16))]
    groups = bucket_groups(33_000_000, 8_000_000, buckets=16)
    assert len(groups) == 5
    assert sorted(b for g in groups for b in g) == list(range(16))
    assert len(bucket_groups(10**12, 1, buckets=16)) == 16


def _in_groups_of_one_bucket(monkeypatch):
    config = conform_module.settings()
    config = config | {"ingest": config["ingest"] | {"conform_rows_per_bucket_group": 1}}
    monkeypatch.setattr(conform_module, "settings", lambda: config)


def _silver_rows(paths, table: str, load_date: str) -> list[tuple]:
    frame = silver(paths, table, f"load_date = '{load_date}'")
    return sorted(frame.astype(str).itertuples(index=False, name=None))


def test_conforming_bucket_group_by_bucket_group_gives_the_same_silver_and_quarantine(paths, history, monkeypatch):
    one_pass = {t: _silver_rows(paths, t, "history") for t in ("transactions", "balances")}
    assert history["tables"]["transactions"]["bucket_groups"] == 1
    _in_groups_of_one_bucket(monkeypatch)
    grouped = conform(paths, "history", date(2026, 11, 19))
    assert grouped["tables"]["transactions"]["bucket_groups"] > 1
    assert grouped["tables"]["balances"]["bucket_groups"] > 1
    for table in ("transactions", "balances"):
        assert _silver_rows(paths, table, "history") == one_pass[table]
        assert grouped["tables"][table] | {"bucket_groups": 1} == history["tables"][table]


def test_grouped_conform_keeps_rejects_skips_and_the_first_delivery(paths, history, monkeypatch):
    _in_groups_of_one_bucket(monkeypatch)
    test_deliveries_repeated_within_one_load_keep_one_row_each(paths, history)


def test_an_id_delivered_on_accounts_of_two_groups_is_ranked_in_one_pass(paths, history, monkeypatch):
    _in_groups_of_one_bucket(monkeypatch)
    night = D.isoformat()
    write_bronze(paths, "transactions", night, [
        tx("T30", "A1", "2026-11-20", "-1.00", source_line=2),
        tx("T30", "A3", "2026-11-20", "-3.00", source_line=3),
        tx("T31", "NOPE", "2026-11-20", "-3.00", source_line=4),
    ])
    metrics = conform(paths, night, D)
    assert lake.bucket_of(["C1"])[0] != lake.bucket_of(["C3"])[0]  # A1 and A3 are in different groups
    assert metrics["tables"]["transactions"]["bucket_groups"] == 1
    txs = silver(paths, "transactions", f"load_date = '{night}'")
    assert txs.transaction_id.tolist() == ["T30"] and txs.account_id.tolist() == ["A1"]
    assert metrics["tables"]["transactions"]["rejected"] == {"duplicate transaction_id within this load": 1,
                                                             "unknown account_id": 1}
