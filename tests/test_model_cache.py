"""The per-process cache of loaded models (pipelines.registry.load_cached): a worker running several shards of a
night loads a version once, and a replaced or newly promoted version is never served stale (the closed loop's
retraining promotes new versions between nights)."""
from __future__ import annotations

import json
import os
import time

import pytest

from models.baseline_engine import BaselineEngine
from pipelines import forecast, registry
from pipelines.config import Paths
from pipelines.errors import SegoneError


@pytest.fixture(autouse=True)
def _empty_cache():
    registry.clear_loaded()
    yield
    registry.clear_loaded()


def _save(paths: Paths, family: str, version: str, text: str) -> None:
    registry.save_version(paths, family, version, lambda d: (d / "model.txt").write_text(text), {"note": text})


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, directory):
        self.calls += 1
        return {"text": (directory / "model.txt").read_text(), "call": self.calls}


def test_a_version_is_loaded_once_while_its_files_stand(tmp_path):
    paths = Paths(tmp_path)
    _save(paths, "fam", "v1", "one")
    load = Counting()
    first = registry.load_cached(registry.family_dir(paths, "fam") / "v1", "kind", load)
    again = registry.load_cached(registry.family_dir(paths, "fam") / "v1", "kind", load)
    assert again is first and load.calls == 1
    other_kind = registry.load_cached(registry.family_dir(paths, "fam") / "v1", "other", load)
    assert other_kind is not first and load.calls == 2


def test_a_version_saved_again_under_its_name_is_reloaded(tmp_path):
    paths = Paths(tmp_path)
    _save(paths, "fam", "v1", "one")
    load = Counting()
    directory = registry.family_dir(paths, "fam") / "v1"
    assert registry.load_cached(directory, "kind", load)["text"] == "one"
    _save(paths, "fam", "v1", "two")  # a new folder renamed into place
    assert registry.load_cached(directory, "kind", load)["text"] == "two"
    assert load.calls == 2


def test_a_file_rewritten_in_place_is_reloaded(tmp_path):
    paths = Paths(tmp_path)
    _save(paths, "fam", "v1", "one")
    load = Counting()
    directory = registry.family_dir(paths, "fam") / "v1"
    registry.load_cached(directory, "kind", load)
    (directory / "model.txt").write_text("uno")  # same size: the modification time tells
    stat = (directory / "model.txt").stat()
    os.utime(directory / "model.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert registry.load_cached(directory, "kind", load)["text"] == "uno"
    (directory / "extra.txt").write_text("x")  # a file added
    registry.load_cached(directory, "kind", load)
    assert load.calls == 3


def test_a_failed_load_is_not_cached_and_a_removed_version_is_refused(tmp_path):
    paths = Paths(tmp_path)
    _save(paths, "fam", "v1", "one")
    directory = registry.family_dir(paths, "fam") / "v1"

    def broken(_):
        raise ValueError("unreadable")

    with pytest.raises(ValueError):
        registry.load_cached(directory, "kind", broken)
    assert registry.load_cached(directory, "kind", Counting())["text"] == "one"
    for file in directory.iterdir():
        file.unlink()
    directory.rmdir()
    with pytest.raises(FileNotFoundError):
        registry.load_cached(directory, "kind", Counting())


def test_one_model_per_family_is_kept(tmp_path):
    paths = Paths(tmp_path)
    for version in ("v1", "v2", "v3"):
        _save(paths, "fam", version, version)
        registry.load_cached(registry.family_dir(paths, "fam") / version, "kind", Counting())
    assert len(registry._LOADED) == 1


def _baseline(paths: Paths, version: str, horizons: tuple[int, ...]) -> None:
    registry.save_version(paths, forecast.FAMILY, version, BaselineEngine(horizons).save,
                          {"engine": forecast.BASELINE})


def test_the_forecast_engine_follows_promotion(tmp_path):
    """The night's load_engine: the same object for every shard of a night, the new one as soon as another version
    is promoted (or the promoted one is re-saved), and a refusal when its files become unreadable."""
    paths = Paths(tmp_path)
    _baseline(paths, "baseline-a", (7, 30))
    registry.promote(paths, forecast.FAMILY, "baseline-a", "first")
    first = forecast.load_engine(paths)
    assert forecast.load_engine(paths) is first and first.version == "baseline-a" and first.horizons == (7, 30)
    _baseline(paths, "baseline-b", (30,))
    assert forecast.load_engine(paths) is first  # saved, not promoted: the night still reads a
    registry.promote(paths, forecast.FAMILY, "baseline-b", "better")
    second = forecast.load_engine(paths)
    assert second.version == "baseline-b" and second.horizons == (30,)
    _baseline(paths, "baseline-b", (7, 30, 90))  # retrained under the same name
    time.sleep(0.01)
    assert forecast.load_engine(paths).horizons == (7, 30, 90)
    directory, _ = registry.promoted(paths, forecast.FAMILY)
    meta = json.loads((directory / "engine.json").read_text())
    (directory / "engine.json").write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(SegoneError, match="cannot be loaded"):
        forecast.load_engine(paths)


def test_the_drivers_build_each_booster_attributor_once(monkeypatch):
    """forecast.drivers keeps a booster's attributor with the engine: a second bucket scored by the same (cached)
    engine reuses it, and gives the same drivers as a fresh engine does."""
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    import models.attribution as attribution

    rng = np.random.default_rng(0)
    names = ["f0", "f1", "f2"]
    X = rng.normal(size=(400, 3))
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1,
                         "min_child_samples": 10}, lgb.Dataset(X, (X[:, 0] + X[:, 1] > 0).astype(int)), 10)

    class Engine:
        feature_names = names

        def __init__(self):
            self.attributors = {}

        def classifier_rows(self, h, customer_ids):
            return [(booster, np.ones(len(customer_ids), dtype=bool))]

    built = []
    real = attribution.PathAttributor
    monkeypatch.setattr(attribution, "PathAttributor", lambda b: built.append(b) or real(b))
    inputs = pd.DataFrame({"customer_id": [f"c{i}" for i in range(20)], "cutoff": pd.Timestamp("2026-11-20"),
                           **{n: X[:20, i] for i, n in enumerate(names)}})
    rows = pd.DataFrame({"customer_id": inputs["customer_id"], "cutoff": inputs["cutoff"], "horizon_days": 30,
                         "p_shortfall": np.linspace(0, 1, 20)})
    engine = Engine()
    first = forecast.drivers(engine, inputs, rows, threshold=0.3)
    second = forecast.drivers(engine, inputs, rows, threshold=0.3)
    assert len(built) == 1
    pd.testing.assert_series_equal(first, second)
    pd.testing.assert_series_equal(first, forecast.drivers(Engine(), inputs, rows, threshold=0.3))
    assert len(built) == 2 and (first != "no elevated risk of a shortfall").sum() == 14


def test_the_policy_scorer_follows_its_files(tmp_path, monkeypatch):
    """The learned policy's scorer is cached like the other models (by its version's files, not by its name alone):
    the same object for every shard of a night, loaded again when the version is saved again under its name, a
    refusal once its files are gone."""
    from models import policy_model
    from pipelines import policy

    loads = []

    def fake_load(directory):
        loads.append((directory / "model.txt").read_text())
        return loads[-1]

    monkeypatch.setattr(policy_model.PolicyModel, "load", staticmethod(fake_load))
    paths = Paths(tmp_path)
    _save(paths, policy.FAMILY, "p1", "one")
    registry.promote(paths, policy.FAMILY, "p1", "first")
    first = policy.promoted_scorer(paths)
    assert policy.promoted_scorer(paths) is first and first.model == "one" and first.version == "p1"
    _save(paths, policy.FAMILY, "p1", "two")  # retrained under the same name: never served stale
    assert policy.promoted_scorer(paths).model == "two" and loads == ["one", "two"]
    assert policy.load_scorer(paths, policy.CATALOGUE) is None
    with pytest.raises(SegoneError, match="cannot be loaded"):
        policy.load_scorer(paths, "missing")
