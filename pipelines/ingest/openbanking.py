"""Open-banking ingest: aggregator envelopes of UK Open Banking (OBIE) Read/Write API v3.1 / v4.0 bodies to bronze rows.

Input (DESIGN.md section 4): `landing/<day>/openbanking/*.json`, one envelope per customer and provider fetch:
`{"customer_id", "provider", "consent_id", "fetched_at", "accounts", "balances", "transactions",
"standing_orders", "direct_debits", "scheduled_payments"}`. Each resource is one OBIE response body
(`{"Data": {...}, "Links": {...}, "Meta": {...}}`), a list of page bodies, or absent/null (no rows, no fault).

Version. Detected per body (page), not per file: first from structure (v4.0 `AccountTypeCode`/`AccountCategory`,
`MandateRelatedInformation`, v4-only transaction fields; v3.1 `AccountType`/`AccountSubType`, a top-level
`Frequency` or `MandateIdentification`), then from enum codes (transaction `Status` BOOK/PDNG/RJCT/FUTR/INFO vs
Booked/Pending/Rejected, balance `Type` CLBD/ITAV/... vs ClosingBooked/InterimAvailable/..., mandate status
ACTV/CANC/EXPI/SUSP vs Active/Inactive), then from the version in `Links.Self`, else '3.1'. Codes of either version
are read in any body (one mapping, below); a code of the other version is noted in the quarantine ("value kept").

Canonical rows (bronze `ob_*`). Every row also carries customer_id, provider, consent_id, fetched_at, api_version
('3.1' or '4.0') and source_file (path relative to `landing/`).
- ob_accounts: account_id (`ob:<provider>:<AccountId>`), provider_account_id, currency, account_type (raw v3
  AccountType / v4 AccountCategory: Personal, Business), account_subtype (raw v3 AccountSubType / v4 AccountTypeCode),
  product (current, savings, credit_card, loan, mortgage; null when the subtype has no core equivalent, e.g. EMoney,
  Wallet, PrePaidCard, ODFT), nickname, opening_date (date as written), status (enabled, disabled, deleted, pending,
  proforma).
- ob_balances: account_id, balance_type (one vocabulary: the v3.1 names, v4.0 codes mapped: CLBD -> ClosingBooked,
  ITAV -> InterimAvailable, XPCD -> Expected, PRCD -> PreviouslyClosedBooked, ...), amount (signed: Debit is negative),
  currency, balance_at, credit_line_amount (sum of the CreditLine amounts with Included = true; 0.00 when the balance
  lists credit lines but none is included; null when it lists none).
- ob_transactions: transaction_id (`ob:<provider>:<AccountId>:<TransactionId>`; without a TransactionId,
  `ob:<provider>:<AccountId>:#<sha1>` over AccountId, BookingDateTime as written, amount, currency,
  CreditDebitIndicator, TransactionInformation, TransactionReference, proprietary code, merchant and the occurrence
  number of that fingerprint in the fetch, so two identical coffees stay two rows and a re-fetch maps to the same ids),
  provider_transaction_id, account_id, status (booked, pending, rejected, future, info), booked_at, value_at,
  booking_date (the calendar date as written in BookingDateTime, i.e. the bank's local date), amount (signed: Debit is
  negative), currency, description (TransactionInformation), merchant_name, mcc (4 characters, a 3-digit code gets its
  leading zero), bank_transaction_code (`Code/SubCode`), proprietary_code (ProprietaryBankTransactionCode.Code),
  balance_after (signed, nullable), reference (TransactionReference).
- ob_standing_orders: account_id, standing_order_id, frequency (raw: v3.1 `Frequency`, v4.0
  `MandateRelatedInformation.Frequency.Type`), frequency_count_per_period (v4.0 CountPerPeriod, nullable),
  first_payment_at, next_payment_at, last_payment_at, final_payment_at (v4.0 first/final from
  MandateRelatedInformation), next_payment_amount, currency, status (active, inactive, cancelled, expired, suspended),
  creditor_name (CreditorAccount.Name), reference (Reference, else RemittanceInformation.Unstructured[0]).
- ob_direct_debits: account_id, direct_debit_id, mandate_id, name, status (same vocabulary), previous_payment_at,
  previous_payment_amount, currency, frequency (raw, if present), frequency_count_per_period.
- ob_scheduled_payments: account_id, scheduled_payment_id, execution_at (ScheduledPaymentDateTime), amount, currency,
  payment_type (ScheduledType: execution or arrival), reference, creditor_name.
Signs: every amount is signed from the account holder's side, negative is money out, as in the core contract. So
next_payment_amount, previous_payment_amount and scheduled payment amounts (payments out of the account) are negative;
credit_line_amount is a limit and stays positive.

Types. In `ParsedResource.rows` amounts are `decimal.Decimal` with exactly 2 decimals, timestamps are aware `datetime`
in UTC, dates are `datetime.date`. In `ObBatch.tables` amounts are `pd.ArrowDtype(pa.decimal128(18, 2))` (DuckDB
DECIMAL(18,2)), timestamps `datetime64[us, UTC]`, dates `pd.ArrowDtype(pa.date32())` (DuckDB DATE), text `str`,
counts `Int64`. Every table has all its columns even when empty.

Amounts. OBIE sends unsigned decimal strings with up to 5 decimals; the lake stores DECIMAL(18,2). Trailing zeros are
fine ("10.000" is 10.00); an amount with more significant decimals than min(2, the currency's ISO 4217 minor unit) is
not rounded (rounding money silently is wrong): the record is quarantined (JPY "100.5" too). An amount sent as a JSON
number instead of a string is read exactly (JSON numbers are parsed as Decimal, never float) and noted; a negative or
malformed amount quarantines the record.

Bad input: nothing crashes, nothing valid is lost, nothing is dropped silently. Quarantine rows have file, line (null
for JSON), column_name (the JSON path, e.g. `transactions[1].Data.Transaction[3].Amount.Amount`), reason (what is
wrong, then `; ` and what was done) and raw_value (at most 1000 characters here; the quarantine writer cuts it to
ingest.quarantine_raw_value_max_chars). What is done:
- whole file (`; file quarantined`, column_name null): over max_bytes (not read), not UTF-8, not valid JSON (the
  parser's message and position; raw_value null: no byte of such a file is copied), NaN/Infinity, nesting deeper
  than max_depth (checked on the raw bytes before parsing, so a 10,000-deep file never reaches the recursive parser),
  not an object (raw_value null too), an envelope without a usable customer_id (an id of the contract), provider or
  fetched_at (with an offset in -14:00..+14:00): its rows could not be attributed (one row per fault, the reason
  names the key). consent_id may be absent (null): consent is enforced from
  consents.csv, not from the envelope. Unknown envelope keys are ignored. An unexpected error while reading one file
  (a bug) also quarantines just that file, and is logged.
- resource or page (`; resource quarantined` / `; page quarantined`): not an object or a list of objects, no Data
  object, Data.<records> neither an array nor an object. Other pages and resources of the file are still read.
- record (`; record quarantined`): a fault in what the row cannot be right without: AccountId; for transactions
  Amount, CreditDebitIndicator, Status, BookingDateTime (a zone-less date-time included: the contract requires an
  offset, and an offset outside -14:00..+14:00 or not in whole minutes); for balances Amount, CreditDebitIndicator,
  Type, DateTime; for scheduled payments InstructedAmount and ScheduledPaymentDateTime; a required text (AccountId)
  with a control character. And, in an envelope, any record of balances, transactions, standing orders, direct
  debits or scheduled payments on an account the envelope's `accounts` resource does not list: an envelope speaks
  only for its own customer's accounts it lists (column `<path>.AccountId`). One quarantine row per fault; the other
  records are kept.
- field (`; field set to null, record kept`): a fault in an optional or descriptive field, e.g. OpeningDate
  "01-05-2002" (not ISO 8601, and day-first or month-first cannot be told apart) gives opening_date null and keeps the
  account; an unknown optional code (account or mandate status), a bad ValueDateTime, MCC or running balance, a text
  holding a control character (NUL, ESC, ...: the core files' rule for text).
- repaired and noted (`; read as one element`, `; value kept`, `; kept as written`, `; last value used`): Data.Balance
  (or any Data.<records>) as an object instead of an array, an amount as a JSON number, a code of the other version,
  a Frequency that does not match the OBIE pattern (kept raw: it is stored as written), a duplicate JSON key.
Not validated: fields this module does not read (agents, addresses, proxies, SupplementaryData, Links, Meta) and
additional properties.

Columnar transactions. `parse_openbanking_files(..., columnar=True)` (the ingest: config/segone.yaml
ingest.openbanking_columnar) lets DuckDB read the transactions of the envelopes a conservative screen passes
(pipelines/ingest/openbanking_fast.py): plain ASCII files whose every transaction record this module would accept
as it is, read here without a single note up to the transactions resource, on listed accounts. Every rule, note and
quarantine row still comes from this module; the frames are the same either way (tests/test_openbanking_fast.py).

Deduplication. `parse_resource` and `parse_envelope_file` keep every record they read. `parse_openbanking_files`
deduplicates within the batch, keeping the row of the latest fetched_at (ties: the later file in `files`, then the
later record): transactions on (customer_id, transaction_id) - overlapping fetches re-send the same transaction, and its latest
state wins (pending in the morning, booked in the evening: booked); balances on (customer_id, account_id, balance_type, balance_at);
accounts on (customer_id, account_id); standing orders, direct debits and scheduled payments on (customer_id,
account_id, <their id>) when the id is present. customer_id is part of every key so an account listed by two
customers is never collapsed across them here: conform sees both claims and quarantines the conflict (one holder per
account; docs/architecture.md, "Conform"). Across nights the conform stage deduplicates on transaction_id.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract import landing_contract, openbanking_lengths
from pipelines.ingest.core import (BIDI_REASON, BIDI_REGEX, INSTANT_OUT_OF_RANGE, REPLACEMENT_REASON,
                                   REPLACEMENT_REGEX, invisible_reason, lookalike_reason)

log = logging.getLogger(__name__)

RESOURCES = ("accounts", "balances", "transactions", "standing_orders", "direct_debits", "scheduled_payments")
DATA_KEYS = {"accounts": "Account", "balances": "Balance", "transactions": "Transaction",
             "standing_orders": "StandingOrder", "direct_debits": "DirectDebit",
             "scheduled_payments": "ScheduledPayment"}
TABLES = {resource: f"ob_{resource}" for resource in RESOURCES}

DEFAULT_MAX_BYTES = 50 * 2**20
DEFAULT_MAX_DEPTH = 64
RAW_VALUE_LIMIT = 1000
FAST_BATCH_FILES = 1024  # envelopes the columnar path reads at once (bounded memory: about 20 MB of JSON here)
MIN_FILES_PER_WORKER = 64  # below this a process pool costs more than it saves
UTC = timezone.utc
CENT = Decimal("0.01")

RECORD_REJECTED = "record quarantined"
FIELD_NULLED = "field set to null, record kept"
FILE_REJECTED = "file quarantined"

# Column name -> kind ("str", "decimal", "ts", "date", "int"); the context columns end every table.
CONTEXT_COLUMNS = (("customer_id", "str"), ("provider", "str"), ("consent_id", "str"), ("fetched_at", "ts"),
                   ("api_version", "str"), ("source_file", "str"))
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "ob_accounts": (("account_id", "str"), ("provider_account_id", "str"), ("currency", "str"),
                    ("account_type", "str"), ("account_subtype", "str"), ("product", "str"), ("nickname", "str"),
                    ("opening_date", "date"), ("status", "str")) + CONTEXT_COLUMNS,
    "ob_balances": (("account_id", "str"), ("balance_type", "str"), ("amount", "decimal"), ("currency", "str"),
                    ("balance_at", "ts"), ("credit_line_amount", "decimal")) + CONTEXT_COLUMNS,
    "ob_transactions": (("transaction_id", "str"), ("provider_transaction_id", "str"), ("account_id", "str"),
                        ("status", "str"), ("booked_at", "ts"), ("value_at", "ts"), ("booking_date", "date"),
                        ("amount", "decimal"), ("currency", "str"), ("description", "str"),
                        ("merchant_name", "str"), ("mcc", "str"), ("bank_transaction_code", "str"),
                        ("proprietary_code", "str"), ("balance_after", "decimal"), ("reference", "str"))
                       + CONTEXT_COLUMNS,
    "ob_standing_orders": (("account_id", "str"), ("standing_order_id", "str"), ("frequency", "str"),
                           ("frequency_count_per_period", "int"), ("first_payment_at", "ts"),
                           ("next_payment_at", "ts"), ("last_payment_at", "ts"), ("final_payment_at", "ts"),
                           ("next_payment_amount", "decimal"), ("currency", "str"), ("status", "str"),
                           ("creditor_name", "str"), ("reference", "str")) + CONTEXT_COLUMNS,
    "ob_direct_debits": (("account_id", "str"), ("direct_debit_id", "str"), ("mandate_id", "str"), ("name", "str"),
                         ("status", "str"), ("previous_payment_at", "ts"), ("previous_payment_amount", "decimal"),
                         ("currency", "str"), ("frequency", "str"), ("frequency_count_per_period", "int"))
                        + CONTEXT_COLUMNS,
    "ob_scheduled_payments": (("account_id", "str"), ("scheduled_payment_id", "str"), ("execution_at", "ts"),
                              ("amount", "decimal"), ("currency", "str"), ("payment_type", "str"),
                              ("reference", "str"), ("creditor_name", "str")) + CONTEXT_COLUMNS,
}
QUARANTINE_COLUMNS = ("file", "line", "column_name", "reason", "raw_value")
DEDUP_KEYS = {
    "ob_accounts": ("customer_id", "account_id"),
    "ob_balances": ("customer_id", "account_id", "balance_type", "balance_at"),
    "ob_transactions": ("customer_id", "transaction_id"),
    "ob_standing_orders": ("customer_id", "account_id", "standing_order_id"),
    "ob_direct_debits": ("customer_id", "account_id", "direct_debit_id"),
    "ob_scheduled_payments": ("customer_id", "account_id", "scheduled_payment_id"),
}

# Code mappings: raw code -> (canonical value, the version that defines it: "3.1", "4.0" or "both").
TRANSACTION_STATUS = {"Booked": ("booked", "3.1"), "Pending": ("pending", "3.1"), "Rejected": ("rejected", "3.1"),
                      "BOOK": ("booked", "4.0"), "PDNG": ("pending", "4.0"), "RJCT": ("rejected", "4.0"),
                      "FUTR": ("future", "4.0"), "INFO": ("info", "4.0")}
CREDIT_DEBIT = {"Credit": (1, "both"), "Debit": (-1, "both")}
_V3_BALANCE_TYPES = ("ClosingAvailable", "ClosingBooked", "ClosingCleared", "Expected", "ForwardAvailable",
                     "Information", "InterimAvailable", "InterimBooked", "InterimCleared", "OpeningAvailable",
                     "OpeningBooked", "OpeningCleared", "PreviouslyClosedBooked")
_V4_BALANCE_TYPES = {"CLAV": "ClosingAvailable", "CLBD": "ClosingBooked", "FWAV": "ForwardAvailable",
                     "INFO": "Information", "ITAV": "InterimAvailable", "ITBD": "InterimBooked",
                     "OPAV": "OpeningAvailable", "OPBD": "OpeningBooked", "PRCD": "PreviouslyClosedBooked",
                     "XPCD": "Expected"}
BALANCE_TYPE = {**{name: (name, "3.1") for name in _V3_BALANCE_TYPES},
                **{code: (name, "4.0") for code, name in _V4_BALANCE_TYPES.items()}}
MANDATE_STATUS = {"Active": ("active", "3.1"), "Inactive": ("inactive", "3.1"), "ACTV": ("active", "4.0"),
                  "CANC": ("cancelled", "4.0"), "EXPI": ("expired", "4.0"), "SUSP": ("suspended", "4.0")}
ACCOUNT_STATUS = {"Enabled": ("enabled", "both"), "Disabled": ("disabled", "both"), "Deleted": ("deleted", "both"),
                  "Pending": ("pending", "both"), "ProForma": ("proforma", "both")}
SCHEDULED_TYPE = {"Execution": ("execution", "both"), "Arrival": ("arrival", "both")}
# Account subtype -> core product (None: a valid subtype with no core product).
PRODUCT_V3 = {"CurrentAccount": "current", "Savings": "savings", "CreditCard": "credit_card",
              "ChargeCard": "credit_card", "Loan": "loan", "Mortgage": "mortgage", "EMoney": None,
              "PrePaidCard": None, "Wallet": None}
PRODUCT_V4 = {"CACC": "current", "TRAN": "current", "SLRY": "current", "SVGS": "savings", "LLSV": "savings",
              "ONDP": "savings", "CARD": "credit_card", "LOAN": "loan", "MORT": "mortgage",
              **{code: None for code in ("CASH", "CHAR", "CISH", "COMM", "CPAC", "MGLD", "MOMA", "NREX", "ODFT",
                                         "OTHR", "SACC", "TAXE", "TRAS", "VACC", "NFCA", "WALT")}}
PRODUCTS = {**PRODUCT_V3, **PRODUCT_V4}
# ISO 4217 currencies whose minor unit is not 2 (the rest have 2).
MINOR_UNITS = {**{c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                                 "UYI", "VND", "VUV", "XAF", "XOF", "XPF")},
               **{c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")}, "CLF": 4, "UYW": 4}
V3_FREQUENCY = re.compile(
    r"^(NotKnown)$|^(EvryDay)$|^(EvryWorkgDay)$|^(IntrvlDay:((0[2-9])|([1-2][0-9])|3[0-1]))$|"
    r"^(IntrvlWkDay:0[1-9]:0[1-7])$|^(WkInMnthDay:0[1-5]:0[1-7])$|"
    r"^(IntrvlMnthDay:(0[1-6]|12|24):(-0[1-5]|0[1-9]|[12][0-9]|3[01]))$|^(QtrDay:(ENGLISH|SCOTTISH|RECEIVED))$")
V4_FREQUENCY_CODES = frozenset(("ADHO", "YEAR", "DAIL", "FRTN", "INDA", "MNTH", "QURT", "MIAN", "WEEK", "WODL",
                                "FOWK", "TWMH", "FOMH", "FIMH", "ALMH", "NONE"))
V4_TRANSACTION_FIELDS = ("UltimateCreditor", "UltimateDebtor", "CategoryPurposeCode", "PaymentPurposeCode",
                         "ExtendedProprietaryBankTransactionCodes")
AMOUNT_PATTERN = re.compile(r"[0-9]{1,13}(?:\.[0-9]{1,5})?")  # ASCII digits only, as in the spec
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
LINKS_VERSION = re.compile(r"/v(\d)\.\d")
_DUPLICATE_MARK = "\x00duplicate keys"
# What a text may not hold (the core files' rule for text columns): C0 controls but tab and line breaks, DEL.
BIDI_CHARACTER = re.compile(BIDI_REGEX)
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_OFFSET_SECONDS = 14 * 3600
CUSTOMER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # the landing contract's id type

# Depth pre-check: brackets outside strings on the raw bytes, without building anything.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTE = ord('"')
_DEPTH_STEP = np.zeros(256, dtype=np.int32)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


@dataclass(frozen=True)
class ObContext:
    """Who and what a body belongs to: the envelope's fields and the file it came from."""
    customer_id: str
    provider: str
    consent_id: str | None
    fetched_at: datetime
    source_file: str

    def __post_init__(self) -> None:
        if self.fetched_at.tzinfo is None:
            raise ValueError("ObContext.fetched_at must be timezone-aware")


@dataclass
class ParsedResource:
    """Rows of one resource (all its pages) and what was quarantined while reading them."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    records_read: int = 0
    records_rejected: int = 0
    pages_rejected: int = 0  # pages (or a whole resource) quarantined without their records being counted
    max_rows: int | None = None  # quarantine rows kept at most (None: all); the others are only counted
    unlisted: int = 0  # quarantine rows past max_rows: counted, not kept

    def add(self, row: dict[str, Any]) -> None:
        """A quarantine row, kept while under max_rows (a file of millions of empty records must not hold a row
        per fault in memory: the records are rejected and counted all the same)."""
        if self.max_rows is None or len(self.quarantine) < self.max_rows:
            self.quarantine.append(row)
        else:
            self.unlisted += 1


@dataclass
class ObFileResult:
    """Rows per bronze table (`ob_accounts`, ...) of one envelope file, and its quarantine rows."""
    tables: dict[str, list[dict[str, Any]]]
    quarantine: list[dict[str, Any]]
    records_read: int = 0
    records_rejected: int = 0
    pages_rejected: int = 0
    file_rejected: bool = False
    # the file's transactions as the columnar path gave them (pipelines/ingest/openbanking_fast.py), used instead of
    # rows in tables["ob_transactions"]; None: they are in tables (read here)
    # the file's transactions were taken from the columnar path (pipelines/ingest/openbanking_fast.py): this many
    # rows, in this context; none of them are in tables["ob_transactions"]
    fast_rows: int = 0
    fast_context: ObContext | None = None


@dataclass
class ObBatch:
    """A batch of envelope files as DataFrames (all six tables, deduplicated) plus the quarantine and counts.

    stats: files, files_rejected (quarantined whole), records_read, records_rejected (records that broke the
    contract), pages_rejected (pages or resources quarantined whole: their records are not counted), quarantine_rows
    (notes included), and per table `<table>_rows` and `<table>_duplicates` (rows dropped by the in-batch dedup).
    """
    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


def _raw_text(value: Any) -> str | None:
    """A quarantine raw_value: strings as they are, anything else as compact JSON; at most 1000 characters."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:RAW_VALUE_LIMIT]
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text[:RAW_VALUE_LIMIT]


def _quarantine_row(source_file: str, column_name: str | None, reason: str, raw: Any) -> dict[str, Any]:
    return {"file": source_file, "line": None, "column_name": column_name, "reason": reason,
            "raw_value": _raw_text(raw)}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _kind_of(value: Any) -> str:
    """The JSON type of a value with its article, for reasons: 'an array', 'a string', 'null'."""
    kind = _json_type(value)
    return kind if kind == "null" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _id_part(text: str) -> str:
    """An id component with '%', ':' and '#' escaped, so `ob:<provider>:<account>:<txn>` stays unambiguous."""
    if "%" in text or ":" in text or "#" in text:
        return text.replace("%", "%25").replace(":", "%3A").replace("#", "%23")
    return text


class _Record:
    """One OBIE record being read: typed field readers that collect record faults and field notes with JSON paths.

    `required=True` makes a bad value a record fault (the record is quarantined); otherwise the field is set to
    null and the problem is noted.
    """
    __slots__ = ("data", "version", "faults", "notes", "max_amount")

    def __init__(self, data: dict[str, Any], version: str, max_amount: Decimal | None = None) -> None:
        self.data = data
        self.version = version
        self.max_amount = max_amount
        self.faults: list[tuple[str, str, Any]] = []
        self.notes: list[tuple[str, str, Any]] = []

    def problem(self, name: str, reason: str, raw: Any, required: bool, outcome: str = FIELD_NULLED) -> None:
        if required:
            self.faults.append((name, f"{reason}; {RECORD_REJECTED}", raw))
        else:
            self.notes.append((name, f"{reason}; {outcome}", raw))

    def note(self, name: str, reason: str, raw: Any, outcome: str) -> None:
        self.notes.append((name, f"{reason}; {outcome}", raw))

    def _missing(self, name: str, required: bool) -> None:
        if required:
            self.faults.append((name, f"{name} is missing (required); {RECORD_REJECTED}", self.data))

    def obj(self, container: dict[str, Any], key: str, prefix: str = "", required: bool = False) -> dict | None:
        value = container.get(key)
        if value is None:
            self._missing(prefix + key, required)
            return None
        if type(value) is dict:
            return value
        self.problem(prefix + key, f"{prefix + key} is {_kind_of(value)}, expected an object", value, required)
        return None

    def text(self, container: dict[str, Any], key: str, prefix: str = "", required: bool = False) -> str | None:
        value = container.get(key)
        name = prefix + key
        if type(value) is str and value:
            if value.isascii():
                # The same checks in the same order, for the common case: every character the bidi, invisible,
                # replacement and look-alike rules refuse is outside ASCII, and NFC leaves ASCII as it is.
                if CONTROL_CHARACTER.search(value) is None:
                    lengths = openbanking_lengths()
                    limit = lengths.limit(name)
                    if len(value) <= limit:
                        return value
                    self.problem(name, too_long(name, value, limit), value, required or name in lengths.ids)
                    return None
            elif CONTROL_CHARACTER.search(value) is None:
                lengths = openbanking_lengths()
                if BIDI_CHARACTER.search(value) is not None:
                    self.problem(name, f"{name} {BIDI_REASON}", value, required or name in lengths.ids)
                    return None
                invisible = _hidden(value) if name in lengths.ids or name in lengths.labels else None
                if invisible is not None:
                    self.problem(name, f"{name} {invisible}", value, required or name in lengths.ids)
                    return None
                if len(value) <= lengths.limit(name):
                    return unicodedata.normalize("NFC", value) if name in lengths.labels else value
                self.problem(name, too_long(name, value, lengths.limit(name)), value, required or name in lengths.ids)
                return None
            self.problem(name, f"{name} contains a control character (NUL or another C0 code other than tab and line "
                               f"breaks, or DEL)", value, required)
            return None
        if value is None:
            self._missing(name, required)
        elif value == "":
            self.problem(name, f"{name} is an empty string", value, required)
        else:
            self.problem(name, f"{name} is {_kind_of(value)}, expected a string", value, required)
        return None

    def code(self, container: dict[str, Any], key: str, mapping: dict[str, tuple[Any, str]], prefix: str = "",
             required: bool = False) -> Any:
        value = container.get(key)
        name = prefix + key
        if value is None:
            self._missing(name, required)
            return None
        hit = mapping.get(value) if type(value) is str else None
        if hit is None:
            expected = ", ".join(raw for raw, (_, version) in mapping.items() if version in ("both", self.version))
            self.problem(name, f"{name} {value!r} is not a known value (v{self.version} expects one of: {expected})",
                         value, required)
            return None
        canonical, version = hit
        if version != "both" and version != self.version:
            self.note(name, f"{name} {value!r} is a v{version} code in a v{self.version} body; read as {canonical}",
                      value, "value kept")
        return canonical

    def when(self, container: dict[str, Any], key: str, prefix: str = "", required: bool = False) -> datetime | None:
        """An ISO 8601 date-time with a zone offset, as written (the caller takes the local date or converts to UTC)."""
        value = container.get(key)
        name = prefix + key
        if value is None:
            self._missing(name, required)
            return None
        if type(value) is not str:
            self.problem(name, f"{name} is {_kind_of(value)}, expected an ISO 8601 date-time string", value,
                         required)
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.problem(name, f"{name} {value!r} is not an ISO 8601 date-time", value, required)
            return None
        if moment.tzinfo is None:
            self.problem(name, f"{name} {value!r} has no time zone offset; the contract requires one", value,
                         required)
            return None
        if not offset_in_range(moment):
            self.problem(name, f"{name} {value!r} has a zone offset out of range (-14:00 to +14:00, whole minutes)",
                         value, required)
            return None
        if not instant_in_range(moment):
            self.problem(name, f"{name} {value!r} is {INSTANT_OUT_OF_RANGE}", value, required)
            return None
        return moment

    def amount(self, container: dict[str, Any], key: str, prefix: str = "", required: bool = False
               ) -> tuple[Decimal | None, str | None]:
        """An OBIE amount object {Amount, Currency}: (unsigned Decimal with 2 decimals, currency) or (None, None)."""
        value = container.get(key)
        name = prefix + key
        if value is None:
            self._missing(name, required)
            return None, None
        if type(value) is not dict:
            self.problem(name, f"{name} is {_kind_of(value)}, expected an object {{Amount, Currency}}", value,
                         required)
            return None, None
        currency = value.get("Currency")
        currency_ok = type(currency) is str and CURRENCY_PATTERN.fullmatch(currency) is not None
        if not currency_ok:
            if currency is None:
                self.problem(f"{name}.Currency", f"{name}.Currency is missing (required)", value, required)
            else:
                self.problem(f"{name}.Currency", f"{name}.Currency {currency!r} is not an ISO 4217 code (3 capitals)",
                             currency, required)
        number = self._decimal(value.get("Amount"), f"{name}.Amount", currency if currency_ok else None, value,
                               required)
        if number is None or not currency_ok:
            return None, None
        return number, currency

    def _decimal(self, raw: Any, name: str, currency: str | None, parent: Any, required: bool) -> Decimal | None:
        if type(raw) is str:
            text = raw
        elif type(raw) is int or type(raw) is Decimal:
            text = str(raw)
            if AMOUNT_PATTERN.fullmatch(text):
                self.note(name, f"{name} is a JSON number, expected a decimal string; read exactly as {text}", raw,
                          "value kept")
        elif raw is None:
            self.problem(name, f"{name} is missing (required)", parent, required)
            return None
        else:
            self.problem(name, f"{name} is {_kind_of(raw)}, expected a decimal string", raw, required)
            return None
        if AMOUNT_PATTERN.fullmatch(text) is None:
            self.problem(name, f"{name} {text!r} is not an unsigned OBIE amount (up to 13 digits and 5 decimals; "
                               f"the sign comes from CreditDebitIndicator)", raw, required)
            return None
        dot = text.find(".")
        decimals = len(text[dot + 1:].rstrip("0")) if dot >= 0 else 0
        if decimals > 2 or (currency is not None and decimals > MINOR_UNITS.get(currency, 2)):
            unit = MINOR_UNITS.get(currency, 2) if currency else 2
            self.problem(name, f"{name} {text!r} has {decimals} decimals: more than {currency or 'the currency'} "
                               f"allows ({unit}) or the lake stores (DECIMAL(18,2)); not rounded", raw, required)
            return None
        number = Decimal(text).quantize(CENT)
        if self.max_amount is not None and number > self.max_amount:
            self.problem(name, f"{name} {text!r} is above the maximum {self.max_amount} (config/landing.yaml)", raw,
                         required)
            return None
        return number

    def signed(self, container: dict[str, Any], key: str, prefix: str = "", required: bool = False
               ) -> tuple[Decimal | None, str | None]:
        """An amount object signed by the sibling CreditDebitIndicator (Debit is negative)."""
        number, currency = self.amount(container, key, prefix, required)
        sign = self.code(container, "CreditDebitIndicator", CREDIT_DEBIT, prefix, required)
        if number is None or sign is None:
            return None, None
        return (-number if sign < 0 else number), currency

    def frequency(self, value: Any, name: str) -> str | None:
        """A raw OBIE frequency: kept as written; noted when it matches neither the v3.1 pattern nor a v4.0 code."""
        if value is None:
            return None
        if type(value) is not str or not value:
            self.problem(name, f"{name} is {_kind_of(value)}, expected a frequency string", value, False)
            return None
        limit = openbanking_lengths().limit(name)
        if len(value) > limit:
            self.problem(name, too_long(name, value, limit), value, False)
            return None
        if value not in V4_FREQUENCY_CODES and V3_FREQUENCY.match(value) is None:
            self.note(name, f"{name} {value!r} matches neither the OBIE frequency pattern nor a v4.0 frequency code",
                      value, "kept as written")
        return value


def max_amount(resource: str) -> Decimal:
    """The largest amount of a record of `resource`: the core contract's bound for a balance (balances) or for a
    posting (the others), so that both sources stop at the same figure (config/landing.yaml)."""
    files = landing_contract()
    column = files["balances"].column("balance") if resource == "balances" else files["transactions"].column("amount")
    return Decimal(str(column.max))


def too_long(name: str, value: str, limit: int) -> str:
    """The reason for a text longer than its bound (config/landing.yaml openbanking.max_length)."""
    return f"{name} is {len(value)} characters, more than {limit} (openbanking.max_length)"


def offset_in_range(moment: datetime) -> bool:
    """A zone offset real zones use: -14:00 to +14:00 in whole minutes."""
    seconds = moment.utcoffset().total_seconds()
    return abs(seconds) <= MAX_OFFSET_SECONDS and seconds % 60 == 0




def instant_in_range(moment: datetime) -> bool:
    """Whether an aware date-time is still an instant of the years 0001-9999 in UTC (0001-01-01T00:00+14:00 is
    not: its UTC time is in year 0, which neither Python nor the lake's readers can hold)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _account_id(context: ObContext, provider_account_id: str) -> str:
    return f"ob:{_id_part(context.provider)}:{_id_part(provider_account_id)}"


def _read_account(rec: _Record, context: ObContext, fingerprints: dict[str, int]) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    if "AccountTypeCode" in data or "AccountCategory" in data:
        account_type, subtype = rec.text(data, "AccountCategory"), rec.text(data, "AccountTypeCode")
    else:
        account_type, subtype = rec.text(data, "AccountType"), rec.text(data, "AccountSubType")
    product = PRODUCTS.get(subtype) if subtype is not None else None
    if subtype is not None and subtype not in PRODUCTS:
        rec.note("AccountSubType", f"account subtype {subtype!r} is not an OBIE code; product set to null",
                 subtype, "subtype kept as written")
    currency = rec.text(data, "Currency")
    if currency is not None and CURRENCY_PATTERN.fullmatch(currency) is None:
        rec.problem("Currency", f"Currency {currency!r} is not an ISO 4217 code (3 capitals)", currency, False)
        currency = None
    opening = data.get("OpeningDate")
    opening_date = None
    if opening is not None:
        if type(opening) is str and ISO_DATE.match(opening):
            try:
                opening_date = (date.fromisoformat(opening) if len(opening) == 10
                                else datetime.fromisoformat(opening).date())
            except ValueError:
                opening_date = None
        if opening_date is None:
            rec.problem("OpeningDate", f"OpeningDate {opening!r} is not an ISO 8601 date or date-time (DD-MM-YYYY "
                                       f"and MM-DD-YYYY cannot be told apart)", opening, False)
    if rec.faults:
        return None
    return {"account_id": _account_id(context, provider_account_id), "provider_account_id": provider_account_id,
            "currency": currency, "account_type": account_type, "account_subtype": subtype, "product": product,
            "nickname": rec.text(data, "Nickname"), "opening_date": opening_date,
            "status": rec.code(data, "Status", ACCOUNT_STATUS)}


def _read_balance(rec: _Record, context: ObContext, fingerprints: dict[str, int]) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    amount, currency = rec.signed(data, "Amount", required=True)
    balance_type = rec.code(data, "Type", BALANCE_TYPE, required=True)
    balance_at = rec.when(data, "DateTime", required=True)
    credit_line = None
    lines = data.get("CreditLine")
    if lines is not None:
        if type(lines) is dict:
            rec.note("CreditLine", "CreditLine is an object, expected an array", lines, "read as one element")
            lines = [lines]
        if type(lines) is not list:
            rec.problem("CreditLine", f"CreditLine is {_kind_of(lines)}, expected an array", lines, False)
        else:
            credit_line = Decimal("0.00")
            for i, line in enumerate(lines):
                name = f"CreditLine[{i}]"
                if type(line) is not dict:
                    rec.problem(name, f"{name} is {_kind_of(line)}, expected an object", line, False)
                    credit_line = None
                    break
                included = line.get("Included")
                if type(included) is not bool:
                    rec.problem(f"{name}.Included", f"{name}.Included is not a boolean", line, False,
                                "credit_line_amount set to null, record kept")
                    credit_line = None
                    break
                if included:
                    value, _ = rec.amount(line, "Amount", prefix=f"{name}.")
                    if value is None:
                        credit_line = None
                        break
                    credit_line += value
    if rec.faults:
        return None
    return {"account_id": _account_id(context, provider_account_id), "balance_type": balance_type, "amount": amount,
            "currency": currency, "balance_at": balance_at.astimezone(UTC), "credit_line_amount": credit_line}


def _read_transaction(rec: _Record, context: ObContext, fingerprints: dict[str, int]) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    provider_transaction_id = rec.text(data, "TransactionId")
    amount, currency = rec.signed(data, "Amount", required=True)
    status = rec.code(data, "Status", TRANSACTION_STATUS, required=True)
    booked = rec.when(data, "BookingDateTime", required=True)
    if rec.faults:
        return None
    value_at = rec.when(data, "ValueDateTime")
    description = rec.text(data, "TransactionInformation")
    reference = rec.text(data, "TransactionReference")
    merchant_name = mcc = None
    merchant = rec.obj(data, "MerchantDetails")
    if merchant is not None:
        merchant_name = rec.text(merchant, "MerchantName", "MerchantDetails.")
        raw_mcc = merchant.get("MerchantCategoryCode")
        if raw_mcc is not None:
            if type(raw_mcc) is str and 3 <= len(raw_mcc) <= 4 and raw_mcc.isdigit() and raw_mcc.isascii():
                mcc = raw_mcc.zfill(4)
            else:
                rec.problem("MerchantDetails.MerchantCategoryCode",
                            f"MerchantDetails.MerchantCategoryCode {raw_mcc!r} is not a 3- or 4-digit ISO 18245 code",
                            raw_mcc, False)
    bank_code = None
    code_structure = rec.obj(data, "BankTransactionCode")
    if code_structure is not None:
        code = rec.text(code_structure, "Code", "BankTransactionCode.")
        sub_code = rec.text(code_structure, "SubCode", "BankTransactionCode.")
        bank_code = f"{code}/{sub_code}" if code and sub_code else code
    proprietary = rec.obj(data, "ProprietaryBankTransactionCode")
    proprietary_code = rec.text(proprietary, "Code", "ProprietaryBankTransactionCode.") if proprietary else None
    balance_after = None
    balance = rec.obj(data, "Balance")
    if balance is not None:
        balance_after, _ = rec.signed(balance, "Amount", "Balance.")
    account_id = _account_id(context, provider_account_id)
    if provider_transaction_id is not None:
        transaction_id = f"{account_id}:{_id_part(provider_transaction_id)}"
    else:
        fingerprint = "\x1f".join(str(part) for part in (
            provider_account_id, data.get("BookingDateTime"), abs(amount), currency, data.get("CreditDebitIndicator"),
            description, reference, proprietary_code, merchant_name))
        occurrence = fingerprints.get(fingerprint, 0) + 1
        fingerprints[fingerprint] = occurrence
        digest = hashlib.sha1(f"{fingerprint}\x1f{occurrence}".encode("utf-8")).hexdigest()[:24]
        transaction_id = f"{account_id}:#{digest}"
    return {"transaction_id": transaction_id, "provider_transaction_id": provider_transaction_id,
            "account_id": account_id, "status": status,
            "booked_at": booked.astimezone(UTC), "value_at": value_at.astimezone(UTC) if value_at else None,
            "booking_date": booked.date(), "amount": amount, "currency": currency, "description": description,
            "merchant_name": merchant_name, "mcc": mcc, "bank_transaction_code": bank_code,
            "proprietary_code": proprietary_code, "balance_after": balance_after, "reference": reference}


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


def _mandate_frequency(rec: _Record, mandate: dict[str, Any] | None) -> tuple[str | None, int | None]:
    """v4.0 MandateRelatedInformation.Frequency: (Type, CountPerPeriod)."""
    if mandate is None:
        return None, None
    frequency = rec.obj(mandate, "Frequency", "MandateRelatedInformation.")
    if frequency is None:
        if "Frequency" not in mandate:
            rec.note("MandateRelatedInformation.Frequency", "MandateRelatedInformation.Frequency is missing "
                     "(required in MandateRelatedInformation)", mandate, FIELD_NULLED)
        return None, None
    name = "MandateRelatedInformation.Frequency.Type"
    if "Type" not in frequency:
        rec.note(name, f"{name} is missing (required); other keys: {sorted(frequency)}", frequency, FIELD_NULLED)
        kind = None
    else:
        kind = rec.frequency(frequency.get("Type"), name)
    count = frequency.get("CountPerPeriod")
    if count is not None and (type(count) is not int or count < 0):
        rec.problem("MandateRelatedInformation.Frequency.CountPerPeriod",
                    "MandateRelatedInformation.Frequency.CountPerPeriod is not a non-negative integer", count, False)
        count = None
    return kind, count


def _read_standing_order(rec: _Record, context: ObContext, fingerprints: dict[str, int]) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    if rec.faults:
        return None
    mandate = rec.obj(data, "MandateRelatedInformation")
    if "Frequency" in data:
        frequency, count = rec.frequency(data.get("Frequency"), "Frequency"), None
    else:
        frequency, count = _mandate_frequency(rec, mandate)
        if mandate is None and rec.version == "3.1":
            rec.note("Frequency", "Frequency is missing (required)", data, FIELD_NULLED)
    first = rec.when(data, "FirstPaymentDateTime")
    final = rec.when(data, "FinalPaymentDateTime")
    if mandate is not None:
        first = first or rec.when(mandate, "FirstPaymentDateTime", "MandateRelatedInformation.")
        final = final or rec.when(mandate, "FinalPaymentDateTime", "MandateRelatedInformation.")
    next_amount, currency = rec.amount(data, "NextPaymentAmount")
    if currency is None:
        for key in ("FirstPaymentAmount", "LastPaymentAmount", "FinalPaymentAmount"):
            other = data.get(key)
            other_currency = other.get("Currency") if type(other) is dict else None
            if type(other_currency) is str and CURRENCY_PATTERN.fullmatch(other_currency):
                currency = other_currency
                break
    reference = rec.text(data, "Reference")
    if reference is None:
        remittance = data.get("RemittanceInformation")
        unstructured = remittance.get("Unstructured") if type(remittance) is dict else None
        if type(unstructured) is list and unstructured and type(unstructured[0]) is str:
            reference = unstructured[0]
            name, limit = "RemittanceInformation.Unstructured", openbanking_lengths().limit("RemittanceInformation.Unstructured")
            if len(reference) > limit or CONTROL_CHARACTER.search(reference):
                reason = (too_long(name, reference, limit) if len(reference) > limit
                          else f"{name} contains a control character")
                rec.problem(name, reason, reference, False)
                reference = None
    creditor = rec.obj(data, "CreditorAccount")
    return {"account_id": _account_id(context, provider_account_id),
            "standing_order_id": rec.text(data, "StandingOrderId"), "frequency": frequency,
            "frequency_count_per_period": count, "first_payment_at": _utc(first),
            "next_payment_at": _utc(rec.when(data, "NextPaymentDateTime")),
            "last_payment_at": _utc(rec.when(data, "LastPaymentDateTime")), "final_payment_at": _utc(final),
            "next_payment_amount": -next_amount if next_amount is not None else None, "currency": currency,
            "status": rec.code(data, "StandingOrderStatusCode", MANDATE_STATUS),
            "creditor_name": rec.text(creditor, "Name", "CreditorAccount.") if creditor else None,
            "reference": reference}


def _read_direct_debit(rec: _Record, context: ObContext, fingerprints: dict[str, int]) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    if rec.faults:
        return None
    mandate = rec.obj(data, "MandateRelatedInformation")
    mandate_id = rec.text(data, "MandateIdentification")
    if mandate_id is None and mandate is not None:
        mandate_id = rec.text(mandate, "MandateIdentification", "MandateRelatedInformation.")
    if "Frequency" in data:
        frequency, count = rec.frequency(data.get("Frequency"), "Frequency"), None
    else:
        frequency, count = _mandate_frequency(rec, mandate)
    name = rec.text(data, "Name")
    if name is None and "Name" not in data:
        rec.note("Name", "Name is missing (required)", data, FIELD_NULLED)
    amount, currency = rec.amount(data, "PreviousPaymentAmount")
    return {"account_id": _account_id(context, provider_account_id), "direct_debit_id": rec.text(data, "DirectDebitId"),
            "mandate_id": mandate_id, "name": name, "status": rec.code(data, "DirectDebitStatusCode", MANDATE_STATUS),
            "previous_payment_at": _utc(rec.when(data, "PreviousPaymentDateTime")),
            "previous_payment_amount": -amount if amount is not None else None, "currency": currency,
            "frequency": frequency, "frequency_count_per_period": count}


def _read_scheduled_payment(rec: _Record, context: ObContext, fingerprints: dict[str, int]
                            ) -> dict[str, Any] | None:
    data = rec.data
    provider_account_id = rec.text(data, "AccountId", required=True)
    execution_at = rec.when(data, "ScheduledPaymentDateTime", required=True)
    amount, currency = rec.amount(data, "InstructedAmount", required=True)
    if rec.faults:
        return None
    creditor = rec.obj(data, "CreditorAccount")
    return {"account_id": _account_id(context, provider_account_id),
            "scheduled_payment_id": rec.text(data, "ScheduledPaymentId"), "execution_at": execution_at.astimezone(UTC),
            "amount": -amount, "currency": currency, "payment_type": rec.code(data, "ScheduledType", SCHEDULED_TYPE),
            "reference": rec.text(data, "Reference"),
            "creditor_name": rec.text(creditor, "Name", "CreditorAccount.") if creditor else None}


_READERS: dict[str, Callable[[_Record, ObContext, dict[str, int]], dict[str, Any] | None]] = {
    "accounts": _read_account, "balances": _read_balance, "transactions": _read_transaction,
    "standing_orders": _read_standing_order, "direct_debits": _read_direct_debit,
    "scheduled_payments": _read_scheduled_payment,
}


def _version_marker(resource: str, record: Any) -> str | None:
    """'4.0' or '3.1' when this record shows its version (structure first, then codes), else None."""
    if type(record) is not dict:
        return None
    get = record.get
    if resource == "accounts":
        if "AccountTypeCode" in record or "AccountCategory" in record:
            return "4.0"
        if "AccountType" in record or "AccountSubType" in record:
            return "3.1"
    elif resource == "transactions":
        if any(key in record for key in V4_TRANSACTION_FIELDS):
            return "4.0"
        hit = TRANSACTION_STATUS.get(get("Status")) if type(get("Status")) is str else None
        if hit:
            return hit[1]
    elif resource == "balances":
        hit = BALANCE_TYPE.get(get("Type")) if type(get("Type")) is str else None
        if hit:
            return hit[1]
        amount = get("Amount")
        sub_type = amount.get("SubType") if type(amount) is dict else None
        if sub_type in ("BCUR", "LCUR"):
            return "4.0"
        if sub_type in ("BaseCurrency", "LocalCurrency"):
            return "3.1"
    elif resource in ("standing_orders", "direct_debits"):
        if "MandateRelatedInformation" in record:
            return "4.0"
        if "Frequency" in record or "MandateIdentification" in record:
            return "3.1"
        status = get("StandingOrderStatusCode" if resource == "standing_orders" else "DirectDebitStatusCode")
        hit = MANDATE_STATUS.get(status) if type(status) is str else None
        if hit:
            return hit[1]
    elif resource == "scheduled_payments":
        creditor = get("CreditorAccount")
        agent = get("CreditorAgent")
        if ((type(creditor) is dict and "Proxy" in creditor)
                or (type(agent) is dict and ("LEI" in agent or "Name" in agent))):
            return "4.0"
    return None


def detect_version(resource: str, records: list[Any], page: dict[str, Any]) -> str:
    """The OBIE version of one body: record fields and codes first, then the version in Links.Self, else '3.1'."""
    for record in records[:50]:
        marker = _version_marker(resource, record)
        if marker:
            return marker
    links = page.get("Links")
    self_link = links.get("Self") if type(links) is dict else None
    if type(self_link) is str:
        match = LINKS_VERSION.search(self_link)
        if match:
            return "4.0" if match.group(1) == "4" else "3.1"
    return "3.1"


def _context_columns(context: ObContext, version: str) -> dict[str, Any]:
    return {"customer_id": context.customer_id, "provider": context.provider, "consent_id": context.consent_id,
            "fetched_at": context.fetched_at.astimezone(UTC), "api_version": version,
            "source_file": context.source_file}


def _parse_page(resource: str, page: Any, path: str, context: ObContext, out: ParsedResource,
                fingerprints: dict[str, int], listed: frozenset[str] | None) -> None:
    """Read one OBIE response body into `out`: its version, then each record of Data.<records>."""
    source = context.source_file
    if type(page) is not dict:
        out.pages_rejected += 1
        out.add(_quarantine_row(source, path, f"{path} is {_kind_of(page)}, expected an OBIE "
                                                            f"response object; page quarantined", page))
        return
    data = page.get("Data")
    if type(data) is not dict:
        problem = "is missing" if data is None else f"is {_kind_of(data)}, expected an object"
        out.pages_rejected += 1
        out.add(_quarantine_row(source, f"{path}.Data", f"{path}.Data {problem}; page quarantined",
                                              page if data is None else data))
        return
    key = DATA_KEYS[resource]
    records_path = f"{path}.Data.{key}"
    records = data.get(key)
    if records is None:
        if resource == "balances":
            out.add(_quarantine_row(source, records_path, f"Data.{key} is missing (required, at least "
                                                                        f"one balance); page has no rows", data))
        return
    if type(records) is dict:
        out.add(_quarantine_row(source, records_path, f"Data.{key} is an object, expected an array; "
                                                                    f"read as one element", records))
        items: list[tuple[str, Any]] = [(records_path, records)]
        records = [records]
    elif type(records) is list:
        items = [(f"{records_path}[{i}]", record) for i, record in enumerate(records)]
    else:
        out.pages_rejected += 1
        out.add(_quarantine_row(source, records_path, f"Data.{key} is {_kind_of(records)}, expected "
                                                                    f"an array; page quarantined", records))
        return
    version = detect_version(resource, records, page)
    reader = _READERS[resource]
    context_columns = _context_columns(context, version)
    bound = max_amount(resource)
    for record_path, record in items:
        out.records_read += 1
        if type(record) is not dict:
            out.records_rejected += 1
            out.add(_quarantine_row(source, record_path, f"record is {_kind_of(record)}, expected an "
                                                                       f"object; {RECORD_REJECTED}", record))
            continue
        rec = _Record(record, version, bound)
        row = reader(rec, context, fingerprints)
        for name, reason, raw in rec.faults:
            out.add(_quarantine_row(source, f"{record_path}.{name}", reason, raw))
        for name, reason, raw in rec.notes:
            out.add(_quarantine_row(source, f"{record_path}.{name}", reason, raw))
        if row is None or rec.faults:
            out.records_rejected += 1
            continue
        if listed is not None and row["account_id"] not in listed:
            out.records_rejected += 1
            out.add(_quarantine_row(
                source, f"{record_path}.AccountId", f"account {record.get('AccountId')!r} is not listed in this "
                f"envelope's accounts: an envelope speaks only for its own customer's accounts it lists; "
                f"{RECORD_REJECTED}", record.get("AccountId")))
            continue
        row.update(context_columns)
        out.rows.append(row)


def parse_resource(resource: str, body: Any, context: ObContext, listed: frozenset[str] | None = None,
                   max_rows: int | None = None) -> ParsedResource:
    """Rows and quarantine of one resource: one OBIE response body or a list of page bodies (None: nothing).

    listed: the canonical account ids the envelope's `accounts` resource lists; a record of another resource on an
    account outside it is quarantined (None: not checked, for a body read on its own).

    JSON paths in the quarantine start with the resource name (`transactions[1].Data.Transaction[3].Amount.Amount`
    for page 1 of a paged resource, `transactions.Data.Transaction[3]...` for a single body).
    """
    if resource not in DATA_KEYS:
        raise ValueError(f"unknown open-banking resource {resource!r}; expected one of {', '.join(RESOURCES)}")
    out = ParsedResource(max_rows=max_rows)
    if body is None:
        return out
    fingerprints: dict[str, int] = {}
    if type(body) is dict:
        _parse_page(resource, body, resource, context, out, fingerprints, listed)
    elif type(body) is list:
        for i, page in enumerate(body):
            _parse_page(resource, page, f"{resource}[{i}]", context, out, fingerprints, listed)
    else:
        out.pages_rejected += 1
        out.add(_quarantine_row(context.source_file, resource,
                                              f"{resource} is {_kind_of(body)}, expected an OBIE response object "
                                              f"or a list of page objects; resource quarantined", body))
    return out


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays/objects in JSON bytes, ignoring brackets inside strings (vectorised, no parsing)."""
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    structure = np.frombuffer(data.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    if structure.size == 0:
        return 0
    inside_string = (np.cumsum(structure == _QUOTE) & 1).astype(bool)
    steps = _DEPTH_STEP[structure]
    steps[inside_string] = 0
    return max(int(np.cumsum(steps).max()), 0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[Any, str | None, str | None,
                                                                           list[tuple[str, str, Any]]]:
    """Parse JSON bytes strictly: (value, None, None, duplicate-key notes) or (None, reason, None, []).

    The third element is kept for callers that unpack four values; it is always None: no byte of a file that does not
    parse is ever copied anywhere (the reason gives the parser's message and the position).

    Strict means: UTF-8 (a BOM is tolerated; a file that parses once bytes that are not UTF-8 are read as U+FFFD is
    read so, with a note; a lone surrogate escape is replaced by U+FFFD, with a note), no NaN/Infinity, no control
    characters inside strings, nesting at most max_depth; numbers with a fraction become Decimal (never float).
    Duplicate keys keep the last value. Notes are (json path or None, reason, raw).
    """
    depth = json_depth(data)
    if depth > max_depth:
        return None, f"JSON nesting depth {depth} exceeds the limit of {max_depth} (max_depth); not parsed", None, []
    duplicates = 0

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicates
        obj = dict(pairs)
        if len(obj) != len(pairs):
            duplicates += 1
            seen: set[str] = set()
            obj[_DUPLICATE_MARK] = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        return obj

    not_utf8 = None
    try:
        text = data.decode("utf-8-sig")  # the landing contract is UTF-8; json.loads(bytes) would also take UTF-16/32
    except UnicodeDecodeError as error:
        # Bytes that are not UTF-8 inside strings (a Latin-1 "caf\xe9" in a merchant name) are read as U+FFFD and
        # noted, so that one bad name costs its field, not the customer's fetch: an id or a name holding U+FFFD is
        # refused (REPLACEMENT_REASON), a date, amount or code holding it fails its own rule. A file that does not
        # parse so (UTF-16, binary) is refused with the decoder's message.
        not_utf8 = f"not valid UTF-8: {error}"
        text = data.decode("utf-8-sig", errors="replace")
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as error:
        # the parser's message names the fault and its position; no byte of the file is kept (it may be anything)
        return None, not_utf8 or f"not valid JSON: {error}", None, []
    except RecursionError:
        return None, f"JSON nesting too deep for the parser (RecursionError; limit {max_depth})", None, []
    except ValueError as error:
        return None, not_utf8 or f"not valid JSON: {error}", None, []
    notes: list[tuple[str, str, Any]] = []
    if not_utf8 is not None:
        count = text.count("\ufffd") - data.count("\ufffd".encode())  # the replaced ones, not those of the file
        notes.append((None, f"{not_utf8} ({count} byte sequence{'s' if count != 1 else ''} not UTF-8 in the file's "
                            f"strings): each read as U+FFFD; an id or name holding one is refused, free text "
                            f"keeps it", None))
    if duplicates:
        _collect_duplicates(value, "", notes)
    if _SURROGATE_ESCAPE.search(text) is not None:  # cheap: only a file with such an escape is walked
        value = _replace_lone_surrogates(value, notes)
    return value, None, None, notes


# A \uD800-\uDFFF escape: a pair of them is one character (an emoji escaped), a lone one is no character at all
# (valid JSON syntax, RFC 8259 section 8.2, but not Unicode: no UTF-8 encoder takes it, and it failed the whole
# parse with a UnicodeEncodeError traceback). Each lone one is replaced by U+FFFD, the replacement character, and
# noted; an id or a name holding U+FFFD is then refused as any value that reads as another (REPLACEMENT_REASON).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_lone_surrogates(node: Any, notes: list[tuple[str, str, Any]]) -> Any:
    """`node` with every lone surrogate of its strings (keys too) replaced by U+FFFD; one note counting the strings
    and naming the JSON path of the first."""
    found: list[str] = []

    def clean(text: str, path: str) -> str:
        if _LONE_SURROGATE.search(text) is None:
            return text
        found.append(path)
        return _LONE_SURROGATE.sub("\ufffd", text)

    def walk(item: Any, path: str) -> Any:
        if type(item) is str:
            return clean(item, path)
        if type(item) is list:
            return [walk(child, f"{path}[{i}]") for i, child in enumerate(item)]
        if type(item) is dict:
            return {clean(key, f"{path}.{key}" if path else key): walk(child, f"{path}.{key}" if path else key)
                    for key, child in item.items()}
        return item

    cleaned = walk(node, "")
    if found:
        first = _LONE_SURROGATE.sub("\ufffd", found[0])
        notes.append((first, f"{len(found)} string{'s' if len(found) > 1 else ''} of the file (the first at "
                             f"{first}) held a lone UTF-16 surrogate escape (\\uD800-\\uDFFF not in a pair), "
                             f"which is not a character: each replaced by U+FFFD", None))
    return cleaned


def _collect_duplicates(node: Any, path: str, notes: list[tuple[str, str, Any]]) -> None:
    """Find the dicts the parse hook marked, note their duplicated keys with JSON paths, and remove the marks."""
    if type(node) is dict:
        names = node.pop(_DUPLICATE_MARK, None)
        for name in names or ():
            where = f"{path}.{name}" if path else name
            notes.append((where, f"duplicate key {name!r} in one JSON object; the last value is used (RFC 8259 "
                                 f"leaves duplicates undefined); last value used", node.get(name)))
        for key, child in node.items():
            if type(child) in (dict, list):
                _collect_duplicates(child, f"{path}.{key}" if path else key, notes)
    elif type(node) is list:
        for i, child in enumerate(node):
            if type(child) in (dict, list):
                _collect_duplicates(child, f"{path}[{i}]", notes)


def _empty_file_result() -> ObFileResult:
    return ObFileResult(tables={TABLES[r]: [] for r in RESOURCES}, quarantine=[])


def _reject_file(result: ObFileResult, source_file: str, reason: str, raw: Any = None) -> ObFileResult:
    """Quarantine the whole file (column_name null, as for any file that cannot be used) and keep none of its rows."""
    result.quarantine.append(_quarantine_row(source_file, None, f"{reason}; {FILE_REJECTED}", raw))
    result.file_rejected = True
    return result


def _hidden(value: str) -> str | None:
    """Why an id (of a record, or the envelope's provider or consent_id) or a name does not read as what it holds,
    or None."""
    if BIDI_CHARACTER.search(value) is not None:
        return BIDI_REASON
    if REPLACEMENT_REGEX in value:
        return REPLACEMENT_REASON
    return invisible_reason(value) or lookalike_reason(value)


def _envelope_context(envelope: dict[str, Any], source_file: str
                      ) -> tuple[ObContext | None, list[tuple[str, Any]]]:
    """The ObContext of an envelope, or the (reason, raw) faults that prevent it."""
    faults: list[tuple[str, Any]] = []
    for key in ("customer_id", "provider"):
        value = envelope.get(key)
        if value is None:
            faults.append((f"envelope has no {key}", None))
        elif type(value) is not str or not value.strip():
            faults.append((f"envelope {key} is {_kind_of(value)} {value!r}, expected a non-empty string", value))
        elif key == "customer_id" and CUSTOMER_ID.fullmatch(value) is None:
            faults.append(("envelope customer_id is not an id (1-64 characters of A-Z a-z 0-9 _ . : -, as in "
                           "customers.csv)", value))
        elif CONTROL_CHARACTER.search(value):
            faults.append((f"envelope {key} contains a control character", value))
        elif _hidden(value):
            faults.append((f"envelope {key} {_hidden(value)}", value))
        elif len(value) > openbanking_lengths().limit(f"envelope.{key}"):
            faults.append((f"envelope {too_long(key, value, openbanking_lengths().limit(f'envelope.{key}'))}", value))
    fetched_raw = envelope.get("fetched_at")
    fetched_at = None
    if fetched_raw is None:
        faults.append(("envelope has no fetched_at", None))
    elif type(fetched_raw) is not str:
        faults.append((f"envelope fetched_at is {_kind_of(fetched_raw)}, expected an ISO 8601 date-time",
                       fetched_raw))
    else:
        try:
            fetched_at = datetime.fromisoformat(fetched_raw)
        except ValueError:
            faults.append((f"envelope fetched_at {fetched_raw!r} is not an ISO 8601 date-time", fetched_raw))
        else:
            if fetched_at.tzinfo is None:
                faults.append((f"envelope fetched_at {fetched_raw!r} has no time zone offset", fetched_raw))
            elif not offset_in_range(fetched_at):
                faults.append((f"envelope fetched_at {fetched_raw!r} has a zone offset out of range (-14:00 to "
                               f"+14:00, whole minutes)", fetched_raw))
            elif not instant_in_range(fetched_at):
                faults.append((f"envelope fetched_at {fetched_raw!r} is {INSTANT_OUT_OF_RANGE}", fetched_raw))
    consent_id = envelope.get("consent_id")
    if consent_id is not None and type(consent_id) is not str:
        faults.append((f"envelope consent_id is {_kind_of(consent_id)}, expected a string", consent_id))
    elif consent_id is not None and _hidden(consent_id):
        faults.append((f"envelope consent_id {_hidden(consent_id)}", consent_id))
    elif consent_id is not None and len(consent_id) > openbanking_lengths().limit("envelope.consent_id"):
        faults.append((f"envelope {too_long('consent_id', consent_id, openbanking_lengths().limit('envelope.consent_id'))}",
                       consent_id))
    if faults:
        return None, faults
    return ObContext(customer_id=envelope["customer_id"], provider=envelope["provider"], consent_id=consent_id,
                     fetched_at=fetched_at, source_file=source_file), []


def parse_envelope_file(path: Path, source_file: str, max_bytes: int = DEFAULT_MAX_BYTES,
                        max_depth: int = DEFAULT_MAX_DEPTH, max_quarantine_rows: int | None = None) -> ObFileResult:
    """Read one envelope file into rows per `ob_*` table and quarantine rows; never raises on bad content.

    A file over max_bytes is quarantined from its size without being read. Rows are not deduplicated here. At most
    max_quarantine_rows quarantine rows of the file's records are kept (None: all), then one row that counts the rest.
    """
    result = _empty_file_result()
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return _reject_file(result, source_file, f"file is {size} bytes, over the limit of {max_bytes} bytes "
                                                     f"(max_bytes); not read")
        with open(path, "rb", opener=_no_follow) as handle:  # a link put in its place is not followed
            data = handle.read(max_bytes + 1)
    except OSError as error:
        return _reject_file(result, source_file, f"cannot read file: {error}")
    if len(data) > max_bytes:
        return _reject_file(result, source_file, f"file is over the limit of {max_bytes} bytes (max_bytes); "
                                                 f"not read further")
    return _parse_envelope_data(data, source_file, max_depth, max_quarantine_rows)


def _parse_envelope_data(data: bytes, source_file: str, max_depth: int, max_quarantine_rows: int | None,
                         fast_transactions: tuple[int, frozenset[str]] | None = None) -> ObFileResult:
    """`parse_envelope_file` once the bytes are read. fast_transactions: (rows, the `_id_part` of each AccountId) of
    the columnar rows of this file's transactions (openbanking_fast.screen_transactions); used only when the parse reaches the transactions resource
    without a note on the file (duplicate keys, bytes not UTF-8, lone surrogates) and every account they name is
    listed; otherwise the transactions are read here as always."""
    result = _empty_file_result()
    envelope, reason, excerpt, duplicate_notes = decode_json(data, max_depth)
    if reason is not None:
        return _reject_file(result, source_file, reason, excerpt)
    if type(envelope) is not dict:
        return _reject_file(result, source_file, f"envelope is {_kind_of(envelope)}, expected an object")
    for where, why, raw in duplicate_notes:
        result.quarantine.append(_quarantine_row(source_file, where, why, raw))
    context, faults = _envelope_context(envelope, source_file)
    if context is None:
        for why, raw in faults:
            _reject_file(result, source_file, why, raw)
        return result
    listed: frozenset[str] | None = None
    unlisted = 0
    for resource in RESOURCES:  # accounts first: what the envelope lists bounds what its other resources may touch
        room = None if max_quarantine_rows is None else max(0, max_quarantine_rows - len(result.quarantine))
        if (resource == "transactions" and fast_transactions is not None and not duplicate_notes
                and _all_listed(fast_transactions[1], context, listed)):
            result.fast_rows = fast_transactions[0]
            result.fast_context = context
            result.records_read += fast_transactions[0]
            continue
        parsed = parse_resource(resource, envelope.get(resource), context, listed, max_rows=room)
        if resource == "accounts":
            listed = frozenset(row["account_id"] for row in parsed.rows)
        result.tables[TABLES[resource]].extend(parsed.rows)
        result.quarantine.extend(parsed.quarantine)
        unlisted += parsed.unlisted
        result.records_read += parsed.records_read
        result.records_rejected += parsed.records_rejected
        result.pages_rejected += parsed.pages_rejected
    if unlisted:
        result.quarantine.append(_quarantine_row(
            source_file, None, f"{unlisted} more quarantine rows of this file not listed (ingest."
            f"max_quarantine_rows_per_file is {max_quarantine_rows}); their records are rejected and counted all the "
            f"same ({result.records_rejected} of {result.records_read} records of the file rejected)", None))
    return result


def _all_listed(account_parts: frozenset[str], context: ObContext, listed: frozenset[str] | None) -> bool:
    """Whether every account the columnar transactions name is one the envelope's accounts resource listed."""
    if listed is None:
        return False
    prefix = f"ob:{_id_part(context.provider)}:"
    return all(prefix + part in listed for part in account_parts)


_ARROW_TYPES = {"str": pa.string(), "decimal": pa.decimal128(18, 2), "ts": pa.timestamp("us", tz="UTC"),
                "date": pa.date32(), "int": pa.int64()}


def _pandas_type(arrow_type: pa.DataType) -> Any:
    """Arrow -> pandas dtypes of the bronze frames: decimals and dates stay Arrow-backed, ints nullable."""
    if pa.types.is_decimal(arrow_type) or pa.types.is_date(arrow_type):
        return pd.ArrowDtype(arrow_type)
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None


def rows_to_frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of one `ob_*` table as a DataFrame with the documented columns and dtypes (also when empty)."""
    return arrow_to_frame(table, rows_to_arrow(table, rows))


def rows_to_arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of one `ob_*` table as an Arrow table of its documented columns and types."""
    columns = COLUMNS[table]
    names = [name for name, _ in columns]
    values = list(zip(*map(itemgetter(*names), rows))) if rows else [()] * len(names)
    arrays = [pa.array(column_values, type=_ARROW_TYPES[kind]) for column_values, (_, kind) in zip(values, columns)]
    return pa.table(arrays, names=names)


def arrow_to_frame(table: str, arrow: pa.Table) -> pd.DataFrame:
    """An Arrow table of one `ob_*` table's columns as the bronze DataFrame (the dtypes of the module docstring)."""
    columns = COLUMNS[table]
    frame = arrow.to_pandas(types_mapper=_pandas_type)
    for name, kind in columns:
        if kind == "str" and str(frame[name].dtype) != "str":
            frame[name] = frame[name].astype("str")
    return frame


def quarantine_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Quarantine rows as a DataFrame: file, line (Int64, null for JSON), column_name, reason, raw_value."""
    return pd.DataFrame({
        "file": pd.array([r["file"] for r in rows], dtype="str"),
        "line": pd.array([r["line"] for r in rows], dtype="Int64"),
        "column_name": pd.array([r["column_name"] for r in rows], dtype="str"),
        "reason": pd.array([r["reason"] for r in rows], dtype="str"),
        "raw_value": pd.array([r["raw_value"] for r in rows], dtype="str"),
    })


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def _source_file(path: Path, resolved_root: Path, folders: dict[Path, Path] | None = None) -> str:
    """The path relative to the landing root (POSIX separators); the path itself when it lies elsewhere.

    `folders` caches each folder's resolved path across the files of one batch: a file that is not itself a link
    resolves to its resolved folder plus its name, one lstat instead of one per component of the path."""
    if folders is not None and path.name not in ("", ".", "..") and not path.is_symlink():
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        resolved = folder / path.name
    else:
        resolved = path.resolve()
    try:
        return resolved.relative_to(resolved_root).as_posix()
    except ValueError:
        return path.as_posix()


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused, then restored as it was.

    The parse builds millions of small objects (JSON trees, row dicts, Decimals, datetimes) and keeps the rows: each
    collection of the oldest generation walks all of them again (about a tenth of the parse's CPU for a history of
    10,000 customers; benchmarks/README.md, "History load: the open-banking parse"). None of them forms a reference cycle (the JSON and the rows are trees), so
    reference counting frees each one as before; cycles made meanwhile (an exception's traceback) wait for the
    next collection after the parse. Pausing is process-wide: other threads of the process are not collected
    during it either."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_chunk(paths: list[str], landing_root: str, max_bytes: int, max_depth: int,
                 max_quarantine_rows: int | None = None, columnar: bool = True
                 ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, int]]:
    """Parse some files into (un-deduplicated frames, quarantine frame, counts); runs in a worker process too."""
    with _no_cycle_collection():
        return _parse_chunk_files(paths, landing_root, max_bytes, max_depth, max_quarantine_rows, columnar)


def _read_envelope_bytes(path: Path, source_file: str, max_bytes: int) -> tuple[bytes | None, ObFileResult | None]:
    """(the file's bytes, None), or (None, the file quarantined whole): over max_bytes, unreadable, a link."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, _reject_file(_empty_file_result(), source_file, f"file is {size} bytes, over the limit of "
                                                                         f"{max_bytes} bytes (max_bytes); not read")
        with open(path, "rb", opener=_no_follow) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        return None, _reject_file(_empty_file_result(), source_file, f"cannot read file: {error}")
    if len(data) > max_bytes:
        return None, _reject_file(_empty_file_result(), source_file, f"file is over the limit of {max_bytes} bytes "
                                                                     f"(max_bytes); not read further")
    return data, None


def _fast_rows(table: pa.Table, accepted: list[tuple[int, ObContext]]) -> pa.Table:
    """The columnar transaction rows of the accepted files of a batch (file, its context from the Python parse of the
    file, in file order) in the `ob_transactions` columns and types, with the same context values its rows would
    carry."""
    positions = pa.array([position for position, _ in accepted], pa.int64())
    rows = table.filter(pc.is_in(table.column("file_pos"), value_set=positions))  # ordered by file, then record
    _, counts = np.unique(rows.column("file_pos").to_numpy(), return_counts=True)
    repeat = pa.array(np.repeat(np.arange(len(accepted)), counts))
    contexts = [context for _, context in accepted]
    per_file = {
        "prefix": pa.array([f"ob:{_id_part(c.provider)}:" for c in contexts], pa.string()),
        "customer_id": pa.array([c.customer_id for c in contexts], pa.string()),
        "provider": pa.array([c.provider for c in contexts], pa.string()),
        "consent_id": pa.array([c.consent_id for c in contexts], pa.string()),
        "fetched_at": pa.array([c.fetched_at.astimezone(UTC) for c in contexts], _ARROW_TYPES["ts"]),
        "source_file": pa.array([c.source_file for c in contexts], pa.string()),
    }
    column = {name: values.take(repeat) for name, values in per_file.items()}
    account_id = pc.binary_join_element_wise(column.pop("prefix"), rows.column("account_part"), "")
    column.update({
        "transaction_id": pc.binary_join_element_wise(account_id, rows.column("transaction_part"), ":"),
        "account_id": account_id,
        "booked_at": rows.column("booked_at").cast(pa.timestamp("us")).cast(_ARROW_TYPES["ts"]),
        "value_at": rows.column("value_at").cast(pa.timestamp("us")).cast(_ARROW_TYPES["ts"]),
    })
    arrays = [column[name] if name in column else rows.column(name).cast(_ARROW_TYPES[kind])
              for name, kind in COLUMNS["ob_transactions"]]
    return pa.table(arrays, names=[name for name, _ in COLUMNS["ob_transactions"]])


def _parse_chunk_files(paths: list[str], landing_root: str, max_bytes: int, max_depth: int,
                       max_quarantine_rows: int | None, columnar: bool = True
                       ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, int]]:
    from pipelines.ingest import openbanking_fast

    tables: dict[str, list[dict[str, Any]]] = {TABLES[r]: [] for r in RESOURCES}
    python_positions: list[int] = []  # the file of each row of tables["ob_transactions"]
    fast_parts: list[tuple[np.ndarray, pa.Table]] = []  # (the file of each row, columnar transactions) per batch
    quarantine: list[dict[str, Any]] = []
    counts = {"files": 0, "files_rejected": 0, "records_read": 0, "records_rejected": 0, "pages_rejected": 0}
    root = Path(landing_root).resolve()
    folders: dict[Path, Path] = {}
    bound = max_amount("transactions")
    with contextlib.closing(openbanking_fast.connect()) if columnar else contextlib.nullcontext() as con:
        _parse_batches(paths, root, folders, bound, max_bytes, max_depth, max_quarantine_rows, con, tables,
                       python_positions, fast_parts, quarantine, counts)
    frames = {table: rows_to_frame(table, rows) for table, rows in tables.items() if table != "ob_transactions"}
    frames["ob_transactions"] = _merge_transactions(tables["ob_transactions"], python_positions, fast_parts)
    return frames, quarantine_frame(quarantine), counts


def _parse_batches(paths: list[str], root: Path, folders: dict[Path, Path], bound: Decimal, max_bytes: int,
                   max_depth: int, max_quarantine_rows: int | None, con: Any,
                   tables: dict[str, list[dict[str, Any]]], python_positions: list[int],
                   fast_parts: list[tuple[np.ndarray, pa.Table]], quarantine: list[dict[str, Any]],
                   counts: dict[str, int]) -> None:
    """The files of a chunk, FAST_BATCH_FILES at a time: read, the columnar screen (with `con`; None: off), then
    each file through the reader, its results appended to the chunk's lists."""
    from pipelines.ingest import openbanking_fast

    for start in range(0, len(paths), FAST_BATCH_FILES):
        batch: list[tuple[int, str, bytes | None, ObFileResult | None]] = []
        for position in range(start, min(start + FAST_BATCH_FILES, len(paths))):
            path = Path(paths[position])
            source_file = _source_file(path, root, folders)
            data, rejected = _read_envelope_bytes(path, source_file, max_bytes)
            batch.append((position, source_file, data, rejected))
        fast: dict[int, tuple[int, frozenset[str]]] = {}
        columnar_rows: pa.Table | None = None
        if con is not None:
            plain = [(position, data) for position, _, data, _ in batch
                     if data is not None and openbanking_fast.plain_ascii(data)]
            try:
                columnar_rows, fast = openbanking_fast.screen_transactions(plain, bound, con)
            except Exception:  # the columnar path is an optimisation: any failure leaves every file to the reader
                log.exception("open-banking columnar screen failed for %d files; read record by record", len(plain))
                columnar_rows, fast = None, {}
        accepted: list[tuple[int, ObContext]] = []
        for position, source_file, data, result in batch:
            if result is None:
                try:
                    result = _parse_envelope_data(data, source_file, max_depth, max_quarantine_rows,
                                                  fast.get(position))
                except Exception as error:  # a bug must cost one file, not the night; the quarantine gate sees it
                    log.exception("open-banking file %s could not be parsed", source_file)
                    result = _reject_file(_empty_file_result(), source_file,
                                          f"unexpected error while parsing ({type(error).__name__}: {error})")
            for table, rows in result.tables.items():
                tables[table].extend(rows)
            python_positions.extend([position] * len(result.tables["ob_transactions"]))
            if result.fast_context is not None:
                accepted.append((position, result.fast_context))
            quarantine.extend(result.quarantine)
            counts["files"] += 1
            counts["files_rejected"] += int(result.file_rejected)
            counts["records_read"] += result.records_read
            counts["records_rejected"] += result.records_rejected
            counts["pages_rejected"] += result.pages_rejected
        if accepted and columnar_rows is not None:
            part = _fast_rows(columnar_rows, accepted)
            fast_parts.append((np.repeat([position for position, _ in accepted],
                                         [fast[position][0] for position, _ in accepted]), part))


def _merge_transactions(rows: list[dict[str, Any]], positions: list[int],
                        fast_parts: list[tuple[np.ndarray, pa.Table]]) -> pd.DataFrame:
    """The transactions of a chunk in file order (each file's rows come from one path, in record order)."""
    python_table = rows_to_arrow("ob_transactions", rows)
    if not fast_parts:
        return arrow_to_frame("ob_transactions", python_table)
    combined = pa.concat_tables([python_table] + [part for _, part in fast_parts])
    order = np.concatenate([np.asarray(positions, dtype=np.int64)]
                           + [files.astype(np.int64) for files, _ in fast_parts])
    return arrow_to_frame("ob_transactions", combined.take(np.argsort(order, kind="stable")))


def deduplicate(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per dedup key of `table`: the latest fetched_at, ties to the later row; order kept otherwise.

    Rows whose key has a null part (e.g. a standing order without StandingOrderId) are all kept.
    """
    keys = list(DEDUP_KEYS[table])
    if frame.empty:
        return frame
    complete = frame[keys].notna().all(axis=1)
    keyed = frame[complete]
    ordered = keyed.sort_values("fetched_at", kind="stable")
    kept = ordered[~ordered.duplicated(subset=keys, keep="last")]
    return pd.concat([kept, frame[~complete]]).sort_index().reset_index(drop=True)


def parse_openbanking_files(files: list[Path], landing_root: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                            max_depth: int = DEFAULT_MAX_DEPTH, workers: int = 1,
                            max_quarantine_rows: int | None = None, columnar: bool = True) -> ObBatch:
    """Parse envelope files into the six deduplicated `ob_*` DataFrames plus one quarantine DataFrame.

    source_file is each path relative to landing_root. With workers > 1 and at least MIN_FILES_PER_WORKER files per
    worker, files are parsed in a process pool (spawned, so safe next to DuckDB and Airflow threads; a spawn costs about
    half a second); results are combined in `files` order, so the output does not depend on the number of workers.
    columnar: let the columnar path give the transactions of the envelopes its screen passes
    (pipelines/ingest/openbanking_fast.py; the ingest passes config/segone.yaml ingest.openbanking_columnar); False
    reads every record in Python. The output is the same either way.
    """
    names = [str(path) for path in files]
    chunks: list[tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, int]]]
    if workers > 1 and len(names) >= MIN_FILES_PER_WORKER * workers:
        size = max(1, math.ceil(len(names) / (workers * 4)))
        pieces = [names[i:i + size] for i in range(0, len(names), size)]
        from pipelines.parallel import process_pool  # children that never re-run Airflow's CLI inside a task

        with process_pool(workers) as pool:
            futures = [pool.submit(_parse_chunk, piece, str(landing_root), max_bytes, max_depth, max_quarantine_rows,
                                   columnar)
                       for piece in pieces]
            chunks = [future.result() for future in futures]
    else:
        chunks = [_parse_chunk(names, str(landing_root), max_bytes, max_depth, max_quarantine_rows, columnar)]
    stats = {"files": 0, "files_rejected": 0, "records_read": 0, "records_rejected": 0, "pages_rejected": 0}
    for _, _, counts in chunks:
        for key, value in counts.items():
            stats[key] += value
    tables = {}
    for resource in RESOURCES:
        table = TABLES[resource]
        parts = [frames[table] for frames, _, _ in chunks if not frames[table].empty]
        combined = (pd.concat(parts, ignore_index=True) if len(parts) > 1
                    else parts[0] if parts else chunks[0][0][table])
        deduplicated = deduplicate(table, combined)
        stats[f"{table}_rows"] = len(deduplicated)
        stats[f"{table}_duplicates"] = len(combined) - len(deduplicated)
        tables[table] = deduplicated
    quarantine_parts = [q for _, q, _ in chunks if not q.empty]
    quarantine = (pd.concat(quarantine_parts, ignore_index=True) if quarantine_parts else chunks[0][1])
    stats["quarantine_rows"] = len(quarantine)
    return ObBatch(tables=tables, quarantine=quarantine, stats=stats)
