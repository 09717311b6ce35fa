"""Hand-made banks written as landing files (config/landing.yaml) for tests: customers, accounts, postings, the
end-of-day balances those postings imply, consents and open-banking (OBIE v3.1) fetch envelopes.

Money is kept in Decimal; the end-of-day balance of an account is its opening balance plus the postings up to and
including that day, so every balance file reconciles with its postings unless a test asks for a gap (`offsets`).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable

CENT = Decimal("0.01")


def money(value: Decimal | float | int | str) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass
class Posting:
    transaction_id: str
    account_id: str
    day: date
    amount: Decimal
    channel: str
    description: str | None = None
    merchant_name: str | None = None
    mcc: str | None = None
    counterparty_id: str | None = None
    currency: str = "GBP"
    # the amount in the account's currency (the bank's conversion of a foreign-currency posting)
    settled: Decimal | None = None


@dataclass
class Account:
    account_id: str
    customer_id: str
    product: str
    opened_on: date
    closed_on: date | None
    opening_balance: Decimal
    overdraft_limit: Decimal | None
    # which days get a balance row: "daily" (every day from the first to the last balance day), "posting_days"
    # or "sundays" (weekly statements: the postings between them are not balanced), or "none" (never reported)
    balances: str = "daily"
    balances_until: date | None = None
    balances_from: date | None = None   # no balance reported before this day (e.g. a provider first fetched later)
    # a reported balance off by `amount` from `day` on (the bank's figure disagrees with its postings)
    offsets: dict[date, Decimal] = field(default_factory=dict)
    # where the account lives: "core" (CSV files) or an open-banking provider name (JSON envelopes)
    provider: str | None = None
    currency: str = "GBP"
    postings: list[Posting] = field(default_factory=list)

    def eod(self, day: date) -> Decimal:
        """The true end-of-day balance in the account's currency: opening balance plus every posting up to and
        including `day`."""
        return self.opening_balance + sum((p.settled for p in self.postings if p.day <= day), Decimal("0.00"))

    def reported(self, day: date) -> Decimal:
        return self.eod(day) + sum((amount for start, amount in self.offsets.items() if start <= day),
                                   Decimal("0.00"))


class LandingBank:
    """A small bank whose history ends on `end`; `write(folder)` lays it out as a landing/history/ folder."""

    def __init__(self, end: date) -> None:
        self.end = end
        self.customers: dict[str, dict] = {}
        self.accounts: dict[str, Account] = {}
        self.consents: list[dict] = []
        self._n = 0
        self.fx = {"EUR": Decimal("0.864300"), "USD": Decimal("0.790000")}

    # --- building ---------------------------------------------------------------------------------------------

    def customer(self, customer_id: str, birth_year: int = 1985, since: date = date(2020, 1, 1),
                 region: str = "London") -> str:
        self.customers[customer_id] = {"customer_id": customer_id, "birth_year": birth_year, "region": region,
                                       "customer_since": since.isoformat(), "known_vulnerability": ""}
        return customer_id

    def account(self, account_id: str, customer_id: str, opened_on: date, product: str = "current",
                closed_on: date | None = None, opening_balance: float | str = 0, overdraft_limit: str | None = "0.00",
                balances: str = "daily", provider: str | None = None, currency: str = "GBP") -> Account:
        acc = Account(account_id=account_id, customer_id=customer_id, product=product, opened_on=opened_on,
                      closed_on=closed_on, opening_balance=money(opening_balance),
                      overdraft_limit=None if overdraft_limit is None else money(overdraft_limit),
                      balances=balances, provider=provider, currency=currency)
        self.accounts[account_id] = acc
        return acc

    def consent(self, customer_id: str, purpose: str, granted: bool, recorded_at: datetime,
                expires_at: datetime | None = None) -> None:
        self.consents.append({"customer_id": customer_id, "purpose": purpose, "granted": "true" if granted else "false",
                              "recorded_at": recorded_at.isoformat(),
                              "expires_at": expires_at.isoformat() if expires_at else ""})

    def post(self, account_id: str, day: date, amount: float | str, channel: str, description: str | None = None,
             merchant_name: str | None = None, mcc: str | None = None, counterparty_id: str | None = None,
             currency: str | None = None) -> Posting:
        """A posting in `currency` (the account's own by default); a foreign amount settles on the account at the
        bank's rate (fx: currency -> base, the account's currency being the base)."""
        self._n += 1
        acc = self.accounts[account_id]
        currency = currency or acc.currency
        settled = money(amount) if currency == acc.currency else money(Decimal(str(amount)) * self.fx[currency])
        posting = Posting(transaction_id=f"T{self._n:07d}", account_id=account_id, day=day, amount=money(amount),
                          channel=channel, description=description, merchant_name=merchant_name, mcc=mcc,
                          counterparty_id=counterparty_id, currency=currency, settled=settled)
        self.accounts[account_id].postings.append(posting)
        return posting

    def monthly(self, account_id: str, days: Iterable[date], amount: float | str, channel: str, counterparty_id: str,
                description: str) -> None:
        for day in days:
            self.post(account_id, day, amount, channel, description=description, counterparty_id=counterparty_id)

    def card_spending(self, account_id: str, first: date, last: date, every: int = 3, amount: str = "-12.50") -> None:
        """Groceries every `every` days: card postings, never a recurring-stream candidate."""
        for day in days_between(first, last)[::every]:
            self.post(account_id, day, amount, "card", description="TESCO STORES CARD PAYMENT",
                      merchant_name="Tesco Stores", mcc="5411")

    # --- what the balance files hold ----------------------------------------------------------------------------

    def balance_days(self, acc: Account) -> list[date]:
        last = min(d for d in (acc.closed_on, acc.balances_until, self.end) if d is not None)
        if acc.balances == "none":
            return []
        if acc.balances == "posting_days":
            return sorted({p.day for p in acc.postings if (acc.balances_from or date.min) <= p.day <= last})
        first = max(acc.opened_on, min(p.day for p in acc.postings)) if acc.postings else acc.opened_on
        first = max(first, acc.balances_from or first)
        if acc.balances == "sundays":
            return [day for day in days_between(first, last) if day.weekday() == 6]
        return days_between(first, last)

    def series(self, account_id: str, first: date, last: date) -> dict[date, Decimal]:
        """What the cash position of one account should be each day: the latest reported balance carried forward
        with the postings since (the true end-of-day balance where there is no reporting gap)."""
        acc = self.accounts[account_id]
        return {day: acc.reported(day) for day in days_between(first, last)}

    # --- writing -----------------------------------------------------------------------------------------------

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        core = [a for a in self.accounts.values() if a.provider is None]
        _write_csv(folder / "customers.csv", ["customer_id", "birth_year", "region", "customer_since",
                                             "known_vulnerability"], self.customers.values())
        _write_csv(folder / "accounts.csv", ["account_id", "customer_id", "product", "currency", "opened_on",
                                            "closed_on", "overdraft_limit", "credit_limit"], [
            {"account_id": a.account_id, "customer_id": a.customer_id, "product": a.product, "currency": a.currency,
             "opened_on": a.opened_on.isoformat(), "closed_on": a.closed_on.isoformat() if a.closed_on else "",
             "overdraft_limit": "" if a.overdraft_limit is None else f"{a.overdraft_limit:.2f}", "credit_limit": ""}
            for a in core])
        _write_csv(folder / "transactions-0001.csv", ["transaction_id", "account_id", "booked_at", "amount", "currency",
                                                     "description", "merchant_name", "mcc", "channel", "country",
                                                     "counterparty_id"], [
            {"transaction_id": p.transaction_id, "account_id": p.account_id,
             "booked_at": f"{p.day.isoformat()}T10:00:00+00:00", "amount": f"{p.amount:.2f}", "currency": p.currency,
             "description": p.description or "", "merchant_name": p.merchant_name or "", "mcc": p.mcc or "",
             "channel": p.channel, "country": "GB", "counterparty_id": p.counterparty_id or ""}
            for a in core for p in sorted(a.postings, key=lambda p: (p.day, p.transaction_id))])
        _write_csv(folder / "balances-0001.csv", ["account_id", "as_of", "balance"], [
            {"account_id": a.account_id, "as_of": day.isoformat(), "balance": f"{a.reported(day):.2f}"}
            for a in core for day in self.balance_days(a)])
        _write_csv(folder / "consents.csv", ["customer_id", "purpose", "granted", "recorded_at", "expires_at"],
                   self.consents)
        _write_csv(folder / "fx_rates.csv", ["currency", "rate_to_base"], [
            {"currency": currency, "rate_to_base": f"{rate:.6f}"} for currency, rate in self.fx.items()])
        for acc in self.accounts.values():
            if acc.provider is not None:
                self._write_openbanking(folder / "openbanking", acc)

    def _write_openbanking(self, folder: Path, acc: Account, every: int = 7) -> None:
        """Weekly aggregator fetches at 02:00 UTC: the postings of the days since the last fetch and a ClosingBooked
        balance for every one of those days."""
        folder.mkdir(parents=True, exist_ok=True)
        first = max(acc.opened_on, min(p.day for p in acc.postings))
        days = days_between(first, self.end)
        reported = set(self.balance_days(acc))
        for start in range(0, len(days), every):
            covered = days[start:start + every]
            fetched = datetime.combine(covered[-1] + timedelta(days=1), time(2, 0), tzinfo=timezone.utc)
            if covered[-1] == self.end:
                fetched = datetime.combine(self.end, time(23, 0), tzinfo=timezone.utc)
            envelope = {
                "customer_id": acc.customer_id, "provider": acc.provider, "consent_id": f"obc-{acc.customer_id}",
                "fetched_at": fetched.isoformat(),
                "accounts": {"Data": {"Account": [{
                    "AccountId": acc.account_id, "Status": "Enabled", "Currency": "GBP", "AccountType": "Personal",
                    "AccountSubType": "CurrentAccount", "Nickname": "Main",
                    "OpeningDate": f"{acc.opened_on.isoformat()}T09:00:00+00:00",
                    "Account": [{"SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": "40400412345678",
                                 "Name": f"CUSTOMER {acc.customer_id}"}]}]},
                    "Links": {"Self": "https://api.example.co.uk/accounts"}, "Meta": {"TotalPages": 1}},
                "balances": {"Data": {"Balance": [_ob_balance(acc.account_id, acc.reported(day), day)
                                                  for day in covered if day in reported]},
                             "Links": {"Self": "https://api.example.co.uk/balances"}, "Meta": {"TotalPages": 1}},
                "transactions": {"Data": {"Transaction": [
                    _ob_transaction(acc.account_id, p, acc.provider) for p in acc.postings if p.day in covered]},
                    "Links": {"Self": "https://api.example.co.uk/transactions"}, "Meta": {"TotalPages": 1}},
            }
            name = f"{acc.customer_id}-{acc.provider}-F{fetched:%Y%m%d}.json"
            (folder / name).write_text(json.dumps(envelope, indent=1), encoding="utf-8")


def _ob_amount(amount: Decimal) -> tuple[dict, str]:
    return {"Amount": f"{abs(amount):.2f}", "Currency": "GBP"}, ("Credit" if amount >= 0 else "Debit")


def _ob_balance(account_id: str, balance: Decimal, day: date) -> dict:
    amount, indicator = _ob_amount(balance)
    return {"AccountId": account_id, "Amount": amount, "CreditDebitIndicator": indicator, "Type": "ClosingBooked",
            "DateTime": f"{day.isoformat()}T23:59:59+00:00"}


def _ob_transaction(account_id: str, p: Posting, provider: str) -> dict:
    amount, indicator = _ob_amount(p.amount)
    record = {"AccountId": account_id, "TransactionId": p.transaction_id, "CreditDebitIndicator": indicator,
              "Status": "Booked", "BookingDateTime": f"{p.day.isoformat()}T10:00:00+00:00",
              "ValueDateTime": f"{p.day.isoformat()}T10:00:00+00:00",
              "TransactionInformation": p.description or "", "Amount": amount,
              "ProprietaryBankTransactionCode": {"Code": "CardPayment" if p.mcc else "Transfer", "Issuer": provider}}
    if p.mcc:
        record["MerchantDetails"] = {"MerchantName": p.merchant_name or "", "MerchantCategoryCode": p.mcc}
    return record


def _write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
