"""The columnar path for open-banking transactions (pipelines/ingest/openbanking_fast.py) against the Python reader:
the same frames, quarantine and counts, exactly; every rule the reader checks sends the envelope to the reader."""
from __future__ import annotations

import copy
import json
import random
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.ingest import openbanking_fast
from pipelines.ingest.openbanking import max_amount, parse_openbanking_files
from tests.conftest import REFERENCE
from tests.fixtures.openbanking.synthetic import make_envelope

FETCHED = datetime(2026, 11, 20, 1, 12, tzinfo=timezone.utc)
EXAMPLES = REFERENCE / "obie" / "examples"
RESOURCE_OF = {"accounts": "accounts", "balances": "balances", "transactions": "transactions",
               "standing-orders": "standing_orders", "direct-debits": "direct_debits",
               "scheduled-payments": "scheduled_payments"}


@pytest.fixture(autouse=True)
def no_screen_failure(caplog: pytest.LogCaptureFixture):
    """A failing screen would leave every file to the reader and prove nothing: it fails the test."""
    yield
    assert not [r for r in caplog.records if "columnar screen failed" in r.getMessage()]


def clean_envelope(version: str = "3.1", n: int = 4, seed: int = 0) -> dict[str, Any]:
    env = make_envelope("C000042", "alpha:bank", FETCHED, n, version=version, seed=seed)
    for i, record in enumerate(env["transactions"]["Data"]["Transaction"]):
        record["TransactionReference"] = f"REF/{i}#%"
        record["BankTransactionCode"] = {"Code": "ReceivedCreditTransfer", "SubCode": "DomesticCreditTransfer"}
        record["Balance"] = {"Amount": {"Amount": "100.5", "Currency": "GBP"}, "CreditDebitIndicator": "Debit",
                             "Type": "ClosingBooked"}
    return env


def write(folder: Path, envelopes: list[Any]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, env in enumerate(envelopes):
        path = folder / f"f{i:04d}.json"
        path.write_bytes(env if isinstance(env, bytes) else json.dumps(env).encode())
        paths.append(path)
    return paths


def both_ways(tmp_path: Path, envelopes: list[Any]) -> tuple[Any, Any]:
    landing = tmp_path / "landing"
    files = write(landing / "2026-11-20" / "openbanking", envelopes)
    python = parse_openbanking_files(files, landing, max_quarantine_rows=10000, columnar=False)
    columnar = parse_openbanking_files(files, landing, max_quarantine_rows=10000, columnar=True)
    for table in python.tables:
        pd.testing.assert_frame_equal(python.tables[table], columnar.tables[table], check_exact=True)
    pd.testing.assert_frame_equal(python.quarantine, columnar.quarantine, check_exact=True)
    assert python.stats == columnar.stats
    return python, columnar


def screened_each(envelopes: list[Any]) -> list[bool]:
    """Per envelope, whether the screen lets its transactions through the columnar path (one screen of them all,
    as the ingest runs it on a batch)."""
    data = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in envelopes]
    ascii_ = [(i, d) for i, d in enumerate(data) if openbanking_fast.plain_ascii(d)]
    passed = openbanking_fast.screen_transactions(ascii_, max_amount("transactions"))[1] if ascii_ else {}
    return [i in passed for i in range(len(data))]


def screened(envelope: Any) -> bool:
    """Whether the screen lets the envelope's transactions through the columnar path."""
    return screened_each([envelope])[0]


@pytest.mark.parametrize("version", ["3.1", "4.0"])
def test_a_clean_envelope_goes_columnar_and_gives_the_readers_rows(version: str, tmp_path: Path) -> None:
    env = clean_envelope(version)
    assert screened(env)
    python, _ = both_ways(tmp_path, [env])
    rows = python.tables["ob_transactions"]
    assert len(rows) == 4 and set(rows["api_version"]) == {version}
    assert rows["transaction_id"].str.startswith("ob:alpha%3Abank:").all()
    assert (rows["balance_after"] == Decimal("-100.50")).all()


def test_pages_and_several_files_keep_the_readers_order(tmp_path: Path) -> None:
    paged = clean_envelope(n=6)
    body = paged["transactions"]
    first, second = copy.deepcopy(body), copy.deepcopy(body)
    first["Data"]["Transaction"] = body["Data"]["Transaction"][:3]
    second["Data"]["Transaction"] = body["Data"]["Transaction"][3:]
    paged["transactions"] = [first, second]
    broken = clean_envelope(seed=1)
    broken["transactions"]["Data"]["Transaction"][1]["Amount"]["Amount"] = "1.234"
    assert screened(paged) and not screened(broken)
    both_ways(tmp_path, [clean_envelope(seed=2), paged, broken, clean_envelope("4.0", seed=3), paged])


def _set(path: str, value: Any) -> Any:
    def mutate(record: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        node = record
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                node[parent] = {}
            node = node[parent]
        if value is _DELETE:
            node.pop(key, None)
        else:
            node[key] = value
    return mutate


_DELETE = object()
# One mutation per rule of the transaction reader (pipelines/ingest/openbanking.py _read_transaction and _Record),
# each applied to the second record of a clean envelope (or the first, where named): the screen must send the envelope to the reader.
RULES: dict[str, Any] = {
    "AccountId missing": _set("AccountId", _DELETE), "AccountId null": _set("AccountId", None),
    "AccountId empty": _set("AccountId", ""), "AccountId a number": _set("AccountId", 7),
    "AccountId too long": _set("AccountId", "A" * 41), "AccountId not listed": _set("AccountId", "OTHER"),
    "TransactionId missing (hashed id)": _set("TransactionId", _DELETE),
    "TransactionId too long": _set("TransactionId", "T" * 211),
    "Amount missing": _set("Amount", _DELETE), "Amount a string": _set("Amount", "10.00"),
    "Amount.Amount a JSON number": _set("Amount.Amount", 10),
    "Amount.Amount 3 decimals": _set("Amount.Amount", "10.123"),
    "Amount.Amount negative": _set("Amount.Amount", "-10.00"),
    "Amount.Amount 14 digits": _set("Amount.Amount", "12345678901234"),
    "Amount.Amount above the bound": _set("Amount.Amount", "9999999999999.00"),
    "Amount.Currency lower case": _set("Amount.Currency", "gbp"),
    "Amount.Currency JPY": _set("Amount.Currency", "JPY"), "Amount.Currency missing": _set("Amount.Currency", _DELETE),
    "CreditDebitIndicator unknown": _set("CreditDebitIndicator", "credit"),
    "CreditDebitIndicator missing": _set("CreditDebitIndicator", _DELETE),
    "Status unknown": _set("Status", "Done"), "Status of the other version": _set("Status", "BOOK"),
    "Status missing": _set("Status", _DELETE),
    "BookingDateTime without offset": _set("BookingDateTime", "2026-11-01T10:00:00"),
    "BookingDateTime Z": _set("BookingDateTime", "2026-11-01T10:00:00Z"),
    "BookingDateTime fraction": _set("BookingDateTime", "2026-11-01T10:00:00.5+00:00"),
    "BookingDateTime 30 February": _set("BookingDateTime", "2026-02-30T10:00:00+00:00"),
    "BookingDateTime offset 15h": _set("BookingDateTime", "2026-11-01T10:00:00+15:00"),
    "BookingDateTime year 1": _set("BookingDateTime", "0001-01-01T00:00:00+14:00"),
    "BookingDateTime a date": _set("BookingDateTime", "2026-11-01"),
    "ValueDateTime bad": _set("ValueDateTime", "yesterday"), "ValueDateTime a number": _set("ValueDateTime", 5),
    "TransactionInformation empty": _set("TransactionInformation", ""),
    "TransactionInformation too long": _set("TransactionInformation", "x" * 501),
    "TransactionInformation control character": _set("TransactionInformation", "a\u0007b"),
    "TransactionInformation bidi": _set("TransactionInformation", "a\u202eb"),
    "TransactionInformation non-ASCII": _set("TransactionInformation", "Caf\u00e9"),
    "TransactionReference a list": _set("TransactionReference", ["x"]),
    "MerchantDetails a string": _set("MerchantDetails", "Tesco"),
    "MerchantName full-width": _set("MerchantDetails.MerchantName", "\uff34\uff45\uff53\uff43\uff4f"),
    "MerchantName too long": _set("MerchantDetails.MerchantName", "M" * 351),
    "MerchantCategoryCode 2 digits": _set("MerchantDetails.MerchantCategoryCode", "12"),
    "MerchantCategoryCode a number": _set("MerchantDetails.MerchantCategoryCode", 5411),
    "BankTransactionCode.Code too long": _set("BankTransactionCode.Code", "C" * 36),
    "ProprietaryBankTransactionCode a list": _set("ProprietaryBankTransactionCode", []),
    "Balance without amount": _set("Balance.Amount", _DELETE),
    "Balance.Amount 3 decimals": _set("Balance.Amount.Amount", "1.001"),
    "Balance indicator unknown": _set("Balance.CreditDebitIndicator", "Both"),
    "a v4 field in the first record of a v3 body (v4.0 body, v3.1 codes)": _set("UltimateCreditor", {"Name": "X"}),
}


def _broken(rule: str) -> dict[str, Any]:
    env = clean_envelope()
    RULES[rule](env["transactions"]["Data"]["Transaction"][0 if "first record" in rule else 1])
    return env


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_of_the_reader_sends_the_envelope_to_it(rule: str, tmp_path: Path) -> None:
    env = _broken(rule)
    if rule != "AccountId not listed":  # the listed rule is checked after the screen, on the reader's accounts
        assert not screened(env), rule
    both_ways(tmp_path, [clean_envelope(seed=5), env])


@pytest.mark.parametrize("content", [
    b'{"customer_id": "C1", "provider": "p", "fetched_at": "2026-11-20T01:00:00+00:00", "transactions": {"Data": '
    b'{"Transaction": [{"AccountId": "A", "AccountId": "B"}]}}}',  # a duplicate key
    b'\xef\xbb\xbf{"customer_id": "C1"}',  # a BOM
    b'{"customer_id": "C1", "provider": "p\\u0041"}',  # an escape
    b'{"customer_id": "C1", "transactions": {"Data": {"Transaction": {"AccountId": "A"}}}}',  # records an object
    b'{"customer_id": "C1", "transactions": {"Data": []}}',  # Data an array
    b'{"customer_id": "C1", "transactions": [{"Data": {"Transaction": []}}, 3]}',  # a page that is no object
    b'{"customer_id": "C1", "transactions": "none"}',  # a resource that is a string
    b'{"customer_id": "C1", "transactions": {"Data": {"Transaction": ["x"]}}}',  # a record that is no object
    b'{"customer_id": "C1", "transactions": {"Data": {"Transaction": [{"Status": "Booked"}',  # truncated
])
def test_structural_oddities_are_refused_by_the_screen(content: bytes) -> None:
    assert not screened(content) or b'"AccountId": "A", "AccountId"' in content
    # a duplicate key passes the screen (DuckDB reads the first value): the reader's parse notes it and the
    # columnar rows are then not used, as the file-level test below shows


def test_a_duplicate_key_in_a_clean_record_leaves_the_transactions_to_the_reader(tmp_path: Path) -> None:
    env = clean_envelope()
    text = json.dumps(env).replace('"Status": "Booked"', '"Status": "Booked", "Status": "Pending"', 1)
    assert screened(text.encode())  # the screen alone does not see it ...
    python, _ = both_ways(tmp_path, [text.encode()])  # ... the reader's notes send the file its way
    assert python.quarantine["reason"].str.contains("duplicate key").any()


HOSTILE_VALUES = [None, "", "x" * 600, 12, 12.5, True, [], {}, "10.123", "-1.00", "JPY", "gbp", "BOOK", "Booked",
                  "Pending", "Debit", "Credit", "2026-02-30T10:00:00+00:00", "2026-11-01T10:00:00+14:00",
                  "2026-11-01T10:00:00-14:01", "2026-11-01T10:00:00", "0001-01-01T00:00:00+01:00", "abc\u0000",
                  "\u00e9", "\u202e", "12", "0742", "999999999999.99", "10.10000", "A:B#%", _DELETE]
FIELDS = ["AccountId", "TransactionId", "Amount", "Amount.Amount", "Amount.Currency", "CreditDebitIndicator", "Status",
          "BookingDateTime", "ValueDateTime", "TransactionInformation", "TransactionReference", "MerchantDetails",
          "MerchantDetails.MerchantName", "MerchantDetails.MerchantCategoryCode", "BankTransactionCode.Code",
          "BankTransactionCode.SubCode", "ProprietaryBankTransactionCode", "ProprietaryBankTransactionCode.Code",
          "Balance", "Balance.Amount.Amount", "Balance.CreditDebitIndicator", "CategoryPurposeCode"]


@pytest.mark.parametrize("seed", range(4))
def test_random_mutations_give_the_readers_output(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    envelopes: list[Any] = []
    for i in range(60):
        env = clean_envelope(rng.choice(["3.1", "4.0"]), n=rng.randint(1, 5), seed=i)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            records = env["transactions"]["Data"]["Transaction"]
            _set(rng.choice(FIELDS), rng.choice(HOSTILE_VALUES))(rng.choice(records))
        if rng.random() < 0.25:  # a list of pages, now and then a broken one
            body, records = env["transactions"], env["transactions"]["Data"]["Transaction"]
            pages = [copy.deepcopy(body) for _ in range(2)]
            pages[0]["Data"]["Transaction"], pages[1]["Data"]["Transaction"] = records[:1], records[1:]
            if rng.random() < 0.3:
                pages[rng.randrange(2)]["Data"] = rng.choice([[], None, "x", {"Transaction": None}, {}])
            env["transactions"] = pages
        elif rng.random() < 0.05:
            env["transactions"] = rng.choice([None, [], "x", {"Data": {"Transaction": {}}}, {"Data": {}}])
        if rng.random() < 0.2:  # the same fetch twice: duplicates across files
            envelopes.append(copy.deepcopy(env))
        envelopes.append(env)
    python, columnar = both_ways(tmp_path, envelopes)
    assert len(python.tables["ob_transactions"]) > 0
    through = sum(screened_each(envelopes))
    assert 0 < through < len(envelopes)  # both paths were taken


def _example_envelopes() -> list[Any]:
    envelopes = []
    for path in sorted(EXAMPLES.glob("obie_*.json")):
        resource = RESOURCE_OF[path.name.split("_")[2]]
        body = json.loads(path.read_text(encoding="utf-8"))
        data = body.get("Data") if isinstance(body, dict) else None
        records = next(iter(data.values()), []) if isinstance(data, dict) and data else []
        ids = sorted({r.get("AccountId") for r in (records if isinstance(records, list) else [records])
                      if isinstance(r, dict) and isinstance(r.get("AccountId"), str)})
        env: dict[str, Any] = {"customer_id": "C000042", "provider": "alphabank", "consent_id": "c1",
                               "fetched_at": "2026-11-20T01:12:00+00:00",
                               "accounts": {"Data": {"Account": [{"AccountId": a, "Currency": "GBP"} for a in ids]}}}
        env[resource] = body
        envelopes.append(json.dumps(env).encode())
    return envelopes


def test_the_official_examples_give_the_readers_output(tmp_path: Path) -> None:
    envelopes = _example_envelopes()
    assert len(envelopes) >= 20
    python, _ = both_ways(tmp_path, envelopes)
    assert len(python.tables["ob_transactions"]) > 0
