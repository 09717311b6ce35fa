"""The intent model's accuracy cannot quietly drop: the production candidates (config/messages.yaml), chosen by CV
inside the training part, scored on a fixed stratified held-out split of 20 easily confused BANKING77 intents. Also:
a blend of classifiers is one linear model, its weights are fitted on out-of-fold scores, and `segone backtest
messages --held-out` measures the procedure on held-out splits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.message_intent import (IntentClassifier, IntentSpec, cross_validate, evaluate, fit_blend,
                                   fit_temperature, plain_baseline_accuracy, select_and_fit)
from pipelines import messages

TRAIN = messages.training_file()
# 20 intents that the model confuses most with one another (card delivery, virtual cards, top-ups, transfers,
# identity, fees, exchange rates): the hard part of BANKING77, where a weaker model shows first.
HARD = ["card_arrival", "card_delivery_estimate", "disposable_card_limits", "get_disposable_virtual_card",
        "getting_virtual_card", "virtual_card_not_working", "top_up_failed", "top_up_reverted", "pending_top_up",
        "transfer_timing", "pending_transfer", "balance_not_updated_after_bank_transfer",
        "transfer_not_received_by_recipient", "verify_my_identity", "unable_to_verify_identity",
        "card_payment_fee_charged", "transfer_fee_charged", "exchange_rate", "card_payment_wrong_exchange_rate",
        "wrong_exchange_rate_for_cash_withdrawal"]


@pytest.fixture(scope="module")
def hard_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    frame = messages.read_labelled(TRAIN)
    frame = frame[frame["category"].isin(HARD)].reset_index(drop=True)
    return tuple(train_test_split(frame, test_size=0.25, stratify=frame["category"], random_state=0))


def test_heldout_accuracy_on_a_fixed_split_does_not_drop(hard_split):
    """Measured when written: 0.918 accuracy (the 3-fold CV inside the training part chose the SVM + network
    blend here; the single SVM, chosen before the network existed, scored 0.924 on this one split of 672 queries)
    against 0.884 for the plain TF-IDF + linear SVM baseline on the same split. The floors (0.91, and 2 points
    above the baseline) leave room for a different choice among the candidates, not for a model that falls back
    towards the baseline. Deterministic (seeded folds, SVM and networks). About 35 CPU-seconds."""
    train, test = hard_split
    specs = messages.candidate_specs(messages.settings())
    model, table = select_and_fit(specs, train["text"].tolist(), train["category"].tolist(), folds=3, seed=0)
    scored = evaluate(model, test["text"].tolist(), test["category"].tolist())
    baseline = plain_baseline_accuracy(train["text"], train["category"], test["text"], test["category"])
    assert scored["n"] == len(test) == 672
    assert scored["accuracy"] >= 0.91, (scored["accuracy"], model.spec.name)
    assert scored["accuracy"] >= baseline + 0.02
    assert scored["calibration_error"] < 0.06  # the probabilities on unseen messages mean what they say


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = messages.read_labelled(TRAIN)
    frame = frame[frame["category"].isin(HARD[:8])]
    return frame.groupby("category").sample(40, random_state=2).reset_index(drop=True)


def test_blend_is_one_linear_model_and_survives_save(sample, tmp_path):
    spec = IntentSpec("blend", char_ngrams=(1, 5), classifier="svm+logreg", C=(1.0, 10.0))
    model = IntentClassifier(spec, 0.3, (0.7, 0.3)).fit(sample["text"], sample["category"])
    texts = sample["text"].tolist()[:25] + ["", "my card has not come yet"]
    parts = model.component_decisions(texts)
    assert parts.shape == (2, len(texts), 8)
    assert np.allclose(model.decision(texts), 0.7 * parts[0] + 0.3 * parts[1], atol=1e-4)
    model.save(tmp_path)
    loaded = IntentClassifier.load(tmp_path)
    assert loaded.weights == pytest.approx((0.7, 0.3)) and loaded.temperature == pytest.approx(0.3)
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts))


def test_network_blend_survives_save_and_is_reproducible(sample, tmp_path):
    """A blend with the network component: its score is the weighted sum of the SVM's and the networks' (the seeds'
    networks averaged as one wider network), saved and loaded the same, and a second fit gives the same weights."""
    spec = IntentSpec("net", char_ngrams=(1, 5), classifier="svm+mlp", C=1.0, hidden=32, epochs=20, networks=2)
    train, test = sample.iloc[::2], sample.iloc[1::2]
    model = IntentClassifier(spec, 0.5, (0.3, 0.7)).fit(train["text"], train["category"])
    texts = test["text"].tolist() + ["", "???"]  # texts without any n-gram, the last one too
    parts = model.component_decisions(texts)
    assert parts.shape == (2, len(texts), 8)
    assert model.network[0].shape[1] == 64 and model.network[2].shape == (64, 8)  # 2 networks of 32 units
    assert np.allclose(model.decision(texts), 0.3 * parts[0] + 0.7 * parts[1], atol=1e-4)
    # the network learns: on the other half of the sample it is right far above chance (1 in 8)
    network_right = np.mean(model.classes_[parts[1][:-2].argmax(axis=1)] == test["category"].to_numpy())
    assert network_right > 0.7, network_right  # 0.79 when written (the SVM 0.84)
    model.save(tmp_path)
    loaded = IntentClassifier.load(tmp_path)
    assert loaded.spec == spec and loaded.coef.shape == model.coef.shape
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    again = IntentClassifier(spec, 0.5, (0.3, 0.7)).fit(train["text"], train["category"])
    assert np.array_equal(again.network[0], model.network[0]) and np.array_equal(again.coef, model.coef)
    alone = IntentClassifier(IntentSpec("n", classifier="mlp", hidden=16, epochs=2, networks=1)).fit(
        train["text"], train["category"])
    assert alone.coef is None and alone.predict(texts)[0].shape == (len(texts),)


def test_blend_weights_fitted_out_of_fold_beat_each_classifier(sample):
    texts, labels = sample["text"].tolist(), sample["category"].tolist()
    base = dict(char_ngrams=(1, 5))
    alone = [cross_validate(IntentSpec("svm", **base), texts, labels, folds=3),
             cross_validate(IntentSpec("logreg", classifier="logreg", C=10.0, **base), texts, labels, folds=3)]
    blend = cross_validate(IntentSpec("b", classifier="svm+logreg", C=(1.0, 10.0), **base), texts, labels, folds=3)
    assert sum(blend["weights"]) == pytest.approx(1.0) and all(w > 0 for w in blend["weights"])
    # the blend can always fall back on either classifier: its out-of-fold log loss is no worse
    assert blend["oof_log_loss"] <= min(r["oof_log_loss"] for r in alone) + 1e-3
    # one classifier: the blend is the plain temperature
    weights, temperature = fit_blend(alone[0]["oof_scores"][None], labels, alone[0]["classes"])
    assert weights == (1.0,)
    assert temperature == pytest.approx(fit_temperature(alone[0]["oof_scores"], labels, alone[0]["classes"]))


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="unknown classifier"):
        IntentSpec("x", classifier="svm+forest").components()
    with pytest.raises(ValueError, match="2 values of C for 1 classifiers"):
        IntentSpec("x", C=(1.0, 2.0)).components()
    with pytest.raises(ValueError, match="hidden, epochs and networks must be at least 1"):
        IntentSpec("x", classifier="svm+mlp", networks=0).components()
    assert IntentSpec("x", classifier="svm+mlp").components() == [("svm", 1.0), ("mlp", 1.0)]
    assert IntentSpec.from_dict({"name": "x", "classifier": "svm+logreg", "C": [1, 10]}).components() == \
        [("svm", 1.0), ("logreg", 10.0)]


def test_backtest_heldout_command(sample, tmp_path, monkeypatch):
    from pipelines.cli import main

    small = sample[sample["category"].isin(HARD[:5])]
    small.to_csv(tmp_path / "train.csv", index=False)
    monkeypatch.setenv("SEGONE_BANKING77", str(tmp_path))
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path / "home"))
    out_dir = tmp_path / "out"
    assert main(["backtest", "messages", "--held-out", "--repeats", "2", "--output", str(out_dir)]) == 0
    result = json.loads((out_dir / "messages_heldout.json").read_text())
    assert result["repeats"] == 2 and len(result["splits"]) == 2 and result["n"] == len(small) == 200
    assert {"mean", "sd", "min", "max"} <= set(result["accuracy"]) and 0.5 < result["accuracy"]["mean"] <= 1
    assert all(s["n_heldout"] == 50 and s["n_train"] == 150 for s in result["splits"])
    assert sum(row["n"] for row in result["reliability"]) == 100  # every held-out prediction, once
    assert set(result["chosen"]) <= {c["name"] for c in messages.settings()["candidates"]}
    labelled = tmp_path / "labelled.csv"
    small.head(3).to_csv(labelled, index=False)
    assert main(["backtest", "messages", "--held-out", "--labelled", str(labelled)]) == 2
    assert main(["backtest", "messages", "--repeats", "2"]) == 2
    assert main(["backtest", "forecast", "--held-out"]) == 2
    assert main(["backtest", "messages", "--held-out", "--test-size", "1.5"]) == 2
