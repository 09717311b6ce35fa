"""Stage 6, next best actions: context -> funnel -> arbitration and exploration -> gold tables, per customer shard.

The funnel for every customer and every catalogue action (config/actions.yaml), in order:
    eligibility -> applicability -> suitability -> consent -> contact_policy -> control_group -> arbitration
Each stage drops candidates; every drop goes to gold `decision_log` with the stage and a reason in plain words.
Arbitration ranks what is left: protective actions first (never outranked), then the others by
priority = propensity x context x value x lever, with an epsilon-greedy bandit (models/bandit.py) filling the
non-protective slots and logging the probability of each choice. A fixed share of customers (md5 of customer_id and
as_of) is a control group that receives protective actions only.

`decide_frame` is the pure funnel over a context frame (one row per customer, the fields of
pipelines.actions.CONTEXT_FIELDS) and the CRM responses: no lake, so tests and `bench_decide` call it directly.
`build_context` assembles that frame for one shard from the lake; `decide_shard` writes the shard's gold partitions.
docs/decisioning.md documents the choices (what counts as credit, what arrears means here, the propensity update).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines import actions as catalogue_module
from pipelines import lake, outputs
from pipelines.actions import CHANNELS, LIFE_EVENTS, Action, context_weight, evaluate_rule, first_failure
from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

STAGES = ("eligibility", "applicability", "suitability", "consent", "contact_policy", "control_group",
          "arbitration", "capacity")
STAGE_CODE = {name: i + 1 for i, name in enumerate(STAGES)}
CHANNEL_CODE = {c: i for i, c in enumerate(CHANNELS)}
ENGAGED_EVENTS = ("opened", "clicked", "accepted", "declined")
GOLD_TABLES = ("next_best_actions", "decision_log", "advisor_queue", "dashboard_layout", "decision_flags")
# Age bands (inclusive upper ages, labels): the context's age_band, and the groups of the nightly report's fairness
# section (pipelines/nightly_report.py imports these: one definition).
AGE_BAND_UPPER = (17, 24, 34, 49, 64)
AGE_BAND_LABELS = ("under 18", "18-24", "25-34", "35-49", "50-64", "65+")
AGE_UNKNOWN = "unknown"
DASHBOARD_MODULES = ("money_help", "cash_flow_view", "tax_provisioning", "wealth_preservation", "savings_goals",
                     "bills_calendar", "travel_money", "moving_checklist", "family_budget", "accounts_overview",
                     "spending_insights")


def policy() -> dict[str, Any]:
    return load_config("decisioning")


@dataclass
class Decisions:
    next_best_actions: pd.DataFrame
    decision_log: pd.DataFrame
    advisor_queue: pd.DataFrame
    dashboard_layout: pd.DataFrame
    decision_flags: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, Any] = field(default_factory=dict)
    bandit_log: pd.DataFrame = field(default_factory=pd.DataFrame)
    decision_context: pd.DataFrame = field(default_factory=pd.DataFrame)


# ---------------------------------------------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------------------------------------------

_BOOL_FIELDS = ("has_savings_plan", "has_debt_plan", "has_bill_provision", "has_current", "has_savings", "has_credit_card", "has_loan", "has_mortgage", "has_external_current",
                "has_regular_income", "is_income_stopped", "has_forecast", "has_life_events", "card_over_limit",
                "is_personalization_allowed", "is_life_events_allowed", "is_service_alerts_allowed",
                "is_marketing_email_allowed", "is_marketing_sms_allowed", "is_marketing_push_allowed",
                "is_marketing_inapp_allowed", "is_open_banking_allowed", "is_location_allowed",
                *(f"is_{e}" for e in LIFE_EVENTS), *(f"is_{e}_corroborated" for e in LIFE_EVENTS),
                "is_message_distress", "is_message_difficulty", "is_message_complaint", "is_message_lost_card",
                "is_message_leaving", "is_message_details_change")
# The consents the funnel checks: an action's data purposes and its channels' purposes.
CONSENT_PURPOSES = ("personalization", "life_events", "open_banking", "location", "service_alerts",
                    "marketing_email", "marketing_sms", "marketing_push", "marketing_inapp")
# gold message_signals column -> context field (decide reads the persisted features; it never reads messages)
MESSAGE_FIELDS = {"is_distressed": "is_message_distress", "has_financial_difficulty": "is_message_difficulty",
                  "has_recent_complaint": "is_message_complaint", "has_fraud_or_lost_card": "is_message_lost_card",
                  "has_wish_to_leave": "is_message_leaving", "has_personal_details_change": "is_message_details_change",
                  "reasons": "message_reasons"}


def complete_context(context: pd.DataFrame, pol: dict[str, Any] | None = None) -> pd.DataFrame:
    """The context with every field of the vocabulary: missing booleans are false, missing numbers unknown (NaN),
    service alerts allowed unless said otherwise; the protective flags derived from their raw fields (an explicit
    true flag is kept). Sorted by customer_id so that the output never depends on the input order."""
    pol = pol or policy()
    if "customer_id" not in context.columns:
        raise SegoneError("context needs a customer_id column")
    if context["customer_id"].duplicated().any():
        raise SegoneError("context has duplicate customer_id rows")
    ctx = context.sort_values("customer_id", kind="stable").reset_index(drop=True).copy()
    ctx["customer_id"] = ctx["customer_id"].astype(str)
    for name in _BOOL_FIELDS:
        default = name == "is_service_alerts_allowed"
        ctx[name] = ctx[name].astype("boolean").fillna(default).astype(bool) if name in ctx else default
    for name in catalogue_module.CONTEXT_FIELDS:
        if name not in ctx.columns and name not in ("in_arrears", "is_unarranged_overdraft", "is_gambling_harm",
                                                    "is_shortfall_risk", "is_vulnerable", "age_band",
                                                    "arrears_reason", "is_income_known"):
            ctx[name] = np.nan if name not in _TEXT_FIELDS else None
    ctx = ctx.copy()  # one block per dtype again after the columns added one by one
    if "has_forecast" not in context.columns:
        ctx["has_forecast"] = ctx["p_shortfall_30"].notna()
    suit = pol["suitability"]
    p30 = ctx["p_shortfall_30"].astype("float64")
    ctx["is_shortfall_risk"] = (p30 > float(suit["max_p_shortfall_30_for_credit"])) | p30.isna()
    ctx["is_gambling_harm"] = ctx["share_gambling_90"].astype("float64").fillna(0).to_numpy() >= \
        float(suit["gambling_share_90"])
    ctx["is_vulnerable"] = ctx["known_vulnerability"].notna() & (ctx["known_vulnerability"].astype(str) != "")
    limit = ctx["overdraft_limit"].astype("float64").fillna(0)
    low = ctx["balance_min_30"].astype("float64")
    unarranged = (low < -(limit + float(suit.get("unarranged_tolerance", 0.0)))).fillna(False).to_numpy(bool)
    ctx["is_unarranged_overdraft"] = unarranged | _flag(ctx, "is_unarranged_overdraft")
    ctx["in_arrears"], ctx["arrears_reason"] = arrears(ctx, pol)
    ctx["age_band"] = age_bands(ctx["age"])
    # a history too short to have seen a monthly income as a stream says nothing of the customer's regular income:
    # the shortest history of the customer's sources (income_history_days: an open-banking account connected after
    # years of core history has only its own), else history_days (a context without either, made by hand, is taken
    # as long enough). Without it nothing is said of a regular income, present, stopped or missing: the flags that
    # say one arrives or stopped are false, and the rules that act on a missing or small one ask is_income_known
    from pipelines.features import income_known_days, income_pending
    history = (ctx["income_history_days"] if "income_history_days" in ctx else ctx["history_days"]).astype("float64")
    if "income_history_days" in ctx:
        history = history.fillna(ctx["history_days"].astype("float64"))
    # nor while a stopped income's replacement is pending (a new payer of its kind paid once: features.income_pending)
    known = (history.isna() | (history >= income_known_days())).to_numpy(bool) & ~income_pending(ctx)
    ctx["is_income_known"] = known
    for name in ("has_regular_income", "is_income_stopped"):
        ctx[name] = ctx[name].to_numpy(bool) & known
    # the definition of the income forecast's event (a constant of its config), for the reasons that state it
    ctx["income_drop_share"] = float(load_config("event_forecast")["income"]["drop_share"])
    # how far ahead tonight's plans reach (config/plans.yaml), for the plan actions' words
    ctx["plan_horizon_days"] = float(max(int(h) for h in load_config("plans")["horizons"]))
    for event in EVENT_FORECASTS:
        _event_ahead(ctx, event, pol)
    return ctx


# The income-drop and large-expense forecasts as context (gold income_forecast / expense_forecast; the levels in
# config/decisioning.yaml event_forecasts): event (the stem of its context fields) -> (gold table, the field of its
# reference_amount, the fields taken from the chosen horizon's row: gold column -> field).
EVENT_FORECASTS = {
    "income_drop": ("income_forecast", "income_reference",
                    {"expected_date": "income_drop_date", "drivers": "income_drop_drivers"}),
    "large_expense": ("expense_forecast", "large_expense_threshold",
                      {"expected_date": "large_expense_date", "expected_amount": "large_expense_amount",
                       "drivers": "large_expense_drivers"}),
}
_TEXT_FIELDS = ("region", "known_vulnerability", "confidence", "expected_shortfall_date", "plan_savings_reason",
                "plan_debt_reason", "plan_bill_reason", "income_drop_date", "income_drop_drivers",
                "large_expense_date", "large_expense_drivers")


def event_levels(pol: dict[str, Any] | None = None) -> dict[str, tuple[float, list[int]]]:
    """Per event forecast, the probability at which it is "ahead" and the horizons that count
    (config/decisioning.yaml event_forecasts)."""
    cfg = (pol or policy())["event_forecasts"]
    return {event: (float(cfg[event]["min_probability"]), sorted(int(h) for h in cfg[event]["horizons"]))
            for event in EVENT_FORECASTS}


def _event_ahead(ctx: pd.DataFrame, event: str, pol: dict[str, Any]) -> None:
    """is_<event>_ahead (the probability at one of the configured horizons is at least the level), <event>_horizon
    (the shortest such horizon) and p_<event> (the probability there), from the p_<event>_<h> fields; a customer
    without the forecast (no row, or no consent) is never "ahead". The chosen horizon's date, amount and drivers
    come from the gold rows (`_event_wide`); with no horizon chosen they are null, so no reason can state them."""
    level, hs = event_levels(pol)[event]
    horizon = np.full(len(ctx), np.nan)
    prob = np.full(len(ctx), np.nan)
    for h in reversed(hs):
        p = ctx[f"p_{event}_{h}"].astype("float64").to_numpy() if f"p_{event}_{h}" in ctx else np.full(len(ctx), np.nan)
        hit = p >= level
        horizon = np.where(hit, float(h), horizon)
        prob = np.where(hit, p, prob)
    ahead = ~np.isnan(horizon)
    ctx[f"is_{event}_ahead"] = ahead
    ctx[f"{event}_horizon"] = horizon
    ctx[f"p_{event}"] = prob
    for name in EVENT_FORECASTS[event][2].values():
        ctx[name] = ctx[name].where(ahead, None if name in _TEXT_FIELDS else np.nan)


def age_bands(age: pd.Series) -> pd.Series:
    """The age band of each age in years (AGE_BAND_LABELS; 'unknown' when the age is)."""
    age = age.astype("float64")
    bands = pd.cut(age, [-np.inf, *AGE_BAND_UPPER, np.inf], labels=list(AGE_BAND_LABELS))
    return bands.astype(object).where(age.notna(), AGE_UNKNOWN)


def arrears(ctx: pd.DataFrame, pol: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: in arrears or not, and the plain words of the evidence (null when not in arrears). Arrears is
    evidence of a missed or returned payment (config/decisioning.yaml `arrears`): a payment returned unpaid or a fee
    only such a payment triggers (counted by the features stage), an overdue loan or mortgage repayment, a credit
    card over its limit, or an explicit `in_arrears` flag (a delinquency feed). Fees in general are not arrears."""
    words = pol["arrears"]["reasons"]
    count = lambda name: ctx[name].astype("float64").fillna(0).to_numpy() >= 1  # noqa: E731
    evidence = {
        "missed_repayment": count("n_missed_repayments"),
        "returned_payment": count("n_returned_payments"),
        "arrears_fee": count("n_arrears_fees"),
        "card_over_limit": ctx["card_over_limit"].to_numpy(bool),
    }
    evidence["reported"] = _flag(ctx, "in_arrears") & ~np.logical_or.reduce(list(evidence.values()))
    reason = np.full(len(ctx), "", dtype=object)
    for kind in words:
        hit = evidence[kind]
        reason = np.where(hit & (reason != ""), reason + " and " + words[kind], np.where(hit, words[kind], reason))
    in_arrears = reason != ""
    return in_arrears, np.where(in_arrears, reason, None)


def _flag(ctx: pd.DataFrame, name: str) -> np.ndarray:
    if name not in ctx.columns:
        return np.zeros(len(ctx), dtype=bool)
    return ctx[name].astype("boolean").fillna(False).to_numpy(bool)


FEATURE_FIELDS = ("balance_now", "balance_min_30", "n_days_negative_30", "n_days_negative_90", "overdraft_limit",
                  "headroom_now", "share_gambling_90", "share_travel_90", "has_regular_income", "is_income_stopped",
                  "income_90", "monthly_recurring_income", "monthly_recurring_outgoings", "n_outgoing_streams",
                  "n_fees_90", "savings_balance", "income_regularity", "n_returned_payments", "n_arrears_fees",
                  "n_missed_repayments", "history_days", "income_history_days", "is_income_pending",
                  "days_since_income")
HOLDING_FIELDS = ("has_current", "has_savings", "has_credit_card", "has_loan", "has_mortgage", "has_external_current",
                  "card_over_limit")


def read_context_inputs(paths: Paths, day: date, bucket: int) -> dict[str, pd.DataFrame | None]:
    """The read step of decide: what was persisted for D and the bucket, never rebuilt. Silver snapshots
    (customers, consent_state), the feature store (customer_features, customer_context: holdings and a card over
    its limit), and the gold outputs of the earlier stages (cash_forecast, life_events, message_signals; None when a
    stage wrote no partition)."""
    from pipelines import store

    customers_path = store.snapshot_path(paths, "customers", day)
    consent_path = store.snapshot_path(paths, "consent_state", day, required=False)
    consent_cols = ", ".join(f"is_{purpose}_allowed" for purpose in CONSENT_PURPOSES)
    con = lake.connect(shared=True)
    try:
        customers = con.execute(f"""
            select customer_id, region, known_vulnerability, birth_year, customer_since
            from read_parquet('{customers_path}/**/*.parquet') where bucket = {int(bucket)}""").df()
        consents = (con.execute(f"select customer_id, {consent_cols} from read_parquet('{consent_path}/**/*.parquet') "
                                f"where bucket = {int(bucket)}").df()
                    if consent_path is not None else pd.DataFrame({"customer_id": pd.Series(dtype=str)}))
        forecast = _gold_partition(con, paths, "cash_forecast", day.isoformat(), bucket)
        life = _gold_partition(con, paths, "life_events", day.isoformat(), bucket)
        plans = _gold_partition(con, paths, "plans", day.isoformat(), bucket)
        events = {event: _gold_partition(con, paths, table, day.isoformat(), bucket)
                  for event, (table, _, _) in EVENT_FORECASTS.items()}
    finally:
        con.close()
    features = store.read_table(paths, "customer_features", day, bucket)
    return {"customers": customers, "consents": consents,
            "features": features[[c for c in ("customer_id", *FEATURE_FIELDS) if c in features.columns]],
            "holdings": store.read_table(paths, "customer_context", day, bucket),
            "forecast": forecast, "life_events": life, "messages": _message_context(paths, day, bucket),
            "app": app_context(paths, day, bucket), "plans": plans, "event_forecasts": events}


def _message_context(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """The persisted per-customer message features of D (gold message_signals), as context fields."""
    from pipelines.messages import read_signals

    signals = read_signals(paths, day, bucket)
    return signals[["customer_id", *MESSAGE_FIELDS]].rename(columns=MESSAGE_FIELDS)


def context_frame(day: date, customers: pd.DataFrame, consents: pd.DataFrame, features: pd.DataFrame,
                  holdings: pd.DataFrame, forecast: pd.DataFrame | None, life_events: pd.DataFrame | None,
                  messages: pd.DataFrame | None, app: pd.DataFrame | None = None,
                  plans: pd.DataFrame | None = None,
                  event_forecasts: dict[str, pd.DataFrame | None] | None = None) -> pd.DataFrame:
    """One row per customer as of D from the persisted inputs (`read_context_inputs`): features, the cash forecast
    per horizon, the income-drop and large-expense forecasts, flagged life events, holdings, consents, vulnerability,
    message signals, app usage and roles; then every field of the vocabulary (`complete_context`: arrears, unarranged overdraft, gambling harm, age band).

    Works without gold life_events (no life-event context: every is_<event> false) and without a cash forecast (the
    protective shortfall actions do not apply, and credit is blocked for want of an affordability check)."""
    ctx = customers[["customer_id", "region", "known_vulnerability"]].copy()
    ctx["age"] = day.year - customers["birth_year"].astype("float64")
    since = pd.to_datetime(customers["customer_since"])
    ctx["tenure_days"] = (pd.Timestamp(day) - since).dt.days.astype("float64")
    ctx = ctx.merge(features, on="customer_id", how="left")
    for name in ("has_regular_income", "is_income_stopped"):
        ctx[name] = ctx[name].fillna(0).astype(float) > 0 if name in ctx else False
    ctx = ctx.merge(holdings[["customer_id", *[c for c in HOLDING_FIELDS if c in holdings.columns]]],
                    on="customer_id", how="left")
    ctx = ctx.merge(consents, on="customer_id", how="left")
    ctx["is_service_alerts_allowed"] = ctx["is_service_alerts_allowed"].astype("boolean").fillna(True) \
        if "is_service_alerts_allowed" in ctx else True
    # an external account is known only through open banking: with that consent withdrawn on D it is not known
    ctx["has_external_current"] = ctx["has_external_current"].astype("boolean").fillna(False) \
        & ctx["is_open_banking_allowed"].astype("boolean").fillna(False)
    ctx = ctx.merge(_forecast_wide(forecast), on="customer_id", how="left")
    ctx = ctx.merge(_life_events_wide(life_events), on="customer_id", how="left")
    if messages is not None:
        ctx = ctx.merge(messages[["customer_id", *MESSAGE_FIELDS.values()]], on="customer_id", how="left")
    if app is not None:
        ctx = ctx.merge(app, on="customer_id", how="left")
    ctx = ctx.merge(plan_context(plans), on="customer_id", how="left")
    pol = policy()
    for event in EVENT_FORECASTS:
        ctx = ctx.merge(_event_wide((event_forecasts or {}).get(event), event, pol), on="customer_id", how="left")
    return complete_context(ctx, pol)


def _event_wide(rows: pd.DataFrame | None, event: str, pol: dict[str, Any]) -> pd.DataFrame:
    """One event forecast's gold rows per customer: p_<event>_<h> per horizon, the reference amount, and the
    expected date, amount and drivers of the row of the horizon `_event_ahead` will choose (the shortest configured
    horizon at the level). Drivers are kept only when they name something specific to the customer (not the
    forecast's default words, not its "no elevated chance" below the driver threshold)."""
    from pipelines import event_forecast

    _, reference, chosen = EVENT_FORECASTS[event]
    kind = "income" if event == "income_drop" else "expense"
    columns = ["customer_id", reference, *chosen.values()]
    if rows is None or rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    rows = rows.assign(customer_id=rows["customer_id"].astype(str))
    wide = rows.pivot_table(index="customer_id", columns="horizon_days", values="p_event", aggfunc="max")
    wide.columns = [f"p_{event}_{int(h)}" for h in wide.columns]
    wide[reference] = rows.groupby("customer_id")["reference_amount"].first().astype(float)
    level, hs = event_levels(pol)[event]
    passing = rows[rows["horizon_days"].isin(hs) & (rows["p_event"].astype(float) >= level)]
    first = passing.sort_values(["customer_id", "horizon_days"]).drop_duplicates("customer_id").set_index("customer_id")
    cfg = event_forecast.settings()
    specific = (first["p_event"].astype(float) >= float(cfg["driver_threshold"])) \
        & (first["drivers"].astype(str) != str(cfg["drivers"][kind]["default"])) \
        & ~first["drivers"].astype(str).str.startswith("no elevated chance")
    for column, name in chosen.items():
        values = first[column] if column in first else pd.Series(index=first.index, dtype=object)
        if column == "drivers":
            values = values.where(specific, None)
        wide[name] = values.reindex(wide.index)
    return wide.reset_index()


def plan_context(plans: pd.DataFrame | None) -> pd.DataFrame:
    """Tonight's gold plans per customer as context fields: has_savings_plan / has_debt_plan, what each kind moves,
    and the headline of its first instruction (a reason without money figures; the plans stage proposed them only with the consents they need and
    within the forecast's P10 path: docs/plans.md)."""
    columns = ["customer_id", "has_savings_plan", "plan_savings_amount", "plan_savings_reason", "has_debt_plan",
               "plan_debt_amount", "plan_debt_reason", "has_bill_provision", "plan_bill_reason"]
    if plans is None or plans.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    ordered = plans.sort_values(["customer_id", "priority"])
    out = pd.DataFrame({"customer_id": ordered["customer_id"].unique()}).set_index("customer_id")
    for kind in ("savings", "debt"):
        rows = ordered[ordered["kind"] == kind]
        out[f"has_{kind}_plan"] = pd.Series(True, index=rows["customer_id"].unique()).reindex(out.index).fillna(False)
        out[f"plan_{kind}_amount"] = rows.groupby("customer_id")["amount"].sum().reindex(out.index)
        out[f"plan_{kind}_reason"] = rows.groupby("customer_id")["headline"].first().reindex(out.index)
    # a provision ahead of a known bill: the large_bill_ahead action is withheld for it (the plan already sets that
    # money aside, and savings_plan says so: one message for the same money)
    bills = ordered[ordered["action"] == "bill_provision"]
    out["has_bill_provision"] = pd.Series(True, index=bills["customer_id"].unique()).reindex(out.index).fillna(False)
    out["plan_bill_reason"] = bills.groupby("customer_id")["headline"].first().reindex(out.index)
    return out.reset_index()[columns]


def build_context(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """The context of one bucket as of D from what the night persisted (read_context_inputs + context_frame)."""
    return context_frame(day, **read_context_inputs(paths, day, bucket))


def app_context(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """The persisted per-customer app features and roles of D (gold app_usage, app_signals, customer_roles:
    `profiles.read_profile_context`) and the night each dashboard module was first introduced to the customer
    (`introduced_on_<module>`, from the latest earlier dashboard_layout: `previous_introductions`)."""
    from pipelines.profiles import read_profile_context

    return read_profile_context(paths, day, bucket).merge(previous_introductions(paths, day, bucket),
                                                          on="customer_id", how="outer")


def previous_introductions(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """introduced_on_<module> per customer from the bucket's latest dashboard_layout before D (within
    dashboard.usage.carry_days): a module stays introduced while it stays on the customer's screen."""
    root = paths.table("gold", "dashboard_layout")
    carry = int(policy()["dashboard"].get("usage", {}).get("carry_days", 35))
    earlier = sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*")
                     if (day - timedelta(days=carry)).isoformat() <= p.name.split("=", 1)[1] < day.isoformat()
                     and any((p / f"bucket={int(bucket)}").glob("*.parquet"))) if root.exists() else []
    empty = pd.DataFrame({"customer_id": pd.Series(dtype=object)})
    if not earlier:
        return empty
    folder = lake.partition_path(paths, "gold", "dashboard_layout", as_of=earlier[-1], bucket=str(int(bucket)))
    con = lake.connect(shared=True)
    try:
        rows = con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false, "
                           f"union_by_name = true)").df()
    finally:
        con.close()
    if "introduced_on" not in rows.columns or rows["introduced_on"].isna().all():
        return empty
    rows = rows.dropna(subset=["introduced_on"]).assign(introduced_on=lambda f: pd.to_datetime(f["introduced_on"]))
    wide = rows.groupby(["customer_id", "module"])["introduced_on"].min().unstack("module")
    wide.columns = [f"introduced_on_{m}" for m in wide.columns]
    return wide.reset_index()


def _gold_partition(con, paths: Paths, table: str, iso: str, bucket: int) -> pd.DataFrame | None:
    folder = lake.partition_path(paths, "gold", table, as_of=iso, bucket=str(int(bucket)))
    if not folder.exists() or not any(folder.glob("*.parquet")):
        log.info("gold %s has no partition as_of=%s/bucket=%s: deciding without it", table, iso, bucket)
        return None
    return con.execute(f"select * from read_parquet('{folder}/*.parquet')").df()


def _forecast_wide(forecast: pd.DataFrame | None) -> pd.DataFrame:
    if forecast is None or forecast.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "has_forecast": pd.Series(dtype=bool)})
    wide = forecast.pivot_table(index="customer_id", columns="horizon_days", values="p_shortfall", aggfunc="max")
    wide.columns = [f"p_shortfall_{int(h)}" for h in wide.columns]
    first = forecast.sort_values(["customer_id", "horizon_days"]).drop_duplicates("customer_id")
    first = first.set_index("customer_id")
    wide["min_balance_p10_30"] = first["min_balance_p10"]
    wide["safe_to_save"] = first["safe_to_save"]
    wide["confidence"] = first["confidence"]
    wide["expected_shortfall_date"] = first["expected_shortfall_date"]
    wide["has_forecast"] = True
    return wide.reset_index()


def _life_events_wide(life: pd.DataFrame | None) -> pd.DataFrame:
    if life is None or life.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "has_life_events": pd.Series(dtype=bool)})
    life = life[life["event_type"].isin(LIFE_EVENTS)]
    flagged = life.pivot_table(index="customer_id", columns="event_type", values="flagged",
                               aggfunc=lambda s: bool(pd.Series(s).fillna(False).astype(bool).any()))
    prob = life.pivot_table(index="customer_id", columns="event_type", values="probability", aggfunc="max")
    # a flag's corroborating evidence (what credit needs) is in its evidence JSON; missing or unreadable: not met
    hits = life[life["flagged"].astype("boolean").fillna(False).astype(bool)]
    met = hits[hits["evidence"].map(_corroboration_met)] if len(hits) else hits
    out = pd.DataFrame(index=sorted(set(life["customer_id"])))
    for event in LIFE_EVENTS:
        out[f"is_{event}"] = flagged[event].reindex(out.index).fillna(False).astype(bool) \
            if event in flagged else False
        out[f"p_{event}"] = prob[event].reindex(out.index) if event in prob else np.nan
        out[f"is_{event}_corroborated"] = out.index.isin(met.loc[met["event_type"] == event, "customer_id"])
    out["has_life_events"] = True
    return out.rename_axis("customer_id").reset_index()


def _corroboration_met(evidence: Any) -> bool:
    try:
        return bool(json.loads(evidence).get("corroboration", {}).get("met", False))
    except (TypeError, ValueError, AttributeError):
        return False


def corroboration_words() -> dict[str, str]:
    """Per life event, the corroborating evidence a credit offer triggered by it needs, in words
    (config/life_events.yaml `corroboration.description`)."""
    events = load_config("life_events")["events"]
    return {e: str(spec["corroboration"]["description"]) for e, spec in events.items() if "corroboration" in spec}


def corroborated_context(ctx: pd.DataFrame) -> pd.DataFrame:
    """The context a credit or lending action is judged and explained on: a life event counts only with its
    corroborating evidence (is_<event> and is_<event>_corroborated). A flag alone is an inference: enough for a
    reminder or an insurance quote, never for credit."""
    out = ctx.copy()
    for event in LIFE_EVENTS:
        out[f"is_{event}"] = ctx[f"is_{event}"].to_numpy(bool) & ctx[f"is_{event}_corroborated"].to_numpy(bool)
    return out


def _life_event_fields(rules) -> list[str]:
    """The life events (is_<event> fields) a list of rules reads, in order."""
    names: list[str] = []

    def walk(rule: dict) -> None:
        for group in ("any", "all"):
            for sub in rule.get(group, ()):
                walk(sub)
        if rule.get("field") in {f"is_{e}" for e in LIFE_EVENTS}:
            names.append(rule["field"][3:])

    for rule in rules:
        walk(rule)
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------------
# Contact history
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class ContactState:
    days_since_decline: np.ndarray     # (n, A) float, inf when never declined
    days_since_complaint: np.ndarray   # (n, A) float
    n_ignored: np.ndarray              # (n, A) int
    unsubscribed: np.ndarray           # (n, C) bool
    sent_7d: np.ndarray                # (n, C) int: capped-class recommendations delivered in the last 7 days
    trials: np.ndarray                 # (A, C) recommendations delivered (all customers of the frame)
    successes: np.ndarray              # (A, C)
    days_since_delivery: np.ndarray    # (n, A) float: days since the action's last delivery, inf when never
    history: dict[str, np.ndarray] = field(default_factory=dict)   # per customer: `RESPONSE_HISTORY`


# The customer's own answers, as the policy sees them (gold decision_context; docs/closed_loop.md section 13): over the
# contact policy's lookback, recommendations delivered, the share engaged with (opened, clicked, accepted, declined;
# NaN with none delivered), accepted, declined, non-protective ones delivered in the last 7 days, days since the last
# delivery (NaN: never).
RESPONSE_HISTORY = ("contacts_delivered", "engaged_share", "n_accepted", "n_declined", "contacts_7d",
                    "days_since_contact")


def contact_state(responses: pd.DataFrame | None, customers: pd.Series, catalogue: list[Action], as_of: date,
                  pol: dict[str, Any]) -> ContactState:
    n, a, c = len(customers), len(catalogue), len(CHANNELS)
    state = ContactState(np.full((n, a), np.inf), np.full((n, a), np.inf), np.zeros((n, a), np.int64),
                         np.zeros((n, c), bool), np.zeros((n, c), np.int64), np.zeros((a, c)), np.zeros((a, c)),
                         np.full((n, a), np.inf))
    state.history = {"contacts_delivered": np.zeros(n), "engaged_share": np.full(n, np.nan),
                     "n_accepted": np.zeros(n), "n_declined": np.zeros(n), "contacts_7d": np.zeros(n),
                     "days_since_contact": np.full(n, np.nan)}
    if responses is None or responses.empty:
        return state
    cp = pol["contact_policy"]
    r = responses[["recommendation_id", "customer_id", "action_id", "channel", "event", "event_at"]].copy()
    at = pd.to_datetime(r["event_at"], utc=True)
    end = pd.Timestamp(as_of + timedelta(days=1), tz="UTC")
    keep = (at < end) & (at >= end - pd.Timedelta(days=int(cp["lookback_days"])))
    r, at = r[keep], at[keep]
    r["days_ago"] = ((end - at).dt.total_seconds() // 86400).astype("int64")   # 0: during D
    cust = pd.Index(customers.astype(str)).get_indexer(r["customer_id"].astype(str))
    act = pd.Index([x.id for x in catalogue]).get_indexer(r["action_id"])
    chan = r["channel"].map(CHANNEL_CODE).fillna(-1).astype(int).to_numpy()
    r["cust"], r["act"], r["chan"] = cust, act, chan
    protective = {x.id for x in catalogue if x.action_class not in cp["capped_classes"]}
    # per recommendation: when delivered, engaged or not, accepted
    r["delivered_days"] = r["days_ago"].where(r["event"] == "delivered")
    r["engaged"] = r["event"].isin(ENGAGED_EVENTS)
    r["accepted"] = r["event"].isin(pol["propensity"]["success_events"])
    per_rec = r.groupby("recommendation_id", sort=True).agg(
        cust=("cust", "first"), act=("act", "first"), chan=("chan", "first"), action_id=("action_id", "first"),
        delivered_days=("delivered_days", "max"), engaged=("engaged", "any"), accepted=("accepted", "any"))
    delivered = per_rec["delivered_days"].notna()
    ok = (per_rec["act"] >= 0) & (per_rec["chan"] >= 0)
    trials = per_rec[delivered & ok]
    np.add.at(state.trials, (trials["act"].to_numpy(), trials["chan"].to_numpy()), 1)
    np.add.at(state.successes, (trials["act"].to_numpy(), trials["chan"].to_numpy()),
              trials["accepted"].to_numpy(float))
    mine = per_rec[per_rec["cust"] >= 0]
    ignored = mine[mine["delivered_days"].notna() & ~mine["engaged"] & (mine["act"] >= 0) &
                   (mine["delivered_days"] >= int(cp["ignore_after_days"]))]
    np.add.at(state.n_ignored, (ignored["cust"].to_numpy(), ignored["act"].to_numpy()), 1)
    recent = mine[mine["delivered_days"].notna() & (mine["delivered_days"] < 7) & (mine["chan"] >= 0) &
                  ~mine["action_id"].isin(protective)]
    np.add.at(state.sent_7d, (recent["cust"].to_numpy(), recent["chan"].to_numpy()), 1)
    got = mine[mine["delivered_days"].notna()]
    history = state.history
    cust_got = got["cust"].to_numpy()
    np.add.at(history["contacts_delivered"], cust_got, 1.0)
    engaged = np.zeros(n)
    np.add.at(engaged, cust_got, got["engaged"].to_numpy(float))
    np.add.at(history["n_accepted"], cust_got, got["accepted"].to_numpy(float))
    np.add.at(history["contacts_7d"], recent["cust"].to_numpy(), 1.0)
    last = np.full(n, np.inf)
    np.minimum.at(last, cust_got, got["delivered_days"].to_numpy(float))
    history["days_since_contact"] = np.where(np.isfinite(last), last, np.nan)
    history["engaged_share"] = np.where(history["contacts_delivered"] > 0,
                                        engaged / np.maximum(history["contacts_delivered"], 1.0), np.nan)
    sent = mine[mine["delivered_days"].notna() & (mine["act"] >= 0)]
    np.minimum.at(state.days_since_delivery, (sent["cust"].to_numpy(), sent["act"].to_numpy()),
                  sent["delivered_days"].to_numpy(float))
    mine_events = r[(r["cust"] >= 0)]
    for event, target in (("declined", state.days_since_decline), ("complained", state.days_since_complaint)):
        rows = mine_events[(mine_events["event"] == event) & (mine_events["act"] >= 0)]
        if len(rows):
            np.minimum.at(target, (rows["cust"].to_numpy(), rows["act"].to_numpy()), rows["days_ago"].to_numpy(float))
    declined = mine_events[mine_events["event"] == "declined"].drop_duplicates("recommendation_id")
    np.add.at(history["n_declined"], declined["cust"].to_numpy(), 1.0)
    rows = mine_events[(mine_events["event"] == "unsubscribed") & (mine_events["chan"] >= 0)]
    state.unsubscribed[rows["cust"].to_numpy(), rows["chan"].to_numpy()] = True
    return state


def propensities(catalogue: list[Action], state: ContactState, pol: dict[str, Any]) -> np.ndarray:
    """(A, C) acceptance propensity: the catalogue prior updated per action and channel (Beta-Binomial)."""
    from models.bandit import beta_binomial_mean

    prior = np.array([x.prior_propensity for x in catalogue])[:, None] * np.ones((1, len(CHANNELS)))
    return beta_binomial_mean(prior, float(pol["propensity"]["prior_strength"]), state.successes, state.trials)


# ---------------------------------------------------------------------------------------------------------------
# Staffed channels: capacity and need
# ---------------------------------------------------------------------------------------------------------------

NEED_FLAGS = ("is_vulnerable", "income_drop", "in_arrears", "is_unarranged_overdraft", "message_distress")


def staffed_limits(pol: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The capacity rules of config/decisioning.yaml `capacity`: per staffed channel and for the advisor queue,
    `per_night` (customers) and/or `share` (of the night's customers); refused when malformed."""
    spec = pol.get("capacity") or {}
    limits = {**(spec.get("channels") or {}), "advisor_queue": spec.get("advisor_queue")}
    for name, rule in limits.items():
        if name != "advisor_queue" and name not in CHANNEL_CODE:
            raise SegoneError(f"config/decisioning.yaml: capacity for unknown channel {name!r}")
        if name in (spec.get("digital_channels") or []):
            raise SegoneError(f"config/decisioning.yaml: channel {name!r} cannot be both staffed and digital")
        if not isinstance(rule, dict) or not ({"per_night", "share"} & set(rule)):
            raise SegoneError(f"config/decisioning.yaml: capacity of {name} needs per_night and/or share")
        if float(rule.get("per_night", 0)) < 0 or not 0 <= float(rule.get("share", 0)) <= 1:
            raise SegoneError(f"config/decisioning.yaml: capacity of {name}: per_night >= 0, share in [0, 1]")
    unknown = set(spec.get("need_weights") or {}) - set(NEED_FLAGS)
    if unknown:
        raise SegoneError(f"config/decisioning.yaml: unknown need_weights {sorted(unknown)} (known: {NEED_FLAGS})")
    return limits


def check_staffed_actions(catalogue: list[Action], pol: dict[str, Any]) -> None:
    """Every action offered on a staffed channel must also have a digital one: that is where it goes when tonight's
    capacity is full. Refused otherwise, naming the actions."""
    staffed = set(staffed_limits(pol)) - {"advisor_queue"}
    digital = set((pol.get("capacity") or {}).get("digital_channels") or [])
    bad = [x.id for x in catalogue if staffed & set(x.channels) and not digital & set(x.channels)]
    if bad:
        raise SegoneError(f"config/actions.yaml: {', '.join(bad)} use a staffed channel ({', '.join(sorted(staffed))}) "
                          f"and no digital one ({', '.join(sorted(digital))}) to fall back on when it is full")


def nightly_capacity(rule: dict[str, float], n_customers: int) -> int:
    """Customers a staffed channel can take tonight: the smaller of `per_night` and `share` x the night's
    customers (rounded down), whichever are given."""
    limits = []
    if "per_night" in rule:
        limits.append(int(rule["per_night"]))
    if "share" in rule:
        limits.append(int(np.floor(float(rule["share"]) * n_customers + 1e-9)))
    return max(0, min(limits))


def split_capacity(total: int, sizes: dict[int, int]) -> dict[int, int]:
    """A night's capacity split across customer buckets in proportion to their number of customers, by largest
    remainder: whole numbers that add up to `total` exactly (ties to the lower bucket number). Every shard can work
    its part out alone, so the decide tasks run in parallel and the night still holds its capacity."""
    buckets = sorted(sizes)
    n = sum(sizes.values())
    if total <= 0 or n <= 0:
        return {b: 0 for b in buckets}
    quotas = {b: total * sizes[b] / n for b in buckets}
    out = {b: int(np.floor(quotas[b] + 1e-9)) for b in buckets}
    left = total - sum(out.values())
    for b in sorted(buckets, key=lambda b: (-(quotas[b] - out[b]), b))[:left]:
        out[b] += 1
    return out


def frame_capacity(pol: dict[str, Any], n_customers: int) -> dict[str, int]:
    """Capacities when one frame is the whole night (tests, benchmarks, a single shard)."""
    return {name: nightly_capacity(rule, n_customers) for name, rule in staffed_limits(pol).items()}


def shard_capacity(pol: dict[str, Any], sizes: dict[int, int], bucket: int) -> dict[str, int]:
    """This bucket's part of the night's capacity of every staffed channel and of the advisor queue."""
    n = sum(sizes.values())
    return {name: split_capacity(nightly_capacity(rule, n), sizes).get(int(bucket), 0)
            for name, rule in staffed_limits(pol).items()}


def need_score(ctx: pd.DataFrame, pol: dict[str, Any]) -> np.ndarray:
    """Who a person should reach first: p_shortfall_30 (0 when unknown) plus the configured weight of each
    condition that holds: a known vulnerability, an income drop (a stopped income or a flagged job loss), arrears,
    an unarranged overdraft (config/decisioning.yaml `capacity.need_weights`)."""
    weights = (pol.get("capacity") or {}).get("need_weights") or {}
    flags = {"is_vulnerable": ctx["is_vulnerable"].to_numpy(bool),
             "income_drop": ctx["is_income_stopped"].to_numpy(bool) | ctx["is_job_loss"].to_numpy(bool),
             "in_arrears": ctx["in_arrears"].to_numpy(bool),
             "is_unarranged_overdraft": ctx["is_unarranged_overdraft"].to_numpy(bool),
             "message_distress": ctx["is_message_distress"].to_numpy(bool) | ctx["is_message_difficulty"].to_numpy(bool)}
    score = ctx["p_shortfall_30"].astype("float64").fillna(0).to_numpy().copy()
    for name, weight in weights.items():
        score += float(weight) * flags[name]
    return score


# ---------------------------------------------------------------------------------------------------------------
# The funnel
# ---------------------------------------------------------------------------------------------------------------

class _Reasons:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, text: str) -> int:
        if text not in self.codes:
            self.codes[text] = len(self.texts)
            self.texts.append(text)
        return self.codes[text]


def customer_hashes(customer_ids: pd.Series, as_of: date, cohort: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: a 64-bit RNG seed from md5 of (customer_id, as_of) and a control-group draw in [0, 1) from md5
    of (customer_id, cohort): the same group every night while the cohort stays (config control_cohort); without a
    cohort the draw is per night (md5 of customer_id and as_of)."""
    group_key = cohort if cohort else as_of.isoformat()
    con = lake.connect(shared=True, threads=2)
    try:
        con.execute("set enable_progress_bar = false")
        con.register("ids", pd.DataFrame({"customer_id": customer_ids.astype(str).to_numpy()}))
        out = con.execute(f"""
            select ('0x' || md5(customer_id || '|seed|{as_of.isoformat()}')[1:16])::ubigint as seed,
                ('0x' || md5(customer_id || '|control|{group_key}')[1:8])::ubigint as control
            from ids""").fetchnumpy()
    finally:
        con.close()
    return np.asarray(out["seed"], dtype=np.uint64), np.asarray(out["control"], dtype=np.float64) / float(2 ** 32)


def _recommendation_ids(customer_ids: np.ndarray, action_ids: np.ndarray, as_of: date, version: str) -> np.ndarray:
    con = lake.connect(shared=True, threads=2)
    try:
        con.execute("set enable_progress_bar = false")
        con.register("recs", pd.DataFrame({"c": customer_ids, "a": action_ids}))
        return con.execute(f"select md5(c || '|' || a || '|{as_of.isoformat()}|{version}') as id from recs") \
            .fetchnumpy()["id"].astype(object)
    finally:
        con.close()


def _credit_block(ctx: pd.DataFrame, pol: dict[str, Any], book: _Reasons) -> np.ndarray:
    """Per customer, the reason code that blocks credit and lending (-1: none), in the order of principle 1."""
    suit = pol["suitability"]
    level = float(suit["max_p_shortfall_30_for_credit"])
    p30 = ctx["p_shortfall_30"].astype("float64").to_numpy()
    rules = [
        (np.isnan(p30), "credit not offered: there is no cash forecast to check affordability"),
        (p30 > level, f"credit not offered: a shortfall is predicted within 30 days (p_shortfall_30 > {level:g})"),
        *_arrears_rules(ctx),
        (ctx["is_unarranged_overdraft"].to_numpy(bool),
         "credit not offered: the account went past its arranged overdraft limit (unarranged overdraft)"),
        (ctx["is_gambling_harm"].to_numpy(bool), "credit not offered: spending shows signs of gambling harm"),
    ]
    if suit.get("block_known_vulnerability", True):
        rules.append((ctx["is_vulnerable"].to_numpy(bool), "credit not offered: a known vulnerability is recorded"))
    if suit.get("block_income_drop_ahead", True):
        rules.append((ctx["is_income_drop_ahead"].to_numpy(bool),
                      "credit not offered: the income forecast expects the customer's income to drop"))
    out = np.full(len(ctx), -1, dtype=np.int64)
    for mask, text in rules:
        out[(out < 0) & mask] = book.code(text)
    return out


def _arrears_rules(ctx: pd.DataFrame) -> list[tuple[np.ndarray, str]]:
    """The arrears block of credit, one rule per wording of the evidence (what is true of each customer)."""
    reasons = ctx["arrears_reason"].to_numpy(dtype=object)
    in_arrears = ctx["in_arrears"].to_numpy(bool)
    return [(in_arrears & (reasons == text), f"credit not offered: an account is in arrears ({text})")
            for text in sorted({r for r, hit in zip(reasons, in_arrears) if hit})]


def decide_frame(context: pd.DataFrame, as_of: date, responses: pd.DataFrame | None = None,
                 catalogue: list[Action] | None = None, pol: dict[str, Any] | None = None,
                 capacity: dict[str, int] | None = None, scorer: Any = None) -> Decisions:
    """The whole funnel over a context frame: published actions, the decision log, the advisor queue and the
    dashboard layout. Deterministic: the same inputs give the same frames, row for row.

    `capacity`: customers each staffed channel (phone, branch) and the advisor queue may take from this frame (a
    shard's part of the night: `shard_capacity`); None: the frame is the whole night (`frame_capacity`).
    `scorer`: a learned policy (pipelines.policy.Scorer) whose expected value per candidate replaces the catalogue's
    propensity x context x value in the arbitration; its version is added to policy_version."""
    started = time.perf_counter()
    pol = pol or policy()
    catalogue = catalogue or catalogue_module.load_catalogue()
    ctx = complete_context(context, pol)
    check_staffed_actions(catalogue, pol)
    n, n_actions, n_channels = len(ctx), len(catalogue), len(CHANNELS)
    version = str(pol["policy_version"]) + (f"+{scorer.version}" if scorer is not None else "")
    book = _Reasons()
    stage = np.zeros((n, n_actions), dtype=np.int8)
    reason = np.full((n, n_actions), -1, dtype=np.int64)
    usable = np.zeros((n, n_actions, n_channels), dtype=bool)   # consented, not unsubscribed, room this week
    preference = np.full((n_actions, n_channels), np.inf)       # the action's order of channels
    state = contact_state(responses, ctx["customer_id"], catalogue, as_of, pol)
    # the customer's own answers: features of the learned policy (and of gold decision_context)
    ctx = pd.concat([ctx.drop(columns=[c for c in RESPONSE_HISTORY if c in ctx.columns]),
                     pd.DataFrame(state.history, index=ctx.index)], axis=1)
    propensity = propensities(catalogue, state, pol)
    seeds, control_draw = customer_hashes(ctx["customer_id"], as_of, pol.get("control_cohort"))
    is_control = control_draw < float(pol["control_share"])
    credit_block = _credit_block(ctx, pol, book)
    credit_ctx = corroborated_context(ctx)
    needs = corroboration_words()
    msg_rules = pol.get("message_rules", {})
    in_distress = ctx["is_message_distress"].to_numpy(bool) | ctx["is_message_difficulty"].to_numpy(bool)
    complained = ctx["is_message_complaint"].to_numpy(bool)
    cooldown_classes = set(msg_rules.get("complaint_cooldown_classes", ()))
    cooldown_except = set(msg_rules.get("complaint_cooldown_except", ()))
    cp = pol["contact_policy"]
    caps = np.array([int(cp["weekly_caps"].get(ch, 10 ** 6)) for ch in CHANNELS])
    room = caps[None, :] - state.sent_7d                                   # (n, C) left this week
    consent = {purpose: ctx[f"is_{purpose}_allowed"].to_numpy(bool) for purpose in CONSENT_PURPOSES}
    # the channel context from the app: a customer who dismisses most push notifications gets fewer (push after the
    # action's other open channels, a lower weekly cap); the app's signals count only with personalization consent
    fatigue = (pol.get("channel_context") or {}).get("push_fatigue") or {}
    fatigued = _flag(ctx, "is_push_fatigued") & consent["personalization"] if fatigue else np.zeros(n, dtype=bool)
    push = CHANNEL_CODE["push"]
    if fatigued.any() and fatigue.get("weekly_cap") is not None:
        room[fatigued, push] = np.minimum(room[fatigued, push],
                                          int(fatigue["weekly_cap"]) - state.sent_7d[fatigued, push])
    push_later = np.zeros((n, n_actions), dtype=bool)                      # push put after the other channels

    def drop(j: int, mask: np.ndarray, stage_name: str, codes: np.ndarray | int) -> None:
        hit = mask & (stage[:, j] == 0)
        stage[hit, j] = STAGE_CODE[stage_name]
        reason[hit, j] = codes[hit] if isinstance(codes, np.ndarray) else codes

    for j, action in enumerate(catalogue):
        for stage_name, rules in (("eligibility", action.eligibility), ("applicability", action.applicability)):
            if rules:
                failed, texts = first_failure(ctx, rules)
                codes = np.array([book.code(t) for t in texts] + [-1])[failed]
                drop(j, failed >= 0, stage_name, codes)
        events = _life_event_fields(action.applicability) if action.is_credit else []
        if events:
            # credit triggered by a life event needs the event's corroborating evidence, not the inference alone
            failed, _ = first_failure(credit_ctx, action.applicability)
            codes = np.full(n, -1, dtype=np.int64)
            for event in reversed(events):
                thin = ctx[f"is_{event}"].to_numpy(bool) & ~ctx[f"is_{event}_corroborated"].to_numpy(bool)
                codes[thin] = book.code(
                    f"{event.replace('_', ' ')} is inferred but not corroborated: a credit offer needs "
                    f"{needs.get(event, 'corroborating evidence')}")
            drop(j, (failed >= 0) & (codes >= 0), "applicability", codes)
        if action.is_credit:
            drop(j, credit_block >= 0, "suitability", credit_block)
        if action.action_class == "commercial" and msg_rules.get("distress_suppresses_commercial", True):
            drop(j, in_distress, "suitability",
                 book.code("not offered: the customer's recent messages show distress or difficulty paying"))
        for purpose in action.data_purposes:
            words = {"personalization": "using your banking data for recommendations",
                     "life_events": "inferring life events",
                     "open_banking": "using data from your accounts at other banks"}.get(purpose,
                                                                                          purpose.replace("_", " "))
            drop(j, ~consent[purpose], "consent", book.code(f"no consent for {words}"))
        ok_consent = np.zeros((n, len(action.channels)), dtype=bool)
        ok_contact = np.zeros_like(ok_consent)
        capped = action.action_class in cp["capped_classes"]
        for k, (ch, purpose) in enumerate(action.channels.items()):
            ok_consent[:, k] = consent[purpose]
            ok = ok_consent[:, k].copy()
            if action.action_class == "commercial":
                ok &= ~state.unsubscribed[:, CHANNEL_CODE[ch]]
            if capped:
                ok &= room[:, CHANNEL_CODE[ch]] > 0
            ok_contact[:, k] = ok
        if fatigued.any() and "push" in action.channels:
            k = list(action.channels).index("push")
            if fatigue.get("rank_last", True):
                later = fatigued & ok_contact[:, k] & np.delete(ok_contact, k, axis=1).any(axis=1)
                ok_contact[later, k] = False
                push_later[:, j] = later
        purposes = sorted(set(action.channels.values()))
        drop(j, ~ok_consent.any(axis=1), "consent",
             book.code(f"no consent for {', '.join(p.replace('_', ' ') for p in purposes)} on any of its channels "
                       f"({', '.join(action.channels)})"))
        drop(j, state.days_since_complaint[:, j] < float(cp["complaint_stop_days"]), "contact_policy",
             book.code(f"the customer complained about this action in the last {cp['complaint_stop_days']} days"))
        if action.action_class in cooldown_classes and action.id not in cooldown_except:
            drop(j, complained, "contact_policy",
                 book.code(f"the customer complained in a recent message: no {action.action_class} contact for "
                           f"{msg_rules.get('complaint_window_days', 30)} days (cool-down)"))
        drop(j, state.days_since_decline[:, j] < action.cool_down_days, "contact_policy",
             book.code(f"declined in the last {action.cool_down_days} days (cool-down)"))
        drop(j, state.n_ignored[:, j] >= action.max_ignores, "contact_policy",
             book.code(f"ignored {action.max_ignores} times or more: stopped"))
        if capped and fatigued.any() and "push" in action.channels:
            drop(j, fatigued & ok_consent[:, list(action.channels).index("push")] & ~ok_contact.any(axis=1),
                 "contact_policy",
                 book.code(f"weekly contact cap reached or unsubscribed on every consented channel "
                           f"({', '.join(action.channels)}); push is capped at {fatigue.get('weekly_cap')} a week "
                           f"for this customer, who dismisses most push notifications"))
        if not cp.get("repeat_while_valid", False):
            # delivered on day X, made the night before: valid until X - 1 + valid_days, so still valid tomorrow
            # while X is at most valid_days - 2 days ago (the customer has it: a new one would only repeat it)
            drop(j, state.days_since_delivery[:, j] <= action.valid_days - 2, "contact_policy",
                 book.code(f"already delivered and still valid (for {action.valid_days} days): not sent again "
                           f"before it expires"))
        drop(j, ~ok_contact.any(axis=1), "contact_policy",
             book.code(f"weekly contact cap reached or unsubscribed on every consented channel "
                       f"({', '.join(action.channels)})"))
        for k, ch in enumerate(action.channels):
            usable[:, j, CHANNEL_CODE[ch]] = ok_contact[:, k]
            preference[j, CHANNEL_CODE[ch]] = k
        if action.action_class != "protective":
            drop(j, is_control, "control_group",
                 book.code("the customer is in the control group this night (protective actions only)"))

    # ----------------------------------------------------------------------------------------- arbitration
    from models.bandit import epsilon_greedy

    cls = np.array([x.action_class for x in catalogue])
    tiers = np.array([int(pol["class_tiers"][c]) for c in cls])
    weights = np.column_stack([context_weight(ctx, x.context) for x in catalogue]) if n_actions else np.zeros((n, 0))
    values = np.array([x.value for x in catalogue])
    levers = np.array([x.lever for x in catalogue])
    top_k = int(pol["top_k"])
    arm = no_contact_arm(pol)

    def arbitrate(usable_now: np.ndarray) -> dict[str, Any]:
        """Channels and the top k of every candidate still in (stage 0) given the channels it may use; returns the
        picks and the drops it decides without changing `stage`."""
        ci, aj = np.nonzero(stage == 0)
        learned = scorer.score(ctx, ci, aj, catalogue) if scorer is not None else None
        capped = np.isin(cls[aj], cp["capped_classes"])
        avail = usable_now[ci, aj]                                              # (m, C)

        # channel choice under tonight's caps: each candidate takes its preferred usable channel; within a customer,
        # in ranking order, a capped candidate beyond the room left on its channel moves to its next usable channel,
        # and is dropped when none is left. A kept candidate never moves, so this settles in at most C rounds.
        def route(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Channel, has-a-channel and over-the-cap for the candidates `rows` (whole customers)."""
            c_i, a_j = ci[rows], aj[rows]
            score = np.where(avail[rows], preference[a_j], np.inf)
            chosen_channel = np.argmin(score, axis=1)
            usable_any = np.isfinite(score[np.arange(len(rows)), chosen_channel])
            prio = (learned["priority"][rows] if learned is not None else
                    propensity[a_j, chosen_channel] * weights[c_i, a_j] * values[a_j] * levers[a_j])
            order_rows = np.lexsort((a_j, -prio, tiers[a_j], c_i))
            on_cap = capped[rows] & usable_any
            key = np.where(on_cap, c_i * n_channels + chosen_channel, -1 - np.arange(len(rows)))
            used = np.empty(len(rows), dtype=np.int64)
            used[order_rows] = _cumcount(key[order_rows])
            return chosen_channel, usable_any, on_cap & (used >= room[c_i, chosen_channel])

        rows = np.arange(len(ci))
        ch, has, over = route(rows)
        for _ in range(n_channels):
            if not over.any():
                break
            avail[np.nonzero(over)[0], ch[over]] = False
            rows = np.nonzero(np.isin(ci, np.unique(ci[over])))[0]       # only the customers concerned
            ch[rows], has[rows], over[rows] = route(rows)
        prop = propensity[aj, ch]
        priority = prop * weights[ci, aj] * values[aj] * levers[aj]
        value_out = values[aj]
        catalogue_priority = priority
        if learned is not None:
            prop, priority, value_out = learned["p_accept"], learned["priority"], learned["value"]
        order = np.lexsort((aj, -priority, tiers[aj], ci))
        out = ~has | over
        capped_out = (ci[out], aj[out])
        keep = ~out
        order = order[keep[order]]
        ci, aj, ch, prop, priority = ci[order], aj[order], ch[order], prop[order], priority[order]
        value_out, catalogue_priority = value_out[order], catalogue_priority[order]
        protective = tiers[aj] == 0
        rank_p = _cumcount(np.where(protective, ci, -1 - np.arange(len(ci))))
        chosen_p = protective & (rank_p < top_k)
        n_protective = np.bincount(ci[chosen_p], minlength=n)
        # the bandit's pool: the best `pool_size` non-protective candidates per customer
        pool_size = max(int(pol["exploration"]["pool_size"]), top_k)
        others = ~protective
        rank_o = _cumcount(np.where(others, ci, -1 - np.arange(len(ci))))
        in_pool = others & (rank_o < pool_size)
        pool_index = np.full((n, pool_size), -1, dtype=np.int64)
        pool_index[ci[in_pool], rank_o[in_pool]] = np.nonzero(in_pool)[0]
        slots = np.maximum(top_k - n_protective, 0)
        pool_index = _with_no_contact(pool_index, slots, priority, learned is not None, arm is not None)
        picks = epsilon_greedy(pool_index != -1, seeds, slots, float(pol["exploration"]["epsilon"]),
                               stop=pool_index == NO_CONTACT)
        chosen = chosen_p.copy()
        logging_probability = np.where(chosen_p, 1.0, np.nan)
        exploring = np.zeros(len(ci), dtype=bool)
        slot_rank = np.where(chosen_p, rank_p + 1, 0)
        rows_n = np.arange(n)
        held = np.zeros(n, dtype=np.int8)          # the no-contact arm's pick: 1 greedy, 2 by exploration
        for s in range(picks.column.shape[1]):
            picked = picks.column[:, s] >= 0
            entry = np.full(n, -1, dtype=np.int64)
            entry[picked] = pool_index[rows_n[picked], picks.column[picked, s]]
            arm_now = entry == NO_CONTACT
            held[arm_now] = np.where(picks.is_exploration[arm_now, s], 2, 1)
            picked &= entry >= 0
            cand = entry[picked]
            chosen[cand] = True
            logging_probability[cand] = picks.logging_probability[picked, s]
            exploring[cand] = picks.is_exploration[picked, s]
            slot_rank[cand] = n_protective[picked] + s + 1
        not_chosen = ~chosen
        beyond = not_chosen & ~(others & in_pool)
        pooled = not_chosen & others & in_pool
        withheld = pooled & (held[ci] > 0)
        pooled &= ~withheld
        return {"withheld": (ci[withheld], aj[withheld], held[ci[withheld]]), "held": held, "ci": ci, "aj": aj, "ch": ch, "prop": prop, "priority": priority, "chosen": chosen,
                "logging_probability": logging_probability, "exploring": exploring, "slot_rank": slot_rank,
                "capped_out": capped_out, "beyond": (ci[beyond], aj[beyond]), "pooled": (ci[pooled], aj[pooled]),
                "value": value_out if learned is not None else None, "catalogue_priority": catalogue_priority,
                "pool_index": pool_index, "picks": picks, "n_protective": n_protective}

    picked = arbitrate(usable)
    # staffed channels (phone, branch): tonight's capacity goes to the customers in greatest need; the others get
    # the same action on a digital channel (docs/decisioning.md, "Staffed channels")
    capacity = capacity if capacity is not None else frame_capacity(pol, n)
    need = need_score(ctx, pol)
    need_order = np.lexsort((seeds, -need))                                # neediest first, ties by a stable hash
    need_rank = np.empty(n, dtype=np.int64)
    need_rank[need_order] = np.arange(n)
    not_digital = np.flatnonzero(~np.isin(np.array(CHANNELS), list(pol["capacity"]["digital_channels"])))
    staffed = list(pol["capacity"]["channels"])
    restricted = usable
    moved: list[tuple[str, np.ndarray, np.ndarray]] = []                   # channel, customers, actions moved off it
    capacity_metrics: dict[str, dict[str, int]] = {}
    for _ in range(len(staffed) + 1):                                      # each round only takes channels away
        changed = False
        for name in staffed:
            code = CHANNEL_CODE[name]
            on = picked["chosen"] & (picked["ch"] == code)
            demand = np.unique(picked["ci"][on])
            limit = int(capacity.get(name, 0))
            capacity_metrics.setdefault(name, {"capacity": limit, "demand": int(len(demand))})
            over = demand[np.argsort(need_rank[demand], kind="stable")][limit:]
            if not len(over):
                continue
            changed = True
            restricted = restricted.copy() if restricted is usable else restricted
            restricted[over, :, code] = False                              # no call for them tonight
            hit = on & np.isin(picked["ci"], over)
            cust, act = picked["ci"][hit], picked["aj"][hit]
            restricted[cust[:, None], act[:, None], not_digital[None, :]] = False   # the same action, digitally
            moved.append((name, cust, act))
        if not changed:
            break
        lost = (stage == 0) & usable.any(axis=2) & ~restricted.any(axis=2)
        stage[lost] = STAGE_CODE["capacity"]
        reason[lost] = book.code("tonight's capacity of its staffed channel went to customers in greater need, and "
                                 "no digital channel of this action is consented")
        picked = arbitrate(restricted)
    ci, aj, ch, chosen = picked["ci"], picked["aj"], picked["ch"], picked["chosen"]
    stage[picked["capped_out"]] = STAGE_CODE["contact_policy"]
    reason[picked["capped_out"]] = book.code("weekly contact caps reached on every channel it could use tonight")
    stage[picked["beyond"]] = STAGE_CODE["arbitration"]
    reason[picked["beyond"]] = book.code(f"ranked below the top {top_k} for this customer")
    stage[picked["pooled"]] = STAGE_CODE["arbitration"]
    reason[picked["pooled"]] = book.code(
        f"not chosen: other actions ranked higher or were picked by exploration (top {top_k})")
    w_ci, w_aj, w_how = picked["withheld"]
    stage[w_ci, w_aj] = STAGE_CODE["arbitration"]
    reason[w_ci, w_aj] = np.where(
        w_how == 1,
        book.code("not sent: the learned policy expects no gain from contacting this customer further tonight "
                  "(no contact ranked above it)"),
        book.code("not sent: exploration chose no further contact for this customer tonight"))
    # the capacity drops, logged: an action moved off a staffed channel is published on a digital one (a row at
    # stage `capacity` says so) or, when it did not make it there, its drop is logged at `capacity` with the reason
    published_channel = np.full((n, n_actions), -1, dtype=np.int64)
    published_channel[ci[chosen], aj[chosen]] = ch[chosen]
    extra = []
    for name, cust, act in moved:
        words = f"tonight's {name} capacity went to customers in greater need"
        sent = published_channel[cust, act]
        rerouted = sent >= 0
        for c, a, k in zip(cust[rerouted], act[rerouted], sent[rerouted]):
            extra.append((c, a, book.code(f"{words}: sent by {CHANNELS[k]} instead"), STAGE_CODE["capacity"]))
        for c, a in zip(cust[~rerouted], act[~rerouted]):
            if stage[c, a] != STAGE_CODE["capacity"]:
                before = book.texts[reason[c, a]] if reason[c, a] >= 0 else "not published"
                stage[c, a] = STAGE_CODE["capacity"]
                reason[c, a] = book.code(f"{words}; on a digital channel: {before}")
    # push fatigue, logged: a published action that would have gone by push (push comes before its channel in the
    # action's order and was open) went by its channel instead; with a capacity move of the same action, one row
    extra = _push_moves(ctx, catalogue, push_later, published_channel, preference, book, extra)
    for name in staffed:
        on = chosen & (ch == CHANNEL_CODE[name])
        served = np.unique(ci[on])
        mine = [(c, a) for channel, cs, acts in moved if channel == name for c, a in zip(cs, acts)]
        moved_customers = np.unique(np.array([c for c, _ in mine], dtype=np.int64))
        digitally = np.unique(np.array([c for c, a in mine if published_channel[c, a] >= 0], dtype=np.int64))
        capacity_metrics[name].update({"served": int(len(served)), "over_capacity": int(len(moved_customers)),
                                       "sent_digitally": int(len(digitally)),
                                       "not_sent": int(len(np.setdiff1d(moved_customers, digitally)))})

    # ----------------------------------------------------------------------------------------- outputs
    sel = np.nonzero(chosen)[0]
    sel = sel[np.lexsort((picked["slot_rank"][sel], ci[sel]))]
    nba = _published(ctx, catalogue, sel, ci, aj, ch, picked["prop"], picked["priority"],
                     picked["logging_probability"], picked["exploring"], picked["slot_rank"], is_control, as_of,
                     version, credit_ctx, msg_rules.get("plain_register"), picked["value"])
    bandit = _bandit_log(ctx, catalogue, nba, picked["pool_index"], picked["picks"], aj, picked["catalogue_priority"],
                         picked["n_protective"], float(pol["exploration"]["epsilon"]), version, arm)
    from pipelines.policy import decision_context_frame
    decided = set(nba["customer_id"]) | set(bandit["customer_id"])
    context_out = decision_context_frame(ctx, decided)
    decision_log = _decision_log(ctx, catalogue, stage, reason, book, version, extra)
    advisor, queue_demand = advisor_queue(ctx, pol, int(capacity.get("advisor_queue", n)), need_rank)
    capacity_metrics["advisor_queue"] = {"capacity": int(capacity.get("advisor_queue", n)), "demand": queue_demand,
                                         "served": int(len(advisor)), "over_capacity": queue_demand - len(advisor)}
    dashboard = dashboard_layout(ctx, pol, as_of)
    funnel = {name: int((stage == code).sum()) for name, code in STAGE_CODE.items()}
    metrics = {"n_customers": n, "n_actions": n_actions, "n_candidates": n * n_actions,
               "dropped_by_stage": funnel, "n_published": int(len(nba)),
               "n_customers_with_actions": int(nba["customer_id"].nunique()) if len(nba) else 0,
               "n_control": int(is_control.sum()), "n_exploration": int(nba["is_exploration"].sum()) if len(nba) else 0,
               "n_no_contact": int((picked["held"] > 0).sum()),
               "n_no_contact_greedy": int((picked["held"] == 1).sum()),
               "n_advisor_queue": int(len(advisor)), "policy_version": version,
               "action_mix": nba["action_id"].value_counts().sort_index().to_dict() if len(nba) else {},
               "channel_mix": nba["channel"].value_counts().sort_index().to_dict() if len(nba) else {},
               "capacity": capacity_metrics,
               "capacity_rerouted_rows": sum(1 for row in extra if row[3] == STAGE_CODE["capacity"]),
               "n_push_fatigued": int(fatigued.sum()),
               "push_fatigue_rerouted_rows": sum(1 for row in extra if row[3] == STAGE_CODE["contact_policy"]),
               "seconds": round(time.perf_counter() - started, 2)}
    return Decisions(nba, decision_log, advisor, dashboard, decision_flags(ctx, is_control, pol), metrics, bandit,
                     context_out)


NO_CONTACT = -2                 # the no-contact arm's entry in a bandit pool (-1: no candidate)
NO_CONTACT_CATALOGUE_SCORE = -1.0   # its catalogue priority in gold bandit_log: below every action's (all >= 0)


def no_contact_arm(pol: dict[str, Any]) -> str | None:
    """The no-contact arm's action_id when the arm is enabled (config/decisioning.yaml exploration.no_contact)."""
    cfg = (pol.get("exploration") or {}).get("no_contact") or {}
    return str(cfg.get("action_id", "no_contact")) if cfg.get("enabled", False) else None


def no_contact_priority() -> float:
    """A learned policy's priority of the no-contact arm: an action of expected value 0 pounds and lever 1
    (softplus(0), the priority `Scorer.score` gives such an action)."""
    from models.policy_model import softplus

    return round(float(softplus(np.array([0.0]))[0]), 9)


def _with_no_contact(pool_index: np.ndarray, slots: np.ndarray, priority: np.ndarray, learned: bool,
                     enabled: bool) -> np.ndarray:
    """The bandit's pool with the no-contact arm in it (one more column): for every customer with a slot and a
    candidate, after the candidates whose priority is at least the arm's (a learned policy; ties contact), or after
    all of them (the catalogue's priorities, which never prefer it)."""
    n, size = pool_index.shape
    wide = np.full((n, size + 1), -1, dtype=np.int64)
    wide[:, :size] = pool_index
    if not enabled or not n:
        return wide
    real = pool_index >= 0
    has_arm = real.any(axis=1) & (np.asarray(slots) > 0)
    if learned:
        prio = np.where(real, priority[np.maximum(pool_index, 0)], -np.inf)
        position = (prio >= no_contact_priority()).sum(axis=1)
    else:
        position = real.sum(axis=1)
    cols = np.arange(size + 1)[None, :]
    source = np.take_along_axis(wide, np.clip(cols - (cols > position[:, None]), 0, size), axis=1)
    shifted = np.where(cols == position[:, None], NO_CONTACT, source)
    return np.where(has_arm[:, None], shifted, wide)


def _bandit_log(ctx, catalogue, nba: pd.DataFrame, pool_index: np.ndarray, picks, aj: np.ndarray,
                catalogue_priority: np.ndarray, n_protective: np.ndarray, epsilon: float,
                version: str, arm: str | None = None) -> pd.DataFrame:
    """One row per non-protective slot the bandit filled: the candidates that remained at that slot in the
    arbitration's order (the greedy choice first), the pick and its logged probability. With epsilon this is the
    policy's whole distribution at the slot ((1 - epsilon) on the first candidate, epsilon / m on each), which the
    offline evaluation and the log checks need; the catalogue's priority of each candidate lets the catalogue-prior
    policy be evaluated on logs another policy made."""
    action_ids = np.array([x.id for x in catalogue], dtype=object)
    ids = ctx["customer_id"].to_numpy(dtype=object)

    def name(entry: int) -> str:
        return str(arm) if entry == NO_CONTACT else str(action_ids[aj[entry]])

    def score(entry: int) -> float:
        return NO_CONTACT_CATALOGUE_SCORE if entry == NO_CONTACT else round(float(catalogue_priority[entry]), 9)

    remaining = pool_index != -1
    rows = []
    for s in range(picks.column.shape[1]):
        has = np.flatnonzero(picks.column[:, s] >= 0)
        for c in has:
            members = pool_index[c, remaining[c]]
            pick = pool_index[c, picks.column[c, s]]
            rows.append((ids[c], s + 1, None if pick == NO_CONTACT else int(n_protective[c]) + s + 1, name(pick),
                         float(picks.logging_probability[c, s]), bool(picks.is_exploration[c, s]),
                         [name(e) for e in members], [score(e) for e in members]))
        remaining[has, picks.column[has, s]] = False
    frame = pd.DataFrame(rows, columns=["customer_id", "slot", "rank", "action_id", "logging_probability",
                                        "is_exploration", "candidates", "catalogue_scores"])
    frame["rank"] = frame["rank"].astype("Int64")      # null for the no-contact arm: nothing was published
    frame["n_candidates"] = frame["candidates"].map(len).astype("int64") if len(frame) else pd.Series(dtype="int64")
    frame["epsilon"] = epsilon
    frame["policy_version"] = version
    if not len(frame):
        frame["recommendation_id"] = pd.Series(dtype=object)
        return frame[_gold_columns("bandit_log")]
    keys = nba[["customer_id", "action_id", "recommendation_id"]]
    frame = frame.merge(keys, on=["customer_id", "action_id"], how="left")
    return frame[_gold_columns("bandit_log")].sort_values(["customer_id", "slot"]).reset_index(drop=True)


def _gold_columns(table: str) -> list[str]:
    """A gold table's data columns in config/tables.yaml's order (the one source of its schema)."""
    from pipelines.schemas import table_schema

    return table_schema("gold", table).data_column_names


def _push_moves(ctx: pd.DataFrame, catalogue: list[Action], push_later: np.ndarray, published_channel: np.ndarray,
                preference: np.ndarray, book: _Reasons, extra: list[tuple[int, int, int, int]]
                ) -> list[tuple[int, int, int, int]]:
    """The decision-log rows of published actions moved off push by push fatigue (stage contact_policy): the
    customer's reason (gold app_signals push_fatigue_reason) and the channel used instead. An action also moved
    by capacity keeps one row (stage capacity) with both reasons."""
    push = CHANNEL_CODE["push"]
    cust, act = np.nonzero(push_later & (published_channel >= 0))
    if not len(cust):
        return extra
    sent = published_channel[cust, act]
    moved = preference[act, push] < preference[act, sent]
    cust, act, sent = cust[moved], act[moved], sent[moved]
    words = _texts(ctx, "push_fatigue_reason")
    rows = {(int(c), int(a)): row for row in extra for c, a in [row[:2]]}
    for c, a, k in zip(cust, act, sent):
        said = words[c] or "dismisses most push notifications"
        text = f"the customer {said}: sent by {CHANNELS[k]} instead of push"
        if (int(c), int(a)) in rows:
            _, _, code, stage_code = rows[(int(c), int(a))]
            rows[(int(c), int(a))] = (c, a, book.code(f"{book.texts[code]}; {text}"), stage_code)
        else:
            rows[(int(c), int(a))] = (c, a, book.code(text), STAGE_CODE["contact_policy"])
    return list(rows.values())


def _cumcount(keys: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements (in array order) share its key."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argsort(keys, kind="stable")
    sorted_keys = keys[idx]
    start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    positions = np.arange(len(keys))
    first = np.maximum.accumulate(np.where(start, positions, 0))
    out = np.empty(len(keys), dtype=np.int64)
    out[idx] = positions - first
    return out


def _published(ctx, catalogue, sel, ci, aj, ch, prop, priority, logging_probability, exploring, slot_rank,
               is_control, as_of: date, version: str, credit_ctx: pd.DataFrame | None = None,
               plain: dict[str, Any] | None = None, value_out: np.ndarray | None = None) -> pd.DataFrame:
    cust = ci[sel]
    act = aj[sel]
    action_ids = np.array([x.id for x in catalogue], dtype=object)
    customer_ids = ctx["customer_id"].to_numpy(dtype=object)[cust]
    frame = pd.DataFrame({
        "recommendation_id": _recommendation_ids(customer_ids, action_ids[act], as_of, version)
        if len(sel) else np.array([], dtype=object),
        "customer_id": customer_ids,
        "rank": slot_rank[sel].astype("int32"),
        "action_id": action_ids[act],
        "action_class": np.array([x.action_class for x in catalogue], dtype=object)[act],
        "channel": np.array(CHANNELS, dtype=object)[ch[sel]],
        "priority": np.round(priority[sel], 6),
        "propensity": np.round(prop[sel], 6),
        "value": (np.array([x.value for x in catalogue])[act] if value_out is None
                  else np.round(np.maximum(value_out[sel], 0.0), 6)),
        "logging_probability": np.round(logging_probability[sel], 6),
        "is_exploration": exploring[sel],
        "is_control": is_control[cust],
        "reasons": "",
        "explanation": "",
        "policy_version": version,
        "valid_until": pd.to_datetime([as_of + timedelta(days=x.valid_days) for x in catalogue])
        .to_numpy()[act] if len(sel) else np.array([], dtype="datetime64[ns]"),
    })
    frame["valid_until"] = pd.to_datetime(frame["valid_until"]).dt.date
    reasons = np.empty(len(frame), dtype=object)
    explanations = np.empty(len(frame), dtype=object)
    for j, action in enumerate(catalogue):
        rows = np.nonzero(act == j)[0]
        if not len(rows):
            continue
        source = credit_ctx if action.is_credit and credit_ctx is not None else ctx
        sub = source[_fields_of(action)].iloc[cust[rows]].reset_index(drop=True)
        text = _reason_text(action, sub)
        reasons[rows] = text.to_numpy()
        expl = catalogue_module.render_template(action.explanation, sub)
        explore_note = np.where(frame["is_exploration"].to_numpy()[rows],
                                " It is also one of a few suggestions we rotate to learn what customers find useful.",
                                "")
        tier_note = " Help with your money always comes before offers." if action.action_class == "protective" else ""
        explanations[rows] = (f"{action.title}: " + expl + " Suggested because " + text + "." + tier_note
                              + explore_note).to_numpy()
        if plain:  # customers in distress: the plainer register of config/decisioning.yaml message_rules
            distressed = (ctx["is_message_distress"].to_numpy(bool) | ctx["is_message_difficulty"].to_numpy(bool))[
                cust[rows]]
            if distressed.any():
                simple = catalogue_module.render_template(action.raw.get("plain_explanation") or action.explanation,
                                                          sub)
                lines = [plain["template"].format(title=action.title, explanation=e, because=b)
                         for e, b in zip(simple.to_numpy(), text.to_numpy())]
                explanations[rows[distressed]] = np.array(lines, dtype=object)[distressed]
    frame["reasons"] = reasons
    frame["explanation"] = explanations
    return frame


def _fields_of(action: Action) -> list[str]:
    """The context fields an action's reasons and explanation read."""
    names: set[str] = set()

    def walk(rule: dict) -> None:
        for group in ("any", "all"):
            for sub in rule.get(group, ()):
                walk(sub)
        names.update(rule[k] for k in ("field", "value_field") if k in rule)

    for text in [action.explanation, action.raw.get("plain_explanation") or "", *(r["text"] for r in action.reasons)]:
        names.update(name for name, _ in catalogue_module._PLACEHOLDER.findall(text))
    for spec in action.reasons:
        for rule in spec.get("when") or ():
            walk(rule)
    return sorted(names) or ["customer_id"]


def _reason_text(action: Action, sub: pd.DataFrame) -> pd.Series:
    out = pd.Series("", index=sub.index, dtype=object)
    fallback = None
    for spec in action.reasons:
        if not spec.get("when"):
            fallback = fallback or spec["text"]
            continue
        # a reason is said only when its rule holds and every fact it names is known
        mask = catalogue_module.template_known(spec["text"], sub)
        for rule in spec["when"]:
            mask &= evaluate_rule(sub, rule)
        if not mask.any():
            continue
        rendered = catalogue_module.render_template(spec["text"], sub)
        sep = np.where(mask & (out != ""), "; ", "")
        out = out + sep + rendered.where(mask, "")
    if fallback is not None:
        empty = (out == "").to_numpy(bool) & catalogue_module.template_known(fallback, sub)
        if empty.any():
            out = out.where(~empty, catalogue_module.render_template(fallback, sub))
    out = out.where(out != "", action.title.lower())
    return out


def _decision_log(ctx, catalogue, stage, reason, book: _Reasons, version: str,
                  extra: list[tuple[int, int, int, int]] | None = None) -> pd.DataFrame:
    """One row per dropped candidate (stage > 0), then one row per `extra` (customer, action, reason, stage): a
    published action moved off a channel, by tonight's capacity of a staffed channel (stage `capacity`) or by push
    fatigue (stage `contact_policy`)."""
    ci, aj = np.nonzero(stage > 0)
    codes = stage[ci, aj].astype(np.int64) - 1
    why = reason[ci, aj]
    if extra:
        more = np.array(extra, dtype=np.int64).reshape(-1, 4)
        ci, aj = np.r_[ci, more[:, 0]], np.r_[aj, more[:, 1]]
        codes = np.r_[codes, more[:, 3] - 1]
        why = np.r_[why, more[:, 2]]
        order = np.lexsort((aj, ci))
        ci, aj, codes, why = ci[order], aj[order], codes[order], why[order]
    customer = pd.Categorical.from_codes(ci, categories=pd.Index(ctx["customer_id"].astype(str)), validate=False) \
        if len(ctx) else pd.Categorical([])
    return pd.DataFrame({
        "customer_id": customer,
        "action_id": pd.Categorical.from_codes(aj, categories=[x.id for x in catalogue], validate=False),
        "action_class": pd.Categorical.from_codes(
            pd.Index(["protective", "service", "commercial"]).get_indexer([x.action_class for x in catalogue])[aj]
            if len(aj) else np.zeros(0, int), categories=["protective", "service", "commercial"], validate=False),
        "stage": pd.Categorical.from_codes(codes, categories=list(STAGES), validate=False),
        "reason": pd.Categorical.from_codes(why, categories=book.texts or ["-"], validate=False),
        "policy_version": pd.Categorical.from_codes(np.zeros(len(ci), dtype=np.int64), categories=[version],
                                                    validate=False),
    })


# ---------------------------------------------------------------------------------------------------------------
# Advisor queue and dashboard layout
# ---------------------------------------------------------------------------------------------------------------

def advisor_queue(ctx: pd.DataFrame, pol: dict[str, Any], capacity: int | None = None,
                  need_rank: np.ndarray | None = None) -> tuple[pd.DataFrame, int]:
    """Customers a person should call: a high shortfall risk with an income drop, a known vulnerability with a
    shortfall risk, or arrears with a likely shortfall. Priority: the need score (`need_score`); the queue holds at
    most `capacity` customers (None: no limit), the neediest first (ties by `need_rank`, else customer_id).
    Returns the queue and the number of customers who met a condition (the demand)."""
    rules = pol["advisor_queue"]
    p30 = ctx["p_shortfall_30"].astype("float64").fillna(0).to_numpy()
    income_drop = ctx["is_income_stopped"].to_numpy(bool) | ctx["is_job_loss"].to_numpy(bool)
    c1 = (p30 >= float(rules["high_p_shortfall_30"])) & income_drop
    c2 = ctx["is_vulnerable"].to_numpy(bool) & (p30 >= float(rules["vulnerable_p_shortfall_30"]))
    c3 = ctx["in_arrears"].to_numpy(bool) & (p30 >= float(rules["arrears_p_shortfall_30"]))
    difficulty = ctx["is_message_difficulty"].to_numpy(bool)
    c4 = (ctx["is_message_distress"].to_numpy(bool) | difficulty) if rules.get("messages", True) else \
        np.zeros(len(ctx), dtype=bool)
    rows = np.nonzero(c1 | c2 | c3 | c4)[0]
    demand = int(len(rows))
    need = need_score(ctx, pol)
    rank = need_rank if need_rank is not None else np.argsort(np.argsort(-need, kind="stable"), kind="stable")
    rows = rows[np.argsort(rank[rows], kind="stable")]
    if capacity is not None:
        rows = rows[:max(int(capacity), 0)]
    sub = ctx.iloc[rows].reset_index(drop=True)
    pct = (p30[rows] * 100).round().astype(int).astype(str)
    reason = pd.Series("", index=sub.index, dtype=object)
    vuln = sub["known_vulnerability"].astype(object).where(sub["known_vulnerability"].notna(), "").astype(str)
    for mask, text in (
            (c1[rows], "high risk of a shortfall within 30 days (" + pct + "%) after an income drop"),
            (c2[rows], "known vulnerability (" + vuln + ") with a risk of a shortfall within 30 days (" + pct + "%)"),
            (c3[rows], "an account in arrears (" + sub["arrears_reason"].astype(str) + ") with a likely shortfall ("
             + pct + "%)"),
            (c4[rows], _message_reasons(sub))):
        text = pd.Series(text, index=sub.index) if not isinstance(text, pd.Series) else text
        reason = reason + np.where(mask & (reason != ""), "; ", "") + text.where(mask, "")
    out = pd.DataFrame({
        "customer_id": sub["customer_id"].to_numpy(dtype=object),
        "priority": np.round(need[rows], 6),
        "reason": reason.to_numpy(dtype=object),
        "suggested_action": np.where(sub["in_arrears"].to_numpy(bool) | difficulty[rows], "hardship_support",
                                     "advisor_callback").astype(object),
        "p_shortfall_30": p30[rows],
        "expected_shortfall_date": pd.to_datetime(sub["expected_shortfall_date"], errors="coerce").dt.date,
        "known_vulnerability": sub["known_vulnerability"].astype(object)
        .where(sub["known_vulnerability"].notna(), None),
        "is_income_drop": income_drop[rows],
        "in_arrears": sub["in_arrears"].to_numpy(bool),
        "is_service_alerts_allowed": sub["is_service_alerts_allowed"].to_numpy(bool),
    })
    return out.reset_index(drop=True), demand


def decision_flags(ctx: pd.DataFrame, is_control: np.ndarray, pol: dict[str, Any]) -> pd.DataFrame:
    """One row per customer decided: the protective flags the funnel acted on (any of them blocks credit:
    is_at_risk), the forecast it had, and the control group. What the nightly report's checks and the analysts'
    'who is at risk and why' read (gold decision_flags)."""
    suit = pol["suitability"]
    flags = {
        "is_shortfall_risk": ctx["is_shortfall_risk"].to_numpy(bool),
        "in_arrears": ctx["in_arrears"].to_numpy(bool),
        "is_unarranged_overdraft": ctx["is_unarranged_overdraft"].to_numpy(bool),
        "is_gambling_harm": ctx["is_gambling_harm"].to_numpy(bool),
        "is_vulnerable": ctx["is_vulnerable"].to_numpy(bool),
        "is_message_distress": ctx["is_message_distress"].to_numpy(bool) | ctx["is_message_difficulty"].to_numpy(bool),
        "is_income_drop_ahead": ctx["is_income_drop_ahead"].to_numpy(bool),
    }
    off = {"is_vulnerable": not suit.get("block_known_vulnerability", True),
           "is_income_drop_ahead": not suit.get("block_income_drop_ahead", True),
           "is_message_distress": not pol.get("message_rules", {}).get("distress_suppresses_commercial", True)}
    blocking = [v for k, v in flags.items() if not off.get(k, False)]
    return pd.DataFrame({
        "customer_id": ctx["customer_id"].to_numpy(dtype=object),
        "is_at_risk": np.logical_or.reduce(blocking) if blocking else np.zeros(len(ctx), dtype=bool),
        **flags,
        "has_forecast": ctx["p_shortfall_30"].notna().to_numpy(bool),
        "p_shortfall_30": ctx["p_shortfall_30"].astype("float64").to_numpy(),
        "is_income_drop": ctx["is_income_stopped"].to_numpy(bool) | ctx["is_job_loss"].to_numpy(bool),
        "is_control": np.asarray(is_control, dtype=bool),
    })


def _message_reasons(sub: pd.DataFrame) -> pd.Series:
    """The advisor's reason from messages: what the customer told us, in the signals' words (never the text)."""
    said = sub["message_reasons"].astype(object).where(sub["message_reasons"].notna(), "") \
        if "message_reasons" in sub else pd.Series("", index=sub.index, dtype=object)
    return ("in their messages: " + said.astype(str)).where(said.astype(str) != "", "distress in recent messages")


# The words of the modules that the customer's data puts on the screen (the role modules take theirs from
# config/decisioning.yaml dashboard.roles and the customer's evidence).
MODULE_WHY = {
    "money_help": "money looks tight or an account needs attention",
    "cash_flow_view": "income does not arrive regularly or a shortfall is possible",
    "savings_goals": "there is money that is safe to save",
    "bills_calendar": "many regular payments go out",
    "travel_money": "travel abroad looks likely",
    "moving_checklist": "a move or home purchase looks likely",
    "family_budget": "a new baby in the family looks likely",
    "accounts_overview": "default module",
    "spending_insights": "default module",
}
LAYOUT_STATUSES = ("needed", "used", "new", "not_opened", "default")


def _numbers(ctx: pd.DataFrame, name: str) -> np.ndarray:
    if name not in ctx.columns:
        return np.zeros(len(ctx))
    return pd.to_numeric(ctx[name], errors="coerce").astype("float64").fillna(0).to_numpy()


def _texts(ctx: pd.DataFrame, name: str) -> np.ndarray:
    if name not in ctx.columns:
        return np.full(len(ctx), "", dtype=object)
    return ctx[name].astype(object).where(ctx[name].notna(), "").astype(str).to_numpy(dtype=object)


def _days(ctx: pd.DataFrame, name: str) -> np.ndarray:
    if name not in ctx.columns:
        return np.full(len(ctx), np.datetime64("NaT"), dtype="datetime64[D]")
    return pd.to_datetime(ctx[name], errors="coerce").to_numpy().astype("datetime64[D]")


def dashboard_layout(ctx: pd.DataFrame, pol: dict[str, Any], as_of: date) -> pd.DataFrame:
    """Per customer, the app home modules in order (one row per module and position), with the reason, a status
    and the night a module was introduced. Without personalization consent the layout is the default one;
    life-event modules need life-event consent.

    The customer's data puts modules there (a shortfall risk, safe-to-save, many bills, a life event; the roles of
    gold customer_roles: tax provisioning for an irregular earner, wealth preservation for a retiree). For an app
    user (gold app_signals, `usage` in config/decisioning.yaml dashboard) the app moves them: a module they opened
    rises with the days they used it; a useful module they never opened (or one they searched for) is introduced
    as new for `introduce_days` nights, then sinks to the bottom if still unopened; default modules they never open
    sink too. `need_only` modules (money help) are placed by the customer's need alone: their use in the app neither
    raises nor sinks them (protective; and a visit to money help is restricted data that the layout, which analysts
    read, must not reveal)."""
    d = pol["dashboard"]
    n = len(ctx)
    f = lambda name: _numbers(ctx, name)  # noqa: E731
    b = lambda name: _flag(ctx, name)  # noqa: E731
    personal = b("is_personalization_allowed")
    life = personal & b("is_life_events_allowed")
    p30 = f("p_shortfall_30")
    high_risk = p30 >= float(d["high_risk_p_shortfall_30"])
    irregular = ~b("has_regular_income") | (f("income_regularity") < float(d["irregular_income_regularity"]))
    irregular &= ctx["income_regularity"].notna().to_numpy() & b("is_income_known")
    trouble = b("in_arrears") | b("is_unarranged_overdraft") | b("is_gambling_harm") | (p30 >= 0.5)
    scores = {
        "money_help": np.where(personal & trouble, 12 + p30, 0),
        "cash_flow_view": np.where(personal & (high_risk | irregular), 10 + p30, 0),
        "savings_goals": np.where(personal & (f("safe_to_save") >= float(d["savings_min_safe_to_save"])) & ~high_risk,
                                  6 + np.minimum(f("safe_to_save") / 1000, 3), 0),
        "bills_calendar": np.where(personal & (f("n_outgoing_streams") >= float(d["many_direct_debits"])),
                                   5 + np.minimum(f("n_outgoing_streams") / 10, 2), 0),
        "travel_money": np.where(life & b("is_travel_abroad"), 7 + f("p_travel_abroad"), 0),
        "moving_checklist": np.where(life & (b("is_moving_home") | b("is_buying_home")), 7.5, 0),
        "family_budget": np.where(life & b("is_new_baby"), 6.5, 0),
        "accounts_overview": np.full(n, 3.0),
        "spending_insights": np.where(personal, 2.0, 1.0),
    }
    why = {m: np.full(n, text, dtype=object) for m, text in MODULE_WHY.items()}
    # roles from the customer's own income (gold customer_roles): the reason is their evidence
    for module, spec in (d.get("roles") or {}).items():
        holds = personal & b(f"is_{spec['role']}")
        scores[module] = np.where(holds, float(spec["score"]), 0)
        why[module] = np.where(holds, _texts(ctx, f"{spec['role']}_reason") + ": " + str(spec["because"]), "")
    names = [m for m in DASHBOARD_MODULES if m in scores]
    defaults = set(d["defaults"])
    for name in defaults:
        scores[name] = np.maximum(scores[name], 1.0)
    status = {m: np.where(scores[m] > 0, "default" if m in defaults else "needed", "").astype(object) for m in names}
    introduced = {m: np.full(n, np.datetime64("NaT"), dtype="datetime64[D]") for m in names}

    usage = d.get("usage")
    if usage:
        window = int(load_config("profiles")["app"]["window_days"])
        app = personal & b("is_app_user")
        today = np.datetime64(as_of, "D")
        # the days the app's sentences speak of: the app window, or fewer when the app's events cover less of it
        # (gold app_signals app_data_since: the bank may have delivered the app's events for less time)
        first = _days(ctx, "app_data_since")
        span = np.where(np.isnat(first), window,
                        np.clip((today - first).astype("timedelta64[D]").astype(np.int64) + 1, 1, window))
        last_days = np.char.add(np.char.add(" in the last ", span.astype(str)), " days").astype(object)
        fresh_nights = int(usage["introduce_days"])
        need_only = set(usage.get("need_only") or ())
        for m in names:
            if m in need_only:
                continue
            days = f(f"app_days_{m}")
            before = _days(ctx, f"introduced_on_{m}")
            base = scores[m]
            used = app & (days > 0)
            opened = np.char.add(np.char.add("you opened it on ", days.astype(int).astype(str)),
                                 np.where(days == 1, " day", " days")).astype(object) + last_days
            scores[m] = np.where(used, np.maximum(base, float(usage["used_score"]))
                                 + np.minimum(days * float(usage["rise_per_day"]), float(usage["max_rise"])), base)
            data_reason = (base > 0) & (m not in defaults)
            why[m] = np.where(used, np.where(data_reason, why[m] + "; " + opened, opened), why[m])
            status[m] = np.where(used, "used", status[m])
            introduced[m] = np.where(used, before, introduced[m])
            unopened = app & ~used
            searched = unopened & (base <= 0) & (f(f"app_searches_{m}") > 0)
            useful = unopened & data_reason
            candidate = useful | searched
            start = np.where(np.isnat(before), today, before)
            fresh = candidate & ((today - start).astype(int) < fresh_nights)
            stale = candidate & ~fresh
            scores[m] = np.where(fresh & useful, base + float(usage["introduce_boost"]),
                                 np.where(fresh & searched, float(usage["search_score"]), scores[m]))
            scores[m] = np.where(stale & useful, float(usage["sink_score"]) + base / 100,
                                 np.where(stale & searched, 0, scores[m]))
            why[m] = np.where(fresh & useful, "new for you: " + why[m],
                              np.where(fresh & searched, "new for you: you searched the app for it" + last_days,
                                       why[m]))
            why[m] = np.where(stale & useful, why[m] + "; not opened in the app" + last_days, why[m])
            status[m] = np.where(fresh, "new", np.where(stale & useful, "not_opened", status[m]))
            introduced[m] = np.where(candidate, start, introduced[m])
            # a default module an app user never opens sinks below the ones they use
            idle = unopened & (m in defaults) & (base > 0)
            scores[m] = np.where(idle, float(usage["sink_score"]) + base / 100, scores[m])
            why[m] = np.where(idle, "default module; not opened in the app" + last_days, why[m])
            status[m] = np.where(idle, "not_opened", status[m])

    matrix = np.column_stack([scores[m] for m in names])
    order = np.argsort(-matrix, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(matrix, order, axis=1)
    ci, pos = np.nonzero(sorted_scores > 0)
    column = order[ci, pos]
    pick = lambda table: np.column_stack([table[m] for m in names])[ci, column]  # noqa: E731
    return pd.DataFrame({
        "customer_id": ctx["customer_id"].to_numpy(dtype=object)[ci],
        "position": (_cumcount(ci) + 1).astype("int32"),
        "module": np.array(names, dtype=object)[column],
        "reason": pick(why).astype(object),
        "status": pick(status).astype(object),
        "introduced_on": pd.to_datetime(pick(introduced) if len(ci) else np.array([], dtype="datetime64[D]")),
    })


# ---------------------------------------------------------------------------------------------------------------
# The nightly stage
# ---------------------------------------------------------------------------------------------------------------

# The CRM responses last read in this process (`read_responses`): every shard of a night reads all of them.
_RESPONSES: dict[tuple, pd.DataFrame | None] = {}


def read_responses(paths: Paths, day: date, bucket: int | None = None) -> pd.DataFrame | None:
    """Silver crm_responses loaded up to D (of a bucket, or all), ordered; None when there are none. Read once per
    process while the table's files stand (`lake.table_stamp`); each caller gets its own copy."""
    key = (str(paths.home), day.isoformat(), bucket, lake.table_stamp(paths, "silver", "crm_responses"))
    if key not in _RESPONSES:
        _RESPONSES.clear()  # the latest read only: a night's shards ask for the same one
        _RESPONSES[key] = _read_responses(paths, day, bucket)
    frame = _RESPONSES[key]
    return None if frame is None else frame.copy()


def _read_responses(paths: Paths, day: date, bucket: int | None) -> pd.DataFrame | None:
    scan = lake.scan_sql(paths, "silver", "crm_responses")
    if scan is None:
        return None
    where = f"(load_date = 'history' or load_date <= '{day.isoformat()}')"
    if bucket is not None:
        where += f" and bucket = {int(bucket)}"
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select recommendation_id, customer_id, action_id, channel, event, event_at "
                           f"from {scan} where {where} order by recommendation_id, event_at, event").df()
    finally:
        con.close()


def decide_next_best_actions(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task decide_next_best_actions for one shard: read the persisted inputs of D (build_context: the
    feature store, the gold forecast, life events and message signals, the silver snapshots; the CRM responses),
    decide (`decide_frame`), write gold next_best_actions, decision_log, advisor_queue and dashboard_layout for the
    bucket (as_of=D/bucket=N), each swapped in whole, with the columns of config/tables.yaml."""
    started = time.perf_counter()
    context = build_context(paths, day, bucket)
    # propensities learn from every shard's responses; contact rules only read the customer's own
    responses = read_responses(paths, day)
    pol = policy()
    sizes = bucket_sizes(paths, day)
    capacity = shard_capacity(pol, sizes, bucket)
    from pipelines import policy as learned_policy

    scorer = learned_policy.promoted_scorer(paths)
    decisions = decide_frame(context, day, responses, pol=pol, capacity=capacity, scorer=scorer)
    # decision_context: the features of every customer the policy decided for (pipelines/policy.py)
    n_context = learned_policy.write_decision_context(paths, decisions.decision_context, day, bucket)
    metrics = decisions.metrics | {
        "night_capacity": frame_capacity(pol, sum(sizes.values())), "night_customers": sum(sizes.values()),
        "has_cash_forecast": bool(context["has_forecast"].any()),
        "has_life_events": bool(context["has_life_events"].any()),
        "seconds": round(time.perf_counter() - started, 2)}
    tables = {t: getattr(decisions, t) for t in (*GOLD_TABLES, "bandit_log")}
    return outputs.write_stage(paths, day, bucket, "decide", tables, metrics, extra_rows={"decision_context": n_context})


def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def bucket_sizes(paths: Paths, day: date) -> dict[int, int]:
    """Customers per bucket in the silver customers snapshot as of D (every bucket, empty ones included): what
    each shard's part of the night's staffed capacity is proportional to."""
    from pipelines.store import snapshot_path

    sizes = {b: 0 for b in shards()}
    path = snapshot_path(paths, "customers", day, required=False)
    if path is None:
        return sizes
    con = lake.connect(shared=True)
    try:
        rows = con.execute(f"select bucket, count(*) from read_parquet('{path}/**/*.parquet') group by bucket").fetchall()
    finally:
        con.close()
    sizes.update({int(b): int(k) for b, k in rows})
    return sizes


def decide_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the CLI); the DAG maps decide_next_best_actions over the shards instead."""
    per_shard = [decide_next_best_actions(paths, day, bucket) for bucket in shards()]
    return summarise_shards(paths, day, per_shard)


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    funnel: dict[str, int] = {}
    mix: dict[str, int] = {}
    for m in per_shard:
        for k, v in m["dropped_by_stage"].items():
            funnel[k] = funnel.get(k, 0) + v
        for k, v in m["action_mix"].items():
            mix[k] = mix.get(k, 0) + v
    capacity: dict[str, dict[str, int]] = {}
    channels: dict[str, int] = {}
    for m in per_shard:
        for name, figures in (m.get("capacity") or {}).items():
            into = capacity.setdefault(name, {})
            for k, v in figures.items():
                into[k] = into.get(k, 0) + int(v)
        for k, v in (m.get("channel_mix") or {}).items():
            channels[k] = channels.get(k, 0) + v
    nights = [m["night_capacity"] for m in per_shard if m.get("night_capacity")]
    for name, figures in capacity.items():
        if nights:
            figures["night_capacity"] = int(nights[0].get(name, figures.get("capacity", 0)))
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_customers": sum(m["n_customers"] for m in per_shard),
               "n_published": sum(m["n_published"] for m in per_shard),
               "n_control": sum(m["n_control"] for m in per_shard),
               "n_advisor_queue": sum(m["n_advisor_queue"] for m in per_shard),
               "dropped_by_stage": funnel, "action_mix": dict(sorted(mix.items())),
               "channel_mix": dict(sorted(channels.items())), "capacity": capacity,
               "policy_versions": sorted({m["policy_version"] for m in per_shard})}
    write_run_metrics(paths, day.isoformat(), "decide", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Benchmark: the funnel on a synthetic context (no lake)
# ---------------------------------------------------------------------------------------------------------------

def synthetic_context(n: int, seed: int = 0) -> pd.DataFrame:
    """A plausible context for n customers, vectorised (for `bench_decide` and tests)."""
    rng = np.random.default_rng(seed)
    p30 = np.clip(rng.beta(0.4, 2.0, n), 0, 1)
    frame = pd.DataFrame({
        "customer_id": np.char.add("B", np.char.zfill(np.arange(n).astype(str), 8)).astype(object),
        "age": rng.integers(16, 90, n).astype(float),
        "region": rng.choice(["London", "North West", "Scotland", "Wales", "South East"], n).astype(object),
        "known_vulnerability": np.where(rng.random(n) < 0.03, "resilience", None).astype(object),
        "tenure_days": rng.integers(10, 8000, n).astype(float),
        "has_current": rng.random(n) < 0.97, "has_savings": rng.random(n) < 0.5,
        "has_credit_card": rng.random(n) < 0.4, "has_loan": rng.random(n) < 0.07,
        "has_mortgage": rng.random(n) < 0.14, "has_external_current": rng.random(n) < 0.1,
        "card_over_limit": rng.random(n) < 0.01,
        "balance_now": rng.normal(2000, 3000, n), "balance_min_30": rng.normal(500, 1500, n),
        "n_days_negative_30": rng.poisson(1.0, n).astype(float),
        "n_days_negative_90": rng.poisson(3.0, n).astype(float),
        "overdraft_limit": rng.choice([0.0, 250.0, 500.0, 1000.0], n),
        "share_gambling_90": np.where(rng.random(n) < 0.05, rng.random(n) * 0.3, 0.0),
        "share_travel_90": rng.random(n) * 0.1, "has_regular_income": rng.random(n) < 0.8,
        "is_income_stopped": rng.random(n) < 0.02, "income_90": rng.gamma(2, 3000, n),
        "monthly_recurring_income": rng.gamma(2, 1200, n), "monthly_recurring_outgoings": rng.gamma(2, 600, n),
        "n_outgoing_streams": rng.poisson(5, n).astype(float), "n_fees_90": rng.poisson(0.3, n).astype(float),
        "n_returned_payments": (rng.random(n) < 0.01).astype(float), "n_arrears_fees": rng.poisson(0.01, n).astype(float),
        "n_missed_repayments": (rng.random(n) < 0.002).astype(float),
        "savings_balance": rng.gamma(1, 3000, n), "income_regularity": rng.random(n),
        "p_shortfall_30": p30, "p_shortfall_60": np.minimum(1, p30 * 1.1), "p_shortfall_90": np.minimum(1, p30 * 1.2),
        "min_balance_p10_30": rng.normal(1000, 2000, n),
        "expected_shortfall_date": pd.NaT,
        "safe_to_save": np.where(p30 < 0.1, np.floor(rng.gamma(1, 2000, n) / 5) * 5, 0.0),
        "confidence": rng.choice(["low", "medium", "high"], n).astype(object),
        "is_personalization_allowed": rng.random(n) < 0.8, "is_life_events_allowed": rng.random(n) < 0.6,
        "is_service_alerts_allowed": rng.random(n) < 0.97,
        "is_marketing_email_allowed": rng.random(n) < 0.5, "is_marketing_sms_allowed": rng.random(n) < 0.3,
        "is_marketing_push_allowed": rng.random(n) < 0.4, "is_marketing_inapp_allowed": rng.random(n) < 0.6,
        "has_life_events": True,
    })
    frame["headroom_now"] = frame["balance_now"] + frame["overdraft_limit"]
    rates = {"moving_home": 0.03, "buying_home": 0.01, "new_baby": 0.01, "marriage": 0.01, "new_job": 0.02,
             "job_loss": 0.01, "retirement": 0.005, "travel_abroad": 0.1}
    for event, rate in rates.items():
        prob = rng.beta(0.5, 8, n)
        frame[f"p_{event}"] = prob
        frame[f"is_{event}"] = rng.random(n) < rate
        frame[f"is_{event}_corroborated"] = frame[f"is_{event}"] & (rng.random(n) < 0.5)
    return frame


def synthetic_responses(context: pd.DataFrame, as_of: date, share: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """CRM responses for a share of the customers: one delivered recommendation each, some answered."""
    rng = np.random.default_rng(seed + 1)
    ids = context["customer_id"].to_numpy(dtype=object)
    picked = ids[rng.random(len(ids)) < share]
    m = len(picked)
    catalogue = catalogue_module.load_catalogue()
    action = np.array([x.id for x in catalogue], dtype=object)[rng.integers(0, len(catalogue), m)]
    channel = rng.choice(["email", "inapp", "push"], m).astype(object)
    days = rng.integers(0, 60, m)
    when = pd.Timestamp(as_of, tz="UTC") - pd.to_timedelta(days, unit="D") + pd.Timedelta(hours=9)
    rec = np.char.add("R", np.arange(m).astype(str)).astype(object)
    delivered = pd.DataFrame({"recommendation_id": rec, "customer_id": picked, "action_id": action,
                              "channel": channel, "event": "delivered", "event_at": when})
    outcome = rng.choice(["none", "opened", "accepted", "declined"], m, p=[0.5, 0.3, 0.05, 0.15])
    answered = delivered[outcome != "none"].copy()
    answered["event"] = outcome[outcome != "none"]
    answered["event_at"] = answered["event_at"] + pd.Timedelta(hours=2)
    return pd.concat([delivered, answered], ignore_index=True)


def bench_decide(n_customers: int = 1_000_000, seed: int = 0, as_of: date = date(2026, 11, 20)) -> dict[str, Any]:
    """Time the funnel (context completion, every stage, arbitration, exploration, reasons, advisor queue and
    dashboard) on a synthetic context of n customers with CRM responses for 10% of them. No lake writes."""
    import resource

    t0 = time.perf_counter()
    context = synthetic_context(n_customers, seed)
    responses = synthetic_responses(context, as_of, seed=seed)
    build_seconds = time.perf_counter() - t0
    t1, cpu = time.perf_counter(), time.process_time()
    decisions = decide_frame(context, as_of, responses)
    seconds = time.perf_counter() - t1
    cpu_seconds = time.process_time() - cpu
    return {"customers": n_customers, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "synthetic_input_seconds": round(build_seconds, 2),
            "customers_per_second": round(n_customers / seconds) if seconds else None,
            "published": int(len(decisions.next_best_actions)), "decision_log_rows": int(len(decisions.decision_log)),
            "advisor_queue": int(len(decisions.advisor_queue)),
            "dashboard_rows": int(len(decisions.dashboard_layout)),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
