"""Stage 4c, income-drop and large-expense forecasts: the feature store's features of D -> two global engines ->
gold `income_forecast` and `expense_forecast`, per customer shard. Also their training (`segone train`,
`retrain_models`) and the training frames its backtest reads (`segone backtest events`:
pipelines/evaluation/event_backtest.py).

Same approach as the cash-shortfall forecast (pipelines/forecast.py, docs/forecasting.md): one LightGBM per event and
horizon over all customers (models/event_engine.py), the cash forecast's training cut-offs, each horizon learning
from the cut-offs whose outcome window has ended, its latest labelled cut-off held out, blind forward-chaining
calibration. The events (config/event_forecast.yaml):
- income drop: the income of the trailing `income.window_days` falls below (1 - `drop_share`) x the regular income
  of the last 90 days scaled to the window, on some day within the horizon; for customers with a regular income that
  has not already stopped;
- large expense: one payment of at least max(`multiple` x monthly outflow, `min_amount`) that is not part of a
  monthly (or shorter) stream, within the horizon; the monthly outflow is the customer's typical month (the store's
  typical_monthly_outflow: the median month of the last `outflow_months`, so the threshold does not follow the
  season of spending).
Inputs: the store's customer_features and recurring_streams of D (nothing rebuilt) plus what this module derives from
them (`event_inputs`: the thresholds, the quarterly or yearly bills due within each horizon, income-stream shape).
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pipelines import lake, outputs, registry, sql, store, wording
from pipelines import features as feature_stage
from pipelines import forecast
from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

KINDS = ("income", "expense")
FAMILY = {"income": "income_forecast", "expense": "expense_forecast"}
TABLE = FAMILY   # the gold table of each event is named like its model family
STAGE = "forecast_events"
LABEL_SQL = "features_event_labels"


def settings() -> dict[str, Any]:
    return load_config("event_forecast")


def horizons() -> tuple[int, ...]:
    return forecast.horizons()


# ---------------------------------------------------------------------------------------------------------------
# Pure functions: thresholds, model inputs, labels' columns, gold rows
# ---------------------------------------------------------------------------------------------------------------

def baselines(features: pd.DataFrame, cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per customer and cut-off: `income_baseline` (the regular monthly income the trailing window's income is
    compared with: the monthly recurring income of the income streams, else income_90 per month of the history it
    covers; 0 for a customer without a regular income of
    `min_monthly_income` a month, or whose income has already stopped: none within the window, or with under
    `min_history_days` of history on every source, income_history_days: a monthly pay counted twice in 38 days is
    no baseline, nor an income that a source connected lately may be adding to), `monthly_outflow`
    (the customer's typical month, typical_monthly_outflow of sql/features_customer.sql: the median outflow of the
    complete 30-day months of the last `outflow_months`, so a heavy December does not raise it for the months after)
    and `expense_threshold` (max(multiple x monthly outflow, min_amount)). For the income, a history shorter than 90
    days divides income_90 by the days it has (history_days), not by 90."""
    cfg = cfg or settings()
    inc, exp = cfg["income"], cfg["expense"]
    window = float(inc["window_days"])
    # the 90-day sums cover fewer days on a short history: per day of the history they saw
    seen = np.clip(np.nan_to_num(features["history_days"].to_numpy(float), nan=90.0), 1.0, 90.0)
    streams = np.nan_to_num(features["monthly_recurring_income"].to_numpy(float))
    monthly = np.where(streams > 0, streams, features["income_90"].to_numpy(float) / seen * 30.0)
    since = features["days_since_income"].to_numpy(float)
    # the history of every source (income_history_days: an open-banking account connected lately has only its own)
    history = features["history_days"].to_numpy(float)
    if "income_history_days" in features:
        shortest = features["income_history_days"].to_numpy(float)
        history = np.where(np.isnan(shortest), history, shortest)
    eligible = ((monthly >= float(inc["min_monthly_income"])) & np.isfinite(since) & (since < window)
                & (np.nan_to_num(history) >= float(inc["min_history_days"])))
    outflow = np.nan_to_num(features["typical_monthly_outflow"].to_numpy(float))
    return pd.DataFrame({
        "customer_id": features["customer_id"].astype(str).to_numpy(),
        "cutoff": pd.to_datetime(features["cutoff"]).to_numpy(),
        "income_baseline": np.where(eligible, monthly, 0.0).round(2),
        "monthly_outflow": outflow.round(2),
        "expense_threshold": np.maximum(float(exp["multiple"]) * outflow, float(exp["min_amount"])).round(2),
        "history_days": np.nan_to_num(features["history_days"].to_numpy(float)),
    })


def event_inputs(features: pd.DataFrame, streams: pd.DataFrame, cfg: dict[str, Any] | None = None,
                 horizon_days: Iterable[int] | None = None) -> pd.DataFrame:
    """The model inputs: the store's customer features (one row per customer and cut-off) plus what is derived from
    them and from the recurring streams as of the same cut-off:
    - the thresholds of `baselines` (monthly income, monthly outflow, expense threshold);
    - per horizon h, `known_large_due_h`: the largest payment of a quarterly or yearly outgoing stream (cadence
      longer than `short_cadence_days`, not stopped, not an own-account transfer) expected within (cutoff, cutoff+h]
      that reaches the expense threshold (0 when none), and `known_due_h`: the largest such payment whatever its size;
    - income shape: `income_stream_early` (income streams still early in their life), `income_largest_share` (the
      largest income stream's share of the monthly recurring income)."""
    cfg = cfg or settings()
    horizon_days = tuple(horizon_days or horizons())
    out = features.copy()
    out["cutoff"] = pd.to_datetime(out["cutoff"])
    base = baselines(out, cfg)
    out["income_monthly"] = base["income_baseline"].to_numpy()
    out["monthly_outflow"] = base["monthly_outflow"].to_numpy()   # the same as typical_monthly_outflow: one input
    out = out.drop(columns=["typical_monthly_outflow"])
    out["expense_threshold"] = base["expense_threshold"].to_numpy()
    keys = out[["customer_id", "cutoff"]].assign(customer_id=out["customer_id"].astype(str))
    s = streams.copy() if len(streams) else pd.DataFrame(columns=["customer_id", "cutoff", "direction", "cadence_days",
                                                                 "lifecycle", "amount", "next_expected_date",
                                                                 "is_own_transfer"])
    s["customer_id"] = s["customer_id"].astype(str)
    s["cutoff"] = pd.to_datetime(s["cutoff"])
    own = s["is_own_transfer"].astype("boolean").fillna(False).to_numpy(bool) if "is_own_transfer" in s else False
    live = (s["lifecycle"].astype(str) != "stopped").to_numpy(bool) & ~own
    due_days = (pd.to_datetime(s["next_expected_date"]) - s["cutoff"]).dt.days.to_numpy(float)
    amount = s["amount"].astype(float).abs().to_numpy()
    long = live & (s["direction"].astype(str) == "out").to_numpy(bool) & (
        s["cadence_days"].astype(float).to_numpy() > float(cfg["expense"]["short_cadence_days"]))
    s_threshold = s[["customer_id", "cutoff"]].merge(
        base[["customer_id", "cutoff", "expense_threshold"]], on=["customer_id", "cutoff"], how="left"
    )["expense_threshold"].to_numpy(float)
    for h in horizon_days:
        due = long & (due_days > 0) & (due_days <= h)
        for name, rows in ((f"known_due_{h}", due), (f"known_large_due_{h}", due & (amount >= s_threshold))):
            per = (s.loc[rows, ["customer_id", "cutoff"]].assign(v=amount[rows])
                   .groupby(["customer_id", "cutoff"], as_index=False)["v"].max())
            out[name] = keys.merge(per, on=["customer_id", "cutoff"], how="left")["v"].fillna(0.0).to_numpy()
    incoming = live & (s["direction"].astype(str) == "in").to_numpy(bool)
    monthly = amount * 30.0 / np.maximum(s["cadence_days"].astype(float).to_numpy(), 1.0)
    agg = (s.loc[incoming, ["customer_id", "cutoff"]]
           .assign(early=(s.loc[incoming, "lifecycle"].astype(str) == "early").astype(float).to_numpy(),
                   monthly=monthly[incoming])
           .groupby(["customer_id", "cutoff"], as_index=False)
           .agg(income_stream_early=("early", "sum"), largest=("monthly", "max"), total=("monthly", "sum")))
    merged = keys.merge(agg, on=["customer_id", "cutoff"], how="left")
    out["income_stream_early"] = merged["income_stream_early"].fillna(0.0).to_numpy()
    out["income_largest_share"] = (merged["largest"] / merged["total"].where(merged["total"] > 0)).fillna(0.0
                                                                                                          ).to_numpy()
    out = calendar_inputs(out, horizon_days, cfg)
    return feature_stage.numeric(out)


LAST_YEAR_BLOCKS = 3   # sql/features_customer.sql: the 30-day blocks of the same weeks a year before


def calendar_inputs(out: pd.DataFrame, horizon_days: Iterable[int], cfg: dict[str, Any] | None = None
                    ) -> pd.DataFrame:
    """The calendar inputs (config/event_forecast.yaml `calendar`) from the store's last-year blocks (ly_outflow_b,
    ly_largest_b of sql/features_customer.sql, null without a year of history): per horizon h, over the blocks the
    h days of a year before cover, `ly_outflow_ratio_h` (their outflow / h x 30 against today's typical month),
    `ly_largest_ratio_h` (their largest payment against today's expense threshold) and `ly_large_h` (1 when it
    reached it); null where the history does not reach back a year. `target_month`: the month of year of cutoff +
    15 days, when `month_of_year`. The raw block columns are replaced by these."""
    cal = (cfg or settings())["calendar"]
    blocks = [f"ly_{what}_{b}" for what in ("outflow", "largest") for b in range(1, LAST_YEAR_BLOCKS + 1)]
    if not all(c in out for c in blocks):   # features of a store that predates the calendar: no calendar inputs
        return out
    covered = out["has_last_year"].to_numpy(float) > 0
    outflow = np.maximum(out["monthly_outflow"].to_numpy(float), 1.0)
    threshold = out["expense_threshold"].to_numpy(float)
    for h in horizon_days:
        n = min(-(-int(h) // 30), LAST_YEAR_BLOCKS)
        if int(h) > 30 * LAST_YEAR_BLOCKS:
            raise SegoneError(f"the calendar inputs cover {30 * LAST_YEAR_BLOCKS} days, not a {h}-day horizon")
        spent = sum(np.nan_to_num(out[f"ly_outflow_{b}"].to_numpy(float)) for b in range(1, n + 1))
        largest = np.max([np.nan_to_num(out[f"ly_largest_{b}"].to_numpy(float)) for b in range(1, n + 1)], axis=0)
        out[f"ly_outflow_ratio_{h}"] = np.where(covered, spent / (30.0 * n) * 30.0 / outflow, np.nan)
        out[f"ly_largest_ratio_{h}"] = np.where(covered, largest / threshold, np.nan)
        out[f"ly_large_{h}"] = np.where(covered, (largest >= threshold).astype(float), np.nan)
    out = out.drop(columns=blocks)
    out["has_last_year"] = covered.astype(float)
    if cal.get("month_of_year", False):
        out["target_month"] = (pd.to_datetime(out["cutoff"]) + pd.Timedelta(days=15)).dt.month.astype(float)
    return out


def label_frame(labels: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The engine's label columns for one event from the label SQL's rows (income: only customers with a
    baseline, whose is_income_drop is not null)."""
    if kind == "income":
        rows = labels[labels["is_income_drop"].notna()]
        return pd.DataFrame({"customer_id": rows["customer_id"].astype(str), "cutoff": pd.to_datetime(rows["cutoff"]),
                             "horizon_days": rows["horizon_days"].astype(int),
                             "is_event": rows["is_income_drop"].astype(bool),
                             "days_to_event": rows["days_to_income_drop"].astype(float),
                             "event_amount": np.nan}).reset_index(drop=True)
    return pd.DataFrame({"customer_id": labels["customer_id"].astype(str), "cutoff": pd.to_datetime(labels["cutoff"]),
                         "horizon_days": labels["horizon_days"].astype(int),
                         "is_event": labels["is_large_expense"].astype(bool),
                         "days_to_event": labels["days_to_large_expense"].astype(float),
                         "event_amount": labels["large_expense_amount"].astype(float)}).reset_index(drop=True)


def eligible(inputs: pd.DataFrame, kind: str) -> np.ndarray:
    """The rows an event is forecast for: income, customers with an income baseline; expense, everyone."""
    if kind == "income":
        return inputs["income_monthly"].to_numpy(float) > 0
    return np.ones(len(inputs), dtype=bool)


def driver_phrases(kind: str, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """config/event_forecast.yaml `drivers` of one event, checked (pipelines/wording.py)."""
    phrases = (cfg or settings())["drivers"][kind]
    wording.check_phrases(phrases, f"config/event_forecast.yaml drivers.{kind}")
    return phrases


def driver_texts(names: list[list[str]], values: pd.DataFrame, phrases: dict[str, Any]) -> list[str]:
    """Per row, the words of its top features whose conditions hold for that row (config drivers: [words, op,
    bound(, op, bound)], numbers rendered from the bounds), de-duplicated, or the default phrase. Words about the
    regular income (config/forecast.yaml `income_claims`) only where every source's history can show a monthly
    income (features.income_unknown)."""
    unknown = feature_stage.income_unknown(values)
    claims = feature_stage.income_claims()
    texts = []
    for i, row_names in enumerate(names):
        words = []
        for name in row_names:
            spec = phrases.get(name)
            if not isinstance(spec, list) or name not in values or (unknown[i] and name in claims):
                continue
            if wording.holds(spec, values[name].iloc[i:i + 1].to_numpy())[0]:
                words.append(wording.words(name, spec))
        words = list(dict.fromkeys(words))
        texts.append("; ".join(words) if words else phrases["default"])
    return texts


def event_rows(engine, inputs: pd.DataFrame, kind: str, as_of: date, cfg: dict[str, Any] | None = None
               ) -> pd.DataFrame:
    """Gold rows of one event for the customers of `inputs` (one cut-off, D) the event applies to: p_event,
    expected_date (D + the expected days, when p_event >= date_threshold), expected_amount (expense, same rule),
    reference_amount (income: the regular monthly income; expense: the threshold), drivers, model_version."""
    from models.attribution import PathAttributor

    cfg = cfg or settings()
    rows_in = inputs[eligible(inputs, kind)].reset_index(drop=True)
    columns = ["customer_id", "horizon_days", "p_event", "expected_date", "expected_amount", "reference_amount",
               "drivers", "model_version"]
    if rows_in.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    pred = engine.predict(rows_in).reset_index(drop=True)
    position = pd.Series(np.arange(len(rows_in)), index=rows_in["customer_id"].astype(str).to_numpy())
    at = position.loc[pred["customer_id"].astype(str).to_numpy()].to_numpy()
    p = pred["p_event"].to_numpy(float)
    likely = p >= float(cfg["date_threshold"])
    days = first_likely_days(pred, likely)
    expected = [as_of + timedelta(days=int(round(d))) if ok and d == d else None for d, ok in zip(days, likely)]
    amount = pred["event_amount"].to_numpy(float)
    reference = rows_in["income_monthly" if kind == "income" else "expense_threshold"].to_numpy(float)[at]
    texts = np.full(len(pred), "no elevated chance of " + ("an income drop" if kind == "income"
                                                            else "a large one-off expense"), dtype=object)
    phrases = driver_phrases(kind, cfg)
    threshold = float(cfg["driver_threshold"])
    for h in sorted(pred["horizon_days"].unique()):
        sel = np.flatnonzero((pred["horizon_days"].to_numpy() == h) & (p >= threshold))
        if not len(sel):
            continue
        X = rows_in.iloc[at[sel]][engine.feature_names].to_numpy(dtype=float)
        top: list[list[str]] = [[] for _ in sel]
        for g, (booster, mask) in enumerate(engine.classifier_rows(int(h), pred["customer_id"].iloc[sel])):
            if mask.any():
                attributor = engine.attributors.get((int(h), g))
                if attributor is None:   # built once per booster (not per call: setdefault would build it each time)
                    attributor = engine.attributors[(int(h), g)] = PathAttributor(booster)
                for i, names in zip(np.flatnonzero(mask), attributor.top_features(X[mask], engine.feature_names, 3)):
                    top[i] = names
        texts[sel] = driver_texts(top, rows_in.iloc[at[sel]].reset_index(drop=True), phrases)
    return pd.DataFrame({
        "customer_id": pred["customer_id"].astype(str),
        "horizon_days": pred["horizon_days"].astype("int32"),
        "p_event": pred["p_event"].round(6),
        "expected_date": pd.to_datetime(pd.Series(expected, dtype=object)).dt.date,
        # given the event, its largest payment is at least the threshold that defines it
        "expected_amount": (np.where(likely, np.maximum(amount, reference), np.nan).round(2) if kind == "expense"
                            else np.full(len(pred), np.nan)),
        "reference_amount": reference.round(2),
        "drivers": texts,
        "model_version": engine.version,
    })


def first_likely_days(pred: pd.DataFrame, likely: np.ndarray) -> np.ndarray:
    """Per row, the expected days to the event, coherent across a customer's horizons: the date model of horizon h
    is the date *given* the event within h, so a customer likely to see it within 30 days would otherwise be told a
    later date at 90. The expected days at h are the smallest of the likely horizons up to h (rows sorted by
    customer, cut-off and horizon, as the engine returns them); NaN where the event is not likely."""
    days = np.where(likely, pred["days_to_event"].to_numpy(float), np.inf)
    keys = [pred["customer_id"].astype(str), pd.to_datetime(pred["cutoff"])]
    running = pd.Series(days).groupby(keys, sort=False).cummin().to_numpy(float)
    return np.where(likely & np.isfinite(running), running, np.nan)


def consented(rows: pd.DataFrame, consent: pd.DataFrame) -> pd.DataFrame:
    """Only customers whose `personalization` consent holds on D: these forecasts are insights, not the protective
    shortfall warning (docs/forecasting.md)."""
    return rows[forecast._allowed(consent, rows["customer_id"], "personalization", False)].reset_index(drop=True)


def forecast_frame(engines: dict[str, Any], features: pd.DataFrame, streams: pd.DataFrame, consent: pd.DataFrame,
                   day: date) -> dict[str, pd.DataFrame]:
    """The pure step of the stage: the store's features and streams of D, the engines (None: no promoted model)
    and the consent of D -> gold income_forecast and expense_forecast rows."""
    from models.global_engine import IncompatibleModelError

    stamp = pd.Timestamp(day)
    inputs = event_inputs(features.assign(cutoff=stamp), streams.assign(cutoff=stamp)) if len(features) else None
    tables = {}
    for kind in KINDS:
        engine = engines.get(kind)
        if engine is None or inputs is None:
            tables[TABLE[kind]] = pd.DataFrame({"customer_id": pd.Series(dtype=str)})
            continue
        try:
            rows = event_rows(engine, inputs, kind, day)
        except IncompatibleModelError as error:
            raise SegoneError(f"the promoted {FAMILY[kind]} model {engine.version} does not fit today's features "
                              f"({error}): retrain with `segone train`") from error
        tables[TABLE[kind]] = consented(rows, consent)
    return tables


# ---------------------------------------------------------------------------------------------------------------
# The nightly stage
# ---------------------------------------------------------------------------------------------------------------

def load_engine(paths: Paths, kind: str, version: str | None = None):
    """The promoted engine of an event (or a named version); None when none was ever promoted (a history too short
    to train on: the night writes no rows and says so); an unreadable one is refused clearly."""
    from models.event_engine import EventEngine
    from models.global_engine import IncompatibleModelError

    family = FAMILY[kind]
    if version is None:
        version = registry.promoted_version(paths, family)
        if version is None:
            return None

    def load(folder):
        engine = EventEngine.load(folder)
        engine.version = version
        engine.attributors = {}  # built once per booster (drivers), kept with the engine: they only depend on it
        return engine

    try:  # once per process while the version's files stand
        return registry.load_cached(registry.family_dir(paths, family) / version, "event", load)
    except (IncompatibleModelError, FileNotFoundError, KeyError, ValueError) as error:
        raise SegoneError(f"the {family} model {version} cannot be loaded ({error}): retrain with `segone train`"
                          ) from error


def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def forecast_events(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task forecast_events for one shard: the store's features and streams of D, the promoted engines ->
    gold income_forecast and expense_forecast for the bucket (as_of=D/bucket=N), each swapped in whole."""
    started = time.perf_counter()
    engines = {kind: load_engine(paths, kind) for kind in KINDS}
    features = feature_stage.numeric(store.read_table(paths, "customer_features", day, bucket), ["customer_id"])
    streams = store.read_table(paths, "recurring_streams", day, bucket)
    consent = feature_stage.consent_snapshot(paths, day, [bucket])
    tables = forecast_frame(engines, features, streams, consent, day)
    metrics = {"model_versions": {k: getattr(e, "version", None) for k, e in engines.items()},
               "n_customers": int(len(features)),
               **{f"n_{kind}_forecast": int(tables[TABLE[kind]]["customer_id"].nunique()) for kind in KINDS},
               "no_model": [FAMILY[k] for k, e in engines.items() if e is None],
               "seconds": round(time.perf_counter() - started, 2)}
    return outputs.write_stage(paths, day, bucket, STAGE, tables, metrics)


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_customers": sum(m["n_customers"] for m in per_shard),
               **{f"n_{kind}_forecast": sum(m[f"n_{kind}_forecast"] for m in per_shard) for kind in KINDS},
               "model_versions": {kind: sorted({str(m["model_versions"][kind]) for m in per_shard}) for kind in KINDS},
               "no_model": sorted({f for m in per_shard for f in m.get("no_model", [])})}
    write_run_metrics(paths, day.isoformat(), STAGE, metrics)
    return metrics


def forecast_all(paths: Paths, day: date) -> dict[str, Any]:
    return summarise_shards(paths, day, [forecast_events(paths, day, b) for b in shards()])


# ---------------------------------------------------------------------------------------------------------------
# Training data, training and promotion
# ---------------------------------------------------------------------------------------------------------------

def build_training(paths: Paths, as_of: date, cutoffs: Iterable[date], buckets: Iterable[int] | None = None,
                   series_until: date | None = None, with_last_year: bool = False
                   ) -> tuple[pd.DataFrame, pd.DataFrame] | tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(inputs, labels) at the cut-offs from silver as of `as_of`: the features the store computes
    (features.register_silver + build_panel), `event_inputs`, and the outcomes of sql/features_event_labels.sql;
    `with_last_year`: also the backtest's last-year rule (sql/features_event_last_year.sql) as a third frame. Built a
    customer bucket at a time (features.bucket_groups)."""
    cutoffs = list(cutoffs)
    parts = [_training_of(paths, as_of, cutoffs, group, series_until, with_last_year)
             for group in feature_stage.bucket_groups(buckets)]
    keys = [["customer_id", "cutoff"], ["customer_id", "cutoff", "horizon_days"],
            ["customer_id", "cutoff", "horizon_days"]]
    return tuple(feature_stage.concat_sorted([p[i] for p in parts], keys[i]) for i in range(len(parts[0])))


def _training_of(paths: Paths, as_of: date, cutoffs: list[date], buckets: list[int], series_until: date | None,
                 with_last_year: bool) -> tuple[pd.DataFrame, ...]:
    cfg = settings()
    con = lake.connect()
    try:
        feature_stage.register_silver(con, paths, as_of, buckets)
        panel = feature_stage.build_panel(con, cutoffs, horizons(), with_labels=False,
                                          series_until=series_until or as_of)
        inputs = event_inputs(panel.features, panel.streams, cfg)
        base = baselines(panel.features, cfg)
        con.register("event_baselines_frame", base)
        con.execute("create or replace temp table event_baselines as select customer_id, "
                    "cast(cutoff as date) as cutoff, income_baseline, expense_threshold, history_days "
                    "from event_baselines_frame")
        sql.set_variables(con, **label_variables(cfg))
        labels = sql.frame(con, LABEL_SQL, order_by="customer_id, cutoff, horizon_days")
        labels["cutoff"] = pd.to_datetime(labels["cutoff"])
        if not with_last_year:
            return inputs, labels
        sql.set_variables(con, last_year_days=int(cfg["calendar"]["last_year_days"]))
        last_year = sql.frame(con, "features_event_last_year", order_by="customer_id, cutoff, horizon_days")
        last_year["cutoff"] = pd.to_datetime(last_year["cutoff"])
        return inputs, labels, last_year
    finally:
        con.close()


def label_variables(cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SQL variables sql/features_event_labels.sql reads (config/event_forecast.yaml)."""
    cfg = cfg or settings()
    usual = str(cfg["income"].get("usual", "median"))
    if usual not in ("smallest", "median"):
        raise SegoneError(f"config/event_forecast.yaml: income.usual must be 'smallest' or 'median', not {usual!r}")
    return {"income_window_days": int(cfg["income"]["window_days"]),
            "income_drop_share": float(cfg["income"]["drop_share"]), "income_usual_smallest": usual == "smallest",
            "short_cadence_days": int(cfg["expense"]["short_cadence_days"])}


def calibration_settings(kind: str, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """The calibration settings of one event (config/event_forecast.yaml `calibration`): each is one value for both
    events or a mapping with one per event ({income: ..., expense: ...}). isotonic_min_events an integer >= 0,
    follow_level true, false or 'auto', shrink_to_base_rate true or false; anything else is a one-line error."""
    cfg = cfg or settings()
    out = {}
    for name, allowed in (("isotonic_min_events", None), ("follow_level", (True, False, "auto")),
                          ("shrink_to_base_rate", (True, False))):
        value = cfg["calibration"].get(name, False)
        if isinstance(value, dict):
            if set(value) != set(KINDS):
                raise SegoneError(f"config/event_forecast.yaml: calibration.{name} per event needs exactly "
                                  f"{', '.join(KINDS)}, not {sorted(value)}")
            value = value[kind]
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) if allowed is None else any(
            value is a or (isinstance(a, str) and value == a) for a in allowed)
        if not ok:
            what = "an integer >= 0" if allowed is None else " or ".join(str(a).lower() for a in allowed)
            raise SegoneError(f"config/event_forecast.yaml: calibration.{name} must be {what} (or one per event), "
                              f"not {value!r}")
        out[name] = value
    return out


def fit(inputs: pd.DataFrame, labels: pd.DataFrame, kind: str, seed: int = 0):
    """One event engine on `inputs` (the rows the event applies to) and its labels."""
    from models.event_engine import EventEngine, EventEngineParams

    cash = forecast.settings()
    calibration = calibration_settings(kind)
    params = EventEngineParams(seed=seed, calibration_share=float(cash["calibration_share"]),
                               calibration_min_folds=int(cash.get("calibration_min_folds", 3)),
                               calibration_groups=int(cash.get("calibration_groups", 4)),
                               isotonic_min_events=calibration["isotonic_min_events"],
                               follow_level=calibration["follow_level"],
                               shrink_to_base_rate=calibration["shrink_to_base_rate"],
                               with_amount=kind == "expense", horizons=horizons())
    rows = inputs[eligible(inputs, kind)].reset_index(drop=True)
    return EventEngine().fit(rows, labels, params)


def evaluate(pred: pd.DataFrame, labels: pd.DataFrame, p_column: str = "p_event") -> dict[str, dict[str, float]]:
    """ROC AUC, Brier and calibration error per horizon of a forecast against the outcomes it has."""
    from models import metrics

    joined = pred.merge(labels, on=["customer_id", "cutoff", "horizon_days"], suffixes=("", "_true"))
    out = {}
    for h, rows in joined.groupby("horizon_days"):
        y = rows["is_event"].astype(int).to_numpy()
        p = rows[p_column].to_numpy(float)
        both = len(np.unique(y)) == 2
        out[str(int(h))] = {"n_rows": int(len(rows)), "event_rate": float(y.mean()) if len(y) else float("nan"),
                            "roc_auc": metrics.roc_auc(y, p) if both else float("nan"),
                            "brier": metrics.brier(y, p) if len(y) else float("nan"),
                            "calibration_error": metrics.calibration_error(y, p) if len(y) else float("nan")}
    return out


def train(paths: Paths, as_of: date | None = None, seed: int = 0, kinds: Iterable[str] = KINDS
          ) -> dict[str, Any]:
    """Train both event engines on the cash forecast's cut-offs ending at `as_of`; per horizon its latest labelled
    cut-off is held out and the engine compared there with the base rate of the training rows. An engine is
    registered when it could be trained and its mean Brier on the held-out cut-offs is no worse than the base
    rate's; promoted when it is the first or no worse than the promoted one on the same rows. A history too short
    (some horizon with fewer than two labelled cut-offs) trains nothing and says so."""
    end = as_of or forecast.data_end(paths)
    first = forecast.data_start(paths)
    training = forecast.settings()["training"]
    cutoffs = forecast.training_cutoffs(first, end, int(training["cutoff_step_days"]),
                                        int(training["min_history_days"]), int(training["window_days"]))
    per_horizon = forecast.labelled_cutoffs(cutoffs, end)
    short = {h: len(c) for h, c in per_horizon.items() if len(c) < 2}
    if short:
        reason = ("too little history to train the income and expense forecasts: "
                  + ", ".join(f"the {h}-day horizon has {n} labelled cut-off(s)" for h, n in sorted(short.items())))
        out = {FAMILY[k]: {"family": FAMILY[k], "version": None, "promoted": False, "reason": reason} for k in kinds}
        for k in kinds:
            write_run_metrics(paths, end.isoformat(), f"train_{FAMILY[k]}", out[FAMILY[k]])
        return out
    inputs, raw_labels = build_training(paths, end, cutoffs, series_until=end)
    holdout = {h: pd.Timestamp(c[-1]) for h, c in per_horizon.items()}
    return {FAMILY[k]: _train_kind(paths, end, k, inputs, raw_labels, holdout, seed) for k in kinds}


def _train_kind(paths: Paths, end: date, kind: str, inputs: pd.DataFrame, raw_labels: pd.DataFrame,
                holdout: dict[int, pd.Timestamp], seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    family = FAMILY[kind]
    labels = forecast.known_labels(label_frame(raw_labels, kind), end)
    held_at = labels["horizon_days"].map(holdout)
    held_rows = (labels["cutoff"] == held_at).to_numpy()
    fit_labels = labels[(labels["cutoff"] < held_at).to_numpy()]
    fit_inputs = inputs[inputs["cutoff"].isin(fit_labels["cutoff"].unique())]
    held_inputs = inputs[inputs["cutoff"].isin(sorted(set(holdout.values())))]
    held_labels = labels[held_rows]
    data_hash = forecast.frame_hash(inputs, labels)
    version = f"event-{end.isoformat()}-{data_hash[:10]}"
    try:
        engine = fit(fit_inputs.reset_index(drop=True), fit_labels.reset_index(drop=True), kind, seed)
    except ValueError as error:
        result = {"family": family, "version": None, "promoted": False,
                  "reason": f"the {family} engine could not be trained: {error}"}
        write_run_metrics(paths, end.isoformat(), f"train_{family}", result)
        return result
    held_pred = engine.predict(held_inputs[eligible(held_inputs, kind)].reset_index(drop=True))
    held_out = evaluate(held_pred, held_labels)
    base = held_pred.assign(p_event=held_pred["horizon_days"].map(engine.base_rates).astype(float))
    base_rate = evaluate(base, held_labels)
    g, b = forecast.mean_brier(held_out), forecast.mean_brier(base_rate)
    if not g <= b:
        result = {"family": family, "version": None, "promoted": False, "held_out": held_out,
                  "base_rate": base_rate,
                  "reason": f"mean held-out Brier {g:.4f} worse than the training base rate's {b:.4f}: not registered"}
        write_run_metrics(paths, end.isoformat(), f"train_{family}", result)
        return result
    metadata = {"engine": "event", "event": kind, "trained_for": end.isoformat(), "features": engine.feature_names,
                "n_rows": int(len(fit_inputs)), "metrics_held_out": held_out, "base_rate_held_out": base_rate,
                "held_out_cutoffs": {str(h): c.date().isoformat() for h, c in holdout.items()},
                "data_hash": data_hash, "seed": seed, "settings": settings()[kind], "notes": engine.notes}
    registry.save_version(paths, family, version, engine.save, metadata)
    decision = _promotion(paths, kind, version, held_inputs, held_labels, held_out)
    result = {"family": family, "version": version, **decision, "held_out": held_out, "base_rate": base_rate,
              "n_rows": int(len(fit_inputs)), "seconds": round(time.perf_counter() - started, 1)}
    write_run_metrics(paths, end.isoformat(), f"train_{family}", result)
    return result


def _promotion(paths: Paths, kind: str, version: str, held_inputs: pd.DataFrame, held_labels: pd.DataFrame,
               held_out: dict[str, dict[str, float]]) -> dict[str, Any]:
    """As the cash forecast's: the first, the same, or no worse than the champion (mean held-out Brier)."""
    family = FAMILY[kind]
    current = registry.promoted_version(paths, family)
    if current is None or current == version:
        reason = "first model of its family" if current is None else "same data and settings as the promoted one"
        registry.promote(paths, family, version, reason)
        return {"promoted": True, "reason": reason, "champion": current}
    try:
        champion = load_engine(paths, kind, current)
        rows = held_inputs[eligible(held_inputs, kind)].reset_index(drop=True)
        champion_score = forecast.mean_brier(evaluate(champion.predict(rows), held_labels))
    except Exception as error:  # an unreadable or incompatible champion cannot defend its place
        reason = f"the promoted model {current} cannot score today's features ({error})"
        registry.promote(paths, family, version, reason)
        return {"promoted": True, "reason": reason, "champion": current}
    score = forecast.mean_brier(held_out)
    if not score > champion_score:
        reason = f"mean Brier {score:.4f} <= {champion_score:.4f} of {current} on the held-out cut-off"
        registry.promote(paths, family, version, reason)
        return {"promoted": True, "reason": reason, "champion": current, "champion_score": champion_score}
    return {"promoted": False, "champion": current, "champion_score": champion_score,
            "reason": f"mean Brier {score:.4f} worse than {champion_score:.4f} of {current} on the held-out cut-off"}

