"""A real bank end to end: Berka -> landing (the history and its last complete day as a night) -> bronze -> silver
-> training (the forecaster on Berka, the life events on their rules: Berka declares none) -> the night of
1994-10-30 (forecast, life events, decisions, CRM export, report) -> warehouse."""
from __future__ import annotations

import json
from datetime import date

import pytest

from pipelines import life_events as le
from pipelines.sources.berka import import_berka_command
from pipelines.stages import load_history, run_night, train
from pipelines.warehouse import connect as connect_warehouse
from tests.bank_settings import write_overlay

NIGHT = date(1994, 10, 30)


@pytest.fixture(scope="module")
def berka_lake(tmp_path_factory, reference):
    from pipelines.config import Paths

    home = tmp_path_factory.mktemp("berka") / "segone"
    # Four customer buckets instead of 16 (a SEGONE_SETTINGS overlay): the same stages on four shards of about 1,100
    # accounts each, a quarter of the shards' start-up cost. Training on cut-offs four weeks apart (not two) with
    # two customer groups per calibration cut-off (not four): the same code paths at a quarter of the training's
    # cost (227 -> 55 CPU-seconds); the figures of the shipped settings on Berka are docs/backtests.md's.
    # The light intent model of the test banks (tests/bank_settings.py) too.
    overlay = write_overlay(home.parent / "settings.yaml", {
        "segone": {"lake": {"n_buckets": 4}},
        "forecast": {"calibration_groups": 2, "training": {"cutoff_step_days": 28}}})
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_HOME", str(home))
    mp.setenv("SEGONE_SETTINGS", str(overlay))
    paths = Paths(home)
    imported = import_berka_command(paths, reference / "berka")
    history = load_history(paths)
    trained = train(paths)
    night = run_night(paths, NIGHT)
    yield paths, imported, history, trained, night
    mp.undo()


def test_every_berka_posting_reaches_silver(berka_lake):
    paths, imported, metrics, _, night = berka_lake
    assert imported["night"]["day"] == NIGHT.isoformat()
    assert metrics["conform"]["as_of"] == "1994-10-29"          # the history ends the day before the night
    ingest = metrics["ingest"]["kinds"]
    n_night = night["ingest"]["kinds"]["transactions"]["rows_accepted"]
    assert n_night == imported["night"]["rows"]["transactions.csv"] > 0
    assert ingest["transactions"]["rows_read"] == ingest["transactions"]["rows_accepted"] == 98_845 - n_night
    assert metrics["conform"]["tables"]["transactions"]["rows"] + night["conform"]["tables"]["transactions"][
        "rows"] == 98_845
    assert metrics["conform"]["quarantined"] == 0 and night["conform"]["quarantined"] == 0
    assert all(g["passed"] for g in metrics["validate"]["gates"])
    assert all(g["passed"] for g in night["validate"]["gates"])


def test_real_shortfalls_survive_with_their_sign(berka_lake):
    paths, *_ = berka_lake
    con = connect_warehouse(paths.warehouse)
    negative = con.execute("select count(*), count(distinct account_id) from balances where balance < 0").fetchall()
    assert negative == [(93, 44)]  # the negative end-of-day balances of the import (docs/berka.md)
    signs = con.execute("select channel, max(amount) > 0, min(amount) < 0 from transactions "
                        "where channel in ('atm', 'interest', 'fee') group by 1 order by 1").fetchall()
    assert signs == [("atm", False, True), ("fee", False, True), ("interest", True, False)]
    currencies = con.execute("select distinct currency from transactions").fetchall()
    assert currencies == [("CZK",)]
    assert con.execute("select min(booking_date), max(booking_date) from transactions").fetchall() == [
        (date(1993, 1, 1), NIGHT)]


def test_the_berka_night_trains_decides_exports_and_reports(berka_lake):
    paths, _, _, trained, night = berka_lake
    forecast = trained["cash_forecast"]
    assert forecast["promoted"] and forecast["engine_reason"]   # the global engine or the baseline, and why
    assert forecast["comparison"]["baseline"]["mean_brier"] >= 0
    life = trained["life_events"]
    assert sorted(life["on_rule"]) == sorted(life["decisions"])
    assert {d["reason"] for d in life["decisions"].values()} == {"no declared life events (labels) to learn from"}
    d = NIGHT.isoformat()
    con = connect_warehouse(paths.warehouse)
    versions = con.execute(f"select distinct model_version from cash_forecast where as_of = '{d}'").fetchall()
    assert versions == [(forecast["version"],)]
    n_forecast = con.execute(f"select count(distinct customer_id) from cash_forecast where as_of = '{d}'").fetchall()
    assert n_forecast[0][0] > 1000
    life_rows = con.execute(f"""select count(*), count(probability), count(*) filter (where model_version <>
                                'rule:' || event_type || ':v{le.settings()["version"]}') from life_events
                                where as_of = '{d}'""").fetchall()
    assert life_rows[0][0] > 0 and life_rows[0][1:] == (0, 0)
    assert night["validate_decisions"]["validation"]["passed"]
    n_actions = con.execute(f"select count(*) from next_best_actions where as_of = '{d}'").fetchall()[0][0]
    manifest = json.loads((paths.exports / "crm" / d / "manifest.json").read_text())
    assert manifest["rows"] == n_actions > 0 and manifest["as_of"] == d
    assert (paths.reports / d / "index.html").exists()
