"""Where night D stands, from its run metrics (runs/D/*.json) as the latest attempt left them.

A night can be run more than once (a re-run after a failure, a stage re-run by hand, a retried shard). Every stage
rewrites its own runs/D/<stage>.json, but a re-run that stops early can leave files of the earlier attempt after it
(publish and the stages also void verdicts when they rewrite data: pipelines/stages.py void_later_results; this
reading does not depend on it). So the steps are read along the night's graph (STEPS, derived from the stages'
own wiring, pipelines.stages._FEEDS and _GATE): a file counts only when it was written at or after the counted
files of every step upstream of it, and those count too. A verdict older than the data it judged belongs to an
earlier attempt and is ignored (`stale`). Steps that run in parallel (the messages, the customer profiles and the
forecast) do not judge each other.

`night_status(paths, day)` is what the nightly report's banner, headline and steps table read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.config import Paths

LABELS = {"ingest": "ingest", "validate": "landing gates", "conform": "conform", "validate_silver": "silver suites",
          "features": "feature store", "validate_features": "feature store checks",
          "messages": "messages", "validate_messages": "message suites", "profiles": "customer profiles",
          "validate_profiles": "profile suites", "forecast": "cash forecast",
          "validate_forecast": "forecast suites", "life_events": "life events",
          "validate_life_events": "life-event suite", "plans": "plans", "validate_plans": "plan suite and safety rule",
          "decide": "decisions", "validate_decisions": "decision suites",
          "crm_export": "CRM export"}
# The files a writing stage leaves (its shards, its summary); a gate that fails raises before its own <gate>.json is
# written, so its verdict is also read from the validate_gold_<tables>.json its suites wrote.
STAGE_FILES = {"ingest": ("ingest.json",), "conform": ("conform.json",),
               "features": ("update_features_bucket_*.json", "update_features.json"),
               "messages": ("messages_bucket_*.json", "messages.json"),
               "profiles": ("profiles_bucket_*.json", "profiles.json"),
               "forecast": ("forecast_cash_shortfall_bucket_*.json", "forecast_cash_shortfall.json"),
               "life_events": ("life_events_bucket_*.json", "life_events.json"),
               "plans": ("plans_bucket_*.json", "plans.json"), "decide": ("decide_bucket_*.json",)}
GOLD_SUITES = {"validate_messages": "message_insights", "validate_profiles": "app_usage",
               "validate_forecast": "cash_forecast",
               "validate_life_events": "life_events", "validate_plans": "plans",
               "validate_decisions": "next_best_actions"}


def _steps() -> tuple[tuple[str, str, tuple[str, ...], bool, tuple[str, ...]], ...]:
    """(step, label, file patterns, is a gate, upstream steps) in an order where every step follows its upstream:
    each writing stage, then its gate; a stage's upstream is the gate of the stage that feeds it; the CRM export
    follows every gate."""
    from pipelines.stages import _FEEDS, _GATE

    fed_by = {s: [p for p, outs in _FEEDS.items() if s in outs] for s in _FEEDS}
    order: list[str] = []
    while len(order) < len(_FEEDS):  # a topological order of the writing stages
        order += [s for s in _FEEDS if s not in order and all(p in order for p in fed_by[s])]
    out = []
    for stage in order:
        gate = _GATE[stage]
        out.append((stage, LABELS.get(stage, stage), STAGE_FILES.get(stage, (f"{stage}.json",)), False,
                    tuple(_GATE[p] for p in fed_by[stage])))
        suites = (f"validate_gold_{GOLD_SUITES[gate]}*.json",) if gate in GOLD_SUITES else ()
        out.append((gate, LABELS.get(gate, gate), (f"{gate}.json", *suites), True, (stage,)))
    out.append(("crm_export", LABELS["crm_export"], ("crm_export.json",), False, tuple(_GATE[s] for s in order)))
    return tuple(out)


CHAIN = _steps()
GATES = tuple(step for step, _, _, gate, _ in CHAIN if gate)


@dataclass
class Step:
    step: str
    label: str
    is_gate: bool
    file: Path | None = None          # the newest file of the step, if any
    written_at: datetime | None = None
    current: bool = False             # written by the current attempt (not older than the steps before it)
    metrics: dict[str, Any] | None = None
    passed: bool | None = None        # gates only: the verdict (None: no verdict in the current attempt)
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.file is None:
            return "not run"
        if not self.current:
            return "earlier attempt (ignored)"
        if not self.is_gate:
            return "done"
        return "passed" if self.passed else "FAILED"


@dataclass
class NightStatus:
    day: str
    steps: list[Step]
    export: dict[str, Any] | None          # the manifest of this attempt's CRM export, when it wrote one
    stale_export: dict[str, Any] | None    # a manifest left by an earlier attempt

    @property
    def started(self) -> bool:
        return self.step("ingest").file is not None

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.step == name)

    @property
    def gates(self) -> list[Step]:
        return [s for s in self.steps if s.is_gate]

    @property
    def failed(self) -> list[Step]:
        return [g for g in self.gates if g.current and g.passed is False]

    @property
    def pending(self) -> list[Step]:
        return [g for g in self.gates if not g.current]

    @property
    def state(self) -> str:
        """'not run', 'failed' (a gate of this attempt failed), 'incomplete' (a gate has not judged this attempt's
        data) or 'passed' (every gate of this attempt passed)."""
        if not self.started:
            return "not run"
        if self.failed:
            return "failed"
        return "incomplete" if self.pending else "passed"

    @property
    def gates_passed(self) -> int:
        return sum(1 for g in self.gates if g.current and g.passed)

    def banner(self) -> dict[str, Any]:
        """What the top of the report says: fail (the night failed), warn (unfinished, or no export), ok."""
        d = self.day
        stale = ""
        if self.stale_export is not None:
            stale = (f"The files in exports/crm/{d}/ are from an earlier attempt of this night (run "
                     f"{self.stale_export.get('run_id', 'unknown')}, {self.stale_export.get('rows', 0):,} rows): "
                     f"they do not reflect this attempt.")
        if self.state == "not run":
            return {"level": "warn", "title": f"The night of {d} has not run: there are no run metrics for it.",
                    "lines": []}
        if self.state == "failed":
            lines = [f"{g.label} ({g.step}): {p}" for g in self.failed for p in (g.problems or ["did not pass"])]
            lines += [f"{g.label} ({g.step}): not judged in this attempt (the night stopped before it)"
                      for g in self.pending]
            lines.append("The CRM export of this attempt was withheld. " + stale if stale else
                         "The CRM export of this attempt was withheld.")
            lines.append("The sections below show the tables for this date as the report read them, whichever "
                         "attempt wrote them; the verdicts are this attempt's.")
            return {"level": "fail", "title": f"The night of {d} FAILED: "
                    f"{', '.join(g.label for g in self.failed)} did not pass. Nothing from this attempt may be "
                    f"published.", "lines": [line.strip() for line in lines[:12]]}
        if self.state == "incomplete":
            lines = [f"{g.label} ({g.step}): " + ("not run yet" if g.file is None else
                                                  "its verdict is from an earlier attempt and is ignored")
                     for g in self.pending]
            lines.append(("The CRM export has not been written by this attempt. " + stale).strip())
            return {"level": "warn", "title": f"The night of {d} has not finished: "
                    f"{len(self.pending)} of {len(self.gates)} gates have not judged this attempt's data.",
                    "lines": lines}
        if self.export is None:
            return {"level": "warn", "title": f"Every gate of {d} passed, but this attempt wrote no CRM export: "
                    f"the export was withheld or has not run yet.", "lines": [stale] if stale else []}
        return {"level": "ok", "title": f"Every gate of {d} passed ({self.gates_passed} of {len(self.gates)}); "
                f"CRM export of this attempt: {int(self.export.get('rows', 0)):,} rows "
                f"(run {self.export.get('run_id', 'unknown')}).", "lines": []}


def _newest(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    files = [f for pattern in patterns for f in folder.glob(pattern) if f.is_file()]
    return max(files, key=lambda f: (f.stat().st_mtime_ns, f.name)) if files else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def verdict(metrics: dict[str, Any] | None) -> tuple[bool | None, list[str]]:
    """A gate's verdict from its metrics: passed only when every `passed` (top level, or one level down, such as
    `validation.passed`) is true; the problems in words (failed gates' messages, failed suites)."""
    if metrics is None:
        return None, ["its run metrics cannot be read"]
    verdicts = [metrics.get("passed")] if "passed" in metrics else []
    verdicts += [v.get("passed") for v in metrics.values() if isinstance(v, dict) and "passed" in v]
    if not verdicts:
        return None, ["no verdict in its run metrics"]
    problems: list[str] = []
    blocks = [metrics] + [v for v in metrics.values() if isinstance(v, dict)]
    for block in blocks:
        for gate in block.get("gates") or []:
            if isinstance(gate, dict) and not gate.get("passed", True):
                problems.append(str(gate.get("message") or gate.get("name") or "a gate failed"))
        for name, suite in (block.get("suites") or {}).items():
            if isinstance(suite, dict) and suite.get("success") is False:
                first = next((f.get("message") for f in suite.get("failures") or [] if isinstance(f, dict)), None)
                problems.append(f"suite {suite.get('suite', name)} failed" + (f": {first}" if first else ""))
    passed = all(v is True for v in verdicts)
    return passed, ([] if passed else problems or ["did not pass"])


def night_status(paths: Paths, day: str, export: dict[str, Any] | None = None) -> NightStatus:
    """The night's steps as the current attempt left them. `export`: the manifest of a CRM export being published
    together with the report, when runs/D/crm_export.json does not hold it yet."""
    folder = paths.runs / day
    steps: dict[str, Step] = {}
    stamps: dict[str, int] = {}
    # per step: the newest counted file at or upstream of it (-1: none), and whether everything upstream counts
    reach: dict[str, int] = {}
    sound: dict[str, bool] = {}
    for name, label, patterns, is_gate, upstream in CHAIN:
        step = Step(name, label, is_gate)
        floor = max([reach[u] for u in upstream], default=-1)
        ok = all(sound[u] for u in upstream)
        newest = _newest(folder, patterns) if folder.is_dir() else None
        if newest is not None:
            stamp = newest.stat().st_mtime_ns
            step.file, step.written_at = newest, datetime.fromtimestamp(stamp / 1e9, tz=timezone.utc)
            step.current = ok and stamp >= floor
            stamps[name] = stamp
            if step.current:
                step.metrics = _read(newest)
                if is_gate:
                    step.passed, step.problems = verdict(step.metrics)
            reach[name], sound[name] = (max(floor, stamp), True) if step.current else (floor, False)
        else:
            reach[name], sound[name] = floor, ok  # a step that never ran judges nothing: see through it
        steps[name] = step
    status = NightStatus(day, list(steps.values()), export=None, stale_export=None)
    crm = status.step("crm_export")
    if export is not None:
        status.export = export
    elif crm.current and status.state == "passed":
        status.export = crm.metrics
    elif crm.file is not None:
        status.stale_export = _read(crm.file)
    return status
