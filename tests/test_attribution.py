"""Path attributions: exact decomposition of the raw score (credits plus the roots), sparse per-tree updates."""
from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.attribution import PathAttributor


@pytest.fixture(scope="module")
def booster_and_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 12))
    y = ((X[:, 0] + 0.5 * X[:, 3] - X[:, 7] + rng.normal(0, 0.5, 3000)) > 0.8).astype(float)
    init = np.where(X[:, 5] > 0, 0.7, -0.7)              # an offset, as the life-event rule prior gives
    params = {"objective": "binary", "num_leaves": 7, "learning_rate": 0.1, "verbose": -1, "seed": 0,
              "deterministic": True, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, label=y, init_score=init), num_boost_round=40)
    return booster, X


def test_attributions_add_up_to_the_raw_score_minus_the_roots(booster_and_data):
    booster, X = booster_and_data
    attributor = PathAttributor(booster)
    roots = sum(t["tree_structure"].get("internal_value", t["tree_structure"].get("leaf_value", 0.0))
                for t in booster.dump_model()["tree_info"])
    credit = attributor.attributions(X, 1)
    np.testing.assert_allclose(credit.sum(axis=1), booster.predict(X, raw_score=True) - roots, atol=1e-9)
    assert attributor.expected == pytest.approx(roots)
    unused = [j for j in range(X.shape[1]) if j not in set(np.concatenate(attributor.used))]
    assert unused and np.all(credit[:, unused] == 0)           # features no tree splits on get no credit
    np.testing.assert_array_equal(credit, attributor.attributions(leaves=attributor.leaves(X, 1)))


def test_the_strongest_signal_gets_the_most_credit(booster_and_data):
    booster, X = booster_and_data
    credit = PathAttributor(booster).attributions(X, 1)
    assert np.argmax(np.abs(credit).mean(axis=0)) in (0, 7)
