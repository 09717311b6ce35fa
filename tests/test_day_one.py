"""DESIGN principle 6, "works from day one": a bank with the contract's default history (180 days), or a shorter one,
trains (each model falling back to its documented rule or baseline where it must, and saying so) and runs its
night to the CRM export; the life-event backtest names the events it cannot evaluate instead of failing."""
from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from pipelines import lake
from pipelines import life_events as le
from pipelines.config import Paths
from tests.bank_settings import write_overlay

D = date(2026, 11, 20)


def night_bank(tmp_path_factory, name: str, days: int, customers: int):
    from pipelines.sources.simulate import simulate_command
    from pipelines.stages import load_history, run_night, train

    home = tmp_path_factory.mktemp(name) / "segone"
    home.mkdir()
    # Four customer buckets instead of 16 (a SEGONE_SETTINGS overlay): a bank of 80 or 120 customers in 16 shards
    # spends most of each sharded stage starting its shards. And the light intent model of the test banks
    # (tests/bank_settings.py).
    overlay = write_overlay(home.parent / "settings.yaml", {"segone": {"lake": {"n_buckets": 4}}})
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_HOME", str(home))
    mp.setenv("SEGONE_SETTINGS", str(overlay))
    paths = Paths(home)
    simulate_command(paths, customers=customers, days=days, end_date=D, seed=3, fmt="csv")
    load_history(paths)
    trained = train(paths)
    night = run_night(paths, D)
    return mp, paths, trained, night


@pytest.fixture(scope="module")
def bank180(tmp_path_factory):
    mp, *rest = night_bank(tmp_path_factory, "day_one_180", 180, 120)
    yield rest
    mp.undo()


@pytest.fixture(scope="module")
def bank60(tmp_path_factory):
    mp, *rest = night_bank(tmp_path_factory, "day_one_60", 60, 80)
    yield rest
    mp.undo()


def gold(paths: Paths, table: str) -> "duckdb.DuckDBPyRelation":
    folder = lake.partition_path(paths, "gold", table, as_of=D.isoformat())
    return duckdb.sql(f"select * from read_parquet('{folder}/**/*.parquet')").df()


def exported(paths: Paths) -> dict:
    manifest = json.loads((paths.exports / "crm" / D.isoformat() / "manifest.json").read_text())
    assert manifest["as_of"] == D.isoformat() and manifest["rows"] > 0
    assert (paths.reports / D.isoformat() / "index.html").exists()
    return manifest


def test_a_180_day_bank_trains_with_its_rules_and_runs_its_night(bank180):
    paths, trained, night = bank180
    life = trained["life_events"]
    assert sorted(life["on_rule"]) == sorted(life["decisions"]) and not life["on_model"]
    assert all("too little history" in d["reason"] for d in life["decisions"].values())
    forecast = trained["cash_forecast"]
    assert forecast["engine"] in ("global", "baseline") and forecast["engine_reason"]
    assert forecast["version"].startswith(forecast["engine"] + "-")
    exported(paths)
    rows = gold(paths, "life_events")
    assert len(rows) and rows["model_version"].str.fullmatch(r"rule:[a-z_]+:v\d+").all()
    assert (rows["model_version"] == "rule:" + rows["event_type"] + f":v{le.settings()['version']}").all()
    assert rows["probability"].isna().all()                       # never 0.00 for everyone: no probability
    evidence = rows["evidence"].map(json.loads)
    assert (evidence.map(lambda e: e["method"]) == "rule").all()
    assert evidence.map(lambda e: "too little history" in e["note"]).all()
    flagged = rows[rows["flagged"]]
    assert len(flagged), "the rules flag someone in a bank of this size"
    for item in evidence[rows["flagged"]]:
        assert item["top_features"] and item["transaction_ids"]
    assert night["validate_life_events"]["validation"]["passed"]
    # plans on day one: the safety rule checked on every row of the night
    safety = night["validate_plans"]["safety"]
    assert night["validate_plans"]["validation"]["passed"] and safety["n_violations"] == 0
    assert safety["n_rows_checked"] == len(gold(paths, "plans"))


def test_a_60_day_bank_forecasts_with_the_baseline_and_says_so(bank60):
    paths, trained, night = bank60
    forecast = trained["cash_forecast"]
    assert forecast["engine"] == "baseline" and "too little history" in forecast["engine_reason"]
    assert forecast["promoted"]
    exported(paths)
    rows = gold(paths, "cash_forecast")
    assert len(rows) and (rows["model_version"] == forecast["version"]).all()
    assert rows["model_version"].str.startswith("baseline-").all()
    risky = rows[rows["p_shortfall"] >= 0.2]
    assert len(risky) and not risky["drivers"].str.contains("no elevated risk").any()
    assert night["validate_forecast"]["validation"]["passed"]
    assert set(gold(paths, "life_events")["model_version"].str.slice(0, 5)) == {"rule:"}


def test_the_life_event_backtest_names_the_events_it_cannot_evaluate(bank180):
    from pipelines.life_events import backtest_life_events_command

    paths, _, _ = bank180
    text = backtest_life_events_command(paths)
    assert "buying_home: skipped" in text and "no event could be evaluated" in text
    written = json.loads((paths.reports / "backtest" / "life_events_backtest.json").read_text())
    assert set(written["meta"]["skipped"]) >= {"buying_home", "new_baby", "marriage"}
    assert (paths.reports / "backtest" / "life_events.html").exists()
