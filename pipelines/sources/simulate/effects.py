"""What an accepted action changes in the simulated customer's later cash flows (ground truth, never read by the
pipeline): so that the value of an action is measured from the data, not assumed.

- A heeded shortfall warning trims discretionary spending for some weeks; hardship support and an advisor's call
  trim it too and stop overdraft interest for a while; a fee-free buffer takes the first 100 pounds below zero out of
  the interest; budgeting tools (and a bill reminder, less so) make the customer cut spending earlier as money runs
  low; gambling support stops gambling for three months; a subscription review cancels a streaming subscription;
  travel money tips avoid the non-sterling fees of the next months; a benefits check brings a monthly benefit to
  those who are entitled (low income or a job lost) after a few weeks.
- A sweep moves a weekly share of the customer's true surplus to savings while the current account has room; a
  savings product opens a savings account (if none) with a first deposit from the current account and, for a
  regular saver or child savings, a monthly transfer; an ISA moves a lump sum.
- An accepted credit line adds borrowing: a credit card (half the discretionary card spending moves onto it, paid
  by direct debit after each statement), a personal loan (the advance lands on the current account, repaid monthly),
  a higher arranged overdraft limit.
- Insurance brings a premium (monthly for home insurance, once for travel insurance). A mortgage, a pension
  consolidation, a joint account or help to switch a salary change nothing the landing files can show within the
  run (recorded in truth/effects only).
Amounts are integer pence, days are day indices of the world's calendar.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.sources.simulate import keyed
from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.cashflows import NEVER
from pipelines.sources.simulate.catalog import CARD, CURRENT, LOAN, SAVINGS, catalog
from pipelines.sources.simulate.daily import DailyRun
from pipelines.sources.simulate.ledger import DISCRETIONARY
from pipelines.sources.simulate.responses import Situation

EXTERNAL = -1


@dataclass
class Flows:
    """Recurring money movements started by accepted actions; called by the daily run at the start of each day."""

    cust: list[int] = field(default_factory=list)
    period: list[int] = field(default_factory=list)     # 7: weekly on `when` (weekday), 30: monthly on `when` (dom)
    when: list[int] = field(default_factory=list)
    amount: list[int] = field(default_factory=list)     # pence (a sweep moves at most this)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    src: list[int] = field(default_factory=list)        # slot, or EXTERNAL (money from outside)
    dst: list[int] = field(default_factory=list)        # slot, or EXTERNAL (money leaving the bank)
    src_label: list[int] = field(default_factory=list)
    dst_label: list[int] = field(default_factory=list)
    sweep: list[bool] = field(default_factory=list)     # only what the current account can spare

    def add(self, cust: int, period: int, when: int, amount: int, start: int, end: int, src: int, dst: int,
            src_label: int, dst_label: int, sweep: bool = False) -> None:
        for name, value in (("cust", cust), ("period", period), ("when", when), ("amount", amount),
                            ("start", start), ("end", end), ("src", src), ("dst", dst), ("src_label", src_label),
                            ("dst_label", dst_label), ("sweep", sweep)):
            getattr(self, name).append(value)

    def __call__(self, run: DailyRun, t: int) -> None:
        if not self.cust:
            return
        cal = run.cal
        weekday = int(cal.weekday[t])
        dom = int(cal.day_of_month(np.array([t]))[0])
        for i in range(len(self.cust)):
            if not self.start[i] <= t < self.end[i]:
                continue
            if (self.period[i] == 7 and weekday != self.when[i]) or (self.period[i] == 30 and dom != self.when[i]):
                continue
            c = np.array([self.cust[i]])
            amount = self.amount[i]
            if self.sweep[i]:
                spare = int(run.bal[CURRENT, c[0]]) - int(run.cushion[c[0]])
                amount = max(0, min(amount, spare))
            if self.dst[i] == LOAN:
                amount = max(0, min(amount, -int(run.bal[LOAN, c[0]])))
            if amount <= 0:
                continue
            sec = 6 * 3600 + 15 * 60
            if self.src[i] == EXTERNAL:
                run.book(c, t, np.array([amount]), self.dst_label[i], sec, self.dst[i])
            elif self.dst[i] == EXTERNAL:
                run.book(c, t, np.array([-amount]), self.src_label[i], sec, self.src[i])
            else:
                if not run.is_open(self.dst[i], c, t)[0]:
                    continue
                run.move(c, t, np.array([amount]), self.src[i], self.dst[i], self.src_label[i], self.dst_label[i],
                         sec)


@dataclass
class Effect:
    """One accepted action's effect (a truth row)."""

    cust: int
    action_id: str
    day: int
    effect: str
    amount: int | None = None
    until: int | None = None


def _open_account(run: DailyRun, slot: int, c: int, t: int) -> bool:
    """Open an account of this product for the customer on day t (or keep the open one); True if newly opened."""
    p = run.products
    if p.held[slot, c] and p.open_day[slot, c] <= t and p.close_day[slot, c] > t:
        return False
    p.held[slot, c] = True
    p.open_day[slot, c] = t
    p.close_day[slot, c] = NEVER
    run.bal[slot, c] = 0
    return True


def _future_static(run: DailyRun, c: int, t: int, until: int = NEVER) -> np.ndarray:
    """Indices of the customer's static postings after day t (up to `until`), not yet booked."""
    lo = run.bounds[min(t + 1, len(run.bounds) - 1)]
    hi = run.bounds[min(until + 1, len(run.bounds) - 1)] if until < NEVER else len(run.kept)
    return lo + np.flatnonzero(run.static["cust"][lo:hi] == c)


def apply(seed: int, night: int, run: DailyRun, flows: Flows, cal: SimCalendar, cust: np.ndarray,
          action_ids: np.ndarray, sit: Situation, t: int, changed_accounts: np.ndarray) -> list[Effect]:
    """Apply the accepted actions (customer and action per row) from day t on; returns what changed.

    Each accepted action draws its numbers (how long a trimmed spending lasts, a card's limit, ...) from its own
    generator keyed by (seed, customer number, night, action, occurrence) (`keyed.generator`), so what one customer's
    acceptance changes does not depend on which other actions were accepted that night."""
    cat = catalog()
    pop = run.pop
    out: list[Effect] = []
    dom = int(cal.day_of_month(np.array([t]))[0])
    seen: dict[tuple[int, str], int] = {}
    for c, action in zip(cust.tolist(), [str(a) for a in action_ids]):
        nth = seen[(c, action)] = seen.get((c, action), -1) + 1
        rng = keyed.generator(seed, "effects", int(pop.number[c]), night, action, nth)
        weekday = int(cal.weekday[min(t, cal.n_days - 1)])
        surplus = max(0, int(sit.surplus[c]))
        if action == "shortfall_warning":
            days = int(rng.integers(21, 43))
            run.spend_factor[c] = min(run.spend_factor[c] if run.spend_until[c] > t else 1.0, 0.7)
            run.spend_until[c] = max(run.spend_until[c], t + days)
            out.append(Effect(c, action, t, "discretionary spending trimmed to 70%", until=t + days))
        elif action == "overdraft_buffer":
            run.buffer[c] = 10_000
            run.buffer_until[c] = max(run.buffer_until[c], t + 90)
            out.append(Effect(c, action, t, "no overdraft interest on the first 100 pounds", 10_000, t + 90))
        elif action in ("hardship_support", "advisor_callback"):
            days = 60 if action == "hardship_support" else 42
            if action == "hardship_support":
                run.interest_free_until[c] = max(run.interest_free_until[c], t + days)
            run.spend_factor[c] = min(run.spend_factor[c] if run.spend_until[c] > t else 1.0, 0.8)
            run.spend_until[c] = max(run.spend_until[c], t + days)
            _discipline(run, c, t, t + days, 1.4, 0.6)
            out.append(Effect(c, action, t, "a plan agreed: spending trimmed" +
                              (", overdraft interest paused" if action == "hardship_support" else ""), until=t + days))
        elif action == "income_drop_ahead":
            # the customer plans for the leaner months: discretionary spending trimmed, spending cut earlier as money
            # runs low
            days = int(rng.integers(42, 64))
            run.spend_factor[c] = min(run.spend_factor[c] if run.spend_until[c] > t else 1.0, 0.85)
            run.spend_until[c] = max(run.spend_until[c], t + days)
            _discipline(run, c, t, t + days, 1.3, 0.7)
            out.append(Effect(c, action, t, "discretionary spending trimmed to 85% ahead of a lower income",
                              until=t + days))
        elif action == "large_bill_ahead":
            # money kept back for the payment: spending cut earlier as money runs low, for the weeks before it
            _discipline(run, c, t, t + 60, 1.4, 0.7)
            out.append(Effect(c, action, t, "spending held back to keep money for a large payment", until=t + 60))
        elif action in ("budgeting_tools", "bill_reminder"):
            days, cushion, floor = (90, 1.6, 0.5) if action == "budgeting_tools" else (30, 1.2, 0.8)
            _discipline(run, c, t, t + days, cushion, floor)
            out.append(Effect(c, action, t, "spending cut earlier as money runs low", until=t + days))
        elif action == "gambling_support":
            rows = _future_static(run, c, t, t + 90)
            rows = rows[np.isin(run.static["label"][rows], cat.group("gambling"))]
            run.cancelled[rows] = True
            out.append(Effect(c, action, t, f"{len(rows)} gambling payments blocked", until=t + 90))
        elif action == "subscription_review":
            rows = _future_static(run, c, t)
            rows = rows[np.isin(run.static["label"][rows], cat.group("streaming"))]
            if len(rows):
                label = run.static["label"][rows[0]]
                rows = rows[run.static["label"][rows] == label]
                run.cancelled[rows] = True
            out.append(Effect(c, action, t, f"a subscription cancelled ({len(rows)} payments)"))
        elif action == "travel_money_tips":
            rows = _future_static(run, c, t, t + 120)
            rows = rows[run.static["label"][rows] == cat.one("fx_fee")]
            run.cancelled[rows] = True
            out.append(Effect(c, action, t, f"{len(rows)} non-sterling fees avoided", until=t + 120))
        elif action == "benefits_check":
            if sit.low_income[c] or sit.job_loss_recent[c]:
                amount = int(rng.integers(150, 400)) * 100
                start = t + int(rng.integers(21, 43))
                flows.add(c, 30, int(rng.integers(1, 29)), amount, start, start + 365, EXTERNAL, CURRENT, -1,
                          cat.one("universal_credit"))
                out.append(Effect(c, action, t, "a benefit claimed", amount, start))
            else:
                out.append(Effect(c, action, t, "no entitlement found"))
        elif action == "safe_to_save_sweep":
            _open_account(run, SAVINGS, c, t)
            weekly = max(1_000, int(round(surplus / 4.33 / 500)) * 500)
            flows.add(c, 7, (weekday + 1) % 7, weekly, t + 1, NEVER, CURRENT, SAVINGS, cat.one("to_savings"),
                      cat.one("from_current"), sweep=True)
            out.append(Effect(c, action, t, "weekly sweep to savings", weekly))
        elif action in ("easy_access_savings", "isa", "regular_saver", "child_savings"):
            opened = _open_account(run, SAVINGS, c, t)
            spare = max(0, int(run.bal[CURRENT, c]) - int(run.cushion[c]))
            if action == "isa":
                lump = min(spare, 2_000_000) // 2
            else:
                lump = min(spare // 3, max(surplus, 5_000))
            lump = (lump // 100) * 100
            if lump > 0:
                run.move(np.array([c]), t, np.array([lump]), CURRENT, SAVINGS, cat.one("to_savings"),
                         cat.one("from_current"), 18 * 3600)
            monthly = 0
            if action in ("regular_saver", "child_savings"):
                monthly = max(2_500, (surplus // 2 // 500) * 500) if action == "regular_saver" else 2_500
                flows.add(c, 30, (dom % 28) + 1, monthly, t + 1, NEVER, CURRENT, SAVINGS, cat.one("to_savings"),
                          cat.one("from_current"), sweep=True)
            out.append(Effect(c, action, t, ("savings account opened, " if opened else "") +
                              f"first deposit {lump / 100:.2f}" + (f", monthly {monthly / 100:.2f}" if monthly else ""),
                              lump))
        elif action == "credit_card":
            _open_account(run, CARD, c, t)
            limit = int(rng.choice([1500, 2500, 4000])) * 100
            pop.card_limit[c] = max(int(pop.card_limit[c]), limit)
            run.statement_dom[c] = int(rng.integers(1, 29))
            rows = _future_static(run, c, t)
            rows = rows[(run.static["kind"][rows] == DISCRETIONARY) & (run.static["slot"][rows] == CURRENT)]
            rows = rows[rng.random(len(rows)) < 0.5]
            run.static["slot"][rows] = CARD
            run.flat_index[rows] = CARD * pop.n + c
            out.append(Effect(c, action, t, f"credit card opened, {len(rows)} payments on it", limit))
        elif action == "personal_loan":
            _open_account(run, LOAN, c, t)
            principal = int(rng.choice([2000, 3500, 5000, 8000])) * 100
            run.move(np.array([c]), t, np.array([principal]), LOAN, CURRENT, cat.one("loan_advance"),
                     cat.one("loan_advance_in"), 16 * 3600)
            payment = int(round(principal * 1.045 / 36 / 100)) * 100
            pop.loan_payment[c] = payment
            flows.add(c, 30, (dom % 28) + 1, payment, t + 20, NEVER, CURRENT, LOAN, cat.one("loan_payment"),
                      cat.one("loan_payment_received"))
            out.append(Effect(c, action, t, "personal loan advanced", principal))
        elif action == "overdraft_increase":
            pop.overdraft_limit[c] = int(pop.overdraft_limit[c]) + 50_000
            changed_accounts[CURRENT, c] = True
            out.append(Effect(c, action, t, "arranged overdraft limit raised by 500 pounds", 50_000))
        elif action == "home_insurance":
            premium = int(rng.integers(15, 36)) * 100
            flows.add(c, 30, (dom % 28) + 1, premium, t + 1, NEVER, CURRENT, EXTERNAL,
                      int(cat.group("insurance")[c % len(cat.group("insurance"))]), -1)
            out.append(Effect(c, action, t, "home insurance premium by direct debit", premium))
        elif action == "travel_insurance":
            premium = int(rng.integers(20, 61)) * 100
            run.book(np.array([c]), t, np.array([-premium]), int(cat.group("insurance")[c % 4]), 17 * 3600, CURRENT)
            out.append(Effect(c, action, t, "travel insurance bought", premium))
        else:
            out.append(Effect(c, action, t, "nothing the landing files show within the run"))
    return out


def _discipline(run: DailyRun, c: int, t: int, until: int, cushion: float, floor: float) -> None:
    active = run.discipline_until[c] > t
    run.cushion_factor[c] = max(run.cushion_factor[c], cushion) if active else cushion
    run.floor_factor[c] = min(run.floor_factor[c], floor) if active else floor
    run.discipline_until[c] = max(run.discipline_until[c], until)
