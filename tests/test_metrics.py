"""Backtest metrics against hand-computed values, edge cases and large calibrated-by-construction samples."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.metrics import (
    brier,
    calibration_error,
    calibration_table,
    coverage,
    date_mae_days,
    lift_table,
    pinball_loss,
    pr_auc,
    precision_at_top,
    roc_auc,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_roc_auc_hand_example():
    assert roc_auc(Y, S) == pytest.approx(0.75)
    assert roc_auc(pd.Series(Y), pd.Series(S)) == pytest.approx(0.75)


def test_roc_auc_perfect_reversed_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one tie between a positive and a negative counts one half: pairs (n,p) = 4, wins 3 + 0.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.4]) == pytest.approx(3.5 / 4)


def test_roc_auc_undefined_and_empty():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(roc_auc([], []))
    assert math.isnan(roc_auc(np.array([]), np.array([])))


def test_roc_auc_drops_nan_rows():
    assert roc_auc([0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, np.nan]) == pytest.approx(0.75)
    y = pd.Series([0, 0, 1, 1, None], dtype="Float64")
    assert roc_auc(y, [0.1, 0.4, 0.35, 0.8, 0.0]) == pytest.approx(0.75)


def test_roc_auc_rejects_non_binary_labels():
    with pytest.raises(ValueError):
        roc_auc([0, 2], [0.1, 0.2])


def test_pr_auc_hand_example():
    # sorted by score: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): AP = 0.5 * 1 + 0.5 * 2/3
    assert pr_auc(Y, S) == pytest.approx(0.5 + 1 / 3)


def test_pr_auc_perfect_reversed_ties_and_undefined():
    assert pr_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    # reversed: positives at ranks 3 and 4 -> 0.5 * 1/3 + 0.5 * 2/4
    assert pr_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == pytest.approx(0.5 / 3 + 0.25)
    # all tied: one threshold, precision = prevalence
    assert pr_auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    # tie of a positive and a negative at the top enters together: P=1/2 at R=1/2, then P=2/3 at R=1
    assert pr_auc([1, 0, 1, 0], [0.9, 0.9, 0.5, 0.1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isnan(pr_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(pr_auc([], []))


def test_brier():
    assert brier([0, 1], [0.0, 1.0]) == 0.0
    assert brier([0, 1], [0.5, 0.5]) == pytest.approx(0.25)
    assert brier([1, 0, 1], [0.8, 0.1, np.nan]) == pytest.approx((0.04 + 0.01) / 2)
    assert math.isnan(brier([], []))


def test_calibration_table_equal_frequency_bins():
    p = np.arange(10) / 10
    y = [0, 0, 0, 1, 0, 1, 1, 0, 1, 1]
    table = calibration_table(y, p, n_bins=2)
    assert list(table.columns) == ["bin", "n", "mean_predicted", "observed_rate"]
    assert table["n"].tolist() == [5, 5]
    assert table["mean_predicted"].tolist() == pytest.approx([0.2, 0.7])
    assert table["observed_rate"].tolist() == pytest.approx([0.2, 0.8])
    assert calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.0 + 0.5 * 0.1)
    # more bins than rows: one row per bin
    assert len(calibration_table([0, 1], [0.2, 0.9], n_bins=10)) == 2


def test_calibration_empty():
    assert calibration_table([], []).empty
    assert list(calibration_table([], []).columns) == ["bin", "n", "mean_predicted", "observed_rate"]
    assert math.isnan(calibration_error([], []))
    assert math.isnan(calibration_error([np.nan], [0.3]))


def test_calibration_error_large_sample():
    rng = np.random.default_rng(20240611)
    n = 200_000
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    assert calibration_error(y, p) < 0.01
    assert calibration_error(y, np.clip(p + 0.2, 0.0, 1.0)) > 0.1


def test_precision_at_top():
    y = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert precision_at_top(y, s, 0.1) == 1.0
    assert precision_at_top(y, s, 0.2) == 0.5
    assert precision_at_top(y, s, 0.3) == pytest.approx(2 / 3)
    assert precision_at_top(y, s, 1.0) == pytest.approx(0.3)
    # at least one row
    assert precision_at_top(y, s, 0.01) == 1.0
    # 0.1 * 30 must give 3 rows, not 4 through floating point
    assert precision_at_top([1, 1, 1] + [0] * 27, np.linspace(1, 0, 30), 0.1) == 1.0
    assert math.isnan(precision_at_top([], [], 0.1))
    with pytest.raises(ValueError):
        precision_at_top(y, s, 0.0)


def test_precision_at_top_ties_are_stable():
    # all scores tied: the earliest rows win, whatever the labels
    assert precision_at_top([1, 0, 0, 0], [0.5] * 4, 0.25) == 1.0
    assert precision_at_top([0, 1, 0, 0], [0.5] * 4, 0.25) == 0.0


def test_pinball_loss_known_values():
    # under-prediction by 10 at q=0.9 costs 9; over-prediction by 10 costs 1
    assert pinball_loss([10.0], [0.0], 0.9) == pytest.approx(9.0)
    assert pinball_loss([0.0], [10.0], 0.9) == pytest.approx(1.0)
    assert pinball_loss([0.0, 10.0], [10.0, 0.0], 0.5) == pytest.approx(5.0)
    assert pinball_loss([1.0, 2.0, np.nan], [1.0, 2.0, 3.0], 0.1) == 0.0
    assert math.isnan(pinball_loss([], [], 0.5))
    with pytest.raises(ValueError):
        pinball_loss([1.0], [1.0], 1.0)


def test_pinball_loss_minimised_by_the_quantile():
    rng = np.random.default_rng(3)
    y = rng.normal(size=50_000)
    q90 = np.quantile(y, 0.9)
    best = pinball_loss(y, np.full_like(y, q90), 0.9)
    assert best < pinball_loss(y, np.full_like(y, q90 + 0.3), 0.9)
    assert best < pinball_loss(y, np.full_like(y, q90 - 0.3), 0.9)


def test_coverage():
    y = [1.0, 2.0, 3.0, 4.0]
    assert coverage(y, [0, 0, 0, 0], [2, 2, 2, 2]) == 0.5  # bounds inclusive
    assert coverage(y, [1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert coverage([1.0, np.nan], [0.0, 0.0], [2.0, 2.0]) == 1.0
    assert math.isnan(coverage([], [], []))


def test_date_mae_days():
    assert date_mae_days([10, 20, np.nan, 5], [12, 15, 3, np.inf]) == pytest.approx(3.5)
    assert math.isnan(date_mae_days([np.nan, 1], [2, np.nan]))
    assert math.isnan(date_mae_days([], []))
    assert date_mae_days(pd.Series([3.0]), pd.Series([1.0])) == 2.0


def test_lift_table():
    y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    s = np.linspace(1.0, 0.1, 10)
    table = lift_table(y, s, n_bins=5)
    assert table["bin"].tolist() == [1, 2, 3, 4, 5]
    assert table["n"].tolist() == [2] * 5
    assert table["positives"].tolist() == [2, 1, 0, 0, 1]
    assert table["cum_share_population"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert table["cum_share_positives"].tolist() == pytest.approx([0.5, 0.75, 0.75, 0.75, 1.0])
    assert table["lift"].tolist() == pytest.approx([2.5, 1.875, 1.25, 0.9375, 1.0])


def test_lift_table_edge_cases():
    assert lift_table([], []).empty
    no_pos = lift_table([0, 0, 0], [0.1, 0.2, 0.3], n_bins=20)
    assert len(no_pos) == 3
    assert no_pos["cum_share_positives"].isna().all()
