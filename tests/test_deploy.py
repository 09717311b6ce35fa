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
