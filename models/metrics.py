"""Backtest metrics for the shortfall engines, in plain numpy (no scikit-learn).

Conventions shared by every function:
- Inputs may be lists, numpy arrays or pandas Series (nullable dtypes included); they are read as float arrays.
- Rows where any input of the metric is NaN are dropped first (a missing label or score is not evidence).
- Empty input (before or after dropping NaN) gives NaN, never an exception; a metric that is undefined on the
  data (for example ROC AUC with a single class) also gives NaN.
- Binary labels must be 0/1 (booleans are fine); anything else raises ValueError, because it is a caller bug.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import pandas as pd

ArrayLike = Union[np.ndarray, pd.Series, Sequence[float], Sequence[bool]]

CALIBRATION_COLUMNS = ["bin", "n", "mean_predicted", "observed_rate"]
LIFT_COLUMNS = [
    "bin", "n", "positives", "cum_share_population", "cum_share_positives", "lift",
]


def _as_float(values: Any) -> np.ndarray:
    """One-dimensional float array; pandas missing values (pd.NA, NaT-free nullable dtypes) become NaN."""
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy(dtype=float, na_value=np.nan).ravel()
    return np.asarray(values, dtype=float).ravel()


def _aligned(*arrays: Any) -> tuple[np.ndarray, ...]:
    """Float arrays of equal length with every row holding a NaN in any of them removed."""
    out = [_as_float(a) for a in arrays]
    if len({len(a) for a in out}) > 1:
        raise ValueError(f"inputs differ in length: {[len(a) for a in out]}")
    keep = np.ones(len(out[0]), dtype=bool)
    for a in out:
        keep &= ~np.isnan(a)
    return tuple(a[keep] for a in out)


def _check_binary(y: np.ndarray) -> None:
    if y.size and not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("binary labels must be 0 or 1")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with tied values sharing the average of the ranks they span (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_rank = (starts + 1 + ends) / 2.0  # average of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed with the Mann-Whitney U statistic on average ranks: (sum of positive ranks - n1(n1+1)/2) / (n1 n0).
    NaN when only one class is present (the ranking quality is undefined then)."""
    y, s = _aligned(y_true, score)
    _check_binary(y)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Average precision, step-wise as sklearn.metrics.average_precision_score: sum_n (R_n - R_{n-1}) P_n.

    Thresholds are the distinct scores from high to low (tied scores enter together); P_n and R_n are the
    precision and recall of flagging every row scoring >= the n-th threshold. No interpolation, so this is not
    the trapezoidal area. NaN when there is no positive (recall is undefined)."""
    y, s = _aligned(y_true, score)
    _check_binary(y)
    n_pos = float(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_run = np.r_[s[1:] != s[:-1], True]  # the end of each group of tied scores
    tp = np.cumsum(y)[last_of_run]
    flagged = (np.arange(len(y)) + 1.0)[last_of_run]
    precision = tp / flagged
    recall = tp / n_pos
    recall_step = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_step * precision))


def brier(y_true: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean of (p - y)^2. Lower is better; 0.25 is what a constant 0.5 scores."""
    y, q = _aligned(y_true, p)
    _check_binary(y)
    if y.size == 0:
        return float("nan")
    return float(np.mean((q - y) ** 2))


def _quantile_bins(p: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Row indices of min(n_bins, n) equal-frequency bins of p: p sorted ascending (stable, so ties keep row
    order) and cut into consecutive chunks whose sizes differ by at most one (np.array_split). Tied
    probabilities may straddle a bin edge; this keeps every bin the same size, whatever the ties."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    return [chunk for chunk in np.array_split(order, min(n_bins, len(p))) if chunk.size]


def calibration_table(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over equal-frequency bins of p (see _quantile_bins): columns bin (0-based, low p
    first), n, mean_predicted and observed_rate. Empty frame with those columns when there is no row."""
    y, q = _aligned(y_true, p)
    _check_binary(y)
    rows = [
        {"bin": i, "n": int(idx.size), "mean_predicted": float(q[idx].mean()), "observed_rate": float(y[idx].mean())}
        for i, idx in enumerate(_quantile_bins(q, n_bins))
    ]
    frame = pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)
    return frame.astype({"bin": "int64", "n": "int64", "mean_predicted": "float64", "observed_rate": "float64"})


def calibration_error(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (n_bin / n) * |mean(p in bin) - mean(y in bin)|.

    Bins are equal-frequency (quantiles of p), not equal-width: the probabilities of a rare event crowd near 0,
    and equal-width bins would leave most bins empty and put nearly all rows in the first one. Equal-frequency
    bins give every bin the same statistical weight. NaN when there is no row."""
    table = calibration_table(y_true, p, n_bins)
    if table.empty:
        return float("nan")
    weights = table["n"].to_numpy(float) / table["n"].sum()
    gaps = np.abs(table["mean_predicted"].to_numpy() - table["observed_rate"].to_numpy())
    return float(np.sum(weights * gaps))


def precision_at_top(y_true: ArrayLike, score: ArrayLike, share: float) -> float:
    """Precision among the top k = max(1, ceil(share * n)) rows by score (the customers an outreach list of
    that size would contact). Ties are broken by stable sort order: among equal scores the earlier row wins,
    so the result is deterministic. share must be in (0, 1]. NaN when there is no row."""
    if not 0.0 < share <= 1.0:
        raise ValueError("share must be in (0, 1]")
    y, s = _aligned(y_true, score)
    _check_binary(y)
    n = len(y)
    if n == 0:
        return float("nan")
    k = min(n, max(1, math.ceil(share * n - 1e-9)))  # the tolerance stops 0.1 * 30 = 3.0000000000000004 -> 4
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())


def pinball_loss(y: ArrayLike, q_pred: ArrayLike, quantile: float) -> float:
    """Mean pinball (quantile) loss: mean of max(q * (y - pred), (q - 1) * (y - pred)) for quantile q in (0, 1).
    Minimised in expectation by the true q-quantile, so it scores the P10/P50/P90 minimum-balance forecasts."""
    if not 0.0 < quantile < 1.0:
        raise ValueError("quantile must be in (0, 1)")
    actual, predicted = _aligned(y, q_pred)
    if actual.size == 0:
        return float("nan")
    diff = actual - predicted
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def coverage(y: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of rows with lower <= y <= upper (bounds inclusive): for a P10-P90 interval the target is 0.8."""
    actual, lo, hi = _aligned(y, lower, upper)
    if actual.size == 0:
        return float("nan")
    return float(np.mean((lo <= actual) & (actual <= hi)))


def date_mae_days(true_days: ArrayLike, predicted_days: ArrayLike) -> float:
    """Mean absolute error in days over rows where both the true and the predicted day counts are finite
    (a customer with no shortfall has no date to miss). NaN when no row qualifies."""
    actual, predicted = _as_float(true_days), _as_float(predicted_days)
    if len(actual) != len(predicted):
        raise ValueError(f"inputs differ in length: {len(actual)} and {len(predicted)}")
    keep = np.isfinite(actual) & np.isfinite(predicted)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(actual[keep] - predicted[keep])))


def lift_table(y_true: ArrayLike, score: ArrayLike, n_bins: int = 20) -> pd.DataFrame:
    """Cumulative gains and lift: rows sorted by score descending (stable, ties keep row order) and cut into
    min(n_bins, n) equal-size bins. Columns: bin (1 = highest scores), n, positives, cum_share_population,
    cum_share_positives (share of all positives captured by this bin and the ones above) and lift
    (cum_share_positives / cum_share_population; 1 is random). The positive shares and lift are NaN when there
    is no positive. Empty frame with those columns when there is no row."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    y, s = _aligned(y_true, score)
    _check_binary(y)
    if y.size == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("bin", "n", "positives") else "float64")
                             for c in LIFT_COLUMNS})
    order = np.argsort(-s, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, len(y))) if c.size]
    n = np.array([c.size for c in chunks], dtype=float)
    positives = np.array([y[c].sum() for c in chunks], dtype=float)
    total_pos = positives.sum()
    cum_pop = np.cumsum(n) / n.sum()
    cum_pos = np.cumsum(positives) / total_pos if total_pos > 0 else np.full(len(n), np.nan)
    return pd.DataFrame({
        "bin": np.arange(1, len(chunks) + 1),
        "n": n.astype("int64"),
        "positives": positives.astype("int64"),
        "cum_share_population": cum_pop,
        "cum_share_positives": cum_pos,
        "lift": cum_pos / cum_pop,
    })
