"""What the DAGs need besides the stages: which night D a run is for, whether D's landing is complete, and the alert
when a night fails. Airflow calls these through thin wrappers in dags/; nothing here imports Airflow.

- **D of a run**: the `business_date` param when a run was triggered for a given night (validated: an ISO date of
  a day that is over), else the UTC day its one-day data interval starts (a scheduled run after midnight).
- **Landing complete**: upstream writes `landing/D/<completion marker>` (`config/landing.yaml`,
  `completion_marker`) after every other file of D. The night waits for it until its deadline
  (`orchestration.landing_deadline_hours` after the end of D, `config/segone.yaml`); past the deadline a wait
  fails, which fails the run and raises the alert.
- **Alert**: a failed night writes `runs/D/alert.json` (which tasks failed, with their errors, log addresses and
  what to do), logs one ERROR line on the `segone.alert` logger, and calls every hook of `alerts.hooks` (a chat
  webhook, e-mail, a command). A hook that fails is logged and never hides the alert file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import subprocess
import urllib.request
from datetime import date, datetime, time, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Mapping

from pipelines.config import Paths, load_config, settings
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics
from pipelines.stages import business_date as interval_day  # D of a scheduled run

log = logging.getLogger(__name__)
alert_log = logging.getLogger("segone.alert")

BUSINESS_DATE_PARAM = "business_date"
RUNBOOK = "docs/operations.md (a night failed)"
UTC = timezone.utc


class LandingLate(SegoneError):
    """D's landing was not complete at its deadline."""


# --- D of a run ------------------------------------------------------------------------------------------------

def parse_business_date(value: Any, today: date | None = None) -> date:
    """A `business_date` given to a run: YYYY-MM-DD, and a day that is over (before today, UTC)."""
    text = value.isoformat() if isinstance(value, date) else str(value).strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise SegoneError(f"business_date must be a date as YYYY-MM-DD, not {value!r}")
    try:
        day = date.fromisoformat(text)
    except ValueError as error:
        raise SegoneError(f"business_date {text} is not a calendar date ({error})") from None
    today = today or datetime.now(UTC).date()
    if day >= today:
        raise SegoneError(f"business_date {text} is not over yet (today is {today} UTC): a night runs for a past day")
    return day


def night_of(params: Mapping[str, Any] | None, data_interval_start: Any, today: date | None = None) -> date:
    """D of a run: its `business_date` param when set, else the day its data interval starts."""
    value = (params or {}).get(BUSINESS_DATE_PARAM)
    if value is None or (isinstance(value, str) and not value.strip()):
        return interval_day(data_interval_start)
    return parse_business_date(value, today)


def night_of_context(context: Mapping[str, Any]) -> date | None:
    """D of the run an Airflow context belongs to; None when the context holds neither a param nor an interval."""
    params = context.get("params") or {}
    start = context.get("data_interval_start")
    if start is None and not params.get(BUSINESS_DATE_PARAM):
        return None
    try:
        return night_of(params, start)
    except SegoneError:
        return None


# --- landing complete --------------------------------------------------------------------------------------------

def completion_marker() -> str:
    """The file name upstream writes last into landing/D/ (the landing contract, config/landing.yaml)."""
    return str(load_config("landing")["completion_marker"])


def landing_marker(paths: Paths, day: date) -> Path:
    return paths.landing_day(day.isoformat()) / completion_marker()


def landing_deadline(day: date) -> datetime:
    """When D's landing must be complete: `orchestration.landing_deadline_hours` after the end of D (UTC)."""
    hours = float(settings()["orchestration"]["landing_deadline_hours"])
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC) + timedelta(hours=hours)


def landing_complete(paths: Paths, day: date, now: datetime | None = None) -> bool:
    """True once landing/D/ holds the completion marker; False while waiting is still allowed; raises LandingLate
    past the deadline."""
    marker = landing_marker(paths, day)
    if marker.is_file():
        return True
    now = now or datetime.now(UTC)
    deadline = landing_deadline(day)
    if now >= deadline:
        folder = marker.parent
        found = "the folder does not exist" if not folder.is_dir() else (
            f"the folder holds {sum(1 for _ in folder.iterdir())} entries but no {marker.name}")
        raise LandingLate(f"the landing of {day} is not complete at its deadline {deadline:%Y-%m-%d %H:%M} UTC: "
                          f"no {marker} ({found}); upstream writes {marker.name} after the last file of the day")
    log.info("waiting for %s (deadline %s UTC)", marker, f"{deadline:%Y-%m-%d %H:%M}")
    return False


# --- failures and the alert -------------------------------------------------------------------------------------

def _ti_fields(ti: Any) -> dict[str, Any]:
    if ti is None:
        return {}
    fields = {"task_id": getattr(ti, "task_id", None), "map_index": getattr(ti, "map_index", -1),
              "try_number": getattr(ti, "try_number", None), "hostname": getattr(ti, "hostname", None)}
    try:
        fields["log_url"] = ti.log_url
    except Exception:  # noqa: BLE001 - an address is a convenience, never a reason to lose the record
        fields["log_url"] = None
    return fields


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def record_task_failure(context: Mapping[str, Any], paths: Paths | None = None) -> Path | None:
    """A task of the night failed: runs/D/failures/<task>[.<map index>].json with its error (the alert reads it)."""
    paths = paths or Paths.from_env()
    day = night_of_context(context)
    fields = _ti_fields(context.get("ti"))
    error = context.get("exception")
    record = fields | {"run_id": context.get("run_id"), "at": datetime.now(UTC).isoformat(timespec="seconds"),
                       "error": f"{type(error).__name__}: {error}" if error is not None else None}
    if day is None:
        log.error("task %s failed in run %s, whose night is unknown", fields.get("task_id"), record["run_id"])
        return None
    name = str(fields.get("task_id"))
    if fields.get("map_index") not in (None, -1):
        name += f".{fields['map_index']}"
    folder = paths.runs / day.isoformat() / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    target, tmp = folder / f"{_safe(name)}.json", folder / f".{_safe(name)}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str, sort_keys=True), encoding="utf-8")
    tmp.replace(target)
    return target


def _failures_of(paths: Paths, day: date, run_id: str | None) -> list[dict[str, Any]]:
    folder = paths.runs / day.isoformat() / "failures"
    if not folder.is_dir():
        return []
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    return [r for r in records if run_id is None or r.get("run_id") == run_id]


def on_night_failed(context: Mapping[str, Any], paths: Paths | None = None,
                    hooks: list[dict[str, Any]] | None = None) -> Path:
    """The night's run failed: write runs/D/alert.json, log one ERROR line, call the configured hooks."""
    paths = paths or Paths.from_env()
    day = night_of_context(context)
    dag = context.get("dag")
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    alert: dict[str, Any] = {
        "alert": "night failed",
        "dag_id": getattr(dag, "dag_id", None) or context.get("dag_id"),
        "run_id": run_id,
        "business_date": day.isoformat() if day else None,
        "reason": context.get("reason"),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_failed_task": _ti_fields(context.get("ti")) or None,
        "failed_tasks": _failures_of(paths, day, run_id) if day else [],
        "what_to_do": f"read the failed task's log, fix the cause, then clear the failed task (or re-trigger the "
                      f"night with business_date={day.isoformat() if day else 'D'}): {RUNBOOK}",
    }
    if day is not None:
        target = write_run_metrics(paths, day.isoformat(), "alert", alert)
    else:
        target = write_run_metrics(paths, "_alerts", _safe(str(run_id)), alert)
    errors = "; ".join(f"{f.get('task_id')}: {f.get('error')}" for f in alert["failed_tasks"]) or alert["reason"]
    alert_log.error("ALERT the night of %s failed (run %s): %s -- %s", alert["business_date"] or "an unknown day",
                    run_id, errors, target)
    for hook in (settings().get("alerts", {}).get("hooks") or []) if hooks is None else hooks:
        try:
            send_alert(hook, alert)
        except Exception as error:  # noqa: BLE001 - a broken hook must not hide the alert file and the log line
            alert_log.error("alert hook %s failed: %s: %s", hook.get("kind"), type(error).__name__, error)
    return target


def on_night_succeeded(context: Mapping[str, Any], paths: Paths | None = None) -> None:
    """A night that failed before and now succeeded: its alert becomes alert.resolved.json."""
    paths = paths or Paths.from_env()
    day = night_of_context(context)
    if day is None:
        return
    alert = paths.runs / day.isoformat() / "alert.json"
    if alert.exists():
        record = json.loads(alert.read_text(encoding="utf-8"))
        record["resolved_by_run"] = context.get("run_id")
        write_run_metrics(paths, day.isoformat(), "alert.resolved", record)
        alert.unlink()
        alert_log.info("the night of %s succeeded in run %s: its alert is resolved", day, context.get("run_id"))


def _secret(hook: Mapping[str, Any], key: str) -> str | None:
    """hook[key], or the environment variable named by hook[key + '_env'] (secrets never sit in config/)."""
    if hook.get(f"{key}_env"):
        value = os.environ.get(str(hook[f"{key}_env"]))
        if value is None:
            raise SegoneError(f"alert hook {hook.get('kind')}: environment variable {hook[f'{key}_env']} is not set")
        return value
    return None if hook.get(key) is None else str(hook[key])


def alert_text(alert: Mapping[str, Any]) -> str:
    lines = [f"Segment of One: the night of {alert.get('business_date') or '?'} failed (run {alert.get('run_id')})."]
    for failure in alert.get("failed_tasks") or []:
        lines.append(f"- {failure.get('task_id')}: {failure.get('error')}  {failure.get('log_url') or ''}".rstrip())
    lines.append(f"What to do: {alert.get('what_to_do')}")
    return "\n".join(lines)


def send_alert(hook: Mapping[str, Any], alert: Mapping[str, Any]) -> None:
    """One hook of `alerts.hooks`: webhook (POST JSON), email (SMTP) or command (argv, the alert as JSON on stdin)."""
    kind = hook.get("kind")
    timeout = float(hook.get("timeout_seconds", 10))
    if kind == "webhook":
        url = _secret(hook, "url")
        if not url:
            raise SegoneError("alert hook webhook: no url")
        body = json.dumps({"text": alert_text(alert), "alert": alert}, default=str).encode("utf-8")
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's URL
            if response.status >= 300:
                raise SegoneError(f"alert hook webhook: HTTP {response.status}")
    elif kind == "email":
        message = EmailMessage()
        message["Subject"] = f"[segone] night of {alert.get('business_date') or '?'} failed"
        message["From"] = str(hook["from"])
        message["To"] = ", ".join(hook["to"])
        message.set_content(alert_text(alert) + "\n\n" + json.dumps(alert, indent=2, default=str))
        with smtplib.SMTP(str(hook["smtp_host"]), int(hook.get("smtp_port", 25)), timeout=timeout) as smtp:
            if hook.get("starttls"):
                smtp.starttls()
            user = _secret(hook, "user")
            if user:
                smtp.login(user, _secret(hook, "password") or "")
            smtp.send_message(message)
    elif kind == "command":
        subprocess.run([str(a) for a in hook["argv"]], input=json.dumps(alert, default=str), text=True,
                       timeout=timeout, check=True, capture_output=True)
    else:
        raise SegoneError(f"unknown alert hook kind {kind!r} (webhook, email or command)")
