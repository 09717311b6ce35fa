"""The rule baseline for life events: what a bank writes first, evaluated on the life-event features frame.

A rule is a plain dict (the pipeline reads it from config/life_events.yaml and passes it in; modelling code never
reads config files):

    {"description": "a surveyor or solicitor payment in the last 90 days",
     "any": [["n_surveyor_90d", ">=", 1], ["n_solicitor_90d", ">=", 1]],   # fires when any condition holds
     "all": [["age_years", ">=", 55]]}                                      # ... and every one of these holds

A condition may itself be a rule: {"all": [...]} or {"any": [...]} nested inside `any` or `all` (a surveyor payment,
or transfers to savings in each of three months *and* larger than before).

A missing feature value never satisfies a condition. A rule naming a feature that the frame lacks raises KeyError:
a silently dead rule would look like a rule that never fires.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping

import numpy as np
import pandas as pd

OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
             "!=": operator.ne}


def _condition(frame: pd.DataFrame, condition: list | tuple | Mapping[str, Any]) -> np.ndarray:
    if isinstance(condition, Mapping):
        return rule_fires(frame, condition)
    column, op, value = condition
    if column not in frame.columns:
        raise KeyError(f"rule condition on unknown feature {column!r}")
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r} (use one of {sorted(OPERATORS)})")
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(values), False, OPERATORS[op](values, float(value)))


def rule_fires(frame: pd.DataFrame, rule: Mapping[str, Any]) -> np.ndarray:
    """Boolean array: where the rule fires on the rows of `frame`."""
    any_of = list(rule.get("any") or [])
    all_of = list(rule.get("all") or [])
    if not any_of and not all_of:
        raise ValueError("a rule needs at least one condition under `any` or `all`")
    fired = np.zeros(len(frame), dtype=bool) if any_of else np.ones(len(frame), dtype=bool)
    for condition in any_of:
        fired |= _condition(frame, condition)
    for condition in all_of:
        fired &= _condition(frame, condition)
    return fired


def rule_features(rule: Mapping[str, Any]) -> list[str]:
    """The feature names a rule reads."""
    out: list[str] = []
    for condition in [*(rule.get("any") or []), *(rule.get("all") or [])]:
        out.extend(rule_features(condition) if isinstance(condition, Mapping) else [condition[0]])
    return out


def evaluate_rules(frame: pd.DataFrame, rules: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame: customer_id, cutoff, event_type, flagged (bool), one row per input row and event."""
    parts = []
    for event, rule in rules.items():
        parts.append(pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(),
                                   "cutoff": frame["cutoff"].to_numpy(),
                                   "event_type": event, "flagged": rule_fires(frame, rule)}))
    if not parts:
        return pd.DataFrame(columns=["customer_id", "cutoff", "event_type", "flagged"])
    return pd.concat(parts, ignore_index=True)
