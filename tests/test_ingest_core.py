"""The core landing ingest: every kind of bad input is quarantined exactly (file, line, column, reason) and every
valid row is kept, with its physical line."""
from __future__ import annotations

import gzip
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.contract import landing_contract
from pipelines.ingest.core import CoreFileResult, drop_file_objects, read_landing_file
from pipelines.lake import connect

D = date(2026, 11, 20)
TX_HEADER = ("transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
             "counterparty_id")


def tx(transaction_id: str, amount: str = "-12.50", booked_at: str = "2026-11-20T08:15:00+00:00",
       channel: str = "card", mcc: str = "5411", description: str = "TESCO", currency: str = "GBP",
       country: str = "GB") -> str:
    return f"{transaction_id},A000001,{booked_at},{amount},{currency},{description},Tesco,{mcc},{channel},{country},"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = connect()
    yield connection
    connection.close()


def ingest(con: duckdb.DuckDBPyConnection, path: Path, kind: str = "transactions", business_date: date | None = D,
           max_late_days: int | None = None) -> CoreFileResult:
    return read_landing_file(con, path, landing_contract()[kind], business_date, f"2026-11-20/{path.name}",
                             max_late_days=max_late_days)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def quarantined(result: CoreFileResult) -> list[tuple]:
    """(line, column_name, reason) of every quarantine row; the file is checked once for all."""
    assert set(result.quarantine["file"]) <= {result.file}
    return [(None if pd.isna(line) else int(line), None if pd.isna(column) else column, reason)
            for line, column, reason in result.quarantine[["line", "column_name", "reason"]]
            .astype(object).itertuples(index=False)]


def accepted(result: CoreFileResult) -> list[dict]:
    return result.accepted.df().astype(object).to_dict("records")


def lines_and_ids(result: CoreFileResult) -> list[tuple[int, str]]:
    return [(int(r["source_line"]), r["transaction_id"]) for r in accepted(result)]


# --- good input ----------------------------------------------------------------------------------------------

def test_good_file_is_typed_as_the_architecture_says(con, tmp_path):
    path = write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, tx("T1"), tx("T2", amount="2450", booked_at=
                 "2026-11-20T23:30:00-05:00")]) + "\n")
    result = ingest(con, path)
    assert quarantined(result) == []
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (2, 2, 0)
    types = dict(zip(result.accepted.columns, [str(t) for t in result.accepted.types]))
    assert types == {
        "transaction_id": "VARCHAR", "account_id": "VARCHAR", "booked_at": "TIMESTAMP WITH TIME ZONE",
        "amount": "DECIMAL(18,2)", "currency": "VARCHAR", "description": "VARCHAR", "merchant_name": "VARCHAR",
        "mcc": "VARCHAR", "channel": "VARCHAR", "country": "VARCHAR", "counterparty_id": "VARCHAR",
        "booking_date": "DATE", "source_file": "VARCHAR", "source_line": "BIGINT",
    }
    rows = con.execute(f"select transaction_id, amount, cast(booked_at as varchar), booking_date, source_file, "
                       f"source_line from ({result.accepted_sql}) order by source_line").fetchall()
    # booking_date is the local date as written; booked_at is the instant in UTC (the session zone).
    assert rows == [
        ("T1", Decimal("-12.50"), "2026-11-20 08:15:00+00", date(2026, 11, 20), "2026-11-20/transactions.csv", 2),
        ("T2", Decimal("2450.00"), "2026-11-21 04:30:00+00", date(2026, 11, 20), "2026-11-20/transactions.csv", 3),
    ]
    drop_file_objects(result)
    assert con.execute("select count(*) from duckdb_tables() where temporary").fetchall()[0][0] == 0


def test_columns_in_another_order_are_matched_by_name(con, tmp_path):
    path = write(tmp_path, "balances.csv", "balance,as_of,account_id\n12.30,2026-11-20,A1\n-5,2026-11-19,A2\n")
    result = ingest(con, path, "balances")
    assert quarantined(result) == []
    assert [(r["account_id"], r["as_of"].date() if hasattr(r["as_of"], "date") else r["as_of"], r["balance"])
            for r in accepted(result)] == [("A1", date(2026, 11, 20), 12.3), ("A2", date(2026, 11, 19), -5.0)]


def test_header_only_file_is_fine_and_noted(con, tmp_path):
    result = ingest(con, write(tmp_path, "transactions.csv", TX_HEADER + "\n"))
    assert not result.whole_file_quarantined
    assert quarantined(result) == [] and accepted(result) == []
    assert (result.rows_read, result.rows_accepted) == (0, 0)
    assert result.warnings == ["2026-11-20/transactions.csv: header only, no rows"]


def test_rfc4180_quoted_comma_newline_and_quotes_keep_physical_lines(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1", description='"Tesco, Ltd\nStore 12"'),
                      tx("T2", description='"say ""hi"""'), tx("T3", amount="1.234"), tx("T4")]) + "\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [(5, "amount", "amount: not a decimal with at most 2 decimals")]
    assert lines_and_ids(result) == [(2, "T1"), (4, "T2"), (6, "T4")]
    assert [r["description"] for r in accepted(result)] == ["Tesco, Ltd\nStore 12", 'say "hi"', "TESCO"]


def test_crlf_line_endings_and_blank_lines(con, tmp_path):
    text = "\r\n".join([TX_HEADER, tx("T1"), "", tx("T2", description='"two\r\nlines"'), tx("T3", mcc="12")]) + "\r\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [(6, "mcc", "mcc: not a merchant category code (4 digits)")]
    assert lines_and_ids(result) == [(2, "T1"), (4, "T2")]
    assert accepted(result)[0]["counterparty_id"] is None


def test_bom_at_the_start_is_accepted(con, tmp_path):
    path = tmp_path / "transactions.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join([TX_HEADER, tx("T1")]).encode("utf-8") + b"\n")
    result = ingest(con, path)
    assert quarantined(result) == []
    assert lines_and_ids(result) == [(2, "T1")]


def test_stray_quote_inside_an_unquoted_field_is_a_character(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1", description='27" monitor'), tx("T2", amount="x"), tx("T3")]) + "\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [(3, "amount", "amount: not a decimal with at most 2 decimals")]
    assert lines_and_ids(result) == [(2, "T1"), (4, "T3")]
    assert accepted(result)[0]["description"] == '27" monitor'


def test_gzip_csv(con, tmp_path):
    path = tmp_path / "transactions-0001.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([TX_HEADER, tx("T1"), tx("T2", channel="teleport")]) + "\n").encode()))
    result = ingest(con, path)
    assert quarantined(result) == [(3, "channel", "channel: not one of: card, direct_debit, standing_order, "
                                    "transfer_in, transfer_out, atm, cash_deposit, fee, interest, salary, benefit, "
                                    "other")]
    assert lines_and_ids(result) == [(2, "T1")]


# --- bad rows ----------------------------------------------------------------------------------------------------

def test_wrong_types_one_row_per_broken_rule(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1"), tx("T 2", amount="12,5", currency="gbp", mcc="54a1", country="GBR"),
                      tx("T3", booked_at="20-11-2026 10:00")]) + "\n"
    text = text.replace("12,5", '"12,5"')
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [
        (3, "transaction_id", "transaction_id: not an id (1-64 characters of A-Z a-z 0-9 _ . : -)"),
        (3, "amount", "amount: not a decimal with at most 2 decimals"),
        (3, "currency", "currency: not a currency code (3 capital letters)"),
        (3, "mcc", "mcc: not a merchant category code (4 digits)"),
        (3, "country", "country: not a country code (2 capital letters)"),
        (4, "booked_at", "booked_at: not an ISO 8601 timestamp with a zone offset or Z"),
    ]
    assert list(result.quarantine["raw_value"][:2]) == ["T 2", "12,5"]
    assert lines_and_ids(result) == [(2, "T1")]
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (3, 1, 2)


def test_three_decimals_nan_and_infinity(con, tmp_path):
    rows = [tx("T1", amount="1.005"), tx("T2", amount="NaN"), tx("T3", amount="Infinity"), tx("T4", amount="-inf"),
            tx("T5", amount="1e3"), tx("T6", amount="-0.10")]
    result = ingest(con, write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, *rows]) + "\n"))
    assert quarantined(result) == [
        (2, "amount", "amount: not a decimal with at most 2 decimals"),
        (3, "amount", "amount: NaN or infinity is not a number"),
        (4, "amount", "amount: NaN or infinity is not a number"),
        (5, "amount", "amount: NaN or infinity is not a number"),
        (6, "amount", "amount: not a decimal with at most 2 decimals"),
    ]
    assert lines_and_ids(result) == [(7, "T6")]


def test_unknown_enum_and_required_value_missing(con, tmp_path):
    rows = [tx("T1", channel="Card"), tx("T2", channel=""), tx("T3", channel="salary")]
    result = ingest(con, write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, *rows]) + "\n"))
    assert [q[:2] for q in quarantined(result)] == [(2, "channel"), (3, "channel")]
    assert quarantined(result)[0][2].startswith("channel: not one of: card, direct_debit")
    assert quarantined(result)[1][2] == "channel: required value is missing"
    assert lines_and_ids(result) == [(4, "T3")]


def test_zone_less_unreal_and_future_timestamps_and_late_postings(con, tmp_path):
    rows = [tx("T1", booked_at="2026-11-20T10:00:00"), tx("T2", booked_at="2026-11-21T00:30:00+01:00"),
            tx("T3", booked_at="2026-11-20T23:30:00-05:00"), tx("T4", booked_at="2026-02-30T10:00:00Z"),
            tx("T5", booked_at="2026-10-15T10:00:00Z"), tx("T6", booked_at="2026-10-16T10:00:00Z")]
    result = ingest(con, write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, *rows]) + "\n"),
                    max_late_days=35)
    assert quarantined(result) == [
        (2, "booked_at", "booked_at: not an ISO 8601 timestamp with a zone offset or Z"),
        (3, "booked_at", "booked_at: in the future: after the business date 2026-11-20"),
        (5, "booked_at", "booked_at: not a real instant"),
        (6, "booked_at", "booked_at: booked before 2026-10-16: more than the allowed days late"),
    ]
    # 23:30 in New York on D is already D+1 in UTC, but it was booked on D: it is not in the future.
    assert lines_and_ids(result) == [(4, "T3"), (7, "T6")]


def test_history_load_checks_no_dates_against_d(con, tmp_path):
    rows = [tx("T1", booked_at="2030-01-01T10:00:00Z"), tx("T2", booked_at="2020-01-01T10:00:00Z")]
    result = ingest(con, write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, *rows]) + "\n"),
                    business_date=None)
    assert quarantined(result) == []
    assert result.rows_accepted == 2


def test_future_date_min_max_and_max_length(con, tmp_path):
    text = ("customer_id,birth_year,region,customer_since,known_vulnerability\n"
            "C1,1899,London,2020-01-01,\n"
            f"C2,1980,{'x' * 65},2026-11-21,\n"
            "C3,1980.5,,2026-11-20,sad\n"
            "C4,2026,,2026-11-20,life_event\n")
    result = ingest(con, write(tmp_path, "customers.csv", text), "customers")
    assert quarantined(result) == [
        (2, "birth_year", "birth_year: below the minimum 1900"),
        (3, "region", "region: longer than 64 characters"),
        (3, "customer_since", "customer_since: in the future: after the business date 2026-11-20"),
        (4, "birth_year", "birth_year: not an integer"),
        (4, "known_vulnerability", "known_vulnerability: not one of: health, life_event, resilience, capability"),
    ]
    assert [(r["customer_id"], r["birth_year"]) for r in accepted(result)] == [("C4", 2026)]


def test_booleans_are_case_insensitive_and_strict(con, tmp_path):
    text = ("customer_id,purpose,granted,recorded_at,expires_at\n"
            "C1,personalization,TRUE,2026-01-01T10:00:00Z,\n"
            "C1,location,False,2026-01-01T10:00:00Z,\n"
            "C2,location,yes,2026-01-01T10:00:00Z,\n")
    result = ingest(con, write(tmp_path, "consents.csv", text), "consents")
    assert quarantined(result) == [(4, "granted", "granted: not a boolean (true or false)")]
    assert [r["granted"] for r in accepted(result)] == [True, False]


def test_duplicate_keys_name_the_first_line(con, tmp_path):
    rows = [tx("T1"), tx("T2"), tx("T1", amount="-1.00"), tx("T3"), tx("T1", amount="-2.00")]
    result = ingest(con, write(tmp_path, "transactions.csv", "\n".join([TX_HEADER, *rows]) + "\n"))
    assert quarantined(result) == [
        (4, "transaction_id", "duplicate key (transaction_id): first seen on line 2"),
        (6, "transaction_id", "duplicate key (transaction_id): first seen on line 2"),
    ]
    assert lines_and_ids(result) == [(2, "T1"), (3, "T2"), (5, "T3")]


def test_compound_key_compares_instants_not_spellings(con, tmp_path):
    text = ("customer_id,purpose,granted,recorded_at,expires_at\n"
            "C1,location,true,2026-01-01T10:00:00Z,\n"
            "C1,location,false,2026-01-01T11:00:00+01:00,\n"
            "C1,location,false,2026-01-01T11:00:00Z,\n")
    result = ingest(con, write(tmp_path, "consents.csv", text), "consents")
    assert quarantined(result) == [
        (3, "customer_id, purpose, recorded_at", "duplicate key (customer_id, purpose, recorded_at): first seen on "
                                                 "line 2")]
    assert result.quarantine["raw_value"].iloc[0] == "C1|location|2026-01-01T11:00:00+01:00"


def test_malformed_records_are_quarantined_with_their_line(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1"), "T2,A1", tx("T3") + ",surplus", tx("T4")]) + "\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [
        (3, None, "malformed record: missing columns: Expected Number of Columns: 11 Found: 2"),
        (4, None, "malformed record: too many columns: Expected Number of Columns: 11 Found: 12"),
    ]
    assert list(result.quarantine["raw_value"]) == ["T2,A1", tx("T3") + ",surplus"]
    assert lines_and_ids(result) == [(2, "T1"), (5, "T4")]
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (4, 2, 2)


# --- header problems -----------------------------------------------------------------------------------------

def test_missing_required_columns_quarantine_the_whole_file(con, tmp_path):
    text = "transaction_id,account_id,currency\nT1,A1,GBP\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert result.whole_file_quarantined
    assert quarantined(result) == [(None, None, "missing required columns: booked_at, amount, channel")]
    assert accepted(result) == []


def test_missing_optional_columns_are_read_as_empty_and_reported(con, tmp_path):
    text = "transaction_id,account_id,booked_at,amount,currency,channel\nT1,A1,2026-11-20T10:00:00Z,1.00,GBP,fee\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == []
    assert result.warnings == ["2026-11-20/transactions.csv: optional columns absent, read as empty: description, "
                               "merchant_name, mcc, country, counterparty_id"]
    assert accepted(result)[0]["mcc"] is None


def test_extra_columns_are_ignored_and_reported_on_line_1(con, tmp_path):
    text = TX_HEADER + ",note,internal_flag\n" + tx("T1") + ",hello,1\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [
        (1, "note", "note: extra column not in the contract: its values are ignored"),
        (1, "internal_flag", "internal_flag: extra column not in the contract: its values are ignored"),
    ]
    assert lines_and_ids(result) == [(2, "T1")]
    assert result.rows_quarantined == 0


# --- unreadable files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, reason", [
    ("transactions.csv", b"", "empty file: no header row"),
    ("transactions.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
    ("transactions.csv.gz", gzip.compress((TX_HEADER + "\n" + (tx("T1") + "\n") * 20000).encode())[:3000],
     "unreadable file: IOException"),
    ("transactions.parquet", b"PAR1 this is not parquet PAR1", "cannot read the Parquet file"),
])
def test_unreadable_files_are_quarantined_whole(con, tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    result = ingest(con, path)
    assert result.whole_file_quarantined
    assert [(line, column) for line, column, _ in quarantined(result)] == [(None, None)]
    assert quarantined(result)[0][2].startswith(reason), quarantined(result)[0][2]
    assert accepted(result) == []


def test_a_50_mb_single_line_file_is_quarantined_quickly(con, tmp_path):
    path = tmp_path / "transactions.csv"
    with open(path, "wb") as handle:
        chunk = b"x" * (1 << 20)
        for _ in range(50):
            handle.write(chunk)
    started = time.perf_counter()
    result = ingest(con, path)
    assert time.perf_counter() - started < 5
    assert quarantined(result) == [(None, None, "the first line is longer than 1048576 bytes: not a CSV header")]


def test_an_overlong_record_is_quarantined_and_the_rest_kept(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1"), tx("T2", description="y" * 3_000_000), tx("T3")]) + "\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert [q[:2] for q in quarantined(result)] == [(3, None)]
    assert quarantined(result)[0][2].startswith("malformed record: line size over maximum")
    assert lines_and_ids(result) == [(2, "T1"), (4, "T3")]


# --- Parquet -------------------------------------------------------------------------------------------------

def test_parquet_is_validated_as_text_with_row_numbers(con, tmp_path):
    path = tmp_path / "transactions.parquet"
    con.execute(f"""copy (select * from (values
        ('T1', 'A1', timestamptz '2026-11-20 10:00:00+00', -12.5::double, 'GBP', 'x', 'm', '5411', 'card', 'GB', null),
        ('T2', 'A1', timestamptz '2026-11-20 11:00:00+00', 1.005::double, 'GBP', 'x', 'm', '5411', 'card', 'GB', null),
        ('T3', 'A1', timestamptz '2026-11-20 12:00:00+00', 7::double, 'GBP', 'x', 'm', '5411', 'card', 'GB', null))
        t({TX_HEADER})) to '{path}' (format parquet)""")
    result = ingest(con, path)
    assert quarantined(result) == [(2, "amount", "amount: not a decimal with at most 2 decimals")]
    assert lines_and_ids(result) == [(1, "T1"), (3, "T3")]
    assert [r["amount"] for r in accepted(result)] == [-12.5, 7.0]


def test_parquet_with_a_missing_column_is_quarantined_whole(con, tmp_path):
    path = tmp_path / "balances.parquet"
    con.execute(f"copy (select 'A1' as account_id, 12.5 as balance) to '{path}' (format parquet)")
    result = ingest(con, path, "balances")
    assert quarantined(result) == [(None, None, "missing required columns: as_of")]


def test_malformed_records_after_multiline_fields_and_blank_lines_get_physical_lines(con, tmp_path):
    text = "\n".join([TX_HEADER, tx("T1", description='"one\ntwo\nthree"'), "", "T2,A1", tx("T3"),
                      tx("T4", description='12" ruler') + ",x", tx("T5")]) + "\n"
    result = ingest(con, write(tmp_path, "transactions.csv", text))
    assert quarantined(result) == [
        (6, None, "malformed record: missing columns: Expected Number of Columns: 11 Found: 2"),
        (8, None, "malformed record: too many columns: Expected Number of Columns: 11 Found: 12"),
    ]
    assert lines_and_ids(result) == [(2, "T1"), (7, "T3"), (9, "T5")]


BALANCES = "account_id,as_of,balance\n"


@pytest.mark.parametrize("text, kept, expected", [
    (BALANCES + 'A1,2026-11-20,1\nA2,"2026-11-20,2\nA3,2026-11-20,3\n', [("A1", 2)],
     [(3, None, "malformed record: unquoted value: Value with unterminated quote found.")]),
    (BALANCES + 'A1,2026-11-20,1\nA"2,2026-11-20,2\nA3,2026-11-20,3\n', [("A1", 2), ("A3", 4)],
     [(3, "account_id", "account_id: not an id (1-64 characters of A-Z a-z 0-9 _ . : -)")]),
    (BALANCES.replace("\n", "\r") + "A1,2026-11-20,1\rA2,2026-11-20,x\rA3,2026-11-20,3\r", [("A1", 2), ("A3", 4)],
     [(3, "balance", "balance: not a decimal with at most 2 decimals")]),
    (BALANCES + "A1,2026-11-20,1\nA2,2026-11-20,2", [("A1", 2), ("A2", 3)], []),
    ("account_id,account_id,as_of,balance\nA1,A1,2026-11-20,1\n", [],
     [(None, None, "duplicate column names in the header: account_id")]),
], ids=["unterminated-quote", "stray-quote", "cr-only-lines", "no-final-newline", "duplicate-header"])
def test_quote_and_newline_edge_cases(con, tmp_path, text, kept, expected):
    result = ingest(con, write(tmp_path, "balances.csv", text), "balances")
    assert quarantined(result) == expected
    assert [(r["account_id"], int(r["source_line"])) for r in accepted(result)] == kept
