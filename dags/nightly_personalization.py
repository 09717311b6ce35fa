"""nightly_personalization: the night for business date D, where D is the day the data interval covers, or the
`business_date` param of a run triggered for a given night.

Wiring only: every task calls a stage function of pipelines.stages, which says how the work is done; the run's D,
the wait for D's landing and the alert come from pipelines.orchestration (docs/operations.md).
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from segone_timetable import NightlyTimetable  # plugins/: scheduled runs named after D

# SEGONE_TASK_RETRIES=0 lets tests and the demo fail fast instead of waiting out retry delays.
DEFAULT_ARGS = {
    "retries": int(os.environ.get("SEGONE_TASK_RETRIES", "2")),
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
}

# Published tables, for downstream DAGs to be scheduled on.
PUBLISHED = [Asset(f"segone://gold/{table}") for table in (
    "cash_forecast", "income_forecast", "expense_forecast", "life_events", "next_best_actions", "decision_log",
    "advisor_queue", "dashboard_layout", "message_insights", "message_signals", "decision_flags", "app_usage",
    "app_signals", "customer_roles", "plans")] + [
    Asset("segone://exports/crm")]


def _orchestration():
    from pipelines import orchestration

    return orchestration


def _task_failed(context) -> None:
    _orchestration().record_task_failure(context)


def _night_failed(context) -> None:
    _orchestration().on_night_failed(context)


def _night_succeeded(context) -> None:
    _orchestration().on_night_succeeded(context)


def _night(data_interval_start: datetime):
    """D of the running task's run: its business_date param, else the day its data interval starts."""
    from airflow.sdk import get_current_context

    return _orchestration().night_of(get_current_context()["params"], data_interval_start)


def _run_stage(stage: str, data_interval_start: datetime, **kwargs) -> dict | list:
    from airflow.sdk import get_current_context
    from pipelines import stages

    # D from the run's business_date param (else its data interval), under the lock of night D held by this DAG
    # run as a whole (pipelines/locks.py).
    ti = get_current_context()["ti"]
    task = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index,
            "try_number": ti.try_number, "max_tries": ti.max_tries}
    return stages.airflow_task(stage, _night(data_interval_start), task, **kwargs)


@dag(
    dag_id="nightly_personalization",
    schedule=NightlyTimetable("0 0 * * *", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS | {"on_failure_callback": _task_failed},
    dagrun_timeout=timedelta(hours=12),  # above the landing wait (up to 06:00 UTC on D+1) plus the night
    params={"business_date": Param(
        None, type=["null", "string"], format="date", title="Business date D",
        description="The night to run (YYYY-MM-DD, a day that is over). Empty: the day the run's data interval "
                    "starts, i.e. the day before a scheduled run's midnight.")},
    on_failure_callback=_night_failed,
    on_success_callback=_night_succeeded,
    tags=["segone", "nightly"],
    doc_md=__doc__,
)
def nightly_personalization():
    # Reschedule mode: between pokes the wait holds no worker slot. Past D's deadline it fails (-> the alert).
    @task.sensor(poke_interval=300, timeout=timedelta(hours=30).total_seconds(), mode="reschedule", retries=0)
    def wait_for_landing(data_interval_start=None) -> bool:
        from pipelines.config import Paths

        return _orchestration().landing_complete(Paths.from_env(), _night(data_interval_start))

    @task
    def ingest(data_interval_start=None) -> dict:
        return _run_stage("ingest", data_interval_start)

    @task(retries=0)
    def validate(data_interval_start=None) -> dict:
        return _run_stage("validate", data_interval_start)

    @task
    def conform(data_interval_start=None) -> dict:
        return _run_stage("conform", data_interval_start)

    @task(retries=0)
    def validate_silver(data_interval_start=None) -> dict:
        return _run_stage("validate_silver", data_interval_start)

    @task
    def plan_feature_shards(data_interval_start=None) -> list:
        return _run_stage("feature_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def update_features(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("update_features_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_features(data_interval_start=None) -> dict:
        return _run_stage("validate_features", data_interval_start)

    @task
    def measure_value(data_interval_start=None) -> dict:
        return _run_stage("measure_value", data_interval_start)

    @task
    def plan_forecast_shards(data_interval_start=None) -> list:
        return _run_stage("forecast_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def forecast_cash_shortfall(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("forecast_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_forecast(data_interval_start=None) -> dict:
        return _run_stage("validate_forecast", data_interval_start)

    @task
    def plan_event_shards(data_interval_start=None) -> list:
        return _run_stage("event_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def forecast_events(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("forecast_events_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_events(data_interval_start=None) -> dict:
        return _run_stage("validate_events", data_interval_start)

    @task
    def plan_life_event_shards(data_interval_start=None) -> list:
        return _run_stage("life_event_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def classify_life_events(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("classify_life_events_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_life_events(data_interval_start=None) -> dict:
        return _run_stage("validate_life_events", data_interval_start)

    @task
    def plan_message_shards(data_interval_start=None) -> list:
        return _run_stage("message_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def understand_messages(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("understand_messages_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_messages(data_interval_start=None) -> dict:
        return _run_stage("validate_messages", data_interval_start)

    @task
    def plan_profile_shards(data_interval_start=None) -> list:
        return _run_stage("profile_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def profile_customers(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("profile_customers_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_profiles(data_interval_start=None) -> dict:
        return _run_stage("validate_profiles", data_interval_start)

    @task
    def plan_plan_shards(data_interval_start=None) -> list:
        return _run_stage("plan_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def make_plans(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("make_plans_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_plans(data_interval_start=None) -> dict:
        return _run_stage("validate_plans", data_interval_start)

    @task
    def plan_decide_shards(data_interval_start=None) -> list:
        return _run_stage("decide_shards", data_interval_start)

    @task(max_active_tis_per_dagrun=2)
    def decide_next_best_actions(bucket: int, data_interval_start=None) -> dict:
        return _run_stage("decide_shard", data_interval_start, bucket=bucket)

    @task(retries=0)
    def validate_decisions(data_interval_start=None) -> dict:
        return _run_stage("validate_decisions", data_interval_start)

    @task(outlets=PUBLISHED)
    def publish(data_interval_start=None, run_id=None) -> dict:
        return _run_stage("publish", data_interval_start, run_id=run_id)

    feature_shards = plan_feature_shards()
    features = update_features.expand(bucket=feature_shards)
    forecast_shards = plan_forecast_shards()
    forecasts = forecast_cash_shortfall.expand(bucket=forecast_shards)
    event_shards = plan_event_shards()
    events = forecast_events.expand(bucket=event_shards)
    life_event_shards = plan_life_event_shards()
    life_events = classify_life_events.expand(bucket=life_event_shards)
    plan_shards = plan_plan_shards()
    plans = make_plans.expand(bucket=plan_shards)
    decide_shards = plan_decide_shards()
    decisions = decide_next_best_actions.expand(bucket=decide_shards)
    message_shards = plan_message_shards()
    messages = understand_messages.expand(bucket=message_shards)
    profile_shards = plan_profile_shards()
    profiles = profile_customers.expand(bucket=profile_shards)
    silver_checked = wait_for_landing() >> ingest() >> validate() >> conform() >> validate_silver()
    silver_checked >> feature_shards
    features_checked = features >> validate_features()
    features_checked >> forecast_shards
    silver_checked >> message_shards  # messages (step 3b) run beside the forecast; decide needs both
    silver_checked >> profile_shards  # so do the customer profiles (step 3c: app usage, roles)
    forecast_checked = forecasts >> validate_forecast()
    forecast_checked >> life_event_shards
    forecast_checked >> plan_shards      # plans read the forecast and the roles; decide reads the plans
    messages >> validate_messages() >> decide_shards
    profiles_checked = profiles >> validate_profiles()
    profiles_checked >> decide_shards
    profiles_checked >> plan_shards
    plans >> validate_plans() >> decide_shards
    life_events >> validate_life_events() >> decide_shards
    published = publish()
    decisions >> validate_decisions() >> published
    features_checked >> event_shards  # income drops and large expenses (step 4c): beside the cash forecast
    events >> validate_events() >> decide_shards  # decide reads them (income_drop_ahead, large_bill_ahead)
    silver_checked >> measure_value() >> published


nightly_personalization()
