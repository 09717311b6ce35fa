"""Hostile landing files found by the hostile-file sweep (docs/architecture.md, "Hostile files: what the ingest
guarantees"): each class ends in a quarantine row with a one-line reason, never an exception, and loses no row that
could be used."""
from __future__ import annotations

import json
import logging
import re
import unicodedata
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.contract import landing_contract
from pipelines.ingest.core import DATE_OUT_OF_RANGE, INSTANT_OUT_OF_RANGE, MIXED_LINE_ENDS, read_landing_file
from pipelines.ingest.openbanking import parse_openbanking_files
from pipelines.lake import connect
from tests.fixtures.openbanking.synthetic import make_envelope

D = date(2026, 11, 20)
Y0 = "0001-01-01T00:00:00+14:00"  # as UTC: 0000-12-31T10:00, year 0
Y10K = "9999-12-31T23:59:59-14:00"  # as UTC: 10000-01-01T13:59:59
FETCHED = datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = connect()
    yield connection
    connection.close()


def ingest(con, tmp_path: Path, kind: str, text: str | bytes, business_date: date | None = D):
    path = tmp_path / f"{kind}.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return read_landing_file(con, path, landing_contract()[kind], business_date, f"x/{path.name}")


def problems(result) -> list[tuple]:
    return [(None if pd.isna(line) else int(line), None if pd.isna(column) else column, reason)
            for line, column, reason in result.quarantine[["line", "column_name", "reason"]]
            .astype(object).itertuples(index=False)]


# --- dates and instants the lake cannot hold -----------------------------------------------------------------

@pytest.mark.parametrize("business_date", [D, None], ids=["nightly", "history"])
def test_an_instant_outside_the_years_1_to_9999_in_utc_is_quarantined(con, tmp_path, business_date):
    """DuckDB reads 0001-01-01T00:00+14:00 as an instant of year 0 and 9999-12-31T23:59:59-14:00 as one of year
    10000; bronze and silver held them and any stage reading them into Python failed. The far-future sentinel
    9999-12-31T00:00:00Z is a real instant and stays."""
    text = "\n".join(["customer_id,purpose,granted,recorded_at,expires_at",
                      f"C1,personalization,true,{Y0},",
                      "C2,personalization,true,2026-11-20T01:00:00Z,9999-12-31T00:00:00Z",
                      f"C3,personalization,true,2026-11-20T01:00:00Z,{Y10K}",
                      "C4,personalization,true,0001-01-01T00:00:00Z,"]) + "\n"
    result = ingest(con, tmp_path, "consents", text, business_date)
    assert problems(result) == [(2, "recorded_at", f"recorded_at: {INSTANT_OUT_OF_RANGE}"),
                                (4, "expires_at", f"expires_at: {INSTANT_OUT_OF_RANGE}")]
    rows = result.accepted.fetchall()  # every accepted instant converts to Python
    assert [r[0] for r in rows] == ["C2", "C4"]
    assert result.accepted.df()["expires_at"].notna().sum() == 1


@pytest.mark.parametrize("business_date", [D, None], ids=["nightly", "history"])
def test_a_date_of_year_0_is_quarantined(con, tmp_path, business_date):
    text = "\n".join(["customer_id,birth_year,region,customer_since,known_vulnerability",
                      "C1,1980,London,0000-01-01,", "C2,1980,London,0001-01-01,"]) + "\n"
    result = ingest(con, tmp_path, "customers", text, business_date)
    assert problems(result) == [(2, "customer_since", f"customer_since: {DATE_OUT_OF_RANGE}")]
    assert result.accepted.fetchall()[0][3] == date(1, 1, 1)


def test_an_open_banking_instant_outside_the_years_1_to_9999_loses_only_its_record(tmp_path, caplog):
    """Python cannot convert such a date-time to UTC (OverflowError): the whole envelope was quarantined as an
    'unexpected error while parsing', with a traceback in the log."""
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=3)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["BookingDateTime"] = Y0
    transactions[1]["ValueDateTime"] = Y10K
    path = tmp_path / "openbanking" / "C1-alpha.json"
    path.parent.mkdir()
    path.write_text(json.dumps(envelope), encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        batch = parse_openbanking_files([path], landing_root=tmp_path, workers=1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(batch.tables["ob_transactions"]) == 2  # the bad booking time costs its record; a bad value date
    reasons = sorted(batch.quarantine["reason"])  # only the field
    assert reasons[0].startswith(f"BookingDateTime '{Y0}' is {INSTANT_OUT_OF_RANGE}")
    assert reasons[1].startswith(f"ValueDateTime '{Y10K}' is {INSTANT_OUT_OF_RANGE}")
    assert len(batch.tables["ob_accounts"]) == 1


@pytest.mark.parametrize("fetched_at", [Y0, Y10K])
def test_an_envelope_fetched_outside_the_years_1_to_9999_is_refused_with_the_reason(tmp_path, caplog, fetched_at):
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=1)
    envelope["fetched_at"] = fetched_at
    path = tmp_path / "openbanking" / "C1-alpha.json"
    path.parent.mkdir()
    path.write_text(json.dumps(envelope), encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        batch = parse_openbanking_files([path], landing_root=tmp_path, workers=1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    (reason,) = batch.quarantine["reason"]
    assert f"envelope fetched_at '{fetched_at}' is {INSTANT_OUT_OF_RANGE}" in reason
    assert "unexpected" not in reason


# --- line endings ------------------------------------------------------------------------------------------

def test_a_file_with_mixed_line_endings_that_cannot_be_read_says_so_in_one_line(con, tmp_path):
    """DuckDB's strict reader gives up on some files mixing CRLF and LF with a many-line message about its own
    options; the quarantine says what is wrong with the file instead."""
    result = ingest(con, tmp_path, "fx_rates", b"currency,rate_to_base\r\nEUR,1.1\nUSD,0.8\r\nCHF,0.9\n")
    assert problems(result) == [(None, None, MIXED_LINE_ENDS)]
    assert result.whole_file_quarantined


def test_a_whole_file_reason_from_the_reader_is_one_line(con, tmp_path):
    """Any reader message quoted as a whole-file reason keeps its first line only."""
    result = ingest(con, tmp_path, "fx_rates", b"currency,rate_to_base\nEUR,1.1\r\nUSD,0.8\rCHF,0.9\n")
    ((line, column, reason),) = problems(result)
    assert (line, column) == (None, None) and "\n" not in reason


# --- huge arrays -------------------------------------------------------------------------------------------

def test_an_envelope_of_many_empty_records_keeps_a_bounded_quarantine_and_counts_every_record(tmp_path):
    """200,000 empty transactions (0.8 MB) made 1,000,000 quarantine rows in memory (about 650 bytes each: a 50 MB
    file, within max_json_bytes, would need tens of GB). The rows past the cap are counted in one row instead."""
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=2)
    envelope["transactions"]["Data"]["Transaction"] += [{}] * 20_000
    path = tmp_path / "openbanking" / "C1-alpha.json"
    path.parent.mkdir()
    path.write_text(json.dumps(envelope), encoding="utf-8")
    batch = parse_openbanking_files([path], landing_root=tmp_path, workers=1, max_quarantine_rows=100)
    assert len(batch.quarantine) == 101
    assert len(batch.tables["ob_transactions"]) == 2  # the good records are kept
    assert batch.stats["records_rejected"] == 20_000  # every bad record is counted
    summary = batch.quarantine["reason"].iloc[-1]
    assert summary.startswith("99900 more quarantine rows of this file not listed "
                              "(ingest.max_quarantine_rows_per_file is 100)")
    assert "(20000 of " in summary
    uncapped = parse_openbanking_files([path], landing_root=tmp_path, workers=1)
    assert len(uncapped.quarantine) == 100_000


def test_the_nightly_ingest_applies_the_cap_of_the_settings(tmp_path):
    from pipelines.config import Paths, settings
    from pipelines.ingest.landing import ingest_landing

    cap = int(settings()["ingest"]["max_quarantine_rows_per_file"])
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=1)
    envelope["transactions"]["Data"]["Transaction"] += [{}] * (cap // 5 + 10)  # five faults each: past the cap
    folder = tmp_path / "landing" / D.isoformat()
    (folder / "openbanking").mkdir(parents=True)
    (folder / "openbanking" / "C1-alpha.json").write_text(json.dumps(envelope), encoding="utf-8")
    metrics = ingest_landing(Paths(tmp_path), D.isoformat(), folder, business_date=D)
    ob_rows = metrics["openbanking"]["rows_quarantined"]
    assert ob_rows == cap + 1
    assert metrics["openbanking"]["stats"]["records_rejected"] == cap // 5 + 10


# --- Parquet ------------------------------------------------------------------------------------------------

def test_a_parquet_file_with_a_repeated_column_name_is_quarantined_as_a_csv_one_is(con, tmp_path):
    """DuckDB renames the second `currency` to `currency_1`, which read as an extra column: the first copy won
    silently whatever the second said. A CSV with the same header is quarantined whole; so is the Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "fx_rates.parquet"
    table = pa.Table.from_arrays([pa.array(["EUR"]), pa.array(["1.1"]), pa.array(["USD"])],
                                 names=["currency", "rate_to_base", "currency"])
    pq.write_table(table, path)
    result = read_landing_file(con, path, landing_contract()["fx_rates"], D, "x/fx_rates.parquet")
    assert problems(result) == [(None, None, "duplicate column names in the header: currency")]
    csv_result = ingest(con, tmp_path, "fx_rates", "currency,rate_to_base,currency\nEUR,1.1,USD\n")
    assert problems(csv_result) == problems(result)


# --- a CSV of many bad rows -----------------------------------------------------------------------------------

def test_a_csv_of_many_bad_rows_lists_the_first_and_counts_the_rest(con, tmp_path):
    """Every bad row's faults came into memory as one DataFrame (200,000 bad postings: 1.2M rows, 1 GB; a bad 16M-line
    file would not fit). Now the first `max_quarantine_rows` bad records are listed with every fault, the others
    counted in one row; the accepted rows are the same."""
    from pipelines.ingest.limits import IngestLimits

    header = "currency,rate_to_base"
    rows = ["EUR,1.1"] + [f"X{i},abc" for i in range(50)] + ["USD,0.8"]
    path = tmp_path / "fx_rates.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    result = read_landing_file(con, path, landing_contract()["fx_rates"], D, "x/fx_rates.csv",
                               limits=IngestLimits(max_quarantine_rows=10))
    found = problems(result)
    assert found[0] == (None, None, "40 more records of this file broke a rule and are quarantined, not listed "
                                    "(ingest.max_quarantine_rows_per_file is 10); 50 in all")
    assert [line for line, _, _ in found[1:]] == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12]
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (52, 2, 50)
    assert sorted(r[0] for r in result.accepted.fetchall()) == ["EUR", "USD"]


def test_a_csv_of_more_malformed_records_than_the_bound_is_quarantined_whole_with_the_count(con, tmp_path):
    """DuckDB keeps every malformed record's errors in memory while it reads (1.4 GB for 150,000 short records) and,
    in 2.0, stops reading early when most records are malformed (of 150,000 records, 50% too short, it read 134,437,
    and the file was quarantined as 'records cannot be delimited consistently', which was not the trouble). Past
    `ingest.max_malformed_records_per_file` the file is quarantined whole, the count named; under it, as before."""
    from pipelines.ingest.limits import IngestLimits

    header = ("transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
              "counterparty_id")
    good, short = "T{},A1,2026-11-20T10:00:00Z,-5.00,EUR,coffee,Cafe,5812,card,IE,", "T{},A1,2026-11-20T10:00:00Z"
    path = tmp_path / "transactions.csv"
    path.write_text("\n".join([header, *((short if i % 2 else good).format(i) for i in range(150_000))]) + "\n",
                    encoding="utf-8")
    result = read_landing_file(con, path, landing_contract()["transactions"], D, "x/transactions.csv")
    assert result.whole_file_quarantined
    assert problems(result) == [(None, None, "75,000 of its 150,000 records are malformed (more or fewer fields "
                                             "than the header's 11, a character after a closing quote, or bytes "
                                             "that are not UTF-8): more than ingest.max_malformed_records_per_file "
                                             "(10,000); the file is quarantined whole, none of its records read")]

    lines = [header, *(good.format(i) for i in range(8)), short.format(8), "", good.format(9) + ",extra", "",
             short.format(10)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for bound, whole in ((2, True), (3, False)):
        result = read_landing_file(con, path, landing_contract()["transactions"], D, "x/transactions.csv",
                                   limits=IngestLimits(max_malformed_records=bound))
        assert result.whole_file_quarantined is whole
        if not whole:
            assert [line for line, _, _ in problems(result)] == [10, 12, 14]
            assert (result.rows_read, result.rows_accepted) == (11, 8)

    # a stray character after a closing quote is malformed too (DuckDB's own count of such records, ignore_errors,
    # is no help: it skips the good records after them, 1 of 20 read); a quote inside an unquoted field is a character
    lines = [header, *(good.format(i).replace(",Cafe,", ',Cafe 12" pizza,') if i % 2
                       else good.format(i).replace(",coffee,", ',"coffee"x,') for i in range(20))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for bound, whole in ((9, True), (10, False)):
        result = read_landing_file(con, path, landing_contract()["transactions"], D, "x/transactions.csv",
                                   limits=IngestLimits(max_malformed_records=bound))
        assert result.whole_file_quarantined is whole
        if whole:
            assert problems(result)[0][2].startswith("10 of its 20 records are malformed")
        else:
            assert (result.rows_read, result.rows_accepted) == (20, 10)
            assert {reason.split(":")[1] for _, _, reason in problems(result)} == {" unquoted value"}


# --- Parquet physical types ------------------------------------------------------------------------------------

@pytest.mark.parametrize("column, sql_value, physical", [
    ("rate_to_base", "{'a': 1.1}", "STRUCT(a DECIMAL(2,1))"),
    ("rate_to_base", "[1.1]", "DECIMAL(2,1)[]"),
    ("currency", "map(['k'], ['EUR'])", "MAP(VARCHAR, VARCHAR)"),
    ("currency", "'EUR'::blob", "BLOB"),
    ("currency", "42", "INTEGER"),
])
def test_a_parquet_column_of_a_type_without_a_faithful_text_is_quarantined_naming_it(con, tmp_path, column,
                                                                                    sql_value, physical):
    """A struct, list, map or binary column was read as its text form ("{'a': 1.1}", "[1.1]", ...) and judged as
    such: a binary currency 'EUR' was accepted. The file is quarantined, naming the column and its type."""
    values = {"currency": "'EUR'", "rate_to_base": "'1.1'", column: sql_value}
    path = tmp_path / "fx_rates.parquet"
    con.execute(f"copy (select {values['currency']} as currency, {values['rate_to_base']} as rate_to_base) "
                f"to '{path}' (format parquet)")
    result = read_landing_file(con, path, landing_contract()["fx_rates"], D, "x/fx_rates.parquet")
    ((line, name, reason),) = problems(result)
    assert (line, name) == (None, None) and result.whole_file_quarantined
    assert reason.startswith(f"columns of a type the contract cannot read: {column} is {physical} in the Parquet file")


def test_parquet_columns_of_lossless_types_are_read(con, tmp_path):
    """int32 -> the int and decimal types, DATE, TIMESTAMP WITH TIME ZONE and BOOLEAN are read through their text."""
    path = tmp_path / "consents.parquet"
    con.execute(f"copy (select 'C1' as customer_id, 'personalization' as purpose, true as granted, "
                f"timestamptz '2026-11-20 01:00:00+00' as recorded_at, cast(null as timestamptz) as expires_at) "
                f"to '{path}' (format parquet)")
    result = read_landing_file(con, path, landing_contract()["consents"], D, "x/consents.parquet")
    assert problems(result) == []
    assert result.accepted.fetchall()[0][:3] == ("C1", "personalization", True)
    path = tmp_path / "customers.parquet"
    con.execute(f"copy (select 'C1' as customer_id, 1980::int as birth_year, 'London' as region, "
                f"date '2020-01-01' as customer_since, null::varchar as known_vulnerability) to '{path}' (format parquet)")
    result = read_landing_file(con, path, landing_contract()["customers"], D, "x/customers.parquet")
    assert problems(result) == []
    assert result.accepted.fetchall()[0][:4] == ("C1", 1980, "London", date(2020, 1, 1))


def test_a_naive_timestamp_for_an_instant_is_quarantined_naming_the_column(con, tmp_path):
    path = tmp_path / "consents.parquet"
    con.execute(f"copy (select 'C1' as customer_id, 'personalization' as purpose, true as granted, "
                f"timestamp '2026-11-20 01:00:00' as recorded_at) to '{path}' (format parquet)")
    result = read_landing_file(con, path, landing_contract()["consents"], D, "x/consents.parquet")
    ((_, _, reason),) = problems(result)
    assert "recorded_at is TIMESTAMP in the Parquet file (the contract's timestamptz takes VARCHAR, " in reason


# --- over-long values ------------------------------------------------------------------------------------------

LONG = "X" * 100_000


def write_envelope(tmp_path: Path, envelope: dict) -> Path:
    path = tmp_path / "openbanking" / "C1-alpha.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(envelope), encoding="utf-8")
    return path


def test_an_over_long_open_banking_id_costs_its_record_and_an_over_long_text_its_field(tmp_path):
    """A 100,000-character TransactionId, MerchantName or TransactionInformation was accepted (the id went into
    bronze, silver and every key built from it). The bounds are the OBIE MaxNText of config/landing.yaml."""
    from pipelines.contract import openbanking_lengths

    lengths = openbanking_lengths()
    assert (lengths.limit("AccountId"), lengths.limit("TransactionInformation"),
            lengths.limit("MerchantDetails.MerchantName"), lengths.limit("Reference")) == (40, 500, 350, 35)
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=4)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["TransactionId"] = LONG
    transactions[1]["TransactionInformation"] = LONG
    transactions[2]["MerchantDetails"] = {"MerchantName": LONG}
    transactions[3]["TransactionId"] = "T" * 210  # at the bound: kept
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    kept = batch.tables["ob_transactions"]
    assert len(kept) == 3
    assert kept["description"].str.len().max() <= 500 and kept["merchant_name"].fillna("").str.len().max() <= 350
    assert ("T" * 210) in set(kept["provider_transaction_id"])
    reasons = sorted(batch.quarantine["reason"])
    assert reasons == sorted([
        "TransactionId is 100000 characters, more than 210 (openbanking.max_length); record quarantined",
        "TransactionInformation is 100000 characters, more than 500 (openbanking.max_length); field set to null, "
        "record kept",
        "MerchantDetails.MerchantName is 100000 characters, more than 350 (openbanking.max_length); field set to "
        "null, record kept"])
    assert batch.quarantine["raw_value"].str.len().max() <= 1000


def test_an_envelope_of_an_over_long_provider_is_refused_with_the_reason(tmp_path):
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=1)
    envelope["provider"] = LONG
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    (reason,) = batch.quarantine["reason"]
    assert reason.startswith("envelope provider is 100000 characters, more than 64 (openbanking.max_length)")
    assert all(len(table) == 0 for table in batch.tables.values())


def test_an_over_long_core_id_or_text_is_quarantined(con, tmp_path):
    """The core contract bounds every id (64) and text (its max_length): a 100,000-character customer id,
    transaction id, description or merchant name costs its row, with the reason."""
    header = "transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,counterparty_id"
    good = "T{i},A1,2026-11-20T10:00:00Z,-1.00,GBP,{d},{m},5411,card,GB,"
    text = "\n".join([header, good.format(i=1, d="ok", m="ok"), good.format(i=LONG, d="ok", m="ok"),
                      good.format(i=3, d=LONG, m="ok"), good.format(i=4, d="ok", m=LONG)]) + "\n"
    result = ingest(con, tmp_path, "transactions", text)
    found = {(line, column) for line, column, _ in problems(result)}
    assert found == {(3, "transaction_id"), (4, "description"), (5, "merchant_name")}
    assert [r[0] for r in result.accepted.fetchall()] == ["T1"]
    customers = ingest(con, tmp_path, "customers", f"customer_id,birth_year,region,customer_since,known_vulnerability\n"
                                                   f"{LONG},1980,{LONG},2020-01-01,\n")
    assert {column for _, column, _ in problems(customers)} == {"customer_id", "region"}


# --- extreme amounts -------------------------------------------------------------------------------------------

def test_a_posting_past_the_money_bound_is_quarantined_in_both_sources(con, tmp_path):
    """A posting of -9,999,999,999,999,999.99 fits DECIMAL(18,2) and was accepted; the features stage then failed on
    its sum ("Casting value -10000000000000146.39 to DECIMAL(18,2) failed"), an unexpected error that stopped the
    night. The contract bounds a posting at 1,000,000,000 either way, the same for open banking."""
    header = "transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,counterparty_id"
    row = "T{i},A1,2026-11-20T10:00:00Z,{a},GBP,x,m,5411,card,GB,"
    text = "\n".join([header, row.format(i=1, a="-1000000000.00"), row.format(i=2, a="-9999999999999999.99"),
                      row.format(i=3, a="1000000000000000.00"), row.format(i=4, a="1000000000.01")]) + "\n"
    result = ingest(con, tmp_path, "transactions", text)
    assert [(line, column) for line, column, _ in problems(result)] == [(3, "amount"), (4, "amount"), (5, "amount")]
    assert [r[0] for r in result.accepted.fetchall()] == ["T1"]
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=2)
    envelope["transactions"]["Data"]["Transaction"][0]["Amount"]["Amount"] = "9999999999999.99"
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    assert len(batch.tables["ob_transactions"]) == 1
    (reason,) = batch.quarantine["reason"]
    assert "Amount '9999999999999.99' is above the maximum 1000000000" in reason and "record quarantined" in reason


# --- Unicode bidirectional controls -----------------------------------------------------------------------------

def test_a_text_with_a_bidirectional_control_is_quarantined_and_emoji_are_kept(con, tmp_path):
    """A region "North West\\u202eevil" reached the nightly report's fairness table as a group of its own, shown
    reversed. Bidi embeddings, overrides and isolates are quarantined as control characters are; emoji and
    accents are text."""
    text = ("customer_id,birth_year,region,customer_since,known_vulnerability\n"
            "C1,1980,North West \u202eevil\u202c,2020-01-01,\nC2,1980,Caf\u00e9 \U0001F4B8,2020-01-01,\n"
            "C3,1980,x\u2066y\u2069,2020-01-01,\n")
    result = ingest(con, tmp_path, "customers", text)
    assert [(line, column) for line, column, _ in problems(result)] == [(2, "region"), (4, "region")]
    assert problems(result)[0][2].startswith("region: contains a Unicode bidirectional control")
    assert [r[:3] for r in result.accepted.fetchall()] == [("C2", 1980, "Caf\u00e9 \U0001F4B8")]
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=2)
    envelope["transactions"]["Data"]["Transaction"][0]["TransactionInformation"] = "Coffee \u202eevil"
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    assert len(batch.tables["ob_transactions"]) == 2
    (reason,) = batch.quarantine["reason"]
    assert reason.startswith("TransactionInformation contains a Unicode bidirectional control")
    assert reason.endswith("field set to null, record kept")


# --- invisible characters (zero-width, joiners, direction marks, soft hyphen, selectors, tags) -----------------

def test_an_invisible_character_in_an_id_or_a_label_is_quarantined_and_free_text_keeps_it(con, tmp_path):
    """A customer id "C1\\u200b" reads as C1 and would be a second customer; a region "North West\\u200b" or
    "North\\u00adWest" a second group of the report that reads the same. Ids and labels (config/landing.yaml
    `label`) are quarantined with the code point named; free text keeps a joiner (an emoji) or a non-joiner."""
    text = ("customer_id,birth_year,region,customer_since,known_vulnerability\n"
            "C1\u200b,1980,North West,2020-01-01,\n"
            "C2,1980,North West\u200b,2020-01-01,\n"
            "C3,1980,North\u00adWest,2020-01-01,\n"
            "C4,1980,North West\ufe0f,2020-01-01,\n"
            "C5,1980,London\U000e0041,2020-01-01,\n"
            "C6,1980,North West,2020-01-01,\n")
    result = ingest(con, tmp_path, "customers", text)
    assert [(line, column, reason.split(":")[0]) for line, column, reason in problems(result)] == [
        (2, "customer_id", "customer_id"), (3, "region", "region"), (4, "region", "region"),
        (5, "region", "region"), (6, "region", "region")]
    reasons = [reason for _, _, reason in problems(result)]
    assert reasons[0].startswith("customer_id: not an id (1-64 characters of A-Z a-z 0-9 _ . : -): contains an "
                                 "invisible character (U+200B")
    assert [r.split("(U+")[1][:6] for r in reasons[1:]] == ["200B: ", "00AD: ", "FE0F: ", "E0041:"]
    assert [r[0] for r in result.accepted.fetchall()] == ["C6"]

    family, persian = "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    text = ("transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
            "counterparty_id\n"
            f"T1,A1,2026-11-20T10:00:00Z,-5.00,EUR,Gift {family} {persian},Toy Shop,5945,card,IE,\n"
            "T2,A1,2026-11-20T10:00:00Z,-5.00,EUR,Films,NETFLIX\ufeff,4899,card,IE,\n"
            "T3,A1,2026-11-20T10:00:00Z,-5.00,EUR,Films,NET\u2060FLIX,4899,card,IE,\n")
    result = ingest(con, tmp_path, "transactions", text)
    assert [(line, column) for line, column, _ in problems(result)] == [(3, "merchant_name"), (4, "merchant_name")]
    assert "(U+FEFF" in problems(result)[0][2] and "(U+2060" in problems(result)[1][2]
    (accepted,) = result.accepted.fetchall()
    assert accepted[5] == f"Gift {family} {persian}"

    text = ("message_id,customer_id,received_at,channel,text\n"
            f"M1,C1,2026-11-20T10:00:00Z,chat,thanks {family} for the help\u200b\n")
    assert problems(ingest(con, tmp_path, "messages", text)) == []


def test_an_invisible_character_in_an_open_banking_id_costs_its_record_in_a_name_its_field(tmp_path):
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=4)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["TransactionId"] += "\u200b"
    transactions[1]["MerchantDetails"] = {"MerchantName": "NET\u2060FLIX"}
    transactions[2]["TransactionInformation"] = "Gift \U0001F468\u200d\U0001F469 \u200b"
    envelope["direct_debits"]["Data"]["DirectDebit"][0]["Name"] = "Energy\u00adCo"
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    kept = batch.tables["ob_transactions"]
    assert len(kept) == 3 and "Gift \U0001F468\u200d\U0001F469 \u200b" in set(kept["description"])
    assert kept["merchant_name"].isna().sum() == 1
    assert batch.tables["ob_direct_debits"]["name"].isna().all()
    reasons = sorted(batch.quarantine["reason"])
    assert [r.split(" ")[0] for r in reasons] == ["MerchantDetails.MerchantName", "Name", "TransactionId"]
    assert reasons[0].startswith("MerchantDetails.MerchantName contains an invisible character (U+2060")
    assert reasons[0].endswith("field set to null, record kept")
    assert reasons[2].startswith("TransactionId contains an invisible character (U+200B")
    assert reasons[2].endswith("record quarantined")

    for key, value in (("provider", "alpha\u200b"), ("consent_id", "CONSENT\u202e1")):
        envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=1)
        envelope[key] = value
        batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
        (reason,) = batch.quarantine["reason"]
        assert reason.startswith(f"envelope {key} contains a")
        assert not any(len(frame) for frame in batch.tables.values())


# --- bytes that are not UTF-8, lone surrogates, records over DuckDB's 2 MB line limit ---------------------------

TX_HEADER = ("transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
             "counterparty_id")


def tx_line(i: int, description: bytes = b"ok") -> bytes:
    return b"T%d,A1,2026-11-20T10:00:00Z,-5.00,EUR,%s,Cafe,5812,card,IE,\n" % (i, description)


@pytest.mark.parametrize("bad", [b"caf\xe9", b"\xc0\xaf", b"\xed\xa0\x80", b'"two\nlines \xff"'],
                         ids=["latin-1", "overlong", "surrogate", "quoted-multiline"])
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_a_record_of_bytes_that_are_not_utf8_is_quarantined_alone_and_the_rest_read(con, tmp_path, bad, gz):
    """One Latin-1 merchant (or an overlong or surrogate encoding) in a night's transactions quarantined the whole file,
    "not UTF-8 (first bad record near line 3)", and so stopped the night (transactions is a required file). Now the
    record is quarantined with its line and the file's other records are read."""
    import gzip

    from pipelines.ingest.core import NOT_UTF8_REASON

    data = TX_HEADER.encode() + b"\n" + tx_line(1) + tx_line(2, bad) + tx_line(3)
    path = tmp_path / ("transactions.csv.gz" if gz else "transactions.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    result = read_landing_file(con, path, landing_contract()["transactions"], D, f"x/{path.name}")
    assert not result.whole_file_quarantined
    assert problems(result) == [(3, None, NOT_UTF8_REASON)]
    assert sorted(r[0] for r in result.accepted.fetchall()) == ["T1", "T3"]
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (3, 2, 1)
    (raw,) = result.quarantine["raw_value"]
    assert raw.startswith("T2,A1,") and "?" in raw  # the undecodable bytes shown as ?


def test_a_file_of_more_records_not_utf8_than_the_malformed_bound_is_quarantined_whole(con, tmp_path):
    """A Latin-1 file (every record with an accent) would keep one DuckDB error per record in memory: past
    ingest.max_malformed_records_per_file such records are counted with the malformed ones, the file quarantined
    whole with the count; a personal file's bad record shows its length, not its text."""
    from pipelines.ingest.limits import IngestLimits

    path = tmp_path / "transactions.csv"
    path.write_bytes(TX_HEADER.encode() + b"\n" + b"".join(tx_line(i, b"caf\xe9" if i % 2 else b"ok")
                                                            for i in range(40)))
    for bound, whole in ((19, True), (20, False)):
        result = read_landing_file(con, path, landing_contract()["transactions"], D, "x/transactions.csv",
                                   limits=IngestLimits(max_malformed_records=bound))
        assert result.whole_file_quarantined is whole
        if whole:
            assert problems(result)[0][2].startswith("20 of its 40 records are malformed (more or fewer fields than "
                                                     "the header's 11, a character after a closing quote, or bytes "
                                                     "that are not UTF-8)")
        else:
            assert (result.rows_accepted, result.rows_quarantined) == (20, 20)
    messages = ingest(con, tmp_path, "messages", b"message_id,customer_id,received_at,channel,text\n"
                                                 b"M1,C1,2026-11-20T10:00:00Z,chat,hello\n"
                                                 b"M2,C1,2026-11-20T10:00:00Z,chat,my secret caf\xe9\n")
    assert [r[0] for r in messages.accepted.fetchall()] == ["M1"]
    assert list(messages.quarantine["raw_value"]) == ["[withheld: a record of 46 characters with personal text]"]


@pytest.mark.parametrize("shape", ["unquoted", "quoted", "last-without-newline", "crlf"])
def test_a_record_over_the_readers_2_mb_line_limit_is_quarantined_alone(con, tmp_path, shape):
    """DuckDB reads no record over its max_line_size (2,000,000 bytes): such a record is quarantined with its line
    and the reason naming the limit; the other records are read. (A header over 1 MB: the file, see
    test_ingest_core.)"""
    long = b"x" * 2_100_000
    if shape == "quoted":
        long = b'"' + long + b'"'
    data = TX_HEADER.encode() + b"\n" + tx_line(1) + tx_line(2, long) + tx_line(3)
    if shape == "last-without-newline":
        data = TX_HEADER.encode() + b"\n" + tx_line(1) + tx_line(3) + tx_line(2, long)[:-1]
    if shape == "crlf":
        data = data.replace(b"\n", b"\r\n")
    path = tmp_path / "transactions.csv"
    path.write_bytes(data)
    result = read_landing_file(con, path, landing_contract()["transactions"], D, "x/transactions.csv")
    ((line, column, reason),) = problems(result)
    assert (line, column) == (4 if shape == "last-without-newline" else 3, None)
    assert reason.startswith("malformed record: line size over maximum: Maximum line size of 2000000 bytes exceeded")
    assert "\n" not in reason
    assert sorted(r[0] for r in result.accepted.fetchall()) == ["T1", "T3"]
    assert result.quarantine["raw_value"].str.len().max() <= 1000


def test_an_envelope_with_bytes_that_are_not_utf8_loses_only_the_fields_or_records_holding_them(tmp_path):
    """A Latin-1 merchant name quarantined the customer's whole fetch ("not valid UTF-8"). Now the bytes are read
    as U+FFFD with a note: a name holding one is set to null, an id's record quarantined, free text keeps it."""
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=3)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["MerchantDetails"] = {"MerchantName": "CAFE-MARK-1"}
    transactions[1]["TransactionId"] = "TX-MARK-2"
    transactions[2]["TransactionInformation"] = "coffee MARK-3"
    data = (json.dumps(envelope).encode().replace(b"CAFE-MARK-1", b"CAF\xc9").replace(b"TX-MARK-2", b"TX\xff2")
            .replace(b"MARK-3", b"caf\xe9"))
    path = tmp_path / "openbanking" / "C1-alpha.json"
    path.parent.mkdir()
    path.write_bytes(data)
    batch = parse_openbanking_files([path], landing_root=tmp_path, workers=1)
    kept = batch.tables["ob_transactions"]
    assert len(kept) == 2 and kept["merchant_name"].isna().sum() == 1
    assert "coffee caf\ufffd" in set(kept["description"])
    reasons = list(batch.quarantine["reason"])
    assert reasons[0].startswith("not valid UTF-8: 'utf-8' codec can't decode byte 0xc9") and \
        "(3 byte sequences not UTF-8 in the file's strings): each read as U+FFFD" in reasons[0]
    assert sorted(r.split(" contains U+FFFD")[0] for r in reasons[1:]) == ["MerchantDetails.MerchantName",
                                                                          "TransactionId"]
    assert len(batch.tables["ob_accounts"]) == 1


def test_a_lone_surrogate_escape_in_an_envelope_is_replaced_and_noted_not_a_traceback(tmp_path):
    """"\\ud800" is valid JSON syntax but no character: the whole ingest failed with a UnicodeEncodeError traceback
    (the night stopped). Each is replaced by U+FFFD with one note; then the name, id or free-text rule applies. An
    escaped pair (an emoji) is one character and kept."""
    from pipelines import lake
    from pipelines.config import Paths
    from pipelines.ingest.landing import ingest_landing

    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=4)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["MerchantDetails"] = {"MerchantName": "\ud800CAFE"}
    transactions[1]["TransactionInformation"] = "coffee \udcff"
    transactions[2]["TransactionId"] = "T\udbff"
    transactions[3]["TransactionInformation"] = "gift \U0001F381"  # json.dumps writes it as \ud83c\udf81
    folder = tmp_path / "landing" / D.isoformat()
    (folder / "openbanking").mkdir(parents=True)
    (folder / "openbanking" / "C1-alpha.json").write_text(json.dumps(envelope), encoding="utf-8")
    metrics = ingest_landing(Paths(tmp_path), D.isoformat(), folder, business_date=D)
    assert metrics["openbanking"]["rows_quarantined"] == 3
    folder = lake.partition_path(Paths(tmp_path), "bronze", "ob_transactions", load_date=D.isoformat())
    kept = pd.read_parquet(folder)
    assert len(kept) == 3 and kept["merchant_name"].isna().sum() == 1
    assert {"coffee \ufffd", "gift \U0001F381"} <= set(kept["description"])


def test_a_label_holding_the_replacement_character_is_quarantined_free_text_keeps_it(con, tmp_path):
    """U+FFFD stands where upstream lost a character: CAF\\ufffd of CAFE and of CAFE with another accent are one
    merchant; a region of it one group."""
    from pipelines.ingest.core import REPLACEMENT_REASON

    text = (TX_HEADER + "\n" + "T1,A1,2026-11-20T10:00:00Z,-5.00,EUR,caf\ufffd latte,CAF\ufffd,5812,card,IE,\n"
            "T2,A1,2026-11-20T10:00:00Z,-5.00,EUR,caf\ufffd latte,Cafe,5812,card,IE,\n")
    result = ingest(con, tmp_path, "transactions", text)
    assert problems(result) == [(2, "merchant_name", f"merchant_name: {REPLACEMENT_REASON}")]
    assert [r[0] for r in result.accepted.fetchall()] == ["T2"]


# --- hostile but visible text: look-alikes, full-width forms, Zalgo (config/landing.yaml `text`) ------------------

ZALGO = "Z\u0301\u0302\u0303\u0304\u0305\u0306\u0307algo"  # seven combining marks on the Z


def test_a_visible_look_alike_or_zalgo_label_is_quarantined_and_real_scripts_are_kept(con, tmp_path):
    """A region "Lоndon" (Cyrillic о), "Ｌｏｎｄｏｎ" (full-width) or of Zalgo text was accepted: a second group of the
    report that reads as London, or one that draws over the table. Labels are quarantined with the reason; Cyrillic,
    Vietnamese and Devanagari names are kept; a decomposed "Cafe\\u0301" is stored composed (NFC), one group with
    "Café"."""
    from pipelines.ingest.core import FULLWIDTH_WORDS, MIXED_SCRIPT_WORDS

    text = "\n".join(["customer_id,birth_year,region,customer_since,known_vulnerability",
                      "C1,1980,L\u043endon,2020-01-01,", "C2,1980,\uff2c\uff4f\uff4e\uff44\uff4f\uff4e,2020-01-01,",
                      f"C3,1980,{ZALGO},2020-01-01,", "C4,1980,\u041c\u043e\u0441\u043a\u0432\u0430,2020-01-01,",
                      "C5,1980,Ti\u00ea\u0301ng Vi\u00ea\u0323t,2020-01-01,",
                      "C6,1980,\u0915\u094d\u0937\u093f\u0924\u093f\u091c,2020-01-01,", "C7,1980,Cafe\u0301,2020-01-01,",
                      "C8,1980,\u0391\u03b8\u03ae\u03bd\u03b1 Athens,2020-01-01,"]) + "\n"
    result = ingest(con, tmp_path, "customers", text)
    assert problems(result) == [
        (2, "region", f"region: {MIXED_SCRIPT_WORDS}"),
        (3, "region", "region: " + FULLWIDTH_WORDS.replace("{fullwidth}", "FF2C")),
        (4, "region", "region: stacks more than 4 combining marks on one character (Zalgo text; "
                      "text.label_max_combining_marks): it draws over the text around it")]
    regions = {r[0]: r[2] for r in result.accepted.fetchall()}
    assert regions == {"C4": "\u041c\u043e\u0441\u043a\u0432\u0430", "C5": "Ti\u1ebfng Vi\u1ec7t",
                       "C6": "\u0915\u094d\u0937\u093f\u0924\u093f\u091c", "C7": "Caf\u00e9",
                       "C8": "\u0391\u03b8\u03ae\u03bd\u03b1 Athens"}
    text = (TX_HEADER + "\n" + "T1,A1,2026-11-20T10:00:00Z,-5.00,EUR,Films,\uff2e\uff25\uff34\uff26\uff2c\uff29\uff38,4899,card,IE,\n"
            f"T2,A1,2026-11-20T10:00:00Z,-5.00,EUR,{ZALGO} and \uff2e\uff25\uff34,NETFLIX,4899,card,IE,\n")
    result = ingest(con, tmp_path, "transactions", text)
    assert [(line, column) for line, column, _ in problems(result)] == [(2, "merchant_name")]
    assert result.accepted.fetchall()[0][5] == f"{ZALGO} and \uff2e\uff25\uff34"  # free text keeps them


def test_an_id_of_a_look_alike_or_full_width_character_is_refused_naming_it_never_normalised(con, tmp_path):
    text = ("customer_id,birth_year,region,customer_since,known_vulnerability\n"
            "\uff23\uff11,1980,London,2020-01-01,\n\u04211,1980,London,2020-01-01,\nC1,1980,London,2020-01-01,\n")
    result = ingest(con, tmp_path, "customers", text)
    reasons = [reason for _, _, reason in problems(result)]
    assert [r.split(": contains ")[1][:6] for r in reasons] == ["U+FF23", "U+0421"]
    assert all(r.endswith("an id is matched as written, never normalised") for r in reasons)
    assert [r[0] for r in result.accepted.fetchall()] == ["C1"]


def test_an_open_banking_name_that_is_a_look_alike_or_zalgo_loses_its_field_and_free_text_keeps_it(tmp_path):
    envelope = make_envelope("C1", "alpha", FETCHED, n_transactions=4)
    transactions = envelope["transactions"]["Data"]["Transaction"]
    transactions[0]["MerchantDetails"] = {"MerchantName": "P\u0430yPal"}  # Cyrillic а
    transactions[1]["MerchantDetails"] = {"MerchantName": "\uff2e\uff25\uff34\uff26\uff2c\uff29\uff38"}
    transactions[2]["MerchantDetails"] = {"MerchantName": ZALGO}
    transactions[3]["MerchantDetails"] = {"MerchantName": "Cafe\u0301 \u041c\u043e\u0441\u043a\u0432\u0430"}
    transactions[3]["TransactionInformation"] = f"coffee {ZALGO}"
    batch = parse_openbanking_files([write_envelope(tmp_path, envelope)], landing_root=tmp_path, workers=1)
    kept = batch.tables["ob_transactions"]
    assert len(kept) == 4
    assert kept["merchant_name"].dropna().tolist() == ["Caf\u00e9 \u041c\u043e\u0441\u043a\u0432\u0430"]  # NFC
    assert f"coffee {ZALGO}" in set(kept["description"])
    reasons = sorted(batch.quarantine["reason"])
    assert len(reasons) == 3 and all(r.startswith("MerchantDetails.MerchantName ") and
                                      r.endswith("field set to null, record kept") for r in reasons)


def test_the_mixed_script_rule_says_the_same_in_sql_and_python(con):
    """The core rule is RE2's script classes in DuckDB, the open-banking one Python's unicodedata names: every letter
    of the Latin, Greek and Cyrillic blocks beside a Latin or a Cyrillic letter is judged the same by both."""
    from pipelines.ingest.core import MIXED_SCRIPT_REGEX, mixed_script_word, python_mixed_script_regex

    letters = [chr(c) for c in [*range(0x41, 0x7b), *range(0xc0, 0x250), *range(0x370, 0x400), *range(0x400, 0x530),
                                *range(0x1e00, 0x1f00)] if chr(c).isalpha()]
    samples = [w for ch in letters for w in (f"a{ch}", f"{ch}a", f"\u0434{ch}", f"x1{ch}", f"a {ch}")]
    sql = con.execute("select w, regexp_matches(w, ?) from unnest(?) as t(w)", [MIXED_SCRIPT_REGEX, samples]).fetchall()
    disagree = [w for w, found in sql if found != (mixed_script_word(w) is not None)]
    assert not disagree, disagree[:10]
    # and the form of it the expectation suites use (Python's `re`, no script classes)
    python_form = re.compile(python_mixed_script_regex())
    disagree = [w for w, found in sql if found != bool(python_form.search(w))]
    assert not disagree, disagree[:10]


def test_the_zalgo_rule_says_the_same_in_sql_and_in_the_suites(con):
    """RE2's \\pM run and the suites' spelt-out class of combining marks find the same runs: every combining mark
    of the Basic Multilingual Plane, 4 and 5 in a row after a letter."""
    from pipelines.ingest.core import combining_regex, python_combining_regex

    marks = [chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c))[0] == "M"]
    samples = [f"a{m * n}" for m in marks for n in (4, 5)]
    sql = con.execute("select w, regexp_matches(w, ?) from unnest(?) as t(w)", [combining_regex(4), samples]).fetchall()
    python_form = re.compile(python_combining_regex(4))
    disagree = [w for w, found in sql if found != bool(python_form.search(w))]
    assert not disagree, [hex(ord(w[1])) for w in disagree[:10]]
    assert sum(found for _, found in sql) == len(marks)
