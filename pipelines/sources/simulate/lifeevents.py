"""The true life-event timeline of a chunk of customers, and the part of it that customers declare to the bank.

Events are drawn from yearly hazards that depend on archetype, age and tenure, over the window plus a margin of
60 days on both sides (an event just after D has signals before D: savings build-up, baby shopping, flights).
Only a fraction is declared (the training labels), most of them days or weeks after the event.
Look-alikes are drawn here too: customers without an event who do something that resembles one of its signals
(written to truth/lookalikes so that an evaluation can check they do not fire).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.population import FAMILY, HOURLY, RENTER, SALARIED, STUDENT, Population

EVENT_TYPES = ["moving_home", "buying_home", "new_baby", "marriage", "new_job", "job_loss", "retirement",
               "travel_abroad"]
MOVING, BUYING, BABY, MARRIAGE, NEW_JOB, JOB_LOSS, RETIREMENT, TRAVEL = range(8)
DECLARE_SHARE = np.array([0.45, 0.50, 0.30, 0.35, 0.30, 0.25, 0.40, 0.30])
SOURCES = ["address_change", "mortgage_application", "app", "name_change", "app", "hardship_call", "branch",
           "travel_notice"]
MARGIN = 60


@dataclass
class Events:
    """One row per true event (arrays of equal length); `cust` indexes the chunk's customers."""

    cust: np.ndarray
    kind: np.ndarray
    day: np.ndarray
    declared_day: np.ndarray   # when the customer tells the bank (may be after D: then not declared yet)
    duration: np.ndarray       # trip length in days (travel only)

    def of(self, kind: int) -> tuple[np.ndarray, np.ndarray]:
        """(customers, days) of one event type."""
        mask = self.kind == kind
        return self.cust[mask], self.day[mask]

    def declared_by(self, day: int) -> np.ndarray:
        return self.declared_day <= day


def _draw(rng: np.random.Generator, eligible: np.ndarray, yearly: np.ndarray | float, lo: int, hi: int
          ) -> tuple[np.ndarray, np.ndarray]:
    p = 1.0 - np.exp(-np.asarray(yearly) * (hi - lo) / 365.0)
    hit = eligible & (rng.random(len(eligible)) < p)
    cust = np.flatnonzero(hit)
    return cust, rng.integers(lo, hi, len(cust))


def draw_events(rng: np.random.Generator, pop: Population, cal: SimCalendar) -> Events:
    """The timeline: hazards by segment, then the rules that make a life story coherent."""
    lo, hi = -MARGIN, cal.n_days + MARGIN
    age = pop.age_at(cal.end_date.year)
    employed = (pop.archetype == SALARIED) | (pop.archetype == HOURLY)
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []

    c, d = _draw(rng, (pop.tenure == RENTER) | (pop.tenure == FAMILY), 0.16, lo, hi)
    moving = (c, d)
    c_buy, d_buy = _draw(rng, (pop.tenure == RENTER) & (age >= 25) & (age <= 50) & (pop.income >= 180_000)
                         & (pop.archetype != STUDENT), 0.06, lo, hi)
    rows.append((c_buy, d_buy, BUYING))
    # a buyer does not also rent a new home within four months of completion
    buy_day = np.full(pop.n, 10**6, dtype=np.int64)
    buy_day[c_buy] = d_buy
    near = np.abs(buy_day[moving[0]] - moving[1]) < 120
    moving = (moving[0][~near], moving[1][~near])
    rows.append((moving[0], moving[1], MOVING))
    rows.append((*_draw(rng, (age >= 24) & (age <= 42), 0.06, lo, hi), BABY))
    c_mar, d_mar = _draw(rng, (age >= 24) & (age <= 45), 0.04, lo, hi)
    rows.append((c_mar, d_mar, MARRIAGE))

    retire_rate = np.where(age >= 65, 0.5, np.where(age >= 60, 0.2, 0.0))
    c_ret, d_ret = _draw(rng, employed & (age >= 60), retire_rate, lo, hi)
    rows.append((c_ret, d_ret, RETIREMENT))
    not_retiring = employed & ~np.isin(np.arange(pop.n), c_ret)
    c_loss, d_loss = _draw(rng, not_retiring, np.where(pop.archetype == HOURLY, 0.07, 0.04), lo, hi)
    rows.append((c_loss, d_loss, JOB_LOSS))
    c_job, d_job = _draw(rng, not_retiring & (age < 63), 0.12, lo, hi)
    # someone who lost a job and finds a new one does so after the loss
    loss_day = np.full(pop.n, np.iinfo(np.int64).max)
    loss_day[c_loss] = d_loss
    after_loss = loss_day[c_job] < np.iinfo(np.int64).max
    d_job = np.where(after_loss, loss_day[c_job] + rng.integers(20, 120, len(c_job)), d_job)
    rows.append((c_job, d_job, NEW_JOB))

    c_trip, d_trip = _draw(rng, np.ones(pop.n, dtype=bool), 0.7, lo, hi)
    second = rng.random(len(c_trip)) < 0.25
    c2, d2 = c_trip[second], np.clip(d_trip[second] + rng.integers(60, 200, int(second.sum())), lo, hi + 200)
    honeymoon = rng.random(len(c_mar)) < 0.5
    c3, d3 = c_mar[honeymoon], d_mar[honeymoon] + rng.integers(1, 10, int(honeymoon.sum()))
    rows.append((np.concatenate([c_trip, c2, c3]), np.concatenate([d_trip, d2, d3]), TRAVEL))

    cust = np.concatenate([r[0] for r in rows]).astype(np.int64)
    day = np.concatenate([r[1] for r in rows]).astype(np.int64)
    kind = np.concatenate([np.full(len(r[0]), r[2], dtype=np.int64) for r in rows])
    keep = (day < hi) & (day >= pop.since_day[cust] - 30)
    cust, day, kind = cust[keep], day[keep], kind[keep]
    order = np.lexsort((kind, day, cust))
    cust, day, kind = cust[order], day[order], kind[order]

    lag = np.where(rng.random(len(cust)) < 0.35, 0, rng.geometric(1 / 18, len(cust)))
    declared_day = day + lag
    travel = kind == TRAVEL
    declared_day[travel] = day[travel] - rng.integers(1, 21, int(travel.sum()))
    declares = rng.random(len(cust)) < DECLARE_SHARE[kind]
    declared_day = np.where(declares, declared_day, np.iinfo(np.int32).max)
    duration = np.where(travel, rng.integers(3, 15, len(cust)), 0)
    return Events(cust=cust, kind=kind, day=day, declared_day=declared_day, duration=duration)


# Look-alikes: things customers WITHOUT an event do that resemble one of its signals (an evaluation checks that
# they do not fire). name, the event type they mimic, yearly rate among the eligible customers.
LOOKALIKES = [("large_purchase", MOVING, 0.10), ("foreign_online", TRAVEL, 0.25), ("baby_gift", BABY, 0.15),
              ("jewellery_gift", MARRIAGE, 0.12), ("bonus", NEW_JOB, 0.20), ("late_salary", JOB_LOSS, 0.05),
              ("missed_salary", JOB_LOSS, 0.03)]
LOOKALIKE_NAMES = [name for name, _, _ in LOOKALIKES]
LARGE_PURCHASE, FOREIGN_ONLINE, BABY_GIFT, JEWELLERY_GIFT, BONUS, LATE_SALARY, MISSED_SALARY = range(7)


@dataclass
class Lookalikes:
    """One row per look-alike (arrays of equal length): customer, LOOKALIKES index, day inside the window."""

    cust: np.ndarray
    kind: np.ndarray
    day: np.ndarray

    def of(self, kind: int) -> tuple[np.ndarray, np.ndarray]:
        mask = self.kind == kind
        return self.cust[mask], self.day[mask]

    def mimics(self) -> np.ndarray:
        """The event type (EVENT_TYPES index) each row mimics."""
        return np.array([of for _, of, _ in LOOKALIKES], dtype=np.int64)[self.kind]


def draw_lookalikes(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events) -> Lookalikes:
    """Look-alikes inside the window, each for customers who have no true event of the type it mimics (at most one
    of a kind per customer). A home purchase is mimicked like a move (a big one-off purchase for the home)."""
    n = pop.n
    has = np.zeros((len(EVENT_TYPES), n), dtype=bool)
    has[events.kind, events.cust] = True
    steady = (pop.archetype == SALARIED) & ~has[NEW_JOB] & ~has[JOB_LOSS] & ~has[RETIREMENT]
    eligible = {LARGE_PURCHASE: ~has[MOVING] & ~has[BUYING], FOREIGN_ONLINE: ~has[TRAVEL], BABY_GIFT: ~has[BABY],
                JEWELLERY_GIFT: ~has[MARRIAGE], BONUS: steady, LATE_SALARY: steady, MISSED_SALARY: steady}
    rows = []
    taken = np.zeros(n, dtype=bool)   # at most one salary irregularity per customer
    for k, (_, _, rate) in enumerate(LOOKALIKES):
        mask = eligible[k] & ~taken if k in (LATE_SALARY, MISSED_SALARY) else eligible[k]
        cust, day = _draw(rng, mask, rate, 0, cal.n_days)
        if k in (LATE_SALARY, MISSED_SALARY):
            taken[cust] = True
        keep = day >= pop.since_day[cust]
        rows.append((cust[keep], np.full(int(keep.sum()), k, dtype=np.int64), day[keep]))
    cust = np.concatenate([r[0] for r in rows]).astype(np.int64)
    kind = np.concatenate([r[1] for r in rows])
    day = np.concatenate([r[2] for r in rows]).astype(np.int64)
    order = np.lexsort((kind, day, cust))
    return Lookalikes(cust=cust[order], kind=kind[order], day=day[order])
