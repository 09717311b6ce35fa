"""The DAG parses, is wired as the design says, takes D from its one-day data interval, and stays thin."""
from __future__ import annotations

import ast
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pipelines.stages import business_date

DAGS = Path(__file__).resolve().parent.parent / "dags"


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dag_imports_without_errors_and_is_wired(airflow_db):
    bag = _dagbag()
    assert bag.import_errors == {}
    dag = bag.get_dag("nightly_personalization")
    assert dag is not None
    order = ["wait_for_landing", "ingest", "validate", "conform", "validate_silver", "plan_feature_shards",
             "update_features", "validate_features", "plan_forecast_shards", "forecast_cash_shortfall",
             "validate_forecast", "plan_life_event_shards", "classify_life_events", "validate_life_events",
             "plan_decide_shards", "decide_next_best_actions", "validate_decisions", "publish"]
    # messages (step 3b) and the customer profiles (3c) run beside the forecast, after the silver checks; decide
    # waits for every branch
    joins = {"plan_decide_shards": {"validate_life_events", "validate_messages", "validate_profiles",
                                    "validate_plans", "validate_events"},
             "publish": {"validate_decisions", "measure_value"}}
    for upstream, downstream in zip(order, order[1:]):
        assert dag.get_task(downstream).upstream_task_ids == joins.get(downstream, {upstream})
    for branch in (["validate_silver", "plan_message_shards", "understand_messages", "validate_messages"],
                   ["validate_silver", "plan_profile_shards", "profile_customers", "validate_profiles"],
                   ["make_plans", "validate_plans"],
                   # income drops and large expenses (step 4c) beside the cash forecast; decide reads them
                   ["validate_features", "plan_event_shards", "forecast_events", "validate_events"]):
        for upstream, downstream in zip(branch, branch[1:]):
            assert dag.get_task(downstream).upstream_task_ids == {upstream}
    # the plans follow the forecast's and the profiles' gates; decide waits for their gate
    assert dag.get_task("plan_plan_shards").upstream_task_ids == {"validate_forecast", "validate_profiles"}
    assert dag.get_task("make_plans").upstream_task_ids == {"plan_plan_shards"}
    # the night's value is measured from silver, beside the forecast, and published with the rest
    assert dag.get_task("measure_value").upstream_task_ids == {"validate_silver"}
    # the feature store's update and the forecast are mapped over the shards the plans return, never over customers
    assert dag.get_task("update_features").is_mapped if hasattr(dag.get_task("update_features"), "is_mapped") \
        else True
    assert dag.get_task("forecast_cash_shortfall").is_mapped if hasattr(dag.get_task("forecast_cash_shortfall"),
                                                                          "is_mapped") else True
    outlets = [getattr(o, "uri", None) for o in dag.get_task("publish").outlets]
    assert {"segone://gold/cash_forecast", "segone://gold/income_forecast", "segone://gold/expense_forecast",
            "segone://gold/next_best_actions"} <= set(outlets)
    timetable = dag.timetable
    assert type(timetable).__name__ == "NightlyTimetable"  # a CronTriggerTimetable naming runs after D
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.get_task("ingest").retries >= 0
    # the night waits for D's landing without holding a worker slot, and a failed night raises the alert
    wait = dag.get_task("wait_for_landing")
    assert wait.mode == "reschedule" and wait.retries == 0
    assert dag.on_failure_callback and dag.get_task("publish").on_failure_callback
    assert dag.params["business_date"] is None


def test_retrain_models_is_weekly_on_demand_and_retrains_every_family(airflow_db):
    dag = _dagbag().get_dag("retrain_models")
    assert dag is not None and not dag.catchup and dag.max_active_runs == 1
    assert {t.task_id for t in dag.tasks} == {"retrain_cash_forecast", "retrain_income_forecast",
                                              "retrain_expense_forecast", "retrain_life_events", "retrain_policy"}
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    # the policy learns after the models that make its context have been retrained
    assert dag.get_task("retrain_policy").upstream_task_ids == {"retrain_cash_forecast", "retrain_life_events"}


def test_business_date_is_the_day_the_interval_starts():
    start = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
    assert business_date(start) == date(2026, 11, 20)
    assert business_date(datetime(2026, 11, 20, 1, 0, tzinfo=timezone(timedelta(hours=2)))) == date(2026, 11, 19)


def test_dag_files_import_nothing_heavy_at_parse_time():
    heavy = {"pandas", "duckdb", "great_expectations", "prophet", "lightgbm", "numpy", "pyarrow", "pipelines"}
    for path in DAGS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: imports inside task functions are fine
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in heavy for n in names), f"{path.name} imports {names} at parse time"


def test_dag_file_parses_quickly_in_a_fresh_interpreter():
    code = ("import time, importlib.util as u; t = time.time(); "
            f"s = u.spec_from_file_location('d', r'{DAGS / 'nightly_personalization.py'}'); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "great_expectations" not in out.stderr


def test_scheduled_runs_are_named_after_their_business_date(airflow_db):
    import pendulum
    from airflow.timetables.base import DataInterval
    from airflow.utils.types import DagRunType

    timetable = _dagbag().get_dag("nightly_personalization").timetable
    midnight = pendulum.datetime(2026, 11, 21, tz="UTC")
    interval = DataInterval(midnight.subtract(days=1), midnight)
    assert timetable.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=midnight, data_interval=interval) == (
        "scheduled__night_2026-11-20__2026-11-21T00:00:00+00:00")
    assert timetable.generate_run_id(run_type=DagRunType.MANUAL, run_after=midnight, data_interval=None).startswith(
        "manual__")
