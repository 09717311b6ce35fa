"""Offline policy evaluation: what a target policy would have earned, estimated from a log of another policy's
decisions. Pure numpy (models never import pipelines): no lake, no config files.

A log holds, per decision i: the context x_i, the action a_i the logging policy took, the probability mu_i it had of
taking it (logged at decision time), and the reward r_i observed afterwards. A target policy pi gives pi(a_i | x_i).

Estimators (each returns an `Estimate` with a 95% confidence interval by default):
- IPS (inverse propensity scoring): mean of w_i r_i with w_i = pi(a_i|x_i) / mu_i. Unbiased when mu is right and
  every action pi can take has mu > 0 (support).
- SNIPS (self-normalised IPS): sum(w r) / sum(w). Slightly biased (O(1/n)), much lower variance when the weights
  are uneven.
- DR (doubly robust): mean of  sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i))  for a reward model q. Unbiased
  when mu is right whatever q is; q only buys variance.
- Paired differences (`paired_difference`): V(new) - V(old) on the same decisions, the per-decision difference of
  the two estimators' terms, with its own interval (what a promotion should be judged on).

Confidence intervals: normal approximation (central limit theorem) on the per-decision terms: the estimate plus or
minus z * standard error. IPS and DR are means of per-decision terms; SNIPS is a ratio and uses the delta method
(influence terms w_i (r_i - V) / mean(w)). When decisions are grouped (several decisions of one customer share
their context and their rewards may be correlated) pass `groups`: the standard error is then cluster-robust (the
terms summed per group), which is what a log of nightly decisions for the same customers needs.

Checks of the log (`check_log`): probabilities finite and in (0, 1]; when the whole logging distribution of each
decision is known, each row sums to 1 and holds the logged probability; per action the sum of 1/mu over the decisions
that took it matches the number of decisions where it was available (E[1{A=a}/mu(a|x)] = 1: a log whose probabilities
are wrong fails this); logged action frequencies against the logged probabilities; the target's effective sample size
and its mass on actions the logging policy never takes (overlap).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import sqrt
from statistics import NormalDist
from typing import Any

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")
CI_METHOD = "normal approximation (CLT) on the per-decision terms; cluster-robust when groups are given"


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its confidence interval."""

    estimator: str
    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    n: int
    level: float = 0.95
    ci_method: str = CI_METHOD

    def as_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "estimate": self.estimate, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "std_error": self.std_error, "n": self.n, "level": self.level,
                "ci_method": self.ci_method}

    def contains(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)


def normal_quantile(p: float) -> float:
    """The standard normal quantile (the standard library's NormalDist)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float(NormalDist().inv_cdf(p))


def _z(level: float) -> float:
    return normal_quantile(0.5 + level / 2)


def _std_error(terms: np.ndarray, groups: np.ndarray | None) -> float:
    """Standard error of the mean of `terms` (already centred at the estimate when used for a ratio)."""
    n = len(terms)
    if n < 2:
        return float("nan")
    if groups is None:
        return float(np.std(terms, ddof=1) / sqrt(n))
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=terms - terms.mean())
    g = len(sums)
    if g < 2:
        return float("nan")
    return float(sqrt(g / (g - 1) * np.sum(sums ** 2)) / n)


def _mean_estimate(name: str, terms: np.ndarray, groups: np.ndarray | None, level: float) -> Estimate:
    n = len(terms)
    if n == 0:
        return Estimate(name, float("nan"), float("nan"), float("nan"), float("nan"), 0, level)
    value = float(terms.mean())
    se = _std_error(terms, groups)
    z = _z(level)
    return Estimate(name, value, value - z * se, value + z * se, se, n, level)


def _arrays(reward, logging_probability, target_probability, groups) -> tuple[np.ndarray, ...]:
    r = np.asarray(reward, dtype=float).ravel()
    mu = np.asarray(logging_probability, dtype=float).ravel()
    pi = np.asarray(target_probability, dtype=float).ravel()
    if not len(r) == len(mu) == len(pi):
        raise ValueError(f"reward, logging and target probabilities differ in length: {len(r)}, {len(mu)}, {len(pi)}")
    bad = ~np.isfinite(mu) | (mu <= 0) | (mu > 1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} logging probabilities are not in (0, 1] (first: {mu[bad][0]!r}): "
                         f"the log cannot be used for inverse propensity weighting")
    if (~np.isfinite(pi) | (pi < 0) | (pi > 1)).any():
        raise ValueError("target probabilities must be in [0, 1]")
    if (~np.isfinite(r)).any():
        raise ValueError("rewards must be finite")
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and len(g) != len(r):
        raise ValueError("groups differ in length from the rewards")
    return r, mu, pi, g


def ips(reward, logging_probability, target_probability, groups=None, level: float = 0.95) -> Estimate:
    """Inverse propensity scoring: mean of pi/mu * r."""
    r, mu, pi, g = _arrays(reward, logging_probability, target_probability, groups)
    return _mean_estimate("ips", pi / mu * r, g, level)


def snips(reward, logging_probability, target_probability, groups=None, level: float = 0.95) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w), with a delta-method interval."""
    r, mu, pi, g = _arrays(reward, logging_probability, target_probability, groups)
    w = pi / mu
    n = len(r)
    if n == 0 or w.sum() <= 0:
        return Estimate("snips", float("nan"), float("nan"), float("nan"), float("nan"), n, level)
    value = float(np.sum(w * r) / np.sum(w))
    influence = w * (r - value) / w.mean()
    se = _std_error(influence, g)
    z = _z(level)
    return Estimate("snips", value, value - z * se, value + z * se, se, n, level)


def doubly_robust(reward, logging_probability, target_probability, q_logged, q_target, groups=None,
                  level: float = 0.95) -> Estimate:
    """Doubly robust: mean of q_target_i + pi/mu * (r_i - q_logged_i).

    q_logged: the reward model's prediction for the logged action, q(x_i, a_i); q_target: the model's value of the
    target policy in context i, sum_a pi(a|x_i) q(x_i, a) (the caller sums over the actions available in x_i)."""
    r, mu, pi, g = _arrays(reward, logging_probability, target_probability, groups)
    q_l = np.asarray(q_logged, dtype=float).ravel()
    q_t = np.asarray(q_target, dtype=float).ravel()
    if not len(q_l) == len(q_t) == len(r):
        raise ValueError("q_logged and q_target must have one value per decision")
    if (~np.isfinite(q_l)).any() or (~np.isfinite(q_t)).any():
        raise ValueError("reward model predictions must be finite")
    return _mean_estimate("dr", q_t + pi / mu * (r - q_l), g, level)


def evaluate(reward, logging_probability, target_probability, q_logged=None, q_target=None, groups=None,
             level: float = 0.95) -> dict[str, Estimate]:
    """IPS and SNIPS, and DR when a reward model's predictions are given."""
    out = {"ips": ips(reward, logging_probability, target_probability, groups, level),
           "snips": snips(reward, logging_probability, target_probability, groups, level)}
    if q_logged is not None and q_target is not None:
        out["dr"] = doubly_robust(reward, logging_probability, target_probability, q_logged, q_target, groups, level)
    return out


def paired_difference(reward, logging_probability, target_new, target_old, q_logged=None, q_target_new=None,
                      q_target_old=None, groups=None, level: float = 0.95) -> dict[str, Estimate]:
    """The value of one target policy minus another's on the same logged decisions, with the interval of the paired
    difference: per decision the difference of the two estimators' terms (IPS: (pi_new - pi_old)/mu r; DR:
    q_target_new - q_target_old + (pi_new - pi_old)/mu (r - q_logged)), its mean and a CLT interval (cluster-robust
    with `groups`). Unbiased for V(new) - V(old) when mu is right. Two policies that agree on most decisions share
    most of their noise (the same heavy-tailed rewards enter both), which cancels here: comparing one policy's lower
    bound with the other's estimate ignores that and asks for far more data than the difference needs.
    Returns {"ips": ..., "dr": ...} (dr only with the reward model's predictions)."""
    r, mu, pi_new, g = _arrays(reward, logging_probability, target_new, groups)
    _, _, pi_old, _ = _arrays(reward, logging_probability, target_old, groups)
    out = {"ips": _mean_estimate("ips_difference", (pi_new - pi_old) / mu * r, g, level)}
    if q_logged is not None and q_target_new is not None and q_target_old is not None:
        q_l = np.asarray(q_logged, dtype=float).ravel()
        q_new = np.asarray(q_target_new, dtype=float).ravel()
        q_old = np.asarray(q_target_old, dtype=float).ravel()
        if not len(q_l) == len(q_new) == len(q_old) == len(r):
            raise ValueError("q_logged and q_target must have one value per decision")
        if (~np.isfinite(q_l)).any() or (~np.isfinite(q_new)).any() or (~np.isfinite(q_old)).any():
            raise ValueError("reward model predictions must be finite")
        out["dr"] = _mean_estimate("dr_difference", q_new - q_old + (pi_new - pi_old) / mu * (r - q_l), g, level)
    return out


def on_policy(reward, groups=None, level: float = 0.95) -> Estimate:
    """The value a policy earned on its own decisions (target = logging policy): the plain mean with its interval."""
    r = np.asarray(reward, dtype=float).ravel()
    return _mean_estimate("on_policy", r, None if groups is None else np.asarray(groups).ravel(), level)


# ---------------------------------------------------------------------------------------------------------------
# Policies over candidate sets (a matrix form: one row per decision, one column per candidate slot)
# ---------------------------------------------------------------------------------------------------------------

def epsilon_greedy_probabilities(scores: np.ndarray, available: np.ndarray, epsilon: float) -> np.ndarray:
    """(n, K) probabilities of an epsilon-greedy choice among the available candidates of each row: the best
    score (first one on ties) gets 1 - epsilon + epsilon / m, every other available candidate epsilon / m; rows
    without a candidate are all zero."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    scores = np.asarray(scores, dtype=float)
    available = np.asarray(available, dtype=bool) & np.isfinite(scores)
    m = available.sum(axis=1)
    masked = np.where(available, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    out = np.where(available, epsilon / np.maximum(m, 1)[:, None], 0.0)
    rows = np.nonzero(m > 0)[0]
    out[rows, best[rows]] += 1.0 - epsilon
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checks of the log
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class LogCheck:
    """What `check_log` found; `ok` is false when any problem was found."""

    n: int
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ok": self.ok, "problems": list(self.problems), **self.figures}


def check_log(logging_probability, actions=None, available=None, logging_matrix=None, target_probability=None,
              target_matrix=None, z_limit: float | None = None, min_ess_share: float = 0.01,
              atol: float = 1e-6) -> LogCheck:
    """Checks that a log can be used for off-policy evaluation (see the module docstring).

    logging_probability: (n,) the logged mu_i of the action taken. actions: (n,) the column index of the action
    taken (in the candidate matrices), needed for the per-action checks. available: (n, K) which candidates each
    decision could take. logging_matrix: (n, K) the logging policy's full distribution, when known.
    target_probability (n,) / target_matrix (n, K): the target policy, for the effective sample size and overlap.
    z_limit: how many standard errors a per-action balance may be off before the log is called wrong (default:
    a two-sided 0.1% level, Bonferroni-corrected over the actions)."""
    mu = np.asarray(logging_probability, dtype=float).ravel()
    n = len(mu)
    check = LogCheck(n=n)
    bad = ~np.isfinite(mu) | (mu <= 0) | (mu > 1)
    check.figures["n_invalid_probabilities"] = int(bad.sum())
    if bad.any():
        check.problems.append(f"{int(bad.sum())} of {n} logged probabilities are not in (0, 1]")
    if n == 0:
        check.problems.append("the log is empty")
        return check
    ok_mu = np.where(bad, np.nan, mu)
    check.figures["min_logging_probability"] = float(np.nanmin(ok_mu)) if (~bad).any() else float("nan")

    if logging_matrix is not None:
        lm = np.asarray(logging_matrix, dtype=float)
        sums = lm.sum(axis=1)
        off = np.abs(sums - 1.0) > atol
        check.figures["n_rows_not_summing_to_one"] = int(off.sum())
        if off.any():
            check.problems.append(f"{int(off.sum())} decisions' logging distributions do not sum to 1 "
                                  f"(first: {sums[off][0]:.6f})")
        if actions is not None:
            a = np.asarray(actions, dtype=np.int64).ravel()
            logged = lm[np.arange(n), a]
            differ = np.abs(logged - mu) > atol
            check.figures["n_logged_probability_mismatch"] = int(differ.sum())
            if differ.any():
                check.problems.append(f"{int(differ.sum())} logged probabilities differ from the logging "
                                      f"distribution of their decision")

    if actions is not None and not bad.any():
        a = np.asarray(actions, dtype=np.int64).ravel()
        if logging_matrix is not None:
            k = np.asarray(logging_matrix).shape[1]
            avail = np.asarray(logging_matrix, dtype=float) > 0 if available is None else \
                np.asarray(available, dtype=bool)
        elif available is not None:
            avail = np.asarray(available, dtype=bool)
            k = avail.shape[1]
        else:
            avail = None
            k = int(a.max()) + 1
        limit = z_limit if z_limit is not None else normal_quantile(1 - 0.001 / (2 * (k + 1)))
        inv = 1.0 / mu
        # pooled: sum over decisions of 1/mu = the number of candidates they had (E[1/mu(A|x)] = m(x))
        if avail is not None:
            expected_total = float(avail.sum())
            observed_total = float(inv.sum())
            se_total = sqrt(float(np.sum((1.0 - mu) * inv * inv))) or float("inf")
            z_total = (observed_total - expected_total) / se_total
            check.figures["balance"] = {"sum_inverse_probability": observed_total,
                                        "n_candidates": expected_total, "z": z_total}
            if abs(z_total) > limit:
                check.problems.append(
                    f"the logged probabilities do not match the actions taken: the sum of 1/probability over the "
                    f"log is {observed_total:.0f} against {expected_total:.0f} candidates (z = {z_total:.1f})")
        # per action: sum of 1/mu over the decisions that took it = the number of decisions where it was available.
        # One-sided (too many): the sample variance underestimates the spread when an action's rare, small-probability
        # picks happen not to occur, so only an excess is judged here; the full distribution allows both sides.
        n_available = avail.sum(axis=0).astype(float) if avail is not None else np.full(k, float(n))
        observed = np.bincount(a, weights=inv, minlength=k)[:k]
        variance = np.bincount(a, weights=(1.0 - mu) * inv * inv, minlength=k)[:k]
        taken = np.bincount(a, minlength=k)[:k]
        z = np.where(variance > 0, (observed - n_available) / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
        check.figures["weight_balance"] = [
            {"action": j, "n_available": int(n_available[j]), "n_taken": int(taken[j]),
             "sum_inverse_probability": float(observed[j]), "z": float(z[j])} for j in range(k)]
        off = np.nonzero(z > limit)[0]
        if len(off):
            worst = off[np.argmax(z[off])]
            check.problems.append(
                f"the logged probabilities do not match the actions taken: for {len(off)} action(s) the sum of "
                f"1/probability over the decisions that took it exceeds the number of decisions where it was "
                f"available (worst: action {int(worst)}, {observed[worst]:.1f} against {n_available[worst]:.0f}, "
                f"z = {z[worst]:.1f})")
        if logging_matrix is not None:
            lm = np.asarray(logging_matrix, dtype=float)
            expected = lm.sum(axis=0)
            var = (lm * (1 - lm)).sum(axis=0)
            zf = np.where(var > 0, (taken - expected) / np.sqrt(np.maximum(var, 1e-300)), 0.0)
            check.figures["frequency_z"] = [float(v) for v in zf]
            if (np.abs(zf) > limit).any():
                check.problems.append(f"logged action frequencies differ from the logged probabilities for "
                                      f"{int((np.abs(zf) > limit).sum())} action(s) (max |z| {np.abs(zf).max():.1f})")

    unsupported_rows = None
    if target_matrix is not None and logging_matrix is not None:
        tm = np.asarray(target_matrix, dtype=float)
        lm = np.asarray(logging_matrix, dtype=float)
        supported = lm > 0
        unsupported_rows = (tm * ~supported).sum(axis=1)
        unsupported = float(unsupported_rows.sum() / n)
        check.figures["target_mass_without_support"] = unsupported
        if unsupported > 1e-9:
            check.problems.append(f"the target policy puts {unsupported:.2%} of its choices on actions the logging "
                                  f"policy never takes: IPS cannot see them")
    if target_probability is not None and not bad.any():
        pi = np.asarray(target_probability, dtype=float).ravel()
        w = pi / mu
        ess = float(w.sum() ** 2 / np.sum(w ** 2)) if np.sum(w ** 2) > 0 else 0.0
        check.figures["effective_sample_size"] = ess
        check.figures["ess_share"] = ess / n
        check.figures["max_weight"] = float(w.max())
        check.figures["mean_weight"] = float(w.mean())
        if unsupported_rows is not None:
            # Both distributions known: the weight's exact mean and variance per decision (E[w|x] = the target's
            # supported mass, Var[w|x] = sum pi^2/mu - E[w|x]^2). The sample variance underestimates the spread of
            # these skewed weights whenever the rare, small-probability picks happen not to occur, which made a
            # correct log fail (a 2,751-decision week of the 3000 x 28 closed loop: z -4.3 with the sample variance,
            # -2.5 with the exact one).
            expected = 1.0 - unsupported_rows
            with np.errstate(divide="ignore", invalid="ignore"):
                second = np.where(supported, tm * tm / np.where(supported, lm, 1.0), 0.0).sum(axis=1)
            variance = float(np.maximum(second - expected ** 2, 0.0).sum())
            z_w = (float(w.sum()) - float(expected.sum())) / sqrt(variance) if variance > 0 else 0.0
            check.figures["mean_weight_expected"] = float(expected.mean())
        else:
            se_w = float(np.std(w, ddof=1) / sqrt(n)) if n > 1 else float("inf")
            z_w = (float(w.mean()) - 1.0) / se_w if se_w > 0 else 0.0
        check.figures["mean_weight_z"] = z_w
        limit_w = z_limit if z_limit is not None else normal_quantile(1 - 0.0005)
        if abs(z_w) > limit_w:
            check.problems.append(f"the target's importance weights average {w.mean():.3f}, not "
                                  f"{check.figures.get('mean_weight_expected', 1.0):.3f} (z = {z_w:.1f}): the logged "
                                  f"probabilities are wrong or the target leaves the logging support")
        if ess / n < min_ess_share:
            check.problems.append(f"the target policy is too far from the logging policy: effective sample size "
                                  f"{ess:.0f} of {n} ({ess / n:.1%} < {min_ess_share:.1%})")
    return check
