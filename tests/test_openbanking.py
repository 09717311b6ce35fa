"""Open-banking ingest (pipelines/ingest/openbanking.py): the 32 official OBIE examples, envelopes, bad input."""
from __future__ import annotations

import copy
import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.ingest.openbanking import (
    COLUMNS, QUARANTINE_COLUMNS, RESOURCES, ObContext, decode_json, json_depth, parse_envelope_file,
    parse_openbanking_files, parse_resource,
)
from tests.conftest import REFERENCE
from tests.fixtures.openbanking.synthetic import make_envelope

EXAMPLES = REFERENCE / "obie" / "examples"
REPORT = {entry["file"]: entry for entry in json.loads((EXAMPLES / "_extraction_report.json").read_text())}
RESOURCE_OF = {"accounts": "accounts", "balances": "balances", "transactions": "transactions",
               "standing-orders": "standing_orders", "direct-debits": "direct_debits",
               "scheduled-payments": "scheduled_payments"}
FETCHED = datetime(2026, 11, 20, 1, 12, tzinfo=timezone.utc)
CONTEXT = ObContext(customer_id="C000042", provider="alphabank", consent_id="consent-1", fetched_at=FETCHED,
                    source_file="2026-11-20/openbanking/example.json")
# Schema errors of the report that this module does not check (it does not read these fields), see the docstring.
NOT_VALIDATED = re.compile(r"CreditorAgent$|Additional properties are not allowed")


def example_resource(name: str) -> str:
    return RESOURCE_OF[name.split("_")[2]]


def parse_example(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and quarantine of one valid example body (duplicate-key notes included)."""
    body, reason, _, duplicates = decode_json((EXAMPLES / name).read_bytes())
    assert reason is None, reason
    parsed = parse_resource(example_resource(name), body, CONTEXT)
    return parsed.rows, parsed.quarantine + [{"column_name": path, "reason": why} for path, why, _ in duplicates]


def reasons(quarantine: list[dict[str, Any]] | pd.DataFrame) -> list[str]:
    if isinstance(quarantine, pd.DataFrame):
        return list(quarantine["reason"])
    return [q["reason"] for q in quarantine]


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def envelope(n: int = 5, version: str = "3.1", **kwargs: Any) -> dict[str, Any]:
    return make_envelope("C000042", "alphabank", FETCHED, n, version=version, **kwargs)


def batch_of(tmp_path: Path, *envelopes: Any, **kwargs: Any):
    landing = tmp_path / "landing"
    files = [write_json(landing / "2026-11-20" / "openbanking" / f"f{i:03d}.json", env)
             for i, env in enumerate(envelopes)]
    return parse_openbanking_files(files, landing, **kwargs)


def transactions_of(env_or_body: dict[str, Any]) -> list[dict[str, Any]]:
    """The transaction records of an envelope or of a transactions body."""
    return env_or_body.get("transactions", env_or_body)["Data"]["Transaction"]


# --- the official examples --------------------------------------------------------------------------------------

def test_the_reference_examples_are_all_here() -> None:
    files = sorted(p.name for p in EXAMPLES.glob("obie_*"))
    assert len(files) == 32 and set(files) == set(REPORT)
    # README and brief say ten; the folder and its report hold nine bodies that do not parse (all v4.0)
    broken = [f for f in files if "INVALID_JSON" in f]
    assert len(broken) == 9 and all("_v4.0_" in f for f in broken)
    assert broken == sorted(f for f, e in REPORT.items() if e["json_parse"].startswith("NOT valid JSON"))


@pytest.mark.parametrize("name", sorted(REPORT))
def test_every_example_is_parsed_or_quarantined_with_the_fault_named(name: str, tmp_path: Path) -> None:
    entry = REPORT[name]
    result = parse_envelope_file(EXAMPLES / name, name, max_bytes=2**20, max_depth=64)
    if entry["json_parse"] == "valid JSON":
        rows, quarantine = parse_example(name)
        assert rows, "a valid body gives rows"
        assert all(row["api_version"] == ("4.0" if "_v4.0_" in name else "3.1") for row in rows)
        # every schema error the report lists is either in the quarantine (at its JSON path) or a field not read
        errors = entry["validation_vs_spec_openapi"]
        listed = errors.split(": ", 1)[1].split("; ") if not errors.startswith("0 ") else []
        for error in listed:
            path, message = error.split(": ", 1)
            json_path = re.sub(r"/(\d+)", r"[\1]", path).replace("/", ".")
            found = [q for q in quarantine if q["column_name"].split(".", 1)[-1] == json_path
                     or q["column_name"].endswith("." + json_path) or q["column_name"] == json_path]
            assert found or NOT_VALIDATED.search(path) or NOT_VALIDATED.search(message), (json_path, quarantine)
        # a bare body is no envelope: the file as a whole is quarantined for that, never a crash
        assert result.file_rejected and "envelope has no customer_id; file quarantined" in reasons(result.quarantine)
    else:
        message = entry["json_parse"].removeprefix("NOT valid JSON: ")
        assert result.file_rejected and not any(result.tables.values())
        assert len(result.quarantine) == 1
        only = result.quarantine[0]
        assert only["reason"] == f"not valid JSON: {message}; file quarantined"
        assert only["file"] == name and only["line"] is None and only["column_name"] is None
        assert only["raw_value"] is None  # no byte of a file that does not parse is copied (issue 12)


def test_v3_transactions_are_signed_dated_and_identified() -> None:
    rows, quarantine = parse_example("obie_v3.1.11_transactions_ex2.json")
    assert quarantine == []
    credit, debit = rows
    assert credit["transaction_id"] == "ob:alphabank:22289:123" and credit["account_id"] == "ob:alphabank:22289"
    assert credit["amount"] == Decimal("10.00") and credit["status"] == "booked"
    assert credit["booked_at"] == datetime(2017, 4, 5, 10, 43, 7, tzinfo=timezone.utc)
    assert credit["value_at"] == datetime(2017, 4, 5, 10, 45, 22, tzinfo=timezone.utc)
    assert credit["description"] == "Cash from Aubrey" and credit["reference"] == "Ref 123"
    assert credit["bank_transaction_code"] == "ReceivedCreditTransfer/DomesticCreditTransfer"
    assert credit["proprietary_code"] == "Transfer" and credit["balance_after"] == Decimal("230.00")
    assert debit["amount"] == Decimal("-100.00") and debit["balance_after"] == Decimal("-57.36")
    assert debit["booking_date"] == date(2017, 5, 2) and debit["proprietary_code"] == "DirectDebit"
    assert debit["customer_id"] == "C000042" and debit["fetched_at"] == FETCHED


def test_v4_transactions_once_their_raw_tab_is_escaped_map_book_to_booked() -> None:
    """The v4.0 transaction examples break only on a raw tab inside a string; read leniently they must map."""
    texts = {n: (EXAMPLES / f"obie_v4.0_transactions_{n}.INVALID_JSON.txt").read_text() for n in ("ex1", "ex2")}
    parsed = {n: parse_resource("transactions", json.loads(text, strict=False, parse_float=Decimal), CONTEXT)
              for n, text in texts.items()}
    assert all(p.quarantine == [] for p in parsed.values())
    (only,) = parsed["ex1"].rows
    credit, debit = parsed["ex2"].rows
    for row in (only, credit):
        assert row["api_version"] == "4.0" and row["status"] == "booked" and row["amount"] == Decimal("10.00")
        assert row["transaction_id"] == "ob:alphabank:22289:123" and row["balance_after"] == Decimal("230.00")
        assert row["merchant_name"] == "Merchant's Name" and row["mcc"] == "5874"
    assert debit["status"] == "booked" and debit["amount"] == Decimal("-100.00")
    assert debit["transaction_id"] == "ob:alphabank:31820:567" and debit["booking_date"] == date(2017, 5, 2)


def test_balances_examples_sign_types_and_credit_lines() -> None:
    rows, quarantine = parse_example("obie_v3.1.11_balances_ex1.json")
    assert quarantine == []
    assert [(r["balance_type"], r["amount"], r["credit_line_amount"]) for r in rows] == [
        ("InterimAvailable", Decimal("1230.00"), Decimal("1000.00")), ("InterimBooked", Decimal("-57.36"), None)]
    expected = {"ex2": (Decimal("300.00"), Decimal("0.00")), "ex3": (Decimal("800.00"), Decimal("500.00")),
                "ex4": (Decimal("-100.00"), Decimal("0.00")), "ex5": (Decimal("329.06"), None)}
    for example, (amount, credit_line) in expected.items():
        rows, quarantine = parse_example(f"obie_v3.1.11_balances_{example}.json")
        assert [(r["amount"], r["credit_line_amount"]) for r in rows] == [(amount, credit_line)]
        assert reasons(quarantine) == ["Data.Balance is an object, expected an array; read as one element"]
        assert quarantine[0]["column_name"] == "balances.Data.Balance"
    rows, quarantine = parse_example("obie_v4.0_balances_ex5.json")
    assert rows[0]["balance_type"] == "ClosingAvailable" and rows[0]["api_version"] == "4.0"
    assert rows[0]["balance_at"] == datetime(2023, 4, 5, 10, 43, 7, tzinfo=timezone.utc)


def test_accounts_examples_keep_the_account_and_quarantine_the_non_iso_opening_date() -> None:
    for name, subtype in (("obie_v3.1.11_accounts_ex1.json", "CurrentAccount"),
                          ("obie_v4.0_accounts_ex1.json", "CACC")):
        rows, quarantine = parse_example(name)
        assert [r["account_id"] for r in rows] == ["ob:alphabank:22289", "ob:alphabank:31820"]
        assert all(r["product"] == "current" and r["account_subtype"] == subtype for r in rows)
        assert rows[0]["opening_date"] is None and rows[0]["nickname"] == "Bills" and rows[0]["status"] == "enabled"
        assert rows[0]["account_type"] == "Personal" and rows[0]["currency"] == "GBP"
        (note,) = quarantine
        assert note["column_name"] == "accounts.Data.Account[0].OpeningDate" and note["raw_value"] == "01-05-2002"
        assert note["reason"] == ("OpeningDate '01-05-2002' is not an ISO 8601 date or date-time (DD-MM-YYYY and "
                                  "MM-DD-YYYY cannot be told apart); field set to null, record kept")


@pytest.mark.parametrize("opening,expected", [("2002-05-01", date(2002, 5, 1)),
                                              ("2002-05-01T00:00:00+01:00", date(2002, 5, 1)),
                                              ("2002-13-01", None), ("1 May 2002", None)])
def test_opening_date_is_read_from_iso_only(opening: str, expected: date | None) -> None:
    body = {"Data": {"Account": [{"AccountId": "A1", "AccountType": "Personal", "AccountSubType": "Savings",
                                  "OpeningDate": opening}]}}
    parsed = parse_resource("accounts", body, CONTEXT)
    assert parsed.rows[0]["opening_date"] == expected and parsed.rows[0]["product"] == "savings"
    assert len(parsed.quarantine) == (expected is None)


def test_mandate_examples_statuses_frequencies_and_amounts() -> None:
    rows, quarantine = parse_example("obie_v4.0_direct-debits_ex2.json")
    assert [(r["mandate_id"], r["status"], r["frequency"], r["frequency_count_per_period"],
             r["previous_payment_amount"]) for r in rows] == [
        ("Caravanners", "active", "MNTH", 1, Decimal("-0.57")), ("Golfers", "active", "MNTH", 1, Decimal("-22.30"))]
    assert all("'Active' is a v3.1 code in a v4.0 body" in r for r in reasons(quarantine))
    rows, quarantine = parse_example("obie_v3.1.11_direct-debits_ex1.json")
    assert quarantine == [] and rows[0]["status"] == "active" and rows[0]["name"] == "Towbar Club 3 - We Love Towbars"

    rows, quarantine = parse_example("obie_v3.1.11_standing-orders_ex2.json")
    assert [r["frequency"] for r in rows] == ["EvryWorkgDay", "WkinMnthDay(2)"]
    assert rows[1]["next_payment_amount"] == Decimal("-23.00") and rows[1]["creditor_name"] == "Mr Tee"
    assert rows[0]["final_payment_at"] == datetime(2027, 8, 12, tzinfo=timezone.utc)
    assert [q["column_name"] for q in quarantine] == ["standing_orders.Data.StandingOrder[1].Frequency"]
    assert quarantine[0]["reason"].endswith("kept as written")

    rows, quarantine = parse_example("obie_v4.0_standing-orders_ex1.json")
    (order,) = rows
    assert order["frequency"] == "MNTH" and order["next_payment_amount"] == Decimal("-0.56")
    assert order["first_payment_at"] == datetime(2024, 4, 25, 12, 46, 49, 425000, tzinfo=timezone.utc)
    assert order["reference"] == "Towbar Club 2 - We Love Towbars" and order["status"] == "active"
    assert any(q["column_name"] == "Data.StandingOrder[0].MandateRelatedInformation"
               and "duplicate key 'MandateRelatedInformation'" in q["reason"] for q in quarantine)

    rows, _ = parse_example("obie_v3.1.11_scheduled-payments_ex2.json")
    assert [(r["scheduled_payment_id"], r["amount"], r["payment_type"]) for r in rows] == [
        ("SP03", Decimal("-10.00"), "execution"), ("SP77", Decimal("-12.00"), "execution")]
    assert rows[0]["execution_at"] == datetime(2017, 5, 5, tzinfo=timezone.utc)


# --- envelopes and batches --------------------------------------------------------------------------------------

def test_an_envelope_fills_all_six_tables_with_documented_types(tmp_path: Path) -> None:
    batch = batch_of(tmp_path, envelope(7))
    counts = {table: len(frame) for table, frame in batch.tables.items()}
    assert counts == {"ob_accounts": 1, "ob_balances": 1, "ob_transactions": 7, "ob_standing_orders": 1,
                      "ob_direct_debits": 1, "ob_scheduled_payments": 1}
    assert batch.quarantine.empty and list(batch.quarantine.columns) == list(QUARANTINE_COLUMNS)
    for table, frame in batch.tables.items():
        assert list(frame.columns) == [name for name, _ in COLUMNS[table]]
        assert (frame["source_file"] == "2026-11-20/openbanking/f000.json").all()
        assert (frame["api_version"] == "3.1").all() and (frame["consent_id"] == "consent-C000042-alphabank").all()
        assert str(frame["fetched_at"].dtype) == "datetime64[us, UTC]"
    txn = batch.tables["ob_transactions"]
    assert str(txn["amount"].dtype) == "decimal128(18, 2)[pyarrow]"
    assert str(txn["booking_date"].dtype).startswith("date32")
    assert str(txn["booked_at"].dtype) == "datetime64[us, UTC]"
    account = batch.tables["ob_accounts"].iloc[0]
    assert account["opening_date"] == date(2015, 3, 1) and account["product"] == "current"
    balance = batch.tables["ob_balances"].iloc[0]
    assert balance["balance_type"] == "ClosingBooked" and balance["credit_line_amount"] == Decimal("500.00")
    order = batch.tables["ob_standing_orders"].iloc[0]
    assert order["next_payment_amount"] == Decimal("-750.00") and order["frequency"] == "IntrvlMnthDay:01:05"
    assert batch.stats["files"] == 1 and batch.stats["records_read"] == 12 and batch.stats["records_rejected"] == 0


def test_no_files_gives_six_empty_typed_tables() -> None:
    batch = parse_openbanking_files([], Path("."))
    assert set(batch.tables) == {f"ob_{r}" for r in RESOURCES}
    for table, frame in batch.tables.items():
        assert frame.empty and list(frame.columns) == [name for name, _ in COLUMNS[table]]
    assert str(batch.tables["ob_balances"]["amount"].dtype) == "decimal128(18, 2)[pyarrow]"
    assert str(batch.tables["ob_accounts"]["opening_date"].dtype).startswith("date32")
    assert batch.quarantine.empty and list(batch.quarantine.columns) == list(QUARANTINE_COLUMNS)


def test_frames_keep_their_types_in_duckdb(tmp_path: Path) -> None:
    import duckdb

    batch = batch_of(tmp_path, envelope(3))
    con = duckdb.connect()
    con.register("txn", batch.tables["ob_transactions"])
    con.register("acc", batch.tables["ob_accounts"])
    types = dict((row[0], row[1]) for row in con.execute("describe txn").fetchall())
    assert types["amount"] == "DECIMAL(18,2)" and types["booking_date"] == "DATE"
    assert types["booked_at"] == "TIMESTAMP WITH TIME ZONE" and types["mcc"] == "VARCHAR"
    assert dict((r[0], r[1]) for r in con.execute("describe acc").fetchall())["opening_date"] == "DATE"


def test_pages_are_all_read_and_a_broken_page_loses_only_itself(tmp_path: Path) -> None:
    env = envelope(6)
    page = env["transactions"]
    first, second = copy.deepcopy(page), copy.deepcopy(page)
    first["Data"]["Transaction"] = transactions_of(page)[:3]
    second["Data"]["Transaction"] = transactions_of(page)[3:]
    del second["Data"]["Transaction"][1]["Amount"]
    env["transactions"] = [first, "not a page", {"Links": {}}, second]
    batch = batch_of(tmp_path, env)
    assert len(batch.tables["ob_transactions"]) == 5
    quarantine = batch.quarantine.set_index("column_name")["reason"].to_dict()
    assert quarantine == {
        "transactions[1]": "transactions[1] is a string, expected an OBIE response object; page quarantined",
        "transactions[2].Data": "transactions[2].Data is missing; page quarantined",
        "transactions[3].Data.Transaction[1].Amount": "Amount is missing (required); record quarantined",
    }
    assert batch.stats["records_rejected"] == 1 and batch.stats["pages_rejected"] == 2


def test_missing_and_null_resources_are_no_fault(tmp_path: Path) -> None:
    env = envelope(2)
    for resource in ("balances", "standing_orders", "direct_debits"):
        del env[resource]
    env["scheduled_payments"] = None
    batch = batch_of(tmp_path, env)
    assert batch.quarantine.empty
    assert len(batch.tables["ob_transactions"]) == 2 and len(batch.tables["ob_accounts"]) == 1
    assert all(batch.tables[t].empty for t in ("ob_balances", "ob_standing_orders", "ob_direct_debits",
                                               "ob_scheduled_payments"))


def test_overlapping_fetches_keep_each_transaction_once_from_the_latest_fetch(tmp_path: Path) -> None:
    morning = envelope(60, first_txn=0)
    evening = make_envelope("C000042", "alphabank", datetime(2026, 11, 20, 13, 0, tzinfo=timezone.utc), 60,
                            first_txn=30)
    morning["balances"]["Data"]["Balance"][0]["DateTime"] = evening["balances"]["Data"]["Balance"][0]["DateTime"]
    pending = next(t for t in transactions_of(morning) if t["TransactionId"] == "T0000034")
    assert pending["Status"] == "Pending"
    booked = next(t for t in transactions_of(evening) if t["TransactionId"] == "T0000034")
    booked["Status"] = "Booked"
    batch = batch_of(tmp_path, evening, morning)  # file order must not matter: fetched_at decides
    txn = batch.tables["ob_transactions"]
    assert len(txn) == 90 and txn["transaction_id"].is_unique
    row = txn.set_index("transaction_id").loc["ob:alphabank:C000042-ACC1:T0000034"]
    assert row["status"] == "booked" and row["fetched_at"] == pd.Timestamp("2026-11-20T13:00:00Z")
    assert batch.stats["ob_transactions_duplicates"] == 30
    assert len(batch.tables["ob_balances"]) == 1 and batch.tables["ob_balances"].iloc[0]["fetched_at"].hour == 13
    assert len(batch.tables["ob_accounts"]) == 1 and len(batch.tables["ob_standing_orders"]) == 1


def test_the_same_account_of_two_customers_is_not_collapsed(tmp_path: Path) -> None:
    first = envelope(3)
    second = make_envelope("C000043", "alphabank", FETCHED, 3)
    second["transactions"] = copy.deepcopy(first["transactions"])
    second["accounts"] = copy.deepcopy(first["accounts"])  # an envelope speaks only for the accounts it lists
    batch = batch_of(tmp_path, first, second)
    assert len(batch.tables["ob_transactions"]) == 6


def test_v3_and_v4_bodies_mix_in_one_batch_and_in_one_envelope(tmp_path: Path) -> None:
    mixed = make_envelope("C3", "alphabank", FETCHED, 4, version="4.0")
    mixed["transactions"] = envelope(4, version="3.1")["transactions"]
    for record in transactions_of(mixed):  # on the envelope's own account: it speaks only for the accounts it lists
        record["AccountId"] = "C3-ACC1"
    batch = batch_of(tmp_path, envelope(4, version="3.1"), make_envelope("C2", "betabank", FETCHED, 4, version="4.0"),
                     mixed)
    txn = batch.tables["ob_transactions"]
    assert set(txn["status"]) == {"booked", "pending"}
    versions = txn.groupby("customer_id")["api_version"].unique().to_dict()
    assert versions["C2"].tolist() == ["4.0"] and versions["C000042"].tolist() == ["3.1"]
    assert versions["C3"].tolist() == ["3.1"]  # v3.1 transactions inside an otherwise v4.0 envelope
    assert batch.tables["ob_accounts"].set_index("customer_id").loc["C3", "api_version"] == "4.0"
    accounts = batch.tables["ob_accounts"].set_index("customer_id")
    assert accounts.loc["C2", "account_subtype"] == "CACC" and accounts.loc["C2", "product"] == "current"
    balances = batch.tables["ob_balances"]
    assert set(balances["balance_type"]) == {"ClosingBooked"} and set(balances["api_version"]) == {"3.1", "4.0"}
    mandates = batch.tables["ob_direct_debits"].set_index("customer_id")
    assert mandates.loc["C2", "mandate_id"] == "MANDATE1" and mandates.loc["C2", "status"] == "active"
    assert batch.quarantine.empty


def test_version_comes_from_links_when_the_fields_do_not_tell() -> None:
    body = {"Data": {"ScheduledPayment": [{"AccountId": "1", "ScheduledPaymentDateTime": "2026-12-01T00:00:00Z",
                                           "ScheduledType": "Arrival",
                                           "InstructedAmount": {"Amount": "5", "Currency": "GBP"}}]},
            "Links": {"Self": "https://bank.example/open-banking/v4.0/aisp/scheduled-payments"}}
    (row,) = parse_resource("scheduled_payments", body, CONTEXT).rows
    assert row["api_version"] == "4.0" and row["payment_type"] == "arrival" and row["amount"] == Decimal("-5.00")


def test_transactions_without_an_id_get_a_stable_hash_and_twins_stay_two() -> None:
    body = envelope(3)["transactions"]
    records = transactions_of(body)
    for record in records:
        del record["TransactionId"]
    records.append(copy.deepcopy(records[0]))  # the same coffee bought twice
    ids = [r["transaction_id"] for r in parse_resource("transactions", body, CONTEXT).rows]
    again = [r["transaction_id"] for r in parse_resource("transactions", copy.deepcopy(body), CONTEXT).rows]
    assert ids == again and len(set(ids)) == 4
    assert all(re.fullmatch(r"ob:alphabank:C000042-ACC1:#[0-9a-f]{24}", i) for i in ids)


def test_ids_escape_colons_and_booking_date_is_the_local_date() -> None:
    body = envelope(1)["transactions"]
    record = transactions_of(body)[0]
    record.update({"AccountId": "acc:1", "TransactionId": "t#1%", "BookingDateTime": "2026-11-19T23:30:00-05:00"})
    (row,) = parse_resource("transactions", body, CONTEXT).rows
    assert row["transaction_id"] == "ob:alphabank:acc%3A1:t%231%25" and row["account_id"] == "ob:alphabank:acc%3A1"
    assert row["booking_date"] == date(2026, 11, 19)
    assert row["booked_at"] == datetime(2026, 11, 20, 4, 30, tzinfo=timezone.utc)


def test_workers_give_the_same_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.ingest import openbanking

    monkeypatch.setattr(openbanking, "MIN_FILES_PER_WORKER", 4)
    envelopes = [make_envelope(f"C{i:04d}", "alphabank", FETCHED, 5, version="4.0" if i % 2 else "3.1", seed=i)
                 for i in range(20)]
    envelopes[3] = "not an envelope"
    single = batch_of(tmp_path / "a", *envelopes)
    pooled = batch_of(tmp_path / "b", *envelopes, workers=2)
    for table in single.tables:
        pd.testing.assert_frame_equal(single.tables[table], pooled.tables[table])
    pd.testing.assert_frame_equal(single.quarantine, pooled.quarantine)
    assert single.stats == pooled.stats and single.stats["files_rejected"] == 1


# --- bad input --------------------------------------------------------------------------------------------------

def test_broken_json_is_quarantined_whole_with_message_and_position(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    good = write_json(landing / "d" / "openbanking" / "good.json", envelope(2))
    broken = landing / "d" / "openbanking" / "broken.json"
    broken.write_text('{"customer_id": "C1", "provider": "x",\n  "accounts": {"Data": {,}}}')
    batch = parse_openbanking_files([broken, good], landing)
    (row,) = batch.quarantine.to_dict("records")
    assert row["file"] == "d/openbanking/broken.json" and pd.isna(row["line"]) and pd.isna(row["column_name"])
    assert row["reason"] == ("not valid JSON: Expecting property name enclosed in double quotes: line 2 column 25 "
                             "(char 63); file quarantined")
    assert len(batch.tables["ob_transactions"]) == 2 and batch.stats["files_rejected"] == 1


def test_json_nested_ten_thousand_deep_is_quarantined_before_parsing(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'{"customer_id": "C1", "transactions": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    result = parse_envelope_file(deep, "deep.json", max_bytes=2**20, max_depth=64)
    assert reasons(result.quarantine) == [
        "JSON nesting depth 10001 exceeds the limit of 64 (max_depth); not parsed; file quarantined"]
    # with the pre-check out of the way the parser's own RecursionError is caught too
    value, reason, _, _ = decode_json(b"[" * 200_000 + b"]" * 200_000, max_depth=10**6)
    assert value is None and "RecursionError" in reason


def test_depth_counts_only_brackets_outside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert json_depth(b"42") == 0


def test_a_file_over_max_bytes_is_quarantined_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as handle:
        handle.truncate(2**33)  # 8 GiB, sparse: reading it would take minutes
    result = parse_envelope_file(huge, "huge.json", max_bytes=50 * 2**20, max_depth=64)
    assert reasons(result.quarantine) == [
        f"file is {2**33} bytes, over the limit of {50 * 2**20} bytes (max_bytes); not read; file quarantined"]


@pytest.mark.parametrize("key", ["customer_id", "provider", "fetched_at"])
def test_an_envelope_without_who_or_when_is_quarantined_whole(key: str, tmp_path: Path) -> None:
    env = envelope(3)
    del env[key]
    batch = batch_of(tmp_path, env)
    assert all(frame.empty for frame in batch.tables.values())
    (row,) = batch.quarantine.to_dict("records")
    assert row["file"] == "2026-11-20/openbanking/f000.json" and pd.isna(row["column_name"]) and pd.isna(row["line"])
    assert row["reason"] == f"envelope has no {key}; file quarantined"
    assert batch.stats["files_rejected"] == 1


@pytest.mark.parametrize("fetched_at", ["2026-11-20T01:12:00", "yesterday", 20261120])
def test_an_envelope_with_an_unusable_fetched_at_is_quarantined_whole(fetched_at: Any, tmp_path: Path) -> None:
    env = envelope(1)
    env["fetched_at"] = fetched_at
    batch = batch_of(tmp_path, env)
    assert all(frame.empty for frame in batch.tables.values())
    (reason,) = reasons(batch.quarantine)
    assert reason.startswith("envelope fetched_at") and reason.endswith("file quarantined")


@pytest.mark.parametrize("content,expected", [
    (b"[1, 2]", "envelope is an array, expected an object; file quarantined"),
    (b'{"a": NaN}', "not valid JSON: NaN is not valid JSON; file quarantined"),
    (b'{"a": "caf\xe9", oops}', "not valid UTF-8"),
    ('{"customer_id": "C1"}'.encode("utf-16"), "not valid UTF-8"),
    (b"", "not valid JSON: Expecting value: line 1 column 1 (char 0); file quarantined"),
])
def test_files_that_are_no_envelope_are_quarantined_whole(content: bytes, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    (row,) = parse_envelope_file(path, "x.json", max_bytes=2**20, max_depth=64).quarantine
    assert row["reason"].startswith(expected) and row["reason"].endswith("file quarantined")


@pytest.mark.parametrize("value", ["oops", 42, True])
def test_a_resource_that_is_not_an_object_or_a_list_loses_only_itself(value: Any, tmp_path: Path) -> None:
    env = envelope(3)
    env["balances"] = value
    batch = batch_of(tmp_path, env)
    (row,) = batch.quarantine.to_dict("records")
    assert row["column_name"] == "balances" and row["reason"].endswith("expected an OBIE response object or a list "
                                                                         "of page objects; resource quarantined")
    assert batch.tables["ob_balances"].empty and len(batch.tables["ob_transactions"]) == 3


def test_balance_as_an_object_is_read_as_one_element_and_noted(tmp_path: Path) -> None:
    env = envelope(1)
    env["balances"]["Data"]["Balance"] = env["balances"]["Data"]["Balance"][0]
    batch = batch_of(tmp_path, env)
    assert len(batch.tables["ob_balances"]) == 1
    (row,) = batch.quarantine.to_dict("records")
    assert row["column_name"] == "balances.Data.Balance"
    assert row["reason"] == "Data.Balance is an object, expected an array; read as one element"


@pytest.mark.parametrize("field", ["Amount", "CreditDebitIndicator", "Status", "BookingDateTime", "AccountId"])
def test_a_missing_required_field_quarantines_that_record_only(field: str, tmp_path: Path) -> None:
    env = envelope(6)
    del transactions_of(env)[3][field]
    batch = batch_of(tmp_path, env)
    assert len(batch.tables["ob_transactions"]) == 5
    assert "T0000003" not in set(batch.tables["ob_transactions"]["provider_transaction_id"])
    (row,) = batch.quarantine.to_dict("records")
    assert row["column_name"] == f"transactions.Data.Transaction[3].{field}"
    assert row["reason"] == f"{field} is missing (required); record quarantined"
    assert '"TransactionId":"T0000003"' in row["raw_value"]  # the record, to find it again


def test_each_fault_of_a_record_is_its_own_quarantine_row(tmp_path: Path) -> None:
    env = envelope(2)
    record = transactions_of(env)[0]
    record["Status"] = "Settled"
    record["CreditDebitIndicator"] = "DR"
    batch = batch_of(tmp_path, env)
    assert len(batch.tables["ob_transactions"]) == 1
    assert sorted(batch.quarantine["column_name"]) == ["transactions.Data.Transaction[0].CreditDebitIndicator",
                                                       "transactions.Data.Transaction[0].Status"]
    assert batch.stats["records_rejected"] == 1


def test_unknown_codes_reject_a_transaction_but_only_null_an_optional_status(tmp_path: Path) -> None:
    env = envelope(2)
    transactions_of(env)[1]["Status"] = "Settled"
    env["direct_debits"]["Data"]["DirectDebit"][0]["DirectDebitStatusCode"] = "Paused"
    batch = batch_of(tmp_path, env)
    assert len(batch.tables["ob_transactions"]) == 1
    debit = batch.tables["ob_direct_debits"]
    assert len(debit) == 1 and pd.isna(debit.iloc[0]["status"])
    reason_of = batch.quarantine.set_index("column_name")["reason"].to_dict()
    assert reason_of["transactions.Data.Transaction[1].Status"] == (
        "Status 'Settled' is not a known value (v3.1 expects one of: Booked, Pending, Rejected); record quarantined")
    assert reason_of["direct_debits.Data.DirectDebit[0].DirectDebitStatusCode"].endswith(
        "is not a known value (v3.1 expects one of: Active, Inactive); field set to null, record kept")


@pytest.mark.parametrize("booking", ["2017-04-05T10:43:07", "2017-04-05", "05/04/2017 10:43"])
def test_a_booking_time_without_offset_quarantines_the_record(booking: str) -> None:
    body = envelope(2)["transactions"]
    transactions_of(body)[0]["BookingDateTime"] = booking
    parsed = parse_resource("transactions", body, CONTEXT)
    assert len(parsed.rows) == 1
    (row,) = parsed.quarantine
    assert row["column_name"] == "transactions.Data.Transaction[0].BookingDateTime" and row["raw_value"] == booking
    assert ("has no time zone offset; the contract requires one" in row["reason"]
            or "is not an ISO 8601 date-time" in row["reason"])


def test_a_bad_value_date_is_nulled_and_the_transaction_kept() -> None:
    body = envelope(1)["transactions"]
    transactions_of(body)[0]["ValueDateTime"] = "2017-04-05T10:43:07"
    parsed = parse_resource("transactions", body, CONTEXT)
    assert parsed.rows[0]["value_at"] is None
    assert parsed.quarantine[0]["reason"].endswith("has no time zone offset; the contract requires one; "
                                                   "field set to null, record kept")


@pytest.mark.parametrize("amount,currency,expected", [
    ("10.005", "GBP", None), ("10.00001", "GBP", None), ("10.000", "GBP", Decimal("-10.00")),
    ("10", "GBP", Decimal("-10.00")), ("100.5", "JPY", None), ("100", "JPY", Decimal("-100.00")),
    ("1.5", "KWD", Decimal("-1.50")), ("1.234", "KWD", None), ("-5.00", "GBP", None), ("1,000.00", "GBP", None),
    ("12345678901234", "GBP", None), ("", "GBP", None), ("10.00", "gbp", None), ("10.00", None, None),
])
def test_amount_rules(amount: str, currency: str | None, expected: Decimal | None) -> None:
    body = envelope(2)["transactions"]
    record = transactions_of(body)[0]
    record["CreditDebitIndicator"] = "Debit"
    record["Amount"] = {"Amount": amount, "Currency": currency}
    parsed = parse_resource("transactions", body, CONTEXT)
    if expected is None:
        assert len(parsed.rows) == 1 and parsed.quarantine
        assert all(q["reason"].endswith("record quarantined") for q in parsed.quarantine)
        assert parsed.quarantine[0]["column_name"].startswith("transactions.Data.Transaction[0].Amount.")
    else:
        assert parsed.quarantine == [] and parsed.rows[0]["amount"] == expected


def test_too_many_decimals_names_the_currency_and_is_not_rounded() -> None:
    body = envelope(1)["transactions"]
    transactions_of(body)[0]["Amount"] = {"Amount": "10.005", "Currency": "GBP"}
    (row,) = parse_resource("transactions", body, CONTEXT).quarantine
    assert row["reason"] == ("Amount.Amount '10.005' has 3 decimals: more than GBP allows (2) or the lake stores "
                             "(DECIMAL(18,2)); not rounded; record quarantined")


def test_an_amount_sent_as_a_json_number_is_read_exactly_and_noted(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    path = landing / "d" / "openbanking" / "n.json"
    env = envelope(2)
    transactions_of(env)[0]["Amount"]["Amount"] = "@NUMBER@"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(env).replace('"@NUMBER@"', "0.1"))
    batch = parse_openbanking_files([path], landing)
    txn = batch.tables["ob_transactions"].set_index("provider_transaction_id")
    assert abs(txn.loc["T0000000", "amount"]) == Decimal("0.10")  # exact, not float 0.1000000000000000055
    (row,) = batch.quarantine.to_dict("records")
    assert row["reason"] == ("Amount.Amount is a JSON number, expected a decimal string; read exactly as 0.1; "
                             "value kept")


def test_a_python_float_amount_is_refused() -> None:
    body = envelope(1)["transactions"]
    transactions_of(body)[0]["Amount"]["Amount"] = 0.1
    parsed = parse_resource("transactions", body, CONTEXT)
    assert parsed.rows == [] and "is a number, expected a decimal string" in parsed.quarantine[0]["reason"]
    assert parsed.quarantine[0]["raw_value"] == "0.1"


def test_mcc_keeps_leading_zeros_and_a_bad_one_is_nulled() -> None:
    body = envelope(3)["transactions"]
    records = transactions_of(body)
    records[1]["MerchantDetails"] = {"MerchantName": "Vet", "MerchantCategoryCode": "742"}
    records[2]["MerchantDetails"] = {"MerchantName": "Odd", "MerchantCategoryCode": "AB12"}
    parsed = parse_resource("transactions", body, CONTEXT)
    assert [r["mcc"] for r in parsed.rows[1:]] == ["0742", None]
    assert parsed.rows[2]["merchant_name"] == "Odd"
    assert [q["column_name"] for q in parsed.quarantine] == [
        "transactions.Data.Transaction[2].MerchantDetails.MerchantCategoryCode"]


def test_records_of_the_wrong_shape_lose_only_themselves() -> None:
    body = envelope(3)["transactions"]
    records = transactions_of(body)
    records[0] = "a string"
    records[1]["Amount"] = "10.00"
    parsed = parse_resource("transactions", body, CONTEXT)
    assert len(parsed.rows) == 1 and parsed.records_read == 3 and parsed.records_rejected == 2
    assert reasons(parsed.quarantine) == [
        "record is a string, expected an object; record quarantined",
        "Amount is a string, expected an object {Amount, Currency}; record quarantined"]
    assert parse_resource("transactions", {"Data": {"Transaction": 5}}, CONTEXT).quarantine[0]["reason"] == (
        "Data.Transaction is a number, expected an array; page quarantined")


@pytest.mark.parametrize("second_key, kept", [("Nickname", "Household"), ("Nick\\u006eame", "Home")])
def test_duplicate_keys_in_an_envelope_are_noted_with_their_path(tmp_path: Path, second_key: str, kept: str) -> None:
    """A repeated key is noted with its path and its last value kept, also when it is spelt with an escape
    ("Nick\\u006eame": JSON compares keys after unescaping)."""
    text = json.dumps(envelope(1)).replace('"Nickname": "Bills"', f'"Nickname": "Bills", "{second_key}": "{kept}"')
    path = tmp_path / "dup.json"
    path.write_text(text)
    result = parse_envelope_file(path, "dup.json", max_bytes=2**20, max_depth=64)
    assert result.tables["ob_accounts"][0]["nickname"] == kept
    (row,) = result.quarantine
    assert row["column_name"] == "accounts.Data.Account[0].Nickname"
    assert row["reason"].startswith("duplicate key 'Nickname'") and row["reason"].endswith("last value used")


def test_source_file_is_the_resolved_path_under_the_landing_root(tmp_path: Path) -> None:
    """source_file is the file's resolved path relative to landing/ (the path as given when it lies elsewhere), for a
    plain file, one reached through a linked folder and a link itself (refused, named where it points)."""
    root = tmp_path / "landing"
    folder = root / "2026-11-20" / "openbanking"
    plain = write_json(folder / "a.json", envelope(1))
    outside = write_json(tmp_path / "elsewhere" / "b.json", envelope(1))
    (root / "2026-11-20" / "via").symlink_to(folder)
    (folder / "link.json").symlink_to(outside)
    files = [plain, root / "2026-11-20" / "via" / "a.json", folder / "link.json"]
    batch = parse_openbanking_files(files, landing_root=root)
    # the same fetch twice: the dedup keeps the later file's row, the one read through the linked folder
    assert batch.stats["ob_accounts_duplicates"] == 1
    assert list(batch.tables["ob_accounts"]["source_file"]) == ["2026-11-20/openbanking/a.json"]
    (refused,) = batch.quarantine.to_dict("records")
    assert refused["file"] == (folder / "link.json").as_posix()  # it resolves outside landing/: the path as given
    assert refused["reason"].startswith("cannot read file") and refused["reason"].endswith("file quarantined")


def test_raw_values_are_cut_at_1000_characters() -> None:
    body = envelope(1)["transactions"]
    transactions_of(body)[0]["Amount"] = {"Amount": "9" * 5000, "Currency": "GBP"}
    (row,) = parse_resource("transactions", body, CONTEXT).quarantine
    assert len(row["raw_value"]) == 1000


def test_a_missing_balance_list_is_noted() -> None:
    parsed = parse_resource("balances", {"Data": {}}, CONTEXT)
    assert parsed.rows == [] and reasons(parsed.quarantine) == [
        "Data.Balance is missing (required, at least one balance); page has no rows"]


def test_an_unexpected_error_costs_one_file_not_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.ingest import openbanking

    real = openbanking._parse_envelope_data  # what the batch calls once a file's bytes are read

    def flaky(data: bytes, source_file: str, *limits: Any):
        if source_file.endswith("f001.json"):
            raise KeyError("boom")
        return real(data, source_file, *limits)

    monkeypatch.setattr(openbanking, "_parse_envelope_data", flaky)
    batch = batch_of(tmp_path, envelope(2), make_envelope("C2", "alphabank", FETCHED, 2))
    assert len(batch.tables["ob_transactions"]) == 2
    assert list(batch.quarantine["reason"]) == [
        "unexpected error while parsing (KeyError: 'boom'); file quarantined"]


def test_unknown_resource_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown open-banking resource"):
        parse_resource("beneficiaries", {}, CONTEXT)
