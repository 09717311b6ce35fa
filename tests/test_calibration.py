"""Isotonic calibration: PAV on a hand example, monotonicity, a miscalibrated synthetic set, persistence."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.calibration import (PUBLISHED_EPSILON, BlendedCalibrator, IsotonicCalibrator, LogisticCalibrator,
                                ShiftedCalibrator, bounds, calibrator_from_dict)
from models.metrics import calibration_error


def _squared_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores p ~ U(0, 1) whose true event probability is p**2 (overconfident scores)."""
    p = rng.uniform(size=n)
    return p, (rng.uniform(size=n) < p**2).astype(int)


def test_pav_hand_example():
    calibrator = IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    # 0, 1, 0, 1 -> the violating pair (1, 0) is pooled: blocks of 0/1, 1/2, 1/1 events, each rate estimated as
    # (k + 1/2) / (n + 1): 0.25, 0.5, 0.75 (never 0 or 1)
    assert calibrator.values_.tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert calibrator.weights_.tolist() == [1.0, 2.0, 1.0]
    assert calibrator.centres_.tolist() == pytest.approx([0.1, 0.25, 0.4])
    assert not calibrator.identity
    # at the block centres the block values; in between linear; flat outside the fitted range
    got = calibrator.predict([0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.9])
    assert got.tolist() == pytest.approx([0.25, 0.25, 0.25 + 0.25 * 2 / 3, 0.5, 0.5 + 0.25 / 3, 0.75, 0.75])


def test_ties_in_p_are_pooled():
    calibrator = IsotonicCalibrator().fit([0.2, 0.2, 0.2, 0.2, 0.7], [1, 0, 0, 0, 1])
    assert calibrator.centres_.tolist() == pytest.approx([0.2, 0.7])
    assert calibrator.values_.tolist() == pytest.approx([1.5 / 5, 1.5 / 2])
    assert calibrator.weights_.tolist() == [4.0, 1.0]


def test_blocks_the_estimate_puts_out_of_order_are_pooled_again():
    # PAV: a block of 1 row without the event (rate 0) below one of 10 rows with 1 (rate 0.1); estimated, the small
    # block's 0.5/2 = 0.25 would stand above 1.5/11: pooled again, weighted by n + 1, (0.5 + 1.5) / (2 + 11)
    calibrator = IsotonicCalibrator().fit([0.1] + [0.5] * 10, [0] + [1] + [0] * 9)
    assert calibrator.values_.tolist() == pytest.approx([2 / 13, 2 / 13])   # the blocks keep their breakpoints
    assert calibrator.weights_.tolist() == [1.0, 10.0]
    assert calibrator.centres_.tolist() == pytest.approx([0.1, 0.5])


def test_a_run_of_blocks_of_one_rate_is_estimated_as_one():
    # six scores without the event (six PAV blocks of rate 0), then two with it: 0.5 / 7 and 2.5 / 3, not 0.25 each
    calibrator = IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9], [0] * 6 + [1] * 2)
    assert calibrator.values_.tolist() == pytest.approx([0.5 / 7] * 6 + [2.5 / 3] * 2)


def test_a_calibrated_probability_is_never_0_or_1():
    """Scores that separate the outcomes perfectly: the old map said 0 below the split and 1 above it. A model's
    probability is never certain: the extreme blocks are (0 + 1/2) / (n + 1) and (n + 1/2) / (n + 1)."""
    p = np.linspace(0.0, 1.0, 2_000)
    y = (p >= 0.5).astype(int)
    calibrator = IsotonicCalibrator().fit(p, y)
    out = calibrator.predict(np.linspace(-1.0, 2.0, 3_001))
    assert out.min() == pytest.approx(0.5 / 1_001) and out.max() == pytest.approx(1 - 0.5 / 1_001)
    assert np.all(np.diff(out) >= 0)
    low, high = bounds(2_000)
    assert low == pytest.approx(0.5 / 2_001) and high == pytest.approx(1 - 0.5 / 2_001)
    assert np.all((out >= low) & (out <= high))


@pytest.mark.parametrize("kind", ["logistic", "shifted", "blended"])
def test_every_calibrator_keeps_inside_the_bounds_of_its_rows(kind):
    # near-separable scores make a steep logistic map: 0 and 1 in floating point, before the bounds
    rng = np.random.default_rng(3)
    p = rng.uniform(size=400)
    y = (p > 0.5).astype(int)
    base = LogisticCalibrator().fit(p, y)
    calibrator = {"logistic": base, "shifted": ShiftedCalibrator(base, 30.0),
                  "blended": BlendedCalibrator(base, 1.0, 0.5)}[kind]
    out = calibrator.predict([0.0, 1e-9, 0.5, 1 - 1e-9, 1.0, np.nan])
    low, high = bounds(400)
    assert np.all((out[:5] >= low) & (out[:5] <= high)) and np.isnan(out[5])
    assert out[4] == pytest.approx(high)            # 1 - 1e-16 in floating point before the bounds
    if kind != "shifted":                           # (the shift moves the low end up)
        assert out[0] == pytest.approx(low)
    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(restored.predict([0.0, 0.5, 1.0]), calibrator.predict([0.0, 0.5, 1.0]))


def test_a_map_saved_before_the_bounds_keeps_the_published_precision():
    # saved without n_rows: isotonic takes its blocks' weights, the logistic map the published precision only
    state = {"kind": "logistic", "identity": False, "a": 0.0, "b": 40.0}
    out = calibrator_from_dict(state).predict([0.0, 1.0])
    assert out.tolist() == [PUBLISHED_EPSILON, 1 - PUBLISHED_EPSILON]
    state = {"kind": "isotonic", "identity": False, "centres": [0.1, 0.9], "values": [0.0, 1.0],
             "weights": [9.0, 9.0]}
    assert calibrator_from_dict(state).predict([0.0, 1.0]).tolist() == pytest.approx([0.5 / 19, 1 - 0.5 / 19])


def test_monotone_and_clipped():
    rng = np.random.default_rng(11)
    p, y = _squared_sample(rng, 5_000)
    calibrator = IsotonicCalibrator().fit(p, y)
    grid = np.linspace(-0.5, 1.5, 2_001)
    out = calibrator.predict(grid)
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.all(np.diff(calibrator.values_) >= 0)


def test_reduces_calibration_error_on_fresh_sample():
    rng = np.random.default_rng(20240611)
    p_fit, y_fit = _squared_sample(rng, 100_000)
    p_new, y_new = _squared_sample(rng, 100_000)
    calibrator = IsotonicCalibrator().fit(p_fit, y_fit)
    assert calibration_error(y_new, p_new) > 0.05
    assert calibration_error(y_new, calibrator.predict(p_new)) < 0.01


def test_round_trip_through_json():
    rng = np.random.default_rng(5)
    p, y = _squared_sample(rng, 20_000)
    calibrator = IsotonicCalibrator().fit(p, y)
    state = json.loads(json.dumps(calibrator.to_dict()))
    assert all(isinstance(v, float) for v in state["centres"] + state["values"] + state["weights"])
    restored = IsotonicCalibrator.from_dict(state)
    grid = np.linspace(0, 1, 1_001)
    np.testing.assert_array_equal(restored.predict(grid), calibrator.predict(grid))


def test_deterministic():
    rng = np.random.default_rng(9)
    p, y = _squared_sample(rng, 10_000)
    a = IsotonicCalibrator().fit(p, y).to_dict()
    b = IsotonicCalibrator().fit(pd.Series(p), pd.Series(y)).to_dict()
    assert a == b


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1], []])
def test_single_class_gives_identity(y):
    calibrator = IsotonicCalibrator().fit([0.1, 0.5, 0.9][: len(y)], y)
    assert calibrator.identity
    # nothing learnt: the raw scores, only ever as close to 0 or 1 as a published probability can be
    eps = PUBLISHED_EPSILON
    assert calibrator.predict([-0.2, 0.0, 0.3, 1.0, 1.4]).tolist() == [eps, eps, 0.3, 1 - eps, 1 - eps]
    restored = IsotonicCalibrator.from_dict(calibrator.to_dict())
    assert restored.identity and restored.predict([0.3]).tolist() == [0.3]


def test_nan_handling():
    calibrator = IsotonicCalibrator().fit([0.1, np.nan, 0.2, 0.4], [0, 1, 1, np.nan])
    assert calibrator.values_.tolist() == pytest.approx([0.25, 0.75])
    out = calibrator.predict([np.nan, 0.15])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.5)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError):
        IsotonicCalibrator().predict([0.5])
