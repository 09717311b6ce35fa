"""The life-event classifier on synthetic frames: beats a noisy rule, calibrated, threshold at the target precision,
save/load identical, deterministic."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.life_event_classifier import LifeEventClassifier, LifeEventParams, choose_threshold
from models.life_event_rules import evaluate_rules, rule_features, rule_fires
from models.metrics import pr_auc

EVENTS = {"new_baby": {"features": ["n_baby_60d", "n_child_benefit_30d", "noise_a", "noise_b"],
                       "target_precision": 0.7}}
RULE = {"description": "two or more baby-shop purchases", "any": [["n_baby_60d", ">=", 2]]}


def synthetic(n_customers: int = 1500, n_cutoffs: int = 10, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A baby-like event: positives buy at baby shops more and often start child benefit; negatives also buy the
    odd gift (the rule's noise)."""
    rng = np.random.default_rng(seed)
    rows = n_customers * n_cutoffs
    cutoffs = pd.to_datetime("2026-01-01") + pd.to_timedelta(np.repeat(np.arange(n_cutoffs) * 14, n_customers), "D")
    customers = np.tile([f"C{i:05d}" for i in range(n_customers)], n_cutoffs)
    y = (rng.random(rows) < 0.06).astype(float)
    baby = np.where(y == 1, rng.poisson(2.5, rows), rng.poisson(0.35, rows)).astype(float)
    benefit = np.where(y == 1, rng.random(rows) < 0.6, rng.random(rows) < 0.02).astype(float)
    features = pd.DataFrame({"customer_id": customers, "cutoff": cutoffs, "n_baby_60d": baby,
                             "n_child_benefit_30d": benefit, "noise_a": rng.normal(0, 1, rows),
                             "noise_b": rng.random(rows)})
    labels = pd.DataFrame({"customer_id": customers, "cutoff": cutoffs, "new_baby": y})
    return features, labels


PARAMS = LifeEventParams(n_estimators=60, num_leaves=7, holdout_cutoffs=3, embargo_days=14, num_threads=1)


@pytest.fixture(scope="module")
def fitted():
    features, labels = synthetic()
    train = features["cutoff"] < features["cutoff"].max() - pd.Timedelta(days=20)
    model = LifeEventClassifier(PARAMS).fit(features[train], labels[train], EVENTS)
    return model, features, labels, train


def test_model_beats_a_noisy_rule_on_held_out_cutoffs(fitted):
    model, features, labels, train = fitted
    test = ~train
    scores = model.predict(features[test], ["new_baby"])["probability"].to_numpy()
    y = labels.loc[test, "new_baby"].to_numpy()
    rule = rule_fires(features[test], RULE).astype(float)
    assert pr_auc(y, scores) > pr_auc(y, rule) + 0.1


def test_probabilities_stay_in_unit_interval(fitted):
    model, features, _, _ = fitted
    p = model.predict(features)["probability"].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and not np.isnan(p).any()


def test_threshold_meets_target_precision_on_validation(fitted):
    model, _, _, _ = fitted
    info = model.events["new_baby"]
    assert info["threshold"] is not None and 0 < info["threshold"] <= 1
    assert info["threshold_rule"].startswith("lowest threshold")
    assert info["validation_at_threshold"]["precision"] >= 0.7


def test_choose_threshold_is_the_lowest_meeting_the_target_and_falls_back_to_f1():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 1, 0], dtype=float)
    p = np.array([.9, .8, .7, .6, .5, .4, .3, .2, .1, .05])
    threshold, how, at = choose_threshold(y, p, 0.75, min_positives=1)
    assert threshold == pytest.approx(0.6) and at["precision"] == pytest.approx(0.75)
    threshold, how, _ = choose_threshold(np.array([0, 1, 0, 1.0]), np.array([.9, .8, .7, .6]), 0.99)
    assert how.startswith("fallback") and threshold is not None
    assert choose_threshold(np.zeros(4), np.ones(4) * .5, 0.7)[0] is None


def test_fallback_is_noted():
    features, labels = synthetic(n_customers=400, n_cutoffs=8, seed=3)
    noisy = {"new_baby": {"features": ["noise_a", "noise_b"], "target_precision": 0.99}}
    model = LifeEventClassifier(PARAMS).fit(features, labels, noisy)
    assert any("fallback" in note or "never flags" in note for note in model.notes)


def test_evidence_names_the_signal(fitted):
    model, features, _, _ = fitted
    predicted = model.predict(features)
    flagged = features[predicted["flagged"].to_numpy()].head(20)
    assert len(flagged) > 0
    for items in model.explain(flagged, "new_baby", k=2):
        assert items and items[0]["contribution"] > 0
        assert {i["feature"] for i in items} & {"n_baby_60d", "n_child_benefit_30d"}


def test_save_load_identical(fitted, tmp_path):
    model, features, _, _ = fitted
    model.save(tmp_path / "a")
    loaded = LifeEventClassifier.load(tmp_path / "a")
    pd.testing.assert_frame_equal(model.predict(features), loaded.predict(features))
    loaded.save(tmp_path / "b")
    for name in ("life_events.json", "new_baby.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_deterministic(tmp_path):
    features, labels = synthetic(n_customers=500, n_cutoffs=8, seed=11)
    a = LifeEventClassifier(PARAMS).fit(features, labels, EVENTS)
    b = LifeEventClassifier(PARAMS).fit(features, labels, EVENTS)
    pd.testing.assert_frame_equal(a.predict(features), b.predict(features))
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert (tmp_path / "a" / "life_events.json").read_bytes() == (tmp_path / "b" / "life_events.json").read_bytes()
    assert (tmp_path / "a" / "new_baby.txt").read_bytes() == (tmp_path / "b" / "new_baby.txt").read_bytes()


def test_rules_from_dicts():
    features, _ = synthetic(n_customers=50, n_cutoffs=2)
    out = evaluate_rules(features, {"new_baby": RULE})
    assert list(out.columns) == ["customer_id", "cutoff", "event_type", "flagged"]
    assert out["flagged"].to_numpy().tolist() == (features["n_baby_60d"] >= 2).tolist()
    assert rule_features(RULE) == ["n_baby_60d"]
    with pytest.raises(KeyError):
        rule_fires(features, {"any": [["no_such_feature", ">=", 1]]})
