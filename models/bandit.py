"""Exploration for next best actions: an epsilon-greedy contextual bandit with logged propensities, and the
Beta-Binomial propensity update. Pure numpy: no lake, no config files (models never import pipelines).

The context enters through the scores: each candidate's score is its priority (propensity x context x value x lever),
computed from the customer's context by the caller. Per customer the candidates are a pool sorted best first; `slots`
picks are made one after the other without replacement. At each pick, with probability 1 - epsilon the best remaining
candidate is taken (exploit), with probability epsilon one of the m remaining is drawn uniformly (explore). The logged
probability of the pick is the exact probability the policy had of choosing it at that slot, given the earlier picks:

    p = (1 - epsilon) * [pick is the best remaining] + epsilon / m

so p is in (0, 1], equals 1 when only one candidate remains, and `is_exploration` (the pick is not the best remaining)
holds exactly when p = epsilon / m < 1 - epsilon + epsilon / m. These logged probabilities are what inverse-propensity
and doubly robust offline evaluation need.

Randomness is deterministic and independent of batch composition: a uniform draw is a counter-based hash
(splitmix64) of a per-customer 64-bit seed (the caller derives it from customer_id and as_of) and the draw number, so
the same customer on the same day draws the same numbers whichever shard or machine runs it.

A "stop" entry (the no-contact arm) may sit in a pool: it is a candidate like any other at each slot (greedy when it
is the best remaining, or drawn by exploration), and picking it ends the customer's picks. It is a candidate only
while at least one other entry remains (alone it would be a decision with nothing to decide).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise over uint64."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniforms(seeds: np.ndarray, draw: int) -> np.ndarray:
    """Draw number `draw` of every seed: uniform floats in [0, 1), 53 bits."""
    with np.errstate(over="ignore"):
        x = splitmix64(seeds.astype(np.uint64) ^ splitmix64(np.full(len(seeds), draw, dtype=np.uint64)))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class Picks:
    """Per customer and slot: the pool column picked (-1: none), its logged probability and whether it explored."""

    column: np.ndarray            # (n, slots) int
    logging_probability: np.ndarray  # (n, slots) float, NaN where no pick
    is_exploration: np.ndarray    # (n, slots) bool


def epsilon_greedy(valid: np.ndarray, seeds: np.ndarray, slots: np.ndarray | int, epsilon: float,
                   first_draw: int = 0, stop: np.ndarray | None = None) -> Picks:
    """Pick up to `slots` (per customer, or one number) of the valid pool entries, in order.

    `valid` is (n, P): pool entries sorted best first per row (True where a candidate sits). Exploitation takes the
    first valid remaining entry; exploration draws uniformly among the remaining ones. `stop` (n, P), within `valid`:
    the entries whose pick ends the row's picks (the no-contact arm).
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    n, pool = valid.shape
    slots_per_row = np.broadcast_to(np.asarray(slots, dtype=np.int64), (n,))
    max_slots = int(slots_per_row.max()) if n else 0
    stop = np.zeros_like(valid, dtype=bool) if stop is None else (np.asarray(stop, dtype=bool) & valid)
    remaining = valid.copy()
    column = np.full((n, max_slots), -1, dtype=np.int64)
    probability = np.full((n, max_slots), np.nan)
    exploring = np.zeros((n, max_slots), dtype=bool)
    rows = np.arange(n)
    stopped = np.zeros(n, dtype=bool)
    for slot in range(max_slots):
        remaining &= ~(stop & ~(remaining & ~stop).any(axis=1)[:, None])     # a stop entry alone is no choice
        m = remaining.sum(axis=1)
        active = (m > 0) & (slot < slots_per_row) & ~stopped
        if not active.any():
            break
        greedy = np.argmax(remaining, axis=1)           # first remaining (pool is sorted best first)
        u_explore = uniforms(seeds, first_draw + 2 * slot)
        u_pick = uniforms(seeds, first_draw + 2 * slot + 1)
        explore = u_explore < epsilon
        k = np.minimum((u_pick * np.maximum(m, 1)).astype(np.int64), np.maximum(m - 1, 0))   # k-th remaining
        rank = np.cumsum(remaining, axis=1) - 1
        kth = np.argmax(remaining & (rank == k[:, None]), axis=1)
        pick = np.where(explore, kth, greedy)
        is_greedy = pick == greedy
        p = (1.0 - epsilon) * is_greedy + epsilon / np.maximum(m, 1)
        column[active, slot] = pick[active]
        probability[active, slot] = np.minimum(p[active], 1.0)
        exploring[active, slot] = ~is_greedy[active]
        remaining[rows[active], pick[active]] = False
        stopped |= active & stop[rows, pick]
    return Picks(column=column, logging_probability=probability, is_exploration=exploring)


def beta_binomial_mean(prior_mean: np.ndarray, prior_strength: float, successes: np.ndarray,
                       trials: np.ndarray) -> np.ndarray:
    """Posterior mean of a Beta(prior_mean * s, (1 - prior_mean) * s) prior after `successes` in `trials`."""
    prior_mean = np.asarray(prior_mean, dtype=float)
    alpha = prior_mean * prior_strength + np.asarray(successes, dtype=float)
    beta = (1.0 - prior_mean) * prior_strength + np.asarray(trials, dtype=float) - np.asarray(successes, dtype=float)
    return alpha / np.maximum(alpha + beta, 1e-12)
