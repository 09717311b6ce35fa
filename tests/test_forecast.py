"""The forecast stage on a small simulated bank: training and the registry, the nightly shard, its gold suite,
refusals of a missing or incompatible model, the safe-to-save and confidence rules, and the backtest."""
from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import backtest, forecast, lake, registry
from pipelines.config import Paths
from pipelines.errors import GateFailed, SegoneError
from pipelines.quality import validate_gold
from pipelines.simulate import simulate_command
from pipelines.stages import load_history

END = date(2026, 11, 20)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Paths:
    """400 customers with 250 days of history, loaded and trained."""
    paths = Paths(tmp_path_factory.mktemp("forecast") / "segone")
    previous = os.environ.get("SEGONE_HOME")
    os.environ["SEGONE_HOME"] = str(paths.home)
    try:
        simulate_command(paths, customers=400, days=250, end_date=END, seed=5, fmt="csv")
        load_history(paths)
        forecast.train(paths)
        yield paths
    finally:
        if previous is None:
            os.environ.pop("SEGONE_HOME", None)
        else:
            os.environ["SEGONE_HOME"] = previous


def test_training_cutoffs_leave_room_for_the_outcomes():
    end = date(2026, 11, 19)
    cutoffs = forecast.training_cutoffs(date(2026, 1, 1), end, 14, 28, 365)
    assert cutoffs == sorted(cutoffs) and len(cutoffs) >= 10
    assert max(cutoffs) + timedelta(days=30) <= end < max(cutoffs) + timedelta(days=44)   # its 30-day outcome known
    assert min(cutoffs) >= date(2026, 1, 29)
    assert all((b - a).days == 14 for a, b in zip(cutoffs, cutoffs[1:]))
    per_horizon = forecast.labelled_cutoffs(cutoffs, end)
    for h, known in per_horizon.items():                      # each horizon learns where its outcome is known
        assert known and max(known) + timedelta(days=h) <= end < max(known) + timedelta(days=h + 14)
    assert max(per_horizon[90]) + timedelta(days=90) == end   # the grid runs through the longest horizon's newest
    assert max(per_horizon[30]) - max(per_horizon[90]) == timedelta(days=56)
    labels = pd.DataFrame({"customer_id": "C1", "cutoff": pd.to_datetime([cutoffs[-1]] * 3),
                           "horizon_days": [30, 60, 90]})
    assert forecast.known_labels(labels, end)["horizon_days"].tolist() == [30]


def test_train_registers_and_promotes_a_model_with_its_metadata(bank):
    directory, metadata = registry.promoted(bank, forecast.FAMILY)
    assert (directory / "engine.json").exists() and (directory / "classifier_h30.txt").exists()
    for key in ("training_window", "features", "metrics_held_out", "data_hash", "trained_for"):
        assert metadata[key], key
    assert metadata["engine"] == "global" and "<= the baseline's" in metadata["decision"]["reason"]
    for h, window in metadata["training_window"]["by_horizon"].items():
        assert date.fromisoformat(window["last_cutoff"]) < date.fromisoformat(window["held_out_cutoff"])
        assert date.fromisoformat(window["held_out_cutoff"]) + timedelta(days=int(h)) <= END
    assert metadata["metrics_held_out"]["30"]["roc_auc"] > 0.8


def test_training_again_on_the_same_data_gives_the_same_version_and_files(bank):
    first, _ = registry.promoted(bank, forecast.FAMILY)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    result = forecast.train(bank)
    assert result["version"] == first.name and result["promoted"]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before


def test_a_shard_is_forecast_and_passes_its_suite(bank):
    day = END - timedelta(days=1)
    per_shard = [forecast.forecast_shard(bank, day, b) for b in forecast.shards()]
    assert sum(m["n_forecast"] for m in per_shard) >= 390
    frame = pd.read_parquet(lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat()))
    assert len(frame) == 3 * frame["customer_id"].nunique()
    assert set(frame["horizon_days"]) == {30, 60, 90}
    wide = frame.pivot(index="customer_id", columns="horizon_days", values="p_shortfall")
    assert (wide[30] <= wide[60]).all() and (wide[60] <= wide[90]).all()
    assert (frame["min_balance_p10"] <= frame["min_balance_p50"]).all()
    assert (frame["safe_to_save"] >= 0).all() and (frame["safe_to_save"] % 5 == 0).all()
    risky = frame[frame["p_shortfall"] >= 0.2]
    assert len(risky) and not risky["drivers"].str.contains("no elevated risk").any()
    assert (frame.loc[frame["p_shortfall"] < 0.2, "drivers"] == "no elevated risk of a shortfall").all()
    assert frame["expected_shortfall_date"].notna().sum() == (frame["p_shortfall"] >= 0.5).sum() - \
        frame.loc[frame["p_shortfall"] >= 0.5, "expected_shortfall_date"].isna().sum()
    result = validate_gold(bank, day, ["cash_forecast", "recurring_streams"])
    assert result["passed"]


def test_the_same_inputs_give_the_same_forecast(bank):
    day = END - timedelta(days=1)
    folder = lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat(), bucket="3")
    forecast.forecast_shard(bank, day, 3)
    first = pd.read_parquet(folder)
    forecast.forecast_shard(bank, day, 3)
    pd.testing.assert_frame_equal(first, pd.read_parquet(folder))


def test_a_broken_forecast_fails_the_gold_suite(bank, tmp_path):
    day = END - timedelta(days=1)
    broken = Paths(tmp_path / "broken")
    source = lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat())
    target = lake.partition_path(broken, "gold", "cash_forecast", as_of=day.isoformat())
    shutil.copytree(source, target)
    part = target / "bucket=3"
    frame = pd.read_parquet(part)
    first = frame["customer_id"].iloc[0]
    frame.loc[(frame["customer_id"] == first) & (frame["horizon_days"] == 90), "p_shortfall"] = -0.5
    for child in part.iterdir():
        child.unlink()
    frame.to_parquet(part / "part-0.parquet", index=False)
    with pytest.raises(GateFailed, match="p_shortfall"):
        validate_gold(broken, day, ["cash_forecast"])


def test_a_global_engine_worse_than_the_baseline_is_not_registered(bank, tmp_path, monkeypatch):
    """Trained on labels that say nothing (shuffled), the global engine loses to the baseline on the held-out
    cut-offs: training registers the baseline, says why, and the night forecasts with it."""
    other = Paths(tmp_path / "other")
    shutil.copytree(bank.lake, other.lake)
    real_fit = forecast.fit_global

    def fit_on_noise(inputs, labels, seed=0):
        rng = np.random.default_rng(0)
        noise = labels.assign(is_shortfall=rng.permutation(labels["is_shortfall"].to_numpy()))
        return real_fit(inputs, noise, seed)

    monkeypatch.setattr(forecast, "fit_global", fit_on_noise)
    result = forecast.train(other)
    assert result["engine"] == "baseline" and result["promoted"]
    assert "worse than the baseline's" in result["engine_reason"]
    compared = result["comparison"]
    assert compared["global"]["mean_brier"] > compared["baseline"]["mean_brier"]
    _, metadata = registry.promoted(other, forecast.FAMILY)
    assert metadata["engine"] == "baseline" and metadata["decision"]["reason"] == result["engine_reason"]
    day = END - timedelta(days=1)
    forecast.forecast_shard(other, day, 3)
    rows = pd.read_parquet(lake.partition_path(other, "gold", "cash_forecast", as_of=day.isoformat(), bucket="3"))
    assert len(rows) and (rows["model_version"] == result["version"]).all()
    assert result["version"].startswith("baseline-")


def test_the_night_refuses_a_missing_model(bank, tmp_path):
    empty = Paths(tmp_path / "empty")
    shutil.copytree(bank.lake, empty.lake)
    with pytest.raises(SegoneError, match="segone train"):
        forecast.forecast_shard(empty, END - timedelta(days=1), 0)


def test_the_night_refuses_an_incompatible_model(bank, tmp_path):
    other = Paths(tmp_path / "other")
    shutil.copytree(bank.lake, other.lake)
    shutil.copytree(bank.models, other.models)
    directory, _ = registry.promoted(other, forecast.FAMILY)
    engine = json.loads((directory / "engine.json").read_text())
    engine["feature_names"] = [*engine["feature_names"], "a_feature_that_no_longer_exists"]
    (directory / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(SegoneError, match="a_feature_that_no_longer_exists"):
        forecast.forecast_shard(other, END - timedelta(days=1), 0)
    engine["format_version"] = 999
    (directory / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(SegoneError, match="format_version"):
        forecast.forecast_shard(other, END - timedelta(days=1), 0)


def test_safe_to_save_keeps_the_30_day_risk_at_the_configured_level():
    rows = pd.DataFrame({"p_shortfall": [0.01, 0.01, 0.5, 0.02], "min_balance_p10": [1234.56, -50.0, 900.0, 4.99]})
    assert forecast.safe_to_save(rows).tolist() == [1230.0, 0.0, 0.0, 0.0]


def test_confidence_says_low_for_short_history_or_no_regular_income():
    features = pd.DataFrame({"history_days": [30, 200, 200, 100, 200], "has_regular_income": [1, 0, 1, 1, 1],
                             "income_regularity": [1, 0, 1, 1, 0.8], "has_reported_balance": [1, 1, 1, 1, 1]})
    assert forecast.confidence(features).tolist() == ["low", "low", "high", "medium", "medium"]


def test_the_backtest_compares_the_three_engines_without_leakage(bank, tmp_path):
    scored, meta = backtest.run_backtest(bank, "tiny", prophet_customers=15, n_cutoffs=1)
    assert set(scored["engine"]) == {"global", "baseline", "prophet"}
    cutoff = pd.Timestamp(meta["test_cutoffs"][0])
    assert (scored["cutoff"] == cutoff).all()
    assert cutoff + pd.Timedelta(days=90) <= pd.Timestamp(forecast.data_end(bank))
    table = backtest.summarise(scored, "tiny", meta["seconds_per_1k_customers"])
    report = backtest.write_outputs(table, scored, "tiny", meta, tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "backtest.json").read_text())
    required = {"dataset", "engine", "horizon_days", "roc_auc", "pr_auc", "brier", "calibration_error",
                "precision_top1pct", "precision_top5pct", "pinball_p10", "pinball_p50", "pinball_p90",
                "coverage_p10_p90", "date_mae_days", "seconds_per_1k_customers"}
    assert rows and required <= set(rows[0])
    assert {(r["engine"], r["horizon_days"]) for r in rows if r["population"] == "prophet_sample"} == {
        (e, h) for e in ("global", "baseline", "prophet") for h in (30, 60, 90)}
    assert report.exists() and report.read_text().count("data:image/png;base64,") >= 6
