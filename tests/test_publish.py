"""Only finished nights are visible (issue 12, item 6): the warehouse, the export and the report show what publish
made visible, never the live lake a running, crashed or gated night is writing; publish is refused without every
verdict; a publish killed after its commit is completed; leftovers of dead processes are removed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from pipelines.warehouse import connect as connect_warehouse
from pipelines import publish, stages
from pipelines.config import Paths
from pipelines.crm_export import read_export
from pipelines.errors import GateFailed, SegoneError
from pipelines.runs import read_run_metrics, write_run_metrics
from pipelines.schemas import tables
from tests.night_builder import CUSTOMERS, pass_gates, write_night
from pipelines.stages import GATES

N = len(GATES)  # every gate of the night

D0, D1, D2 = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)


def fingerprint(database) -> dict[str, tuple]:
    """Every view of a warehouse file: its row count and an order-independent hash of its rows."""
    con = connect_warehouse(database)
    try:
        names = [t.name for layer in ("silver", "gold") for t in tables(layer) if t.warehouse]
        return {n: con.execute(f"select count(*), coalesce(sum(hash(t)), 0) from {n} as t").fetchone() for n in names}
    finally:
        con.close()


def file_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published_night(paths: Paths, day: date, version: str) -> dict:
    write_night(paths, day, version)
    pass_gates(paths, day)
    return stages.publish(paths, day)


def test_a_night_the_stages_are_writing_is_not_visible(paths):
    published_night(paths, D0, "v1")
    before = fingerprint(paths.warehouse)
    restricted_before = fingerprint(paths.warehouse_restricted)
    report, export = paths.reports / D0.isoformat() / "index.html", paths.exports / "crm" / D0.isoformat()
    report_hash, manifest_hash = file_hash(report), file_hash(export / "manifest.json")
    # night D1 half written: its silver and half of its decision buckets, as a crash after conform would leave
    half = CUSTOMERS[: len(CUSTOMERS) // 2]
    write_night(paths, D1, "v2", tables=("customers", "transactions"))
    write_night(paths, D1, "v2", customers=half, tables=("next_best_actions", "decision_log"))
    assert fingerprint(paths.warehouse) == before
    assert fingerprint(paths.warehouse_restricted) == restricted_before
    con = connect_warehouse(paths.warehouse)
    for view, column in (("customers", "as_of"), ("transactions", "load_date"), ("next_best_actions", "as_of"),
                         ("decision_log", "as_of")):
        assert con.execute(f"select count(*) from {view} where {column} = '{D1}'").fetchone() == (0,), view
    con.close()
    # and a re-run of the published night D0 that rewrites its partitions and dies: D0 stays as published
    write_night(paths, D0, "v3")
    assert fingerprint(paths.warehouse) == before
    con = connect_warehouse(paths.warehouse)
    assert con.execute("select distinct region from customers").fetchall() == [("region v1",)]
    assert con.execute("select distinct explanation from next_best_actions").fetchall() == [("explained v1",)]
    con.close()
    assert file_hash(report) == report_hash and file_hash(export / "manifest.json") == manifest_hash
    assert not (paths.exports / "crm" / D1.isoformat()).exists() and not (paths.reports / D1.isoformat()).exists()


def test_publish_makes_exactly_its_night_visible_all_tables_at_once(paths):
    published_night(paths, D0, "v1")
    write_night(paths, D0, "v3")  # an unpublished re-run of D0 in the live lake
    published_night(paths, D1, "v2")
    con = connect_warehouse(paths.warehouse)
    for view, column in (("customers", "as_of"), ("transactions", "load_date"), ("next_best_actions", "as_of"),
                         ("decision_log", "as_of"), ("advisor_queue", "as_of"), ("quarantine", "load_date")):
        counts = dict(con.execute(f"select {column}, count(*) from {view} group by all").fetchall())
        assert set(counts) == {D0, D1}, view  # dates, not text
    # D1's publish shows D1 and leaves D0 as it was published (its unpublished re-run stays invisible)
    assert sorted(con.execute("select as_of, region from customers group by all").fetchall()) == [
        (D0, "region v1"), (D1, "region v2")]
    con.close()
    manifest, rows = read_export(paths.exports / "crm" / D1.isoformat())
    assert manifest["rows"] == len(CUSTOMERS) and {r["explanation"] for r in rows} == {"explained v2"}
    assert (paths.reports / D1.isoformat() / "index.html").exists()
    state = publish.read_state(paths)
    assert state["loads"] == [D0.isoformat(), D1.isoformat()] and state["pending"] == []
    assert read_run_metrics(paths, D1.isoformat(), "publish")["generation"] == state["generation"]


def test_publish_is_refused_unless_every_gate_of_the_night_passed(paths):
    write_night(paths, D0, "v1")
    pass_gates(paths, D0, gates=tuple(g for g in stages.GATES if g != "validate_decisions"))
    with pytest.raises(GateFailed, match="validate_decisions has no verdict"):
        stages.publish(paths, D0)
    write_run_metrics(paths, D0.isoformat(), "validate_decisions", {"validation": {"passed": False}})
    with pytest.raises(GateFailed, match="validate_decisions did not pass"):
        stages.publish(paths, D0)
    assert not paths.warehouse.exists() and not (paths.exports / "crm" / D0.isoformat()).exists()
    assert not (paths.reports / D0.isoformat()).exists() and publish.read_state(paths) is None


def test_a_stage_that_rewrites_the_night_voids_the_verdicts_after_it(paths):
    d = D0.isoformat()
    pass_gates(paths, D0)
    families = ("messages_bucket_", "forecast_cash_shortfall_bucket_", "life_events_bucket_", "decide_bucket_",
                "update_features_bucket_")
    for family in families:
        for bucket in range(3):
            write_run_metrics(paths, d, f"{family}{bucket}", {"n_customers": 1})
    write_run_metrics(paths, d, "validate_gold_cash_forecast_recurring_streams", {"passed": True})
    stages.void_later_results(paths, d, "life_events")
    left = {p.stem for p in (paths.runs / d).glob("*.json")}
    assert {"validate", "validate_silver", "validate_messages", "validate_forecast"} <= left
    assert not left & {"validate_life_events", "validate_decisions", "validate_gold_cash_forecast_recurring_streams"}
    assert {f"{f}{b}" for f in (*families[:3], families[4]) for b in range(3)} <= left  # its own shards stay
    assert not any(n.startswith("decide_bucket_") for n in left)                     # (they run in parallel)
    assert "validate_features" in left
    stages.void_later_results(paths, d, "forecast")  # feeds life events and decisions, not the messages
    left = {p.stem for p in (paths.runs / d).glob("*.json")}
    assert "validate_messages" in left and "messages_bucket_0" in left and "forecast_cash_shortfall_bucket_0" in left
    assert not left & {"validate_forecast", "life_events_bucket_0"}
    for bucket in range(3):
        write_run_metrics(paths, d, f"forecast_cash_shortfall_bucket_{bucket}", {"n_customers": 1})
    stages.void_later_results(paths, d, "features")  # the store feeds the forecast, life events and decide
    left = {p.stem for p in (paths.runs / d).glob("*.json")}
    assert {"validate_messages", "messages_bucket_0", "update_features_bucket_0"} <= left
    assert not left & {"validate_features", "validate_forecast", "forecast_cash_shortfall_bucket_0"}
    stages.void_later_results(paths, d, "conform")
    assert {p.stem for p in (paths.runs / d).glob("*.json")} == {"ingest", "validate"}


def test_a_publish_killed_after_its_commit_is_completed_by_the_next_one(paths, monkeypatch):
    published_night(paths, D0, "v1")
    before = fingerprint(paths.warehouse)

    class Killed(BaseException):
        pass

    def die_at(point):
        def checkpoint(name):
            if name == point:
                raise Killed(name)
        return checkpoint

    write_night(paths, D1, "v2")
    pass_gates(paths, D1)
    monkeypatch.setattr(publish, "checkpoint", die_at("publish:committed"))
    with pytest.raises(Killed):
        stages.publish(paths, D1)
    state = publish.read_state(paths)
    # two warehouse files, the export, the night's run metrics, the report: staged, not yet swapped in
    assert len(state["pending"]) == 5
    assert fingerprint(paths.warehouse) == before
    # the first swap happened before the process died: completing the rest must not undo it
    first = state["pending"][0]
    os.replace(first["staged"], first["final"])
    assert publish.recover(paths) is True
    assert publish.read_state(paths)["pending"] == [] and publish.recover(paths) is False
    con = connect_warehouse(paths.warehouse)
    assert con.execute(f"select count(*) from customers where as_of = '{D1}'").fetchone() == (len(CUSTOMERS),)
    con.close()
    assert read_export(paths.exports / "crm" / D1.isoformat())[0]["rows"] == len(CUSTOMERS)
    assert (paths.reports / D1.isoformat() / "index.html").exists()
    # killed before the commit: nothing visible, and the next publish cleans up after it
    monkeypatch.setattr(publish, "checkpoint", die_at("publish:staged"))
    published = fingerprint(paths.warehouse)
    write_night(paths, D2, "v4")
    pass_gates(paths, D2)
    with pytest.raises(Killed):
        stages.publish(paths, D2)
    assert fingerprint(paths.warehouse) == published and not (paths.reports / D2.isoformat() / "index.html").exists()
    monkeypatch.setattr(publish, "checkpoint", lambda name: None)
    stages.publish(paths, D2)
    assert sorted(p.name for p in paths.home.glob(".warehouse*")) == []
    assert [p.name for p in paths.published.iterdir() if p.name.startswith(".")] == []


def test_an_analyst_keeps_reading_the_generation_they_opened(paths):
    published_night(paths, D0, "v1")
    reader = connect_warehouse(paths.warehouse)
    before = reader.execute("select count(*), min(region) from customers").fetchone()
    published_night(paths, D1, "v2")
    assert reader.execute("select count(*), min(region) from customers").fetchone() == before
    published_night(paths, D2, "v3")
    generations = sorted(p.name for p in paths.published.glob("g*") if p.is_dir())
    state = publish.read_state(paths)
    assert generations == sorted([state["generation"], state["previous"]])  # older ones are dropped


def test_export_and_report_commands_read_what_was_published(paths):
    with pytest.raises(SegoneError, match="not published"):
        stages.export_crm(paths, D0)
    published_night(paths, D0, "v1")
    # a re-run of D0 that died after rewriting its data: its verdicts are voided, its data is not published
    stages.void_later_results(paths, D0.isoformat(), "ingest")
    write_night(paths, D0, "v9")
    stages.export_crm(paths, D0)
    _, rows = read_export(paths.exports / "crm" / D0.isoformat())
    assert {r["explanation"] for r in rows} == {"explained v1"}
    page = Path(stages.report(paths, D0)).read_text(encoding="utf-8")
    assert f"passed ({N} of {N}); CRM export of this attempt: 12 rows" in page  # the published night's metrics


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_processes_are_removed_and_those_of_live_ones_kept(paths):
    from pipelines.locks import this_host

    host, dead, live = this_host(), _dead_pid(), os.getppid()
    staging = paths.lake / "_staging"
    crm = paths.exports / "crm"
    for folder in (staging, crm, paths.reports / D0.isoformat()):
        folder.mkdir(parents=True, exist_ok=True)
    made = {
        "dead_staging": staging / f"{'a' * 32}.{dead}@{host}",
        "live_staging": staging / f"{'b' * 32}.{live}@{host}",
        "foreign_fresh": staging / f"{'c' * 32}.123@another-host.example",
        "foreign_old": staging / f"{'d' * 32}.123@another-host.example",
        "dead_export": crm / f".{D0}.staging-{dead}@{host}-abc123",
        "live_export": crm / f".{D0}.staging-{live}@{host}-abc123",
        "dead_report": paths.reports / D0.isoformat() / f".index.{dead}@{host}.html",
        "dead_parts": publish.parts_dir(paths) / f".staging-g000009-abcdef12.{dead}@{host}",
        "live_parts": publish.parts_dir(paths) / f".staging-g000009-12345678.{live}@{host}",
    }
    for path in made.values():
        (path.mkdir(parents=True) if "report" not in str(path.name) else path.write_text("x"))
    (made["dead_staging"] / "part-0.parquet").write_text("x")
    warehouse_tmp = paths.home / f".warehouse.duckdb.{dead}@{host}.tmp"
    warehouse_tmp.write_text("x")
    old = time.time() - 2 * 86_400
    os.utime(made["foreign_old"], (old, old))
    removed = set(publish.housekeeping(paths))
    assert removed == {str(made[k]) for k in ("dead_staging", "foreign_old", "dead_export", "dead_report",
                                              "dead_parts")} | {str(warehouse_tmp)}
    assert all(made[k].exists() for k in ("live_staging", "foreign_fresh", "live_export", "live_parts"))


def test_tables_published_live_show_what_was_written_after_their_night(paths):
    """`publish: live` tables (config/tables.yaml): the retraining registry, written after night D was published, and
    the realised value of D's recommendations, rewritten by later nights, are shown by the next publish."""
    import pandas as pd

    from pipelines import lake
    from pipelines.retrain import record
    from pipelines.schemas import table_schema

    published_night(paths, D0, "v1")
    record(paths, D0, {"family": "policy", "challenger_version": "p1", "promoted": False, "reason": "kept"})
    values = lake.partition_path(paths, "gold", "realised_value", as_of=D0.isoformat())
    schema = table_schema("gold", "realised_value")

    def write_value(value: float) -> None:
        row = {c: [None] for c in schema.data_column_names} | {"recommendation_id": ["r1"], "value_to_date": [value]}
        lake.write_frame(pd.DataFrame(row), values, paths)

    write_value(1.5)
    con = connect_warehouse(paths.warehouse)
    assert con.execute("select count(*) from model_registry").fetchone() == (0,)  # not published yet
    con.close()
    write_value(2.5)
    published_night(paths, D1, "v2")
    con = connect_warehouse(paths.warehouse)
    # as_of is a DATE in the views
    assert con.execute("select as_of, family, reason from model_registry").fetchall() == [(D0, "policy", "kept")]
    assert con.execute("select value_to_date from realised_value").fetchall() == [(2.5,)]
    con.close()
    # not rewritten since: the next publish links to the same published folder (nothing copied again)
    link = Path("general", "gold", "realised_value", f"as_of={D0}")
    first = os.readlink(paths.published / publish.read_state(paths)["generation"] / link)
    published_night(paths, D2, "v3")
    assert os.readlink(paths.published / publish.read_state(paths)["generation"] / link) == first


def test_a_dropped_generation_leaves_published_at_once_and_its_files_go_after(paths, monkeypatch):
    """Removing a generation's folders is slow on some disks (thousands of folders): the publish only renames it
    aside; a thread of the process removes it while the night goes on."""
    started = []
    real_thread = __import__("threading").Thread

    class Recorded(real_thread):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr("threading.Thread", Recorded)
    published_night(paths, D0, "v1")
    published_night(paths, D1, "v2")
    first = sorted(p.name for p in paths.published.glob("g*"))[0]
    published_night(paths, D2, "v3")
    assert first not in {p.name for p in paths.published.glob("g*")}   # out of published/ when publish returns
    assert started and not any(t.daemon for t in started)                # the process waits for it before exiting
    for thread in started:
        thread.join(timeout=60)
    assert list(publish.trash_dir(paths).iterdir()) == []
    (publish.trash_dir(paths) / "g000001-killed" / "as_of=x").mkdir(parents=True)   # a killed process's leftover
    publish.empty_trash(paths)
    assert list(publish.trash_dir(paths).iterdir()) == []


def _folders(root: Path) -> int:
    """Real folders under `root` (links not followed)."""
    return sum(1 for folder, names, _ in os.walk(root) for name in names
               if not os.path.islink(os.path.join(folder, name))) if root.is_dir() else 0


def _garbage_and_dangling(paths: Paths) -> tuple[set[str], set[str]]:
    """Partition folders of published/parts/ that no generation links to, and links whose folder is gone."""
    generations = [p for p in paths.published.glob("g*") if p.is_dir()]
    linked = set().union(*(publish._links(g) for g in generations))
    stored = {str(p.relative_to(paths.published)) for p in publish.parts_dir(paths).glob("g*/*/*/*/*=*")}
    return stored - linked, {t for t in linked if not (paths.published / t).is_dir()}


def _settle(paths: Paths) -> None:
    """Wait for the removal of what publish dropped (a thread of this process)."""
    import threading

    for thread in threading.enumerate():
        if thread.name == "segone-empty-trash":
            thread.join(timeout=120)


def test_a_publish_makes_folders_for_its_night_only_and_removes_what_no_generation_links_to(paths):
    """Issue 17: a generation is links to the published partition folders; a publish creates folders (and links
    files) for the partitions it publishes, not for every night published before, and dropping a generation
    removes only the partition folders no generation left links to."""
    made = []
    for day, version in ((D0, "v1"), (D1, "v2"), (D2, "v3")):
        before = publish.read_state(paths)
        metrics = published_night(paths, day, version)
        name = metrics["generation"]
        made.append(_folders(paths.published / name) + _folders(publish.parts_dir(paths) / name))
        if before:  # every partition of the previous generation is shared, not copied
            assert publish._links(paths.published / before["generation"]) < publish._links(paths.published / name)
            assert metrics["generation_files"]["partitions_new"] == made_partitions
        made_partitions = metrics["generation_files"]["partitions_new"]
    assert made[2] == made[1]  # the third night costs what the second did (it grew with the nights before)
    # a published night published again (a corrected re-run): its new partitions replace the old ones, which are
    # removed once the generations that link to them are dropped; nothing else is
    write_night(paths, D1, "v9")
    pass_gates(paths, D1)
    stages.publish(paths, D1)
    published_night(paths, D2 + (D2 - D1), "v4")
    _settle(paths)
    garbage, dangling = _garbage_and_dangling(paths)
    assert garbage == set() and dangling == set()
    con = connect_warehouse(paths.warehouse)
    assert sorted(con.execute("select as_of, min(region) from customers group by all").fetchall()) == [
        (D0, "region v1"), (D1, "region v9"), (D2, "region v3"), (D2 + (D2 - D1), "region v4")]
    con.close()
    # what a publish killed between its store and its generation leaves (a store no generation links to) goes with
    # the next clean-up
    orphan = publish.parts_dir(paths) / "g000099-deadbeef" / "general" / "silver" / "customers" / f"as_of={D0}"
    orphan.mkdir(parents=True)
    publish.housekeeping(paths)
    _settle(paths)
    assert not orphan.parent.parent.parent.parent.exists()


def test_a_generation_of_the_layout_before_links_is_carried_over_and_dropped(paths):
    """Homes published before generations were links hold generations of real folders and hard links: the next
    publish carries their partitions into published/parts/ once, and dropping them removes no linked folder."""
    import shutil

    published_night(paths, D0, "v1")
    state = publish.read_state(paths)
    generation = paths.published / state["generation"]
    for link in [p for p in generation.glob("*/*/*/*") if p.is_symlink()]:
        target = link.resolve()
        link.unlink()
        shutil.copytree(target, link)  # the layout before: the generation's own folders
    shutil.rmtree(publish.parts_dir(paths))
    reader = connect_warehouse(paths.warehouse)
    before = reader.execute("select count(*), min(region) from customers").fetchone()
    published_night(paths, D1, "v2")
    assert reader.execute("select count(*), min(region) from customers").fetchone() == before
    reader.close()
    published_night(paths, D2, "v3")
    _settle(paths)
    assert state["generation"] not in {p.name for p in paths.published.glob("g*")}
    garbage, dangling = _garbage_and_dangling(paths)
    assert garbage == set() and dangling == set()
    con = connect_warehouse(paths.warehouse_restricted)
    assert sorted(con.execute("select as_of, min(region), count(known_vulnerability) from customers "
                              "group by all").fetchall()) == [(D0, "region v1", 1), (D1, "region v2", 1),
                                                              (D2, "region v3", 1)]
    con.close()
