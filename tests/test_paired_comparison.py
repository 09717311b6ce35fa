"""The paired comparison of two closed-loop runs customer by customer (`pipelines.evaluation.paired`), on tiny
hand-made frames whose answers are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import SegoneError
from pipelines.evaluation import paired

SETTINGS = {"target": 0.10, "resamples": 2000, "seed": 0}


def paired_comparison(this: pd.DataFrame, other: pd.DataFrame):
    return paired.paired_comparison(this, other, **SETTINGS)


def frame(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(values), "value": list(values.values())})


def test_a_known_difference_gets_its_paired_t_and_delta_method_intervals():
    other = {"c1": 10.0, "c2": 20.0, "c3": 30.0, "c4": 40.0}
    this = {"c1": 11.0, "c2": 23.0, "c3": 35.0, "c4": 47.0}         # differences 1, 3, 5, 7
    r = paired_comparison(frame(this), frame(other))
    # mean 4, sd sqrt(20/3) = 2.581989, t(0.975, 3) = 3.182446: half-width 3.182446 x 2.581989 / 2 = 4.108521
    assert r.mean_difference == pytest.approx(4.0)
    assert r.sd_difference == pytest.approx(math.sqrt(20 / 3), abs=1e-6)
    assert (r.t_ci_low, r.t_ci_high) == (pytest.approx(4 - 4.108521, abs=1e-5),
                                         pytest.approx(4 + 4.108521, abs=1e-5))
    # relative gain 4 / 25 = 0.16; d - 0.16 B = -0.6, -0.2, 0.2, 0.6: sd sqrt(0.8 / 3), half-width
    # 1.959964 x 0.516398 / (2 x 25) = 0.020242
    assert r.relative_gain == pytest.approx(0.16)
    assert (r.relative_ci_low, r.relative_ci_high) == (pytest.approx(0.139758, abs=1e-5),
                                                       pytest.approx(0.180242, abs=1e-5))
    assert (r.mean_this, r.mean_other) == (pytest.approx(29.0), pytest.approx(25.0))
    # four customers: the bootstrap can only land between the smallest and largest difference
    assert 1.0 <= r.bootstrap_ci_low <= 4.0 <= r.bootstrap_ci_high <= 7.0
    assert 1 / 10 <= r.relative_bootstrap_ci_low <= 0.16 <= r.relative_bootstrap_ci_high <= 7 / 40
    assert (r.n_customers, r.n_in_both, r.n_only_this, r.n_only_other, r.n_identical) == (4, 4, 0, 0, 0)
    assert r.target_shown and r.verdict.startswith("+10% shown")


def test_the_bootstrap_agrees_with_the_t_interval_on_many_customers():
    rng = np.random.default_rng(5)
    base = rng.gamma(2.0, 5.0, 800)
    ids = [f"c{i}" for i in range(800)]
    other = pd.DataFrame({"customer_id": ids, "value": base})
    this = pd.DataFrame({"customer_id": ids, "value": base + rng.normal(1.0, 4.0, 800)})
    r = paired_comparison(this, other)
    width = r.t_ci_high - r.t_ci_low
    assert abs(r.bootstrap_ci_low - r.t_ci_low) < 0.1 * width
    assert abs(r.bootstrap_ci_high - r.t_ci_high) < 0.1 * width
    g_width = r.relative_ci_high - r.relative_ci_low
    assert abs(r.relative_bootstrap_ci_low - r.relative_ci_low) < 0.15 * g_width
    assert abs(r.relative_bootstrap_ci_high - r.relative_ci_high) < 0.15 * g_width
    # a gain of about 10% whose interval straddles 10% is not shown
    assert r.relative_ci_low < 0.10 < r.relative_ci_high and not r.target_shown
    assert r.verdict.startswith("+10% not shown")


def test_identical_runs_differ_by_exactly_zero():
    values = {"c1": -3.5, "c2": 0.0, "c3": 12.25, "c4": 4.0, "c5": 0.5}
    r = paired_comparison(frame(values), frame(values))
    assert r.n_identical == r.n_customers == 5
    assert r.mean_difference == 0.0 and r.sd_difference == 0.0
    assert (r.t_ci_low, r.t_ci_high, r.bootstrap_ci_low, r.bootstrap_ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert (r.relative_gain, r.relative_ci_low, r.relative_ci_high) == (0.0, 0.0, 0.0)
    assert not r.target_shown and r.verdict.startswith("+10% not shown")


def test_customers_of_one_run_only_are_counted_with_nothing_in_the_other():
    this = frame({"c1": 5.0, "c2": 2.0, "c3": 1.0})
    other = frame({"c2": 2.0, "c3": 1.0, "c4": 3.0})
    r = paired_comparison(this, other)
    assert (r.n_customers, r.n_in_both, r.n_only_this, r.n_only_other) == (4, 2, 1, 1)
    # differences: c1 5 - 0, c2 0, c3 0, c4 0 - 3
    assert r.mean_difference == pytest.approx(0.5)
    assert r.n_identical == 2
    assert (r.mean_this, r.mean_other) == (pytest.approx(2.0), pytest.approx(1.5))


def test_a_gain_against_a_value_that_is_not_positive_is_not_judged():
    r = paired_comparison(frame({"c1": 1.0, "c2": 2.0}), frame({"c1": -1.0, "c2": -2.0}))
    assert r.mean_difference == pytest.approx(3.0) and r.t_ci_low is not None
    assert r.relative_gain is None and r.relative_ci_low is None and not r.target_shown
    assert r.verdict.startswith("cannot be judged")


def test_one_customer_cannot_be_judged():
    r = paired_comparison(frame({"c1": 2.0}), frame({"c1": 1.0}))
    assert r.n_customers == 1 and r.mean_difference == 1.0 and r.t_ci_low is None
    assert not r.target_shown and r.verdict.startswith("cannot be judged")


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"customer_id": ["c1", "c1"], "value": [1.0, 2.0]}), "more than once"),
    (pd.DataFrame({"customer_id": ["c1"]}), "lack value"),
    (pd.DataFrame({"customer_id": ["c1", "c2"], "value": [1.0, float("nan")]}), "customer c2 is not a number"),
])
def test_bad_frames_fail_with_one_line(bad, message):
    with pytest.raises(SegoneError, match=message):
        paired_comparison(bad, frame({"c1": 1.0}))
