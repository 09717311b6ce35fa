"""The epsilon-greedy bandit: deterministic draws, exact logged probabilities, picks without replacement."""
from __future__ import annotations

import numpy as np

from models.bandit import beta_binomial_mean, epsilon_greedy, uniforms


def test_uniform_draws_are_deterministic_per_seed_and_independent_of_the_batch():
    seeds = np.arange(1000, dtype=np.uint64) * np.uint64(7919)
    a = uniforms(seeds, 3)
    b = uniforms(seeds[::-1].copy(), 3)[::-1]
    assert np.array_equal(a, b)
    assert ((a >= 0) & (a < 1)).all() and 0.45 < a.mean() < 0.55
    assert not np.array_equal(a, uniforms(seeds, 4))


def test_logged_probabilities_match_the_policy():
    n, pool, eps = 20000, 4, 0.2
    valid = np.ones((n, pool), dtype=bool)
    valid[: n // 2, 3] = False                       # half the customers have only three candidates
    seeds = np.arange(n, dtype=np.uint64) + np.uint64(12345)
    picks = epsilon_greedy(valid, seeds, 2, eps)
    p, explore, col = picks.logging_probability, picks.is_exploration, picks.column
    assert ((p > 0) & (p <= 1)).all()
    # first slot: greedy is column 0, m candidates remain
    m = valid.sum(axis=1)
    greedy_p = 1 - eps + eps / m
    assert np.allclose(p[:, 0], np.where(col[:, 0] == 0, greedy_p, eps / m))
    assert (explore[:, 0] == (col[:, 0] != 0)).all()
    # exploration happens about eps * (m - 1) / m of the time
    assert abs(explore[:, 0].mean() - eps * np.mean((m - 1) / m)) < 0.01
    # no candidate is picked twice
    assert (col[:, 0] != col[:, 1]).all()


def test_a_single_candidate_is_chosen_with_probability_one():
    picks = epsilon_greedy(np.array([[True, False, False]]), np.array([5], dtype=np.uint64), 3, 0.3)
    assert picks.column[0].tolist() == [0, -1, -1]
    assert picks.logging_probability[0, 0] == 1.0 and not picks.is_exploration[0, 0]


def test_beta_binomial_update():
    out = beta_binomial_mean(np.array([0.1, 0.1]), 50, np.array([0, 30]), np.array([0, 50]))
    assert np.isclose(out[0], 0.1) and np.isclose(out[1], (5 + 30) / 100)


def test_the_no_contact_arm_is_a_candidate_and_its_pick_ends_the_customers_slots():
    n, eps = 40000, 0.3
    valid = np.ones((n, 4), dtype=bool)
    stop = np.zeros((n, 4), dtype=bool)
    stop[:, 3] = True                                 # three real candidates (columns 0-2), the arm last
    seeds = np.arange(n, dtype=np.uint64) * np.uint64(31) + np.uint64(7)
    picks = epsilon_greedy(valid, seeds, 3, eps, stop=stop)
    col, p = picks.column, picks.logging_probability
    # slot 1: four candidates, the arm among them (never greedy here: it is last)
    assert np.allclose(p[:, 0], np.where(col[:, 0] == 0, 1 - eps + eps / 4, eps / 4))
    stopped = col[:, 0] == 3
    assert abs(stopped.mean() - eps / 4) < 0.01
    # after the arm: no more picks, nothing logged
    assert (col[stopped, 1:] == -1).all() and np.isnan(p[stopped, 1:]).all()
    # the others went on, and the arm stays a candidate at the next slot
    go = ~stopped
    assert (col[go, 1] >= 0).all()
    assert abs((col[go, 1] == 3).mean() - eps / 3) < 0.01
    # the arm is never offered alone: one real candidate picked at slot 1 leaves it with nothing at slot 2
    alone = epsilon_greedy(np.array([[True, True]]), np.array([9], dtype=np.uint64), 2, 0.0,
                           stop=np.array([[False, True]]))
    assert alone.column[0].tolist() == [0, -1]


def test_the_no_contact_arm_first_is_the_greedy_choice():
    valid = np.ones((5000, 3), dtype=bool)
    stop = np.zeros((5000, 3), dtype=bool)
    stop[:, 0] = True
    picks = epsilon_greedy(valid, np.arange(5000, dtype=np.uint64), 2, 0.1, stop=stop)
    greedy = picks.column[:, 0] == 0
    assert abs(greedy.mean() - (0.9 + 0.1 / 3)) < 0.015
    assert (picks.column[greedy, 1] == -1).all()
    assert np.allclose(picks.logging_probability[greedy, 0], 0.9 + 0.1 / 3)
