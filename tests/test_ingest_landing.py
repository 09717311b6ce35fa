"""A landing folder -> bronze partitions, the load's quarantine and runs/<D>/ingest.json."""
from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.contract import landing_contract
from pipelines.ingest.landing import ingest_landing

GOOD = Path(__file__).parent / "fixtures" / "landing" / "good"
D = "2026-11-20"
OB_SYNTHETIC = Path(__file__).parent / "fixtures" / "openbanking" / "synthetic.py"


def landing_day(paths: Paths, day: str = D) -> Path:
    folder = paths.landing_day(day)
    shutil.copytree(GOOD, folder)
    return folder


def bronze(paths: Paths, table: str, load_date: str = D) -> list[tuple]:
    folder = lake.partition_path(paths, "bronze", table, load_date=load_date)
    con = lake.connect()
    try:
        return con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false) "
                           f"order by all").fetchall()
    finally:
        con.close()


def bronze_types(paths: Paths, table: str, load_date: str = D) -> dict[str, str]:
    folder = lake.partition_path(paths, "bronze", table, load_date=load_date)
    con = lake.connect()
    try:
        return {name: kind for name, kind, *_ in con.execute(
            f"describe select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").fetchall()}
    finally:
        con.close()


def quarantine(paths: Paths, load_date: str = D) -> list[tuple]:
    folder = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    con = lake.connect()
    try:
        return con.execute(f"select load_date, stage, file, line, column_name, reason from "
                           f"read_parquet('{folder}/*.parquet', hive_partitioning = false) "
                           f"order by file, line nulls first, column_name").fetchall()
    finally:
        con.close()


def test_every_kind_lands_in_bronze_with_the_contract_types(paths):
    folder = landing_day(paths)
    metrics = ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))

    expected_rows = {"customers": 3, "accounts": 4, "transactions": 5, "balances": 4, "consents": 3,
                     "crm_responses": 2, "life_events": 1, "fx_rates": 2, "messages": 2, "app_events": 3}
    assert {k: m["rows_accepted"] for k, m in metrics["kinds"].items()} == expected_rows
    assert all(m["rows_quarantined"] == 0 and m["files"] == 1 for m in metrics["kinds"].values())
    assert metrics["missing_kinds"] == [] and metrics["unknown_files"] == [] and metrics["quarantine_rows"] == 0
    assert json.loads((paths.runs / D / "ingest.json").read_text())["kinds"]["transactions"]["rows_accepted"] == 5
    for kind, contract in landing_contract().files.items():
        assert len(bronze(paths, kind)) == expected_rows[kind]
        types = bronze_types(paths, kind)
        assert types["source_file"] == "VARCHAR" and types["source_line"] == "BIGINT"
        for column in contract.columns:
            assert types[column.name] == {
                "id": "VARCHAR", "text": "VARCHAR", "enum": "VARCHAR", "currency": "VARCHAR",
                "country": "VARCHAR", "mcc": "VARCHAR", "int": "BIGINT", "decimal2": "DECIMAL(18,2)",
                "decimal6": "DECIMAL(18,6)", "date": "DATE", "timestamptz": "TIMESTAMP WITH TIME ZONE",
                "bool": "BOOLEAN"}[column.type], (kind, column.name)
    assert bronze_types(paths, "transactions")["booking_date"] == "DATE"
    first = bronze(paths, "transactions")[0]
    assert first[0] == "T0000001" and first[-2:] == ("2026-11-20/transactions.csv", 2)
    assert [row[2] for row in bronze(paths, "consents")] == [False, True, True]


def test_bad_rows_unknown_files_and_several_files_of_a_kind(paths):
    folder = landing_day(paths)
    (folder / "transactions-0002.csv").write_text(
        "transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
        "counterparty_id\n"
        "T0000101,A000001,2026-11-20T10:00:00Z,1.005,GBP,,,,fee,GB,\n"
        "T0000102,A000001,2026-11-20T10:00:00Z,1.00,GBP,,,,fee,GB,\n", encoding="utf-8")
    (folder / "transactions-0003.csv.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    (folder / "Balances.CSV").write_text("account_id,as_of,balance\n", encoding="utf-8")
    metrics = ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))

    tx = metrics["kinds"]["transactions"]
    assert (tx["files"], tx["rows_read"], tx["rows_accepted"], tx["rows_quarantined"], tx["files_quarantined"]) == (
        3, 7, 6, 1, 1)
    assert tx["files_quarantined_names"] == ["2026-11-20/transactions-0003.csv.gz"]
    assert sorted(metrics["unknown_files"]) == ["2026-11-20/Balances.CSV", "2026-11-20/notes.txt"]
    rows = quarantine(paths)
    assert [r[:2] for r in rows] == [(D, "ingest")] * 4
    assert [r[2:5] for r in rows] == [
        ("2026-11-20/Balances.CSV", None, None),
        ("2026-11-20/notes.txt", None, None),
        ("2026-11-20/transactions-0002.csv", 2, "amount"),
        ("2026-11-20/transactions-0003.csv.gz", None, None),
    ]
    assert rows[0][5] == rows[1][5] == "not a landing file kind"
    assert rows[3][5].startswith("cannot read the header") or rows[3][5].startswith("unreadable file")
    ids = [r[0] for r in bronze(paths, "transactions")]
    assert ids == ["T0000001", "T0000002", "T0000003", "T0000004", "T0000005", "T0000102"]


def test_missing_required_kind_is_recorded_not_fatal(paths):
    folder = landing_day(paths)
    (folder / "balances.csv").unlink()
    (folder / "fx_rates.csv").unlink()
    metrics = ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))
    assert metrics["missing_kinds"] == ["balances", "fx_rates"]
    assert metrics["kinds"]["balances"]["files"] == 0
    assert bronze(paths, "balances") == []  # an empty partition with the schema
    assert bronze_types(paths, "balances")["balance"] == "DECIMAL(18,2)"


def test_rerun_replaces_its_own_partitions_and_nothing_else(paths):
    other = landing_day(paths, "2026-11-19")
    ingest_landing(paths, "2026-11-19", other, business_date=None)
    folder = landing_day(paths)
    ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))
    before_other = sorted(p.stat().st_mtime_ns for p in paths.lake.glob("*/*/load_date=2026-11-19/*.parquet"))
    assert len(bronze(paths, "transactions")) == 5

    (folder / "transactions.csv").write_text(
        "transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
        "counterparty_id\nT9,A000001,2026-11-20T10:00:00Z,1.00,GBP,,,,fee,GB,\n", encoding="utf-8")
    (folder / "life_events.csv").unlink()
    ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))

    assert [r[0] for r in bronze(paths, "transactions")] == ["T9"]
    assert bronze(paths, "life_events") == []
    assert len(bronze(paths, "transactions", "2026-11-19")) == 5
    assert sorted(p.stat().st_mtime_ns for p in paths.lake.glob("*/*/load_date=2026-11-19/*.parquet")) == \
        before_other
    assert list((paths.lake / "_staging").iterdir()) == []
    assert sorted(p.name for p in (paths.lake / "bronze" / "transactions").iterdir()) == [
        "load_date=2026-11-19", "load_date=2026-11-20"]


def test_history_load_does_not_judge_dates_against_d(paths):
    folder = paths.landing_history
    folder.mkdir(parents=True)
    (folder / "transactions.csv").write_text(
        "transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
        "counterparty_id\nT1,A1,2025-01-01T10:00:00Z,1.00,GBP,,,,fee,GB,\nT2,A1,2026-06-01T10:00:00Z,2.00,GBP,,,,"
        "fee,GB,\n", encoding="utf-8")
    metrics = ingest_landing(paths, "history", folder, business_date=None)
    assert metrics["kinds"]["transactions"]["rows_accepted"] == 2
    assert (paths.runs / "history" / "ingest.json").exists()


def _synthetic_openbanking():
    """The open-banking engineer's envelope builder (tests/fixtures/openbanking/synthetic.py)."""
    if not OB_SYNTHETIC.exists():
        return None
    spec = importlib.util.spec_from_file_location("ob_synthetic", OB_SYNTHETIC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_openbanking_files_go_to_bronze_ob_tables_and_their_quarantine_is_merged(paths):
    synthetic = _synthetic_openbanking()
    if synthetic is None or importlib.util.find_spec("pipelines.ingest.openbanking") is None:
        pytest.skip("the open-banking parser (pipelines/ingest/openbanking.py) or its fixtures are not there yet")
    folder = landing_day(paths)
    ob = folder / "openbanking"
    ob.mkdir()
    envelope = synthetic.make_envelope("C000001", "alphabank", datetime(2026, 11, 20, 1, tzinfo=timezone.utc), 5)
    (ob / "C000001-alphabank.json").write_text(json.dumps(envelope), encoding="utf-8")
    (ob / "broken.json").write_text("{not json", encoding="utf-8")
    (ob / "readme.md").write_text("not json", encoding="utf-8")
    metrics = ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))

    assert metrics["openbanking"]["files"] == 2
    assert metrics["openbanking"]["tables"]["ob_transactions"] == len(bronze(paths, "ob_transactions")) == 5
    assert metrics["openbanking"]["tables"]["ob_accounts"] == len(bronze(paths, "ob_accounts")) == 1
    files = [r[2] for r in quarantine(paths)]
    assert "2026-11-20/openbanking/broken.json" in files
    assert "2026-11-20/openbanking/readme.md" in files
    assert metrics["unknown_files"] == ["2026-11-20/openbanking/readme.md"]
