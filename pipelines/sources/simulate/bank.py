"""One chunk of the bank, end to end: customers, life events, products, flows, the daily run.

Each chunk has its own random streams, seeded from (seed, chunk number, stream), so a chunk's content depends
only on the seed, its number and the calendar, never on other chunks or on the order they run in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.cashflows import (NEVER, Products, add_bills, add_housing, add_incomes, add_partner_transfers,
                                          add_savings_transfers, event_days, open_products)
from pipelines.sources.simulate.catalog import REGION_WEIGHTS, SAVINGS, catalog
from pipelines.sources.simulate.daily import Accounts, DailyRun
from pipelines.sources.simulate.ledger import Ledger, PostingBuffer
from pipelines.sources.simulate.lifeevents import BUYING, JOB_LOSS, MOVING, Events, Lookalikes, draw_events, draw_lookalikes
from pipelines.sources.simulate.population import Population, draw_population
from pipelines.sources.simulate.spending import add_card_spending, add_cash_and_habits, add_life_event_spending

STREAMS = {"population": 1, "events": 2, "products": 3, "incomes": 4, "housing": 5, "bills": 6, "savings": 7,
           "spending": 8, "habits": 9, "life_spend": 10, "daily": 11, "regions": 12, "consents": 13,
           "openbanking": 14, "lookalikes": 15, "partners": 16, "messages": 17, "app_events": 18,
           "response_model": 21}
# (19 and 20 were the stepped world's answers and effects, now keyed per customer, night and action: keyed.py)


def stream(seed: int, chunk: int, name: str) -> np.random.Generator:
    """An independent random stream per (seed, chunk, purpose): changing one flow never shifts another."""
    return np.random.default_rng(np.random.SeedSequence([seed, chunk, STREAMS[name]]))


@dataclass
class Chunk:
    number: int
    pop: Population
    events: Events
    products: Products
    ledger: Ledger
    accounts: Accounts
    region_day: np.ndarray      # day the region changed (NEVER if not)
    new_region: np.ndarray
    lookalikes: Lookalikes
    run: DailyRun | None = None     # kept when the chunk stops before the calendar's end (a world to step on)
    budget: np.ndarray | None = None


def simulate_chunk(seed: int, chunk: int, first_number: int, n: int, cal: SimCalendar,
                   through: int | None = None) -> Chunk:
    """The chunk's customers and their money, booked day by day up to day `through` (default: the calendar's last
    day). When it stops earlier, the returned chunk keeps the daily run (`run`) to step on."""
    pop = draw_population(stream(seed, chunk, "population"), first_number, n, cal)
    events = draw_events(stream(seed, chunk, "events"), pop, cal)
    lookalikes = draw_lookalikes(stream(seed, chunk, "lookalikes"), pop, cal, events)
    products = open_products(stream(seed, chunk, "products"), pop, cal, events)
    region_day, new_region = _region_changes(stream(seed, chunk, "regions"), pop, events)
    buf = PostingBuffer(cal.n_days, products.open_day)
    _add_opening_deposits(pop, products, buf)
    add_incomes(stream(seed, chunk, "incomes"), pop, cal, events, lookalikes, buf)
    add_housing(stream(seed, chunk, "housing"), pop, cal, events, products, buf)
    bills = add_bills(stream(seed, chunk, "bills"), pop, cal, events, products, new_region, buf)
    add_savings_transfers(stream(seed, chunk, "savings"), pop, cal, products, buf)
    shared = add_partner_transfers(stream(seed, chunk, "partners"), pop, cal, events, buf)
    # cash, travel and the odd repair come on top of everyday card spending
    unbudgeted = 0.08 * pop.income + 8_000
    fixed = pop.housing_cost + bills + shared + pop.saver_amount + pop.loan_payment + 3_000 + unbudgeted
    budget = np.maximum(pop.income * pop.spend_ratio - fixed, pop.income * 0.12)
    level = _spending_level(pop, cal, events)
    add_card_spending(stream(seed, chunk, "spending"), pop, cal, budget, level, buf)
    add_cash_and_habits(stream(seed, chunk, "habits"), pop, cal, buf)
    add_life_event_spending(stream(seed, chunk, "life_spend"), pop, cal, events, lookalikes, buf)
    run = DailyRun(stream(seed, chunk, "daily"), pop, cal, products, buf.arrays(), budget)
    last = cal.n_days - 1 if through is None else int(through)
    for t in range(last + 1):
        run.step(t)
    ledger, accounts = run.ledger(last), run.accounts(last)
    keep = through is not None and last < cal.n_days - 1
    return Chunk(chunk, pop, events, products, ledger, accounts, region_day, new_region, lookalikes,
                 run=run if keep else None, budget=budget)


def _add_opening_deposits(pop: Population, products: Products, buf: PostingBuffer) -> None:
    """Customers who join during the window switch their money in on their first day."""
    cat = catalog()
    joiners = np.flatnonzero(pop.since_day >= 0)
    buf.add(joiners, pop.since_day[joiners], pop.opening[0, joiners], cat.one("opening_deposit"), 10 * 3600)
    savers = joiners[products.held[SAVINGS, joiners]]
    buf.add(savers, pop.since_day[savers], pop.opening[SAVINGS, savers], cat.one("cash_deposit"), 10 * 3600 + 60,
            slot=SAVINGS)


def _spending_level(pop: Population, cal: SimCalendar, events: Events) -> np.ndarray:
    """(n, days) multiplier on everyday spending: after a job loss spending falls (a month later, as savings
    run down); in the weeks around a move people buy more for the home; in the months before buying, less."""
    level = np.ones((pop.n, cal.n_days), dtype=np.float32)
    day = np.arange(cal.n_days)[None, :]
    loss = event_days(events, JOB_LOSS, pop.n)[:, None]
    level *= np.where(day >= loss + 30, 0.7, 1.0).astype(np.float32)
    buy = event_days(events, BUYING, pop.n)[:, None]
    move = np.minimum(event_days(events, MOVING, pop.n)[:, None], buy)
    level *= np.where((day >= move - 7) & (day < move + 30), 1.15, 1.0).astype(np.float32)
    # buyers tighten their belts while they save the deposit
    level *= np.where((day >= buy - 180) & (day < buy - 14), 0.88, 1.0).astype(np.float32)
    return level


def _region_changes(rng: np.random.Generator, pop: Population, events: Events) -> tuple[np.ndarray, np.ndarray]:
    """A move or a purchase sometimes takes the customer to another region (seen in the customers upserts)."""
    move = np.minimum(event_days(events, MOVING, pop.n), event_days(events, BUYING, pop.n))
    changes = (move < NEVER) & (rng.random(pop.n) < 0.35)
    region_day = np.where(changes, move, NEVER)
    other = rng.choice(len(REGION_WEIGHTS), size=pop.n, p=REGION_WEIGHTS / REGION_WEIGHTS.sum())
    new_region = np.where(changes & (other != pop.region), other, pop.region)
    region_day = np.where(new_region != pop.region, region_day, NEVER)
    return region_day, new_region
