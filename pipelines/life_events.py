"""Stage 5, life events: features -> one calibrated classifier per event -> gold `life_events`, per customer shard.

Also the training (`train_life_events`, registry family `life_events`) and the backtest (`backtest_life_events`:
model vs hand-written rules vs base rate, lead time, look-alikes, and what training on declared labels only costs).

Consent (DESIGN principle 2): an event is inferred only for customers whose consent state on D covers every purpose
the event lists in config/life_events.yaml (all need `life_events` and `personalization`, travel_abroad also
`location`). A customer
without it gets no row at all. Location features (country or currency of a posting) are only given to the models of
events whose consent includes `location`. Postings with a special-category MCC (health, religion, politics, trade
unions, sex life) are removed before any feature is computed.

Labels: silver life_events_declared (what customers told the bank): a cut-off c is positive for an event dated E when
c - days_after <= E <= c + days_before (per event in the config); a cut-off whose window reaches past the last day
of data has no label for that event (NaN: the future is not known yet).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import duckdb
import numpy as np
import pandas as pd

from pipelines import features as feature_stage
from pipelines import lake, outputs, registry, sql, store
from pipelines.config import Paths, load_config
from pipelines.display import display_labels
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILY = "life_events"
KEYS = ["customer_id", "cutoff"]
GOLD_COLUMNS = ["customer_id", "event_type", "probability", "flagged", "threshold", "evidence", "model_version"]
INFLOW_KEYWORD_SIGNALS = ("redundancy", "universal_credit", "child_benefit", "pension")
# Columns of the life-event features that are no model's feature: `income_history_days` (the history of the
# customer's newest source or current account, sql/features_income_history.sql) and `is_income_pending` (a stopped
# income a new payer of its kind may be replacing, paid once so far: sql/features_income_payers.sql) gate the income
# events (`income_gated`); a model reading them would only learn how new the accounts are.
GATE_FEATURES = ("income_history_days", "is_income_pending")
# Evidence signals that read an income stream's start or end: an event citing one needs `needs_income_history`.
INCOME_STREAM_SIGNALS = ("new_salary", "new_pension", "stopped_salary")


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------

def settings() -> dict[str, Any]:
    cfg = load_config("life_events")
    check_settings(cfg)
    return cfg


def event_types(cfg: dict[str, Any] | None = None) -> list[str]:
    return list((cfg or settings())["events"])


def forbidden_mccs(cfg: dict[str, Any]) -> list[str]:
    """Every four-digit MCC of config `forbidden_mccs` (codes and inclusive ranges), sorted."""
    codes: set[str] = set()
    for spec in cfg["forbidden_mccs"].values():
        codes.update(str(c) for c in spec.get("codes", []))
        for low, high in spec.get("ranges", []):
            codes.update(f"{c:04d}" for c in range(int(low), int(high) + 1))
    return sorted(codes)


def check_settings(cfg: dict[str, Any]) -> None:
    """Refuse a configuration whose signals would read a special-category MCC, or an event without consent."""
    forbidden = set(forbidden_mccs(cfg))
    bad = {group: sorted(set(map(str, codes)) & forbidden) for group, codes in cfg["mcc_signals"].items()}
    bad = {g: c for g, c in bad.items() if c}
    if bad:
        raise SegoneError(f"config/life_events.yaml: signal groups use forbidden (special-category) MCCs: {bad}")
    known_signals = set(_signal_predicates(cfg))
    for event, spec in cfg["events"].items():
        # an inference from the customer's own-bank data: life_events, and personalization (DESIGN principle 2:
        # without it the data may only power protective service alerts)
        for purpose in ("life_events", "personalization"):
            if purpose not in spec.get("consent", []):
                raise SegoneError(f"config/life_events.yaml: event {event} must require the {purpose} consent")
        groups = set(cfg["mcc_signals"]) | set(cfg["keyword_signals"])
        if set(spec.get("uncited_signals") or []) - groups:
            raise SegoneError(f"config/life_events.yaml: event {event}: uncited_signals "
                              f"{sorted(set(spec['uncited_signals']) - groups)} are not signal groups")
        unknown = sorted(set(spec.get("evidence_signals", [])) - known_signals)
        if unknown:
            raise SegoneError(f"config/life_events.yaml: event {event} names unknown evidence signals {unknown} "
                              f"(known: {sorted(known_signals)})")
        streams = sorted(set(spec.get("evidence_signals", [])) & set(INCOME_STREAM_SIGNALS))
        if streams and not spec.get("needs_income_history"):
            raise SegoneError(f"config/life_events.yaml: event {event} cites income streams {streams} and must set "
                              f"`needs_income_history: true` (a salary that seems to stop or start may have moved "
                              f"to an account too new to show it)")
        corroboration = spec.get("corroboration")
        if not isinstance(corroboration, dict) or not corroboration.get("description") or \
                not (corroboration.get("any") or corroboration.get("all")):
            raise SegoneError(f"config/life_events.yaml: event {event} needs a `corroboration` rule with a "
                              f"description: the evidence a credit offer triggered by it needs")


def is_location_feature(name: str, cfg: dict[str, Any]) -> bool:
    return any(name.startswith(prefix) for prefix in cfg["location_features_prefix"])


RULE_PREFIX = "rule_"


def rule_column(event: str) -> str:
    return f"{RULE_PREFIX}{event}"


def add_rule_features(frame: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """One 0/1 column per event: does the hand-written rule fire? The rule is what a bank knows before it has labels;
    as a feature it gives the event's model that knowledge, and the trees learn where the rule is wrong."""
    from models.life_event_rules import rule_fires

    rules = {rule_column(event): rule_fires(frame, spec["rule"]).astype("float64")
             for event, spec in cfg["events"].items()}
    kept = frame.drop(columns=[c for c in rules if c in frame.columns])
    return pd.concat([kept, pd.DataFrame(rules, index=frame.index)], axis=1)


def _matches_signal(column: str, signals: Iterable[str]) -> bool:
    return any(signal in column for signal in signals)


def event_feature_columns(cfg: dict[str, Any], event: str, columns: Iterable[str]) -> list[str]:
    """The feature columns the event's model may read: the common features, those of the event's signal groups
    (config `model.signals`; every feature when the event names none) and the event's own rule indicator, never
    another event's; location features only with the `location` consent."""
    spec = cfg["events"][event]
    allow_location = "location" in spec["consent"]
    signals = (spec.get("model") or {}).get("signals")
    common = set(cfg.get("common_model_features", []))
    out = []
    for c in columns:
        if c in KEYS or c in GATE_FEATURES or (not allow_location and is_location_feature(c, cfg)):
            continue
        if c.startswith(RULE_PREFIX):
            if c == rule_column(event):
                out.append(c)
            continue
        if signals is None or c in common or _matches_signal(c, signals):
            out.append(c)
    return out


def event_monotone(cfg: dict[str, Any], event: str, columns: Iterable[str]) -> dict[str, int]:
    """+1 constraints: the event's rule indicator and the recent windowed counts (n_<signal>_<N>d, n_new_<signal>_<N>d)
    of the signal groups in config `model.increasing`: more surveyor payments never make buying a home less likely."""
    increasing = (cfg["events"][event].get("model") or {}).get("increasing", [])
    return {c: 1 for c in columns if c == rule_column(event) or _windowed_of(c, increasing)}


def _windowed_of(column: str, signals: Iterable[str]) -> bool:
    """Is `column` a recent windowed count of one of the signal groups (n_surveyor_30d, n_new_dd_utilities_60d)?"""
    for signal in signals:
        for prefix in (f"n_{signal}_", f"n_new_{signal}_", f"n_new_dd_{signal}_"):
            if column.startswith(prefix) and re.fullmatch(r"\d+d", column[len(prefix):]):
                return True
    return False


def model_params(cfg: dict[str, Any]):
    from models.life_event_classifier import LifeEventParams

    return LifeEventParams.from_dict({**cfg.get("model", {}), "holdout_cutoffs": cfg["holdout_cutoffs"],
                                      "min_validation_positive_customers":
                                          cfg.get("min_validation_positive_customers", 3),
                                      "embargo_days": cfg["embargo_days"]})


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------

def register_inputs(con: duckdb.DuckDBPyConnection, paths: Paths, as_of: date, cutoffs: Iterable[date],
                    buckets: Iterable[int] | None = None, cfg: dict[str, Any] | None = None) -> None:
    """The feature store's rows and states built from silver as of `as_of` (features.register_silver: what the
    night's store holds, over the whole history) and the cut-offs: what sql/features_life_events.sql reads."""
    feature_stage.register_silver(con, paths, as_of, None if buckets is None else list(buckets))
    store.set_cutoffs(con, cutoffs)


RESTRICTED_VIEWS = ("day_rows", "balance_rows", "balances_in", "customer_state", "home_counts", "stream_first",
                    "postings_in")


def _customer_table(con: duckdb.DuckDBPyConnection, customer_ids: Iterable[str]) -> None:
    """Temp table le_customers: the given customers."""
    con.register("le_customer_frame", pd.DataFrame({"customer_id": sorted(set(map(str, customer_ids)))},
                                                    dtype=object))
    con.execute("create or replace temp table le_customers as select cast(customer_id as varchar) as customer_id "
                "from le_customer_frame")
    con.unregister("le_customer_frame")


def restrict_to_customers(con: duckdb.DuckDBPyConnection, customer_ids: Iterable[str]) -> None:
    """Narrow the registered inputs to the given customers (the consented ones): nothing of anyone else's data
    enters a feature, not even an intermediate aggregate."""
    _customer_table(con, customer_ids)
    _narrow_to_customer_table(con)


def _narrow_to_customer_table(con: duckdb.DuckDBPyConnection) -> None:
    """The registered inputs narrowed to the customers of temp table le_customers."""
    views = {name for (name,) in con.execute("select view_name from duckdb_views() where temporary").fetchall()}
    for view in RESTRICTED_VIEWS:
        if view not in views:
            continue
        con.execute(f"alter view {view} rename to {view}_unrestricted")
        con.execute(f"create temp view {view} as select * from {view}_unrestricted "
                    f"where customer_id in (select customer_id from le_customers)")
    for table in ("accounts_in", "customers_in"):
        con.execute(f"delete from {table} where customer_id not in (select customer_id from le_customers)")


def signal_groups(cfg: dict[str, Any]) -> list[str]:
    """The life-event signal groups, in config order (mcc_signals, then keyword_signals)."""
    return list(dict.fromkeys([*cfg["mcc_signals"], *cfg["keyword_signals"]]))




SIGNAL_AGGREGATES = {   # the column of sql/features_life_event_signals.sql -> the feature's name for group {g}
    "n_14d": "n_{g}_14d", "n_30d": "n_{g}_30d", "n_60d": "n_{g}_60d", "n_90d": "n_{g}_90d",
    "amount_90d": "amount_{g}_90d", "n_prev90": "n_{g}_prev90"}


def signal_window_sql(cfg: dict[str, Any], windows: str = "life_event_signal_rows") -> str:
    """One column per signal group and window (n_<group>_14d/30d/60d/90d, amount_<group>_90d, n_<group>_prev90),
    zero when the customer has no such posting, from `windows` (the long rows of
    sql/features_life_event_signals.sql): generated from config/life_events.yaml, so that a group added there is a
    feature everywhere. A PIVOT over the listed groups (every group gets its columns, even without a posting):
    ten times faster than one filtered aggregate per column."""
    groups = signal_groups(cfg)
    listed = ", ".join("'" + g.replace("'", "''") + "'" for g in groups)
    using = ", ".join(f"max({column}) as {column}" for column in SIGNAL_AGGREGATES)
    columns = ", ".join(f'coalesce("{g}_{column}", 0) as "{name.format(g=g)}"'
                        for g in groups for column, name in SIGNAL_AGGREGATES.items())
    return (f"select cutoff, customer_id, {columns} from "
            f"(pivot {windows} on signal in ({listed}) using {using} group by cutoff, customer_id)")


def life_event_frame(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """sql/features_life_events.sql on a connection with the store's inputs and cut-offs registered: one row per
    customer and cut-off, every feature a float64 rounded to 6 decimals (no rule indicators)."""
    cfg = cfg or settings()
    sql.create_table(con, "life_event_signal_rows", "features_life_event_signals")
    feature_stage.income_inputs(con)   # income_payers (stopped_streams), income_history_days (GATE_FEATURES)
    con.execute(f"create or replace temp table life_event_signal_windows as {signal_window_sql(cfg)}")
    frame = sql.frame(con, "features_life_events", order_by="customer_id, cutoff")
    frame["cutoff"] = pd.to_datetime(frame["cutoff"])
    return feature_stage.numeric(frame, KEYS)


def compute_features(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """The life-event features of a registered connection with the rule indicators (add_rule_features)."""
    cfg = cfg or settings()
    return add_rule_features(life_event_frame(con, cfg), cfg)


def build_features(paths: Paths, as_of: date, cutoffs: Iterable[date], buckets: Iterable[int] | None = None,
                   cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """The life-event features at the cut-offs from silver as of `as_of`, a customer bucket at a time
    (features.bucket_groups)."""
    cutoffs = list(cutoffs)
    frames = []
    for group in feature_stage.bucket_groups(buckets):
        con = lake.connect()
        try:
            register_inputs(con, paths, as_of, cutoffs, group, cfg)
            frames.append(compute_features(con, cfg))
        finally:
            con.close()
    return feature_stage.concat_sorted(frames, list(KEYS))


def feature_names(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in KEYS]


# ---------------------------------------------------------------------------------------------------------------
# Consent, labels, cut-offs
# ---------------------------------------------------------------------------------------------------------------

def consent_state(paths: Paths, day: date, buckets: Iterable[int] | None = None) -> pd.DataFrame:
    """customer_id, life_events, personalization, location (booleans) from the silver consent_state snapshot as of
    `day`."""
    path = store.snapshot_path(paths, "consent_state", day)
    con = lake.connect(shared=True)
    try:
        frame = con.execute(f"""
            select customer_id, coalesce(is_life_events_allowed, false) as life_events,
                coalesce(is_personalization_allowed, false) as personalization,
                coalesce(is_location_allowed, false) as location
            from read_parquet('{path}/**/*.parquet')
            where {store._bucket_filter(None if buckets is None else list(buckets))}
            order by customer_id""").df()
    finally:
        con.close()
    return frame


def allowed(consent: pd.DataFrame, cfg: dict[str, Any], event: str) -> pd.Series:
    """Per consent row: does the customer's consent cover every purpose the event needs?"""
    ok = pd.Series(True, index=consent.index)
    for purpose in cfg["events"][event]["consent"]:
        ok &= consent[purpose].astype(bool) if purpose in consent else False
    return ok


def declared_events(paths: Paths, as_of: date) -> pd.DataFrame:
    """customer_id, event_type, event_date of the declarations loaded up to as_of (silver life_events_declared)."""
    scan = lake.scan_sql(paths, "silver", "life_events_declared")
    if scan is None:
        return pd.DataFrame({"customer_id": [], "event_type": [], "event_date": pd.to_datetime([])})
    con = lake.connect(shared=True)
    try:
        sql.set_variables(con, as_of=as_of)
        frame = con.execute(f"""
            select distinct customer_id, event_type, event_date from {scan}
            where load_date = 'history' or load_date <= cast(getvariable('as_of') as varchar)
            order by customer_id, event_type, event_date""").df()
    finally:
        con.close()
    frame["event_date"] = pd.to_datetime(frame["event_date"])
    return frame


def truth_events(paths: Paths) -> pd.DataFrame | None:
    """The simulator's full truth (evaluation only; never used by the nightly stage), or None."""
    root = paths.truth / "life_events"
    if not root.exists() or not any(root.glob("**/*.parquet")):
        return None
    con = lake.connect()
    try:
        frame = con.execute(f"select customer_id, event_type, event_date from read_parquet('{root}/**/*.parquet') "
                            f"order by customer_id, event_type, event_date").df()
    finally:
        con.close()
    frame["event_date"] = pd.to_datetime(frame["event_date"])
    return frame


def make_labels(spine: pd.DataFrame, events: pd.DataFrame, cfg: dict[str, Any], known_until: date) -> pd.DataFrame:
    """customer_id, cutoff and a 0/1 column per event type: 1 when an event of that type is dated in
    [cutoff - days_after, cutoff + days_before]; NaN when cutoff + days_before is after `known_until`."""
    labels = spine[KEYS].copy().reset_index(drop=True)
    known = pd.Timestamp(known_until)
    for event, spec in cfg["events"].items():
        before, after = int(spec["window"]["days_before"]), int(spec["window"]["days_after"])
        mine = events.loc[events["event_type"] == event, ["customer_id", "event_date"]]
        hits = labels.merge(mine, on="customer_id", how="inner")
        delta = (hits["event_date"] - hits["cutoff"]).dt.days
        hits = hits[(delta >= -after) & (delta <= before)].drop_duplicates(KEYS)
        positive = labels.set_index(KEYS).index.isin(hits.set_index(KEYS).index)
        values = positive.astype(float)
        values[(labels["cutoff"] + pd.Timedelta(days=before) > known).to_numpy()] = np.nan
        labels[event] = values
    return labels


def declared_known_until(end: date, cfg: dict[str, Any]) -> date:
    """Declarations arrive days or weeks after the event: a window ending in the last `declared_label_lag_days`
    before `end` is not complete yet, so those labels are left out (NaN) rather than counted as negatives."""
    return end - timedelta(days=int(cfg.get("declared_label_lag_days", 0)))


def mask_unconsented(labels: pd.DataFrame, consent: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Labels set to NaN for customers whose consent does not cover the event (they are not trained on)."""
    out = labels.copy()
    for event in cfg["events"]:
        ok_ids = set(consent.loc[allowed(consent, cfg, event), "customer_id"])
        out.loc[~out["customer_id"].isin(ok_ids), event] = np.nan
    return out


def cutoff_grid(first_day: date, last_day: date, cfg: dict[str, Any]) -> list[date]:
    """Cut-offs every `cutoff_step_days`, the newest at the last day of data, none with less than
    `min_history_days` before it; ascending."""
    step = int(cfg["cutoff_step_days"])
    earliest = first_day + timedelta(days=int(cfg["min_history_days"]))
    out, day = [], last_day
    while day >= earliest:
        out.append(day)
        day -= timedelta(days=step)
    return sorted(out)


def data_range(paths: Paths) -> tuple[date, date]:
    scan = lake.scan_sql(paths, "silver", "transactions")
    if scan is None:
        raise SegoneError("silver transactions are missing: run `segone load-history` first")
    con = lake.connect()
    try:
        first, last = con.execute(f"select min(booking_date), max(booking_date) from {scan}").fetchall()[0]
    finally:
        con.close()
    return first, last


def frame_hash(*frames: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------

def event_specs(cfg: dict[str, Any], columns: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for event, spec in cfg["events"].items():
        chosen = event_feature_columns(cfg, event, columns)
        out[event] = {"features": chosen, "target_precision": float(spec["target_precision"]),
                      "monotone": event_monotone(cfg, event, chosen),
                      "prior": rule_column(event), "rule": spec["rule"], "rule_version": rule_version(cfg)}
    return out


def rule_version(cfg: dict[str, Any]) -> int:
    """The version of the hand-written rules: config/life_events.yaml `version` (bump it when a rule changes)."""
    return int(cfg.get("version", 1))


def method_of(model, event: str) -> str:
    """"model" or "rule": who publishes the event (the classifier's `events[event]["method"]`; "model" when absent)."""
    return model.events[event].get("method", "model")


def needed_columns(model, event: str) -> list[str]:
    """The feature columns the classifier's `score` reads for the event: its model's features and rule indicator,
    or, for an event on its rule, the features the rule reads."""
    from models.life_event_rules import rule_features

    info = model.events[event]
    if method_of(model, event) == "rule":
        return list(dict.fromkeys(rule_features(info["rule"])))
    return list(dict.fromkeys([*info["features"], *([info["prior"]["column"]] if info.get("prior") else [])]))


def row_model_version(model, event: str) -> str:
    """What a gold row says made it: the registry version of the model, or `rule:<event>:v<N>` for an event that
    is published by its hand-written rule (DESIGN principle 6)."""
    if method_of(model, event) == "rule":
        return f"rule:{event}:v{model.events[event].get('rule_version') or 1}"
    return getattr(model, "version", "unversioned")


def decisions(model) -> dict[str, dict[str, Any]]:
    """Per event: published by the model or by its rule, why, and the held-out figures compared."""
    return {event: {"method": info.get("method", "model"), "reason": info.get("method_reason"),
                    "comparison": info.get("comparison", {})}
            for event, info in model.events.items()}


def fit_classifier(features: pd.DataFrame, labels: pd.DataFrame, cfg: dict[str, Any]):
    from models.life_event_classifier import LifeEventClassifier

    model = LifeEventClassifier(model_params(cfg))
    return model.fit(features, labels, event_specs(cfg, feature_names(features)))


def untrainable_reason(cutoffs: list[date], first: date, end: date, declared: pd.DataFrame,
                       cfg: dict[str, Any]) -> str | None:
    """Why no event's model can be trained at all on this history (then every event is published by its rule),
    or None."""
    needed = int(cfg["holdout_cutoffs"]) + 2
    if len(cutoffs) < needed:
        return (f"too little history to train: {len(cutoffs)} cut-off(s) between {first} and {end} with "
                f"{int(cfg['min_history_days'])} days of history before them, {needed} needed "
                f"({int(cfg['holdout_cutoffs'])} held out to check the model against its rule)")
    if declared.empty:
        return "no declared life events (labels) to learn from"
    return None


def train_life_events(paths: Paths, as_of: date | None = None) -> dict[str, Any]:
    """Train one classifier per event on declared labels over cut-offs every 14 days of the history, decide per
    event whether the model or its hand-written rule publishes (the model only where it beats the rule on held-out
    cut-offs; on a history too short to train, every event is on its rule), save it to the registry (family
    `life_events`) and promote it. Never refuses for lack of history or labels (DESIGN principle 6). Returns the run
    metrics, with the decision per event and its reason."""
    from models.life_event_classifier import LifeEventClassifier

    started = time.perf_counter()
    cfg = settings()
    first, last = data_range(paths)
    end = min(as_of, last) if as_of else last
    cutoffs = cutoff_grid(first, end, cfg)
    declared = declared_events(paths, end)
    reason = untrainable_reason(cutoffs, first, end, declared, cfg)
    if reason is None:
        features = build_features(paths, end, cutoffs, cfg=cfg)
        labels = make_labels(features, declared, cfg, declared_known_until(end, cfg))
        consent = consent_state(paths, end)
        if cfg.get("train_consented_only", True):
            labels = mask_unconsented(labels, consent, cfg)
        model = fit_classifier(features, labels, cfg)
        data_hash = frame_hash(features, labels)
        window = {"first_cutoff": cutoffs[0].isoformat(), "last_cutoff": cutoffs[-1].isoformat(),
                  "n_cutoffs": len(cutoffs), "step_days": int(cfg["cutoff_step_days"])}
        n_rows, n_customers, names = int(len(features)), int(features["customer_id"].nunique()), feature_names(features)
    else:
        log.warning("life events: %s; every event is published by its rule", reason)
        specs = {event: {"rule": spec["rule"], "rule_version": rule_version(cfg),
                         "target_precision": float(spec["target_precision"])}
                 for event, spec in cfg["events"].items()}
        model = LifeEventClassifier.rules_only(specs, reason, model_params(cfg))
        data_hash = hashlib.sha256(json.dumps({"first": first, "end": end, "reason": reason, "rules": specs,
                                               "n_declared": len(declared)},
                                              sort_keys=True, default=str).encode()).hexdigest()
        window = {"first_cutoff": cutoffs[0].isoformat() if cutoffs else None,
                  "last_cutoff": cutoffs[-1].isoformat() if cutoffs else None,
                  "n_cutoffs": len(cutoffs), "step_days": int(cfg["cutoff_step_days"])}
        n_rows, n_customers, names = 0, 0, []
    version = f"life-events-{end.isoformat()}-{data_hash[:10]}"
    validation = {e: {k: info.get(k) for k in ("validation_pr_auc", "threshold", "threshold_rule",
                                               "validation_at_threshold", "n_train_positives",
                                               "n_validation_positives", "base_rate")}
                  for e, info in model.events.items()}
    chosen = decisions(model)
    for event, decision in chosen.items():
        decision["model_version"] = row_model_version(model, event) if decision["method"] == "rule" else version
    metadata = {"trained_for": end.isoformat(), "label_source": "declared", "training_window": window,
                "features": names, "n_rows": n_rows, "n_customers": n_customers, "validation": validation,
                "decisions": chosen, "data_hash": data_hash, "config_version": cfg.get("version"),
                "notes": model.notes}
    registry.save_version(paths, FAMILY, version, model.save, metadata)
    current = registry.promoted_version(paths, FAMILY)
    why = "first model of its family" if current is None else (
        "same data and settings as the promoted one" if current == version else f"retrained on data up to {end}")
    registry.promote(paths, FAMILY, version, why)
    metrics = {"family": FAMILY, "version": version, "promoted": True, "reason": why,
               "decisions": chosen,
               "on_rule": sorted(e for e, d in chosen.items() if d["method"] == "rule"),
               "on_model": sorted(e for e, d in chosen.items() if d["method"] != "rule"),
               "validation": validation, "n_rows": n_rows, "n_customers": n_customers,
               "seconds": round(time.perf_counter() - started, 1)}
    write_run_metrics(paths, end.isoformat(), "train_life_events", metrics)
    return metrics


def load_model(paths: Paths, version: str | None = None):
    from models.life_event_classifier import IncompatibleModelError, LifeEventClassifier

    if version is None:
        directory, metadata = registry.promoted(paths, FAMILY)
        version = metadata["version"]
    else:
        directory = registry.family_dir(paths, FAMILY) / version

    def load(folder):
        model = LifeEventClassifier.load(folder)
        model.version = version
        return model

    try:  # once per process while the version's files stand
        return registry.load_cached(directory, "life_events", load)
    except (IncompatibleModelError, FileNotFoundError, KeyError, ValueError) as error:
        raise SegoneError(f"the {FAMILY} model {version} cannot be loaded ({error}): retrain it") from error


# ---------------------------------------------------------------------------------------------------------------
# Evidence: the postings behind a flag
# ---------------------------------------------------------------------------------------------------------------

# A stream is new to the customer when its first posting is at least this long after the customer's first posting
# (sql/features_life_events.sql, `new_streams`), and new now when that first posting is in the last NEW_*_DAYS; a
# salary is stopped, and not replaced by a new employer's, as sql/features_income_payers.sql says on the evidence day
# (config/life_events.yaml stopped_streams, income_replacement). The evidence reads the same definitions as the
# features it stands behind.
NEW_TO_CUSTOMER_DAYS = 60
NEW_OUTFLOW_DAYS = 60
NEW_SALARY_DAYS = 45
NEW_PENSION_DAYS = 60


def _signal_predicates(cfg: dict[str, Any]) -> dict[str, str]:
    """SQL predicate over evidence postings (alias p, see `evidence_postings`) per evidence signal. Only postings
    that are evidence of an event: the `new_*` signals need a stream that started recently (an existing mortgage or
    rent payment, an old employer's salary is not news), `stopped_salary` a salary stream that stopped."""
    out: dict[str, str] = {}
    for group, codes in cfg["mcc_signals"].items():
        out[group] = f"p.amount_value < 0 and p.mcc in ({', '.join(repr(str(c)) for c in codes)})"
    for group, words in cfg["keyword_signals"].items():
        text = " or ".join(f"contains(p.posting_text, {str(w).upper()!r})" for w in words)
        sign = ">" if group in INFLOW_KEYWORD_SIGNALS else "<"
        out[group] = f"p.amount_value {sign} 0 and ({text})"
    day = "getvariable('evidence_day')"
    new_to_customer = f"p.stream_first - p.source_first >= {NEW_TO_CUSTOMER_DAYS}"
    new_out = (f"p.is_stream_posting and p.amount_value < 0 and p.stream_first > {day} - {NEW_OUTFLOW_DAYS} "
               f"and {new_to_customer}")
    out.update({
        "foreign": "p.amount_value < 0 and (p.currency <> p.home_currency "
                   "or coalesce(p.country <> p.home_country, false))",
        "new_dd_utilities": f"{new_out} and p.mcc in ('4900', '4814', '4899')",
        "new_dd_council_tax": f"{new_out} and (p.mcc = '9311' or contains(p.posting_text, 'COUNCIL TAX'))",
        "new_dd_mortgage": f"{new_out} and (p.mcc = '6012' or contains(p.posting_text, 'MORTGAGE'))",
        "new_rent": f"{new_out} and p.channel = 'standing_order' and contains(p.posting_text, 'RENT')",
        "new_salary": f"p.is_stream_posting and p.amount_value > 0 and p.channel = 'salary' "
                      f"and not contains(p.posting_text, 'PENSION') "
                      f"and p.stream_first > {day} - {NEW_SALARY_DAYS} and {new_to_customer}",
        "new_pension": f"p.is_stream_posting and p.amount_value > 0 and contains(p.posting_text, 'PENSION') "
                       f"and p.stream_first > {day} - {NEW_PENSION_DAYS} and {new_to_customer}",
        "stopped_salary": "p.is_stopped_income and p.amount_value > 0 and p.channel = 'salary' "
                          "and not contains(p.posting_text, 'PENSION')",
    })
    return out


def _feature_signal(feature: str, signals: list[str]) -> str | None:
    """The evidence signal a feature is about (n_surveyor_90d -> surveyor, n_foreign_ccy_14d -> foreign,
    n_new_salary_payers_45d -> new_salary): the longest signal name the feature name contains."""
    for signal in sorted(signals, key=len, reverse=True):
        if signal in feature:
            return signal
    return None


def evidence_postings(con: duckdb.DuckDBPyConnection, flagged: pd.DataFrame, day: date, cfg: dict[str, Any]
                      ) -> pd.DataFrame:
    """Up to `evidence_max_transactions` postings per flagged (customer_id, event_type) behind the flag: postings of
    the event's evidence signals in the look-back, the signals of its top features first, newest first. A flag
    without any such posting names none: a posting that is not evidence of the event is never shown as if it were.
    A posting's `label` is its merchant name, else its description, as pipelines.display shows free text (no
    invisible, bidirectional or other format character, one line; null when nothing visible is left)."""
    columns = ["customer_id", "event_type", "transaction_id", "booking_date", "amount", "label", "signal"]
    if flagged.empty:
        return pd.DataFrame(columns=columns)
    predicates = _signal_predicates(cfg)
    wanted = []
    for row in flagged.itertuples(index=False):
        signals = [s for s in cfg["events"][row.event_type]["evidence_signals"] if s in predicates]
        first = [s for s in (_feature_signal(f, signals) for f in row.top_features) if s]
        order = list(dict.fromkeys([*first, *signals]))
        wanted.extend({"customer_id": row.customer_id, "event_type": row.event_type, "signal": s, "priority": i}
                      for i, s in enumerate(order))
    if not wanted:
        return pd.DataFrame(columns=columns)
    con.register("le_wanted_frame", pd.DataFrame(wanted))
    con.register("le_flagged_frame", flagged[["customer_id", "event_type"]])
    sql.set_variables(con, evidence_day=day, evidence_lookback_days=int(cfg["evidence_lookback_days"]))
    # the income payers on the evidence day, stopped or replaced as the features read them
    con.execute("create or replace temp table le_income_payers as "
                "with cutoffs as (select getvariable('evidence_day') as cutoff) "
                f"select * from ({sql.text('features_income_payers')})")
    forbidden = ", ".join(repr(m) for m in forbidden_mccs(cfg))
    cases = "\n".join(f"when w.signal = {s!r} then ({pred})" for s, pred in predicates.items())
    limit = int(cfg["evidence_max_transactions"])
    # the postings themselves come from silver (postings_in: the store keeps no ids or labels); what they are
    # evidence of, from the store's rows and states, as the features read them (sql/features_life_events.sql)
    found = con.execute(f"""
        with customers as (select distinct customer_id from le_flagged_frame),
        posting_rows as (
            select t.transaction_id, t.customer_id, t.booking_date, t.channel, t.mcc, t.country, t.currency,
                t.amount_value,
                coalesce(t.counterparty_id, upper(t.merchant_name),
                         regexp_replace(upper(coalesce(t.description, '')), '[0-9]+', '#', 'g')) as stream_key,
                coalesce(t.merchant_name, t.description) as label,
                upper(concat_ws(' ', t.description, t.merchant_name)) as posting_text
            from postings_in as t
            where t.customer_id in (select customer_id from customers)
              and t.booking_date > getvariable('evidence_day') - getvariable('evidence_lookback_days')
              and (t.mcc is null or t.mcc not in ({forbidden}))
        ),
        streams as (
            -- the life-event streams (outgoing direct debits and standing orders, income by salary, benefit or
            -- pension; own-account transfers left out)
            select distinct r.customer_id, r.stream_key, r.sign > 0 as is_inflow
            from day_rows as r
            where r.customer_id in (select customer_id from customers) and not r.is_forbidden
              and (r.income_kind is not null or r.outflow_kind is not null)
              and not (r.is_own_transfer or (r.channel in ('transfer_in', 'transfer_out') and r.is_transfer_text))
        ),
        stopped_incomes as (
            -- the income payers that stopped and were not replaced nor pending (sql/features_income_payers.sql)
            select customer_id, stream_key, bool_or(is_stopped and not is_replaced and not is_pending)
                as is_stopped_income
            from le_income_payers
            group by all
        ),
        firsts as (
            -- the stream's first posting and the first posting of the source it was first seen on (new to the
            -- customer, not only to the data: sql/features_life_events.sql new_streams)
            select f.customer_id, f.stream_key, f.is_inflow, f.stream_first, s.source_first
            from (select customer_id, stream_key, direction = 'in' as is_inflow, min(first_day) as stream_first,
                         arg_min(source, first_day) as first_source
                  from stream_first
                  where customer_id in (select customer_id from customers)
                  group by all) as f
            left join (select customer_id, source, min(first_posting_day) as source_first from customer_state
                       group by all) as s
                on s.customer_id = f.customer_id and s.source = f.first_source
        ),
        home_totals as (
            select customer_id, kind, value, sum(n) as n from home_counts
            where customer_id in (select customer_id from customers)
            group by all
        ),
        home as (
            select f.customer_id, h.home_currency, h.home_country, f.first_posting
            from (select customer_id, min(first_posting_day) as first_posting from customer_state
                  where customer_id in (select customer_id from customers) group by all) as f
            left join (
                select customer_id,
                    first(value order by n desc, value) filter (where kind = 'currency') as home_currency,
                    first(value order by n desc, value) filter (where kind = 'country') as home_country
                from home_totals group by customer_id
            ) as h using (customer_id)
        ),
        p as (
            select r.*, h.home_currency, h.home_country, h.first_posting, f.stream_first, f.source_first,
                s.stream_key is not null as is_stream_posting,
                coalesce(s.stream_key is not null and r.amount_value > 0 and i.is_stopped_income, false)
                    as is_stopped_income
            from posting_rows as r
            join home as h using (customer_id)
            left join streams as s
                on s.customer_id = r.customer_id and s.stream_key = r.stream_key
                and s.is_inflow = (r.amount_value > 0)
                and ((r.amount_value < 0 and r.channel in ('direct_debit', 'standing_order'))
                     or (r.amount_value > 0 and (r.channel in ('salary', 'benefit')
                                                 or r.posting_text like '%PENSION%')))
            left join firsts as f
                on f.customer_id = r.customer_id and f.stream_key = r.stream_key
                and f.is_inflow = (r.amount_value > 0)
            left join stopped_incomes as i
                on i.customer_id = r.customer_id and i.stream_key = r.stream_key
        ),
        matched as (
            select w.customer_id, w.event_type, w.signal, w.priority, p.transaction_id, p.booking_date,
                p.amount_value, p.label
            from le_wanted_frame as w join p on p.customer_id = w.customer_id
            where case {cases} else false end
        ),
        ranked as (
            select *, row_number() over (partition by customer_id, event_type, transaction_id
                                         order by priority) as dup
            from matched
        )
        select customer_id, event_type, transaction_id, booking_date, amount_value as amount, label, signal
        from (select *, row_number() over (partition by customer_id, event_type
                                           order by priority, booking_date desc, transaction_id) as n
              from ranked where dup = 1)
        where n <= {limit}
        order by customer_id, event_type, n""").df()
    # the label is free text an analyst reads (a description keeps invisible characters): shown without them
    return found.assign(label=display_labels(found["label"]))


def uncited_features(cfg: dict[str, Any], event: str, columns: Iterable[str]) -> list[str]:
    """The event's feature columns its evidence never names (config `uncited_signals`): the windowed counts and
    amounts of those signal groups (n_mortgage_30d, amount_mortgage_90d, n_mortgage_prev90), which the model may
    rank on but which are not evidence of the event (an existing mortgage payment is no sign of buying a home)."""
    groups = cfg["events"][event].get("uncited_signals") or []
    pattern = re.compile(rf"^(n|amount)_({'|'.join(map(re.escape, groups))})_(\d+d|prev90)$") if groups else None
    return [c for c in columns if pattern is not None and pattern.match(c)]


def income_gated(features: pd.DataFrame, event: str, cfg: dict[str, Any]) -> np.ndarray:
    """Per row of the life-event features: is the event one inferred from the customer's income (config
    `needs_income_history`: job_loss, new_job, retirement) while the history of their newest source or current
    account (`income_history_days`) is shorter than features.income_known_days (102)? Then it is not judged: a
    salary that seems to have stopped, or a salary or pension that seems new, may only have moved to an account
    opened or connected too lately to show it (docs/life_events.md, "Income events need the income's history").
    The same test as every income claim of the product (features.income_unknown), which also holds every income
    event while a stopped income's replacement is pending (a new payer of its kind paid once: features.income_pending)."""
    if not cfg["events"][event].get("needs_income_history"):
        return np.zeros(len(features), dtype=bool)
    return feature_stage.income_unknown(features.reset_index(drop=True))


def gate_note(history_days: float, pending: bool = False) -> str:
    """The evidence note of an income event not judged (`income_gated`): for lack of history, or while a stopped
    income's replacement waits for the new payer's second payment (`pending`)."""
    if pending and not (np.isfinite(history_days) and history_days < feature_stage.income_known_days()):
        return ("not judged: the event is inferred from the customer's income, and a regular income that stopped may "
                "have been replaced by a new payer of its kind that has paid once so far (one payment may be a bonus, "
                "a refund or a one-off transfer): judged after its second payment, or when none comes")
    shown = "no" if not np.isfinite(history_days) else str(int(history_days))
    return (f"not judged: the event is inferred from the customer's income, and their newest account or data "
            f"source has {shown} days of history, fewer than the {feature_stage.income_known_days()} a regular "
            f"income needs to be seen (a salary may have moved there)")


def corroborated(features: pd.DataFrame, event: str, cfg: dict[str, Any]) -> np.ndarray:
    """Per row of the life-event features: does the event's corroborating evidence (config `corroboration`) hold?
    What a credit or lending offer triggered by the event needs besides the flag."""
    from models.life_event_rules import rule_fires

    return rule_fires(features, cfg["events"][event]["corroboration"])


# ---------------------------------------------------------------------------------------------------------------
# The nightly stage: one shard
# ---------------------------------------------------------------------------------------------------------------

def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def score_rows(model, con: duckdb.DuckDBPyConnection | None, features: pd.DataFrame, consent: pd.DataFrame,
               day: date, cfg: dict[str, Any],
               prepare_evidence: Callable[[list[str]], None] | None = None) -> pd.DataFrame:
    """Gold rows for the customers of `features` (cut-off = day): one per customer and event type their consent
    covers; none for a customer without the life_events consent. Vectorised: one LightGBM pass per event gives the
    probability, the flag and the top features; the evidence JSON is built by DuckDB; only the flagged rows' postings
    are looked up (evidence_postings), in the inputs `con` holds, or that `prepare_evidence` registers there for
    the flagged customers (called once, only when a row is flagged)."""
    k = int(cfg["evidence_top_features"])
    # ask for as many more top features as an event has uncited ones: the evidence names the k largest of the rest
    k = k + max([len(uncited_features(cfg, e, model.events[e]["features"])) for e in model.events
                 if e in cfg["events"]] or [0])
    parts, flagged_parts, names = [], [], {}
    customer_ids = features["customer_id"].astype(str).reset_index(drop=True)
    consent_ids = pd.Index(consent["customer_id"].astype(str).to_numpy(dtype=object))
    where = consent_ids.get_indexer(customer_ids.to_numpy(dtype=object))   # each row's consent row (-1: none)
    for event in model.events:
        if event not in cfg["events"]:
            continue
        ok = allowed(consent, cfg, event).to_numpy(dtype=bool)
        mask = (where >= 0) & ok[np.maximum(where, 0)]
        if not mask.any():
            continue
        info = model.events[event]
        needed = needed_columns(model, event)
        ids = customer_ids[mask].reset_index(drop=True)
        scored = model.score(features.loc[mask, needed], event, k)
        # an income event on too short a history of the income's accounts is neither flagged nor scored
        gated = income_gated(features.loc[mask], event, cfg)
        scored["flagged"] = np.asarray(scored["flagged"], dtype=bool) & ~gated
        history = (pd.to_numeric(features.loc[mask, "income_history_days"], errors="coerce").to_numpy(float)
                   if "income_history_days" in features else np.full(int(mask.sum()), np.nan))
        pending = feature_stage.income_pending(features.loc[mask].reset_index(drop=True))
        names[event] = list(scored["columns"])
        width = scored["top_index"].shape[1]
        part = {"customer_id": ids, "event_type": event,
                "probability": np.where(gated, np.nan, np.round(scored["probability"].astype(float), 6)),
                "flagged": scored["flagged"],
                "threshold": np.nan if info["threshold"] is None else float(info["threshold"]),
                "gate_note": pd.Series([gate_note(h, p) if g else None for g, h, p in zip(gated, history, pending)],
                                       dtype=object)}
        for i in range(k):
            part[f"f{i}"] = scored["top_index"][:, i].astype(np.int32) + 1 if i < width else 0   # 1-based, 0: none
            part[f"v{i}"] = scored["top_value"][:, i] if i < width else np.nan
            part[f"c{i}"] = np.round(scored["top_contribution"][:, i], 4) if i < width else np.nan
        parts.append(pd.DataFrame(part))
        hit = scored["flagged"]
        if hit.any():
            chosen = np.asarray(scored["columns"], dtype=object)[scored["top_index"][hit]] if width else None
            flagged_parts.append(pd.DataFrame({
                "customer_id": ids.to_numpy(dtype=object)[hit], "event_type": event,
                "top_features": [list(r) for r in chosen] if width else [[] for _ in range(int(hit.sum()))],
                "corroborated": corroborated(features.loc[mask].reset_index(drop=True)[hit], event, cfg)}))
    if not parts:
        return _empty_rows()
    scored = pd.concat(parts, ignore_index=True)
    flagged = (pd.concat(flagged_parts, ignore_index=True) if flagged_parts
               else pd.DataFrame(columns=["customer_id", "event_type", "top_features", "corroborated"]))
    if prepare_evidence is not None and len(flagged):
        prepare_evidence(sorted(set(flagged["customer_id"].astype(str))))
    postings = evidence_postings(con, flagged, day, cfg)   # an empty frame when nothing is flagged
    scored = scored.merge(flagged[["customer_id", "event_type", "corroborated"]], on=["customer_id", "event_type"],
                          how="left")
    methods = {e: {"method": method_of(model, e), "model_version": row_model_version(model, e),
                   "note": (None if method_of(model, e) != "rule" else
                            f"published by the hand-written rule, which gives no probability: "
                            f"{model.events[e].get('method_reason')}"),
                   "rule": (model.events[e].get("rule") or cfg["events"][e]["rule"])["description"]}
               for e in model.events if e in cfg["events"]}
    return _evidence_frame(scored, postings, cfg, k, methods, names)


def _evidence_frame(scored: pd.DataFrame, postings: pd.DataFrame, cfg: dict[str, Any], k: int,
                    methods: dict[str, dict[str, Any]], names: dict[str, list[str]]) -> pd.DataFrame:
    """The gold rows with their evidence JSON (keys: method ("model" or "rule"), note (why an event on its rule has
    no probability), rule, threshold, top_features, and on a flagged row transaction_ids, transactions and
    corroboration: what a credit offer triggered by the flag needs, and whether it holds), built in one DuckDB
    query. `scored` names its top features by their 1-based position in the event's feature list (`names`); its
    `corroborated` column is read on flagged rows; `methods` gives per event its method, note, rule text and the
    model_version its rows carry."""
    events = [e for e in cfg["events"] if e in methods]
    rules = pd.DataFrame({"event_type": events,
                          "rule_description": [methods[e]["rule"] for e in events],
                          "method": [methods[e]["method"] for e in events],
                          "note": pd.Series([methods[e]["note"] for e in events], dtype=object),
                          "model_version": [methods[e]["model_version"] for e in events],
                          "corroboration_description": [cfg["events"][e]["corroboration"]["description"]
                                                        for e in events],
                          "feature_names": [names.get(e, []) for e in events],
                          "uncited": [uncited_features(cfg, e, names.get(e, [])) or [""] for e in events]})
    shown = int(cfg["evidence_top_features"])   # k may be larger: the top features before the uncited ones go
    if "corroborated" not in scored:
        scored = scored.assign(corroborated=False)
    if "gate_note" not in scored:
        scored = scored.assign(gate_note=pd.Series([None] * len(scored), dtype=object))
    scored = scored.assign(corroborated=scored["corroborated"].astype("boolean").fillna(False).astype(bool))
    postings = postings.assign(booking_date=pd.to_datetime(postings["booking_date"]).dt.strftime("%Y-%m-%d"),
                               amount=pd.to_numeric(postings["amount"]).astype(float).round(2),
                               n=np.arange(len(postings)))

    def finite(column: str) -> str:
        return f"case when {column} is null or isnan({column}) or isinf({column}) then null else round({column}, 4) end"

    features = ", ".join(f"struct_pack(feature := case when s.f{i} > 0 then r.feature_names[s.f{i}] end, "
                         f"value := {finite(f's.v{i}')}, contribution := {finite(f's.c{i}')})" for i in range(k))
    top = (f"list_filter([{features}], lambda x: x.feature is not null "
           f"and not list_contains(r.uncited, x.feature))[1:{shown}]" if k else "[]")
    # the features that raised the score; a row without any positive contribution keeps its k largest ones
    positive = f"list_filter({top}, lambda x: x.contribution > 0)"
    con = duckdb.connect()
    try:
        con.register("le_scored", scored)
        con.register("le_postings", postings[["customer_id", "event_type", "transaction_id", "booking_date", "amount",
                                              "label", "signal", "n"]])
        con.register("le_rules", rules)
        out = con.sql(f"""
            with transactions as (
                select customer_id, event_type,
                    list(transaction_id order by n) as transaction_ids,
                    list(struct_pack(amount := amount, booking_date := booking_date, label := label, signal := signal,
                                     transaction_id := transaction_id) order by n) as transactions
                from le_postings
                group by customer_id, event_type
            ),
            base as (
                select s.customer_id, s.event_type, s.probability, s.flagged, s.threshold, r.model_version,
                    to_json(struct_pack(
                        method := r.method,
                        note := coalesce(cast(s.gate_note as varchar), cast(r.note as varchar)),
                        rule := r.rule_description,
                        threshold := case when isnan(s.threshold) then null else round(s.threshold, 6) end,
                        top_features := case when len({positive}) > 0 then {positive} else {top} end
                    )) as evidence_base,
                    coalesce(t.transaction_ids, []) as transaction_ids,
                    coalesce(t.transactions, []) as transactions,
                    to_json(struct_pack(met := s.corroborated, rule := r.corroboration_description)) as corroboration
                from le_scored as s
                join le_rules as r using (event_type)
                left join transactions as t using (customer_id, event_type)
            )
            select customer_id, event_type, case when isnan(probability) then null else probability end
                    as probability, flagged,
                case when isnan(threshold) then null else threshold end as threshold,
                case when flagged
                    then left(cast(evidence_base as varchar), -1) || ',"transaction_ids":'
                         || cast(to_json(transaction_ids) as varchar) || ',"transactions":'
                         || cast(to_json(transactions) as varchar) || ',"corroboration":'
                         || cast(corroboration as varchar) || '}}'
                    else cast(evidence_base as varchar) end as evidence,
                model_version
            from base
            order by customer_id, event_type""").to_arrow_table().to_pandas()
    finally:
        con.close()
    out["threshold"] = pd.to_numeric(out["threshold"], errors="coerce").astype(float)
    out["probability"] = pd.to_numeric(out["probability"], errors="coerce").astype(float)
    out["flagged"] = out["flagged"].astype(bool)
    return out.reset_index(drop=True)


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(dtype=str), "event_type": pd.Series(dtype=str),
                         "probability": pd.Series(dtype=float), "flagged": pd.Series(dtype=bool),
                         "threshold": pd.Series(dtype=float), "evidence": pd.Series(dtype=str),
                         "model_version": pd.Series(dtype=str)})


def classify_life_events(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task classify_life_events for one shard: read the feature store's life-event features of D (only
    customers with the life_events and personalization consents on D have any) and the promoted model, score them
    (`score_rows`; the postings behind a flag are looked up in silver and the store), write gold `life_events`
    (as_of=D/bucket=N), swapped in whole. Customers without those consents get no row."""
    started = time.perf_counter()
    cfg = settings()
    model = load_model(paths)
    consent = consent_state(paths, day, [bucket])
    consent = consent[consent["life_events"].astype(bool) & consent["personalization"].astype(bool)]
    features = store.read_table(paths, "life_event_features", day, bucket)
    features = add_rule_features(feature_stage.numeric(features.assign(cutoff=pd.Timestamp(day)), KEYS), cfg)
    features = features[features["customer_id"].isin(set(consent["customer_id"]))].reset_index(drop=True)
    con = lake.connect(shared=True)
    try:
        # the postings behind a flag: the inputs of the flagged customers alone, registered once scoring found them
        rows = score_rows(model, con, features, consent, day, cfg, prepare_evidence=lambda flagged:
                          register_evidence_inputs(con, paths, day, bucket, flagged)) if len(features) \
            else _empty_rows()
    finally:
        con.close()
    metrics = {"model_version": model.version,
               "row_model_versions": {e: row_model_version(model, e) for e in model.events if e in cfg["events"]},
               "n_consented": int(len(consent)), "n_scored_customers": int(rows["customer_id"].nunique()),
               "flagged": {e: int(g["flagged"].sum()) for e, g in rows.groupby("event_type")},
               "seconds": round(time.perf_counter() - started, 2)}
    return outputs.write_stage(paths, day, bucket, "life_events", {"life_events": rows}, metrics)


def register_evidence_inputs(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int,
                             customer_ids: Iterable[str]) -> None:
    """What `evidence_postings` reads for the night: the silver postings (postings_in, every load up to D) and the
    feature store's rows and states as of D (day_rows, stream_first, home_counts, customer_state), of the given
    customers only (the night passes the flagged ones: the store's rows are read and merged for them alone)."""
    store.register_reference(con, paths, day, [bucket])
    _customer_table(con, customer_ids)
    store.register_silver_rows(con, paths, day, [bucket], store.silver_loads(paths, day), customers="le_customers")
    store.register_store(con, paths, day, bucket, customers="le_customers")
    _narrow_to_customer_table(con)


def classify_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the DAG maps classify_life_events over the shards instead)."""
    per_shard = [classify_life_events(paths, day, bucket) for bucket in shards()]
    return summarise_shards(paths, day, per_shard)


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    """The night's life-event metrics from the shards' own (runs/D/life_events.json)."""
    flagged: dict[str, int] = {}
    for m in per_shard:
        for event, n in m["flagged"].items():
            flagged[event] = flagged.get(event, 0) + n
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_consented": sum(m["n_consented"] for m in per_shard),
               "n_scored_customers": sum(m["n_scored_customers"] for m in per_shard),
               "rows": sum(outputs.rows_written(m) for m in per_shard), "flagged": dict(sorted(flagged.items())),
               "model_versions": sorted({m["model_version"] for m in per_shard}),
               "row_model_versions": {e: sorted({m.get("row_model_versions", {}).get(e) for m in per_shard} - {None})
                                      for e in sorted({e for m in per_shard
                                                       for e in m.get("row_model_versions", {})})}}
    write_run_metrics(paths, day.isoformat(), "life_events", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Backtest
# ---------------------------------------------------------------------------------------------------------------

def hash_seed(text: str) -> int:
    """A stable seed from a string (Python's hash() changes between processes)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16)


def _precision_recall(y: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    tp = float((flagged & (y == 1)).sum())
    n_flag, n_pos = float(flagged.sum()), float((y == 1).sum())
    return (tp / n_flag if n_flag else float("nan")), (tp / n_pos if n_pos else float("nan"))


def _lead_times(flags: pd.DataFrame, events: pd.DataFrame, event: str, spec: dict[str, Any],
                scored_cutoffs: list[pd.Timestamp]) -> tuple[list[float], int]:
    """Per true event whose label window holds a scored cut-off: event date minus the first cut-off in the window
    at which the flag fires (positive = before the event). Returns (lead days of detected events, n events)."""
    before, after = int(spec["window"]["days_before"]), int(spec["window"]["days_after"])
    lo, hi = min(scored_cutoffs), max(scored_cutoffs)
    mine = events[(events["event_type"] == event)
                  & (events["event_date"] >= lo - pd.Timedelta(days=before))
                  & (events["event_date"] <= hi + pd.Timedelta(days=after))]
    mine = mine[mine["customer_id"].isin(set(flags["customer_id"]))]
    fired = flags[flags["flagged"]][["customer_id", "cutoff"]]
    hits = mine.merge(fired, on="customer_id", how="inner")
    delta = (hits["event_date"] - hits["cutoff"]).dt.days
    hits = hits[(delta >= -after) & (delta <= before)]
    first = hits.groupby(["customer_id", "event_date"])["cutoff"].min().reset_index()
    leads = ((first["event_date"] - first["cutoff"]).dt.days).astype(float).tolist()
    return leads, int(len(mine.drop_duplicates(["customer_id", "event_date"])))


def precision_at_recall(y: np.ndarray, score: np.ndarray, recall: float) -> float:
    """Precision of flagging every row scoring at or above the highest threshold whose recall reaches `recall`."""
    rec, prec = _pr_points(np.asarray(y, dtype=float), np.asarray(score, dtype=float))
    reached = np.flatnonzero(rec >= recall - 1e-12)
    return float(prec[reached[0]]) if len(reached) else float("nan")


def ranking_score(probability: pd.Series, raw: pd.Series) -> np.ndarray:
    """The order the model puts rows in: by calibrated probability, ties broken by the raw score. Isotonic
    calibration is flat beyond its outermost blocks, so many rows share its top value; the raw score still orders
    them, and it is that order an analyst or a campaign works down. Returned as ranks in (0, 1]."""
    p, r = np.asarray(probability, dtype=float), np.asarray(raw, dtype=float)
    order = np.lexsort((r, p))
    ps, rs = p[order], r[order]
    new_run = np.r_[True, (ps[1:] != ps[:-1]) | (rs[1:] != rs[:-1])]  # rows equal in both stay tied
    ranks = np.empty(len(order), dtype=float)
    ranks[order] = np.cumsum(new_run)
    return ranks / max(len(order), 1)


def _pr_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last]
    flagged = (np.arange(len(t)) + 1.0)[last]
    return tp / max(t.sum(), 1), tp / flagged


def backtest_life_events(paths: Paths, output_dir: Path | None = None) -> list[dict[str, Any]]:
    """Model (trained on declared labels, and on the full truth when the simulator's truth exists) vs the hand-written
    rules vs the base rate, on the latest cut-offs with complete labels; writes life_events_backtest.json and
    life_events.html under $SEGONE_HOME/reports/backtest/ (or output_dir). Returns the table's rows."""
    from models import metrics as m
    from models.life_event_rules import rule_fires

    started = time.perf_counter()
    cfg = settings()
    output = Path(output_dir) if output_dir else paths.reports / "backtest"
    first, last = data_range(paths)
    cutoffs = cutoff_grid(first, last, cfg)
    features = build_features(paths, last, cutoffs, cfg=cfg)
    consent = consent_state(paths, last)
    declared = declared_events(paths, last)
    truth = truth_events(paths)
    evaluation_source = "truth" if truth is not None else "declared"
    reference = truth if truth is not None else declared
    n_test = int(cfg["backtest_test_cutoffs"])
    eval_labels = mask_unconsented(make_labels(features, reference, cfg, last), consent, cfg)
    label_sets = {"declared": declared}
    if truth is not None:
        label_sets["truth"] = truth
    train_labels = {source: mask_unconsented(make_labels(features, events, cfg, declared_known_until(last, cfg)
                                                         if source == "declared" else last), consent, cfg)
                    for source, events in label_sets.items()}

    lookalikes = None
    root = paths.truth / "lookalikes"
    if root.exists() and any(root.glob("**/*.parquet")):
        con = lake.connect()
        try:
            lookalikes = con.execute(f"select * from read_parquet('{root}/**/*.parquet')").df()
        finally:
            con.close()
        lookalikes["day"] = pd.to_datetime(lookalikes["day"])

    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    leads_all: dict[str, list[float]] = {}
    windows: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    decisions_made: dict[str, dict[str, Any]] = {}
    for event, spec in cfg["events"].items():
        # per event: the test cut-offs are its latest ones whose label window ends by the last day of data; the
        # models train on the cut-offs up to an embargo before them; flags at every later cut-off (out of sample)
        # count for the lead time
        complete = [pd.Timestamp(c) for c in cutoffs
                    if c + timedelta(days=int(spec["window"]["days_before"])) <= last]
        if len(complete) < n_test + 3:
            note = (f"skipped: {len(complete)} cut-off(s) with complete labels (a {spec['window']['days_before']}-day "
                    f"label window ending by {last}), {n_test + 3} needed")
            log.warning("life-event backtest: %s: %s", event, note)
            skipped[event] = note
            rows.append({"event_type": event, "method": "model", "label_source": "declared",
                         "evaluated_against": evaluation_source, "note": note})
            continue
        test_cutoffs = complete[-n_test:]
        train_rows = (features["cutoff"] <= test_cutoffs[0] - pd.Timedelta(days=int(cfg["embargo_days"]))).to_numpy()
        test_rows = features["cutoff"].isin(test_cutoffs).to_numpy()
        scored_rows = (features["cutoff"] >= test_cutoffs[0]).to_numpy()
        windows[event] = {"test": f"{test_cutoffs[0].date()}..{test_cutoffs[-1].date()}",
                          "train": f"{features.loc[train_rows, 'cutoff'].min().date()}.."
                                   f"{features.loc[train_rows, 'cutoff'].max().date()}"}
        one = {**cfg, "events": {event: spec}}
        models_by_source = {
            source: fit_classifier(features[train_rows].reset_index(drop=True),
                                   labels.loc[train_rows, KEYS + [event]].reset_index(drop=True), one)
            for source, labels in train_labels.items()}
        y_frame = eval_labels.loc[test_rows, KEYS + [event]].dropna()
        y_keys = y_frame.set_index(KEYS).index
        y = y_frame[event].to_numpy(float)
        n_pos_rows = int(y.sum())
        curves[event] = {}
        ok_ids = set(consent.loc[allowed(consent, cfg, event), "customer_id"])
        scored_frame = features[scored_rows & features["customer_id"].isin(ok_ids).to_numpy()].reset_index(drop=True)
        base = {"event_type": event, "evaluated_against": evaluation_source, "n_test_rows": int(len(y)),
                "n_positive_rows": n_pos_rows, "test_cutoffs": windows[event]["test"],
                "training_cutoffs": windows[event]["train"]}

        def add(method: str, source: str, flags_frame: pd.DataFrame, threshold: float | None) -> None:
            in_test = flags_frame.set_index(KEYS).reindex(y_keys)
            s = in_test["score"].to_numpy(float)
            f = in_test["flagged"].fillna(False).to_numpy(bool)
            precision, recall = _precision_recall(y, f)
            leads, n_events = _lead_times(flags_frame, reference, event, spec, sorted(set(flags_frame["cutoff"])))
            row = {**base, "method": method, "label_source": source,
                   "pr_auc": m.pr_auc(y, s) if n_pos_rows else float("nan"),
                   "precision": precision, "recall": recall, "threshold": threshold,
                   "flag_rate": float(f.mean()) if len(f) else float("nan"),
                   "median_lead_days": float(np.median(leads)) if leads else float("nan"),
                   "share_events_detected": len(leads) / n_events if n_events else float("nan"),
                   "n_true_events": n_events}
            if lookalikes is not None and {"customer_id", "lookalike_of", "day"} <= set(lookalikes.columns):
                look = lookalikes[lookalikes["lookalike_of"].astype(str) == event]
                hits = flags_frame.merge(look[["customer_id", "day"]], on="customer_id", how="inner")
                delta = (hits["cutoff"] - hits["day"]).dt.days
                hits = hits[(delta >= 0) & (delta <= 30)]      # the cut-offs in the month after the look-alike
                row["lookalike_flag_rate"] = float(hits["flagged"].mean()) if len(hits) else float("nan")
                row["n_lookalike_rows"] = int(len(hits))
            row["_scores"] = s
            rows.append(row)
            if n_pos_rows and method != "base_rate":
                keep = ~np.isnan(s)
                curves[event][f"{method} ({source})"] = _pr_points(y[keep], s[keep])
            if method == "model" and source == "declared":
                leads_all[event] = leads

        for source, model in models_by_source.items():
            scored = model.predict(scored_frame, [event])
            add("model", source, pd.DataFrame({"customer_id": scored["customer_id"],
                                               "cutoff": pd.to_datetime(scored["cutoff"]),
                                               "score": ranking_score(scored["probability"], scored["raw_score"]),
                                               "flagged": scored["flagged"]}),
                model.events[event]["threshold"])
        # what the night would publish: the declared-label model, or its rule where training chose the rule
        declared_model = models_by_source["declared"]
        decisions_made[event] = {"method": method_of(declared_model, event),
                                 "reason": declared_model.events[event].get("method_reason")}
        if method_of(declared_model, event) == "rule":
            fired_pub = rule_fires(scored_frame, spec["rule"])
            published = pd.DataFrame({"customer_id": scored_frame["customer_id"], "cutoff": scored_frame["cutoff"],
                                      "score": fired_pub.astype(float), "flagged": fired_pub})
        else:
            scored = declared_model.predict(scored_frame, [event])
            published = pd.DataFrame({"customer_id": scored["customer_id"], "cutoff": pd.to_datetime(scored["cutoff"]),
                                      "score": ranking_score(scored["probability"], scored["raw_score"]),
                                      "flagged": scored["flagged"]})
        # the night withholds an income event on too short a history of the income's accounts (income_gated)
        published["flagged"] = published["flagged"].to_numpy(bool) & ~income_gated(scored_frame, event, cfg)
        add("published", method_of(declared_model, event), published, None)
        fired = rule_fires(scored_frame, spec["rule"])
        add("rule", "none", pd.DataFrame({"customer_id": scored_frame["customer_id"], "cutoff": scored_frame["cutoff"],
                                          "score": fired.astype(float), "flagged": fired}), None)
        # base rate: a constant score (PR AUC = prevalence), and flags drawn at random at the training base rate
        prevalence = float(np.nanmean(train_labels["declared"].loc[train_rows, event].to_numpy(float)))
        draw = np.random.default_rng(abs(hash_seed(event))).random(len(scored_frame)) < prevalence
        add("base_rate", "declared", pd.DataFrame({"customer_id": scored_frame["customer_id"],
                                                   "cutoff": scored_frame["cutoff"],
                                                   "score": np.full(len(scored_frame), prevalence),
                                                   "flagged": draw}), prevalence)
        # the models' precision where they reach the rule's recall: the threshold-free comparison of the two flags
        mine = [r for r in rows if r["event_type"] == event and "_scores" in r]
        rule_recall = next((r["recall"] for r in mine if r["method"] == "rule"), float("nan"))
        for r in mine:
            scores = r.pop("_scores")
            r["precision_at_rule_recall"] = (precision_at_recall(y, np.nan_to_num(scores, nan=-np.inf), rule_recall)
                                             if n_pos_rows and np.isfinite(rule_recall) else float("nan"))

    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    output.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": paths.home.name, "evaluated_against": evaluation_source,
            "label_note": ("evaluated against the simulator's full truth" if truth is not None else
                           "no simulator truth: evaluated against the declared labels, which miss undeclared events"),
            "cutoffs": [c.isoformat() for c in cutoffs], "windows": windows, "skipped": skipped,
            "decisions": decisions_made, "seconds": round(time.perf_counter() - started, 1)}
    (output / "life_events_backtest.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    _report(rows, curves, leads_all, meta, output / "life_events.html")
    return rows


def _report(rows: list[dict[str, Any]], curves: dict, leads: dict[str, list[float]], meta: dict[str, Any],
            path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipelines.html_report import bar_figure, render_report

    table = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys([*REPORT_COLUMNS, *pd.DataFrame(rows).columns])))
    evaluated = table[table["note"].isna()] if "note" in table else table
    shown = evaluated[[c for c in REPORT_COLUMNS if c != "note"]]
    bars = evaluated.assign(series=evaluated["method"] + " (" + evaluated["label_source"] + ")")[
        ["event_type", "series", "pr_auc"]]
    figures = [bar_figure(bars.fillna({"pr_auc": 0.0}), "event_type", "pr_auc", "series", "PR AUC per event")] \
        if len(bars) else []
    events = list(curves)
    fig = Figure(figsize=(11, 2.8 * max((len(events) + 3) // 4, 1)), dpi=90)
    FigureCanvasAgg(fig)
    for i, event in enumerate(events):
        ax = fig.add_subplot((len(events) + 3) // 4, 4, i + 1)
        for name, (recall, precision) in curves[event].items():
            if len(recall) > 1:
                ax.plot(recall, precision, label=name, linewidth=1)
            else:
                ax.scatter(recall, precision, label=name, s=12)
        ax.set_title(event, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    if events:
        figures.append(fig)
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = [v for vs in leads.values() for v in vs]
    if values:
        ax.hist(values, bins=20, color="#4a7")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_xlabel("lead time in days (event date minus first flagged cut-off; positive = before)")
    ax.set_ylabel("events")
    ax.set_title("Lead time of the model's flags (trained on declared labels)")
    fig.tight_layout()
    figures.append(fig)
    sections = [{"heading": "Method", "text": (
        f"{meta['label_note']}. Per event, the test cut-offs are its latest cut-offs whose label window is "
        "complete (see the table); the models train on the cut-offs up to an embargo before them. "
        "model = LightGBM per event, calibrated, "
        "threshold at the target precision on its validation cut-offs; label_source says which labels it was "
        "trained on (declared: what the bank has; truth: the simulator's full truth, showing what the partial "
        "labels cost). rule = the hand-written rule of config/life_events.yaml. base_rate = a constant score "
        "(its PR AUC is the prevalence). Lead time = event date minus the first cut-off at which the flag fires.")},
        {"heading": "Results", "table": shown, "figures": figures}]
    if meta.get("skipped"):
        sections.append({"heading": "Events not evaluated", "text": "Too short a history for these events: "
                         + "; ".join(f"{event}: {note}" for event, note in meta["skipped"].items())
                         + ". The night publishes them by their rule until there is enough history."})
    if meta.get("decisions"):
        sections.append({"heading": "What the night publishes (rows 'published')", "text": " ".join(
            f"{event}: {d['method']} ({d['reason']})." for event, d in meta["decisions"].items())})
    return render_report("Life-event detection backtest", sections, path)


REPORT_COLUMNS = ["event_type", "method", "label_source", "pr_auc", "precision", "recall", "precision_at_rule_recall",
                  "threshold", "flag_rate", "median_lead_days", "share_events_detected", "n_true_events",
                  "lookalike_flag_rate", "note"]


def backtest_life_events_command(paths: Paths, output_dir: Path | None = None) -> str:
    """`segone backtest life-events`: run it and print a short table (PR AUC per event and method), naming the
    events that could not be evaluated and why."""
    rows = backtest_life_events(paths, output_dir)
    output = Path(output_dir) if output_dir else paths.reports / "backtest"
    table = pd.DataFrame(rows).reindex(columns=REPORT_COLUMNS)
    evaluated = table[table["note"].isna()]
    lines = [f"life-event backtest of {paths.home.name}:"]
    if len(evaluated):
        wide = evaluated.assign(series=evaluated["method"] + " (" + evaluated["label_source"] + ")").pivot_table(
            index="event_type", columns="series", values="pr_auc", aggfunc="first")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            lines.append("PR AUC on the test cut-offs:\n" + wide.to_string(float_format=lambda v: f"{v:.3f}"))
    else:
        lines.append("no event could be evaluated")
    skipped = table[table["note"].notna()]
    for row in skipped.itertuples(index=False):
        lines.append(f"  {row.event_type}: {row.note}")
    lines.append(f"written: {output / 'life_events_backtest.json'}\nreport:  {output / 'life_events.html'}")
    return "\n".join(lines)
