"""retrain_models: weekly, and on demand (trigger it), retrain the cash-shortfall forecaster, the income-drop and
large-expense forecasters, the life-event classifiers and the policy, each a challenger against the promoted champion (DESIGN section 6).

Wiring only: every task calls pipelines.stages.retrain_family, which trains, judges and records the decision in gold
model_registry; the nightly DAG loads only promoted versions. The same code runs as `segone retrain`. The models are
retrained as of the last day of data loaded.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

DEFAULT_ARGS = {
    "retries": int(os.environ.get("SEGONE_TASK_RETRIES", "1")),
    "retry_delay": timedelta(minutes=10),
}


def _retrain(family: str) -> dict:
    from pipelines.config import Paths
    from pipelines import stages

    decision = stages.retrain_family(Paths.from_env(), None, family)
    return {k: v for k, v in decision.items() if k != "details"}


@dag(
    dag_id="retrain_models",
    # Sundays at 06:00 UTC, after the night; trigger the DAG for a retraining on demand
    schedule=CronTriggerTimetable("0 6 * * 0", timezone="UTC", interval=timedelta(days=7)),
    start_date=datetime(2026, 1, 4),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=6),
    tags=["segone", "weekly"],
    doc_md=__doc__,
)
def retrain_models():
    @task
    def retrain_cash_forecast() -> dict:
        return _retrain("cash_forecast")

    @task
    def retrain_income_forecast() -> dict:
        return _retrain("income_forecast")

    @task
    def retrain_expense_forecast() -> dict:
        return _retrain("expense_forecast")

    @task
    def retrain_life_events() -> dict:
        return _retrain("life_events")

    @task
    def retrain_policy() -> dict:
        return _retrain("policy")

    [retrain_cash_forecast(), retrain_life_events()] >> retrain_policy()
    retrain_income_forecast()
    retrain_expense_forecast()


retrain_models()
