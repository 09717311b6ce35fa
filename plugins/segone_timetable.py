"""An Airflow plugin (airflow.cfg: [core] plugins_folder): the nightly timetable of nightly_personalization.

It is Airflow's CronTriggerTimetable (a run at midnight UTC covering the day before), except that a scheduled run
is named after the business date D it is for: `scheduled__night_D__<run after>`, not only after its own midnight
(D+1). Timetables outside Airflow must be registered by a plugin so that the scheduler and the api-server can
load them from the serialized DAG.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.trigger import CronTriggerTimetable
from airflow.utils.types import DagRunType


class NightlyTimetable(CronTriggerTimetable):
    """CronTriggerTimetable whose scheduled runs carry D (the UTC day their data interval starts) in their name."""

    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        if run_type == DagRunType.SCHEDULED and data_interval is not None:
            day = data_interval.start.in_timezone("UTC").date().isoformat()
            return f"scheduled__night_{day}__{run_after.isoformat()}"
        return super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval, **extra)


class SegonePlugin(AirflowPlugin):
    name = "segone"
    timetables = [NightlyTimetable]
