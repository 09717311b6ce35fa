"""The next-best-action catalogue (config/actions.yaml): load, validate, and evaluate its rules over a context frame.

Rules are data: a rule is `{field: <context field>, op: <operator>, value: <constant>}` (or `value_field: <other
field>` to compare two fields, `{any: [rule, ...]}` for an OR, `{all: [rule, ...]}` for a nested AND). A list of
rules is an AND. They are evaluated column-wise with numpy over a whole context frame (one row per customer), never
with eval(); a missing value (NaN or None) fails every comparison except `is_null`, so an unknown fact never makes an
action applicable.

Every problem with the catalogue is reported at once, each line naming the action and the field at fault.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.config import CONFIG_DIR, parse_yaml
from pipelines.errors import SegoneError

CLASSES = ("protective", "service", "commercial")
CHANNELS = ("email", "sms", "push", "inapp", "phone", "letter", "branch")   # the CRM's channels (config/landing.yaml)
CONSENT_PURPOSES = ("marketing_email", "marketing_sms", "marketing_push", "marketing_inapp", "service_alerts")
DATA_PURPOSES = ("personalization", "life_events", "open_banking", "location")
MARKETING_PURPOSE_OF_CHANNEL = {"email": "marketing_email", "sms": "marketing_sms", "push": "marketing_push",
                                "inapp": "marketing_inapp"}
OPERATORS = (">=", ">", "<=", "<", "==", "!=", "in", "not_in", "is_null", "not_null")
LIFE_EVENTS = ("moving_home", "buying_home", "new_baby", "marriage", "new_job", "job_loss", "retirement",
               "travel_abroad")
PLACEHOLDER_FORMATS = ("money", "pct", "int", "date", "text", "penny")

# The context vocabulary: every field a rule, a context weight or a reason template may name. decide.build_context
# (and decide.synthetic_context) produce exactly these columns.
CONTEXT_FIELDS: dict[str, str] = {
    "age": "age in whole years at D (year of D minus birth year); null when unknown",
    "age_band": "18-24, 25-34, 35-49, 50-64, 65+ or unknown",
    "region": "home region",
    "known_vulnerability": "recorded vulnerability driver or null",
    "is_vulnerable": "a vulnerability is recorded",
    "tenure_days": "days since the customer joined",
    "has_current": "holds an open current account with the bank",
    "has_savings": "holds an open savings account with the bank",
    "has_credit_card": "holds an open credit card with the bank",
    "has_loan": "holds an open personal loan with the bank",
    "has_mortgage": "holds an open mortgage with the bank",
    "has_external_current": "a current account at another bank is linked by open banking",
    "balance_now": "cash position today",
    "balance_min_30": "lowest cash position over the last 30 days",
    "n_days_negative_30": "days below zero in the last 30 days",
    "n_days_negative_90": "days below zero in the last 90 days",
    "overdraft_limit": "arranged overdraft limit",
    "headroom_now": "balance plus the arranged overdraft limit",
    "share_gambling_90": "share of card spending on gambling over 90 days",
    "has_regular_income": "a regular income stream is detected",
    "is_income_stopped": "a regular income stream has stopped",
    "income_90": "income over the last 90 days",
    "monthly_recurring_income": "regular income per month",
    "monthly_recurring_outgoings": "regular payments per month",
    "days_since_income": "days since the last income (a salary or benefit, or a recurring payment in) arrived on the "
                         "customer's current accounts here (with none here, the external ones that make the cash "
                         "position) in the last 90 days; unknown: none in 90 days",
    "history_days": "days of the customer's history the bank holds, up to D",
    "income_history_days": "days of history of the customer's newest source (core, open banking) or current "
                           "account, up to D",
    "is_income_pending": "a regular income stopped and a new payer of its kind has paid once so far (a new job or a "
                         "one-off payment: config/life_events.yaml income_replacement)",
    "is_income_known": "every source's and current account's history is long enough to have seen a monthly income as a recurring stream "
                       "(income_history_days >= features.income_known_days) and no stopped income's replacement is "
                       "pending (is_income_pending): only then is a regular income, "
                       "present, stopped, missing or small, a fact (has_regular_income and is_income_stopped are "
                       "false otherwise)",
    "n_outgoing_streams": "number of regular payments (direct debits, standing orders, subscriptions)",
    "n_fees_90": "account fees charged in the last 90 days (any fee: not a sign of arrears on its own)",
    "n_returned_payments": "payments returned unpaid in the arrears window (config/decisioning.yaml arrears)",
    "n_arrears_fees": "fees for a missed or returned payment, arrears or going over a limit in the arrears window",
    "n_missed_repayments": "loans or mortgages held here, still owing, whose repayment is overdue",
    "card_over_limit": "a credit card held here is beyond its credit limit",
    "savings_balance": "balance of savings accounts with the bank",
    "share_travel_90": "share of card spending on travel over 90 days",
    "income_regularity": "regularity of the main income (0 to 1)",
    "has_forecast": "a cash forecast exists for the customer at D",
    "p_shortfall_30": "probability of a shortfall within 30 days",
    "p_shortfall_60": "probability of a shortfall within 60 days",
    "p_shortfall_90": "probability of a shortfall within 90 days",
    "min_balance_p10_30": "10th percentile of the lowest balance over 30 days",
    "expected_shortfall_date": "expected first day below zero (when likely)",
    "safe_to_save": "what can move to savings today without raising the 30-day shortfall risk",
    "confidence": "forecast confidence: low, medium, high",
    "has_savings_plan": "tonight's plans hold savings instructions (gold plans: provisions, tax pot, sweep)",
    "plan_savings_amount": "what the savings instructions move within plan_horizon_days",
    "plan_savings_reason": "the headline of the customer's first savings instruction (gold plans: no money figures)",
    "has_debt_plan": "tonight's plans hold a debt overpayment (gold plans)",
    "plan_debt_amount": "what the debt overpayments pay off",
    "plan_debt_reason": "the headline of the customer's first debt overpayment (gold plans: no money figures)",
    "has_bill_provision": "tonight's savings plan sets money aside ahead of a known bill (gold plans bill_provision)",
    "plan_bill_reason": "the headline of the customer's first bill provision (gold plans: no money figures)",
    **{f"p_income_drop_{h}": f"probability that the income falls by more than the configured share within {h} days "
                             f"(gold income_forecast)" for h in (30, 60, 90)},
    "income_reference": "the regular monthly income the income forecast measures a drop against (income of the "
                        "last 90 days / 3)",
    "income_drop_share": "the share of the regular income a drop must exceed (config/event_forecast.yaml drop_share)",
    "plan_horizon_days": "the days a plan reaches ahead (the longest of config/plans.yaml horizons)",
    "is_income_drop_ahead": "the income-drop probability at one of config/decisioning.yaml event_forecasts "
                            "income_drop horizons is at least its min_probability",
    "income_drop_horizon": "the shortest such horizon in days (null when no drop is ahead)",
    "p_income_drop": "the income-drop probability at income_drop_horizon",
    "income_drop_date": "the forecast's expected day of the drop at income_drop_horizon (when it gives one)",
    "income_drop_drivers": "the forecast's reasons at income_drop_horizon, each true of the customer (null when "
                           "only the default words)",
    **{f"p_large_expense_{h}": f"probability of a large one-off payment within {h} days (gold expense_forecast)"
       for h in (30, 60, 90)},
    "large_expense_threshold": "the amount a payment must reach to count as large for this customer",
    "is_large_expense_ahead": "the large-expense probability at one of config/decisioning.yaml event_forecasts "
                              "large_expense horizons is at least its min_probability",
    "large_expense_horizon": "the shortest such horizon in days (null when no large expense is ahead)",
    "p_large_expense": "the large-expense probability at large_expense_horizon",
    "large_expense_date": "the forecast's expected day of the payment at large_expense_horizon (when it gives one)",
    "large_expense_amount": "the forecast's expected amount of the payment at large_expense_horizon (when it gives one)",
    "large_expense_drivers": "the forecast's reasons at large_expense_horizon, each true of the customer (null when "
                             "only the default words)",
    "in_arrears": "evidence of a missed or returned payment: a payment returned unpaid, a fee for one, an overdue loan "
                  "or mortgage repayment, or a credit card over its limit (docs/decisioning.md)",
    "arrears_reason": "the evidence of arrears in plain words (config/decisioning.yaml arrears.reasons); null otherwise",
    "is_unarranged_overdraft": "the cash position went below the arranged overdraft limit in the last 30 days",
    "is_gambling_harm": "gambling share of spending at or above the configured level",
    "is_shortfall_risk": "p_shortfall_30 above the configured credit level (or no forecast)",
    "is_personalization_allowed": "consent: own-bank data for recommendations",
    "is_life_events_allowed": "consent: life events may be inferred",
    "is_service_alerts_allowed": "consent: service alerts",
    "is_marketing_email_allowed": "consent: marketing by email",
    "is_marketing_sms_allowed": "consent: marketing by SMS",
    "is_marketing_push_allowed": "consent: marketing by push",
    "is_marketing_inapp_allowed": "consent: marketing in the app",
    "is_open_banking_allowed": "consent: data from accounts at other banks (open banking)",
    "is_location_allowed": "consent: country and place signals",
    "has_life_events": "the life-event stage scored the customer at D",
    "is_message_distress": "a recent message sounded distressed (gold message_signals; message_analysis consent)",
    "is_message_difficulty": "wrote about difficulty paying recently (gold message_signals)",
    "is_message_complaint": "complained recently: a contact cool-down (gold message_signals)",
    "is_message_lost_card": "reported a lost, stolen or misused card in the last days (gold message_signals)",
    "is_message_leaving": "said they want to close their account or leave (gold message_signals)",
    "is_message_details_change": "said their personal details are changing (gold message_signals)",
    **{f"is_{event}": f"life event {event.replace('_', ' ')} flagged at D" for event in LIFE_EVENTS},
    **{f"p_{event}": f"probability of the life event {event.replace('_', ' ')}" for event in LIFE_EVENTS},
    **{f"is_{event}_corroborated": f"life event {event.replace('_', ' ')} flagged at D with the corroborating "
                                   f"evidence a credit offer needs (config/life_events.yaml `corroboration`)"
       for event in LIFE_EVENTS},
}

REQUIRED_FIELDS = ("id", "class", "title", "channels", "value", "lever", "prior_propensity", "valid_days",
                   "explanation", "reasons")


@dataclass(frozen=True)
class Action:
    id: str
    action_class: str
    title: str
    channels: dict[str, str]           # channel -> consent purpose, in order of preference
    is_credit: bool
    data_purposes: tuple[str, ...]
    eligibility: tuple[dict, ...]
    applicability: tuple[dict, ...]
    context: dict[str, Any]
    value: float
    lever: float
    prior_propensity: float
    cool_down_days: int
    max_ignores: int
    valid_days: int
    explanation: str
    reasons: tuple[dict, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)


class CatalogueError(SegoneError):
    """The action catalogue is invalid; the message lists every problem, one per line."""


# ---------------------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------------------

def load_catalogue(path: str | Path | None = None, data: dict | None = None) -> list[Action]:
    """The validated catalogue from config/actions.yaml (or `path`, or an already parsed `data` dict)."""
    if data is None:
        path = Path(path) if path else CONFIG_DIR / "actions.yaml"
        try:
            data = parse_yaml(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise CatalogueError(f"{path}: not valid YAML ({error})") from error
    return validate_catalogue(data)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _check_rules(rules: Any, where: str, errors: list[str]) -> None:
    if rules is None:
        return
    if not isinstance(rules, list):
        errors.append(f"{where}: must be a list of rules, got {type(rules).__name__}")
        return
    for i, rule in enumerate(rules):
        _check_rule(rule, f"{where}[{i}]", errors)


def _check_rule(rule: Any, where: str, errors: list[str]) -> None:
    if not isinstance(rule, dict):
        errors.append(f"{where}: a rule must be a mapping like {{field: age, op: '>=', value: 18}}")
        return
    for group in ("any", "all"):
        if group in rule:
            if set(rule) - {group, "why"}:
                errors.append(f"{where}: an '{group}' rule takes only '{group}' and 'why', got {sorted(set(rule))}")
            if not rule[group]:
                errors.append(f"{where}.{group}: must be a non-empty list of rules")
            _check_rules(rule[group], f"{where}.{group}", errors)
            return
    unknown = set(rule) - {"field", "op", "value", "value_field", "why"}
    if unknown:
        errors.append(f"{where}: unknown rule keys {sorted(unknown)}")
    name = rule.get("field")
    if name is None:
        errors.append(f"{where}: missing 'field'")
    elif name not in CONTEXT_FIELDS:
        errors.append(f"{where}: unknown context field {name!r}")
    op = rule.get("op")
    if op not in OPERATORS:
        errors.append(f"{where}: unknown operator {op!r} (one of {', '.join(OPERATORS)})")
        return
    if op in ("is_null", "not_null"):
        return
    if "value_field" in rule:
        if rule["value_field"] not in CONTEXT_FIELDS:
            errors.append(f"{where}: unknown context field {rule['value_field']!r} in value_field")
        return
    if "value" not in rule:
        errors.append(f"{where}: operator {op!r} needs a 'value' (or 'value_field')")
        return
    value = rule["value"]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            errors.append(f"{where}: operator {op!r} needs a non-empty list as value")
    elif op in (">=", ">", "<=", "<") and not _is_number(value):
        errors.append(f"{where}: operator {op!r} needs a number as value, got {value!r}")


_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)(?::([a-z]+))?\}")


def _check_template(text: Any, where: str, errors: list[str]) -> None:
    if not isinstance(text, str) or not text.strip():
        errors.append(f"{where}: must be non-empty text")
        return
    for name, fmt in _PLACEHOLDER.findall(text):
        if name not in CONTEXT_FIELDS:
            errors.append(f"{where}: unknown context field {name!r} in placeholder")
        if fmt and fmt not in PLACEHOLDER_FORMATS:
            errors.append(f"{where}: unknown placeholder format {fmt!r} (one of {', '.join(PLACEHOLDER_FORMATS)})")


def validate_catalogue(data: Any) -> list[Action]:
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise CatalogueError("action catalogue: expected a mapping with a list under 'actions'")
    errors: list[str] = []
    actions: list[Action] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["actions"]):
        if not isinstance(raw, dict):
            errors.append(f"actions[{i}]: must be a mapping")
            continue
        aid = raw.get("id")
        label = f"action {aid!r}" if aid else f"actions[{i}]"
        n_before = len(errors)
        for name in REQUIRED_FIELDS:
            if name not in raw or raw[name] is None:
                errors.append(f"{label}: missing field '{name}'")
        if aid is not None:
            if not isinstance(aid, str) or not re.fullmatch(r"[a-z0-9_]{1,64}", aid):
                errors.append(f"{label}: field 'id' must be 1-64 characters of a-z, 0-9 and _")
            elif aid in seen:
                errors.append(f"{label}: duplicate id")
            seen.add(aid) if isinstance(aid, str) else None
        cls = raw.get("class")
        if cls is not None and cls not in CLASSES:
            errors.append(f"{label}: field 'class' is {cls!r}, not one of {', '.join(CLASSES)}")
        known = set(REQUIRED_FIELDS) | {"is_credit", "data_purposes", "eligibility", "applicability", "context",
                                        "contact", "description", "plain_explanation"}
        extra = set(raw) - known
        if extra:
            errors.append(f"{label}: unknown fields {sorted(extra)}")
        channels = raw.get("channels")
        if channels is not None:
            if not isinstance(channels, dict) or not channels:
                errors.append(f"{label}: field 'channels' must map each channel to its consent purpose")
            else:
                for channel, purpose in channels.items():
                    if channel not in CHANNELS:
                        errors.append(f"{label}: field 'channels' has unknown channel {channel!r} "
                                      f"(one of {', '.join(CHANNELS)})")
                    if purpose not in CONSENT_PURPOSES:
                        errors.append(f"{label}: field 'channels' has unknown consent purpose {purpose!r} for "
                                      f"{channel} (one of {', '.join(CONSENT_PURPOSES)})")
                    elif cls == "commercial" and purpose != MARKETING_PURPOSE_OF_CHANNEL.get(channel):
                        errors.append(f"{label}: commercial channel {channel!r} needs the marketing consent of that "
                                      f"channel ({MARKETING_PURPOSE_OF_CHANNEL.get(channel, 'none exists')}), "
                                      f"not {purpose!r}")
                    elif cls in ("protective", "service") and purpose != "service_alerts":
                        errors.append(f"{label}: {cls} channel {channel!r} must use the service_alerts purpose, "
                                      f"not {purpose!r}")
        for purpose in raw.get("data_purposes") or []:
            if purpose not in DATA_PURPOSES:
                errors.append(f"{label}: field 'data_purposes' has unknown consent purpose {purpose!r} "
                              f"(one of {', '.join(DATA_PURPOSES)})")
        if "is_credit" in raw and not isinstance(raw["is_credit"], bool):
            errors.append(f"{label}: field 'is_credit' must be true or false")
        if raw.get("is_credit") and cls != "commercial":
            errors.append(f"{label}: field 'is_credit' is true but the class is {cls!r}: credit is commercial")
        for name, low, high, closed_low in (("value", 0, None, False), ("lever", 0, None, False),
                                            ("prior_propensity", 0, 1, False)):
            v = raw.get(name)
            if v is None:
                continue
            if not _is_number(v) or (v <= low if not closed_low else v < low) or (high is not None and v >= high):
                bound = f"in (0, {high})" if high is not None else "> 0"
                errors.append(f"{label}: field '{name}' must be a number {bound}, got {v!r}")
        v = raw.get("valid_days")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            errors.append(f"{label}: field 'valid_days' must be a whole number of days >= 1, got {v!r}")
        contact = raw.get("contact") or {}
        if not isinstance(contact, dict):
            errors.append(f"{label}: field 'contact' must be a mapping")
            contact = {}
        for name, low in (("cool_down_days", 0), ("max_ignores", 1)):
            v = contact.get(name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                errors.append(f"{label}: field 'contact.{name}' must be a whole number >= {low}, got {v!r}")
        unknown_contact = sorted(set(contact) - {"cool_down_days", "max_ignores"})
        if unknown_contact:
            errors.append(f"{label}: field 'contact' has unknown keys {unknown_contact}")
        _check_rules(raw.get("eligibility"), f"{label}: field 'eligibility'", errors)
        _check_rules(raw.get("applicability"), f"{label}: field 'applicability'", errors)
        context = raw.get("context")
        if context is not None:
            if not isinstance(context, dict) or context.get("field") not in CONTEXT_FIELDS:
                errors.append(f"{label}: field 'context' must be {{field: <context field>, scale, min, max}}")
            else:
                for key in ("scale", "min", "max"):
                    if key in context and not (_is_number(context[key]) and context[key] >= 0):
                        errors.append(f"{label}: field 'context.{key}' must be a number >= 0")
                if context.get("scale", 1) == 0:
                    errors.append(f"{label}: field 'context.scale' must not be 0")
        _check_template(raw.get("explanation"), f"{label}: field 'explanation'", errors) \
            if raw.get("explanation") is not None else None
        if raw.get("plain_explanation") is not None:
            _check_template(raw["plain_explanation"], f"{label}: field 'plain_explanation'", errors)
        reasons = raw.get("reasons")
        if reasons is not None:
            if not isinstance(reasons, list) or not reasons:
                errors.append(f"{label}: field 'reasons' must be a non-empty list of {{text, when}}")
            else:
                if any(isinstance(r, dict) and r.get("when") for r in reasons) and \
                        all(isinstance(r, dict) and r.get("when") for r in reasons):
                    errors.append(f"{label}: field 'reasons' needs one reason without 'when' (the default)")
                for j, reason in enumerate(reasons):
                    if not isinstance(reason, dict):
                        errors.append(f"{label}: field 'reasons[{j}]' must be a mapping with 'text'")
                        continue
                    _check_template(reason.get("text"), f"{label}: field 'reasons[{j}].text'", errors)
                    _check_rules(reason.get("when"), f"{label}: field 'reasons[{j}].when'", errors)
        if len(errors) > n_before:
            continue
        actions.append(Action(
            id=aid, action_class=cls, title=str(raw["title"]), channels=dict(channels),
            is_credit=bool(raw.get("is_credit", False)), data_purposes=tuple(raw.get("data_purposes") or ()),
            eligibility=tuple(raw.get("eligibility") or ()), applicability=tuple(raw.get("applicability") or ()),
            context=dict(context or {}), value=float(raw["value"]), lever=float(raw["lever"]),
            prior_propensity=float(raw["prior_propensity"]), cool_down_days=int(contact.get("cool_down_days", 30)),
            max_ignores=int(contact.get("max_ignores", 3)), valid_days=int(raw["valid_days"]),
            explanation=str(raw["explanation"]), reasons=tuple(raw["reasons"]), raw=raw,
        ))
    if not errors and not actions:
        errors.append("action catalogue: no actions")
    if errors:
        raise CatalogueError("invalid action catalogue:\n  " + "\n  ".join(errors))
    return actions


# ---------------------------------------------------------------------------------------------------------------
# Vectorised rule evaluation
# ---------------------------------------------------------------------------------------------------------------

def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise SegoneError(f"context has no field {name!r} (the catalogue names it)")
    return frame[name]


def _compare(left: pd.Series, op: str, right: Any) -> np.ndarray:
    if op == "is_null":
        return left.isna().to_numpy()
    if op == "not_null":
        return left.notna().to_numpy()
    present = np.array(left.notna().to_numpy(), dtype=bool)
    if isinstance(right, pd.Series):
        present = present & right.notna().to_numpy()
        right = right.to_numpy()
    if op in ("in", "not_in"):
        hit = left.isin(list(right)).to_numpy()
        return present & (hit if op == "in" else ~hit)
    values = left.to_numpy()
    if values.dtype == object and isinstance(right, (bool, np.bool_)):
        values = left.astype("boolean").fillna(False).to_numpy(bool)
    with np.errstate(invalid="ignore"):
        if op == ">=":
            out = values >= right
        elif op == ">":
            out = values > right
        elif op == "<=":
            out = values <= right
        elif op == "<":
            out = values < right
        elif op == "==":
            out = values == right
        elif op == "!=":
            out = values != right
        else:  # validated earlier
            raise SegoneError(f"unknown operator {op!r}")
    return present & np.asarray(out, dtype=bool)


def evaluate_rule(frame: pd.DataFrame, rule: dict) -> np.ndarray:
    """One rule over every row of `frame`: a boolean array."""
    if "any" in rule:
        out = np.zeros(len(frame), dtype=bool)
        for sub in rule["any"]:
            out |= evaluate_rule(frame, sub)
        return out
    if "all" in rule:
        out = np.ones(len(frame), dtype=bool)
        for sub in rule["all"]:
            out &= evaluate_rule(frame, sub)
        return out
    left = _column(frame, rule["field"])
    right = _column(frame, rule["value_field"]) if "value_field" in rule else rule.get("value")
    return _compare(left, rule["op"], right)


def rule_text(rule: dict) -> str:
    """Plain words for a failed rule: its `why` if it has one, else the condition itself."""
    if rule.get("why"):
        return str(rule["why"])
    if "any" in rule:
        return "none of: " + "; ".join(rule_text(r) for r in rule["any"])
    if "all" in rule:
        return "not all of: " + "; ".join(rule_text(r) for r in rule["all"])
    target = rule.get("value_field", rule.get("value"))
    if rule["op"] in ("is_null", "not_null"):
        return f"{rule['field']} {rule['op'].replace('_', ' ')} not met"
    return f"{rule['field']} {rule['op']} {target} not met"


def first_failure(frame: pd.DataFrame, rules: tuple[dict, ...] | list[dict]) -> tuple[np.ndarray, list[str]]:
    """Per row, the index (into the returned texts) of the first rule that fails, or -1 when all pass."""
    failed = np.full(len(frame), -1, dtype=np.int32)
    texts = []
    for i, rule in enumerate(rules):
        ok = evaluate_rule(frame, rule)
        failed[(failed < 0) & ~ok] = i
        texts.append(rule_text(rule))
    return failed, texts


def context_weight(frame: pd.DataFrame, spec: dict) -> np.ndarray:
    """The context factor of an action's priority: clip(field / scale, min, max); missing -> min; no spec -> 1."""
    if not spec:
        return np.ones(len(frame))
    values = pd.to_numeric(_column(frame, spec["field"]).astype("float64"), errors="coerce").to_numpy(float)
    low, high = float(spec.get("min", 0.05)), float(spec.get("max", 1.0))
    scaled = values / float(spec.get("scale", 1.0))
    return np.clip(np.where(np.isnan(scaled), low, scaled), low, high)


def template_known(text: str, frame: pd.DataFrame) -> np.ndarray:
    """Per row, whether every field a template names is known (not null, and for text not empty): a sentence with an
    unknown fact in it is never said (it would read "£0", "0%" or "around soon")."""
    known = np.ones(len(frame), dtype=bool)
    for name, _ in _PLACEHOLDER.findall(text):
        values = frame[name]
        known &= values.notna().to_numpy(bool) & (values.astype(str).str.strip() != "").to_numpy(bool)
    return known


def render_template(text: str, frame: pd.DataFrame) -> pd.Series:
    """Fill {field:format} placeholders column-wise for every row of `frame`."""
    parts = _PLACEHOLDER.split(text)
    # split gives [literal, name, fmt, literal, name, fmt, ..., literal]
    out = pd.Series(parts[0], index=frame.index, dtype=object)
    for k in range(1, len(parts), 3):
        name, fmt, literal = parts[k], parts[k + 1] or "text", parts[k + 2]
        values = frame[name]
        if fmt == "pct" and name.startswith("p_"):
            # a forecast's probability is never said as a certainty: 0.996 is "99% chance", not "100% chance"
            values = pd.to_numeric(values, errors="coerce").clip(0.01, 0.99)
        out = out + _format(values, fmt) + literal
    return out


def _format(values: pd.Series, fmt: str) -> pd.Series:
    if fmt == "money":
        number = pd.to_numeric(values, errors="coerce").fillna(0).round(0).astype("int64")
        return "£" + number.astype(str)
    if fmt == "penny":
        # a threshold the words compare with ("£612.60 or more"): to the penny unless whole, so that no payment the
        # rule does not count is inside the words (the nearest pound, £613, would leave £612.60-£612.99 out)
        number = pd.to_numeric(values, errors="coerce").fillna(0).round(2)
        whole = (number == number.round(0))
        return "£" + number.map(lambda v: f"{v:,.2f}").where(~whole, number.round(0).astype("int64").astype(str))
    if fmt == "pct":
        share = pd.to_numeric(values, errors="coerce").fillna(0)
        number = (share * 100).round(0)
        # a chance or share strictly between 0 and 1 is never said as 0% or 100% (a 99.6% chance is not certain)
        number = number.where(~((share > 0) & (share < 1)), number.clip(1, 99)).astype("int64")
        return number.astype(str) + "%"
    if fmt == "int":
        return pd.to_numeric(values, errors="coerce").fillna(0).round(0).astype("int64").astype(str)
    if fmt == "date":
        return pd.to_datetime(values, errors="coerce").dt.strftime("%d %B %Y").fillna("soon")
    return values.astype(str).where(values.notna(), "")
