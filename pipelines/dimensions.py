"""The small dimension tables of the warehouse files (DESIGN section 5: warehouse.duckdb holds views and small
dimension tables): `action_catalogue`, from config/actions.yaml, and `published_loads`, the loads the file shows.

Their columns are config/tables.yaml `dimensions:`; each builder returns a frame with exactly those columns (a test
checks it), and `pipelines.warehouse` writes them with their comments into both files (no restricted column: the
same rows in each).
"""
from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from pipelines.config import load_config


def _condition(rule: dict[str, Any]) -> str:
    """One catalogue rule as the condition it states, e.g. `p_shortfall_30 >= 0.3`, `any of (a; b)`."""
    if "any" in rule:
        text = "any of (" + "; ".join(_condition(r) for r in rule["any"]) + ")"
    elif "all" in rule:
        text = "all of (" + "; ".join(_condition(r) for r in rule["all"]) + ")"
    elif rule["op"] in ("is_null", "not_null"):
        text = f"{rule['field']} {rule['op'].replace('_', ' ')}"
    else:
        target = rule["value_field"] if "value_field" in rule else rule.get("value")
        if isinstance(target, bool):
            target = str(target).lower()
        elif isinstance(target, (list, tuple)):
            target = "[" + ", ".join(str(v) for v in target) + "]"
        text = f"{rule['field']} {rule['op']} {target}"
    return text


def rules_in_words(rules: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    """A list of rules (an AND) in words; empty text when there is none."""
    return " and ".join(_condition(rule) for rule in rules)


def action_catalogue() -> pd.DataFrame:
    """One row per action of config/actions.yaml (validated), with config/decisioning.yaml's policy_version."""
    from pipelines.actions import load_catalogue

    version = str(load_config("decisioning").get("policy_version", ""))
    rows = [{
        "action_id": a.id, "action_class": a.action_class, "title": a.title, "is_credit": bool(a.is_credit),
        "channels": list(a.channels), "channel_consents": dict(a.channels), "data_purposes": list(a.data_purposes),
        "eligibility": rules_in_words(a.eligibility), "applicability": rules_in_words(a.applicability),
        "value": float(a.value), "lever": float(a.lever), "prior_propensity": float(a.prior_propensity),
        "cool_down_days": int(a.cool_down_days), "max_ignores": int(a.max_ignores), "valid_days": int(a.valid_days),
        "explanation": a.explanation, "policy_version": version,
    } for a in load_catalogue()]
    return pd.DataFrame(rows)


def published_loads(days: list[date], history_day: date | None, latest: date | None) -> pd.DataFrame:
    """One row per load the warehouse shows (`days`: a night's D, the history load as its last day), the history
    and the latest flagged."""
    rows = [{"load_date": day, "is_history": day == history_day, "is_latest": day == latest} for day in sorted(days)]
    return pd.DataFrame(rows, columns=["load_date", "is_history", "is_latest"])
