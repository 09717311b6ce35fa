"""The launcher stops exactly what it started, and the components share one secret per home."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from pipelines.deploy import Deployment, _is_same_process, worker_hostname


def _sleeper() -> list[str]:
    # a parent with a child in its group, like the scheduler and its executor workers
    return [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(600)']); time.sleep(600)"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def test_stop_ends_the_recorded_process_groups_and_nothing_else(tmp_path: Path):
    deployment = Deployment(tmp_path / "segone", tmp_path / "airflow", 1)
    first = deployment.start("first", _sleeper())
    second = deployment.start("second", _sleeper())
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(1)
        children = [int(p) for p in subprocess.run(["pgrep", "-g", str(first)], capture_output=True, text=True)
                    .stdout.split() if int(p) != first]
        assert children  # the child the first one started
        records = json.loads(deployment.pids_file.read_text())
        assert [r["name"] for r in records] == ["first", "second"] and all(_is_same_process(r) for r in records)
        # a record whose pid now belongs to another process (another start time) is never signalled
        records.append({"name": "recycled", "pid": stranger.pid, "started": 1, "argv": []})
        deployment.pids_file.write_text(json.dumps(records))
        stopped = deployment.stop(timeout=10)
        assert stopped == [f"second (pid {second})", f"first (pid {first})"]
        assert not any(_alive(p) for p in [first, second, *children])
        assert stranger.poll() is None and not deployment.pids_file.exists()
        assert deployment.stop() == []
    finally:
        stranger.kill()
        stranger.wait()


def test_every_component_gets_the_same_secrets_kept_private_in_the_home(tmp_path: Path):
    one = Deployment(tmp_path / "segone", tmp_path / "airflow", 8123).env()
    two = Deployment(tmp_path / "segone", tmp_path / "airflow", 8123).env()
    other = Deployment(tmp_path / "segone2", tmp_path / "airflow2", 8123).env()
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert len(one[key]) >= 40 and one[key] == two[key] != other[key]
    for name in ("jwt_secret", "api_secret_key"):
        assert stat.S_IMODE((tmp_path / "airflow" / "secrets" / name).stat().st_mode) == 0o600
    assert one["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert one["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_a_worker_reports_its_own_name(monkeypatch):
    monkeypatch.setenv("SEGONE_WORKER_NAME", "segone-w2")
    assert worker_hostname() == "segone-w2"
    monkeypatch.delenv("SEGONE_WORKER_NAME")
    assert worker_hostname() and worker_hostname() != "segone-w2"


def test_the_command_line_refuses_a_bad_date_in_one_line(capsys):
    from pipelines.deploy import main

    for command in ("trigger", "run"):
        assert main([command, "--date", "2026-02-30", "--wait", "--timeout", "5"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: business_date 2026-02-30 is not a calendar date") and err.count("\n") == 1


def _home(root: Path, probability: float, run_id: str) -> Path:
    import duckdb

    part = root / "lake" / "gold" / "cash_forecast" / "as_of=2026-11-20" / "bucket=0"
    part.mkdir(parents=True)
    duckdb.connect().execute(f"copy (select 'C1' as customer_id, {probability} as p_shortfall union all "
                             f"select 'C2', 0.5) to '{part}/part-0.parquet' (format parquet)")
    export = root / "exports" / "crm" / "2026-11-20"
    export.mkdir(parents=True)
    (export / "next_best_actions.csv").write_text("recommendation_id\nR1\n")
    (export / "manifest.json").write_text(json.dumps({"run_id": run_id, "rows": 1}))
    return root


def test_the_cluster_comparison_finds_a_differing_row_and_ignores_only_the_run_id(tmp_path: Path):
    from pipelines.evaluation.cluster_demo import compare_outputs

    a, b, c = _home(tmp_path / "a", 0.25, "r1"), _home(tmp_path / "b", 0.25, "r2"), _home(tmp_path / "c", 0.3, "r3")
    same, lines = compare_outputs(a, b, "2026-11-20")
    assert same and "identical" in lines[0] and "byte-identical" in lines[1] and "but for run_id" in lines[2]
    same, lines = compare_outputs(a, c, "2026-11-20")
    assert not same and "2 rows differ" in lines[0]
    (c / "exports" / "crm" / "2026-11-20" / "manifest.json").write_text(json.dumps({"run_id": "r3", "rows": 2}))
    assert "differs in rows" in compare_outputs(b, c, "2026-11-20")[1][2]


def _retrained(root: Path, brier: float, booster: str, decided_at_differs: bool = False) -> Path:
    """A home after retrain_models: two decisions in gold model_registry (written by the real recorder, each with
    its own decided_at), the model files and the promoted pointers."""
    from pipelines.config import Paths
    from pipelines.retrain import record

    paths, day = Paths(root), date(2026, 11, 20)
    for family, version in (("cash_forecast", "global-2026-11-20-aaaa"), ("life_events", "life-events-2026-11-20-bb")):
        folder = root / "models" / family / version
        folder.mkdir(parents=True)
        (folder / "model.txt").write_text(booster if family == "cash_forecast" else "tree")
        (root / "models" / family / "promoted.json").write_text(json.dumps({"version": version, "reason": "r"}))
    record(paths, day, {"family": "cash_forecast", "challenger_version": "global-2026-11-20-aaaa",
                        "champion_version": "global-2026-11-19-cccc", "promoted": True,
                        "promoted_version": "global-2026-11-20-aaaa", "metric": "Brier", "challenger_score": brier,
                        "champion_score": 0.05, "n_samples": 100, "reason": "better", "details": {"held_out": 1}})
    record(paths, day, {"family": "policy", "challenger_version": None, "champion_version": "catalogue",
                        "promoted": False, "promoted_version": "catalogue", "metric": "DR", "n_samples": 3,
                        "reason": "not enough data", "details": {}})
    return root


def test_the_cluster_comparison_of_retraining_ignores_only_when_each_decision_was_written(tmp_path: Path):
    from pipelines.evaluation.cluster_demo import compare_registry, registry_decisions

    a = _retrained(tmp_path / "a", 0.04, "tree 1")
    time.sleep(0.01)
    b = _retrained(tmp_path / "b", 0.04, "tree 1")
    assert list(registry_decisions(a)["family"]) == ["cash_forecast", "policy"]
    same, lines, summary = compare_registry(a, b)
    assert same, lines
    assert "promoted global-2026-11-20-aaaa: the same decision" in lines[0]
    assert "kept catalogue: the same decision" in lines[1]
    assert "files of global-2026-11-20-aaaa: byte-identical" in lines[2]
    assert summary == "retrain: cash_forecast promoted global-2026-11-20-aaaa, policy kept catalogue"

    # another score, another model file, a decision missing on one side, another promoted version: each is found
    c = _retrained(tmp_path / "c", 0.041, "tree 2")
    same, lines, _ = compare_registry(a, c)
    assert not same and "DIFFERENT in challenger_score" in lines[0] and "DIFFERENT: global-2026-11-20-aaaa" in lines[2]
    import shutil

    shutil.rmtree(b / "lake" / "gold" / "model_registry" / "as_of=2026-11-20" / "family=policy")
    same, lines, _ = compare_registry(a, b)
    assert not same and any("policy" in line and "only in the Celery run" in line for line in lines)
    (b / "models" / "cash_forecast" / "promoted.json").write_text(json.dumps({"version": "global-2026-11-19-cccc"}))
    assert "(Local: global-2026-11-19-cccc)" in "\n".join(compare_registry(a, b)[1])
    # a run that recorded nothing fails the comparison
    empty = tmp_path / "empty"
    (empty / "lake" / "gold").mkdir(parents=True)
    same, lines, summary = compare_registry(a, empty)
    assert not same and "no decision recorded (Local run)" in lines[0]


def test_the_cluster_demo_runs_the_retraining_by_default():
    from pipelines.evaluation.cluster_demo import DEFAULT_DAGS, RETRAIN_DAG

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert f"CLUSTER_DAGS ?= {DEFAULT_DAGS}\n" in makefile
    assert DEFAULT_DAGS.split(",") == ["nightly_personalization", RETRAIN_DAG]
