"""The global LightGBM engine on a synthetic panel whose labels come from a known random-walk process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.contract import FORECAST_COLUMNS
from models.global_engine import (
    GlobalEngine,
    GlobalEngineParams,
    IncompatibleModelError,
    _calibration_cutoffs,
    customer_groups,
    fold_training_rows,
)

N_CUSTOMERS = 3000
N_CUTOFFS = 8
INFORMATIVE = ["balance_now", "mean_net_flow_30", "std_net_flow_30", "income_regular"]
NOISE = ["noise_1", "noise_2", "noise_3", "noise_4"]


def synthetic_panel(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels for N_CUSTOMERS x N_CUTOFFS weekly cut-offs. Each customer has a daily drift (income
    makes it higher) and a volatility; the next 90 days are a random walk from balance_now, so min_balance at H is
    about balance_now + H * drift + noise * sqrt(H), and the labels come from the simulated path itself."""
    rng = np.random.default_rng(seed)
    income = rng.random(N_CUSTOMERS) < 0.6
    drift = rng.normal(-6.0, 8.0, N_CUSTOMERS) + 6.0 * income
    vol = np.exp(rng.normal(np.log(40.0), 0.4, N_CUSTOMERS))
    level = np.exp(rng.normal(np.log(900.0), 0.8, N_CUSTOMERS))
    cutoffs = pd.date_range("2026-01-04", periods=N_CUTOFFS, freq="7D")
    feature_rows, label_rows = [], []
    for c, cutoff in enumerate(cutoffs):
        balance = level * np.exp(rng.normal(0.0, 0.3, N_CUSTOMERS))
        steps = drift[:, None] + vol[:, None] * rng.normal(size=(N_CUSTOMERS, 90))
        path = balance[:, None] + np.cumsum(steps, axis=1)
        ids = [f"C{i:05d}" for i in range(N_CUSTOMERS)]
        feature_rows.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "cutoff": cutoff,
                    "balance_now": balance,
                    "mean_net_flow_30": drift + vol / np.sqrt(30) * rng.normal(size=N_CUSTOMERS),
                    "std_net_flow_30": vol * np.exp(rng.normal(0.0, 0.1, N_CUSTOMERS)),
                    "income_regular": income.astype(float),
                    **{name: rng.normal(size=N_CUSTOMERS) for name in NOISE},
                }
            )
        )
        for h in (30, 60, 90):
            window = path[:, :h]
            below = window < 0
            first = np.where(below.any(axis=1), below.argmax(axis=1) + 1.0, np.nan)
            label_rows.append(
                pd.DataFrame(
                    {
                        "customer_id": ids,
                        "cutoff": cutoff,
                        "horizon_days": h,
                        "is_shortfall": below.any(axis=1),
                        "min_balance": window.min(axis=1),
                        "days_to_shortfall": first,
                    }
                )
            )
    return pd.concat(feature_rows, ignore_index=True), pd.concat(label_rows, ignore_index=True)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    features, labels = synthetic_panel()
    last = features["cutoff"].max()
    return {
        "train_x": features[features["cutoff"] < last].reset_index(drop=True),
        "train_y": labels[labels["cutoff"] < last].reset_index(drop=True),
        "test_x": features[features["cutoff"] == last].reset_index(drop=True),
        "test_y": labels[labels["cutoff"] == last].reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def engine(panel: dict[str, pd.DataFrame]) -> GlobalEngine:
    return GlobalEngine().fit(panel["train_x"], panel["train_y"], GlobalEngineParams())  # the defaults


@pytest.fixture(scope="module")
def forecast(engine: GlobalEngine, panel: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return engine.predict(panel["test_x"])


def joined(forecast: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return forecast.merge(labels, on=["customer_id", "cutoff", "horizon_days"], suffixes=("", "_true"))


def test_forecast_shape_and_coherence(forecast: pd.DataFrame, panel: dict[str, pd.DataFrame]) -> None:
    assert list(forecast.columns) == FORECAST_COLUMNS
    assert len(forecast) == 3 * len(panel["test_x"])
    assert forecast["p_shortfall"].between(0, 1).all()
    wide = forecast.pivot(index="customer_id", columns="horizon_days", values="p_shortfall")
    assert (wide[60] >= wide[30]).all() and (wide[90] >= wide[60]).all()
    assert (forecast["min_balance_p10"] <= forecast["min_balance_p50"]).all()
    assert (forecast["min_balance_p50"] <= forecast["min_balance_p90"]).all()
    assert (forecast["cutoff"] == panel["test_x"]["cutoff"].iloc[0]).all()
    days = forecast["days_to_shortfall"]
    assert days.notna().all()
    assert (days >= 1).all() and (days <= forecast["horizon_days"]).all()


def test_held_out_quality(forecast: pd.DataFrame, panel: dict[str, pd.DataFrame]) -> None:
    both = joined(forecast, panel["test_y"])
    for h, part in both.groupby("horizon_days"):
        y = part["is_shortfall"].to_numpy(dtype=float)
        assert 0.05 < y.mean() < 0.7, (h, y.mean())
        auc = roc_auc(y, part["p_shortfall"].to_numpy())
        assert auc > 0.85, (h, auc)
        # Calibrated: the mean probability is close to the observed rate.
        assert abs(part["p_shortfall"].mean() - y.mean()) < 0.05, (h, part["p_shortfall"].mean(), y.mean())
        covered = part["min_balance"].between(part["min_balance_p10"], part["min_balance_p90"]).mean()
        assert 0.6 <= covered <= 0.95, (h, covered)


def test_notes_and_summary(engine: GlobalEngine) -> None:
    assert any("calibrated on out-of-time predictions for the latest" in note for note in engine.notes)
    summary = engine.training_summary
    assert summary["n_rows"] == N_CUSTOMERS * (N_CUTOFFS - 1)
    assert summary["n_customers"] == N_CUSTOMERS
    rates = [summary["horizons"][str(h)]["positive_rate"] for h in (30, 60, 90)]
    assert rates == sorted(rates)
    importance = engine.feature_importance()
    assert list(importance.columns) == ["feature", "gain"]
    assert importance["feature"].iloc[0] in INFORMATIVE
    assert set(importance["feature"].head(3)) <= set(INFORMATIVE)


def test_save_load_round_trip_is_exact(engine: GlobalEngine, forecast: pd.DataFrame, panel, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    engine.save(first)
    engine.save(second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert "engine.json" in names and {f"classifier_h30_g{g}.txt" for g in range(4)} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    meta = json.loads((first / "engine.json").read_text())
    assert meta["feature_names"] == INFORMATIVE + NOISE
    assert set(meta["calibrators"]) == {"30", "60", "90"}
    loaded = GlobalEngine.load(first)
    pd.testing.assert_frame_equal(loaded.predict(panel["test_x"]), forecast, check_exact=True)


def test_an_engine_saved_with_one_classifier_per_horizon_still_loads(engine: GlobalEngine, panel,
                                                                     tmp_path: Path) -> None:
    """Engines saved before per-group classifiers (classifier_h30.txt, one for every customer) load and predict
    with it; so does an engine whose calibration was skipped."""
    import copy

    single = copy.copy(engine)
    single.classifiers = {h: boosters[:1] for h, boosters in engine.classifiers.items()}
    single.save(tmp_path)
    assert (tmp_path / "classifier_h30.txt").exists() and not (tmp_path / "classifier_h30_g0.txt").exists()
    loaded = GlobalEngine.load(tmp_path)
    assert [len(b) for b in loaded.classifiers.values()] == [1, 1, 1]
    pd.testing.assert_frame_equal(loaded.predict(panel["test_x"]), single.predict(panel["test_x"]), check_exact=True)


def test_missing_feature_raises(engine: GlobalEngine, panel) -> None:
    with pytest.raises(IncompatibleModelError, match="std_net_flow_30"):
        engine.predict(panel["test_x"].drop(columns=["std_net_flow_30"]))
    # Extra columns are ignored, column order does not matter.
    shuffled = panel["test_x"].iloc[:50]
    shuffled = shuffled[list(reversed(shuffled.columns))].assign(extra=1.0)
    pd.testing.assert_frame_equal(engine.predict(shuffled), engine.predict(panel["test_x"].iloc[:50]))


def test_other_format_version_is_refused(engine: GlobalEngine, tmp_path: Path) -> None:
    engine.save(tmp_path)
    meta = json.loads((tmp_path / "engine.json").read_text())
    meta["format_version"] = 999
    (tmp_path / "engine.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleModelError, match="format_version"):
        GlobalEngine.load(tmp_path)


def test_top_drivers_name_informative_features(engine: GlobalEngine, forecast: pd.DataFrame, panel) -> None:
    features = panel["test_x"]
    p30 = forecast[forecast["horizon_days"] == 30].set_index("customer_id")["p_shortfall"]
    risky = features["customer_id"].map(p30).to_numpy() > 0.5
    assert risky.sum() > 50
    drivers = engine.top_drivers(features, horizon_days=30, k=3, only_rows=risky)
    assert all(d == [] for d, r in zip(drivers, risky) if not r)
    explained = [d for d, r in zip(drivers, risky) if r]
    assert all(1 <= len(d) <= 3 for d in explained)
    first = pd.Series([d[0] for d in explained])
    assert first.isin(INFORMATIVE).mean() > 0.95
    assert (first == "balance_now").mean() > 0.3
    listed = pd.Series([name for d in explained for name in d])
    assert listed.isin(NOISE).mean() < 0.2
    # When a noise column is listed at all, it comes after the informative ones.
    mixed = [d for d in explained if set(d) & set(NOISE)]
    ordered = [max(d.index(n) for n in d if n in INFORMATIVE) < min(d.index(n) for n in d if n in NOISE) for d in mixed]
    assert np.mean(ordered) > 0.9


def test_deterministic(panel) -> None:
    small = GlobalEngineParams(n_estimators=40, regressor_estimators=20, learning_rate=0.1)
    x, y = panel["train_x"].iloc[: 2 * N_CUSTOMERS], panel["train_y"]  # two cut-offs: calibration runs
    a = GlobalEngine().fit(x, y, small).predict(panel["test_x"])
    b = GlobalEngine().fit(x, y, small).predict(panel["test_x"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_skips_when_data_is_thin(panel) -> None:
    """One cut-off: no calibration (identity, noted); a horizon with too few positives: no date model, NaN."""
    x = panel["train_x"][panel["train_x"]["cutoff"] == panel["train_x"]["cutoff"].min()]
    y = panel["train_y"][panel["train_y"]["cutoff"] == x["cutoff"].iloc[0]].copy()
    rare = (y["horizon_days"] == 30) & y["is_shortfall"]
    keep = rare & (y.groupby(rare).cumcount() < 10)
    y.loc[rare & ~keep, ["is_shortfall", "days_to_shortfall"]] = [False, np.nan]
    engine = GlobalEngine().fit(x, y, GlobalEngineParams(n_estimators=20, regressor_estimators=10))
    assert all(engine.calibrators[h] is None for h in (30, 60, 90))
    assert any("calibration skipped (a single cut-off)" in note for note in engine.notes)
    assert engine.date_models[30] is None and engine.date_models[60] is not None
    out = engine.predict(panel["test_x"].iloc[:20])
    assert out.loc[out["horizon_days"] == 30, "days_to_shortfall"].isna().all()
    assert out.loc[out["horizon_days"] == 60, "days_to_shortfall"].notna().all()


def test_calibration_cutoffs_are_the_latest_ones_at_least_min_folds_never_the_first() -> None:
    cutoffs = np.repeat(np.arange(10), 100)                     # ten cut-offs of 100 rows
    assert _calibration_cutoffs(cutoffs, 0.2, 3).tolist() == [7, 8, 9]   # the share holds 2: at least 3 folds
    assert _calibration_cutoffs(cutoffs, 0.5, 3).tolist() == [5, 6, 7, 8, 9]
    assert _calibration_cutoffs(np.repeat(np.arange(3), 100), 0.2, 3).tolist() == [1, 2]   # never the first
    assert _calibration_cutoffs(np.repeat([0], 100), 0.2, 3).tolist() == []
    assert _calibration_cutoffs(cutoffs, 0.0, 3).tolist() == []


def test_the_published_classifiers_are_the_ones_the_calibrator_saw_last_one_per_customer_group(panel) -> None:
    """The calibrator is fitted on predictions for every row of the latest cut-offs, each made by a classifier
    fitted on the cut-offs before it and blind to its customer group's outcomes that had not ended by then; the
    classifiers of the latest calibration cut-off are published, each scoring its group's customers. Its
    calibrated probabilities match the observed rate on a cut-off it has not seen."""
    params = GlobalEngineParams(n_estimators=40, regressor_estimators=10, learning_rate=0.1, calibration_min_folds=3)
    x, y = panel["train_x"], panel["train_y"]
    engine = GlobalEngine().fit(x, y, params)
    assert len(engine.classifiers[30]) == params.calibration_groups == 4
    labelled = y[y["horizon_days"] == 30].sort_values(["cutoff", "customer_id"], kind="stable")
    rows = x.set_index(["customer_id", "cutoff"]).loc[list(zip(labelled["customer_id"], labelled["cutoff"]))]
    cutoffs = labelled["cutoff"].to_numpy(dtype="datetime64[ns]")
    groups = customer_groups(labelled["customer_id"], 4)
    learn = fold_training_rows(cutoffs, groups, np.unique(cutoffs)[-1], 2, 30)
    direct = engine._train(rows[engine.feature_names].to_numpy(float)[learn],
                           labelled["is_shortfall"].to_numpy(float)[learn], "binary", params.n_estimators)
    probe = panel["test_x"][engine.feature_names].to_numpy(float)[:500]
    np.testing.assert_allclose(engine.classifiers[30][2].predict(probe), direct.predict(probe))
    assert engine.calibrators[30] is not None and sum(engine.calibrators[30].weights_) == 3 * N_CUSTOMERS
    assert any("blind to the outcomes of its customer group (4 group(s))" in note for note in engine.notes)
    test = panel["test_x"]
    scored = engine.predict(test)
    for booster, mask in engine.classifier_rows(30, test["customer_id"]):   # each customer by its group's model
        assert mask.sum() > 500
        raw = booster.predict(test[engine.feature_names].to_numpy(float)[mask])
        mine = scored[scored["horizon_days"] == 30].set_index("customer_id").loc[test["customer_id"][mask]]
        np.testing.assert_allclose(mine["p_shortfall"].to_numpy(), engine.calibrators[30].predict(raw), atol=1e-12)
    out = scored.merge(panel["test_y"], on=["customer_id", "cutoff", "horizon_days"])
    for h, part in out.groupby("horizon_days"):
        assert abs(part["p_shortfall"].mean() - part["is_shortfall"].mean()) < 0.03, h


def test_a_calibration_classifier_never_sees_an_open_outcome_of_the_customers_it_predicts() -> None:
    """Hand-made rows: customers a (group 0) and b (group 1), cut-offs every 14 days. Predicting group 0 at day 98
    with the 30-day horizon, the classifier learns from every earlier cut-off of b, and of a only the cut-offs
    whose 30-day outcome had ended by day 98 (day 56 and 68 + 30 = 98 yes, day 84 no): a's outcome from day 84
    runs to day 114 and holds the shortfall being predicted at day 98. The 90-day horizon hides all of a."""
    day = np.datetime64("2026-01-01", "D")
    offsets = np.array([56, 68, 84, 98, 56, 68, 84, 98])
    cutoffs = (day + offsets.astype("timedelta64[D]")).astype("datetime64[ns]")
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    fold = cutoffs[3]
    assert fold_training_rows(cutoffs, groups, fold, 0, 30).tolist() == [True, True, False, False,
                                                                         True, True, True, False]
    assert fold_training_rows(cutoffs, groups, fold, 0, 90).tolist() == [False, False, False, False,
                                                                         True, True, True, False]
    assert fold_training_rows(cutoffs, groups, fold, 1, 30).tolist() == [True, True, True, False,
                                                                         True, True, False, False]
    single = np.zeros(8, dtype=np.int64)   # one group: only outcomes that had ended, for every customer
    assert fold_training_rows(cutoffs, single, fold, 0, 30).tolist() == [True, True, False, False,
                                                                         True, True, False, False]


def test_customer_groups_are_fixed_per_customer_and_balanced() -> None:
    ids = pd.Series([f"C{i:05d}" for i in range(4000)] + ["C00001", "C00002"])
    groups = customer_groups(ids, 4)
    assert groups[4000] == groups[1] and groups[4001] == groups[2]
    assert groups.tolist() == customer_groups(ids.copy(), 4).tolist()           # the same on every run
    counts = np.bincount(groups[:4000], minlength=4)
    assert counts.min() > 850 and counts.max() < 1150
    assert set(customer_groups(ids, 1).tolist()) == {0}
