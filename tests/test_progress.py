"""Progress of `segone run` (issue 15, item 9): stages and shards, from the run metrics the stages write."""
from __future__ import annotations

import io
import logging
from datetime import date

import pytest
import yaml

from pipelines import progress, stages
from pipelines.runs import write_run_metrics

D = date(2026, 11, 20)


@pytest.fixture
def fake_night(monkeypatch, paths):
    """Three stages: a plain one, one with three shards (and a stray metrics file of another family), a failing
    one."""
    def plain(paths, day):
        write_run_metrics(paths, day.isoformat(), "ingest", {"ok": 1})
        return "ingested"

    def sharded(paths, day):
        for bucket in range(3):
            write_run_metrics(paths, day.isoformat(), f"decide_bucket_{bucket}", {"bucket": bucket})
        write_run_metrics(paths, day.isoformat(), "decide_bucket_1", {"again": True})  # a retried shard counts once
        write_run_metrics(paths, day.isoformat(), "forecast_cash_shortfall_bucket_7", {})  # not this stage's
        logging.getLogger("pipelines.quality").info("an info line the terminal does not need")
        logging.getLogger("pipelines.quality").warning("a warning the operator must see")
        return "decided"

    monkeypatch.setattr(stages, "NIGHT", (("ingest", plain), ("decide_next_best_actions", sharded)))
    return [progress.Step("ingest"), progress.Step("decide_next_best_actions", "decide_bucket_", 3)]


def test_plain_progress_logs_one_line_per_stage_with_its_shards(fake_night, paths, monkeypatch, caplog):
    monkeypatch.setenv("SEGONE_PROGRESS", "plain")
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    with progress.following("night of 2026-11-20", fake_night) as shown:
        results = stages.run_night(paths, D, shown)
    assert results == {"ingest": "ingested", "decide_next_best_actions": "decided"}
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    assert len(lines) == 2
    assert lines[0].startswith("night of 2026-11-20: [1/2] ingest done in ")
    assert lines[1].startswith("night of 2026-11-20: [2/2] decide_next_best_actions done in ")
    assert lines[1].endswith(", 3 of 3 shards")
    assert progress._listeners == []  # nothing listens once the command is over


def test_rich_progress_shows_stages_and_warnings_but_not_info_logs(fake_night, paths, monkeypatch):
    monkeypatch.setenv("SEGONE_PROGRESS", "rich")
    stream = io.StringIO()
    root = logging.getLogger()
    terminal = logging.StreamHandler(stream)
    root.addHandler(terminal)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with progress.following("night of 2026-11-20", fake_night, stream=stream) as shown:
            stages.run_night(paths, D, shown)
            assert terminal not in root.handlers  # swapped for the display's handler meanwhile
        assert terminal in root.handlers
    finally:
        root.removeHandler(terminal)
        root.setLevel(level)
    out = stream.getvalue()
    assert "[1/2] ingest done in" in out
    assert "[2/2] decide_next_best_actions done in" in out and "3 of 3 shards" in out
    assert "a warning the operator must see" in out
    assert "an info line the terminal does not need" not in out


def test_a_failing_stage_stops_the_night_and_the_display(fake_night, paths, monkeypatch, caplog):
    monkeypatch.setenv("SEGONE_PROGRESS", "plain")

    def broken(paths, day):
        raise RuntimeError("gate failed")

    monkeypatch.setattr(stages, "NIGHT", (stages.NIGHT[0], ("decide_next_best_actions", broken)))
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    with pytest.raises(RuntimeError, match="gate failed"):
        with progress.following("night", fake_night) as shown:
            stages.run_night(paths, D, shown)
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    assert len(lines) == 1 and lines[0].startswith("night: [1/2] ingest done in ")  # the failed stage is not "done"
    assert progress._listeners == []


def test_off_and_the_nights_real_steps(paths, monkeypatch):
    monkeypatch.setenv("SEGONE_PROGRESS", "off")
    with progress.following("night", []) as shown:
        assert shown is None
    steps = stages.night_steps(paths, D)
    assert [s.name for s in steps] == [name for name, _ in stages.NIGHT]
    sharded = {s.name: s for s in steps if s.shards}
    assert set(sharded) == {"update_features", "understand_messages", "profile_customers",
                            "forecast_cash_shortfall", "forecast_events", "classify_life_events", "make_plans",
                            "decide_next_best_actions"}
    assert sharded["profile_customers"].shard_prefix == "profiles_bucket_"
    assert sharded["update_features"].shard_prefix == "update_features_bucket_"
    assert {s.shards for s in sharded.values()} == {len(stages.forecast_shards(paths, D))}
    assert sharded["forecast_cash_shortfall"].shard_prefix == "forecast_cash_shortfall_bucket_"
    assert sharded["forecast_events"].shard_prefix == "forecast_events_bucket_"


def test_the_history_load_shows_its_steps(paths, monkeypatch, caplog):
    """load-history reports each of its steps (a tiny simulated history, in two customer buckets instead of 16: the
    steps are the subject, not 16 store builds of a few customers each)."""
    from pipelines.sources.simulate import simulate

    overlay = paths.home.parent / "settings.yaml"
    overlay.write_text(yaml.safe_dump({"segone": {"lake": {"n_buckets": 2}}}), encoding="utf-8")
    monkeypatch.setenv("SEGONE_SETTINGS", str(overlay))
    simulate(paths, customers=30, days=40, seed=3, fmt="csv")
    monkeypatch.setenv("SEGONE_PROGRESS", "plain")
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    out = stages.load_history_command(paths)
    assert out["silver_rows"]["transactions"] > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    assert [line.split("] ")[1].split(" done")[0] for line in lines] == list(stages.HISTORY_STEPS)
    assert all(line.startswith("history load: [") for line in lines)
