"""`segone closed-loop` end to end on a tiny bank: simulate, load, train, nights with customers who answer, a
retraining recorded in the registry, the value measured, the JSON with its keys and the page beside it.
(Two customer buckets instead of sixteen and a one-day value horizon (a SEGONE_SETTINGS overlay), 100 days of
history, two nights with a retraining after the first keep it to about a minute.)"""
from __future__ import annotations

import json
from datetime import date

import duckdb
import yaml
import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.retrain import FAMILIES
from tests.bank_settings import write_overlay

NIGHT_KEYS = {"date", "treated_value_per_customer", "control_value_per_customer", "acceptance_rate",
              "policy_version"}
SUMMARY_KEYS = {"uplift_per_customer", "uplift_ci_low", "uplift_ci_high", "first_week_value", "last_week_value",
                "ope", "promotions", "breaches"}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from pipelines.evaluation import closed_loop

    home = tmp_path_factory.mktemp("loop")
    # seen by the shard worker processes too; with the light intent model of the test banks (tests/bank_settings.py)
    overlay = write_overlay(home.parent / "settings.yaml", {"segone": {"lake": {"n_buckets": 2}},
                                                            "rewards": {"horizon_days": 1}})
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_SETTINGS", str(overlay))
    paths = Paths(home)
    try:
        # two worker processes: the night's shards run in parallel, as the DAG's mapped tasks
        summary = closed_loop.closed_loop(paths, customers=150, nights=2, seed=3, days=100,
                                          end_date=date(2026, 11, 20), every=1, workers=2)
    finally:
        mp.undo()
    return paths, summary


@pytest.mark.slow
def test_the_loop_writes_its_report_with_every_key(loop):
    paths, summary = loop
    out = paths.reports / "closed_loop"
    doc = json.loads((out / "closed_loop.json").read_text())
    assert set(doc) >= {"nights", "summary"}
    assert [n["date"] for n in doc["nights"]] == ["2026-11-20", "2026-11-21"]
    assert all(NIGHT_KEYS <= set(n) for n in doc["nights"])
    assert SUMMARY_KEYS <= set(doc["summary"])
    assert doc["summary"]["breaches"] == 0
    assert (out / "closed_loop.html").read_text().startswith("<!DOCTYPE html>")
    assert all(n["acceptance_rate"] is not None and n["treated_value_per_customer"] is not None
               for n in doc["nights"])


@pytest.mark.slow
def test_the_customers_answers_reach_the_lake_and_are_valued(loop):
    paths, _ = loop
    con = duckdb.connect()
    responses = con.execute(f"select event, count(*) from {lake.scan_sql(paths, 'silver', 'crm_responses')} "
                            f"group by all").fetchall()
    events = dict(responses)
    assert events["delivered"] > 100 and events.get("opened", 0) > 0
    values = con.execute(f"select count(*), count(*) filter (where matured), count(*) filter (where accepted) "
                         f"from {lake.scan_sql(paths, 'gold', 'realised_value')}").fetchall()[0]
    assert values[0] > 0 and values[1] == values[0]         # the tail measured every window
    log = con.execute(f"select count(*), min(logging_probability), max(logging_probability) "
                      f"from {lake.scan_sql(paths, 'gold', 'bandit_log')}").fetchall()[0]
    assert log[0] > 0 and 0 < log[1] <= log[2] <= 1
    # the retraining after the first night: one decision per family in the registry
    registry = con.execute(f"select family, promoted, reason from {lake.scan_sql(paths, 'gold', 'model_registry')}"
                           ).df()
    assert set(registry["family"]) == set(FAMILIES)  # pipelines.retrain: every family retrained
    policy = registry[registry["family"] == "policy"].iloc[0]
    assert not policy["promoted"] and "not enough data" in policy["reason"]
    summary = con.execute(f"select arm, n_customers from {lake.scan_sql(paths, 'gold', 'value_summary')} "
                          f"where as_of = (select max(as_of) from {lake.scan_sql(paths, 'gold', 'value_summary')}) "
                          f"and action_class = 'all'").fetchall()
    arms = dict(summary)
    assert arms["treated"] > 100 and arms["control"] >= 1


@pytest.mark.slow
def test_the_report_is_rebuilt_from_the_lake_and_compared(loop, tmp_path):
    from pipelines.evaluation.closed_loop import rebuild

    paths, summary = loop
    other = tmp_path / "other.json"
    other.write_text(json.dumps(summary, default=str))
    again = rebuild(paths, compare_with=other)
    assert again["nights"] == json.loads(json.dumps(summary["nights"], default=str))
    assert again["summary"]["uplift_per_customer"] == summary["summary"]["uplift_per_customer"]
    comparison = again["summary"]["comparison"]
    assert comparison["relative_gain"] == 0.0 and comparison["same_customers_and_seed"]
    assert [n["treated_value_per_customer_other"] for n in comparison["nights"]] == \
        [n["treated_value_per_customer"] for n in again["nights"]]
    assert "Both runs" in (paths.reports / "closed_loop" / "closed_loop.html").read_text()
    assert {r["family"] for r in again["summary"]["retrain_decisions"]} == set(FAMILIES)
    # a copy of a report holds no values per customer: said, not guessed
    assert comparison["paired"]["available"] is False and "home" in comparison["paired"]["reason"]


@pytest.mark.slow
def test_two_homes_are_compared_customer_by_customer(loop):
    from datetime import timedelta

    from markupsafe import escape

    from pipelines.evaluation.closed_loop import customer_values, rebuild

    paths, summary = loop
    nights = [date(2026, 11, 20) + timedelta(days=k) for k in range(2)]
    values = customer_values(paths, nights)
    # the numerator of each night's value per treated customer, customer by customer
    assert values["customer_id"].is_unique and len(values) >= max(n["treated_customers"] for n in summary["nights"])
    assert values["value"].sum() == pytest.approx(sum(n["treated_value_per_customer"] * n["treated_customers"]
                                                      for n in summary["nights"]), abs=1e-3)
    again = rebuild(paths, compare_with=paths.home)          # the home itself: the same customers, the same value
    p = again["summary"]["comparison"]["paired"]
    assert p["available"] and p["nights"] == ["2026-11-20", "2026-11-21"] and p["n_nights"] == 2
    assert p["n_customers"] == p["n_in_both"] == p["n_identical"] == len(values)
    assert p["n_only_this"] == p["n_only_other"] == 0
    assert p["mean_difference"] == 0.0 and p["t_ci_low"] == p["t_ci_high"] == 0.0
    assert not p["target_shown"]
    page = (paths.reports / "closed_loop" / "closed_loop.html").read_text()
    assert "Customer by customer (paired)" in page and str(escape(p["verdict"])) in page     # autoescaped


@pytest.mark.slow
def test_the_home_keeps_the_buckets_it_was_built_with(loop):
    paths, summary = loop
    assert summary["run"]["buckets"] == 2                     # the caller's overlay chose them
    overlay = yaml.safe_load((paths.home / "closed_loop_settings.yaml").read_text())
    assert overlay["segone"]["lake"]["n_buckets"] == 2 and overlay["rewards"]["horizon_days"] == 1
    con = duckdb.connect()
    buckets = {b for (b,) in con.execute(f"select distinct bucket from {lake.scan_sql(paths, 'silver', 'transactions')}"
                                         ).fetchall()}
    assert buckets == {0, 1}


def test_the_loop_sizes_its_buckets_to_its_bank():
    from pipelines.evaluation.closed_loop import loop_buckets

    assert loop_buckets(3000, 2, 1000, 16) == 4               # three wanted, rounded up to the two workers
    assert loop_buckets(3000, 1, 1000, 16) == 3
    assert loop_buckets(150, 2, 1000, 16) == 2
    assert loop_buckets(100_000, 2, 1000, 16) == 16           # never more than a bank's lake has
    assert loop_buckets(1, 3, 1000, 16) == 3


def test_an_explicit_bucket_count_wins_and_the_callers_overlay_is_kept(tmp_path, monkeypatch):
    from pipelines.evaluation.closed_loop import _caller_overlay, _home_overlay

    caller = tmp_path / "caller.yaml"
    caller.write_text("rewards: {horizon_days: 3}\n")
    monkeypatch.setenv("SEGONE_SETTINGS", str(caller))
    paths = Paths(tmp_path / "home")
    paths.home.mkdir()
    path, buckets = _home_overlay(paths, _caller_overlay(), 3000, 2, None)
    assert buckets == 4
    assert yaml.safe_load(path.read_text()) == {"rewards": {"horizon_days": 3}, "segone": {"lake": {"n_buckets": 4}}}
    _, buckets = _home_overlay(paths, _caller_overlay(), 3000, 2, 6)
    assert buckets == 6
    bad = tmp_path / "bad.yaml"
    bad.write_text("segone: {lake: {n_bucket: 4}}\n")
    monkeypatch.setenv("SEGONE_SETTINGS", str(bad))
    with pytest.raises(Exception, match="n_bucket is not a setting"):
        _caller_overlay()


def test_a_command_in_a_loop_home_runs_with_the_loop_settings(tmp_path, monkeypatch):
    import os

    from pipelines.evaluation.closed_loop import adopt_home_settings

    monkeypatch.setenv("SEGONE_SETTINGS", "")                 # recorded, so teardown restores what was there
    monkeypatch.delenv("SEGONE_SETTINGS")
    paths = Paths(tmp_path)
    adopt_home_settings(paths)
    assert "SEGONE_SETTINGS" not in os.environ                # an ordinary home: nothing changes
    (tmp_path / "closed_loop_settings.yaml").write_text("segone: {lake: {n_buckets: 4}}\n")
    adopt_home_settings(paths)
    assert os.environ["SEGONE_SETTINGS"] == str(tmp_path / "closed_loop_settings.yaml")
    assert lake.n_buckets() == 4
    other = tmp_path / "mine.yaml"
    other.write_text("segone: {lake: {n_buckets: 8}}\n")
    monkeypatch.setenv("SEGONE_SETTINGS", str(other))
    adopt_home_settings(paths)                                 # the caller's own choice stands
    assert lake.n_buckets() == 8


def test_a_command_run_in_process_gives_the_callers_settings_back(tmp_path, monkeypatch):
    """The CLI adopts a loop home's settings for its own command only: a caller that embeds `main` (or the next test
    in this process) sees $SEGONE_SETTINGS as it was."""
    import os

    from pipelines.cli import main

    monkeypatch.setenv("SEGONE_SETTINGS", "")
    monkeypatch.delenv("SEGONE_SETTINGS")
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    (tmp_path / "closed_loop_settings.yaml").write_text("segone: {lake: {n_buckets: 4}}\n")
    assert main(["unlock"]) == 0
    assert "SEGONE_SETTINGS" not in os.environ
    assert lake.n_buckets() == 16


def test_the_other_run_is_found_by_its_home_or_its_report(tmp_path):
    from pipelines.errors import SegoneError
    from pipelines.evaluation.closed_loop import MARKER, other_report

    home = tmp_path / "off-home"
    report = home / "reports" / "closed_loop" / "closed_loop.json"
    report.parent.mkdir(parents=True)
    (home / "lake").mkdir()
    (home / MARKER).write_text("{}")
    report.write_text("{}")
    assert other_report(home) == (report, home.resolve())
    assert other_report(report) == (report, home.resolve())
    copy = tmp_path / "copy.json"
    copy.write_text("{}")
    assert other_report(copy) == (copy, None)                 # a copy: no lake to read the customers from
    with pytest.raises(SegoneError, match="no such report"):
        other_report(tmp_path / "nowhere")


def _loop_report(seed: int, n_nights: int = 1, **changes) -> dict:
    run = {"customers": 150, "nights": n_nights, "seed": seed, "learning": "on", "history_days": 100,
           "first_night": "2026-11-20", "value_horizon_days": 1, **changes}
    return {"run": run, "summary": {"promotions": []},
            "nights": [{"date": f"2026-11-{20 + k}", "treated_value_per_customer": 1.0, "acceptance_rate": 0.1,
                        "policy_version": "catalogue"} for k in range(n_nights)]}


def test_only_runs_of_one_world_are_compared_customer_by_customer(tmp_path):
    from pipelines.evaluation.closed_loop import MARKER, comparison, world_differences

    this_home, other_home = tmp_path / "on-home", tmp_path / "off-home"
    for home in (this_home, other_home):
        (home / "lake").mkdir(parents=True)
        (home / MARKER).write_text("{}")
    report = other_home / "reports" / "closed_loop" / "closed_loop.json"
    report.parent.mkdir(parents=True)
    this = _loop_report(seed=42)
    nights = [date(2026, 11, 20)]

    # another seed: other customers under the same ids; no verdict, and the reason names what differs
    report.write_text(json.dumps(_loop_report(seed=7, learning="off")))
    p = comparison(Paths(this_home), this, nights, other_home)["paired"]
    assert p["available"] is False and "seed 42/7" in p["reason"] and "verdict" not in p
    assert world_differences(this["run"], _loop_report(42, history_days=240)["run"]) == ["history_days 100/240"]
    assert world_differences(this["run"], {k: v for k, v in this["run"].items() if k != "first_night"}) == \
        ["first_night 2026-11-20/None"]

    # the same world, learning off: compared (two empty lakes here, so there is nobody to judge)
    report.write_text(json.dumps(_loop_report(seed=42, learning="off")))
    p = comparison(Paths(this_home), this, nights, other_home)["paired"]
    assert p["available"] is True and p["n_customers"] == 0 and p["verdict"].startswith("cannot be judged")


def test_the_paired_comparison_is_also_made_over_the_nights_after_the_policy_promotion(tmp_path, monkeypatch):
    import pandas as pd

    from pipelines.evaluation import closed_loop

    this_home, other_home = tmp_path / "on-home", tmp_path / "off-home"
    for home in (this_home, other_home):
        (home / "lake").mkdir(parents=True)
        (home / closed_loop.MARKER).write_text("{}")
    nights = [date(2026, 11, 20 + k) for k in range(4)]

    # each of 40 customers realises 1 + i/10 a night in both runs; the learned policy, from 11-22 on (promoted
    # after the night of 11-21), 0.5 more a night in this run
    def values(paths, part):
        learned = paths.home.resolve() == this_home.resolve()
        rows = [(f"C{i:03d}", sum(1 + i / 10 + (0.5 if learned and n > date(2026, 11, 21) else 0) for n in part))
                for i in range(40)]
        return pd.DataFrame(rows, columns=["customer_id", "value"])

    monkeypatch.setattr(closed_loop, "customer_values", values)
    report = other_home / "reports" / "closed_loop" / "closed_loop.json"
    report.parent.mkdir(parents=True)
    other = _loop_report(seed=42, n_nights=4, learning="off")
    report.write_text(json.dumps(other))
    this = _loop_report(seed=42, n_nights=4)
    this["summary"]["promotions"] = [{"date": "2026-11-21", "family": "policy"},
                                     {"date": "2026-11-20", "family": "cash_forecast"}]    # not a policy
    p = closed_loop.comparison(Paths(this_home), this, nights, other_home)["paired"]
    mean_other = sum(1 + i / 10 for i in range(40)) / 40
    assert p["nights"] == ["2026-11-20", "2026-11-23"] and p["mean_difference"] == pytest.approx(1.0)
    assert p["relative_gain"] == pytest.approx(1.0 / (4 * mean_other), abs=1e-6)          # diluted by 2 nights
    after = p["after_promotion"]
    assert after["since"] == "2026-11-21" and after["nights"] == ["2026-11-22", "2026-11-23"]
    assert after["n_nights"] == 2 and after["mean_difference"] == pytest.approx(1.0)
    assert after["relative_gain"] == pytest.approx(1.0 / (2 * mean_other), abs=1e-6)
    assert after["target_shown"] and after["verdict"].startswith("+10% shown")
    page = closed_loop.paired_section(p, {"this_run": "on", "other_run": "off"})
    assert "After the first policy promotion (2026-11-21)" in page["text"]
    assert list(page["table"].columns) == ["figure", "value", "after 2026-11-21"]

    # no learned policy promoted in either run: nothing after; promoted after the last night: said
    this["summary"]["promotions"] = []
    assert "after_promotion" not in closed_loop.comparison(Paths(this_home), this, nights, other_home)["paired"]
    other["summary"]["promotions"] = [{"date": "2026-11-23", "family": "policy"}]
    report.write_text(json.dumps(other))
    after = closed_loop.comparison(Paths(this_home), this, nights, other_home)["paired"]["after_promotion"]
    assert after["available"] is False and "2026-11-23" in after["reason"]
