"""Isotonic calibration: PAV on a hand example, monotonicity, a miscalibrated synthetic set, persistence."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.calibration import IsotonicCalibrator
from models.metrics import calibration_error


def _squared_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores p ~ U(0, 1) whose true event probability is p**2 (overconfident scores)."""
    p = rng.uniform(size=n)
    return p, (rng.uniform(size=n) < p**2).astype(int)


def test_pav_hand_example():
    calibrator = IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    # 0, 1, 0, 1 -> the violating pair (1, 0) is pooled to 0.5
    assert calibrator.values_.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert calibrator.weights_.tolist() == [1.0, 2.0, 1.0]
    assert calibrator.centres_.tolist() == pytest.approx([0.1, 0.25, 0.4])
    assert not calibrator.identity
    # at the block centres the pooled values; in between linear; flat outside the fitted range
    got = calibrator.predict([0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.9])
    assert got.tolist() == pytest.approx([0.0, 0.0, 1 / 3, 0.5, 2 / 3, 1.0, 1.0])


def test_ties_in_p_are_pooled():
    calibrator = IsotonicCalibrator().fit([0.2, 0.2, 0.2, 0.2, 0.7], [1, 0, 0, 0, 1])
    assert calibrator.centres_.tolist() == pytest.approx([0.2, 0.7])
    assert calibrator.values_.tolist() == pytest.approx([0.25, 1.0])
    assert calibrator.weights_.tolist() == [4.0, 1.0]


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
    assert calibrator.predict([-0.2, 0.0, 0.3, 1.0, 1.4]).tolist() == [0.0, 0.0, 0.3, 1.0, 1.0]
    restored = IsotonicCalibrator.from_dict(calibrator.to_dict())
    assert restored.identity and restored.predict([0.3]).tolist() == [0.3]


def test_nan_handling():
    calibrator = IsotonicCalibrator().fit([0.1, np.nan, 0.2, 0.4], [0, 1, 1, np.nan])
    assert calibrator.values_.tolist() == pytest.approx([0.0, 1.0])
    out = calibrator.predict([np.nan, 0.15])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.5)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError):
        IsotonicCalibrator().predict([0.5])
