"""retrain_models' registry table: every decision a row the warehouse shows, a re-run of a day replaces it."""
from __future__ import annotations

import json
from datetime import date

import duckdb

from pipelines import lake
from pipelines.config import Paths
from pipelines import forecast, registry
from pipelines.retrain import record, retrain_forecast
from pipelines.schemas import table_schema


def test_a_decision_is_a_row_of_the_registry_table(tmp_path):
    paths = Paths(tmp_path)
    decision = {"family": "policy", "challenger_version": "policy-x", "champion_version": "catalogue",
                "promoted": True, "promoted_version": "policy-x", "metric": "dr value per decision",
                "challenger_score": 1.5, "challenger_ci_low": 0.9, "challenger_ci_high": 2.1, "champion_score": 0.4,
                "n_samples": 5000, "reason": "dr lower bound 0.900 beats the champion's estimate 0.400",
                "details": {"challenger": {"dr": {"estimate": 1.5}}}}
    record(paths, date(2026, 12, 3), decision)
    record(paths, date(2026, 12, 3), {**decision, "reason": "again"})            # the same day again: replaced
    record(paths, date(2026, 12, 3), {"family": "cash_forecast", "promoted": False, "reason": "worse",
                                      "challenger_score": float("nan")})
    rows = duckdb.connect().execute(f"select * from {lake.scan_sql(paths, 'gold', 'model_registry')} "
                                    f"order by family").df()
    assert list(rows["family"]) == ["cash_forecast", "policy"]
    policy = rows[rows["family"] == "policy"].iloc[0]
    assert policy["reason"] == "again" and policy["promoted"] and policy["challenger_ci_low"] == 0.9
    assert json.loads(policy["details"])["challenger"]["dr"]["estimate"] == 1.5
    assert rows[rows["family"] == "cash_forecast"]["challenger_score"].isna().all()
    documented = table_schema("gold", "model_registry")
    assert set(documented.data_column_names) <= set(rows.columns)


def test_the_forecast_decision_records_both_scores_of_the_same_comparison(tmp_path, monkeypatch):
    """The challenger's and the champion's scores in the registry are the two numbers the promotion compared (the
    mean Brier over the horizons on the held-out cut-off), not two different measures."""
    paths = Paths(tmp_path)
    versions = iter(["global-old", "global-new"])
    monkeypatch.setattr(registry, "promoted_version", lambda paths, family: next(versions))
    monkeypatch.setattr(forecast, "train", lambda paths, day: {
        "version": "global-new", "promoted": True, "challenger_score": 0.0412, "champion_score": 0.0437,
        "reason": "mean Brier 0.0412 <= 0.0437 of global-old on the held-out cut-off", "n_rows": 900,
        "held_out": {"30": {"brier": 0.031}, "60": {"brier": 0.042}, "90": {"brier": 0.0506}}})
    decision = retrain_forecast(paths, date(2026, 12, 3))
    assert (decision["challenger_score"], decision["champion_score"]) == (0.0412, 0.0437)
    assert decision["promoted"] and decision["promoted_version"] == "global-new"
    assert "mean Brier" in decision["metric"]
