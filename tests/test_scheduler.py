"""The night the way production runs it: Airflow's scheduler, dag-processor and api-server (LocalExecutor), started
and stopped by pipelines.deploy, a run triggered through the REST API for a tiny bank, its task logs read back
the way the UI reads them; a night whose landing never completed raises the alert; bad business dates are refused.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from pipelines.deploy import DeployError, Deployment, free_port, serve
from pipelines.ingest.openbanking import MIN_FILES_PER_WORKER
from tests.bank_cache import AIRFLOW_BUCKETS, AIRFLOW_NIGHT, airflow_bank, airflow_overlay, bank_copy

BIN = Path(sys.executable).parent
D = AIRFLOW_NIGHT
DAG = "nightly_personalization"


# The bank shared with tests/test_e2e.py (tests/bank_cache.py): two customer buckets instead of 16, so two mapped
# tasks per sharded stage (still more than one task per stage, each its own shard), each task a fresh process under
# the scheduler (about 5 s of imports and model loading each), and enough open-banking files on D for the ingest's
# process pool; the light models of the test banks (tests/bank_settings.py).
BUCKETS = AIRFLOW_BUCKETS


def _overlay(home: Path) -> str:
    return str(airflow_overlay(home))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Deployment:
    home = bank_copy(airflow_bank(), tmp_path_factory.mktemp("served") / "bank") / "segone"
    # Only triggered runs: a scheduled run of yesterday would hold the one active run until its landing deadline.
    served = Deployment(home, home / "airflow", free_port(), {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                                                              "SEGONE_SETTINGS": _overlay(home)})
    serve(served, log=lambda _: None)
    try:
        yield served
    finally:
        stopped = served.stop()
        assert {s.split(" ")[0] for s in stopped} == {"api-server", "scheduler", "dag-processor"}
        assert served.alive() == [] and not served.pids_file.exists()


@pytest.mark.slow
def test_the_night_runs_under_the_scheduler_and_its_logs_are_where_the_ui_reads_them(deployment):
    run_id = deployment.trigger(DAG, D)
    assert run_id.startswith(f"night_{D}__")  # D is in the run's name, and in its conf
    state = deployment.wait_for_run(DAG, run_id, timeout=1200)
    assert state == "success", deployment.failed_tasks(DAG, run_id)
    run = deployment.api("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")
    assert run["conf"] == {"business_date": D}
    home = deployment.segone_home
    for stage in ("ingest", "validate", "conform", "validate_forecast", "validate_decisions", "publish"):
        assert (home / "runs" / D / f"{stage}.json").exists(), stage
    assert json.loads((home / "exports" / "crm" / D / "manifest.json").read_text())["as_of"] == D
    assert not (home / "runs" / D / "alert.json").exists()
    # the open-banking files were parsed in a process pool inside the ingest task (BrokenProcessPool before)
    ingest = json.loads((home / "runs" / D / "ingest.json").read_text())
    assert ingest["openbanking"]["files"] >= 2 * MIN_FILES_PER_WORKER and (os.cpu_count() or 1) >= 2
    assert ingest["openbanking"]["stats"]["ob_transactions_duplicates"] > 0
    # every task instance left its log under $AIRFLOW_HOME/logs, and the api-server serves it to the UI
    tis = deployment.task_instances(DAG, run_id)
    assert all(ti["state"] == "success" for ti in tis)
    per_task = {}
    for ti in tis:
        per_task.setdefault(ti["task_id"], []).append(ti["map_index"])
    mapped = {task for task, indexes in per_task.items() if max(indexes) >= 0}
    assert mapped == {"update_features", "understand_messages", "profile_customers", "forecast_cash_shortfall",
                      "forecast_events", "classify_life_events", "make_plans", "decide_next_best_actions"}
    assert all(sorted(per_task[task]) == list(range(BUCKETS)) for task in mapped)  # one task per shard, never more
    assert all(per_task[task] == [-1] for task in set(per_task) - mapped)
    assert {"wait_for_landing", "ingest", "validate_features", "measure_value", "validate_profiles",
            "validate_plans", "publish"} <= set(per_task)
    for ti in tis:
        folder = deployment.logs / f"dag_id={DAG}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
        if ti["map_index"] >= 0:
            folder /= f"map_index={ti['map_index']}"
        assert (folder / f"attempt={ti['try_number']}.log").stat().st_size > 0, ti["task_id"]
    log = deployment.task_log(DAG, run_id, "publish")
    assert "Done. Returned value was" in log and D in log
    shard_log = deployment.task_log(DAG, run_id, "decide_next_best_actions", map_index=BUCKETS - 1)
    assert f"'bucket': {BUCKETS - 1}" in shard_log


@pytest.mark.slow
def test_a_night_whose_landing_never_completed_fails_into_the_alert(deployment):
    day = "2026-11-19"  # a past day without a landing folder: its deadline (2026-11-20 06:00 UTC) has passed
    run_id = deployment.trigger(DAG, day)
    assert deployment.wait_for_run(DAG, run_id, timeout=600) == "failed"
    states = {ti["task_id"]: ti["state"] for ti in deployment.task_instances(DAG, run_id)}
    assert states["wait_for_landing"] == "failed" and states["ingest"] == "upstream_failed"
    alert_file = deployment.segone_home / "runs" / day / "alert.json"
    # written by the DAG's on_failure_callback, which the dag-processor runs once the run has failed
    deadline = time.monotonic() + 120
    while not alert_file.exists() and time.monotonic() < deadline:
        time.sleep(2)
    assert alert_file.exists()
    alert = json.loads(alert_file.read_text())
    assert alert["business_date"] == day and alert["run_id"] == run_id
    assert [f["task_id"] for f in alert["failed_tasks"]] == ["wait_for_landing"]
    assert "not complete at its deadline 2026-11-20 06:00 UTC" in alert["failed_tasks"][0]["error"]
    logged = [line for path in (deployment.logs / "dag_processor").rglob("*.log")  # the ERROR line
              for line in path.read_text(errors="replace").splitlines() if "ALERT the night of " + day in line]
    assert logged
    assert "LandingLate" in deployment.task_log(DAG, run_id, "wait_for_landing")


@pytest.mark.slow
def test_a_trigger_with_a_malformed_business_date_is_refused(deployment):
    with pytest.raises(DeployError, match="HTTP 4"):
        deployment.trigger(DAG, "2026-13-01", run_id="bad_date")
