"""The event engines' calibration rule (models/event_engine.fit_calibration, models/calibration) on small synthetic
data with a known answer: a logistic map recovers the map that generated the outcomes, a base rate that moved by the
latest calibration cut-off is followed while a difference within the noise is not, and few events do not give an
overconfident map."""
from __future__ import annotations

import json
import numpy as np
import pytest

from models.calibration import (IsotonicCalibrator, LogisticCalibrator, ShiftedCalibrator, calibrator_from_dict,
                                level_shift, shrunk_shift)
from models.event_engine import fit_calibration


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p):
    return np.log(p / (1.0 - p))


def _sample(rng, n, shift=0.0, a=-0.5, b=0.8):
    """Raw scores and outcomes drawn from the known map sigmoid(a + b logit(raw) + shift)."""
    raw = rng.uniform(0.01, 0.6, n)
    truth = _sigmoid(a + b * _logit(raw) + shift)
    return raw, (rng.uniform(size=n) < truth).astype(float), truth


def test_the_logistic_map_recovers_the_map_that_made_the_outcomes():
    raw, y, _ = _sample(np.random.default_rng(1), 40_000)
    cal = LogisticCalibrator().fit(raw, y)
    assert cal.a == pytest.approx(-0.5, abs=0.08) and cal.b == pytest.approx(0.8, abs=0.05)
    # a decreasing relation is never a calibration: the map keeps the level only
    flat = LogisticCalibrator().fit(raw, 1.0 - (raw > 0.3))
    assert flat.b == 0.0 and np.ptp(flat.predict(raw)) == pytest.approx(0.0)


def test_a_base_rate_that_moved_by_the_latest_cutoff_is_followed():
    rng = np.random.default_rng(2)
    parts = [_sample(rng, 3000, shift=0.0) for _ in range(3)] + [_sample(rng, 3000, shift=1.0)]
    p = np.concatenate([r for r, _, _ in parts])
    y = np.concatenate([o for _, o, _ in parts])
    cutoff = np.repeat(np.arange(4), 3000)
    fresh, _, truth = _sample(rng, 20_000, shift=1.0)          # the level goes on as at the latest cut-off
    pooled, _ = fit_calibration(p, y, cutoff, isotonic_min_events=0, follow_level=False)
    followed, note = fit_calibration(p, y, cutoff, isotonic_min_events=0, follow_level=True)
    assert abs(followed.predict(fresh).mean() - truth.mean()) < 0.015
    assert truth.mean() - pooled.predict(fresh).mean() > 0.05   # the pooled map stays near the old level
    assert "followed +" in note


def test_a_difference_within_the_noise_of_one_cutoff_is_not_followed():
    assert shrunk_shift(0.3, 0.3) == 0.0 and shrunk_shift(-0.2, 0.4) == 0.0
    assert shrunk_shift(1.0, 0.1) == pytest.approx(0.99)
    assert shrunk_shift(0.5, float("inf")) == 0.0
    # one cut-off with 12 events whose rate is what the map says: no shift worth following
    rng = np.random.default_rng(3)
    raw, y, truth = _sample(rng, 400, a=-3.0)
    d, se = level_shift(_sigmoid(-3.0 + 0.8 * _logit(raw)), y)
    assert abs(d) < 2.5 * se and se > 0.2
    assert level_shift(raw, np.zeros(len(raw))) == (0.0, float("inf"))


def test_few_events_get_a_logistic_map_that_is_not_overconfident():
    rng = np.random.default_rng(4)
    raw, y, _ = _sample(rng, 2000, a=-3.5)                     # about 25 events
    assert 10 < y.sum() < 60
    cutoff = np.repeat(np.arange(4), 500)
    chosen, note = fit_calibration(raw, y, cutoff, isotonic_min_events=200, follow_level=False)
    assert isinstance(chosen, LogisticCalibrator) and note.startswith("logistic map")
    isotonic = IsotonicCalibrator().fit(raw, y)
    fresh, outcome, truth = _sample(rng, 50_000, a=-3.5)
    brier = {name: float(np.mean((m.predict(fresh) - outcome) ** 2)) for name, m in
             (("logistic", chosen), ("isotonic", isotonic))}
    assert brier["logistic"] < brier["isotonic"]
    # isotonic puts a block of a few events at a high rate; the logistic map stays near the truth at the top
    assert chosen.predict(fresh).max() < truth.max() * 1.5 + 0.02
    many, _ = fit_calibration(raw, y, cutoff, isotonic_min_events=5, follow_level=False)
    assert isinstance(many, IsotonicCalibrator)


def test_calibrators_reload_the_same():
    rng = np.random.default_rng(5)
    raw, y, _ = _sample(rng, 3000)
    for cal in (LogisticCalibrator().fit(raw, y), ShiftedCalibrator(IsotonicCalibrator().fit(raw, y), 0.4)):
        again = calibrator_from_dict(cal.to_dict())
        np.testing.assert_array_equal(cal.predict(raw), again.predict(raw))
    with pytest.raises(ValueError, match="unknown calibrator"):
        calibrator_from_dict({"kind": "spline"})


def test_a_map_that_does_not_separate_out_of_sample_gives_way_to_the_base_rate():
    """shrink_to_base_rate: scores unrelated to the outcome (noise) get a weight near 0 and forecast the event rate;
    scores that separate the events keep a weight near 1 (the map unchanged)."""
    rng = np.random.default_rng(5)
    n, cuts = 6000, np.repeat(np.array(["2026-01-01", "2026-01-15", "2026-01-29"], dtype="datetime64[D]"), 2000)
    y = (rng.random(n) < 0.05).astype(float)
    noise = rng.random(n)
    calibrator, note = fit_calibration(noise, y, cuts, 0, False, shrink_to_base_rate=True)
    assert calibrator.weight < 0.3 and "weight of the map" in note
    assert np.abs(calibrator.predict(np.array([0.01, 0.5, 0.99])) - y.mean()).max() < 0.02
    signal = np.clip(0.6 * y + 0.4 * rng.random(n), 0, 1)
    separating, _ = fit_calibration(signal, y, cuts, 0, False, shrink_to_base_rate=True)
    assert separating.weight > 0.9
    assert separating.predict(np.array([0.95]))[0] > 0.8
    again = calibrator_from_dict(json.loads(json.dumps(separating.to_dict())))
    assert np.allclose(again.predict(signal[:50]), separating.predict(signal[:50]))
