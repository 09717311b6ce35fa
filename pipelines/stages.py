"""The stages of `nightly_personalization` as plain functions `(paths, day) -> metrics`.

The DAG wires these into tasks and the CLI runs them one by one; tests call them directly. Each stage writes its
metrics to runs/<load_date>/<stage>.json so that a later stage, the gates and the summary can read them.
"""
from __future__ import annotations

import logging
import resource
import shutil
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, NamedTuple

from pipelines import lake
from pipelines.config import Paths
from pipelines.errors import LandingError, SegoneError
from pipelines.runs import describe_nights, read_run_metrics, write_run_metrics

log = logging.getLogger(__name__)
HISTORY = "history"

# A stage that (re)writes D's data voids what was judged on the data it replaces: the verdict of its own gate and of
# every gate downstream of it, and the shard results of the per-bucket stages downstream (otherwise a night re-run
# that died after 8 of 16 buckets would pass validate_forecast on 8 new and 8 old buckets). Publish refuses a night
# with a missing verdict, so a half-rewritten night can never be published, not even by hand (`segone publish`).
# The night as the DAG wires it: what each writing stage's output feeds, its gate, its shard results.
# The feature store (features) feeds the forecast, the life events and decide, which read its tables of D.
_FEEDS = {"ingest": ("conform",), "conform": ("messages", "profiles", "features"),
          "features": ("forecast", "events", "life_events", "decide", "plans"), "messages": ("decide",),
          "profiles": ("decide", "plans"), "forecast": ("life_events", "plans"), "events": ("decide",),
          "life_events": ("decide",), "plans": ("decide",), "decide": ()}
_GATE = {"ingest": "validate", "conform": "validate_silver", "features": "validate_features",
         "messages": "validate_messages", "profiles": "validate_profiles", "forecast": "validate_forecast",
         "events": "validate_events", "life_events": "validate_life_events", "plans": "validate_plans",
         "decide": "validate_decisions"}
_SHARDS = {"features": "update_features_bucket_", "messages": "messages_bucket_", "profiles": "profiles_bucket_",
           "forecast": "forecast_cash_shortfall_bucket_", "events": "forecast_events_bucket_",
           "life_events": "life_events_bucket_", "plans": "plans_bucket_", "decide": "decide_bucket_"}
GATES = tuple(_GATE.values())  # every verdict a night needs before it is published


def _downstream(stage: str) -> set[str]:
    found: set[str] = set()
    todo = list(_FEEDS[stage])
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(_FEEDS[name])
    return found


def void_later_results(paths: Paths, load: str, stage: str) -> None:
    """Remove runs/<load>/ verdicts and shard results that judged or came from data `stage` is about to replace."""
    folder = paths.runs / load
    if not folder.is_dir():
        return
    later = _downstream(stage)
    names = {f"{_GATE[s]}.json" for s in later | {stage}}
    families = tuple(_SHARDS[s] for s in later if s in _SHARDS)  # not its own shards: they run in parallel
    for file in folder.iterdir():
        if file.name in names or file.name.startswith("validate_gold_") or file.name.startswith(families):
            file.unlink(missing_ok=True)
    kept = folder / "gx"  # the gates' full results, for the data docs (pipelines/data_docs.py): voided alike
    for gate in kept.iterdir() if kept.is_dir() else []:
        if f"{gate.name}.json" in names:
            shutil.rmtree(gate, ignore_errors=True)


def ingest(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 1a: landing/D/ -> bronze (load_date=D) and the quarantine."""
    from pipelines.ingest.landing import ingest_landing

    from pipelines.publish import housekeeping

    folder = paths.landing_day(day.isoformat())
    if not folder.is_dir():
        raise LandingError(f"no landing folder for {day}: {folder} does not exist")
    housekeeping(paths)  # what killed runs left behind (staging folders, unfinished publishes)
    void_later_results(paths, day.isoformat(), "ingest")
    return ingest_landing(paths, day.isoformat(), folder, business_date=day)


def validate(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 1b: expectation suites on D's bronze and the gates; raises GateFailed to stop the run."""
    from pipelines.quality import validate_day

    return validate_day(paths, day.isoformat())


def conform(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 2: D's bronze -> silver."""
    from pipelines.conform import conform as conform_load

    void_later_results(paths, day.isoformat(), "conform")
    metrics = conform_load(paths, day.isoformat(), day)
    write_run_metrics(paths, day.isoformat(), "conform", metrics)
    return metrics


def validate_silver(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 2b: expectation suites on the silver partitions D wrote."""
    from pipelines.quality import validate_silver as validate_silver_load

    metrics = validate_silver_load(paths, day.isoformat(), day)
    write_run_metrics(paths, day.isoformat(), "validate_silver", metrics)
    return metrics


def publish(paths: Paths, day: date, run_id: str | None = None) -> dict[str, Any]:
    """Stage 7, the one moment night D becomes visible: a published generation of the lake, warehouse.duckdb and
    warehouse_restricted.duckdb over it, the CRM export and the nightly report, all swapped in at one commit.
    Refused unless every gate of D passed on the data as it is now (pipelines/publish.py)."""
    from pipelines.publish import publish_night

    d = day.isoformat()
    if read_run_metrics(paths, d, "ingest") is None:
        if (read_run_metrics(paths, HISTORY, "conform") or {}).get("as_of") == d:
            from pipelines.publish import publish_history

            return publish_history(paths, day)  # the history load again (its last day is D)
        raise SegoneError(f"nothing to publish for {d}: the night of {d} has not run in {paths.home} "
                          f"({describe_nights(paths)})")
    return publish_night(paths, day, run_id=run_id)


def export_crm(paths: Paths, day: date) -> dict[str, Any]:
    """The CRM export of a published night D again, from what was published (`segone export-crm`)."""
    from pipelines.publish import export_published

    return export_published(paths, day)


def report(paths: Paths, day: date) -> str:
    """The nightly report of a published night D again, from what was published (`segone report`)."""
    from pipelines.publish import report_published

    return report_published(paths, day)


def feature_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the feature store's update maps over."""
    from pipelines.store import shards

    return shards()


def update_features_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 3, one shard: D's silver merged into the feature store (lake/features/, docs/feature_store.md) and the
    features as of D written for bucket N."""
    from pipelines.store import update_features as run_shard

    void_later_results(paths, day.isoformat(), "features")
    return run_shard(paths, day, int(bucket))


def update_features(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3, every shard in turn (the DAG maps update_features_shard over the shards instead)."""
    from pipelines.store import update_all

    void_later_results(paths, day.isoformat(), "features")
    return update_all(paths, day)


def validate_features(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3's gate: every bucket's store complete for D, keys and not-null columns of the tables the later stages
    read; raises GateFailed to stop the run."""
    from pipelines.store import validate_features as validate_store

    return validate_store(paths, day)


def rebuild_features(paths: Paths, day: date, load: str | None = None) -> dict[str, Any]:
    """`segone features rebuild --date D`: the feature store as of D computed from silver alone (what the later
    stages of D read is replaced: their verdicts of D are voided)."""
    from pipelines.store import rebuild

    if load is None:
        void_later_results(paths, day.isoformat(), "features")
    return rebuild(paths, day, load=load)


def features_command(paths: Paths, what: str, day: date) -> dict[str, Any]:
    """`segone features update|rebuild --date D`."""
    return rebuild_features(paths, day) if what == "rebuild" else update_features(paths, day)


def forecast_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the forecast stage maps over."""
    from pipelines.forecast import shards

    return shards()


def forecast_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 4, one shard: features and the promoted global engine -> gold cash_forecast for bucket N as of D."""
    from pipelines.forecast import forecast_cash_shortfall as run_shard

    void_later_results(paths, day.isoformat(), "forecast")
    return run_shard(paths, day, int(bucket))


def forecast_cash_shortfall(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4, every shard in turn (the DAG maps forecast_shard over the shards instead)."""
    from pipelines.forecast import forecast_all

    void_later_results(paths, day.isoformat(), "forecast")
    return forecast_all(paths, day)


def validate_forecast(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4b: the gold suites on D's cash_forecast and recurring_streams; raises GateFailed to stop the run."""
    from pipelines.forecast import summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"forecast_cash_shortfall_bucket_{b}")
                     for b in forecast_shards(paths, day)]
    missing = [b for b, m in zip(forecast_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the forecast of {day} is incomplete: no result for buckets {missing}")
    summary = summarise_shards(paths, day, shard_metrics)
    validation = validate_gold(paths, day, ["cash_forecast", "recurring_streams"], gate="validate_forecast")
    metrics = {"forecast": summary, "validation": validation}
    write_run_metrics(paths, day.isoformat(), "validate_forecast", metrics)
    return metrics


def event_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the income and expense forecasts map over."""
    from pipelines.event_forecast import shards

    return shards()


def forecast_events_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 4c, one shard: the store's features and the promoted income and expense engines -> gold
    income_forecast and expense_forecast for bucket N as of D (docs/forecasting.md)."""
    from pipelines.event_forecast import forecast_events as run_shard

    void_later_results(paths, day.isoformat(), "events")
    return run_shard(paths, day, int(bucket))


def forecast_events(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4c, every shard in turn (the DAG maps forecast_events_shard over the shards instead)."""
    from pipelines.event_forecast import forecast_all

    void_later_results(paths, day.isoformat(), "events")
    return forecast_all(paths, day)


def validate_events(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4c': the gold suites on D's income_forecast and expense_forecast; raises GateFailed to stop the run."""
    from pipelines.event_forecast import STAGE, TABLE, summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"{STAGE}_bucket_{b}") for b in event_shards(paths, day)]
    missing = [b for b, m in zip(event_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the income and expense forecasts of {day} are incomplete: no result for buckets {missing}")
    metrics = {"events": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, list(TABLE.values()), gate="validate_events")}
    write_run_metrics(paths, day.isoformat(), "validate_events", metrics)
    return metrics


def life_event_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the life-event stage maps over."""
    from pipelines.life_events import shards

    return shards()


def classify_life_events_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 5, one shard: consented customers only -> gold life_events for bucket N as of D."""
    from pipelines.life_events import classify_life_events as run_shard

    void_later_results(paths, day.isoformat(), "life_events")
    return run_shard(paths, day, int(bucket))


def classify_life_events(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 5, every shard in turn (the DAG maps classify_life_events_shard over the shards instead)."""
    from pipelines.life_events import classify_all

    void_later_results(paths, day.isoformat(), "life_events")
    return classify_all(paths, day)


def validate_life_events(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 5b: the gold suite on D's life_events; raises GateFailed to stop the run."""
    from pipelines.life_events import summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"life_events_bucket_{b}")
                     for b in life_event_shards(paths, day)]
    missing = [b for b, m in zip(life_event_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the life events of {day} are incomplete: no result for buckets {missing}")
    metrics = {"life_events": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, ["life_events"], gate="validate_life_events")}
    write_run_metrics(paths, day.isoformat(), "validate_life_events", metrics)
    return metrics


def message_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the messages stage maps over."""
    from pipelines.messages import shards

    return shards()


def understand_messages_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 3b, one shard: message_analysis-consented customers' messages -> gold message_insights and
    message_signals for bucket N as of D."""
    from pipelines.messages import understand_messages_shard as run_shard

    void_later_results(paths, day.isoformat(), "messages")
    return run_shard(paths, day, int(bucket))


def understand_messages(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3b, every shard in turn (the DAG maps understand_messages_shard over the shards instead)."""
    from pipelines.messages import understand_all

    void_later_results(paths, day.isoformat(), "messages")
    return understand_all(paths, day)


def validate_messages(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3b': the gold suites on D's message_insights and message_signals; raises GateFailed to stop the run."""
    from pipelines.messages import summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"messages_bucket_{b}")
                     for b in message_shards(paths, day)]
    missing = [b for b, m in zip(message_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the messages of {day} are incomplete: no result for buckets {missing}")
    metrics = {"messages": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, ["message_insights", "message_signals"],
                                             gate="validate_messages")}
    write_run_metrics(paths, day.isoformat(), "validate_messages", metrics)
    return metrics


def profile_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the profile stage maps over."""
    from pipelines.profiles import shards

    return shards()


def profile_customers_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 3c, one shard: personalization-consented customers' app events and income -> gold app_usage,
    app_signals and customer_roles for bucket N as of D."""
    from pipelines.profiles import profile_shard

    void_later_results(paths, day.isoformat(), "profiles")
    return profile_shard(paths, day, int(bucket))


def profile_customers(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3c, every shard in turn (the DAG maps profile_customers_shard over the shards instead)."""
    from pipelines.profiles import profile_all

    void_later_results(paths, day.isoformat(), "profiles")
    return profile_all(paths, day)


def validate_profiles(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 3c': the gold suites on D's app_usage, app_signals and customer_roles; raises GateFailed to stop the
    run."""
    from pipelines.profiles import TABLES, summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"profiles_bucket_{b}")
                     for b in profile_shards(paths, day)]
    missing = [b for b, m in zip(profile_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the profiles of {day} are incomplete: no result for buckets {missing}")
    metrics = {"profiles": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, list(TABLES))}
    write_run_metrics(paths, day.isoformat(), "validate_profiles", metrics)
    return metrics


def plan_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the plans stage maps over."""
    from pipelines.plans import shards

    return shards()


def make_plans_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 4c, one shard: the persisted forecast, roles, accounts and known bills -> gold plans for bucket N as of D
    (instructions held within the forecast's P10 path: docs/plans.md)."""
    from pipelines.plans import make_plans as run_shard

    void_later_results(paths, day.isoformat(), "plans")
    return run_shard(paths, day, int(bucket))


def make_plans(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4c, every shard in turn (the DAG maps make_plans_shard over the shards instead)."""
    from pipelines.plans import plan_all

    void_later_results(paths, day.isoformat(), "plans")
    return plan_all(paths, day)


def validate_plans(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 4c': the gold suite on D's plans and THE SAFETY RULE on every plan row against the persisted forecast;
    raises GateFailed to stop the run."""
    from pipelines.plans import validate_plans as run

    return run(paths, day, plan_shards(paths, day))


def decide_shards(paths: Paths, day: date) -> list[int]:
    """The shards (customer buckets) the decide stage maps over."""
    from pipelines.decide import shards

    return shards()


def decide_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Stage 6, one shard: context -> funnel -> gold next_best_actions, decision_log, advisor_queue and
    dashboard_layout for bucket N as of D."""
    from pipelines.decide import decide_next_best_actions as run_shard

    void_later_results(paths, day.isoformat(), "decide")
    return run_shard(paths, day, int(bucket))


def decide_next_best_actions(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 6, every shard in turn (the DAG maps decide_shard over the shards instead)."""
    from pipelines.decide import decide_all

    void_later_results(paths, day.isoformat(), "decide")
    return decide_all(paths, day)


DECISION_TABLES = ["next_best_actions", "decision_log", "advisor_queue", "dashboard_layout", "decision_flags"]


def validate_decisions(paths: Paths, day: date) -> dict[str, Any]:
    """Stage 6b: the gold suites on D's decisions; raises GateFailed so nothing is exported from a bad night."""
    from pipelines.decide import summarise_shards
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"decide_bucket_{b}") for b in decide_shards(paths, day)]
    missing = [b for b, m in zip(decide_shards(paths, day), shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the decisions of {day} are incomplete: no result for buckets {missing}")
    metrics = {"decide": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, DECISION_TABLES, gate="validate_decisions")}
    write_run_metrics(paths, day.isoformat(), "validate_decisions", metrics)
    return metrics


def measure_value(paths: Paths, day: date) -> dict[str, Any]:
    """Value, not clicks: D's outcomes per customer, the realised value of the recommendations of the nights whose
    window includes D, and the night's value per customer for treated and control customers (gold customer_outcomes,
    realised_value, value_summary; config/rewards.yaml)."""
    from pipelines.value import measure_value as run

    return run(paths, day)


def retrain_family(paths: Paths, day: date | None, family: str) -> dict[str, Any]:
    """`retrain_models`, one family (cash_forecast, life_events or policy): a challenger against the promoted
    champion, the decision recorded in gold model_registry. D defaults to the last day of data."""
    from pipelines.forecast import data_end
    from pipelines.retrain import retrain_family as run

    return run(paths, day or data_end(paths), family)


def train(paths: Paths, day: date | None = None) -> dict[str, Any]:
    """`segone train`: train the global cash-shortfall engine on a rolling window ending at D (default: the last
    day of data) and promote it if it is at least as good as the promoted one; then the life-event classifiers."""
    from pipelines.event_forecast import train as train_events
    from pipelines.forecast import train as train_forecast
    from pipelines.life_events import train_life_events
    from pipelines.messages import train_messages

    return {"cash_forecast": train_forecast(paths, day), **train_events(paths, day),
            "life_events": train_life_events(paths, day), "messages": train_messages(paths, day)}


NIGHT = (("ingest", ingest), ("validate", validate), ("conform", conform), ("validate_silver", validate_silver),
         ("update_features", update_features), ("validate_features", validate_features),
         ("measure_value", measure_value),
         ("understand_messages", understand_messages), ("validate_messages", validate_messages),
         ("profile_customers", profile_customers), ("validate_profiles", validate_profiles),
         ("forecast_cash_shortfall", forecast_cash_shortfall), ("validate_forecast", validate_forecast),
         ("forecast_events", forecast_events), ("validate_events", validate_events),
         ("classify_life_events", classify_life_events), ("validate_life_events", validate_life_events),
         ("make_plans", make_plans), ("validate_plans", validate_plans),
         ("decide_next_best_actions", decide_next_best_actions), ("validate_decisions", validate_decisions),
         ("publish", publish))


# The per-shard stages of NIGHT, as the DAG maps them: the family of _SHARDS they write (and whose later results they
# void), their shard list, the function of this module for one shard, and the module whose summarise_shards writes
# the stage's metrics from the shards' (for the progress display and `segone closed-loop --workers`).
class NightShards(NamedTuple):
    family: str
    shard_list: Callable[[Paths, date], list[int]]
    shard_function: str
    summary_module: str


NIGHT_SHARDS = {
    "update_features": NightShards("features", feature_shards, "update_features_shard", "pipelines.store"),
    "understand_messages": NightShards("messages", message_shards, "understand_messages_shard", "pipelines.messages"),
    "profile_customers": NightShards("profiles", profile_shards, "profile_customers_shard", "pipelines.profiles"),
    "forecast_cash_shortfall": NightShards("forecast", forecast_shards, "forecast_shard", "pipelines.forecast"),
    "forecast_events": NightShards("events", event_shards, "forecast_events_shard", "pipelines.event_forecast"),
    "classify_life_events": NightShards("life_events", life_event_shards, "classify_life_events_shard",
                                        "pipelines.life_events"),
    "make_plans": NightShards("plans", plan_shards, "make_plans_shard", "pipelines.plans"),
    "decide_next_best_actions": NightShards("decide", decide_shards, "decide_shard", "pipelines.decide"),
}


def night_steps(paths: Paths, day: date) -> list[Any]:
    """NIGHT as progress steps: each stage with the run-metrics prefix of its shards and their number."""
    from pipelines.progress import Step

    steps = []
    for name, _ in NIGHT:
        sharded = NIGHT_SHARDS.get(name)
        steps.append(Step(name, _SHARDS[sharded.family], len(sharded.shard_list(paths, day))) if sharded
                     else Step(name))
    return steps


def run_night(paths: Paths, day: date, progress: Any | None = None) -> dict[str, Any]:
    """The whole night for D without Airflow, stage after stage; a failed gate stops it before publishing.
    `progress` (a pipelines.progress.Progress over night_steps) is told when each stage starts and ends.

    The wall and CPU seconds of each stage go to runs/D/night.json (read by `segone bench night`)."""
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    steps = progress.steps if progress is not None else [None] * len(NIGHT)
    for (name, stage), step in zip(NIGHT, steps):
        if progress is not None:
            progress.start(step)
        started, cpu_started = time.perf_counter(), cpu_seconds()
        results[name] = stage(paths, day)
        seconds[name] = round(time.perf_counter() - started, 3)
        cpu[name] = round(cpu_seconds() - cpu_started, 3)
        if progress is not None:
            progress.finish(step)
    write_run_metrics(paths, day.isoformat(), "night", {
        "as_of": day.isoformat(), "stage_seconds": seconds, "seconds": round(sum(seconds.values()), 3),
        "stage_cpu_seconds": cpu, "cpu_seconds": round(sum(cpu.values()), 3)})
    return results


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, all its threads, and the child processes it has waited for
    (e.g. the open-banking pool): on a shared machine a steadier measure of a stage's work than wall seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def airflow_task(stage: str, night: Any, task: dict[str, Any], **kwargs: Any) -> Any:
    """What every task of the nightly DAG runs: `stage` for D, inside the lock of night D held by its DAG run.

    `night` is D (a date: the DAG resolves its business_date param) or the run's data interval start.

    `task` describes the task instance: dag_id, run_id, task_id, map_index, try_number, max_tries. Every task of
    one DAG run joins the same lock (mapped shards run in parallel without blocking each other); a `segone run` of
    D, or another DAG run of D, is refused while this run is alive (pipelines/locks.py). The publish task releases
    the lock when it succeeds; a task that fails on its last try marks the run finished, which frees the lock once
    none of the run's tasks is still running."""
    from pipelines import locks

    paths = Paths.from_env()
    day = night if isinstance(night, date) and not isinstance(night, datetime) else business_date(night)
    holder = locks.airflow_holder(str(task["dag_id"]), str(task["run_id"]))
    map_index = task.get("map_index")
    member = str(task["task_id"]) + (f"[{map_index}]" if map_index not in (None, -1) else "")
    from pipelines.logs import night_log_handler

    handler = night_log_handler(paths.runs / day.isoformat(), f"airflow {task['dag_id']} {member}")
    if handler is not None:
        logging.getLogger().addHandler(handler)
    try:
        with locks.Hold(paths, day.isoformat(), holder, member, outcome="keep") as hold:
            try:
                result = globals()[stage](paths, day, **kwargs)
            except BaseException as error:
                if int(task.get("try_number") or 1) > int(task.get("max_tries") or 0):
                    hold.outcome, hold.finished_reason = "finished", f"{member} failed: {error}"[:300]
                log.error("%s failed: %s", member, error)
                raise
            if stage == "publish":
                hold.outcome = "release"
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return result


def history_as_of(paths: Paths) -> date:
    """The last day the history covers: the latest booking date or balance date in the history bronze."""
    con = lake.connect()
    dates = []
    for table, column in (("transactions", "booking_date"), ("balances", "as_of")):
        path = lake.partition_path(paths, "bronze", table, load_date=HISTORY)
        if any(path.glob("*.parquet")):
            dates.append(con.execute(f"select max({column}) from read_parquet('{path}/*.parquet')").fetchall()[0][0])
    con.close()
    dates = [d for d in dates if d is not None]
    if not dates:
        raise SegoneError("the history holds no transactions or balances: nothing to load")
    return max(dates)


HISTORY_STEPS = ("ingest", "validate", "conform", "validate_silver", "features", "publish")


def load_history(paths: Paths, progress: Any | None = None) -> dict[str, Any]:
    """Ingest, validate and conform landing/history/ the same way as a night, into per-day partitions.
    `progress` (a pipelines.progress.Progress over HISTORY_STEPS) is told when each step starts and ends."""
    from pipelines.conform import conform as conform_load
    from pipelines.ingest.landing import ingest_landing
    from pipelines.quality import validate_day, validate_silver as validate_silver_load

    folder = paths.landing_history
    if not folder.is_dir():
        raise LandingError(f"no history to load: {folder} does not exist (run `segone simulate` or "
                           f"`segone import-berka` first)")
    from pipelines.publish import housekeeping, publish_history

    housekeeping(paths)
    void_later_results(paths, HISTORY, "ingest")
    steps = {step.name: step for step in (progress.steps if progress is not None else [])}

    def step(name: str, work: Any) -> Any:
        if name in steps:
            progress.start(steps[name])
        result = work()
        if name in steps:
            progress.finish(steps[name])
        return result

    metrics: dict[str, Any] = {"ingest": step("ingest", lambda: ingest_landing(paths, HISTORY, folder,
                                                                              business_date=None))}
    metrics["validate"] = step("validate", lambda: validate_day(paths, HISTORY))
    as_of = history_as_of(paths)
    metrics["conform"] = step("conform", lambda: conform_load(paths, HISTORY, as_of))
    write_run_metrics(paths, HISTORY, "conform", metrics["conform"])
    metrics["validate_silver"] = step("validate_silver", lambda: validate_silver_load(paths, HISTORY, as_of))
    write_run_metrics(paths, HISTORY, "validate_silver", metrics["validate_silver"])
    metrics["features"] = step("features", lambda: rebuild_features(paths, as_of, load=HISTORY))  # the store's
    metrics["publish"] = step("publish", lambda: publish_history(paths, as_of))                 # first state
    return metrics


# --- what the CLI calls ---------------------------------------------------------------------------------------

def run_command(paths: Paths, day: date) -> str:
    from pipelines import progress
    from pipelines.doctor import preflight

    preflight(paths, day)
    with progress.following(f"night of {day}", night_steps(paths, day)) as shown:
        run_night(paths, day, shown)
    return summary(paths, day)


def load_history_command(paths: Paths) -> dict[str, Any]:
    from pipelines import progress
    from pipelines.progress import Step

    steps = [Step(name, _SHARDS["features"], len(feature_shards(paths, None))) if name == "features" else Step(name)
             for name in HISTORY_STEPS]
    with progress.following("history load", steps) as shown:
        metrics = load_history(paths, shown)
    return {
        "as_of": metrics["conform"]["as_of"],
        "silver_rows": {t: m["rows"] for t, m in metrics["conform"]["tables"].items()},
        "quarantined_ingest": sum(int(k.get("rows_quarantined", 0)) for k in metrics["ingest"].get("kinds", {}).values()),
        "quarantined_conform": metrics["conform"]["quarantined"],
    }


def summary(paths: Paths, day: date) -> str:
    """Where D's outputs are, what the night did, and one query to try."""
    from pipelines.warehouse import connect as connect_warehouse, example_query

    d = day.isoformat()
    if read_run_metrics(paths, d, "ingest") is None:
        raise SegoneError(f"the night of {d} has not run in {paths.home}: {describe_nights(paths)}")
    conform_metrics = read_run_metrics(paths, d, "conform") or {}
    ingest_metrics = read_run_metrics(paths, d, "ingest") or {}
    validate_metrics = read_run_metrics(paths, d, "validate") or {}
    lines = [f"Segment of One: night of {d}", ""]
    lines.append("Outputs:")
    lines.append(f"  lake (Parquet)      {paths.lake}")
    lines.append(f"  warehouse (DuckDB)  {paths.warehouse}")
    lines.append(f"  restricted columns  {paths.warehouse_restricted} (docs/access.md)")
    lines.append(f"  quarantine          {lake.partition_path(paths, 'gold', 'quarantine', load_date=d)}")
    lines.append(f"  run metrics         {paths.runs / d}")
    lines.append(f"  CRM export          {paths.exports / 'crm' / d}")
    lines.append(f"  nightly report      {paths.reports / d / 'index.html'}")
    lines.append("")
    lines.append("Ingest (rows accepted / quarantined):")
    for kind, m in sorted(ingest_metrics.get("kinds", {}).items()):
        lines.append(f"  {kind:<22} {m.get('rows_accepted', 0):>10,} / {m.get('rows_quarantined', 0):,}")
    gates = validate_metrics.get("gates", [])
    if gates:
        failed = [g for g in gates if not g.get("passed")]
        lines.append(f"Gates: {len(gates) - len(failed)} of {len(gates)} passed")
    lines.append("Silver (rows written for this night):")
    for table, m in sorted(conform_metrics.get("tables", {}).items()):
        skipped = sum((m.get("skipped") or {}).values())
        extra = f"  (skipped on purpose: {skipped:,})" if skipped else ""
        lines.append(f"  {table:<22} {m['rows']:>10,}{extra}")
    lines.append(f"Quarantined by conform: {conform_metrics.get('quarantined', 0):,}")
    forecast_metrics = read_run_metrics(paths, d, "forecast_cash_shortfall")
    if forecast_metrics:
        lines.append(f"Cash-shortfall forecast: {forecast_metrics['n_forecast']:,} customers "
                     f"(without a current account on D: {forecast_metrics['n_without_cash_position']:,}), "
                     f"model {', '.join(forecast_metrics['model_versions'])}")
        lines.append(f"  {lake.partition_path(paths, 'gold', 'cash_forecast', as_of=d)}")
    event_metrics = read_run_metrics(paths, d, "forecast_events")
    if event_metrics:
        lines.append(f"Income-drop / large-expense forecasts: {event_metrics.get('n_income_forecast', 0):,} / "
                     f"{event_metrics.get('n_expense_forecast', 0):,} customers"
                     + (f" (no trained model: {', '.join(event_metrics['no_model'])})"
                        if event_metrics.get("no_model") else ""))
    life_metrics = read_run_metrics(paths, d, "life_events")
    if life_metrics:
        by_method: dict[str, list[str]] = {}
        for event, versions in sorted(life_metrics.get("row_model_versions", {}).items()):
            by_method.setdefault("rule" if all(v.startswith("rule:") for v in versions) else "model", []).append(event)
        lines.append(f"Life events: {life_metrics['n_scored_customers']:,} consented customers scored, flagged: "
                     + ", ".join(f"{e} {n:,}" for e, n in life_metrics["flagged"].items())
                     + "".join(f"; by its {m}: {', '.join(events)}" for m, events in sorted(by_method.items())))
    decide_metrics = read_run_metrics(paths, d, "decide")
    if decide_metrics:
        lines.append(f"Next best actions: {decide_metrics['n_published']:,} for {decide_metrics['n_customers']:,} "
                     f"customers ({decide_metrics['n_control']:,} in the control group), "
                     f"{decide_metrics['n_advisor_queue']:,} in the advisor queue; dropped by stage: "
                     + ", ".join(f"{k} {v:,}" for k, v in sorted(decide_metrics["dropped_by_stage"].items())))
        lines.append(f"  {lake.partition_path(paths, 'gold', 'next_best_actions', as_of=d)}")
    lines.append("")
    lines.append("Example query (warehouse.duckdb, opened read-only):")
    lines.append("  " + example_query())
    if paths.warehouse.exists():
        con = connect_warehouse(paths.warehouse)
        lines += ["    " + " | ".join(str(v) for v in row) for row in con.execute(example_query()).fetchall()]
        con.close()
    lines.append("Your own queries:")
    lines.append(f"  .venv/bin/python -c \"import duckdb; con = duckdb.connect('{paths.warehouse}', read_only=True, "
                 f"config={{'file_search_path': '{paths.home}'}}); "
                 f"print(con.sql('select * from latest_customers limit 5'))\"")
    lines.append(f"  (the views read the files by paths relative to {paths.home}: open it from there, or set "
                 f"file_search_path to it; docs/access.md)")
    return "\n".join(lines)


def business_date(data_interval_start: Any) -> date:
    """D for an Airflow run: the UTC calendar day its one-day data interval starts on."""
    if data_interval_start is None:
        raise SegoneError("no data interval: the DAG must run on a timetable with a one-day interval")
    moment = data_interval_start
    if getattr(moment, "tzinfo", None) is not None:
        from datetime import timezone

        moment = moment.astimezone(timezone.utc)
    return date(moment.year, moment.month, moment.day)
