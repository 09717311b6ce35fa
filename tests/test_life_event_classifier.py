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


def test_a_fallback_that_would_flag_nearly_everyone_does_not_flag():
    """3 positives in 3,000 rows, all at the bottom of the scores: the best F1 flags everything (precision 0.001,
    above 5x nothing); the precision floor refuses it."""
    y = np.zeros(3000)
    y[:3] = 1
    p = np.linspace(0.0, 1.0, 3000)[::-1].copy()
    p[:3] = 1e-12
    threshold, how, at = choose_threshold(y, p, 0.7, min_positives=1, min_fallback_lift=0.5,
                                          min_fallback_precision=0.1)
    assert threshold is None and "never flags" in how and at["precision"] < 0.1
    assert choose_threshold(y, p, 0.7, min_positives=1, min_fallback_lift=0.5)[0] is not None


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


def _rule_world(n_customers: int, n_positive_customers: int, seed: int = 3):
    """An event a rule catches half of (rule_marriage fires on 50% of positives and 1% of negatives), a second
    signal (n_caterer_90d) that adds evidence, and noise columns; few labelled positives."""
    rng = np.random.default_rng(seed)
    n_cutoffs = 8
    rows = n_customers * n_cutoffs
    cutoffs = pd.to_datetime("2026-01-01") + pd.to_timedelta(np.repeat(np.arange(n_cutoffs) * 14, n_customers), "D")
    customers = np.tile([f"C{i:05d}" for i in range(n_customers)], n_cutoffs)
    positive_ids = rng.choice(n_customers, n_positive_customers, replace=False)
    y = np.isin(np.tile(np.arange(n_customers), n_cutoffs), positive_ids) & (rng.random(rows) < 0.5)
    fires = np.where(y, rng.random(rows) < 0.5, rng.random(rows) < 0.01)
    caterer = np.where(y, rng.poisson(1.2, rows), rng.poisson(0.05, rows)).astype(float)
    features = pd.DataFrame({"customer_id": customers, "cutoff": cutoffs, "rule_marriage": fires.astype(float),
                             "n_caterer_90d": caterer, **{f"noise_{i}": rng.normal(0, 1, rows) for i in range(20)}})
    labels = pd.DataFrame({"customer_id": customers, "cutoff": cutoffs, "marriage": y.astype(float)})
    return features, labels


def _fit_marriage(features: pd.DataFrame, labels: pd.DataFrame, n_estimators: int,
                  monotone: dict[str, int] | None = None) -> LifeEventClassifier:
    """The marriage model of _rule_world, boosted from its rule prior."""
    columns = [c for c in features.columns if c not in ("customer_id", "cutoff")]
    params = LifeEventParams(n_estimators=n_estimators, num_leaves=7, holdout_cutoffs=2, embargo_days=14, num_threads=1)
    spec = {"features": columns, "target_precision": 0.7, "prior": "rule_marriage", "monotone": monotone or {}}
    return LifeEventClassifier(params).fit(features, labels, {"marriage": spec})


def test_rule_prior_keeps_a_model_with_few_labels_at_least_as_good_as_its_rule():
    features, labels = _rule_world(2000, 8)
    columns = [c for c in features.columns if c not in ("customer_id", "cutoff")]
    test_world, test_labels = _rule_world(2000, 60, seed=4)      # a fresh population with many more events
    y = test_labels["marriage"].to_numpy()
    rule_ap = pr_auc(y, test_world["rule_marriage"].to_numpy())
    params = LifeEventParams(n_estimators=60, num_leaves=7, holdout_cutoffs=2, embargo_days=14, num_threads=1,
                             min_child_samples=50)
    with_prior = LifeEventClassifier(params).fit(
        features, labels, {"marriage": {"features": columns, "target_precision": 0.7, "prior": "rule_marriage",
                                        "monotone": {"rule_marriage": 1, "n_caterer_90d": 1}}})
    info = with_prior.events["marriage"]
    assert info["prior"]["logit_fires"] > info["prior"]["logit_silent"]
    assert info["monotone"] == {"n_caterer_90d": 1, "rule_marriage": 1}
    scored = with_prior.predict(test_world, ["marriage"])
    order = np.lexsort((scored["raw_score"].to_numpy(), scored["probability"].to_numpy()))
    ranks = np.empty(len(order)); ranks[order] = np.arange(len(order))
    assert pr_auc(y, ranks) > rule_ap


def test_monotone_evidence_never_lowers_the_probability():
    features, labels = _rule_world(1500, 40)
    model = _fit_marriage(features, labels, 40, {"rule_marriage": 1, "n_caterer_90d": 1})
    sample = features.sample(300, random_state=0).reset_index(drop=True)
    base = model.predict(sample, ["marriage"])["raw_score"].to_numpy()
    for column in ("n_caterer_90d", "rule_marriage"):
        more = sample.assign(**{column: sample[column] + 1})
        assert (model.predict(more, ["marriage"])["raw_score"].to_numpy() >= base - 1e-12).all()


def test_explanations_credit_the_rule_prior_where_the_rule_fires():
    features, labels = _rule_world(1500, 40)
    model = _fit_marriage(features, labels, 30)
    fired = features[features["rule_marriage"] == 1].head(50).reset_index(drop=True)
    top = model.explain(fired, "marriage", k=1)
    assert sum(items[0]["feature"] == "rule_marriage" for items in top) >= 40


def test_a_saved_prior_model_predicts_the_same(tmp_path):
    features, labels = _rule_world(800, 20)
    model = _fit_marriage(features, labels, 20)
    model.save(tmp_path)
    again = LifeEventClassifier.load(tmp_path)
    pd.testing.assert_frame_equal(model.predict(features), again.predict(features))


def test_one_pass_scoring_agrees_with_predict_and_explain():
    features, labels = _rule_world(1000, 30)
    model = _fit_marriage(features, labels, 30, {"rule_marriage": 1})
    sample = features.head(500)
    scored = model.score(sample, "marriage", k=3)
    predicted = model.predict(sample, ["marriage"])
    np.testing.assert_allclose(scored["raw_score"], predicted["raw_score"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(scored["flagged"], predicted["flagged"].to_numpy())
    explained = model.explain(sample, "marriage", k=3)
    first = [scored["columns"][i] for i in scored["top_index"][0]]
    assert [t["feature"] for t in explained[0]] == [f for f, c in zip(first, scored["top_contribution"][0])
                                                     if c > 0] or first
    assert (np.diff(scored["top_contribution"], axis=1) <= 1e-12).all()    # largest first


# ------------------------------------------------------------------------------------------------ model or rule

def _with_rule(features: pd.DataFrame) -> pd.DataFrame:
    return features.assign(rule_new_baby=rule_fires(features, RULE).astype(float))


def _spec(**extra) -> dict:
    return {"new_baby": {**EVENTS["new_baby"], "features": [*EVENTS["new_baby"]["features"], "rule_new_baby"],
                         "prior": "rule_new_baby", "rule": RULE, "rule_version": 1, **extra}}


def test_an_event_without_labelled_events_on_validation_falls_back_to_its_rule_never_to_zero_for_everyone():
    features, labels = synthetic(n_customers=400, n_cutoffs=8)
    features = _with_rule(features)
    latest = features["cutoff"] >= sorted(features["cutoff"].unique())[-3]
    labels.loc[latest.to_numpy(), "new_baby"] = 0.0          # no declared event on the validation cut-offs
    model = LifeEventClassifier(PARAMS).fit(features, labels, _spec())
    info = model.events["new_baby"]
    assert info["threshold"] is None                          # the model cannot flag ...
    assert model.method("new_baby") == "rule" and "validation" in info["method_reason"]
    hand = pd.DataFrame({"customer_id": ["A", "B"], "cutoff": pd.to_datetime(["2026-06-01"] * 2),
                         "n_baby_60d": [3.0, 0.0], "n_child_benefit_30d": [0.0, 0.0], "noise_a": 0.0, "noise_b": 0.0,
                         "rule_new_baby": [1.0, 0.0]})
    scored = model.score(hand, "new_baby", k=3)
    assert np.isnan(scored["probability"]).all()              # ... so it says nothing, rather than 0.00
    assert scored["flagged"].tolist() == [True, False]        # and the rule flags who bought at a baby shop
    assert [scored["columns"][i] for i in scored["top_index"][0]] == ["n_baby_60d"]
    assert scored["top_value"][0, 0] == 3.0
    published = model.predict(hand, ["new_baby"], published=True)
    assert published["probability"].isna().all() and published["flagged"].tolist() == [True, False]
    assert model.predict(hand, ["new_baby"])["probability"].notna().all()   # the model itself, for the backtest


def test_a_model_that_ranks_worse_than_its_rule_on_validation_is_not_published():
    features, labels = synthetic(n_customers=1500, n_cutoffs=10)
    features = _with_rule(features)
    late = (features["cutoff"] >= sorted(features["cutoff"].unique())[-3]).to_numpy()
    # after the training cut-offs the world changes: only the rule's signal still marks the event
    rng = np.random.default_rng(3)
    y = labels["new_baby"].to_numpy()
    features.loc[late, "n_child_benefit_30d"] = (rng.random(late.sum()) < 0.3).astype(float)
    features.loc[late, "n_baby_60d"] = np.where(y[late] == 1, 3.0, 0.0)
    features = _with_rule(features)
    spec = _spec(target_precision=0.05)                     # a threshold it can reach: it can flag
    spec["new_baby"]["features"] = ["n_child_benefit_30d", "noise_a", "noise_b"]   # the model does not see the rule
    spec["new_baby"]["prior"] = None
    model = LifeEventClassifier(PARAMS).fit(features, labels, spec)
    comparison = model.events["new_baby"]["comparison"]
    assert comparison["rule_pr_auc"] > comparison["model_pr_auc"]
    assert model.events["new_baby"]["threshold"] is not None and model.method("new_baby") == "rule"
    assert "below the rule's" in model.events["new_baby"]["method_reason"]


def test_a_model_that_beats_its_rule_is_published_and_says_why():
    features, labels = synthetic()
    model = LifeEventClassifier(PARAMS).fit(_with_rule(features), labels, _spec())
    info = model.events["new_baby"]
    assert model.method("new_baby") == "model" and "at least the rule's" in info["method_reason"]
    assert info["comparison"]["model_pr_auc"] >= info["comparison"]["rule_pr_auc"]
    assert info["comparison"]["n_validation_positive_customers"] >= PARAMS.min_validation_positive_customers


def test_a_rules_only_classifier_saves_loads_and_flags_by_the_rule(tmp_path):
    model = LifeEventClassifier.rules_only({"new_baby": {"rule": RULE, "rule_version": 2}}, "no history", PARAMS)
    model.save(tmp_path)
    again = LifeEventClassifier.load(tmp_path)
    assert again.method("new_baby") == "rule" and again.events["new_baby"]["rule_version"] == 2
    assert rule_features(again.events["new_baby"]["rule"]) == ["n_baby_60d"]
    hand = pd.DataFrame({"customer_id": ["A", "B", "C"], "cutoff": pd.to_datetime(["2026-06-01"] * 3),
                         "n_baby_60d": [2.0, 1.0, np.nan]})
    scored = again.score(hand, "new_baby")
    assert scored["flagged"].tolist() == [True, False, False] and np.isnan(scored["probability"]).all()
    assert again.predict(hand)["flagged"].tolist() == [True, False, False]
