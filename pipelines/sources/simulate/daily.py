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

from pipelines.sources.simulate import schedules
from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.cashflows import NEVER, Products
from pipelines.sources.simulate.catalog import CARD, CURRENT, LOAN, MORTGAGE, SAVINGS, catalog
from pipelines.sources.simulate.ledger import DISCRETIONARY, ESSENTIAL, FIELDS, FIXED, Ledger, to_ledger
from pipelines.sources.simulate.population import Population

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

    def add(self, cust: np.ndarray, day: int, pence: np.ndarray, label: int, sec: int, slot: int) -> None:
        keep = pence != 0
        if keep.any():
            k = int(keep.sum())
            self.parts.append((cust[keep], np.full(k, slot), np.full(k, day), np.full(k, sec), pence[keep],
                               np.full(k, label)))

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
    run = DailyRun(rng, pop, cal, products, static, budget)
    for t in range(cal.n_days):
        run.step(t)
    return run.ledger(cal.n_days - 1), run.accounts(cal.n_days - 1)


class DailyRun:
    """The day-by-day run as an object that steps one day at a time: `step(t)` books day t. Its state (balances,
    statements due, interest accrued, which static postings were kept) carries from one day to the next, so a run
    can be saved after day D and resumed (the closed-loop simulator, `pipelines.sources.simulate.world`).

    Interventions (an accepted action changing the customer's later cash flows) act through per-customer arrays
    that are neutral by default: `spend_factor` until `spend_until` (discretionary spending trimmed), `cushion_factor`
    and `floor_factor` until `discipline_until` (spending cut earlier as money runs low), `interest_free_until` and
    `buffer` (no overdraft interest, or none on the first `buffer` pence), `cancelled` (static postings that will not
    happen), and `extra` flows booked by `pipelines.sources.simulate.effects` through `book`."""

    def __init__(self, rng: np.random.Generator, pop: Population, cal: SimCalendar, products: Products,
                 static: dict[str, np.ndarray], budget: np.ndarray) -> None:
        self.cat = cat = catalog()
        self.pop, self.cal, self.products = pop, cal, products
        n, days = pop.n, cal.n_days
        order = np.argsort(static["day"], kind="stable")
        self.static = {k: v[order] for k, v in static.items()}
        self.bounds = np.searchsorted(self.static["day"], np.arange(days + 1))
        self.draw = rng.random(len(order))
        self.kept = np.ones(len(order), dtype=bool)
        self.cancelled = np.zeros(len(order), dtype=bool)
        self.weights = self.static["pence"].astype(np.float64)
        self.flat_index = self.static["slot"].astype(np.int64) * n + self.static["cust"]
        self.unpaid_label = cat.unpaid[self.static["label"]]
        self.returnable = (self.unpaid_label >= 0) & (self.static["slot"] == CURRENT) & (self.static["pence"] < 0)

        held, open_day = products.held, products.open_day
        self.bal = np.where(held & (open_day < 0), pop.opening, 0).astype(np.int64)
        self.acc_cust, self.acc_slot = np.nonzero(held.T)
        self.history = np.zeros((days, len(self.acc_cust)), dtype=np.int64)

        self.cushion = np.maximum(30_000, 0.6 * budget)
        self.floor = 0.8 - 0.8 * pop.discipline
        self.sweeper = pop.sweeper & held[SAVINGS]

        def monthly_schedule(who: np.ndarray, start: np.ndarray) -> schedules.DaySchedule:
            rows, day = schedules.monthly(cal, rng.integers(1, 29, len(who)), start, np.full(len(who), NEVER),
                                          bills=True)
            return schedules.DaySchedule(who[rows], day, days)

        card_holders = np.flatnonzero(held[CARD])
        self.statements = monthly_schedule(card_holders, open_day[CARD, card_holders])
        self.loans = monthly_schedule(np.flatnonzero(held[LOAN]), open_day[LOAN, held[LOAN]] + 1)
        mortgage_holders = np.flatnonzero(held[MORTGAGE])
        self.mortgages = monthly_schedule(mortgage_holders, open_day[MORTGAGE, mortgage_holders] + 20)
        buyers = np.flatnonzero((products.buy_day < NEVER) & held[SAVINGS])
        # the deposit goes to the solicitor's client account a few days before completion
        self.completions = schedules.DaySchedule(buyers, products.buy_day[buyers] - rng.integers(1, 8, len(buyers)),
                                                 days)
        self.completion_labels = cat.group("completion")
        closers = np.flatnonzero(held[SAVINGS] & (open_day[SAVINGS] < 0) & (pop.saver_amount == 0) & ~self.sweeper
                                 & (products.buy_day == NEVER) & (rng.random(n) < 0.05))
        self.closures = schedules.DaySchedule(closers, rng.integers(1, days, len(closers)), days)

        self.due_day = np.full(n, NEVER, dtype=np.int64)
        self.due_amount = np.zeros(n, dtype=np.int64)
        self.negative_days = np.zeros(n, dtype=np.float64)
        self.savings_days = np.zeros(n, dtype=np.float64)
        self.dyn = _Dynamic()
        # interventions (neutral until an effect sets them)
        self.spend_factor = np.ones(n)
        self.spend_until = np.full(n, -1, dtype=np.int64)
        self.cushion_factor = np.ones(n)
        self.floor_factor = np.ones(n)
        self.discipline_until = np.full(n, -1, dtype=np.int64)
        self.interest_free_until = np.full(n, -1, dtype=np.int64)
        self.buffer = np.zeros(n, dtype=np.int64)
        self.buffer_until = np.full(n, -1, dtype=np.int64)
        self.statement_dom = np.zeros(n, dtype=np.int64)      # day of month of a card opened by an effect (0: none)
        self.hooks: list = []                                  # callables (run, t) run at the start of each day

    def trim_before(self, d: int) -> None:
        """Let go of what days up to d booked (static postings, the run's own postings): a saved world keeps only
        what is still to come."""
        keep = self.static["day"] > d
        self.static = {k: v[keep] for k, v in self.static.items()}
        self.bounds = np.searchsorted(self.static["day"], np.arange(self.cal.n_days + 1))
        for name in ("draw", "kept", "cancelled", "weights", "flat_index", "unpaid_label", "returnable"):
            setattr(self, name, getattr(self, name)[keep])
        self.dyn = _Dynamic()

    def is_open(self, slot: int, who: np.ndarray, t: int) -> np.ndarray:
        p = self.products
        return p.held[slot, who] & (p.open_day[slot, who] <= t) & (p.close_day[slot, who] > t)

    def move(self, who: np.ndarray, t: int, amount: np.ndarray, src: int, dst: int, src_label: int, dst_label: int,
             sec: int) -> None:
        self.bal[src, who] -= amount
        self.bal[dst, who] += amount
        self.dyn.add(who, t, -amount, src_label, sec, src)
        self.dyn.add(who, t, amount, dst_label, sec, dst)

    def book(self, who: np.ndarray, t: int, amount: np.ndarray, label: int, sec: int, slot: int) -> None:
        """A posting created by an effect (money in or out of one account)."""
        self.bal[slot, who] += amount
        self.dyn.add(who, t, amount, label, sec, slot)

    def step(self, t: int) -> None:
        """Book day t."""
        cat, cal, pop, products, bal = self.cat, self.cal, self.pop, self.products, self.bal
        held, close_day = products.held, products.close_day
        n = pop.n
        for hook in self.hooks:
            hook(self, t)
        if t > 0:
            short = np.flatnonzero(self.sweeper & (bal[CURRENT] < 0) & (bal[SAVINGS] > 0))
            short = short[self.is_open(SAVINGS, short, t)]
            need = ((-bal[CURRENT, short] + 10_000 + 4_999) // 5_000) * 5_000
            self.move(short, t, np.minimum(bal[SAVINGS, short], need), SAVINGS, CURRENT, cat.one("to_current"),
                      cat.one("from_savings"), 8 * 3600)
        if cal.month_first_working[t]:
            fee = np.rint(self.negative_days * OVERDRAFT_DAILY).astype(np.int64)
            who = np.flatnonzero(fee > 0)
            bal[CURRENT, who] -= fee[who]
            self.dyn.add(who, t, -fee[who], cat.one("overdraft_interest"), 3 * 3600, CURRENT)
            interest = np.floor(self.savings_days * SAVINGS_DAILY).astype(np.int64)
            who = np.flatnonzero(interest > 0)
            who = who[self.is_open(SAVINGS, who, t)]
            bal[SAVINGS, who] += interest[who]
            self.dyn.add(who, t, interest[who], cat.one("savings_interest"), 3 * 3600, SAVINGS)
            self.negative_days[:] = 0
            self.savings_days[:] = 0
            for slot, rate, label in ((LOAN, LOAN_MONTHLY, "loan_interest"),
                                      (MORTGAGE, MORTGAGE_MONTHLY, "mortgage_interest")):
                who = np.flatnonzero(held[slot] & (bal[slot] < 0))
                who = who[self.is_open(slot, who, t)]
                charge = np.rint(-bal[slot, who] * rate).astype(np.int64)
                bal[slot, who] -= charge
                self.dyn.add(who, t, -charge, cat.one(label), 3 * 3600, slot)
        lo, hi = self.bounds[t], self.bounds[t + 1]
        if hi > lo:
            static = self.static
            cust, kind = static["cust"][lo:hi], static["kind"][lo:hi]
            disciplined = t < self.discipline_until
            cushion = np.where(disciplined, self.cushion * self.cushion_factor, self.cushion)
            floor = np.where(disciplined, self.floor * self.floor_factor, self.floor)
            willing = np.clip((bal[CURRENT] + pop.overdraft_limit) / cushion, floor, 1.0)
            trimmed = np.where(t < self.spend_until, willing * self.spend_factor, willing)
            factor = np.where(kind == ESSENTIAL, np.maximum(willing[cust], 0.85),
                              np.where(kind == DISCRETIONARY, trimmed[cust], willing[cust]))
            keep = ((kind == FIXED) | (self.draw[lo:hi] < factor)) & ~self.cancelled[lo:hi]
            self.kept[lo:hi] = keep
            moved = np.bincount(self.flat_index[lo:hi][keep], weights=self.weights[lo:hi][keep], minlength=5 * n)
            bal += np.rint(moved).astype(np.int64).reshape(5, n)
            # a direct debit to a third party that leaves the account beyond its arranged limit is returned unpaid
            # (returnable: on the current account; a posting an effect moved to a card is not)
            rows = lo + np.flatnonzero(keep & self.returnable[lo:hi] & (static["slot"][lo:hi] == CURRENT))
            rows = rows[bal[CURRENT, static["cust"][rows]] < -pop.overdraft_limit[static["cust"][rows]]]
            if len(rows):
                who, amount = static["cust"][rows], -static["pence"][rows]
                np.add.at(bal[CURRENT], who, amount)
                self.dyn.add(who, t, amount, self.unpaid_label[rows], np.minimum(static["sec"][rows] + 1, 86_399),
                             CURRENT)
                charged = np.unique(who)
                bal[CURRENT, charged] -= UNPAID_ITEM_FEE
                self.dyn.add(charged, t, np.full(len(charged), -UNPAID_ITEM_FEE), cat.one("unpaid_fee"), 23 * 3600,
                             CURRENT)
        for slot, sched, payment, pay_label, received_label in (
                (LOAN, self.loans, pop.loan_payment, "loan_payment", "loan_payment_received"),
                (MORTGAGE, self.mortgages, products.mortgage_payment, "mortgage_payment",
                 "mortgage_payment_received")):
            who = sched.at(t)
            who = who[(bal[slot, who] < 0) & self.is_open(slot, who, t)]
            pay = np.minimum(payment[who], -bal[slot, who])
            self.move(who, t, pay, CURRENT, slot, cat.one(pay_label), cat.one(received_label), 5 * 3600)
            close_day[slot, who[bal[slot, who] == 0]] = t
        who = np.flatnonzero(self.due_day == t)
        pay = np.minimum(self.due_amount[who], np.maximum(0, -bal[CARD, who]))
        self.move(who, t, pay, CURRENT, CARD, cat.one("card_payment"), cat.one("card_payment_received"),
                  5 * 3600 + 1800)
        self.due_day[who] = NEVER
        who = self.completions.at(t)
        deposit = np.maximum(0, bal[SAVINGS, who] - 50_000)
        bal[SAVINGS, who] -= deposit
        for solicitor in np.unique(who % len(self.completion_labels)):
            mine = who % len(self.completion_labels) == solicitor
            self.dyn.add(who[mine], t, -deposit[mine], int(self.completion_labels[solicitor]), 11 * 3600, SAVINGS)
        who = self.closures.at(t)
        self.move(who, t, bal[SAVINGS, who].copy(), SAVINGS, CURRENT, cat.one("to_current"), cat.one("from_savings"),
                  12 * 3600)
        close_day[SAVINGS, who] = t
        who = self.statements.at(t)
        if self.statement_dom.any():
            dom = int(cal.day_of_month(np.array([t]))[0])
            who = np.union1d(who, np.flatnonzero(self.statement_dom == dom))
        self.due_amount[who] = np.maximum(0, -bal[CARD, who])
        self.due_day[who] = t + 21
        owed = np.maximum(0, -bal[CURRENT])
        if (self.buffer_until > t).any():
            owed = np.where(self.buffer_until > t, np.maximum(0, owed - self.buffer), owed)
        self.negative_days += np.where(self.interest_free_until > t, 0, owed)
        self.savings_days += np.maximum(0, bal[SAVINGS])
        if t < len(self.history):
            self.history[t] = bal[self.acc_slot, self.acc_cust]

    def ledger(self, last: int) -> Ledger:
        """Every posting up to day `last`: the static ones kept plus the run's own."""
        kept = self.kept & (self.static["day"] <= last)
        static_kept = {k: v[kept] for k, v in self.static.items()}
        dynamic = self.dyn.arrays()
        return to_ledger({k: np.concatenate([static_kept[k], dynamic[k]]) for k in FIELDS})

    def take_day(self, t: int) -> Ledger:
        """The postings of day t (after `step(t)`), and the run's own postings are let go (a stepped world writes
        each day once)."""
        lo, hi = self.bounds[t], self.bounds[t + 1]
        kept = np.zeros(len(self.kept), dtype=bool)
        kept[lo:hi] = self.kept[lo:hi]
        static_kept = {k: v[kept] for k, v in self.static.items()}
        dynamic = self.dyn.arrays()
        self.dyn = _Dynamic()
        on_day = dynamic["day"] == t
        return to_ledger({k: np.concatenate([static_kept[k], dynamic[k][on_day]]) for k in FIELDS})

    def accounts(self, last: int) -> Accounts:
        open_day, close_day = self.products.open_day, self.products.close_day
        acc_cust, acc_slot = self.acc_cust, self.acc_slot
        first_day = np.maximum(open_day[acc_slot, acc_cust], 0)
        last_day = np.minimum(close_day[acc_slot, acc_cust], last)
        return Accounts(cust=acc_cust, slot=acc_slot.astype(np.int8), first_day=first_day, last_day=last_day,
                        history=self.history)
