"""One run per home and night (issue 12, item 7): a second `segone` run of a night, or a run while the night's
Airflow DAG run is active (and the other way round), is refused with one line naming the holder; the lock is
released on every way out (end, error, Ctrl-C, SIGTERM); a dead holder never blocks for good; mapped tasks of one
DAG run share the lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from pipelines import locks, stages
from pipelines.errors import SegoneError

D = date(2026, 11, 20)
START = datetime(2026, 11, 20, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parent.parent


def segone(paths, *args: str, env: dict | None = None, wait: bool = True):
    environment = os.environ.copy() | {"SEGONE_HOME": str(paths.home), "PYTHONPATH": str(REPO)} | (env or {})
    command = [sys.executable, "-m", "pipelines.cli", *args]
    if not wait:
        # Ctrl-C reaches a foreground process, whose SIGINT is at its default; a suite started in the background by a
        # non-interactive shell ignores SIGINT, and its children would inherit that: restore the default in the child.
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def paused_ingest(paths, tmp_path) -> tuple[subprocess.Popen, Path]:
    """`segone ingest --date D` (an empty landing folder: fast), stopped while it holds the lock of D."""
    (paths.landing_day(D.isoformat())).mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    process = segone(paths, "ingest", "--date", D.isoformat(), wait=False,
                     env={"SEGONE_PAUSE_AT": "ingest", "SEGONE_PAUSE_FILE": str(marker)})
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the holder never reached its pause"
        time.sleep(0.05)
    return process, marker


def record(paths) -> dict | None:
    path = locks.lock_path(paths, D.isoformat())
    return json.loads(path.read_text()) if path.exists() else None


def test_a_second_run_of_the_night_is_refused_naming_the_holder_and_sigterm_releases(paths, tmp_path):
    holder, _ = paused_ingest(paths, tmp_path)
    try:
        second = segone(paths, "run", "--date", D.isoformat())
        assert second.returncode == 2
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "is locked by `segone ingest`" in message and f"pid {holder.pid}" in message
        assert f"segone unlock --date {D}" in message
        assert not (paths.runs / D.isoformat() / "validate.json").exists()
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=60)
    assert holder.returncode == 128 + signal.SIGTERM
    assert record(paths) is None  # released on the way out


def test_ctrl_c_releases_and_a_killed_holder_does_not_block(paths, tmp_path):
    holder, marker = paused_ingest(paths, tmp_path)
    holder.send_signal(signal.SIGINT)
    holder.wait(timeout=60)
    assert record(paths) is None
    holder, marker = paused_ingest(paths, tmp_path)
    holder.kill()  # SIGKILL: no way to clean up
    holder.wait(timeout=60)
    assert record(paths)["members"]["main"]["pid"] == holder.pid  # left behind ...
    marker.unlink(missing_ok=True)
    done = segone(paths, "ingest", "--date", D.isoformat())  # ... and taken over: its process is gone
    assert done.returncode == 0, done.stderr[-2000:]
    assert "taking over the stale lock" in done.stderr
    assert record(paths) is None


def task(run_id: str, task_id: str, map_index: int = -1, try_number: int = 1, max_tries: int = 0) -> dict:
    return {"dag_id": "nightly_personalization", "run_id": run_id, "task_id": task_id, "map_index": map_index,
            "try_number": try_number, "max_tries": max_tries}


HOLD_AS_TASK = """
import sys, time
from pathlib import Path
from pipelines import locks
from pipelines.config import Paths
paths = Paths.from_env()
holder = locks.airflow_holder("nightly_personalization", sys.argv[1])
with locks.Hold(paths, sys.argv[2], holder, sys.argv[3], outcome="keep"):
    Path(sys.argv[4]).write_text("in")
    while Path(sys.argv[4]).exists():
        time.sleep(0.05)
"""


def test_the_tasks_of_one_dag_run_share_the_night_and_everyone_else_waits(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_HOME", str(paths.home))
    # a mapped shard task of run R1 at work in another process
    marker = tmp_path / "in"
    env = os.environ.copy() | {"PYTHONPATH": str(REPO)}
    other = subprocess.Popen([sys.executable, "-c", HOLD_AS_TASK, "R1", D.isoformat(), "forecast_cash_shortfall[3]",
                              str(marker)], env=env)
    try:
        while not marker.exists():
            assert other.poll() is None
            time.sleep(0.05)
        # another shard of the same run, here, is not blocked
        assert stages.airflow_task("forecast_shards", START, task("R1", "forecast_cash_shortfall", 4)) == list(
            range(16))
        # another DAG run of the night is refused, so is `segone run`
        with pytest.raises(locks.LockHeld, match="Airflow run R1 of nightly_personalization"):
            stages.airflow_task("forecast_shards", START, task("R2", "plan_forecast_shards"))
        refused = segone(paths, "run", "--date", D.isoformat())
        assert refused.returncode == 2 and "Airflow run R1" in refused.stderr
        assert "forecast_cash_shortfall[3]" in refused.stderr
    finally:
        marker.unlink(missing_ok=True)
        other.wait(timeout=60)
    # between two tasks the run still holds the night (its next task, or a retry, is coming)
    assert record(paths)["owner"] == "airflow:nightly_personalization:R1" and not record(paths)["members"]
    with pytest.raises(locks.LockHeld, match="between tasks"):
        locks.acquire(paths, D.isoformat(), locks.cli_holder("run"), "main")
    # a task that fails with a retry left keeps it; on its last try the run is over and the night is free
    with pytest.raises(SegoneError):
        stages.airflow_task("validate_forecast", START, task("R1", "validate_forecast", try_number=1, max_tries=1))
    assert not record(paths).get("finished")
    with pytest.raises(SegoneError):
        stages.airflow_task("validate_forecast", START, task("R1", "validate_forecast", try_number=2, max_tries=1))
    assert record(paths)["finished"].startswith("validate_forecast failed")
    # each task's failure is in the night's structured log, beside the CLI's lines
    logged = [json.loads(line) for line in (paths.runs / D.isoformat() / "log.jsonl").read_text().splitlines()]
    failed = [e for e in logged if e["command"] == "airflow nightly_personalization validate_forecast"]
    assert len(failed) == 2 and all(e["level"] == "ERROR" and "failed" in e["message"] for e in failed)
    with locks.Hold(paths, D.isoformat(), locks.cli_holder("run"), "main"):
        assert record(paths)["kind"] == "cli"
    assert record(paths) is None


def test_a_dag_run_releases_the_night_when_it_publishes_and_refuses_a_running_cli(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_HOME", str(paths.home))
    monkeypatch.setattr(stages, "publish", lambda paths, day, run_id=None: {"published": day.isoformat()})
    holder, marker = paused_ingest(paths, tmp_path)
    try:
        with pytest.raises(locks.LockHeld, match="`segone ingest`"):
            stages.airflow_task("ingest", START, task("R1", "ingest"))
    finally:
        marker.unlink()
        holder.wait(timeout=60)
    stages.airflow_task("forecast_shards", START, task("R1", "plan_forecast_shards"))
    assert stages.airflow_task("publish", START, task("R1", "publish"), run_id="R1") == {"published": D.isoformat()}
    assert record(paths) is None


def test_an_idle_dag_run_expires_and_the_operator_can_clear_a_lock(paths, monkeypatch):
    monkeypatch.setenv("SEGONE_HOME", str(paths.home))
    stages.airflow_task("forecast_shards", START, task("R1", "plan_forecast_shards"))
    assert "alive" in locks.unlock_command(paths) and "R1" in locks.unlock_command(paths)
    with pytest.raises(locks.LockHeld, match="--force"):
        locks.unlock_command(paths, day=D)
    path = locks.lock_path(paths, D.isoformat())
    stale = json.loads(path.read_text()) | {"seen": time.time() - locks.lock_settings()["airflow_idle_seconds"] - 1}
    path.write_text(json.dumps(stale))
    assert "stale" in locks.unlock_command(paths)
    locks.acquire(paths, D.isoformat(), locks.cli_holder("run"), "main")  # an expired run does not block
    path.write_text(json.dumps(stale))
    assert "cleared" in locks.unlock_command(paths, day=D) and record(paths) is None
    stages.airflow_task("forecast_shards", START, task("R1", "plan_forecast_shards"))
    done = segone(paths, "unlock", "--date", D.isoformat(), "--force")
    assert done.returncode == 0 and "cleared" in done.stdout and record(paths) is None


def test_a_holder_on_another_host_is_alive_while_its_heartbeat_is_fresh(paths):
    now = time.time()
    member = {"pid": 1, "host": "another-host.example", "start": None, "seen": now - 10}
    alive = {"owner": "cli:another-host.example:1:x", "kind": "cli", "label": "`segone run`", "since": now,
             "seen": now - 10, "members": {"main": member}}
    assert locks.is_alive(alive, now)
    gone = alive | {"members": {"main": member | {"seen": now - locks.lock_settings()["stale_seconds"] - 1}}}
    assert not locks.is_alive(gone, now)
