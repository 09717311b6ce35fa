"""The simulator's customers, life events and consents: shares near the documented rates, coherent stories."""
from __future__ import annotations

import datetime as dt

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.consents import GRANT_RATE, OPEN_BANKING, PURPOSES, draw_consents
from pipelines.sources.simulate.lifeevents import JOB_LOSS, NEW_JOB, RETIREMENT, draw_events
from pipelines.sources.simulate.population import ARCHETYPE_SHARE, RETIRED, draw_population

CAL = SimCalendar(dt.date(2026, 11, 20), 180)
N = 20_000


def _bank(seed: int = 3):
    pop = draw_population(np.random.default_rng(seed), 1, N, CAL)
    return pop, draw_events(np.random.default_rng(seed + 1), pop, CAL)


def test_population_shares_and_traits() -> None:
    pop, _ = _bank()
    shares = np.bincount(pop.archetype, minlength=len(ARCHETYPE_SHARE)) / N
    assert np.allclose(shares, ARCHETYPE_SHARE, atol=0.02)
    assert (pop.age_at(2026)[pop.archetype == RETIRED] >= 62).all()
    assert 0.01 < (pop.vulnerability > 0).mean() < 0.05
    assert ((pop.since_day >= 0) & (pop.since_day < CAL.n_days)).mean() > 0.005
    assert (pop.overdraft_limit >= 0).all() and (pop.opening[0] > 0).all()


def test_life_stories_are_coherent_and_partly_declared() -> None:
    pop, ev = _bank()
    loss = dict(zip(*ev.of(JOB_LOSS)))
    for c, d in zip(*ev.of(NEW_JOB)):
        if c in loss:
            assert d > loss[c]
    retired = set(ev.of(RETIREMENT)[0].tolist())
    assert not retired & set(loss)
    declared = ev.declared_by(CAL.d_index) & (ev.day <= CAL.d_index)
    assert 0.2 < declared.mean() < 0.45


def test_consent_rates_and_open_banking_grants() -> None:
    pop, _ = _bank()
    cons, grants = draw_consents(np.random.default_rng(9), pop, CAL)
    first = ~np.concatenate([[False], (cons.cust[1:] == cons.cust[:-1]) & (cons.purpose[1:] == cons.purpose[:-1])])
    for p, rate in enumerate(GRANT_RATE):
        granted = cons.granted[first & (cons.purpose == p)].mean()
        assert abs(granted - rate) < 0.05, PURPOSES[p]
    assert len(np.unique(grants.cust)) / N > GRANT_RATE[OPEN_BANKING] - 0.05
    assert (grants.end > grants.start).all()
    withdrawn = (cons.purpose == OPEN_BANKING) & ~cons.granted & (cons.day >= 0)
    assert withdrawn.sum() > 0
