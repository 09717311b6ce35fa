"""The customers of one chunk: archetype, age, region, income, spending habits, products and starting balances.

All traits are drawn here, in one place, so that the cash flows, the life events and the ground truth agree.
Amounts are integer pence (int64) so that postings and balances add up exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import REGION_WEIGHTS, employer_names

ARCHETYPES = ["salaried", "hourly", "freelancer", "retired", "benefits", "student"]
SALARIED, HOURLY, FREELANCER, RETIRED, BENEFITS, STUDENT = range(6)
ARCHETYPE_SHARE = np.array([0.48, 0.12, 0.10, 0.20, 0.07, 0.03])
# median net monthly income (GBP) and its log-spread per archetype
INCOME_MEDIAN = np.array([2300.0, 1650.0, 2400.0, 1500.0, 950.0, 850.0])
INCOME_SIGMA = np.array([0.40, 0.25, 0.55, 0.35, 0.20, 0.25])

TENURES = ["renter", "mortgaged", "owner", "family"]
RENTER, MORTGAGED, OWNER, FAMILY = range(4)
VULNERABILITIES = ["", "health", "life_event", "resilience", "capability"]
OVERDRAFT_LIMITS = np.array([0, 250, 500, 750, 1000, 1500, 2000, 3000]) * 100


@dataclass
class Population:
    """One chunk of customers; every field is an array over the chunk's customers."""

    number: np.ndarray            # global customer number, 1-based
    archetype: np.ndarray
    birth_year: np.ndarray
    region: np.ndarray            # index into catalog.REGIONS, at the start of the window
    since_day: np.ndarray         # day index of customer_since (negative: before the window)
    vulnerability: np.ndarray     # index into VULNERABILITIES (0: none)
    income: np.ndarray            # usual net monthly income, pence
    spend_ratio: np.ndarray       # what the customer tends to spend, as a share of income
    discipline: np.ndarray        # 0..1: how much the customer cuts spending when money is short
    tenure: np.ndarray
    employer: np.ndarray          # index into employer_names()
    payday_rule: np.ndarray       # calendar.monthly_table row (0: last working day)
    pay_weekday: np.ndarray       # weekday of weekly wages
    overdraft_limit: np.ndarray   # pence
    has_savings: np.ndarray
    saver_amount: np.ndarray      # monthly standing transfer to savings, pence (0: none)
    sweeper: np.ndarray           # moves money from savings when the current account goes negative
    has_card: np.ndarray
    card_limit: np.ndarray
    card_share: np.ndarray        # share of card spending put on the credit card
    has_loan: np.ndarray
    loan_payment: np.ndarray      # monthly, pence
    mortgage_internal: np.ndarray # mortgage held at this bank
    housing_cost: np.ndarray      # monthly rent or mortgage payment, pence
    has_car: np.ndarray
    commuter: np.ndarray
    gambler: np.ndarray
    has_children: np.ndarray
    opening: np.ndarray           # balances at the start of the window, pence, shape (5, n)

    @property
    def n(self) -> int:
        return len(self.number)

    def age_at(self, year: int) -> np.ndarray:
        return year - self.birth_year


def draw_population(rng: np.random.Generator, first_number: int, n: int, cal: SimCalendar) -> Population:
    """Draw n customers numbered first_number.. with correlated traits."""
    year = cal.end_date.year
    arch = rng.choice(len(ARCHETYPES), size=n, p=ARCHETYPE_SHARE)
    age = np.select(
        [arch == RETIRED, arch == STUDENT, arch == BENEFITS],
        [rng.integers(62, 92, n), rng.integers(18, 25, n), rng.integers(19, 66, n)],
        np.clip(rng.normal(41, 11, n).round(), 19, 67).astype(np.int64),
    )
    income = np.exp(np.log(INCOME_MEDIAN[arch]) + rng.normal(0, 1, n) * INCOME_SIGMA[arch])
    income = np.round(income * (0.8 + 0.4 * np.clip((age - 19) / 30, 0, 1)) * 100).astype(np.int64)

    tenure_p = {
        RETIRED: [0.12, 0.10, 0.76, 0.02], STUDENT: [0.70, 0.0, 0.0, 0.30], BENEFITS: [0.70, 0.05, 0.10, 0.15],
    }
    tenure = np.empty(n, dtype=np.int64)
    for a in range(len(ARCHETYPES)):
        mask = arch == a
        p = tenure_p.get(a, [0.42, 0.43, 0.08, 0.07])
        tenure[mask] = rng.choice(4, size=int(mask.sum()), p=p)
    young = (age < 26) & (arch != STUDENT)
    tenure[young & (rng.random(n) < 0.4)] = 3

    housing_share = np.where(tenure == RENTER, rng.uniform(0.26, 0.42, n),
                             np.where(tenure == MORTGAGED, rng.uniform(0.18, 0.32, n), 0.0))
    housing_cost = np.round(income * housing_share / 100).astype(np.int64) * 100

    gambler = rng.random(n) < 0.04
    # spending habit: most live within their means, a tail does not; gamblers and low earners run hotter
    spend_ratio = np.exp(rng.normal(np.log(0.92), 0.10, n)) + 0.06 * gambler + 0.04 * (arch == BENEFITS)
    spend_ratio = np.clip(spend_ratio, 0.6, 1.45)
    discipline = rng.beta(4, 2, n)

    since_days_before = np.minimum(rng.exponential(365 * 7, n), 365 * (age - 17)).astype(np.int64)
    since_day = -since_days_before - 1
    joiners = rng.random(n) < 0.015 * cal.n_days / 181
    since_day[joiners] = rng.integers(1, cal.n_days, int(joiners.sum()))

    od_allowed = (arch != STUDENT) | (rng.random(n) < 0.8)
    has_od = od_allowed & (rng.random(n) < 0.55)
    od_idx = np.clip(np.searchsorted([0, 1200, 1800, 2400, 3200, 4200, 5500], income / 100) +
                     rng.integers(-1, 2, n), 1, len(OVERDRAFT_LIMITS) - 1)
    overdraft_limit = np.where(has_od, OVERDRAFT_LIMITS[od_idx], 0).astype(np.int64)
    # student accounts come with a larger interest-free overdraft
    overdraft_limit = np.where((arch == STUDENT) & has_od, rng.choice([100_000, 150_000, 200_000], n),
                               overdraft_limit)

    has_savings = rng.random(n) < np.where(arch == RETIRED, 0.65, 0.42)
    saver_amount = np.where(has_savings & (rng.random(n) < 0.5),
                            np.round(income * rng.uniform(0.03, 0.12, n) / 1000) * 1000, 0).astype(np.int64)
    sweeper = has_savings & (rng.random(n) < 0.6)
    has_card = rng.random(n) < np.where(arch == STUDENT, 0.1, 0.42)
    card_limit = np.where(has_card, rng.choice([1000, 2000, 3500, 5000, 8000], n) * 100, 0).astype(np.int64)
    card_share = np.where(has_card, rng.uniform(0.2, 0.75, n), 0.0)
    has_loan = (rng.random(n) < 0.09) & (arch != RETIRED) & (since_day < 0)
    loan_payment = np.where(has_loan, np.round(income * rng.uniform(0.05, 0.14, n) / 100) * 100, 0).astype(np.int64)
    mortgage_internal = (tenure == MORTGAGED) & (rng.random(n) < 0.4) & (since_day < 0)

    opening = np.zeros((5, n), dtype=np.int64)
    opening[0] = np.round(income * np.exp(rng.normal(np.log(1.1), 0.9, n))).astype(np.int64)
    opening[1] = np.where(has_savings, np.round(income * np.exp(rng.normal(np.log(2.5), 1.0, n))), 0)
    opening[2] = -np.round(card_limit * rng.uniform(0, 0.35, n)).astype(np.int64)
    opening[3] = -np.where(has_loan, loan_payment * rng.integers(2, 48, n), 0)
    opening[4] = -np.where(mortgage_internal, housing_cost * rng.integers(60, 300, n), 0)

    vulnerable = rng.random(n) < 0.03
    vulnerability = np.where(vulnerable, rng.integers(1, len(VULNERABILITIES), n), 0)

    return Population(
        number=np.arange(first_number, first_number + n, dtype=np.int64),
        archetype=arch, birth_year=(year - age).astype(np.int64),
        region=rng.choice(len(REGION_WEIGHTS), size=n, p=REGION_WEIGHTS / REGION_WEIGHTS.sum()),
        since_day=since_day, vulnerability=vulnerability, income=income, spend_ratio=spend_ratio,
        discipline=discipline, tenure=tenure, employer=rng.integers(0, len(employer_names()), n),
        payday_rule=np.where(rng.random(n) < 0.45, 0, rng.choice([1, 15, 20, 25, 28], n)),
        pay_weekday=rng.choice([3, 4], size=n, p=[0.25, 0.75]),
        overdraft_limit=overdraft_limit, has_savings=has_savings, saver_amount=saver_amount, sweeper=sweeper,
        has_card=has_card, card_limit=card_limit, card_share=card_share, has_loan=has_loan,
        loan_payment=loan_payment, mortgage_internal=mortgage_internal, housing_cost=housing_cost,
        has_car=rng.random(n) < 0.65, commuter=(rng.random(n) < 0.4) & (arch != RETIRED),
        gambler=gambler, has_children=(rng.random(n) < 0.3) & (age > 24) & (age < 60), opening=opening,
    )
