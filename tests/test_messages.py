"""Understanding customer messages: the intent model chosen by cross-validation, the fast features equal sklearn's,
signals and per-customer features on hand-made messages, the consent gate, the backtest's JSON, and the text never
leaving silver (gold, warehouse, runs/ JSON, logs)."""
from __future__ import annotations

import json
import logging
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.message_intent import (FastTfidf, IntentClassifier, IntentSpec, cross_validate, normalise,
                                   normalise_many, select_and_fit)
from models.message_signals import MessageScorer
from pipelines import lake, messages, registry
from pipelines.config import Paths

D = date(2026, 11, 20)
TRAIN = messages.training_file()
SECRET = "Zanzibar-quokka"  # appears in every test message: it must never leave silver
INTENTS = ["lost_or_stolen_card", "card_arrival", "terminate_account", "edit_personal_details", "exchange_rate",
           "top_up_failed", "declined_card_payment", "change_pin", "compromised_card", "transfer_timing"]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """30 real queries of each of 10 intents (seeded): small enough for a CV in seconds."""
    frame = messages.read_labelled(TRAIN)
    frame = frame[frame["category"].isin(INTENTS)]
    return frame.groupby("category").sample(30, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def small_model(sample):
    specs = [IntentSpec("word_only", char_ngrams=None), IntentSpec("word_char", C=1.0)]
    model, table = select_and_fit(specs, sample["text"].tolist(), sample["category"].tolist(), folds=3, seed=0)
    model.version = "messages-test"
    return model, table


def test_normalise_spells_out_and_folds_digits():
    assert normalise("I CAN'T find my card’s PIN!! it's 1234") == "i can not find my card s pin it s 0"
    assert normalise_many(["a\nb", "won't", ""]) == ["a b", "will not", ""]


def test_cv_selection_picks_the_best_candidate_and_calibrates(small_model, sample):
    model, table = small_model
    assert [r["spec"]["name"] for r in table] == ["word_only", "word_char"]
    chosen = [r for r in table if r["chosen"]]
    assert len(chosen) == 1
    best = max(table, key=lambda r: (round(r["accuracy"], 6), round(r["macro_f1"], 6)))
    assert chosen[0]["spec"]["name"] == best["spec"]["name"] == model.spec.name
    assert 0.6 < chosen[0]["accuracy"] <= 1 and 0 < chosen[0]["temperature"] < 100
    # the CV figures are what cross_validate gives alone (same folds and seed)
    again = cross_validate(model.spec, sample["text"].tolist(), sample["category"].tolist(), folds=3, seed=0)
    assert again["accuracy"] == pytest.approx(chosen[0]["accuracy"])
    intents, probability = model.predict(["I lost my card on the bus", "How do I close my account?"])
    assert list(intents) == ["lost_or_stolen_card", "terminate_account"]
    assert ((probability > 0) & (probability <= 1)).all()


def test_fast_features_equal_sklearn(small_model, sample):
    import scipy.sparse as sp

    model, _ = small_model
    # the batch ends with texts that have no n-gram of a view (an empty row last was once an IndexError)
    texts = normalise_many(sample["text"].tolist() + ["", "a", "I", "0 0 0", "zzzz qqqq", ""])
    fast = FastTfidf(model.vectorizers).transform(texts)
    slow = sp.hstack([v.transform(texts) for v in model.vectorizers], format="csr")
    assert fast.shape == slow.shape and abs(fast - slow).max() < 1e-5


def test_save_and_load_give_the_same_predictions(small_model, tmp_path):
    model, _ = small_model
    model.save(tmp_path)
    loaded = IntentClassifier.load(tmp_path)
    texts = ["my card never arrived", "what is the exchange rate"]
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts))


def test_a_model_of_another_format_is_refused_with_a_clear_error(small_model, tmp_path):
    import joblib

    from models.message_intent import MODEL_FILE, IncompatibleModelError
    from pipelines.errors import SegoneError

    model, _ = small_model
    old = tmp_path / "old"
    model.save(old)
    state = joblib.load(old / MODEL_FILE)
    joblib.dump({**state, "format": 2}, old / MODEL_FILE)  # a model saved before the network component
    with pytest.raises(IncompatibleModelError, match="format 2"):
        IntentClassifier.load(old)
    paths = Paths(tmp_path / "home")
    registry.save_version(paths, messages.FAMILY, "messages-old",
                          lambda d: shutil.copytree(old, d, dirs_exist_ok=True), {})
    with pytest.raises(SegoneError, match="cannot be loaded .*format 2.*run `segone train`"):
        messages.load_model(paths, "messages-old")


# --- signals and features on hand-made messages ---------------------------------------------------------------

@pytest.fixture(scope="module")
def scorer() -> MessageScorer:
    return messages.scorer()


def test_signals_from_text_channel_and_intent(scorer):
    texts = ["I'm really worried, I can't afford my rent this month and I don't know what to do. Please help",
             "This is unacceptable, stop emailing me offers I never asked for",
             "Someone stole my wallet with my card in it",
             "I have moved house, here is my new address",
             "I want to close my account and switch to another bank",
             "What is the exchange rate for euros?",
             "Thanks, the app is great"]
    channels = ["chat", "email", "chat", "email", "chat", "app_review", "app_review"]
    intents = ["exchange_rate", "exchange_rate", "lost_or_stolen_card", "edit_personal_details", "terminate_account",
               "exchange_rate", "exchange_rate"]
    out = scorer.score(texts, channels, intents, [0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert list(out["financial_difficulty"]) == [True, False, False, False, False, False, False]
    assert list(out["complaint"]) == [False, True, False, False, False, False, False]
    assert list(out["fraud_or_lost_card"]) == [False, False, True, False, False, False, False]
    assert list(out["personal_details_change"]) == [False, False, False, True, False, False, False]
    assert list(out["wish_to_leave"]) == [False, False, False, False, True, False, False]
    assert out["distress"][0] >= 0.5 > out["distress"][5]
    assert out["sentiment"][6] > 0.3 and out["sentiment"][1] < 0
    # a complaint form is a complaint whatever it says; an intent below the probability floor is no signal
    form = scorer.score(["Please look at my last statement"], ["complaint_form"], ["terminate_account"], [0.2])
    assert form["complaint"][0] and not form["wish_to_leave"][0]


def test_customer_features_respect_windows_and_consent(scorer):
    cfg = messages.settings()
    at = lambda days_before: pd.Timestamp(D, tz="UTC") + pd.Timedelta(hours=12) - pd.Timedelta(days=days_before)
    insights = pd.DataFrame({
        "message_id": ["m1", "m2", "m3", "m4", "m5"],
        "customer_id": ["A", "A", "B", "B", "C"],
        "received_at": [at(2), at(40), at(10), at(1), at(0)],
        "channel": ["chat"] * 5, "intent": ["x"] * 5, "intent_probability": [0.9] * 5,
        "sentiment": [-0.8, 0.0, 0.0, 0.0, 0.0], "distress": [0.7, 0.0, 0.0, 0.2, 0.9],
        "signals": ["financial_difficulty", "complaint", "fraud_or_lost_card", "complaint", "complaint"],
        "model_version": ["v"] * 5})
    reasons = {s: scorer.reason(s) for s in messages.SIGNAL_FLAGS}
    out = messages.customer_features(insights, ["A", "B"], D, cfg, reasons).set_index("customer_id")
    assert list(out.index) == ["A", "B"]  # C has no consent
    assert out.loc["A", "is_distressed"] and out.loc["A", "has_financial_difficulty"]
    assert not out.loc["A", "has_recent_complaint"]  # 40 days ago: past the 30-day complaint window
    assert not out.loc["B", "has_fraud_or_lost_card"]  # 10 days ago: past the 7-day window
    assert out.loc["B", "has_recent_complaint"] and not out.loc["B", "is_distressed"]
    assert "difficulty paying" in out.loc["A", "reasons"] and "distressed" in out.loc["A", "reasons"]
    assert out.loc["A", "n_messages"] == 2


# --- the stage on a small lake -----------------------------------------------------------------------------------

def _promote(paths: Paths, model, metadata: dict) -> None:
    registry.save_version(paths, messages.FAMILY, model.version, model.save, metadata)
    registry.promote(paths, messages.FAMILY, model.version, "test")


def _landing(paths: Paths) -> None:
    good = Path(__file__).parent / "fixtures" / "landing" / "good"
    folder = paths.landing_day(D.isoformat())
    shutil.copytree(good, folder)
    with open(folder / "consents.csv", "a", encoding="utf-8") as handle:
        handle.write("C000001,message_analysis,true,2026-10-01T10:00:00Z,\n"
                     "C000002,message_analysis,true,2026-10-01T10:00:00Z,\n"
                     "C000002,message_analysis,false,2026-11-20T11:00:00Z,\n"  # withdrawn on D: counts on D
                     "C000003,personalization,true,2026-10-01T10:00:00Z,\n")
    rows = ["message_id,customer_id,received_at,channel,text",
            f'M1,C000001,2026-11-20T08:00:00+00:00,chat,"I lost my card {SECRET}, please block it"',
            f'M2,C000001,2026-11-19T08:00:00+00:00,email,"I can\'t afford my rent {SECRET}, I am desperate"',
            f'M3,C000002,2026-11-20T08:00:00+00:00,chat,"Stop emailing me {SECRET}, this is unacceptable"',
            f'M4,C000003,2026-11-20T08:00:00+00:00,chat,"I lost my card {SECRET}"',
            f'M5,C999999,2026-11-20T08:00:00+00:00,chat,"who am I {SECRET}"',
            f'M6,C000001,2026-11-20T08:00:00+00:00,chat,"{SECRET}\x01"']
    # messages of a customer without the consent, so that one bad row stays under the quarantine gate's 5%
    rows += [f'F{i},C000003,2026-11-20T09:00:00+00:00,app_review,"nice app {SECRET}"' for i in range(20)]
    (folder / "messages.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_stage_consent_gate_and_text_stays_in_silver(small_model, tmp_path, monkeypatch, caplog):
    from pipelines import stages
    from pipelines.warehouse import build_warehouse, connect as connect_warehouse

    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    model, table = small_model
    _promote(paths, model, {"cv": table, "training_file": str(TRAIN)})
    _landing(paths)
    caplog.set_level(logging.DEBUG)
    stages.ingest(paths, D)
    stages.validate(paths, D)
    stages.conform(paths, D)
    stages.validate_silver(paths, D)
    stages.understand_messages(paths, D)
    stages.validate_messages(paths, D)
    build_warehouse(paths)

    con = lake.connect()
    insights = con.execute(f"select * from {lake.scan_sql(paths, 'gold', 'message_insights')}").df()
    features = con.execute(f"select * from {lake.scan_sql(paths, 'gold', 'message_signals')}").df()
    quarantine = con.execute(f"select * from {lake.scan_sql(paths, 'gold', 'quarantine')}").df()
    # only C000001 consents on D (C000002 withdrew on D, C000003 never granted, C999999 is unknown)
    assert sorted(insights["message_id"]) == ["M1", "M2"]
    assert set(features["customer_id"]) == {"C000001"}
    row = features.iloc[0]
    assert row["has_financial_difficulty"] and row["has_fraud_or_lost_card"] and row["is_distressed"]
    assert insights.set_index("message_id").loc["M1", "intent"] == "lost_or_stolen_card"
    reasons = dict(zip(quarantine["raw_value"], quarantine["reason"]))
    assert reasons.get("C999999") == "unknown customer_id"
    assert any("control character" in r for r in quarantine["reason"])

    # the text is in silver and nowhere after it
    silver_text = con.execute(f"select string_agg(text, ' ') from {lake.scan_sql(paths, 'silver', 'messages')}"
                              ).fetchall()[0][0]
    assert SECRET in silver_text
    for table_root in sorted(paths.layer("gold").iterdir()):
        dumped = con.execute(f"select * from {lake.scan_sql(paths, 'gold', table_root.name)}").df()
        assert SECRET not in dumped.astype(str).to_csv(), f"gold {table_root.name} holds message text"
    con.close()
    for file in paths.runs.rglob("*.json"):
        assert SECRET not in file.read_text(encoding="utf-8"), f"{file} holds message text"
    assert SECRET not in caplog.text
    warehouse = connect_warehouse(paths.warehouse)
    views = {r[0] for r in warehouse.execute("select view_name from duckdb_views() where not internal").fetchall()}
    assert "messages" not in views and {"message_insights", "message_signals"} <= views
    for view in views:
        text = warehouse.execute(f"select * from {view}").df().astype(str).to_csv()
        assert SECRET not in text, f"warehouse view {view} holds message text"
    warehouse.close()


def test_backtest_json_shape(small_model, sample, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    model, table = small_model
    _promote(paths, model, {"cv": table, "chosen": model.spec.name, "cv_accuracy": 0.9, "cv_macro_f1": 0.9,
                            "training_file": str(TRAIN)})
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame({"text": ["I lost my card", "my card has not arrived yet", "close my account please"],
                  "category": ["lost_or_stolen_card", "card_arrival", "terminate_account"]}).to_csv(labelled,
                                                                                                  index=False)
    from pipelines.cli import main

    out = messages.backtest_messages(paths, labelled)
    assert {"accuracy", "macro_f1", "n", "per_intent", "model_version"} <= set(out)
    assert out["n"] == 3 and 0 <= out["accuracy"] <= 1 and 0 <= out["macro_f1"] <= 1
    assert set(out["per_intent"]["lost_or_stolen_card"]) == {"precision", "recall", "f1", "support"}
    assert json.loads((paths.reports / "backtest" / "messages_backtest.json").read_text())["n"] == 3
    assert main(["backtest", "messages", "--labelled", str(labelled)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("words,label\nhello,x\n")
    assert main(["backtest", "messages", "--labelled", str(bad)]) == 2


def test_sentiment_equals_vader(scorer, sample):
    """The shortcut for texts without a lexicon word gives exactly VADER's compound score."""
    texts = sample["text"].tolist() + ["I love it :)", "NOT GOOD at all!!!", "no", "kind of ok", "café fees 😡", ""]
    expected = [scorer.vader.polarity_scores(t)["compound"] for t in texts]
    assert list(scorer.sentiment(texts)) == expected


def test_bench_messages_runs_the_stage(small_model, tmp_path, monkeypatch):
    from pipelines.evaluation.bench_messages import bench_messages, format_messages_table

    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    model, table = small_model
    _promote(paths, model, {"cv": table})
    result = bench_messages(paths, 300, 3000, workers=1)
    assert result["scored"] == 3000 and result["messages_per_second"] > 0 and result["cpu_seconds_total"] > 0
    assert "3,000" in format_messages_table([result])
    assert not (tmp_path / "bench").exists() or not any((tmp_path / "bench").iterdir())


def test_two_processes_training_the_same_model_share_one_cross_validation(sample, tmp_path):
    """Two banks (or two test workers) train the same intent model at once: the second waits for the first and takes
    its model from the cache instead of repeating the cross-validation."""
    import os
    import subprocess
    import sys

    sample.to_csv(tmp_path / "train.csv", index=False)
    overlay = tmp_path / "settings.yaml"
    overlay.write_text("messages:\n  cv_folds: 3\n  cv_jobs: 1\n  candidates:\n"
                       "    - {name: word_char, word_ngrams: [1, 2], char_ngrams: [1, 5], classifier: svm, C: 1.0}\n",
                       encoding="utf-8")
    script = ("import json, sys; from pathlib import Path; from pipelines.config import Paths; "
              "from pipelines.messages import train_messages; "
              "print(json.dumps(train_messages(Paths(Path(sys.argv[1])))))")
    env = os.environ.copy() | {"SEGONE_SETTINGS": str(overlay), "SEGONE_BANKING77": str(tmp_path),
                               "SEGONE_MODEL_CACHE": str(tmp_path / "cache"),
                               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"bank{i}")], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["version"] == results[1]["version"]
    reasons = sorted(r["reason"] for r in results)
    assert reasons[0] == "first model of its family", reasons
    assert reasons[1].startswith("same training data and settings as the cached version"), reasons
    for i in range(2):
        assert (tmp_path / f"bank{i}" / "models" / "messages" / results[0]["version"]).is_dir()
