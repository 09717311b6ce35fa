"""The Berka importer: the PKDD'99 Czech bank data set turned into the landing contract (DESIGN.md section 4).

`segone import-berka DIR` reads the Berka `.asc` files (';'-separated, CRLF, dates YYMMDD, unsigned amounts with
the direction in `type`) and writes customers, accounts, transactions, balances, consents, crm_responses,
life_events and fx_rates under `$SEGONE_HOME/landing/history/`, so that `segone load-history` can run the whole
pipeline on a real bank's history. Every mapping choice is explained in docs/berka.md.

What does not fit is counted, never dropped silently: malformed or invalid rows go to
`$SEGONE_HOME/imports/berka/rejected_rows.csv` with the file, the key, the reason and the raw row, and the summary
(also `summary.json` there) lists every exclusion with its count.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from pipelines.config import Paths
from pipelines.contract import landing_contract
from pipelines.errors import SegoneError
from pipelines.lake import connect, swap_in

PRAGUE = ZoneInfo("Europe/Prague")
CURRENCY = "CZK"
COUNTRY = "CZ"

# The guide's count of the complete transaction table. A copy with fewer rows is a head of the date-sorted original,
# so its last date is cut short (we cannot tell a cut at a day boundary from one inside a day).
FULL_TRANSACTION_ROWS = 1_056_320
# A day whose balances and amounts disagree by at most this many cents is a rounding difference (interest), not a gap.
ROUNDING_TOLERANCE_CENTS = 20
MAX_TRANSACTION_ROWS_PER_FILE = 500_000

# Direction: PRIJEM credit; VYDAJ debit; VYBER cash withdrawal (a quirk of the original, where VYBER also appears in
# `type`). The canonical mapping: amount * (type == 'PRIJEM' ? 1 : -1).
TYPE_SIGN = {"PRIJEM": 1, "VYDAJ": -1, "VYBER": -1}

# The guide's translations (reference/berka/README.md).
OPERATION_TEXT = {
    "VYBER KARTOU": "card withdrawal",
    "VKLAD": "cash credit",
    "PREVOD Z UCTU": "collection from another bank",
    "VYBER": "cash withdrawal",
    "PREVOD NA UCET": "remittance to another bank",
}
K_SYMBOL_TEXT = {
    "POJISTNE": "insurance payment",
    "SLUZBY": "statement fee",
    "UROK": "interest credited",
    "SANKC. UROK": "penalty interest on a negative balance",
    "SIPO": "household payment",
    "DUCHOD": "old-age pension",
    "UVER": "loan payment",
    "LEASING": "leasing payment",
}

# Channel: the payment's purpose (k_symbol) says more than its mechanism, so it wins when it names one.
K_SYMBOL_CHANNEL = {
    "UROK": "interest",          # interest credited by the bank
    "SANKC. UROK": "fee",        # penalty interest charged on a negative balance: a charge, not earned interest
    "SLUZBY": "fee",             # statement fee
    "SIPO": "direct_debit",      # household bills collected through the Czech Post's SIPO collection scheme
    "POJISTNE": "direct_debit",  # insurance premium: a bill
    "UVER": "direct_debit",      # loan instalment: a fixed commitment like a bill
    "LEASING": "direct_debit",   # leasing instalment (order table only)
    "DUCHOD": "benefit",         # old-age pension
}
OPERATION_CHANNEL = {
    "VKLAD": "cash_deposit",
    "VYBER": "atm",              # cash out (ATM or counter: Berka does not say which)
    "VYBER KARTOU": "card",
    "PREVOD Z UCTU": "transfer_in",
    "PREVOD NA UCET": "transfer_out",  # becomes standing_order when it executes a permanent order (order.asc)
}

TRANSACTION_COLUMNS = ["trans_id", "account_id", "date", "type", "operation", "amount", "balance", "k_symbol",
                       "bank", "account"]


@dataclass
class Rejections:
    """Source rows that could not be imported, with the reason: counted in the summary, listed in a CSV."""

    rows: list[pd.DataFrame] = field(default_factory=list)

    def add(self, source_file: str, frame: pd.DataFrame, key_column: str | None, reason: str) -> None:
        if frame.empty:
            return
        raw = frame.astype("string").fillna("").agg(";".join, axis=1)
        key = frame[key_column].astype("string").fillna("") if key_column else pd.Series("", index=frame.index)
        self.rows.append(pd.DataFrame({"file": source_file, "key": key.to_numpy(), "reason": reason,
                                       "raw_row": raw.to_numpy()}))

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return pd.DataFrame(columns=["file", "key", "reason", "raw_row"])
        return pd.concat(self.rows, ignore_index=True)

    def counts(self) -> dict[str, int]:
        frame = self.frame()
        if frame.empty:
            return {}
        grouped = frame.groupby(["file", "reason"]).size()
        return {f"{file}: {reason}": int(n) for (file, reason), n in grouped.items()}


# ---------------------------------------------------------------------------------------------------- reading


def read_asc(path: Path, rejections: Rejections) -> pd.DataFrame:
    """A Berka file as text columns ('' for empty), with lines that do not parse recorded as rejections.

    DuckDB reads ';'-separated, quoted, CRLF and gzip input alike, and keeps the lines it rejects (store_rejects).
    """
    con = connect()
    try:
        frame = con.execute(
            "select * from read_csv(?, delim = ';', header = true, all_varchar = true, quote = '\"', "
            "escape = '\"', store_rejects = true, strict_mode = true)", [str(path)]
        ).df()
        rejected = con.execute(
            "select line, string_agg(distinct error_type::varchar, ', ') as error_type, "
            "any_value(csv_line) as csv_line from reject_errors group by line order by line"
        ).df()
    finally:
        con.close()
    if not rejected.empty:
        rejections.rows.append(pd.DataFrame({
            "file": path.name, "key": "line " + rejected["line"].astype("string"),
            "reason": "unparseable line: " + rejected["error_type"].str.lower(),
            "raw_row": rejected["csv_line"].astype("string"),
        }))
    frame = frame.astype("string").fillna("")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return frame


def find_transaction_file(source: Path) -> Path:
    """trans.asc (or .gz) when present; otherwise the largest trans*.asc* copy (a partial head, not the sample)."""
    for name in ("trans.asc", "trans.asc.gz"):
        if (source / name).exists():
            return source / name
    candidates = sorted(source.glob("trans*.asc*"), key=lambda p: p.stat().st_size, reverse=True)
    if not candidates:
        raise SegoneError(f"{source}: no Berka transaction file (trans.asc, trans.asc.gz, trans*.asc*)")
    return candidates[0]


def parse_yymmdd(text: pd.Series) -> pd.Series:
    """Berka dates (YYMMDD, all in the 1900s; card.issued adds ' 00:00:00') as datetimes; NaT when invalid."""
    digits = text.str.slice(0, 6)
    return pd.to_datetime("19" + digits.where(digits.str.fullmatch(r"\d{6}")), format="%Y%m%d", errors="coerce")


def decode_birth_number(birth_number: pd.Series) -> pd.Series:
    """The birth date in a Berka birth_number (YYMMDD, where women have 50 added to the month); NaT when invalid.

    Only the date is returned: the sex the month encodes is special-category-adjacent and is not kept.
    """
    text = birth_number.str.strip()
    valid = text.str.fullmatch(r"\d{6}")
    month = pd.to_numeric(text.str.slice(2, 4).where(valid), errors="coerce")
    month = month.where(month <= 50, month - 50)
    rebuilt = "19" + text.str.slice(0, 2) + month.astype("Int64").astype("string").str.zfill(2) + text.str.slice(4, 6)
    return pd.to_datetime(rebuilt.where(valid), format="%Y%m%d", errors="coerce")


def parse_cents(text: pd.Series) -> pd.Series:
    """Decimal strings (at most 2 decimals) as integer cents (Int64); <NA> when not a number."""
    valid = text.str.fullmatch(r"-?\d+(\.\d{1,2})?")
    values = pd.to_numeric(text.where(valid), errors="coerce")
    return (values * 100).round().astype("Int64")


def format_cents(cents: pd.Series) -> pd.Series:
    """Integer cents as decimal strings with 2 decimals ('-1234.50'); '' for missing."""
    present = cents.notna()
    values = cents.fillna(0).astype("int64")
    absolute = values.abs()
    text = (np.where(values < 0, "-", "") + (absolute // 100).astype("string") + "."
            + (absolute % 100).astype("string").str.zfill(2))
    return text.where(present, "")


def prague_midnight(days: pd.Series) -> pd.Series:
    """Midnight of each date in Europe/Prague as ISO 8601 with its real offset (+01:00, or +02:00 in summer time).

    zoneinfo carries the historic rules (in 1993-1995 summer time ended on the last Sunday of September). Computed
    once per distinct date, so a million rows cost a few hundred conversions.
    """
    distinct = pd.Series(days.dropna().unique())
    stamps = {day: datetime(day.year, day.month, day.day, tzinfo=PRAGUE).isoformat() for day in distinct}
    return days.map(stamps).astype("string").fillna("")


def iso_date(days: pd.Series) -> pd.Series:
    return days.dt.strftime("%Y-%m-%d").astype("string").fillna("")


# ---------------------------------------------------------------------------------------------------- entities


@dataclass
class Entities:
    """Customers and accounts in contract columns, the opening date of every Berka account, and figures."""

    customers: pd.DataFrame
    accounts: pd.DataFrame
    account_opened: pd.Series  # Berka account_id -> opened date, for every account (before the cut-off)
    figures: dict[str, Any]


@dataclass
class BerkaTables:
    """The small Berka tables as text, read once."""

    clients: pd.DataFrame
    dispositions: pd.DataFrame
    districts: pd.DataFrame
    accounts: pd.DataFrame
    loans: pd.DataFrame
    cards: pd.DataFrame


REQUIRED_TABLES = ("client", "disp", "district", "account")
OPTIONAL_TABLES = {"loan": ["loan_id", "account_id", "date", "amount", "duration", "payments", "status"],
                   "card": ["card_id", "disp_id", "type", "issued"]}


def read_tables(source: Path, rejections: Rejections) -> BerkaTables:
    """The small tables; loan.asc and card.asc may be absent (no loans, no cards), the others may not."""
    missing = [f"{name}.asc" for name in REQUIRED_TABLES if not (source / f"{name}.asc").exists()]
    if missing:
        raise SegoneError(f"{source}: not a Berka folder, missing {', '.join(missing)}")
    frames = [read_asc(source / f"{name}.asc", rejections) for name in REQUIRED_TABLES]
    for name, columns in OPTIONAL_TABLES.items():
        path = source / f"{name}.asc"
        frames.append(read_asc(path, rejections) if path.exists() else pd.DataFrame(columns=columns, dtype="string"))
    return BerkaTables(*frames)


def build_entities(tables: BerkaTables, cutoff: date | None, rejections: Rejections) -> Entities:
    """customers.csv and accounts.csv (current accounts from account.asc, loan accounts from loan.asc).

    With a cut-off, customers and accounts that only start after it are left out (and counted): the history then
    describes the bank as it was on the last complete day, and no opening date lies after the business date.
    Cards (card.asc) are not accounts: their postings (VYBER KARTOU) are on the current account, with no own
    balance or limit.
    """
    clients, dispositions, districts = tables.clients.copy(), tables.dispositions, tables.districts
    accounts, loans, cards = tables.accounts.copy(), tables.loans.copy(), tables.cards

    accounts["opened"] = parse_yymmdd(accounts["date"])
    bad = accounts["opened"].isna()
    rejections.add("account.asc", accounts.loc[bad, ["account_id", "district_id", "frequency", "date"]],
                   "account_id", "invalid opening date")
    accounts = accounts[~bad]

    known_accounts = set(accounts["account_id"])
    known_clients = set(clients["client_id"])
    orphan = ~dispositions["account_id"].isin(known_accounts) | ~dispositions["client_id"].isin(known_clients)
    rejections.add("disp.asc", dispositions[orphan], "disp_id", "unknown client or account")
    unknown_type = ~dispositions["type"].isin(["OWNER", "DISPONENT"])
    rejections.add("disp.asc", dispositions[unknown_type & ~orphan], "disp_id", "unknown disposition type")
    dispositions = dispositions[~orphan & ~unknown_type]

    owners = dispositions[dispositions["type"] == "OWNER"].drop_duplicates("account_id")
    owner_of_account = ("B" + owners.set_index("account_id")["client_id"]).rename("customer_id")
    ownerless = ~accounts["account_id"].isin(owner_of_account.index)
    rejections.add("account.asc", accounts.loc[ownerless, ["account_id", "district_id", "frequency", "date"]],
                   "account_id", "no OWNER disposition")
    accounts = accounts[~ownerless]
    account_opened = accounts.set_index("account_id")["opened"]

    # A client is a customer from the earliest opening date of any account they hold (owner or disponent).
    held = dispositions.merge(accounts[["account_id", "opened"]], on="account_id")
    customer_since = held.groupby("client_id")["opened"].min()
    clients = clients.merge(customer_since.rename("since"), left_on="client_id", right_index=True, how="left")
    no_account = clients["since"].isna()
    rejections.add("client.asc", clients.loc[no_account, ["client_id", "birth_number", "district_id"]],
                   "client_id", "no disposition on a known account")
    clients = clients[~no_account]

    clients["birth_date"] = decode_birth_number(clients["birth_number"])
    region = districts.set_index("A1")["A3"]
    clients["region"] = clients["district_id"].map(region).astype("string").fillna("")
    figures: dict[str, Any] = {
        "clients_with_invalid_birth_number": int(clients["birth_date"].isna().sum()),
        "clients_with_unknown_district": int((clients["region"] == "").sum()),
    }

    loans["granted"] = parse_yymmdd(loans["date"])
    bad_loan = loans["granted"].isna() | ~loans["account_id"].isin(owner_of_account.index)
    rejections.add("loan.asc", loans.loc[bad_loan, ["loan_id", "account_id", "date", "amount", "duration",
                                                    "payments", "status"]],
                   "loan_id", "invalid date or unknown account")
    loans = loans[~bad_loan]

    if cutoff is not None:
        limit = pd.Timestamp(cutoff)
        figures["customers_starting_after_cutoff"] = int((clients["since"] > limit).sum())
        figures["accounts_opened_after_cutoff"] = int((accounts["opened"] > limit).sum())
        figures["loans_granted_after_cutoff"] = int((loans["granted"] > limit).sum())
        clients = clients[clients["since"] <= limit]
        accounts = accounts[accounts["opened"] <= limit]
        loans = loans[loans["granted"] <= limit]

    customers_out = pd.DataFrame({
        "customer_id": "B" + clients["client_id"],
        "birth_year": clients["birth_date"].dt.year.astype("Int64").astype("string").fillna(""),
        "region": clients["region"],
        "customer_since": iso_date(clients["since"]),
        "known_vulnerability": "",
    })
    current_accounts = pd.DataFrame({
        "account_id": "B" + accounts["account_id"],
        "customer_id": accounts["account_id"].map(owner_of_account),
        "product": "current",
        "currency": CURRENCY,
        "opened_on": iso_date(accounts["opened"]),
        "closed_on": "",
        "overdraft_limit": "",
        "credit_limit": "",
    })
    loan_accounts = pd.DataFrame({
        "account_id": "BL" + loans["loan_id"],
        "customer_id": loans["account_id"].map(owner_of_account),
        "product": "loan",
        "currency": CURRENCY,
        "opened_on": iso_date(loans["granted"]),
        "closed_on": "",
        "overdraft_limit": "",
        "credit_limit": "",
    })
    figures.update({
        "loan_accounts": len(loan_accounts),
        "loans_in_debt_status_D": int((loans["status"] == "D").sum()),
        "cards_not_imported": len(cards),
    })
    return Entities(
        customers=customers_out.sort_values("customer_id", key=_numeric_key).reset_index(drop=True),
        accounts=pd.concat([current_accounts, loan_accounts], ignore_index=True),
        account_opened=account_opened,
        figures=figures,
    )


def _numeric_key(ids: pd.Series) -> pd.Series:
    return pd.to_numeric(ids.str.replace(r"\D", "", regex=True), errors="coerce")


# ---------------------------------------------------------------------------------------------------- postings


@dataclass
class Postings:
    """Validated Berka transactions of the complete window, typed, and the figures about what was left out."""

    rows: pd.DataFrame
    first_day: date
    last_complete_day: date
    figures: dict[str, Any]


def load_postings(path: Path, known_accounts: pd.Index, rejections: Rejections,
                  outside_subset: set[str] | None = None) -> Postings:
    """trans.asc validated: a row with an unusable key, date, direction or amount is rejected; unknown operation or
    k_symbol codes are kept (channel `other`) and counted. A partial copy loses its cut-short last day. Rows of the
    accounts in `outside_subset` (an import of a subset of accounts) are left out and counted first."""
    unparseable_before = len(rejections.frame())
    raw = read_asc(path, rejections)
    source_rows = len(raw) + len(rejections.frame()) - unparseable_before
    outside = raw["account_id"].isin(outside_subset or set())
    raw = raw[~outside].reset_index(drop=True)
    rows = raw[TRANSACTION_COLUMNS].copy()
    rows["day"] = parse_yymmdd(rows["date"])
    rows["sign"] = rows["type"].map(TYPE_SIGN)
    rows["amount_cents"] = parse_cents(rows["amount"])
    rows["balance_cents"] = parse_cents(rows["balance"])

    checks = [
        (~rows["trans_id"].str.fullmatch(r"\d+"), "trans_id is not a number"),
        (rows["trans_id"].duplicated(keep="first"), "duplicate trans_id"),
        (~rows["account_id"].isin(known_accounts), "unknown account_id"),
        (rows["day"].isna(), "invalid date"),
        (rows["sign"].isna(), "unknown type (direction)"),
        (rows["amount_cents"].isna() | (rows["amount_cents"] < 0), "amount empty or not an unsigned decimal"),
        (rows["balance_cents"].isna(), "balance empty or not a decimal"),
    ]
    rejected = pd.Series(False, index=rows.index)
    for failed, reason in checks:
        failed = failed.fillna(True) & ~rejected
        rejections.add(path.name, raw.loc[failed, TRANSACTION_COLUMNS], "trans_id", reason)
        rejected |= failed
    rows = rows[~rejected].copy()
    rows["signed_cents"] = rows["amount_cents"] * rows["sign"].astype("int64")
    rows["trans_number"] = rows["trans_id"].astype("int64")

    unknown_operation = ~rows["operation"].isin([*OPERATION_TEXT, ""])
    unknown_k_symbol = ~rows["k_symbol"].isin([*K_SYMBOL_TEXT, ""])
    figures: dict[str, Any] = {
        "source_file": path.name,
        "source_rows": int(source_rows),
        "negative_balance_rows_in_source": int((rows["balance_cents"] < 0).sum()),
        "rows_with_unknown_operation_kept_as_other": int(unknown_operation.sum()),
        "rows_with_unknown_k_symbol_kept_as_other": int(unknown_k_symbol.sum()),
    }
    if outside_subset:
        figures["rows_on_accounts_outside_the_subset"] = int(outside.sum())

    if rows.empty:
        raise SegoneError(f"{path.name}: no usable transaction rows ({len(rejections.frame())} rejected)")
    first_day = rows["day"].min().date()
    last_day = rows["day"].max().date()
    if source_rows < FULL_TRANSACTION_ROWS:
        cut_short = rows["day"] == pd.Timestamp(last_day)
        figures["cut_short_day"] = last_day.isoformat()
        figures["cut_short_day_rows_dropped"] = int(cut_short.sum())
        previous_month_end = (pd.Timestamp(last_day).replace(day=1) - pd.Timedelta(days=1))
        figures["rows_on_previous_month_end_for_comparison"] = int((rows["day"] == previous_month_end).sum())
        rows = rows[~cut_short]
        last_complete_day = rows["day"].max().date()
    else:
        figures["cut_short_day"] = None
        figures["cut_short_day_rows_dropped"] = 0
        last_complete_day = last_day
    return Postings(rows=rows.reset_index(drop=True), first_day=first_day, last_complete_day=last_complete_day,
                    figures=figures)


def drop_postings_of_unused_accounts(postings: Postings, entities: Entities, cutoff: date | None,
                                     rejections: Rejections, file_name: str) -> None:
    """Postings whose account was rejected (e.g. it has no owner) are rejected too; postings on accounts opened
    after the cut-off are counted and left out (none in a consistent copy: an account has no postings before it
    opens)."""
    usable = postings.rows["account_id"].isin(entities.account_opened.index)
    rejections.add(file_name, postings.rows.loc[~usable, TRANSACTION_COLUMNS], "trans_id",
                   "account rejected from account.asc")
    opened_later = pd.Series(False, index=postings.rows.index)
    if cutoff is not None:
        opened_by_cutoff = entities.account_opened[entities.account_opened <= pd.Timestamp(cutoff)].index
        opened_later = usable & ~postings.rows["account_id"].isin(opened_by_cutoff)
    postings.figures["rows_rejected_with_their_account"] = int((~usable).sum())
    postings.figures["rows_on_accounts_opened_after_cutoff"] = int(opened_later.sum())
    postings.rows = postings.rows[usable & ~opened_later].reset_index(drop=True)


def permanent_order_keys(source: Path, rejections: Rejections) -> pd.DataFrame:
    """(account_id, bank, account, amount_cents) of every permanent order (order.asc), to recognise the transfers
    that execute one; empty when order.asc is absent."""
    path = source / "order.asc"
    if not path.exists():
        return pd.DataFrame(columns=["account_id", "bank", "account", "amount_cents"])
    orders = read_asc(path, rejections)
    keys = pd.DataFrame({"account_id": orders["account_id"], "bank": orders["bank_to"],
                         "account": orders["account_to"], "amount_cents": parse_cents(orders["amount"])})
    return keys.dropna().drop_duplicates()


def map_channel(rows: pd.DataFrame, orders: pd.DataFrame) -> pd.Series:
    """The contract channel: the purpose (k_symbol) when it names one, else the operation; an outgoing transfer that
    matches a permanent order (same account, payee bank and account, amount) is a standing order."""
    by_purpose = rows["k_symbol"].map(K_SYMBOL_CHANNEL)
    by_operation = rows["operation"].map(OPERATION_CHANNEL)
    keys = ["account_id", "bank", "account", "amount_cents"]
    matched = rows[keys].merge(orders.assign(is_order=True), on=keys, how="left")["is_order"].notna()
    executes_order = matched.to_numpy() & (rows["operation"] == "PREVOD NA UCET")
    by_operation = by_operation.where(~executes_order, "standing_order")
    return by_purpose.fillna(by_operation).fillna("other").astype("string")


def describe(rows: pd.DataFrame) -> pd.Series:
    """English text from the codes: the purpose (k_symbol) when there is one, else the operation."""
    purpose = rows["k_symbol"].map(K_SYMBOL_TEXT)
    operation = rows["operation"].map(OPERATION_TEXT)
    raw_codes = ("berka codes: " + rows["operation"] + " " + rows["k_symbol"]).str.strip()
    return purpose.fillna(operation).fillna(raw_codes).astype("string")


def build_transactions(postings: Postings, orders: pd.DataFrame) -> pd.DataFrame:
    """transactions in contract columns, one row per Berka posting of the complete window."""
    rows = postings.rows
    counterparty = (rows["bank"] + ":" + rows["account"]).where((rows["bank"] != "") & (rows["account"] != ""), "")
    return pd.DataFrame({
        "transaction_id": "B" + rows["trans_id"],
        "account_id": "B" + rows["account_id"],
        "booked_at": prague_midnight(rows["day"]),
        "amount": format_cents(rows["signed_cents"]),
        "currency": CURRENCY,
        "description": describe(rows),
        "merchant_name": "",
        "mcc": "",
        "channel": map_channel(rows, orders),
        "country": COUNTRY,
        "counterparty_id": counterparty,
    })


# ---------------------------------------------------------------------------------------------------- balances


def end_of_day_balances(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One balance per account and posting day: the Berka running balance after the day's last posting.

    The last posting is found from the balances themselves, since trans_id order does not reproduce them: a posting
    is followed by another of the same day when that one's balance before it (balance - amount) equals this one's
    balance after, within rounding; the day ends with the posting that nothing follows. When that is not unique,
    the posting the next posting day starts from wins, then the highest trans_id, and the day counts as ambiguous.
    A day is consistent when its closing balance equals the previous closing balance (0 before an account's first
    day) plus the day's signed amounts; differences are counted, not corrected.
    """
    frame = rows[["account_id", "day", "trans_number", "signed_cents", "balance_cents"]].astype(
        {"signed_cents": "int64", "balance_cents": "int64"})
    frame["before_cents"] = frame["balance_cents"] - frame["signed_cents"]
    day_key = ["account_id", "day"]

    # p is followed by q (same day) when q starts within rounding of where p ended.
    pairs = frame[[*day_key, "trans_number", "balance_cents"]].merge(
        frame[[*day_key, "trans_number", "before_cents"]], on=day_key, suffixes=("", "_next"))
    linked = ((pairs["trans_number"] != pairs["trans_number_next"])
              & ((pairs["before_cents"] - pairs["balance_cents"]).abs() <= ROUNDING_TOLERANCE_CENTS))
    frame["is_end"] = ~frame["trans_number"].isin(pairs.loc[linked, "trans_number"].unique())

    # Tie-break for days without a unique end: the candidate the account's next posting day starts from.
    posting_days = frame[day_key].drop_duplicates().sort_values(day_key)
    posting_days["next_day"] = posting_days.groupby("account_id")["day"].shift(-1)
    with_next = frame[[*day_key, "trans_number", "balance_cents"]].merge(posting_days, on=day_key)
    next_starts = frame[["account_id", "day", "before_cents"]].rename(columns={"day": "next_day"})
    continued = with_next.merge(next_starts, on=["account_id", "next_day"])
    continued = continued[(continued["before_cents"] - continued["balance_cents"]).abs() <= ROUNDING_TOLERANCE_CENTS]
    frame["next_day_starts_here"] = frame["trans_number"].isin(continued["trans_number"].unique())

    ends_per_day = frame.groupby(day_key)["is_end"].transform("sum")
    # Rank the candidates: an end posting first, then one the next day continues from, then the highest trans_id.
    ordered = frame.sort_values([*day_key, "is_end", "next_day_starts_here", "trans_number"])
    closing = ordered.groupby(day_key, sort=False).tail(1)
    ambiguous_days = int((ends_per_day[closing.index] != 1).sum())

    # Does trans_id order reproduce the running balance within the day?
    by_id = frame.sort_values([*day_key, "trans_number"])
    previous_after = by_id.groupby(day_key)["balance_cents"].shift()
    broken_link = previous_after.notna() & ((previous_after - by_id["before_cents"]).abs()
                                            > ROUNDING_TOLERANCE_CENTS)
    days_out_of_id_order = int(broken_link.groupby([by_id["account_id"], by_id["day"]]).any().sum())
    multi_posting_days = int((frame.groupby(day_key).size() > 1).sum())

    daily = frame.groupby(day_key, as_index=False)["signed_cents"].sum().merge(
        closing[[*day_key, "balance_cents"]], on=day_key).sort_values(day_key)
    previous_close = daily.groupby("account_id")["balance_cents"].shift().fillna(0).astype("int64")
    gap = (daily["balance_cents"] - previous_close - daily["signed_cents"]).abs()
    figures = {
        "account_days": len(daily),
        "account_days_with_several_postings": multi_posting_days,
        "account_days_not_in_trans_id_order": days_out_of_id_order,
        "account_days_with_ambiguous_order": ambiguous_days,
        "account_days_inconsistent": int((gap > 0).sum()),
        "account_days_inconsistent_rounding_only": int(((gap > 0) & (gap <= ROUNDING_TOLERANCE_CENTS)).sum()),
        "account_days_inconsistent_beyond_rounding": int((gap > ROUNDING_TOLERANCE_CENTS).sum()),
        "negative_balance_account_days": int((daily["balance_cents"] < 0).sum()),
    }
    balances = pd.DataFrame({
        "account_id": "B" + daily["account_id"],
        "as_of": iso_date(daily["day"]),
        "balance": format_cents(daily["balance_cents"]),
    })
    return balances.reset_index(drop=True), figures


# ---------------------------------------------------------------------------------------------------- writing


def write_landing_csv(frame: pd.DataFrame, kind: str, path: Path) -> int:
    """A landing CSV in the contract's column order: UTF-8, header, ',', RFC 4180 quoting, LF line ends."""
    columns = landing_contract()[kind].column_names
    frame.reindex(columns=columns).fillna("").to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    return len(frame)


def write_transactions(frame: pd.DataFrame, folder: Path) -> dict[str, int]:
    """transactions.csv, or transactions-0001.csv ... when there are more rows than one file should hold."""
    if len(frame) <= MAX_TRANSACTION_ROWS_PER_FILE:
        return {"transactions.csv": write_landing_csv(frame, "transactions", folder / "transactions.csv")}
    written = {}
    for part, start in enumerate(range(0, len(frame), MAX_TRANSACTION_ROWS_PER_FILE), start=1):
        name = f"transactions-{part:04d}.csv"
        written[name] = write_landing_csv(frame.iloc[start:start + MAX_TRANSACTION_ROWS_PER_FILE], "transactions",
                                          folder / name)
    return written


DEFAULT_CONSENT_PURPOSES = ("personalization",)
# What `segone import-berka` assumes unless told otherwise: own-bank insights, and life-event inference so that the
# night's life-event stage (on its rules: Berka declares no events) runs on a real bank (docs/berka.md).
COMMAND_CONSENT_PURPOSES = ("personalization", "life_events")


def build_consents(customers: pd.DataFrame, purposes: tuple[str, ...] = DEFAULT_CONSENT_PURPOSES) -> pd.DataFrame:
    """Each purpose in `purposes` granted at customer_since for every customer, one event per customer and purpose:
    a stated assumption for research data, since Berka holds no consent records (docs/berka.md)."""
    since = pd.to_datetime(customers["customer_since"], format="%Y-%m-%d")
    recorded = prague_midnight(since)
    return pd.concat([pd.DataFrame({
        "customer_id": customers["customer_id"],
        "purpose": purpose,
        "granted": "true",
        "recorded_at": recorded,
        "expires_at": "",
    }) for purpose in purposes], ignore_index=True).sort_values(["customer_id", "purpose"], key=_id_then_text,
                                                                 kind="stable").reset_index(drop=True)


def _id_then_text(values: pd.Series) -> pd.Series:
    return _numeric_key(values) if values.name == "customer_id" else values


def check_purposes(purposes: tuple[str, ...]) -> tuple[str, ...]:
    """The consent purposes of the contract (config/landing.yaml), refused with a clear message otherwise."""
    allowed = set(landing_contract()["consents"].column("purpose").values or [])
    unknown = sorted(set(purposes) - allowed)
    if unknown or not purposes:
        raise SegoneError(f"unknown consent purposes {unknown}: choose from {', '.join(sorted(allowed))}"
                          if unknown else "at least one consent purpose is needed (personalization)")
    return tuple(dict.fromkeys(purposes))


def write_landing_folder(destination: Path, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """The eight landing files into a staging folder beside `destination`, swapped in whole (a re-run replaces
    what was there, including files of another source)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.import-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files: dict[str, int] = {}
        for kind, frame in frames.items():
            if kind == "transactions":
                files.update(write_transactions(frame, staging))
            else:
                files[f"{kind}.csv"] = write_landing_csv(frame, kind, staging / f"{kind}.csv")
        swap_in(staging, destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return files


def split_night(frames: dict[str, pd.DataFrame], night: date) -> tuple[dict[str, pd.DataFrame],
                                                                        dict[str, pd.DataFrame]]:
    """(history, night): postings booked and balances as of `night`, and the customers, accounts and consents that
    start that day, go to the night's landing folder; everything earlier to the history. The files without a date
    of their own (declared events, CRM responses: empty for Berka; fx rates) are delivered with both."""
    day = night.isoformat()
    dates = {"transactions": frames["transactions"]["booked_at"].str.slice(0, 10),
             "balances": frames["balances"]["as_of"],
             "customers": frames["customers"]["customer_since"],
             "accounts": frames["accounts"]["opened_on"],
             "consents": frames["consents"]["recorded_at"].str.slice(0, 10)}
    history, tonight = {}, {}
    for kind, frame in frames.items():
        if kind in dates:
            on_night = (dates[kind] == day).to_numpy()
            history[kind] = frame[~on_night].reset_index(drop=True)
            tonight[kind] = frame[on_night].reset_index(drop=True)
        else:
            history[kind] = tonight[kind] = frame
    return history, tonight


# ---------------------------------------------------------------------------------------------------- entry points


def import_berka(source: Path, destination: Path, report_dir: Path | None = None,
                 include_later_entities: bool = False, night_root: Path | None = None,
                 consent_purposes: tuple[str, ...] = DEFAULT_CONSENT_PURPOSES,
                 max_accounts: int | None = None) -> dict[str, Any]:
    """Write the landing history for the Berka files in `source` into `destination` (replaced whole, atomically).

    Customers, accounts and loans that start after the last complete transaction day are left out unless
    `include_later_entities` (then all 4,500 accounts and 5,369 clients are written, with opening dates up to 1997).
    With `night_root`, the last complete day is written as a nightly landing folder `night_root/<day>/` instead
    (its postings, balances and the customers, accounts and consents that start that day) and the history ends the
    day before, so that `segone run --date <day>` has a night to run. `consent_purposes`: the consent assumed
    granted for every customer (Berka has none). `max_accounts`: only the first N current accounts (by id) that
    hold a posting in the window, with their holders, loans and postings (a small real bank for tests); the rest is
    counted, not rejected. Returns the summary: rows per file, the date window, exclusions, balance checks and
    rejected rows.
    """
    source = Path(source)
    consent_purposes = check_purposes(tuple(consent_purposes))
    rejections = Rejections()
    transaction_file = find_transaction_file(source)

    tables = read_tables(source, rejections)
    subset_figures: dict[str, int] = {}
    outside: set[str] = set()
    if max_accounts is not None:
        every_account = set(tables.accounts["account_id"])
        tables, subset_figures = keep_accounts(tables, transaction_file, int(max_accounts))
        outside = every_account - set(tables.accounts["account_id"])
    postings = load_postings(transaction_file, pd.Index(tables.accounts["account_id"]), rejections, outside)
    cutoff = None if include_later_entities else postings.last_complete_day
    entities = build_entities(tables, cutoff, rejections)

    drop_postings_of_unused_accounts(postings, entities, cutoff, rejections, transaction_file.name)

    orders = permanent_order_keys(source, rejections)
    transactions = build_transactions(postings, orders)
    balances, balance_figures = end_of_day_balances(postings.rows)
    balance_figures["negative_balance_rows_imported"] = int((postings.rows["balance_cents"] < 0).sum())

    frames = {
        "customers": entities.customers,
        "accounts": entities.accounts,
        "transactions": transactions,
        "balances": balances,
        "consents": build_consents(entities.customers, consent_purposes),
        "life_events": pd.DataFrame(),
        "crm_responses": pd.DataFrame(),
        "fx_rates": pd.DataFrame({"currency": [CURRENCY], "rate_to_base": ["1.0"]}),
    }
    night: dict[str, Any] | None = None
    if night_root is not None:
        night_day = postings.last_complete_day
        frames, tonight = split_night(frames, night_day)
        folder = Path(night_root) / night_day.isoformat()
        night = {"day": night_day.isoformat(), "folder": str(folder),
                 "rows": write_landing_folder(folder, tonight)}
    destination = Path(destination)
    files = write_landing_folder(destination, frames)

    rejected = rejections.frame()
    history_last = (postings.last_complete_day - pd.Timedelta(days=1)) if night else postings.last_complete_day
    summary: dict[str, Any] = {
        "source": str(source),
        "destination": str(destination),
        "rows": files,
        "window": {
            "first_day": postings.first_day.isoformat(),
            "last_complete_day": postings.last_complete_day.isoformat(),
            "entity_cutoff": cutoff.isoformat() if cutoff else None,
        },
        "history_last_day": history_last.isoformat(),
        "night": night,
        "consent_purposes_assumed": list(consent_purposes),
        "account_subset": subset_figures or None,
        "source_rows": source_row_counts(source, transaction_file, postings),
        "transactions": postings.figures | {
            "imported": len(transactions),
            "by_channel": {k: int(v) for k, v in transactions["channel"].value_counts().sort_index().items()},
        },
        "entities": entities.figures,
        "balances": balance_figures,
        "rejected_rows": len(rejected),
        "rejected_by_reason": rejections.counts(),
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        rejected.to_csv(report_dir / "rejected_rows.csv", index=False, encoding="utf-8", lineterminator="\n")
        (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        summary["report_dir"] = str(report_dir)
    return summary


def source_row_counts(source: Path, transaction_file: Path, postings: Postings) -> dict[str, int]:
    """Data rows of each Berka file read, for reconciling the output counts."""
    counts = {}
    for name in ("client.asc", "disp.asc", "account.asc", "loan.asc", "card.asc", "order.asc", "district.asc"):
        path = source / name
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                counts[name] = sum(1 for line in handle if line.strip()) - 1
    counts[transaction_file.name] = postings.figures["source_rows"]
    return counts


def keep_accounts(tables: BerkaTables, transaction_file: Path, n: int) -> tuple[BerkaTables, dict[str, int]]:
    """The first `n` current accounts by id among those that hold a posting in the transaction file, with their
    dispositions, the clients holding them (a client who also holds a left-out account keeps only the kept ones),
    their loans and cards. The postings of the other accounts are left out by `load_postings` with the count."""
    if n < 1:
        raise SegoneError(f"--accounts must be at least 1, got {n}")
    con = connect()
    try:
        with_postings = {r[0] for r in con.execute(
            "select distinct trim(account_id) from read_csv(?, delim = ';', header = true, all_varchar = true, "
            "quote = '\"', ignore_errors = true)", [str(transaction_file)]).fetchall()}
    finally:
        con.close()
    accounts = tables.accounts[tables.accounts["account_id"].isin(with_postings)]
    kept = set(accounts.sort_values("account_id", key=_numeric_key)["account_id"].head(n))
    dispositions = tables.dispositions[tables.dispositions["account_id"].isin(kept)]
    clients = tables.clients[tables.clients["client_id"].isin(set(dispositions["client_id"]))]
    subset = BerkaTables(clients=clients, dispositions=dispositions, districts=tables.districts,
                         accounts=tables.accounts[tables.accounts["account_id"].isin(kept)],
                         loans=tables.loans[tables.loans["account_id"].isin(kept)],
                         cards=tables.cards[tables.cards["disp_id"].isin(set(dispositions["disp_id"]))])
    figures = {"accounts_kept": len(kept), "accounts_left_out": int(len(tables.accounts) - len(kept)),
               "clients_left_out": int(len(tables.clients) - len(clients))}
    return subset, figures


def import_berka_command(paths: Paths, source: Path, night: bool = True,
                         consents: str = ",".join(COMMAND_CONSENT_PURPOSES),
                         accounts: int | None = None) -> dict[str, Any]:
    """`segone import-berka DIR`: the Berka files in DIR -> $SEGONE_HOME/landing/history/ (replacing it) and, unless
    `night` is False, the last complete day as the nightly folder landing/<day>/ (the history then ends the day
    before)."""
    purposes = tuple(p.strip() for p in consents.split(",") if p.strip())
    return import_berka(source, paths.landing_history, report_dir=paths.home / "imports" / "berka",
                        night_root=paths.landing if night else None, consent_purposes=purposes,
                        max_accounts=accounts)
