"""External accounts at other banks, delivered as an aggregator would: one JSON file per customer, provider and
fetch, with each provider's UK Open Banking Read/Write API responses kept verbatim (v3.1 or v4.0 bodies).

Only customers whose open-banking consent is in force on the fetch day are fetched. Each consent starts with a
backfill fetch (up to 90 days), then a fetch every 7 days that returns the last 14 days: transactions overlap
from one fetch to the next, and a purchase still Pending in one fetch is Booked (same TransactionId) in the
next. Some transaction lists come in two pages (Links.Next), some resources are missing from a fetch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import CARD_MERCHANTS, UTILITIES
from pipelines.sources.simulate.consents import OpenBankingGrants
from pipelines.sources.simulate.population import Population
from pipelines.sources.simulate.writers import customer_ids, day_text

# provider, API version; a customer's link goes to a provider with these weights (a fifth of links are v4.0)
PROVIDERS = [("alphabank", "3.1"), ("betabank", "3.1"), ("gammabank", "4.0"), ("deltabank", "3.1")]
PROVIDER_WEIGHTS = np.array([0.40, 0.25, 0.20, 0.15])
ACCOUNT_TYPES = [("CurrentAccount", "CACC"), ("CreditCard", "CARD"), ("Savings", "SVGS")]
ACCOUNT_TYPE_WEIGHTS = np.array([0.6, 0.25, 0.15])
CURRENT_EXT, CARD_EXT, SAVINGS_EXT = range(3)
SPEND_CATEGORIES = ["groceries", "online", "fast_food", "fuel", "restaurants", "clothing", "transport"]
WEEKLY_WINDOW, BACKFILL_DAYS, HISTORY_WEEKS = 14, 90, 4


@dataclass
class Links:
    """One external account per link (customer x provider)."""

    cust: np.ndarray
    provider: np.ndarray
    kind: np.ndarray
    account_id: np.ndarray      # the provider's AccountId
    opening: np.ndarray         # balance before the first day, pence
    anchor: np.ndarray          # weekday offset of the weekly fetch
    dd_names: np.ndarray        # (links, 2) direct-debit payees
    so_day: np.ndarray          # day of month of the standing order


@dataclass
class ExternalPostings:
    """Transactions on the external accounts, sorted by (link, day, time)."""

    link: np.ndarray
    day: np.ndarray
    sec: np.ndarray
    pence: np.ndarray
    text: np.ndarray            # index into TEXTS
    balance: np.ndarray         # running balance after the posting


def _texts() -> list[tuple[str, str | None, str | None, str]]:
    """(TransactionInformation, MerchantName, MerchantCategoryCode, ProprietaryBankTransactionCode)."""
    out = []
    for category in SPEND_CATEGORIES:
        mcc, names = CARD_MERCHANTS[category]
        out += [(f"{name} CARD PAYMENT", name.title(), mcc, "CardPayment") for name in names]
    for kind in ("phone", "gym", "insurance"):
        mcc, names = UTILITIES[kind]
        out += [(name, name.title(), None, "DirectDebit") for name in names]
    out += [("TRANSFER FROM PARTNER", None, None, "Transfer"), ("STANDING ORDER SAVINGS POT", None, None,
            "StandingOrder"), ("CARD REPAYMENT THANK YOU", None, None, "Transfer"),
            ("INTEREST PAID", None, None, "Interest"), ("MONTHLY DEPOSIT", None, None, "Transfer")]
    return out


TEXTS = _texts()
_SPEND_TEXTS = np.array([i for i, t in enumerate(TEXTS) if t[3] == "CardPayment"])
_DD_TEXTS = np.array([i for i, t in enumerate(TEXTS) if t[3] == "DirectDebit"])
T_PARTNER, T_SO, T_CARD_REPAY, T_INTEREST, T_DEPOSIT = range(len(TEXTS) - 5, len(TEXTS))


def draw_links(rng: np.random.Generator, pop: Population, grants: OpenBankingGrants) -> Links:
    customers = np.unique(grants.cust)
    two = rng.random(len(customers)) < 0.35
    cust = np.concatenate([customers, customers[two]])
    first = rng.choice(len(PROVIDERS), size=len(customers), p=PROVIDER_WEIGHTS)
    second = (first[two] + rng.integers(1, len(PROVIDERS), int(two.sum()))) % len(PROVIDERS)
    provider = np.concatenate([first, second])
    order = np.lexsort((provider, cust))
    cust, provider = cust[order], provider[order]
    kind = rng.choice(3, size=len(cust), p=ACCOUNT_TYPE_WEIGHTS)
    account_id = (7_000_000_000 + pop.number[cust] * 4 + provider).astype(np.int64)
    income = pop.income[cust]
    opening = np.select([kind == CURRENT_EXT, kind == CARD_EXT],
                        [np.round(income * rng.uniform(0.1, 0.8, len(cust))),
                         -np.round(rng.uniform(0, 1500, len(cust)) * 100)],
                        np.round(income * rng.uniform(0.5, 4, len(cust)))).astype(np.int64)
    return Links(cust=cust, provider=provider, kind=kind, account_id=account_id, opening=opening,
                 anchor=rng.integers(0, 7, len(cust)),
                 dd_names=_DD_TEXTS[rng.integers(0, len(_DD_TEXTS), (len(cust), 2))],
                 so_day=rng.integers(1, 29, len(cust)))


def draw_postings(rng: np.random.Generator, pop: Population, cal: SimCalendar, links: Links) -> ExternalPostings:
    """Everyday card spending on current accounts and cards, two bills and a standing order on current
    accounts, a monthly transfer in, card repayments, deposits and interest on savings."""
    n, days = len(links.cust), cal.n_days
    lo = -BACKFILL_DAYS
    span = days - lo
    rate = np.select([links.kind == CURRENT_EXT, links.kind == CARD_EXT], [1.0, 0.6], 0.0)
    counts = rng.poisson(rate[:, None] * np.ones(span)[None, :])
    flat = np.repeat(np.arange(n * span), counts.ravel())
    parts = [(flat // span, flat % span + lo, rng.integers(8 * 3600, 22 * 3600, len(flat)),
              -np.round(rng.lognormal(np.log(14), 0.8, len(flat)) * 100).astype(np.int64),
              _SPEND_TEXTS[rng.integers(0, len(_SPEND_TEXTS), len(flat))])]
    dom = cal.day_of_month(np.arange(lo, days))
    current = links.kind == CURRENT_EXT
    for k, (what, day_of_month, amount) in enumerate([
            ("dd0", np.full(n, 5), rng.uniform(10, 60, n)), ("dd1", np.full(n, 18), rng.uniform(15, 80, n)),
            ("so", links.so_day, rng.uniform(50, 300, n)),
            ("in", np.full(n, 25), pop.income[links.cust] / 100 * rng.uniform(0.2, 0.6, n))]):
        rows, col = np.nonzero((dom[None, :] == day_of_month[:, None]) & current[:, None])
        text = {"dd0": links.dd_names[rows, 0], "dd1": links.dd_names[rows, 1], "so": np.full(len(rows), T_SO),
                "in": np.full(len(rows), T_PARTNER)}[what]
        sign = 1 if what == "in" else -1
        parts.append((rows, col + lo, np.full(len(rows), 6 * 3600 + k * 60),
                      sign * np.round(amount[rows] * 100).astype(np.int64), text))
    for kind, text, day_of_month, share in ((CARD_EXT, T_CARD_REPAY, 20, 1.0), (SAVINGS_EXT, T_DEPOSIT, 2, 0.08),
                                             (SAVINGS_EXT, T_INTEREST, 1, 0.0025)):
        rows, col = np.nonzero((dom[None, :] == day_of_month) & (links.kind == kind)[:, None])
        base = np.abs(links.opening[rows]) if kind == CARD_EXT else links.opening[rows]
        amount = np.maximum(100, np.round(base * share if kind != CARD_EXT else rng.uniform(300, 700, len(rows)) * 100))
        parts.append((rows, col + lo, np.full(len(rows), 7 * 3600), amount.astype(np.int64), np.full(len(rows), text)))
    link, day, sec, pence, text = (np.concatenate([p[i] for p in parts]) for i in range(5))
    order = np.lexsort((sec, day, link))
    link, day, sec, pence, text = link[order], day[order], sec[order], pence[order], text[order]
    start = np.searchsorted(link, np.arange(n))
    running = np.cumsum(pence)
    before = np.concatenate([[0], running])[start]
    balance = running - before[link] + links.opening[link]
    return ExternalPostings(link=link, day=day.astype(np.int64), sec=sec, pence=pence, text=text, balance=balance)


@dataclass
class Fetch:
    link: int
    day: int
    from_day: int
    consent_no: int


def plan_fetches(rng: np.random.Generator, cal: SimCalendar, links: Links, grants: OpenBankingGrants,
                 d: int | None = None) -> list[Fetch]:
    """Weekly fetches while consent is in force, in the last HISTORY_WEEKS weeks of history and on D (day index d,
    default the calendar's last day) and on every later day of the calendar, plus a backfill fetch when a consent
    starts (or when the history window opens on a running consent)."""
    planned: dict[tuple[int, int], Fetch] = {}
    d = cal.d_index if d is None else d
    window_start = max(1, d - 7 * HISTORY_WEEKS)
    last = cal.d_index
    by_cust: dict[int, list[int]] = {}
    for i, c in enumerate(links.cust.tolist()):
        by_cust.setdefault(c, []).append(i)
    backfilled: set[int] = set()
    for c, start, end, no in sorted(zip(grants.cust.tolist(), grants.start.tolist(), grants.end.tolist(),
                                        grants.consent_no.tolist())):
        first = max(start + 1, window_start)        # the first fetch runs the night after the grant
        if first >= min(end, last + 1):
            continue
        for link in by_cust[c]:
            if link not in backfilled:
                backfilled.add(link)
                planned[(link, first)] = Fetch(link, first, first - BACKFILL_DAYS, no)
            for t in range(first, min(end, last + 1)):
                if (t - int(links.anchor[link])) % 7 == 0:
                    # a renewed consent replaces the old one for a fetch on the same day
                    from_day = planned[(link, t)].from_day if (link, t) in planned else t - WEEKLY_WINDOW
                    planned[(link, t)] = Fetch(link, t, from_day, no)
    return sorted(planned.values(), key=lambda f: (f.day, int(links.cust[f.link]), int(links.provider[f.link])))


class BodyBuilder:
    """OBIE response bodies for one provider version."""

    def __init__(self, cal: SimCalendar, version: str, provider: str):
        self.cal = cal
        self.v4 = version == "4.0"
        self.base = f"https://api.{provider}.co.uk/open-banking/v{version}/aisp"
        self.provider = provider
        self._days: dict[int, tuple[str, str]] = {}

    def when(self, day: int, sec: int) -> str:
        date, offset = self._day(day)
        return f"{date}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}{offset}"

    def _day(self, day: int) -> tuple[str, str]:
        if day not in self._days:
            date, offset = day_text(self.cal, np.array([day]))
            self._days[day] = (str(date[0]), str(offset[0]))
        return self._days[day]

    @staticmethod
    def amount(pence: int) -> dict[str, str]:
        return {"Amount": f"{abs(pence) // 100}.{abs(pence) % 100:02d}", "Currency": "GBP"}

    def envelope(self, data: dict, path: str, page: int = 1, pages: int = 1) -> dict:
        links = {"Self": f"{self.base}/{path}" + (f"?page={page}" if pages > 1 else "")}
        if page < pages:
            links["Next"] = f"{self.base}/{path}?page={page + 1}"
        return {"Data": data, "Links": links, "Meta": {"TotalPages": pages}}

    def account(self, account_id: str, kind: int, opened: str, name: str) -> dict:
        sub, code = ACCOUNT_TYPES[kind]
        body = {"AccountId": account_id, "Status": "Enabled", "StatusUpdateDateTime": opened, "Currency": "GBP"}
        body.update({"AccountCategory": "Personal", "AccountTypeCode": code} if self.v4 else
                    {"AccountType": "Personal", "AccountSubType": sub})
        body.update({"Nickname": sub, "OpeningDate": opened})
        scheme, ident = (("UK.OBIE.PAN", f"XXXXXXXXXXXX{int(account_id) % 10000:04d}") if kind == CARD_EXT else
                         ("UK.OBIE.SortCodeAccountNumber", f"40{int(account_id) % 10**12:012d}"))
        body["Account"] = [{"SchemeName": scheme, "Identification": ident, "Name": name}]
        return body

    def balance(self, account_id: str, pence: int, kind: str, when: str) -> dict:
        names = {"closing": ("ClosingBooked", "CLBD"), "interim": ("InterimAvailable", "ITAV")}[kind]
        return {"AccountId": account_id, "Amount": self.amount(pence),
                "CreditDebitIndicator": "Credit" if pence >= 0 else "Debit", "Type": names[1 if self.v4 else 0],
                "DateTime": when}

    def transaction(self, account_id: str, txn_id: str, day: int, sec: int, pence: int, text: int, balance: int,
                    pending: bool) -> dict:
        info, merchant, mcc, code = TEXTS[text]
        status = ("PDNG" if pending else "BOOK") if self.v4 else ("Pending" if pending else "Booked")
        when = self.when(day, sec)
        body = {"AccountId": account_id, "TransactionId": txn_id, "CreditDebitIndicator":
                "Credit" if pence >= 0 else "Debit", "Status": status, "BookingDateTime": when,
                "ValueDateTime": when, "TransactionInformation": info, "Amount": self.amount(pence),
                "ProprietaryBankTransactionCode": {"Code": code, "Issuer": self.provider}}
        if merchant:
            body["MerchantDetails"] = {"MerchantName": merchant} | ({"MerchantCategoryCode": mcc} if mcc else {})
        if not pending:
            body["Balance"] = {"Amount": self.amount(balance), "CreditDebitIndicator":
                               "Credit" if balance >= 0 else "Debit", "Type": "ITBD" if self.v4 else "InterimBooked"}
        return body

    def standing_order(self, account_id: str, so_id: str, day_of_month: int, last: int | None, nxt: int,
                       pence: int) -> dict:
        body = {"AccountId": account_id, "StandingOrderId": so_id}
        if not self.v4:
            body.update({"Frequency": f"IntrvlMnthDay:01:{day_of_month:02d}", "Reference": "SAVINGS POT"})
        body["NextPaymentDateTime"] = self.when(nxt, 6 * 3600)
        if last is not None:
            body["LastPaymentDateTime"] = self.when(last, 6 * 3600)
        body["StandingOrderStatusCode"] = "ACTV" if self.v4 else "Active"
        body["NextPaymentAmount"] = self.amount(pence)
        if last is not None:
            body["LastPaymentAmount"] = self.amount(pence)
        body["CreditorAccount"] = {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                                   "Identification": f"30{int(account_id) % 10**12:012d}", "Name": "SAVINGS POT"}
        if self.v4:
            body["MandateRelatedInformation"] = {"Frequency": {"Type": "MNTH", "CountPerPeriod": 1,
                                                               "PointInTime": f"{day_of_month:02d}"}}
            body["RemittanceInformation"] = {"Unstructured": ["SAVINGS POT"]}
        return body

    def direct_debit(self, account_id: str, dd_id: str, name: str, last: int | None, pence: int | None) -> dict:
        body = {"AccountId": account_id, "DirectDebitId": dd_id}
        mandate = f"MD{dd_id}"[:35]
        if self.v4:
            body["MandateRelatedInformation"] = {"MandateIdentification": mandate, "Frequency": {"Type": "MNTH"}}
        else:
            body["MandateIdentification"] = mandate
        body["DirectDebitStatusCode"] = "ACTV" if self.v4 else "Active"
        body["Name"] = name[:70]
        if last is not None and pence is not None:
            body["PreviousPaymentDateTime"] = self.when(last, 6 * 3600)
            body["PreviousPaymentAmount"] = self.amount(pence)
        return body

    def scheduled_payment(self, account_id: str, sp_id: str, day: int, pence: int) -> dict:
        return {"AccountId": account_id, "ScheduledPaymentId": sp_id, "ScheduledPaymentDateTime": self.when(day, 0),
                "ScheduledType": "Execution", "Reference": "HOLIDAY BALANCE", "InstructedAmount": self.amount(pence),
                "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                                    "Identification": f"20{int(account_id) % 10**12:012d}", "Name": "SUNNY TRAVEL LTD"}}


@dataclass
class PlannedFetches:
    """A chunk's external accounts, their postings and the fetches still to write (a world stepped day by day)."""

    links: Links
    posts: ExternalPostings
    fetches: list[Fetch]
    pending_draw: np.ndarray
    numbers: np.ndarray         # customer numbers of the chunk


def write_fetches(rng: np.random.Generator, pop: Population, cal: SimCalendar, grants: OpenBankingGrants,
                  history: Path, nightly: Path, d: int | None = None) -> dict:
    """Write the chunk's fetch files up to day d (default the calendar's last day): before d into `history`, on d
    into `nightly`. Returns file counts for history and D, and under "later" the fetches planned after d."""
    d = cal.d_index if d is None else d
    if len(grants.cust) == 0:
        return {"history": 0, "nightly": 0, "later": None}
    links = draw_links(rng, pop, grants)
    posts = draw_postings(rng, pop, cal, links)
    fetches = plan_fetches(rng, cal, links, grants, d)
    pending_draw = rng.random(len(posts.link)) < 0.3
    planned = PlannedFetches(links, posts, fetches, pending_draw, pop.number)
    counts = write_planned(planned, cal, [f for f in fetches if f.day < d], history)
    counts_d = write_planned(planned, cal, [f for f in fetches if f.day == d], nightly)
    later = [f for f in fetches if f.day > d]
    return {"history": counts, "nightly": counts_d,
            "later": PlannedFetches(links, posts, later, pending_draw, pop.number) if later else None}


def write_planned(planned: PlannedFetches, cal: SimCalendar, fetches: list[Fetch], folder: Path) -> int:
    """Write the given fetches of a chunk into folder/openbanking/; returns the number of files."""
    links, posts, pending_draw = planned.links, planned.posts, planned.pending_draw
    ids = customer_ids(planned.numbers)
    key = posts.link * 10**6 + (posts.day + 10**5)
    builders = {name: BodyBuilder(cal, version, name) for name, version in PROVIDERS}
    written = 0
    for fetch in fetches:
        link = fetch.link
        provider = PROVIDERS[int(links.provider[link])][0]
        build = builders[provider]
        account_id = str(int(links.account_id[link]))
        cust = int(links.cust[link])
        lo = np.searchsorted(key, link * 10**6 + fetch.from_day + 10**5)
        hi = np.searchsorted(key, link * 10**6 + fetch.day + 10**5)
        salt = (cust * 31 + fetch.day * 7 + link) % 100
        txns = [build.transaction(account_id, f"{provider[:2].upper()}{account_id}{i:07d}", int(posts.day[i]),
                                  int(posts.sec[i]), int(posts.pence[i]), int(posts.text[i]), int(posts.balance[i]),
                                  bool(pending_draw[i]) and int(posts.day[i]) == fetch.day - 1)
                for i in range(lo, hi)]
        txns.reverse()                                                   # newest first, as most providers do
        closing = int(posts.balance[hi - 1]) if hi > lo else int(links.opening[link])
        if hi == lo:
            before = np.searchsorted(key, link * 10**6 + fetch.from_day + 10**5) - 1
            closing = int(posts.balance[before]) if before >= 0 and posts.link[before] == link else closing
        fetched_at = build.when(fetch.day, 3600 * 2 + salt * 60)
        opened = build.when(-400 - cust % 900, 9 * 3600)
        path = f"accounts/{account_id}"
        doc: dict = {"customer_id": ids[cust], "provider": provider,
                     "consent_id": f"obc-{ids[cust]}-{fetch.consent_no}", "fetched_at": fetched_at}
        doc["accounts"] = build.envelope({"Account": [build.account(account_id, int(links.kind[link]), opened,
                                                                    f"CUSTOMER {ids[cust]}")]}, "accounts")
        doc["balances"] = build.envelope({"Balance": [
            build.balance(account_id, closing, "closing", build.when(fetch.day - 1, 86_399)),
            build.balance(account_id, closing, "interim", fetched_at)]}, f"{path}/balances")
        if len(txns) > 8 and salt < 15:
            half = len(txns) // 2
            doc["transactions"] = [build.envelope({"Transaction": txns[:half]}, f"{path}/transactions", 1, 2),
                                   build.envelope({"Transaction": txns[half:]}, f"{path}/transactions", 2, 2)]
        else:
            doc["transactions"] = build.envelope({"Transaction": txns}, f"{path}/transactions")
        is_current = int(links.kind[link]) == CURRENT_EXT
        if salt >= 5:
            orders = []
            if is_current:
                so_dom = int(links.so_day[link])
                last, nxt = _last_and_next(cal, fetch.day, so_dom)
                so_pence = _amount_on(posts, lo, hi, T_SO)
                orders = [build.standing_order(account_id, f"SO{account_id}", so_dom, last, nxt,
                                               so_pence or 10_000)]
            doc["standing_orders"] = build.envelope({"StandingOrder": orders}, f"{path}/standing-orders")
        debits = []
        if is_current:
            for j, text in enumerate(links.dd_names[link].tolist()):
                last, _ = _last_and_next(cal, fetch.day, 5 if j == 0 else 18)
                debits.append(build.direct_debit(account_id, f"DD{account_id}{j}", TEXTS[text][0], last,
                                                 _amount_on(posts, lo, hi, text)))
        doc["direct_debits"] = build.envelope({"DirectDebit": debits}, f"{path}/direct-debits")
        if salt < 90:
            scheduled = ([build.scheduled_payment(account_id, f"SP{account_id}", fetch.day + 3 + salt % 20,
                                                  20_000 + salt * 500)] if is_current and salt % 3 == 0 else [])
            doc["scheduled_payments"] = build.envelope({"ScheduledPayment": scheduled}, f"{path}/scheduled-payments")
        stamp = cal.date_of(fetch.day).strftime("%Y%m%d")
        out = folder / "openbanking" / f"{ids[cust]}-{provider}-F{stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
        written += 1
    return written


def _last_and_next(cal: SimCalendar, day: int, day_of_month: int) -> tuple[int | None, int]:
    """The last payment day before `day` and the next one on or after it, for a monthly day of the month."""
    days = np.arange(day - 40, day + 40)
    hits = days[cal.day_of_month(days) == day_of_month]
    past, future = hits[hits < day], hits[hits >= day]
    return (int(past[-1]) if len(past) else None), int(future[0])


def _amount_on(posts: ExternalPostings, lo: int, hi: int, text: int) -> int | None:
    """The latest amount of a recurring payment within a fetch (unsigned), if it appears."""
    hit = np.flatnonzero(posts.text[lo:hi] == text)
    return abs(int(posts.pence[lo + hit[-1]])) if len(hit) else None
