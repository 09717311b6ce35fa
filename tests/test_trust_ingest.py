"""Hostile landing files stay harmless (issue 12, items 2-4): links and special files are refused unread, no
quarantine row copies the bytes of a file that cannot be parsed and every raw value is capped, decompression bombs
and oversized files are stopped while streaming, and values that used to slip through (a NUL in a text, a +25:00
offset, an empty Parquet string) get the same verdict in CSV, CSV.gz and Parquet."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tracemalloc
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.contract import landing_contract
from pipelines.errors import LandingError
from pipelines.ingest import limits as limits_module
from pipelines.ingest.core import read_landing_file
from pipelines.ingest.landing import ingest_landing
from pipelines.ingest.limits import IngestLimits

GOOD = Path(__file__).parent / "fixtures" / "landing" / "good"
D = date(2026, 11, 20)
DAY = D.isoformat()
SECRET = "SECRET-0f9e8d7c"
TX_COLUMNS = ["transaction_id", "account_id", "booked_at", "amount", "currency", "description", "merchant_name", "mcc",
              "channel", "country", "counterparty_id"]
FORMATS = ["csv", "csv.gz", "parquet"]


def landing_day(paths: Paths) -> Path:
    folder = paths.landing_day(DAY)
    shutil.copytree(GOOD, folder)
    return folder


def load_quarantine(paths: Paths, load_date: str = DAY) -> pd.DataFrame:
    folder = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    con = lake.connect()
    try:
        return con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").df()
    finally:
        con.close()


def bronze_ids(paths: Paths, table: str, column: str) -> list:
    folder = lake.partition_path(paths, "bronze", table, load_date=DAY)
    con = lake.connect()
    try:
        return [r[0] for r in con.execute(f"select {column} from read_parquet('{folder}/*.parquet') "
                                          f"order by all").fetchall()]
    finally:
        con.close()


def tx_line(transaction_id: str, description: str = "TESCO", booked_at: str = "2026-11-20T08:15:00+00:00") -> str:
    return f"{transaction_id},A1,{booked_at},-12.50,GBP,{description},Tesco,5411,card,GB,"


def no_secret_anywhere(frame: pd.DataFrame) -> None:
    for column in ("file", "column_name", "reason", "raw_value"):
        for value in frame[column].dropna():
            assert SECRET not in str(value), (column, value)


def envelope(customer_id: str, account_id: str, marker: str = "") -> dict:
    return {"customer_id": customer_id, "provider": "alphabank", "consent_id": "c1",
            "fetched_at": "2026-11-20T01:00:00+00:00",
            "accounts": {"Data": {"Account": [{"AccountId": account_id, "Currency": "GBP", "AccountType": "Personal",
                                               "AccountSubType": "CurrentAccount", "Nickname": marker or "Bills"}]}},
            "transactions": {"Data": {"Transaction": [{
                "AccountId": account_id, "TransactionId": "T1", "Amount": {"Amount": "1.00", "Currency": "GBP"},
                "CreditDebitIndicator": "Debit", "Status": "Booked", "BookingDateTime": "2026-11-19T10:00:00+00:00",
                "TransactionInformation": marker or "coffee"}]}}}


# --- item 2: nothing outside the landing folder is read --------------------------------------------------------

def test_links_and_special_files_are_refused_unread(paths, tmp_path):
    folder = landing_day(paths)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret_accounts = elsewhere / "accounts.csv"
    secret_accounts.write_text("account_id,customer_id,product,currency,opened_on,closed_on,overdraft_limit,"
                               f"credit_limit\nA999,{SECRET},current,GBP,2020-01-01,,,\n", encoding="utf-8")
    (folder / "accounts-0002.csv").symlink_to(secret_accounts)
    # a link to a file inside the landing folder is refused too: links are never followed
    (folder / "transactions-0002.csv").symlink_to(folder / "transactions.csv")
    # a link to a system file: its first line must not reach the quarantine
    (folder / "customers-0002.csv").symlink_to("/etc/passwd")
    os.mkfifo(folder / "balances-0002.csv")  # a FIFO would block the reader forever
    ob_real = folder / "openbanking"
    ob_real.mkdir()
    outside_json = elsewhere / "C000009-alphabank.json"
    outside_json.write_text(json.dumps(envelope("C000009", "X9", SECRET)), encoding="utf-8")
    (ob_real / "C000009-alphabank.json").symlink_to(outside_json)
    (folder / "more").symlink_to(elsewhere, target_is_directory=True)

    metrics = ingest_landing(paths, DAY, folder, business_date=D)

    q = load_quarantine(paths)
    no_secret_anywhere(q)
    refused = q[q["reason"].str.contains("symbolic link|not a regular file", regex=True)]
    assert sorted(refused["file"]) == [f"{DAY}/accounts-0002.csv", f"{DAY}/balances-0002.csv",
                                       f"{DAY}/customers-0002.csv", f"{DAY}/more",
                                       f"{DAY}/openbanking/C000009-alphabank.json", f"{DAY}/transactions-0002.csv"]
    assert refused["raw_value"].isna().all() and refused["line"].isna().all()
    assert "root" not in " ".join(q["reason"].dropna()) + " ".join(q["raw_value"].dropna())
    assert "A999" not in bronze_ids(paths, "accounts", "account_id")
    assert bronze_ids(paths, "transactions", "transaction_id") == [f"T000000{i}" for i in range(1, 6)]
    assert bronze_ids(paths, "ob_accounts", "account_id") == []
    assert metrics["openbanking"]["files"] == 0
    assert sorted(metrics["refused_files"]) == sorted(refused["file"])
    assert metrics["kinds"]["accounts"]["files"] == 1  # the refused file is not counted as a file of its kind


def test_a_linked_openbanking_folder_is_refused_whole(paths, tmp_path):
    folder = landing_day(paths)
    elsewhere = tmp_path / "ob"
    elsewhere.mkdir()
    (elsewhere / "C000009-alphabank.json").write_text(json.dumps(envelope("C000009", "X9", SECRET)), encoding="utf-8")
    (folder / "openbanking").symlink_to(elsewhere, target_is_directory=True)
    metrics = ingest_landing(paths, DAY, folder, business_date=D)
    q = load_quarantine(paths)
    no_secret_anywhere(q)
    assert q.loc[q["file"] == f"{DAY}/openbanking", "reason"].str.startswith("symbolic link").all()
    assert metrics["openbanking"]["files"] == 0 and bronze_ids(paths, "ob_transactions", "transaction_id") == []


def test_a_linked_day_folder_is_refused_with_a_clear_error(paths, tmp_path):
    real = tmp_path / "real-day"
    shutil.copytree(GOOD, real)
    paths.landing.mkdir(parents=True)
    paths.landing_day(DAY).symlink_to(real, target_is_directory=True)
    with pytest.raises(LandingError, match="symbolic link"):
        ingest_landing(paths, DAY, paths.landing_day(DAY), business_date=D)


def _set_ingest(monkeypatch, **values) -> None:
    """Override settings()['ingest'] keys for the ingest modules."""
    from pipelines import config

    original = config.settings()
    patched = original | {"ingest": original["ingest"] | values}
    for module in ("pipelines.config", "pipelines.ingest.landing", "pipelines.ingest.limits",
                   "pipelines.conform"):
        monkeypatch.setattr(f"{module}.settings", lambda: patched)


def test_raw_values_are_capped_as_configured(paths, monkeypatch):
    _set_ingest(monkeypatch, quarantine_raw_value_max_chars=12)
    folder = landing_day(paths)
    long_id = "X" * 60 + "!"  # not an id, and longer than the cap
    (folder / "balances-0002.csv").write_text(f"account_id,as_of,balance\n{long_id},2026-11-20,1\n",
                                              encoding="utf-8")
    ob = folder / "openbanking"
    ob.mkdir()
    env = envelope("C000002", "X2")
    env["transactions"]["Data"]["Transaction"][0]["Amount"]["Amount"] = "1" * 40  # not an OBIE amount
    (ob / "C000002-alphabank.json").write_text(json.dumps(env), encoding="utf-8")
    ingest_landing(paths, DAY, folder, business_date=D)
    q = load_quarantine(paths)
    assert len(q[q["raw_value"].notna()]) >= 2
    assert q["raw_value"].dropna().str.len().max() <= 12
    assert q.loc[q["file"].str.endswith("balances-0002.csv"), "raw_value"].tolist() == [long_id[:12]]


@pytest.mark.parametrize("name, content", [
    ("transactions-0002.csv", b"\xff\xfe" + SECRET.encode() + b"\x00\x01binary,junk\n" * 3),
    ("transactions-0002.csv", ("transaction_id,account_id\n" + SECRET + ",caf\xe9\n").encode("latin-1")),
    ("transactions-0002.csv.gz", gzip.compress((",".join(TX_COLUMNS) + "\n" + SECRET * 5000).encode())[:200]),
    ("transactions-0002.parquet", b"PAR1" + SECRET.encode() + b"PAR1"),
    ("openbanking/C1-x.json", b'{"customer_id": "C1", "provider": "' + SECRET.encode() + b'", oops}'),
    ("openbanking/C1-y.json", b'[' + SECRET.encode() + b']'),
    ("openbanking/C1-z.json", SECRET.encode() + b"\xff\xfe"),
])
def test_no_byte_of_an_unparseable_file_reaches_the_quarantine(paths, name, content):
    folder = landing_day(paths)
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    ingest_landing(paths, DAY, folder, business_date=D)
    q = load_quarantine(paths)
    mine = q[q["file"] == f"{DAY}/{name}"]
    assert len(mine) >= 1 and mine["raw_value"].isna().all()
    no_secret_anywhere(q)


# --- item 3: decompression bombs and oversized files ----------------------------------------------------------

def _ingest_file(con, path: Path, kind: str = "transactions", limits: IngestLimits | None = None):
    return read_landing_file(con, path, landing_contract()[kind], D, f"{DAY}/{path.name}", limits=limits)


def _newline_gzip(path: Path, megabytes: int) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write((",".join(TX_COLUMNS) + "\n").encode())
        block = b"\n" * (1 << 20)
        for _ in range(megabytes):
            handle.write(block)
    return path


@pytest.fixture
def con():
    connection = lake.connect()
    yield connection
    connection.close()


@pytest.mark.parametrize("bound, value, reason", [
    ("max_lines", 1000, "more than 1000 lines"),
    ("max_decompressed_bytes", 100_000, "more than 100000 bytes"),
    ("max_file_bytes", 1000, "bytes on disk"),
])
def test_a_newline_bomb_is_stopped_at_each_bound_while_streaming(con, tmp_path, bound, value, reason):
    path = _newline_gzip(tmp_path / "transactions.csv.gz", 2)
    limits = IngestLimits(**{bound: value})
    result = _ingest_file(con, path, limits=limits)
    assert result.whole_file_quarantined
    assert reason in result.quarantine["reason"].iloc[0], result.quarantine["reason"].iloc[0]
    assert result.quarantine["raw_value"].isna().all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_bounded_the_same_way(con, tmp_path, fmt):
    rows = [{c: "" for c in TX_COLUMNS} | {"transaction_id": f"T{i}", "account_id": "A1", "amount": "1.00",
                                           "booked_at": "2026-11-20T10:00:00Z", "currency": "GBP", "channel": "fee"}
            for i in range(50)]
    path = write_rows(tmp_path, fmt, rows)
    assert not _ingest_file(con, path, limits=IngestLimits(max_lines=51 if fmt != "parquet" else 50)
                            ).whole_file_quarantined
    result = _ingest_file(con, path, limits=IngestLimits(max_lines=20))
    assert result.whole_file_quarantined and "more than 20" in result.quarantine["reason"].iloc[0]
    result = _ingest_file(con, path, limits=IngestLimits(max_file_bytes=100))
    assert result.whole_file_quarantined and "bytes on disk" in result.quarantine["reason"].iloc[0]
    result = _ingest_file(con, path, limits=IngestLimits(max_decompressed_bytes=500))
    assert result.whole_file_quarantined and "more than 500 bytes" in result.quarantine["reason"].iloc[0]


def test_json_envelopes_take_the_same_file_bound(paths, monkeypatch):
    _set_ingest(monkeypatch, max_json_bytes=200)
    folder = landing_day(paths)
    (folder / "openbanking").mkdir()
    (folder / "openbanking" / "C000002-alphabank.json").write_text(json.dumps(envelope("C000002", "X2")))
    ingest_landing(paths, DAY, folder, business_date=D)
    q = load_quarantine(paths)
    assert q.loc[q["file"] == f"{DAY}/openbanking/C000002-alphabank.json", "reason"].str.contains(
        "over the limit of 200 bytes").all()


def test_blank_lines_within_the_bounds_cost_flat_memory(con, tmp_path):
    """8 MB of newlines (8 million blank lines, within the default bounds) used to be numbered in arrays of 8 bytes
    per newline (hundreds of MB); now the file is streamed in chunks and only its records are numbered."""
    path = _newline_gzip(tmp_path / "transactions.csv.gz", 8)
    tracemalloc.start()
    try:
        result = _ingest_file(con, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.whole_file_quarantined and result.rows_read == 0
    assert peak < 48 * 2**20, f"peak Python memory {peak / 2**20:.0f} MB"


STRAY_QUOTE = tx_line("T4", description='12" ruler') + ",x"  # parity breaks: numbered by the csv module


@pytest.mark.parametrize("too_many", ["T4,A1,2026-11-20T08:15:00Z,-1.00,GBP,x,y,5411,card,GB,,extra", "stray-quote"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_streamed_record_numbering_is_exact_across_chunk_boundaries(con, tmp_path, monkeypatch, chunk, too_many):
    monkeypatch.setattr(limits_module, "CHUNK_BYTES", chunk)
    text = "\r\n".join([",".join(TX_COLUMNS), tx_line("T1", description='"one\r\ntwo\r\nthree"'), "", "T2,A1",
                         tx_line("T3"), STRAY_QUOTE if too_many == "stray-quote" else too_many, tx_line("T5")]) + "\r\n"
    path = tmp_path / "transactions.csv"
    path.write_bytes(text.encode())
    result = _ingest_file(con, path)
    assert [(int(r["line"]), r["reason"].split(":")[0]) for _, r in result.quarantine.iterrows()] == [
        (6, "malformed record"), (8, "malformed record")]
    assert [(r["transaction_id"], int(r["source_line"])) for r in result.accepted.df().to_dict("records")] == [
        ("T1", 2), ("T3", 7), ("T5", 9)]


# --- item 4: the same verdict in CSV, CSV.gz and Parquet -------------------------------------------------------

def write_rows(folder: Path, fmt: str, rows: list[dict], kind: str = "transactions") -> Path:
    """The same rows as a CSV (empty string = empty field), a CSV.gz or a Parquet file of VARCHAR columns (empty
    string = '')."""
    frame = pd.DataFrame(rows, dtype="object")
    path = folder / f"{kind}.{fmt}"
    if fmt == "parquet":
        con = duckdb.connect()
        con.register("rows_frame", frame)
        casts = ", ".join(f"cast({c} as varchar) as {c}" for c in frame.columns)
        con.execute(f"copy (select {casts} from rows_frame) to '{path}' (format parquet)")
        con.close()
    else:
        text = frame.to_csv(index=False, lineterminator="\n")
        path.write_bytes(gzip.compress(text.encode()) if fmt == "csv.gz" else text.encode())
    return path


def row(transaction_id: str, **values) -> dict:
    base = {"transaction_id": transaction_id, "account_id": "A1", "booked_at": "2026-11-20T10:00:00+00:00",
            "amount": "-1.00", "currency": "GBP", "description": "coffee", "merchant_name": "Cafe", "mcc": "5814",
            "channel": "card", "country": "GB", "counterparty_id": "CP1"}
    return base | values


VALUE_CASES = [
    row("NUL", description="cof\x00fee"),
    row("CTRL", merchant_name="Caf\x1be"),
    row("OFF25", booked_at="2026-11-20T10:00:00+25:00"),
    row("OFF1430", booked_at="2026-11-20T10:00:00+14:30"),
    row("OFFMIN", booked_at="2026-11-20T10:00:00+05:60"),
    row("HOUR24", booked_at="2026-11-20T24:00:00Z"),
    row("OK14", booked_at="2026-11-20T10:00:00+14:00"),
    row("OKM14", booked_at="2026-11-19T10:00:00-14:00"),
    row("OK0530", booked_at="2026-11-20T10:00:00+0530"),
    row("EMPTY", description="", merchant_name="", mcc="", country="", counterparty_id=""),
    row("TAB", description="a\tb"),
]
EXPECTED = {
    "NUL": ("description", "description: contains a control character"),
    "CTRL": ("merchant_name", "merchant_name: contains a control character"),
    "OFF25": ("booked_at", "booked_at: zone offset out of range"),
    "OFF1430": ("booked_at", "booked_at: zone offset out of range"),
    "OFFMIN": ("booked_at", "booked_at: zone offset out of range"),
    "HOUR24": ("booked_at", "booked_at: hour out of range"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_that_used_to_slip_through_get_one_verdict_in_every_format(con, tmp_path, fmt):
    result = _ingest_file(con, write_rows(tmp_path, fmt, VALUE_CASES))
    got = {}
    for _, q in result.quarantine.iterrows():
        got[VALUE_CASES[int(q["line"]) - (2 if fmt != "parquet" else 1)]["transaction_id"]] = (
            q["column_name"], q["reason"])
    assert set(got) == set(EXPECTED)
    for key, (column, prefix) in EXPECTED.items():
        assert got[key][0] == column and got[key][1].startswith(prefix), (key, got[key])
    kept = {r["transaction_id"]: r for r in result.accepted.df().astype(object).to_dict("records")}
    assert sorted(kept) == ["EMPTY", "OK0530", "OK14", "OKM14", "TAB"]
    empty = kept["EMPTY"]
    assert all(pd.isna(empty[c]) for c in ("description", "merchant_name", "mcc", "country", "counterparty_id"))
    assert str(kept["OKM14"]["booking_date"])[:10] == "2026-11-19"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_required_parquet_string_is_missing_as_in_csv(con, tmp_path, fmt):
    result = _ingest_file(con, write_rows(tmp_path, fmt, [row("T1", account_id=""), row("T2")]))
    assert result.quarantine[["column_name", "reason"]].values.tolist() == [
        ["account_id", "account_id: required value is missing"]]


def test_openbanking_values_follow_the_same_rules(reference):
    """The real OBIE example transaction, then the same with an impossible offset, a NUL in its text, a control
    character in its AccountId: the same rules as the core files (record quarantined / field set to null)."""
    from pipelines.ingest.openbanking import ObContext, parse_resource

    example = json.loads((reference / "obie" / "examples" / "obie_v3.1.11_transactions_ex1.json").read_text())
    base = example["Data"]["Transaction"][0]
    records = [base | {"TransactionId": "ok"},
               base | {"TransactionId": "off", "BookingDateTime": "2017-04-05T10:43:07+14:30"},
               base | {"TransactionId": "nul", "TransactionInformation": "Cash\u0000 from Aubrey"},
               base | {"TransactionId": "ctl", "AccountId": "22289\u001b"}]
    context = ObContext(customer_id="C1", provider="alphabank", consent_id=None,
                        fetched_at=pd.Timestamp("2026-11-20T01:00:00Z").to_pydatetime(), source_file="x.json")
    parsed = parse_resource("transactions", {"Data": {"Transaction": records}}, context)
    rows = {r["provider_transaction_id"]: r for r in parsed.rows}
    assert sorted(rows) == ["nul", "ok"]
    assert rows["nul"]["description"] is None and rows["ok"]["description"] == "Cash from Aubrey"
    reasons = {q["column_name"]: q["reason"] for q in parsed.quarantine}
    assert reasons["transactions.Data.Transaction[1].BookingDateTime"].startswith(
        "BookingDateTime '2017-04-05T10:43:07+14:30' has a zone offset out of range")
    assert reasons["transactions.Data.Transaction[2].TransactionInformation"].startswith(
        "TransactionInformation contains a control character")
    assert reasons["transactions.Data.Transaction[3].AccountId"].endswith("record quarantined")


@pytest.mark.parametrize("fetched_at", ["2026-11-20T01:00:00+15:00", "2026-11-20T01:00:00-14:01"])
def test_an_envelope_with_an_impossible_offset_is_quarantined(tmp_path, fetched_at):
    from pipelines.ingest.openbanking import parse_envelope_file

    path = tmp_path / "C1-alphabank.json"
    path.write_text(json.dumps(envelope("C1", "X1") | {"fetched_at": fetched_at}))
    result = parse_envelope_file(path, "x.json")
    assert result.file_rejected
    assert "zone offset out of range" in result.quarantine[0]["reason"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_reader_never_follows_a_link_itself(con, tmp_path, monkeypatch, fmt):
    """Defence in depth behind the landing folder's check: the file reader refuses a link too, and a file replaced
    while it is read is refused rather than half trusted."""
    real = write_rows(tmp_path, fmt, [row("T1"), row("T2")])
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(real)
    result = _ingest_file(con, link)
    assert result.whole_file_quarantined and result.rows_accepted == 0
    assert result.quarantine["reason"].iloc[0].startswith("not a regular file")

    original = limits_module.identity
    calls = []

    def replaced_midway(path):
        calls.append(path)
        found = original(path)
        return found if len(calls) == 1 else (found[0], found[1] + 1, *found[2:])

    monkeypatch.setattr(limits_module, "identity", replaced_midway)
    result = _ingest_file(con, real)
    assert result.whole_file_quarantined and "changed while it was read" in result.quarantine["reason"].iloc[0]
