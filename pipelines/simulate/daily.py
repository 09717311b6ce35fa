"""The bank's day-by-day run over a chunk: balances move with the postings, and what depends on the balance
happens here (vectorised over customers, one step per day).

- Customers cut discretionary spending as their money runs out (how much depends on their discipline), and
  essentials less so: shortfalls come from spending against income, irregular pay and shocks, not from a draw.
- Sweepers move money from savings the morning after their current account went negative.
- On the first working day of a month: overdraft interest (39.9% EAR on the negative balance), savings interest,
  loan and mortgage interest.
- Credit card statements, paid in full by direct debit 21 days later; loans and mortgages held here repaid
  monthly (a loan that reaches zero is closed); some savings accounts are emptied and closed; buyers pay their
  deposit from savings on completion.
- A direct debit to a third party that leaves the current account beyond its arranged limit at the end of the day
  is returned unpaid the same day ("UNPAID DIRECT DEBIT <payee>", the amount back), and the bank charges one
  unpaid-item fee per customer and day. Standing orders and the bank's own collections (card, loan, mortgage) are
  always paid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulate import schedules
from pipelines.simulate.calendar import SimCalendar
from pipelines.simulate.cashflows import NEVER, Products
from pipelines.simulate.catalog import CARD, CURRENT, LOAN, MORTGAGE, SAVINGS, catalog
from pipelines.simulate.ledger import ESSENTIAL, FIELDS, FIXED, Ledger, to_ledger
from pipelines.simulate.population import Population

OVERDRAFT_DAILY = 0.399 / 365
SAVINGS_DAILY = 0.035 / 365
LOAN_MONTHLY = 0.079 / 12
MORTGAGE_MONTHLY = 0.045 / 12
UNPAID_ITEM_FEE = 500   # pence


@dataclass
class Accounts:
    """The accounts held in a chunk and their true end-of-day balances."""

    cust: np.ndarray
    slot: np.ndarray
    first_day: np.ndarray      # first day with a balance (opened, or the window start)
    last_day: np.ndarray       # last day with a balance (closed, or D)
    history: np.ndarray        # (n_days, n_accounts) end-of-day balance, pence


class _Dynamic:
    """Postings created by the daily run."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, cust: np.ndarray, day: int, pence: np.ndarray, label: int | np.ndarray, sec: int | np.ndarray,
            slot: int) -> None:
        keep = pence != 0
        if keep.any():
            k = int(keep.sum())

            def column(value: int | np.ndarray) -> np.ndarray:
                value = np.asarray(value)
                return value[keep] if value.ndim else np.full(k, value)

            self.parts.append((cust[keep], np.full(k, slot), np.full(k, day), column(sec), pence[keep],
                               column(label)))

    def arrays(self) -> dict[str, np.ndarray]:
        """The ledger columns: GBP, domestic, fixed (never cut by the spending throttle)."""
        names = ("cust", "slot", "day", "sec", "pence", "label")
        out = {name: (np.concatenate([p[i] for p in self.parts]) if self.parts else np.zeros(0)).astype(FIELDS[name])
               for i, name in enumerate(names)}
        out["fx_minor"] = out["pence"].copy()
        for name in ("cur", "country", "kind"):
            out[name] = np.zeros(len(out["cust"]), dtype=FIELDS[name])
        return out


def run_days(rng: np.random.Generator, pop: Population, cal: SimCalendar, products: Products,
             static: dict[str, np.ndarray], budget: np.ndarray) -> tuple[Ledger, Accounts]:
    """Step through the days; returns every posting (kept static ones plus the run's own) and the balances."""
    cat = catalog()
    n, days = pop.n, cal.n_days
    order = np.argsort(static["day"], kind="stable")
    static = {k: v[order] for k, v in static.items()}
    bounds = np.searchsorted(static["day"], np.arange(days + 1))
    draw = rng.random(len(order))
    kept = np.ones(len(order), dtype=bool)
    weights = static["pence"].astype(np.float64)
    flat_index = static["slot"].astype(np.int64) * n + static["cust"]
    unpaid_label = cat.unpaid[static["label"]]
    returnable = (unpaid_label >= 0) & (static["slot"] == CURRENT) & (static["pence"] < 0)

    held, open_day, close_day = products.held, products.open_day, products.close_day
    bal = np.where(held & (open_day < 0), pop.opening, 0).astype(np.int64)
    acc_cust, acc_slot = np.nonzero(held.T)
    history = np.zeros((days, len(acc_cust)), dtype=np.int64)

    cushion = np.maximum(30_000, 0.6 * budget)
    floor = 0.8 - 0.8 * pop.discipline
    od_limit = pop.overdraft_limit
    sweeper = pop.sweeper & held[SAVINGS]

    def monthly_schedule(who: np.ndarray, start: np.ndarray) -> schedules.DaySchedule:
        rows, day = schedules.monthly(cal, rng.integers(1, 29, len(who)), start, np.full(len(who), NEVER), bills=True)
        return schedules.DaySchedule(who[rows], day, days)

    card_holders = np.flatnonzero(held[CARD])
    statements = monthly_schedule(card_holders, open_day[CARD, card_holders])
    loans = monthly_schedule(np.flatnonzero(held[LOAN]), open_day[LOAN, held[LOAN]] + 1)
    mortgage_holders = np.flatnonzero(held[MORTGAGE])
    mortgages = monthly_schedule(mortgage_holders, open_day[MORTGAGE, mortgage_holders] + 20)
    buyers = np.flatnonzero((products.buy_day < NEVER) & held[SAVINGS])
    # the deposit goes to the solicitor's client account a few days before completion
    completions = schedules.DaySchedule(buyers, products.buy_day[buyers] - rng.integers(1, 8, len(buyers)), days)
    completion_labels = cat.group("completion")
    closers = np.flatnonzero(held[SAVINGS] & (open_day[SAVINGS] < 0) & (pop.saver_amount == 0) & ~sweeper
                             & (products.buy_day == NEVER) & (rng.random(n) < 0.05))
    closures = schedules.DaySchedule(closers, rng.integers(1, days, len(closers)), days)

    due_day = np.full(n, NEVER, dtype=np.int64)
    due_amount = np.zeros(n, dtype=np.int64)
    negative_days = np.zeros(n, dtype=np.float64)
    savings_days = np.zeros(n, dtype=np.float64)
    dyn = _Dynamic()

    def is_open(slot: int, who: np.ndarray, t: int) -> np.ndarray:
        return held[slot, who] & (open_day[slot, who] <= t) & (close_day[slot, who] > t)

    def move(who: np.ndarray, t: int, amount: np.ndarray, src: int, dst: int, src_label: int, dst_label: int,
             sec: int) -> None:
        bal[src, who] -= amount
        bal[dst, who] += amount
        dyn.add(who, t, -amount, src_label, sec, src)
        dyn.add(who, t, amount, dst_label, sec, dst)

    for t in range(days):
        if t > 0:
            short = np.flatnonzero(sweeper & (bal[CURRENT] < 0) & (bal[SAVINGS] > 0))
            short = short[is_open(SAVINGS, short, t)]
            need = ((-bal[CURRENT, short] + 10_000 + 4_999) // 5_000) * 5_000
            move(short, t, np.minimum(bal[SAVINGS, short], need), SAVINGS, CURRENT, cat.one("to_current"),
                 cat.one("from_savings"), 8 * 3600)
        if cal.month_first_working[t]:
            fee = np.rint(negative_days * OVERDRAFT_DAILY).astype(np.int64)
            who = np.flatnonzero(fee > 0)
            bal[CURRENT, who] -= fee[who]
            dyn.add(who, t, -fee[who], cat.one("overdraft_interest"), 3 * 3600, CURRENT)
            interest = np.floor(savings_days * SAVINGS_DAILY).astype(np.int64)
            who = np.flatnonzero(interest > 0)
            who = who[is_open(SAVINGS, who, t)]
            bal[SAVINGS, who] += interest[who]
            dyn.add(who, t, interest[who], cat.one("savings_interest"), 3 * 3600, SAVINGS)
            negative_days[:] = 0
            savings_days[:] = 0
            for slot, rate, label in ((LOAN, LOAN_MONTHLY, "loan_interest"),
                                      (MORTGAGE, MORTGAGE_MONTHLY, "mortgage_interest")):
                who = np.flatnonzero(held[slot] & (bal[slot] < 0))
                who = who[is_open(slot, who, t)]
                charge = np.rint(-bal[slot, who] * rate).astype(np.int64)
                bal[slot, who] -= charge
                dyn.add(who, t, -charge, cat.one(label), 3 * 3600, slot)
        lo, hi = bounds[t], bounds[t + 1]
        if hi > lo:
            cust, kind = static["cust"][lo:hi], static["kind"][lo:hi]
            willing = np.clip((bal[CURRENT] + od_limit) / cushion, floor, 1.0)
            factor = np.where(kind == ESSENTIAL, np.maximum(willing[cust], 0.85), willing[cust])
            keep = (kind == FIXED) | (draw[lo:hi] < factor)
            kept[lo:hi] = keep
            moved = np.bincount(flat_index[lo:hi][keep], weights=weights[lo:hi][keep], minlength=5 * n)
            bal += np.rint(moved).astype(np.int64).reshape(5, n)
            rows = lo + np.flatnonzero(keep & returnable[lo:hi])
            rows = rows[bal[CURRENT, static["cust"][rows]] < -od_limit[static["cust"][rows]]]
            if len(rows):
                who, amount = static["cust"][rows], -static["pence"][rows]
                np.add.at(bal[CURRENT], who, amount)
                dyn.add(who, t, amount, unpaid_label[rows], np.minimum(static["sec"][rows] + 1, 86_399), CURRENT)
                charged = np.unique(who)
                bal[CURRENT, charged] -= UNPAID_ITEM_FEE
                dyn.add(charged, t, np.full(len(charged), -UNPAID_ITEM_FEE), cat.one("unpaid_fee"), 23 * 3600,
                        CURRENT)
        for slot, sched, payment, pay_label, received_label in (
                (LOAN, loans, pop.loan_payment, "loan_payment", "loan_payment_received"),
                (MORTGAGE, mortgages, products.mortgage_payment, "mortgage_payment", "mortgage_payment_received")):
            who = sched.at(t)
            who = who[(bal[slot, who] < 0) & is_open(slot, who, t)]
            pay = np.minimum(payment[who], -bal[slot, who])
            move(who, t, pay, CURRENT, slot, cat.one(pay_label), cat.one(received_label), 5 * 3600)
            close_day[slot, who[bal[slot, who] == 0]] = t
        who = np.flatnonzero(due_day == t)
        pay = np.minimum(due_amount[who], np.maximum(0, -bal[CARD, who]))
        move(who, t, pay, CURRENT, CARD, cat.one("card_payment"), cat.one("card_payment_received"), 5 * 3600 + 1800)
        due_day[who] = NEVER
        who = completions.at(t)
        deposit = np.maximum(0, bal[SAVINGS, who] - 50_000)
        bal[SAVINGS, who] -= deposit
        for solicitor in np.unique(who % len(completion_labels)):
            mine = who % len(completion_labels) == solicitor
            dyn.add(who[mine], t, -deposit[mine], int(completion_labels[solicitor]), 11 * 3600, SAVINGS)
        who = closures.at(t)
        move(who, t, bal[SAVINGS, who].copy(), SAVINGS, CURRENT, cat.one("to_current"), cat.one("from_savings"),
             12 * 3600)
        close_day[SAVINGS, who] = t
        who = statements.at(t)
        due_amount[who] = np.maximum(0, -bal[CARD, who])
        due_day[who] = t + 21
        negative_days += np.maximum(0, -bal[CURRENT])
        savings_days += np.maximum(0, bal[SAVINGS])
        history[t] = bal[acc_slot, acc_cust]

    static_kept = {k: v[kept] for k, v in static.items()}
    dynamic = dyn.arrays()
    ledger = to_ledger({k: np.concatenate([static_kept[k], dynamic[k]]) for k in FIELDS})
    first_day = np.maximum(open_day[acc_slot, acc_cust], 0)
    last_day = np.minimum(close_day[acc_slot, acc_cust], days - 1)
    return ledger, Accounts(cust=acc_cust, slot=acc_slot.astype(np.int8), first_day=first_day, last_day=last_day,
                            history=history)
