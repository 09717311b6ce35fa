"""The launcher stops exactly what it started, and the components share one secret per home."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
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
