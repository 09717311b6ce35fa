"""Two closed-loop runs of one world compared customer by customer (docs/closed_loop.md section 16).

The simulator keys every answer by (seed, customer, night, action) (`pipelines.sources.simulate.keyed`), so two runs
of the same seed (learning on against off) give a customer who got the same offers the same answers: the runs are a
paired experiment on the same customers. `paired_comparison` takes each run's value per customer (frames in) and
returns the mean difference A minus B with a paired t interval and a bootstrap over customers as a check, the
relative gain against B's mean with a delta-method interval (and its bootstrap), the customers counted, and the
verdict on the "+10% over the catalogue-prior policy" target (result out). It reads and writes nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.errors import SegoneError

COLUMNS = ("customer_id", "value")


@dataclass(frozen=True)
class PairedComparison:
    """Run A (this) against run B (other) on the customers either treated. Values in pounds per customer; relative
    figures as fractions of B's mean (0.1 = +10%). Intervals are 95%. None where a figure is undefined (fewer than two
    customers; a relative gain when B's mean is not positive)."""
    n_customers: int                       # customers in the comparison (treated in A, in B or in both)
    n_in_both: int
    n_only_this: int                       # treated only in A: counted with value 0 in B (no recommendation)
    n_only_other: int                      # treated only in B: counted with value 0 in A
    n_identical: int                       # customers whose difference is exactly 0 (same offers, same answers)
    mean_this: float | None
    mean_other: float | None
    mean_difference: float | None
    sd_difference: float | None
    t_ci_low: float | None                 # paired t interval of the mean difference
    t_ci_high: float | None
    bootstrap_ci_low: float | None         # percentile bootstrap over customers, as a check
    bootstrap_ci_high: float | None
    relative_gain: float | None            # mean difference / B's mean
    relative_ci_low: float | None          # delta method
    relative_ci_high: float | None
    relative_bootstrap_ci_low: float | None
    relative_bootstrap_ci_high: float | None
    bootstrap_resamples: int
    target: float                          # the relative gain to show (0.10)
    target_shown: bool                     # the relative gain's lower bound (delta method) is at least the target
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(frame: pd.DataFrame, name: str) -> pd.Series:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SegoneError(f"{name} run's values per customer lack {', '.join(missing)}")
    if frame["customer_id"].duplicated().any():
        first = frame.loc[frame["customer_id"].duplicated(), "customer_id"].iloc[0]
        raise SegoneError(f"{name} run's values per customer hold customer {first} more than once")
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise SegoneError(f"{name} run's value of customer {frame['customer_id'].to_numpy()[bad][0]} is not a number")
    return pd.Series(values, index=frame["customer_id"].astype(str).to_numpy())


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), 6)


def paired_comparison(this: pd.DataFrame, other: pd.DataFrame, *, target: float, resamples: int,
                      seed: int) -> PairedComparison:
    """Run A (`this`) against run B (`other`), customer by customer. Each frame: one row per customer the run
    treated, `customer_id` and `value` (the run's value of that customer over the nights). A customer treated in
    only one run is counted with value 0 in the other (the run made them no recommendation, so it realised nothing
    from them) and reported in `n_only_this` / `n_only_other`.

    Mean difference d = A - B with the paired t interval mean(d) +- t(0.975, n-1) sd(d) / sqrt(n); relative gain
    g = mean(d) / mean(B) with the delta-method interval g +- 1.96 sd(d - g B) / (sqrt(n) mean(B)) (defined only when
    mean(B) > 0); both checked by a percentile bootstrap resampling customers (`resamples`, fixed `seed`). The
    target is shown only when the relative gain's lower bound is at least `target` (the settings:
    config/learning.yaml closed_loop.paired)."""
    a, b = _values(this, "this"), _values(other, "the other")
    ids = a.index.union(b.index)
    in_a, in_b = ids.isin(a.index), ids.isin(b.index)
    va = a.reindex(ids).fillna(0.0).to_numpy(float)
    vb = b.reindex(ids).fillna(0.0).to_numpy(float)
    d = va - vb
    n = len(ids)
    mean_a = float(va.mean()) if n else None
    mean_b = float(vb.mean()) if n else None
    mean_d = float(d.mean()) if n else None
    sd = t_lo = t_hi = boot_lo = boot_hi = g = g_lo = g_hi = gb_lo = gb_hi = None
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        t_lo, t_hi = mean_d - half, mean_d + half
        rng = np.random.default_rng(seed)
        boot_d, boot_b = np.empty(resamples), np.empty(resamples)
        block = max(1, 2_000_000 // n)               # a bounded draw of indices at a time, whatever the bank's size
        for start in range(0, resamples, block):
            picks = rng.integers(0, n, size=(min(block, resamples - start), n))
            boot_d[start:start + len(picks)] = d[picks].mean(axis=1)
            boot_b[start:start + len(picks)] = vb[picks].mean(axis=1)
        boot_lo, boot_hi = (float(x) for x in np.quantile(boot_d, [0.025, 0.975]))
        if mean_b > 0:
            g = mean_d / mean_b
            spread = float(np.std(d - g * vb, ddof=1))
            half_g = 1.959964 * spread / (math.sqrt(n) * mean_b)
            g_lo, g_hi = g - half_g, g + half_g
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = boot_d / boot_b
            ratios = ratios[boot_b > 0]
            if len(ratios):
                gb_lo, gb_hi = (float(x) for x in np.quantile(ratios, [0.025, 0.975]))
    shown = g_lo is not None and g_lo >= target
    if n < 2:
        verdict = f"cannot be judged: {n} customer(s) in the comparison"
    elif g is None:
        verdict = (f"cannot be judged: the other run's mean value per customer is {mean_b:.4f}, not positive, so "
                   f"a gain relative to it means nothing")
    elif shown:
        verdict = f"+{target:.0%} shown: relative gain {g:+.1%}, 95% interval [{g_lo:+.1%}, {g_hi:+.1%}]"
    else:
        verdict = (f"+{target:.0%} not shown: relative gain {g:+.1%}, 95% interval [{g_lo:+.1%}, {g_hi:+.1%}], "
                   f"lower bound below {target:.0%}")
    return PairedComparison(
        n_customers=n, n_in_both=int((in_a & in_b).sum()), n_only_this=int((in_a & ~in_b).sum()),
        n_only_other=int((~in_a & in_b).sum()), n_identical=int((d == 0).sum()),
        mean_this=_round(mean_a), mean_other=_round(mean_b), mean_difference=_round(mean_d),
        sd_difference=_round(sd), t_ci_low=_round(t_lo), t_ci_high=_round(t_hi), bootstrap_ci_low=_round(boot_lo),
        bootstrap_ci_high=_round(boot_hi), relative_gain=_round(g), relative_ci_low=_round(g_lo),
        relative_ci_high=_round(g_hi), relative_bootstrap_ci_low=_round(gb_lo),
        relative_bootstrap_ci_high=_round(gb_hi), bootstrap_resamples=int(resamples) if n >= 2 else 0,
        target=float(target), target_shown=bool(shown), verdict=verdict)
