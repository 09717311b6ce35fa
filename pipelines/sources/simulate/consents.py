"""Consent events per customer and purpose: the grants or refusals given at onboarding, and the changes since.

Open-banking consent is time-limited (90 days); most customers renew it before it lapses, some let it expire
(an expired grant counts as a withdrawal). A few customers withdraw or grant other purposes during the window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.population import Population

PURPOSES = ["personalization", "open_banking", "life_events", "location", "marketing_email", "marketing_sms",
            "marketing_push", "marketing_inapp", "service_alerts"]
GRANT_RATE = np.array([0.85, 0.25, 0.60, 0.50, 0.55, 0.30, 0.40, 0.65, 0.99])
OPEN_BANKING = PURPOSES.index("open_banking")
OB_DAYS = 90
NO_EXPIRY = -(10**9)


@dataclass
class Consents:
    cust: np.ndarray
    purpose: np.ndarray
    granted: np.ndarray
    day: np.ndarray
    sec: np.ndarray
    expires_day: np.ndarray      # NO_EXPIRY when the consent does not expire


@dataclass
class OpenBankingGrants:
    """Periods in which a customer's open-banking consent is in force: [start, end) day indices."""

    cust: np.ndarray
    start: np.ndarray
    end: np.ndarray
    consent_no: np.ndarray


def draw_consents(rng: np.random.Generator, pop: Population, cal: SimCalendar) -> tuple[Consents, OpenBankingGrants]:
    n = pop.n
    rows: list[tuple[np.ndarray, ...]] = []
    onboarding = np.maximum(pop.since_day, -720)
    for p, rate in enumerate(GRANT_RATE):
        if p == OPEN_BANKING:
            continue
        granted = rng.random(n) < rate
        sec = rng.integers(8 * 3600, 22 * 3600, n)
        rows.append((np.arange(n), np.full(n, p), granted, onboarding, sec, np.full(n, NO_EXPIRY)))
        flips = np.flatnonzero(rng.random(n) < 0.03)
        day = rng.integers(0, cal.n_days, len(flips))
        flips, day = flips[day > onboarding[flips]], day[day > onboarding[flips]]
        rows.append((flips, np.full(len(flips), p), ~granted[flips], day, rng.integers(8 * 3600, 22 * 3600, len(flips)),
                     np.full(len(flips), NO_EXPIRY)))
    # open banking: a first grant, then renewals every 90 days for most; some lapse, a few withdraw
    ob = np.flatnonzero(rng.random(n) < GRANT_RATE[OPEN_BANKING])
    start = np.maximum(pop.since_day[ob], 0) + rng.integers(-150, 30, len(ob))
    start = np.maximum(start, onboarding[ob])
    refused = np.setdiff1d(np.arange(n), ob)
    rows.append((refused, np.full(len(refused), OPEN_BANKING), np.zeros(len(refused), dtype=bool), onboarding[refused],
                 rng.integers(8 * 3600, 22 * 3600, len(refused)), np.full(len(refused), NO_EXPIRY)))
    grants: list[tuple[np.ndarray, ...]] = []
    alive = np.ones(len(ob), dtype=bool)
    day = start.copy()
    for k in range(6):
        sec = rng.integers(8 * 3600, 22 * 3600, len(ob))
        live = alive & (day < cal.n_days)
        rows.append((ob[live], np.full(int(live.sum()), OPEN_BANKING), np.ones(int(live.sum()), dtype=bool), day[live],
                     sec[live], day[live] + OB_DAYS))
        end = day + OB_DAYS
        withdraw = live & (rng.random(len(ob)) < 0.03)
        withdraw_day = day + rng.integers(1, OB_DAYS, len(ob))
        wd = withdraw & (withdraw_day < cal.n_days)
        rows.append((ob[wd], np.full(int(wd.sum()), OPEN_BANKING), np.zeros(int(wd.sum()), dtype=bool),
                     withdraw_day[wd], sec[wd], np.full(int(wd.sum()), NO_EXPIRY)))
        end = np.where(withdraw, withdraw_day, end)
        grants.append((ob[live], day[live], end[live], np.full(int(live.sum()), k + 1)))
        renew = live & ~withdraw & (rng.random(len(ob)) < 0.85)
        alive = renew
        day = day + OB_DAYS - rng.integers(1, 10, len(ob))
    cons = Consents(*(np.concatenate([r[i] for r in rows]) for i in range(6)))
    keep = cons.day < cal.n_days
    cons = Consents(*(getattr(cons, f)[keep] for f in ("cust", "purpose", "granted", "day", "sec", "expires_day")))
    order = np.lexsort((cons.sec, cons.day, cons.purpose, cons.cust))
    cons = Consents(*(getattr(cons, f)[order] for f in ("cust", "purpose", "granted", "day", "sec", "expires_day")))
    g = OpenBankingGrants(*(np.concatenate([r[i] for r in grants]) for i in range(4)))
    return cons, g
