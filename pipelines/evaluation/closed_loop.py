"""`segone closed-loop`: a simulated bank that lives night after night, answers the bank's recommendations, and a
policy that learns from the answers (DESIGN section 8; docs/closed_loop.md).

simulate a base history (the world kept for the nights ahead) -> load it -> train -> then for each of K nights:
the night itself (`pipelines.stages.run_night`, the same stage functions the nightly DAG runs), the customers'
answers and the next day (`pipelines.sources.simulate.world.step`), and `retrain_models` (`pipelines.retrain`, the same code
as the DAG) after every `every_nights` nights. After the K nights the world lives on for the value horizon without
new recommendations (ingest, validation, conform and value measurement only), so that the last nights'
recommendations have their whole window measured.

It writes reports/closed_loop/closed_loop.json (per night: treated and control value per customer, acceptance rate,
policy version; the uplift with its 95% interval, first and last week, every offline estimate with what the policy
then earned, every promotion, the breaches found by an independent audit of the published actions) and an HTML page
beside it with the curves. The pipeline itself knows nothing of the simulator: the landing files and the CRM export
are the only interface.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake
from pipelines.config import Paths, load_config, parse_yaml
from pipelines.errors import SegoneError

log = logging.getLogger(__name__)

MARKER = "closed_loop_home.json"
SETTINGS = "closed_loop_settings.yaml"
HOME_PARTS = ("landing", "lake", "models", "runs", "exports", "reports", "truth", "tmp", "warehouse.duckdb",
              "logs", SETTINGS)


def loop_buckets(customers: int, workers: int, per_bucket: int, most: int) -> int:
    """The loop's bank's customer buckets: about `per_bucket` customers each, rounded up to a multiple of the
    worker processes (so no worker waits on a last lone shard), at least one and at most `most`."""
    wanted = max(1, math.ceil(customers / max(1, per_bucket)))
    return max(1, min(most, workers * math.ceil(wanted / workers)))


def _caller_overlay() -> dict[str, Any]:
    """The changes of the caller's $SEGONE_SETTINGS (empty without one); a bad overlay fails with its one-line
    error."""
    import yaml

    caller = os.environ.get("SEGONE_SETTINGS") or ""
    if not caller:
        return {}
    load_config("segone")
    return parse_yaml(Path(caller).read_text(encoding="utf-8")) or {}


def _home_overlay(paths: Paths, changes: dict[str, Any], customers: int, workers: int,
                  buckets: int | None) -> tuple[Path, int]:
    """Writes the settings overlay the loop's home runs with into the home: the caller's changes with the lake's
    bucket count set. An explicit `buckets`, else a bucket count the caller's overlay sets, else `loop_buckets` of
    the bank's size."""
    import yaml

    lake_changes = changes.setdefault("segone", {}).setdefault("lake", {})
    if buckets is None:
        buckets = lake_changes.get("n_buckets")
    if buckets is None:
        buckets = loop_buckets(customers, workers, int(load_config("learning")["closed_loop"]["customers_per_bucket"]),
                               lake.n_buckets())
    if int(buckets) < 1:
        raise SegoneError(f"buckets must be 1 or more, not {buckets}")
    lake_changes["n_buckets"] = int(buckets)
    path = paths.home / SETTINGS
    path.write_text("# written by segone closed-loop: run any other segone command in this home with\n"
                    f"# SEGONE_SETTINGS={path}\n" + yaml.safe_dump(changes, sort_keys=True), encoding="utf-8")
    return path, int(buckets)


def home_settings(paths: Paths) -> Path | None:
    """The settings overlay a closed loop left in its home, if any."""
    path = paths.home / SETTINGS
    return path if path.exists() else None


def adopt_home_settings(paths: Paths) -> None:
    """A command run in a closed loop's home without $SEGONE_SETTINGS runs with the settings the loop built the home
    with (its lake's bucket count above all: read with another, every bucketed table would be misread)."""
    overlay = home_settings(paths)
    if overlay is not None and not os.environ.get("SEGONE_SETTINGS"):
        os.environ["SEGONE_SETTINGS"] = str(overlay)
        log.info("this home was built by segone closed-loop: running with its settings %s", overlay)


class _settings:
    """$SEGONE_SETTINGS set to `path` (None: left as it is) for the block, then put back."""

    def __init__(self, path: Path | None):
        self.path, self.before = path, os.environ.get("SEGONE_SETTINGS")

    def __enter__(self):
        if self.path is not None:
            os.environ["SEGONE_SETTINGS"] = str(self.path)
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            if self.before is None:
                os.environ.pop("SEGONE_SETTINGS", None)
            else:
                os.environ["SEGONE_SETTINGS"] = self.before
        return False


def _fresh_home(paths: Paths) -> None:
    """The loop needs a home of its own: an empty one, or one a previous closed loop made (then it is cleared)."""
    home = paths.home
    home.mkdir(parents=True, exist_ok=True)
    present = [p for p in home.iterdir() if p.name != MARKER]
    if present and not (home / MARKER).exists():
        raise SegoneError(f"{home} already holds data ({', '.join(sorted(p.name for p in present)[:5])}): the closed "
                          f"loop simulates its own bank; point SEGONE_HOME at an empty folder")
    for part in HOME_PARTS:
        target = home / part
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (home / MARKER).write_text(json.dumps({"created_by": "segone closed-loop"}) + "\n", encoding="utf-8")


def default_workers() -> int:
    """Processes for the night's shards: the machine's cores, at most 2 (DESIGN's machine)."""
    return max(1, min(2, os.cpu_count() or 1))


def _shard(home: str, function: str, day: date, bucket: int) -> dict[str, Any]:
    """One shard of a stage in a worker process (the DAG's mapped task)."""
    from pipelines import stages

    return getattr(stages, function)(Paths(Path(home)), day, bucket)


def _retrain(home: str, day: date, family: str) -> dict[str, Any]:
    """One family's retraining in a worker process (the retrain_models DAG's task)."""
    from pipelines.retrain import retrain_family

    return retrain_family(Paths(Path(home)), day, family)


def retrain_all(paths: Paths, day: date, families: tuple[str, ...], pool=None) -> list[dict[str, Any]]:
    """The retraining of D as the retrain_models DAG runs it: the forecasting families and the life events at once
    (with a process pool, in its processes: they are independent tasks of the DAG), then the policy. Returns the
    decisions in the order of `families`."""
    from pipelines.retrain import retrain_family

    first = [f for f in families if f != "policy"]
    if pool is None:
        out = {f: retrain_family(paths, day, f) for f in first}
    else:
        futures = {f: pool.submit(_retrain, str(paths.home), day, f) for f in first}
        out = {f: future.result() for f, future in futures.items()}
        for family in first:      # the workers' own log lines do not reach this process's log
            log.info("retrain %s for %s: %s", family, day, out[family]["reason"])
    if "policy" in families:
        out["policy"] = retrain_family(paths, day, "policy")
    return [out[f] for f in families]


def run_night(paths: Paths, day: date, pool=None) -> dict[str, Any]:
    """The night of D, stage after stage (`pipelines.stages.NIGHT`); with a process pool, the shards of each
    per-shard stage run in parallel as the DAG's mapped tasks do (the same functions, the stage's metrics summarised
    from the shards' in bucket order, as the stage does when it runs them in turn). Without one:
    `pipelines.stages.run_night`."""
    from importlib import import_module

    from pipelines import stages

    if pool is None:
        return stages.run_night(paths, day)
    out: dict[str, Any] = {}
    for name, stage in stages.NIGHT:
        sharded = stages.NIGHT_SHARDS.get(name)
        if sharded is None:
            out[name] = stage(paths, day)
            continue
        stages.void_later_results(paths, day.isoformat(), sharded.family)
        futures = [pool.submit(_shard, str(paths.home), sharded.shard_function, day, int(b))
                   for b in sharded.shard_list(paths, day)]
        out[name] = getattr(import_module(sharded.summary_module), "summarise_shards")(
            paths, day, [f.result() for f in futures])
    return out


def closed_loop(paths: Paths, customers: int = 3000, nights: int = 28, seed: int = 42, learning: bool = True,
                days: int = 240, end_date: date = date(2026, 11, 20), every: int | None = None,
                compare_with: Path | None = None, workers: int | None = None,
                buckets: int | None = None) -> dict[str, Any]:
    """Run the loop (see the module docstring); returns the summary written to closed_loop.json. `workers`: processes
    for the night's shards (default: `default_workers()`; 1 runs them in turn in this process). `buckets`: the
    loop's lake's customer buckets (default: `_home_overlay`'s choice); the home keeps them in its settings overlay
    (closed_loop_settings.yaml), which every stage of the run, and `segone closed-loop-report`, reads."""
    if nights < 1:
        raise SegoneError("the closed loop needs at least one night")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise SegoneError(f"workers must be 1 or more, not {workers}")
    changes = _caller_overlay()           # read before the home is cleared: it may be the home's own overlay
    _fresh_home(paths)
    overlay, buckets = _home_overlay(paths, changes, customers, workers, buckets)
    with _settings(overlay):
        return _closed_loop(paths, customers, nights, seed, learning, days, end_date, every, compare_with, workers,
                            buckets)


def _closed_loop(paths: Paths, customers: int, nights: int, seed: int, learning: bool, days: int, end_date: date,
                 every: int | None, compare_with: Path | None, workers: int, buckets: int) -> dict[str, Any]:
    from pipelines.parallel import process_pool
    from pipelines.retrain import FAMILIES
    from pipelines.sources.simulate import world
    from pipelines.value import rewards
    from pipelines import stages

    started = time.perf_counter()
    every = int(every or load_config("learning")["retrain"]["every_nights"])
    horizon = int(rewards()["horizon_days"])
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 2)
        return out

    first_night = end_date
    timed("simulate", world.start, paths, customers=customers, days=days, end_date=first_night, seed=seed,
          horizon=nights + horizon)
    timed("load_history", stages.load_history, paths)
    timed("train", stages.train, paths, first_night - timedelta(days=1))
    families = FAMILIES if learning else tuple(f for f in FAMILIES if f != "policy")
    retrains: list[dict[str, Any]] = []
    night_list = [first_night + timedelta(days=k) for k in range(nights)]
    pool = process_pool(workers) if workers > 1 else None
    try:
        for k, night in enumerate(night_list):
            t0 = time.perf_counter()
            timed("nights", run_night, paths, night, pool)
            timed("simulator", world.step, paths, night)
            if (k + 1) % every == 0 and k + 1 < nights:
                for decision in timed("retrain", retrain_all, paths, night, families, pool):
                    retrains.append({"date": night.isoformat(), **decision})
            log.info("closed loop: night %s done in %.1f s", night, time.perf_counter() - t0)
    finally:
        if pool is not None:
            pool.shutdown()
    # the world lives on for the value horizon: no new recommendations, every window measured
    tail = [night_list[-1] + timedelta(days=j + 1) for j in range(horizon)]
    for j, day in enumerate(tail):
        for name in ("ingest", "validate", "conform", "validate_silver", "measure_value"):
            timed("tail", getattr(stages, name), paths, day)
        if j + 1 < len(tail):
            timed("simulator", world.step, paths, day)
    t0 = time.perf_counter()
    summary = summarise(paths, night_list, tail[-1] if tail else night_list[-1], retrains, learning)
    summary["run"] = {"customers": customers, "nights": nights, "seed": seed, "learning": "on" if learning else "off",
                      "history_days": days, "first_night": first_night.isoformat(), "retrain_every_nights": every,
                      "value_horizon_days": horizon, "workers": workers, "buckets": buckets,
                      "seconds": round(time.perf_counter() - started, 1),
                      "seconds_by_part": timings}
    if compare_with is not None:
        summary["summary"]["comparison"] = comparison(paths, summary, night_list, compare_with)
    out = paths.reports / "closed_loop"
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_loop.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n", encoding="utf-8")
    write_page(summary, out / "closed_loop.html")
    summary["run"]["report_seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def closed_loop_command(paths: Paths, customers: int, nights: int, seed: int, learning: str = "on", days: int = 240,
                        end_date: date = date(2026, 11, 20), compare_with: Path | None = None,
                        workers: int | None = None, buckets: int | None = None) -> dict[str, Any]:
    summary = closed_loop(paths, customers=customers, nights=nights, seed=seed, learning=learning == "on",
                          days=days, end_date=end_date, compare_with=compare_with, workers=workers, buckets=buckets)
    s = summary["summary"]
    return {"report": str(paths.reports / "closed_loop" / "closed_loop.json"),
            "uplift_per_customer": s["uplift_per_customer"], "uplift_ci": [s["uplift_ci_low"], s["uplift_ci_high"]],
            "first_week_value": s["first_week_value"], "last_week_value": s["last_week_value"],
            "breaches": s["breaches"], "promotions": len(s["promotions"]), "seconds": summary["run"]["seconds"]}


def _json(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (date, pd.Timestamp)):
        return value.isoformat()
    return str(value)


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else round(x, 6)


# ---------------------------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------------------------

def _query(paths: Paths, sql: str, tables: tuple[str, ...]) -> pd.DataFrame:
    con = lake.connect()
    try:
        for table in tables:
            scan = lake.scan_sql(paths, "gold", table)
            if scan is None:
                return pd.DataFrame()
            con.execute(f"create or replace view {table} as select * from {scan}")
        return con.execute(sql).df()
    finally:
        con.close()


def summarise(paths: Paths, nights: list[date], last_day: date, retrains: list[dict[str, Any]],
              learning: bool) -> dict[str, Any]:
    per_night = _per_night(paths, nights)
    summary_row = _query(paths, f"""
        select * from value_summary where as_of = '{last_day.isoformat()}' and arm = 'uplift'
            and action_class = 'all'""", ("value_summary",))
    uplift = summary_row.iloc[0] if len(summary_row) else None
    week = 7
    first = [n["treated_value_per_customer"] for n in per_night[:week]]
    last = [n["treated_value_per_customer"] for n in per_night[-week:]]
    ope = _ope(paths, retrains, nights)
    weeks = []
    for k in range(0, len(per_night), week):
        part = per_night[k:k + week]

        def mean_of(key: str, rows=part) -> float | None:
            values = [n[key] for n in rows if n.get(key) is not None]
            return _num(np.mean(values)) if values else None

        weeks.append({"first_night": part[0]["date"], "last_night": part[-1]["date"],
                      "value_per_treated_customer": mean_of("treated_value_per_customer"),
                      "policy_value_per_treated_customer": mean_of("treated_policy_value_per_customer"),
                      "protective_value_per_treated_customer": mean_of("treated_protective_value_per_customer"),
                      "recommendations": int(sum(n["recommendations"] for n in part)),
                      "policy_versions": sorted({n["policy_version"] for n in part if n["policy_version"]})})
    promotions = [{"date": r["date"], "family": r["family"], "from": r.get("champion_version"),
                   "to": r.get("promoted_version"), "reason": r.get("reason")}
                  for r in retrains if r.get("promoted")]
    breaches = audit_breaches(paths, nights)
    summary = {
        "uplift_per_customer": _num(uplift["cumulative_value_per_customer"]) if uplift is not None else None,
        "uplift_ci_low": _num(uplift["cumulative_ci_low"]) if uplift is not None else None,
        "uplift_ci_high": _num(uplift["cumulative_ci_high"]) if uplift is not None else None,
        "first_week_value": _num(np.mean(first)) if first else None,
        "last_week_value": _num(np.mean(last)) if last else None,
        # the first night decides for every customer at once (the backlog, one-off products taken): without it
        "first_week_value_without_first_night": _num(np.mean(first[1:])) if len(first) > 1 else None,
        "weeks": weeks,
        "ope": ope, "promotion_tests": _promotion_tests(retrains), "promotions": promotions,
        "breaches": int(breaches["total"]),
        "breaches_by_rule": breaches["by_rule"],
        "value_measured_through": last_day.isoformat(),
        "value_definition": "realised value per customer of the nights' recommendations (config/rewards.yaml), "
                            "cumulative over the run; uplift = treated minus control (Welch 95% interval)",
        "retrain_decisions": [{k: v for k, v in r.items() if k != "details"} for r in retrains],
    }
    return {"nights": per_night, "summary": summary}


def _per_night(paths: Paths, nights: list[date]) -> list[dict[str, Any]]:
    """Per night: the realised value of that night's recommendations per customer of each arm, the acceptance
    rate, the policy version, and the day's value per customer (value_summary)."""
    lo, hi = nights[0].isoformat(), nights[-1].isoformat()
    recs = _query(paths, f"""
        select as_of, is_control, count(*) as n, sum(accepted::int) as accepted, sum(value_to_date) as value,
            coalesce(sum(value_to_date) filter (where action_class = 'protective'), 0) as protective_value,
            bool_and(matured) as matured, mode(policy_version) as policy_version
        from realised_value where as_of between '{lo}' and '{hi}' group by all""", ("realised_value",))
    arms = _query(paths, f"""
        select as_of, is_control, count(distinct customer_id) as n_customers
        from (select customer_id, is_control, as_of from next_best_actions where as_of between '{lo}' and '{hi}'
              union all
              select customer_id, false as is_control, as_of from bandit_log where as_of between '{lo}' and '{hi}'
              union all
              select customer_id, true as is_control, as_of from decision_log
              where as_of between '{lo}' and '{hi}' and stage = 'control_group')
        group by all""", ("next_best_actions", "bandit_log", "decision_log"))
    # the no-contact arm's picks (config/decisioning.yaml exploration.no_contact): greedy ones are the policy's
    held = _query(paths, f"""
        select as_of, count(*) as no_contact, count(*) filter (where not is_exploration) as no_contact_greedy
        from bandit_log where as_of between '{lo}' and '{hi}' and recommendation_id is null
        group by all""", ("bandit_log",))
    day = _query(paths, f"""
        select as_of, arm, value_per_customer from value_summary
        where as_of between '{lo}' and '{hi}' and action_class = 'all'""", ("value_summary",))
    out = []
    for night in nights:
        key = pd.Timestamp(night)

        def pick(frame: pd.DataFrame, **match) -> pd.DataFrame:
            if frame.empty:
                return frame
            sel = pd.to_datetime(frame["as_of"].astype(str)) == key
            for column, value in match.items():
                sel &= frame[column] == value
            return frame[sel]

        row: dict[str, Any] = {"date": night.isoformat()}
        for label, is_control in (("treated", False), ("control", True)):
            r, a = pick(recs, is_control=is_control), pick(arms, is_control=is_control)
            n_customers = int(a["n_customers"].sum()) if len(a) else 0
            value = float(r["value"].sum()) if len(r) else 0.0
            row[f"{label}_value_per_customer"] = _num(value / n_customers) if n_customers else None
            row[f"{label}_customers"] = n_customers
            if label == "treated":
                # what the policy chooses (service and commercial) and what comes first whatever it learns
                protective = float(r["protective_value"].sum()) if len(r) else 0.0
                row["treated_protective_value_per_customer"] = _num(protective / n_customers) if n_customers \
                    else None
                row["treated_policy_value_per_customer"] = _num((value - protective) / n_customers) \
                    if n_customers else None
        h = pick(held)
        row["no_contact_decisions"] = int(h["no_contact"].sum()) if len(h) else 0
        row["no_contact_greedy"] = int(h["no_contact_greedy"].sum()) if len(h) else 0
        r = pick(recs)
        n = int(r["n"].sum()) if len(r) else 0
        row["acceptance_rate"] = _num(float(r["accepted"].sum()) / n) if n else None
        row["recommendations"] = n
        versions = r.sort_values("n")["policy_version"].tolist() if len(r) else []
        row["policy_version"] = versions[-1] if versions else None
        row["matured"] = bool(r["matured"].all()) if len(r) else False
        for arm in ("treated", "control", "uplift"):
            d = pick(day, arm=arm)
            row[f"day_value_{arm}"] = _num(d["value_per_customer"].iloc[0]) if len(d) else None
        out.append(row)
    return out


def _ope(paths: Paths, retrains: list[dict[str, Any]], nights: list[date]) -> list[dict[str, Any]]:
    """Every policy estimate made at a retraining (on the decisions of its evaluation window), with what the policy
    deployed after it then earned (its realised value per bandit decision in the nights until the next retraining),
    (the paired difference the promotion was decided on: `_promotion_tests`)."""
    decisions = [r for r in retrains if r["family"] == "policy" and r.get("details")]
    dates = [date.fromisoformat(r["date"]) for r in retrains if r["family"] == "policy"]
    out = []
    for r in decisions:
        d = date.fromisoformat(r["date"])
        later = [x for x in dates if x > d]
        end = min(later) if later else nights[-1]
        deployed = r.get("promoted_version")
        realized = _realized(paths, d, end, deployed)
        for role, version in (("challenger", r.get("challenger_version")), ("champion", r.get("champion_version"))):
            for estimator, est in (r["details"].get(role) or {}).items():
                out.append({"date": r["date"], "policy": version, "role": role, "estimator": estimator,
                            "estimate": _num(est["estimate"]), "ci_low": _num(est["ci_low"]),
                            "ci_high": _num(est["ci_high"]),
                            "realized": realized["value"] if realized and version == deployed else None,
                            "realized_ci": ([realized["ci_low"], realized["ci_high"]]
                                            if realized and version == deployed else None),
                            "realized_decisions": realized["n_decisions"] if realized and version == deployed
                            else None,
                            "contains_realized": (bool(_num(est["ci_low"]) <= realized["value"] <=
                                                       _num(est["ci_high"]))
                                                  if realized and realized["value"] is not None
                                                  and version == deployed else None),
                            "n_decisions": r["details"].get("n_decisions"),
                            "window": _window(r["details"].get("nights"))})
    return out


def _promotion_tests(retrains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy retraining: the paired difference challenger minus champion on the same decisions (what the
    promotion is decided on), its window and how often the two policies' greedy choices agree."""
    out = []
    for r in retrains:
        details = r.get("details") or {}
        if r["family"] != "policy" or not details.get("difference"):
            continue
        for estimator, est in details["difference"].items():
            out.append({"date": r["date"], "challenger": r.get("challenger_version"),
                        "champion": r.get("champion_version"), "estimator": estimator,
                        "difference": _num(est["estimate"]), "ci_low": _num(est["ci_low"]),
                        "ci_high": _num(est["ci_high"]), "n_decisions": details.get("n_decisions"),
                        "window": _window(details.get("nights")),
                        "greedy_agreement": _num(details.get("greedy_agreement")), "promoted": bool(r.get("promoted"))})
    return out


def _window(nights: list[str] | None) -> list[str] | None:
    """The first and last night of the decisions an estimate was made on."""
    return [min(nights), max(nights)] if nights else None


def _realized(paths: Paths, after: date, through: date, version: str | None) -> dict[str, Any] | None:
    """What a policy earned: the mean realised value of its bandit decisions in (after, through], with a 95% interval
    (cluster-robust by customer)."""
    from models.ope import on_policy
    from pipelines.policy import logged_version, matured_decisions_sql

    if version is None:
        return None
    logged = logged_version(paths, version)
    frame = _query(paths, f"""
        select b.customer_id, b.value from {matured_decisions_sql("bandit_log", "realised_value")} as b
        where b.as_of > '{after.isoformat()}' and b.as_of <= '{through.isoformat()}'
            and b.policy_version = '{logged}'""", ("bandit_log", "realised_value"))
    if frame.empty:
        return None
    est = on_policy(frame["value"].to_numpy(float), groups=frame["customer_id"].to_numpy())
    return {"value": _num(est.estimate), "ci_low": _num(est.ci_low), "ci_high": _num(est.ci_high),
            "n_decisions": int(len(frame)), "nights": [after.isoformat(), through.isoformat()]}


def compare(run: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """This run against another on the same customers (learning on against off): the realised value per treated
    customer summed over the nights, over all nights and over the nights after this run's first policy promotion
    (before it both runs use the catalogue's priors)."""
    promoted = sorted(p["date"] for p in run["summary"].get("promotions", []) if p["family"] == "policy")
    since = promoted[0] if promoted else None

    def total(doc: dict[str, Any], after: str | None = None) -> float:
        return float(np.sum([n["treated_value_per_customer"] or 0.0 for n in doc["nights"]
                             if after is None or n["date"] > after]))

    out = {"this_run": run["run"]["learning"], "other_run": other.get("run", {}).get("learning"),
           "same_customers_and_seed": (run["run"]["customers"], run["run"]["seed"]) ==
           (other.get("run", {}).get("customers"), other.get("run", {}).get("seed")),
           "value_per_treated_customer_this": _num(total(run)),
           "value_per_treated_customer_other": _num(total(other))}
    mine, theirs = total(run), total(other)
    out["relative_gain"] = _num((mine - theirs) / abs(theirs)) if theirs else None
    theirs_by_date = {n["date"]: n for n in other.get("nights", [])}
    out["nights"] = [{"date": n["date"], "treated_value_per_customer_this": n["treated_value_per_customer"],
                      "treated_value_per_customer_other":
                          theirs_by_date.get(n["date"], {}).get("treated_value_per_customer"),
                      "acceptance_rate_this": n["acceptance_rate"],
                      "acceptance_rate_other": theirs_by_date.get(n["date"], {}).get("acceptance_rate"),
                      "policy_version_this": n["policy_version"],
                      "policy_version_other": theirs_by_date.get(n["date"], {}).get("policy_version")}
                     for n in run["nights"]]
    other_summary = other.get("summary", {})
    out["other_summary"] = {k: other_summary.get(k) for k in ("uplift_per_customer", "uplift_ci_low",
                                                             "uplift_ci_high", "first_week_value",
                                                             "last_week_value", "breaches")}
    out["first_policy_promotion"] = since
    if since:
        mine, theirs = total(run, since), total(other, since)
        out.update({"value_after_promotion_this": _num(mine), "value_after_promotion_other": _num(theirs),
                    "relative_gain_after_promotion": _num((mine - theirs) / abs(theirs)) if theirs else None})
    return out


def other_report(compare_with: Path) -> tuple[Path, Path | None]:
    """The other run's closed_loop.json and its home (None when the JSON is not in a loop's home, e.g. a copy):
    `compare_with` is either the JSON or the home."""
    given = Path(compare_with)
    report = given / "reports" / "closed_loop" / "closed_loop.json" if given.is_dir() else given
    if not report.exists():
        raise SegoneError(f"no such report to compare with: {compare_with}")
    home = report.resolve().parents[2] if len(report.resolve().parents) > 2 else None
    if home is None or not (home / MARKER).exists() or not (home / "lake").is_dir():
        home = None
    return report, home


def customer_values(paths: Paths, nights: list[date]) -> pd.DataFrame:
    """Each treated customer's value over the nights: the realised value (gold realised_value.value_to_date, as
    measured through the run's tail) of the customer's recommendations of those nights outside the control group,
    0 for a treated customer without any; treated = decided for by the policy on one of the nights (gold
    next_best_actions outside the control group, or gold bandit_log, as `_per_night` counts them). The numerator
    of the nights' `treated_value_per_customer`, customer by customer."""
    dates = ", ".join(f"'{n.isoformat()}'" for n in nights)
    treated = _query(paths, f"""
        select distinct customer_id from (
            select customer_id from next_best_actions where as_of in ({dates}) and not is_control
            union all
            select customer_id from bandit_log where as_of in ({dates}))""", ("next_best_actions", "bandit_log"))
    values = _query(paths, f"""
        select customer_id, sum(value_to_date) as value from realised_value
        where as_of in ({dates}) and not is_control group by all""", ("realised_value",))
    if treated.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
    out = treated.merge(values, on="customer_id", how="left") if len(values) else treated.assign(value=0.0)
    out["value"] = out["value"].astype(float).fillna(0.0)
    return out[["customer_id", "value"]].sort_values("customer_id", ignore_index=True)


def first_policy_promotion(*runs: dict[str, Any]) -> str | None:
    """The first retraining that promoted a learned policy in any of the runs (its date: the night it followed)."""
    dates = [p["date"] for run in runs for p in (run.get("summary") or {}).get("promotions", [])
             if p.get("family") == "policy"]
    return min(dates) if dates else None


def paired(paths: Paths, nights: list[date], other_home: Path | None, other: dict[str, Any],
           since: str | None = None) -> dict[str, Any]:
    """This run against the other customer by customer over the nights both ran (`customer_values` of each home,
    compared by `pipelines.evaluation.paired.paired_comparison`, settings config/learning.yaml
    closed_loop.paired). With `since` (the first policy promotion of either run) also `after_promotion`: the same
    over the nights after it only, when a learned policy decided in one run (before it both ran the catalogue's
    priors, and those nights' customers differ by 0 and dilute the relative gain)."""
    from pipelines.evaluation.paired import paired_comparison

    if other_home is None:
        return {"available": False,
                "reason": "the other report is not in a closed loop's home (its lake holds the values per customer): "
                          "compare with the other run's home or its reports/closed_loop/closed_loop.json"}
    theirs = {n["date"] for n in other.get("nights", [])}
    both = [n for n in nights if n.isoformat() in theirs]
    if not both:
        return {"available": False, "reason": "the two runs share no night"}
    settings = load_config("learning")["closed_loop"]["paired"]

    def over(part: list[date]) -> dict[str, Any]:
        result = paired_comparison(customer_values(paths, part), customer_values(Paths(other_home), part),
                                   target=float(settings["target"]), resamples=int(settings["bootstrap_resamples"]),
                                   seed=int(settings["bootstrap_seed"]))
        return {"available": True, "nights": [part[0].isoformat(), part[-1].isoformat()], "n_nights": len(part),
                **result.as_dict()}

    out = {**over(both), "other_home": str(other_home)}
    if since is not None:
        later = [n for n in both if n.isoformat() > since]
        out["after_promotion"] = ({"since": since, **over(later)} if later else
                                  {"since": since, "available": False,
                                   "reason": f"no night both runs ran after the policy promotion of {since}"})
    return out


# what makes two runs the same simulated world (the same customers answering the same offers alike, section 15)
WORLD_KEYS = ("customers", "seed", "history_days", "first_night", "value_horizon_days")


def world_differences(run: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The settings of the simulated world (`WORLD_KEYS`) in which two runs' `run` records differ (a setting the
    other's record lacks counts as different), as "key this/other"; empty when they are one world."""
    return [f"{k} {run.get(k)}/{other.get(k)}" for k in WORLD_KEYS
            if k not in other or str(run.get(k)) != str(other.get(k))]


def comparison(paths: Paths, summary: dict[str, Any], nights: list[date], compare_with: Path) -> dict[str, Any]:
    """`summary.comparison`: the two runs' summed nights (`compare`) and, customer by customer, `paired` (only for
    two runs of one world: another seed or bank has other customers under the same ids, and their difference would
    say nothing about the policies)."""
    report, other_home = other_report(compare_with)
    other = json.loads(report.read_text(encoding="utf-8"))
    out = compare(summary, other)
    differ = world_differences(summary["run"], other.get("run") or {})
    if differ:
        out["paired"] = {"available": False,
                         "reason": "the two runs are not the same simulated world (" + ", ".join(differ) +
                                   "): a customer-by-customer difference would compare other customers"}
    else:
        out["paired"] = paired(paths, nights, other_home, other, since=first_policy_promotion(summary, other))
    return out


def registry_decisions(paths: Paths) -> list[dict[str, Any]]:
    """Every retraining decision of the home (gold model_registry), as the loop recorded them."""
    frame = _query(paths, "select * from model_registry order by as_of, family", ("model_registry",))
    out = []
    for row in frame.to_dict("records"):
        decision = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        decision["date"] = str(row["as_of"])[:10]
        decision["details"] = json.loads(row["details"]) if row.get("details") else {}
        out.append(decision)
    return out


def rebuild(paths: Paths, compare_with: Path | None = None) -> dict[str, Any]:
    """closed_loop.json and the page again from the lake (the nights, the value, the registry) and the run's own
    settings, e.g. after a change to the summary or to add a comparison."""
    out = paths.reports / "closed_loop"
    path = out / "closed_loop.json"
    if not path.exists():
        raise SegoneError(f"no closed-loop report in {out}: run `segone closed-loop` first")
    previous = json.loads(path.read_text(encoding="utf-8"))
    run = previous["run"]
    first = date.fromisoformat(run["first_night"])
    nights = [first + timedelta(days=k) for k in range(int(run["nights"]))]
    last_day = date.fromisoformat(previous["summary"]["value_measured_through"])
    summary = summarise(paths, nights, last_day, registry_decisions(paths), run["learning"] == "on")
    summary["run"] = run
    if compare_with is not None:
        summary["summary"]["comparison"] = comparison(paths, summary, nights, compare_with)
    path.write_text(json.dumps(summary, indent=2, default=_json) + "\n", encoding="utf-8")
    write_page(summary, out / "closed_loop.html")
    return summary


def report_command(paths: Paths, compare_with: Path | None = None) -> dict[str, Any]:
    """`segone closed-loop-report [--compare-with OTHER]` (the CLI runs it with the home's settings:
    `adopt_home_settings`)."""
    summary = rebuild(paths, compare_with)
    s = summary["summary"]
    return {"report": str(paths.reports / "closed_loop" / "closed_loop.json"),
            "uplift_per_customer": s["uplift_per_customer"], "uplift_ci": [s["uplift_ci_low"], s["uplift_ci_high"]],
            "first_week_value": s["first_week_value"], "last_week_value": s["last_week_value"],
            "breaches": s["breaches"], "comparison": s.get("comparison")}


# ---------------------------------------------------------------------------------------------------------------
# Breaches: an independent audit of what was published
# ---------------------------------------------------------------------------------------------------------------

def audit_breaches(paths: Paths, nights: list[date]) -> dict[str, Any]:
    """Published actions that broke a suitability, consent or contact rule, checked from the lake on its own terms:
    credit to a customer at risk (the decision context's flags), a channel or data use without consent on the
    night (silver consent_state), a non-protective action to a control customer, marketing on a channel the customer
    unsubscribed from, and more service or commercial messages on a channel in 7 days than its weekly cap."""
    from pipelines.actions import load_catalogue
    from pipelines.decide import policy as decisioning

    catalogue = {a.id: a for a in load_catalogue()}
    pol = decisioning()
    caps = pol["contact_policy"]["weekly_caps"]
    capped = set(pol["contact_policy"]["capped_classes"])
    by_rule = {"suitability": 0, "consent": 0, "control_group": 0, "unsubscribed": 0, "weekly_cap": 0}
    con = lake.connect()
    try:
        nba_scan = lake.scan_sql(paths, "gold", "next_best_actions")
        ctx_scan = lake.scan_sql(paths, "gold", "decision_context")
        crm_scan = lake.scan_sql(paths, "silver", "crm_responses")
        if nba_scan is None:
            return {"total": 0, "by_rule": by_rule}
        lo, hi = nights[0].isoformat(), nights[-1].isoformat()
        nba = con.execute(f"select * from {nba_scan} where as_of between '{lo}' and '{hi}'").df()
        nba["as_of"] = pd.to_datetime(nba["as_of"].astype(str)).dt.date
        ctx = con.execute(f"select customer_id, as_of, is_shortfall_risk, in_arrears, is_unarranged_overdraft, "
                          f"is_gambling_harm from {ctx_scan} where as_of between '{lo}' and '{hi}'").df() \
            if ctx_scan else pd.DataFrame()
        responses = con.execute(f"select customer_id, channel, event, event_at, action_id, recommendation_id "
                                f"from {crm_scan}").df() if crm_scan else pd.DataFrame()
        consents = []
        for night in nights:
            folder = lake.partition_path(paths, "silver", "consent_state", as_of=night.isoformat())
            if folder.exists() and any(folder.rglob("*.parquet")):
                frame = con.execute(f"select * from read_parquet('{folder}/**/*.parquet')").df()
                frame["as_of"] = night
                consents.append(frame)
        consent = pd.concat(consents, ignore_index=True) if consents else pd.DataFrame()
    finally:
        con.close()
    nba["is_credit"] = nba["action_id"].map(lambda a: catalogue[a].is_credit if a in catalogue else False)
    if len(ctx):
        ctx["as_of"] = pd.to_datetime(ctx["as_of"].astype(str)).dt.date
        merged = nba[nba["is_credit"]].merge(ctx, on=["customer_id", "as_of"], how="left")
        risky = merged[["is_shortfall_risk", "in_arrears", "is_unarranged_overdraft", "is_gambling_harm"]] \
            .fillna(1.0).max(axis=1) > 0
        by_rule["suitability"] = int(risky.sum())
    by_rule["control_group"] = int((nba["is_control"].astype(bool) & (nba["action_class"] != "protective")).sum())
    if len(consent):
        merged = nba.merge(consent, on=["customer_id", "as_of"], how="left")
        bad = np.zeros(len(merged), dtype=bool)
        for i, row in enumerate(merged.itertuples(index=False)):
            action = catalogue.get(row.action_id)
            if action is None:
                continue
            purpose = action.channels.get(row.channel)
            needed = [purpose] if purpose else []
            needed += list(action.data_purposes)
            for p in needed:
                column = f"is_{p}_allowed"
                value = getattr(row, column, None) if column in merged.columns else None
                allowed = (p == "service_alerts") if value is None or (isinstance(value, float) and
                                                                        math.isnan(value)) else bool(value)
                if not allowed:
                    bad[i] = True
        by_rule["consent"] = int(bad.sum())
    if len(responses):
        responses["day"] = pd.to_datetime(responses["event_at"], utc=True).dt.date
        unsub = responses[responses["event"] == "unsubscribed"].groupby(["customer_id", "channel"])["day"].min()
        commercial = nba[nba["action_class"] == "commercial"]
        keyed = commercial.set_index(["customer_id", "channel"]).index
        first = unsub.reindex(keyed).to_numpy()
        left = np.array([f is not None and not pd.isna(f) and f <= d for f, d in zip(first, commercial["as_of"])],
                        dtype=bool) if len(commercial) else np.zeros(0, dtype=bool)
        by_rule["unsubscribed"] = int(left.sum())
        delivered = responses[responses["event"] == "delivered"].copy()
        delivered["cls"] = delivered["action_id"].map(lambda a: catalogue[a].action_class if a in catalogue else "")
        delivered = delivered[delivered["cls"].isin(capped)]
        over = 0
        for night in nights:
            sent = delivered[(delivered["day"] > night - timedelta(days=7)) & (delivered["day"] <= night)]
            counts = sent.groupby(["customer_id", "channel"]).size()
            tonight = nba[(nba["as_of"] == night) & nba["action_class"].isin(capped)] \
                .groupby(["customer_id", "channel"]).size()
            total = counts.add(tonight, fill_value=0)
            limits = np.array([caps.get(ch, 10 ** 6) for _, ch in total.index]) if len(total) else np.zeros(0)
            over += int((total.to_numpy() > limits).sum()) if len(total) else 0
        by_rule["weekly_cap"] = over
    return {"total": int(sum(by_rule.values())), "by_rule": by_rule}


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------

def paired_section(p: dict[str, Any], comparison: dict[str, Any]) -> dict[str, Any]:
    """The page's section on the two runs customer by customer (`paired`)."""
    heading = "Customer by customer (paired)"
    if not p.get("available"):
        return {"heading": heading, "text": f"Not available: {p.get('reason', 'no paired comparison')}."}
    this, other = f"learning {comparison['this_run']}", f"learning {comparison['other_run']}"
    text = (f"Each treated customer's realised value over the nights {p['nights'][0]} to {p['nights'][1]} in this run "
            f"({this}) minus the same customer's in the other ({other}); a customer treated in one run only counts 0 "
            f"in the other. {p['n_customers']:,} customers ({p['n_in_both']:,} treated in both, {p['n_only_this']:,} "
            f"in this run only, {p['n_only_other']:,} in the other only); {p['n_identical']:,} differ by exactly 0 "
            f"(the same offers got the same answers). Mean difference {p['mean_difference']} pounds a customer, 95% "
            f"interval {p['t_ci_low']} .. {p['t_ci_high']} (paired t; bootstrap over customers "
            f"{p['bootstrap_ci_low']} .. {p['bootstrap_ci_high']}). Relative gain against the other run's "
            f"{p['mean_other']} a customer: {p['relative_gain']}, 95% interval {p['relative_ci_low']} .. "
            f"{p['relative_ci_high']} (delta method; bootstrap {p['relative_bootstrap_ci_low']} .. "
            f"{p['relative_bootstrap_ci_high']}). Verdict: {p['verdict']}.")
    keys = ("n_customers", "n_in_both", "n_only_this", "n_only_other", "n_identical", "mean_this", "mean_other",
            "mean_difference", "t_ci_low", "t_ci_high", "bootstrap_ci_low", "bootstrap_ci_high", "relative_gain",
            "relative_ci_low", "relative_ci_high", "relative_bootstrap_ci_low", "relative_bootstrap_ci_high",
            "target", "target_shown")
    after = p.get("after_promotion")
    if after and after.get("available"):
        text += (f" After the first policy promotion ({after['since']}), over the nights {after['nights'][0]} to "
                 f"{after['nights'][1]} only: {after['n_customers']:,} customers ({after['n_identical']:,} differ by "
                 f"0), mean difference {after['mean_difference']} pounds a customer, 95% interval "
                 f"{after['t_ci_low']} .. {after['t_ci_high']}; relative gain against the other run's "
                 f"{after['mean_other']}: {after['relative_gain']}, 95% interval {after['relative_ci_low']} .. "
                 f"{after['relative_ci_high']}. Verdict: {after['verdict']}.")
    elif after:
        text += f" After the first policy promotion ({after['since']}): not available: {after['reason']}."
    columns = {"value": p}
    if after and after.get("available"):
        columns[f"after {after['since']}"] = after
    table = pd.DataFrame({"figure": list(keys), **{name: [c.get(k) for k in keys] for name, c in columns.items()}})
    return {"heading": heading, "text": text, "table": table}


def write_page(summary: dict[str, Any], path: Path) -> Path:
    from pipelines.html_report import _new_figure, render_report

    nights = pd.DataFrame(summary["nights"])
    s = summary["summary"]
    sections = []
    text = (f"{summary['run']['customers']:,} customers, {summary['run']['nights']} nights, seed "
            f"{summary['run']['seed']}, learning {summary['run']['learning']}. Uplift per customer (treated minus "
            f"control, realised value over the run): {s['uplift_per_customer']} "
            f"(95% interval {s['uplift_ci_low']} .. {s['uplift_ci_high']}). Value per treated customer per night: "
            f"first week {s['first_week_value']}, last week {s['last_week_value']}. Breaches: {s['breaches']}.")
    fig, ax = _new_figure("Realised value of each night's recommendations per customer", (7.5, 4.2))
    if len(nights):
        x = pd.to_datetime(nights["date"])
        ax.plot(x, nights["treated_value_per_customer"].astype(float), marker="o",
                label=f"treated, learning {summary['run']['learning']}")
        ax.plot(x, nights["control_value_per_customer"].astype(float), marker="s", label="control")
        ax.set_ylabel("pounds per customer")
        ax.legend()
        fig.autofmt_xdate()
    fig2, ax2 = _new_figure("Acceptance rate per night", (7.5, 3.6))
    if len(nights):
        ax2.plot(pd.to_datetime(nights["date"]), nights["acceptance_rate"].astype(float), marker="o")
        ax2.set_ylabel("accepted / published")
        fig2.autofmt_xdate()
    fig3, ax3 = _new_figure("Cumulative value per customer, treated and control", (7.5, 4.2))
    if len(nights):
        x = pd.to_datetime(nights["date"])
        ax3.plot(x, nights["treated_value_per_customer"].astype(float).fillna(0).cumsum(),
                 label=f"treated, learning {summary['run']['learning']}")
        ax3.plot(x, nights["control_value_per_customer"].astype(float).fillna(0).cumsum(), label="control")
        ax3.legend()
        fig3.autofmt_xdate()
    comparison = s.get("comparison")
    if comparison:
        text += (f" Against the run with learning {comparison['other_run']}: value per treated customer over the "
                 f"nights {comparison['value_per_treated_customer_this']} against "
                 f"{comparison['value_per_treated_customer_other']} (relative gain {comparison['relative_gain']}; "
                 f"after the first promotion: {comparison.get('relative_gain_after_promotion')}).")
        other = pd.DataFrame(comparison.get("nights") or [])
        if len(other) and len(nights):
            label = f"treated, learning {comparison['other_run']}"
            x = pd.to_datetime(other["date"])
            theirs = other["treated_value_per_customer_other"].astype(float)
            ax.plot(x, theirs, marker=".", linestyle="--", color="grey", label=label)
            ax.legend()
            ax3.plot(x, theirs.fillna(0).cumsum(), linestyle="--", color="grey", label=label)
            ax3.legend()
            ax2.plot(x, other["acceptance_rate_other"].astype(float), marker=".", linestyle="--", color="grey",
                     label=f"learning {comparison['other_run']}")
            ax2.legend()
    sections.append({"heading": "Summary", "text": text, "figures": [fig, fig3, fig2]})
    if comparison:
        rows = [{"run": f"this (learning {comparison['this_run']})",
                 "value_per_treated_customer": comparison["value_per_treated_customer_this"],
                 "after_first_policy_promotion": comparison.get("value_after_promotion_this"),
                 **{k: s.get(k) for k in ("uplift_per_customer", "uplift_ci_low", "uplift_ci_high",
                                          "first_week_value", "last_week_value", "breaches")}},
                {"run": f"other (learning {comparison['other_run']})",
                 "value_per_treated_customer": comparison["value_per_treated_customer_other"],
                 "after_first_policy_promotion": comparison.get("value_after_promotion_other"),
                 **(comparison.get("other_summary") or {})}]
        sections.append({"heading": "Both runs", "text": (
            f"Same customers and seed: {comparison['same_customers_and_seed']}. Relative gain of this run: "
            f"{comparison['relative_gain']} over all nights, {comparison.get('relative_gain_after_promotion')} "
            f"after the first policy promotion ({comparison.get('first_policy_promotion')})."),
            "table": pd.DataFrame(rows)})
        sections.append(paired_section(comparison.get("paired") or {}, comparison))
    ope = pd.DataFrame(s["ope"])
    if len(ope):
        fig4, ax4 = _new_figure("Offline estimates (95% interval) and what the deployed policy earned", (7.5, 4.2))
        rows = ope[ope["estimator"] == "dr"].reset_index(drop=True)
        for i, r in rows.iterrows():
            ax4.errorbar([i], [r["estimate"]], yerr=[[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]],
                         fmt="o", color="C0" if r["role"] == "challenger" else "C1")
            if r["realized"] is not None and not pd.isna(r["realized"]):
                ax4.plot([i], [r["realized"]], marker="x", color="black", markersize=9)
        ax4.set_xticks(range(len(rows)))
        ax4.set_xticklabels([f"{r['date']}\n{r['role']}" for _, r in rows.iterrows()], fontsize=7)
        ax4.set_ylabel("value per decision (pounds); x = realised")
        sections.append({"heading": "Offline policy evaluation", "table": ope, "figures": [fig4]})
    if s["promotions"]:
        sections.append({"heading": "Promotions", "table": pd.DataFrame(s["promotions"])})
    sections.append({"heading": "Nights", "table": nights})
    sections.append({"heading": "Breaches by rule", "table": pd.DataFrame([s["breaches_by_rule"]])})
    return render_report("Closed loop", sections, path)
