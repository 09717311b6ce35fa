"""Stage 4, cash-shortfall forecast: features -> engine -> gold `cash_forecast`, per customer shard.

Also the training of the global engine (`segone train`) and the inputs the backtest shares with it. The engines live
in models/ and only see DataFrames; this module knows the lake, the registry and the config.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import date, timedelta
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pipelines import features as feature_stage
from pipelines import lake, registry
from pipelines.config import Paths
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILY = "cash_forecast"
ENGINE = "global"


def settings() -> dict[str, Any]:
    return feature_stage.forecast_settings()


def horizons() -> tuple[int, ...]:
    return tuple(int(h) for h in settings()["horizons"])


# ---------------------------------------------------------------------------------------------------------------
# Features with the baseline's projection attached: what the global engine is trained on and scores
# ---------------------------------------------------------------------------------------------------------------

def model_inputs(panel: feature_stage.Panel) -> pd.DataFrame:
    """The customer features plus the baseline projection per horizon (projected recurring net flow, projected
    minimum, baseline probability): the global engine learns where the rules engine is wrong."""
    from models.baseline_engine import baseline_features

    extra = baseline_features(panel.features, projected_streams(panel.streams), horizons())
    return panel.features.merge(extra, on=["customer_id", "cutoff"], how="left", validate="one_to_one")


def projected_streams(streams: pd.DataFrame) -> pd.DataFrame:
    """The streams the baseline projects onto the cash position: every stream except an own-account transfer seen
    away from the cash position (the savings side of a transfer from current to savings, the credit on a loan
    account): only its cash-position side moves the position."""
    if streams.empty or "is_own_transfer" not in streams:
        return streams
    keep = ~streams["is_own_transfer"].astype(bool) | streams["on_cash_position"].astype("boolean").fillna(False)
    return streams[keep.to_numpy(bool)].reset_index(drop=True)


def known_payments(panel: feature_stage.Panel, inputs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per customer and cut-off of `inputs` (default: the whole panel): the first known payment the balance cannot
    meet and the lowest balance the known flows reach (models.baseline_engine.known_payment_shortfall)."""
    from models.baseline_engine import known_payment_shortfall

    features = panel.features
    if inputs is not None:
        features = features.merge(inputs[["customer_id", "cutoff"]], on=["customer_id", "cutoff"], how="inner")
    return known_payment_shortfall(features, projected_streams(panel.streams), horizons())


def predict(engine, inputs: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """The engine's forecast made to agree with the payments already known to be due (`known`, from
    `known_payments`): the expected shortfall never comes after the first known payment the balance cannot meet,
    and such a payment due within `known_payments.within_days` gives a probability of at least
    `known_payments.min_p_shortfall` at every horizon (models.contract.bound_by_known_payments). What the night
    publishes, the training's held-out check and the backtest all score this."""
    from models.contract import bound_by_known_payments

    rule = settings()["known_payments"]
    return bound_by_known_payments(engine.predict(inputs), known, float(rule["min_p_shortfall"]),
                                   int(rule["within_days"]))


def build_panel(paths: Paths, as_of: date, cutoffs: Iterable[date], buckets: Iterable[int] | None = None,
                with_labels: bool = False, series_until: date | None = None,
                series_days: int = feature_stage.SERIES_DAYS) -> feature_stage.Panel:
    con = lake.connect()
    try:
        feature_stage.register_silver(con, paths, as_of, buckets)
        return feature_stage.build_panel(con, cutoffs, horizons(), with_labels=with_labels,
                                         series_until=series_until, series_days=series_days)
    finally:
        con.close()


def data_end(paths: Paths) -> date:
    """The last day the silver balances and postings reach: the end of what can be learned from."""
    con = lake.connect()
    try:
        ends = []
        for table, column in (("balances", "as_of"), ("transactions", "booking_date")):
            scan = lake.scan_sql(paths, "silver", table)
            if scan is not None:
                ends.append(con.execute(f"select max({column}) from {scan}").fetchall()[0][0])
        ends = [e for e in ends if e is not None]
        if not ends:
            raise SegoneError("the silver lake holds no balances or postings: run `segone load-history` first")
        start = []
        for table, column in (("balances", "as_of"), ("transactions", "booking_date")):
            scan = lake.scan_sql(paths, "silver", table)
            if scan is not None:
                start.append(con.execute(f"select min({column}) from {scan}").fetchall()[0][0])
        return max(ends)
    finally:
        con.close()


def data_start(paths: Paths) -> date:
    con = lake.connect()
    try:
        scan = lake.scan_sql(paths, "silver", "balances") or lake.scan_sql(paths, "silver", "transactions")
        column = "as_of" if "balances" in (scan or "") else "booking_date"
        return con.execute(f"select min({column}) from {scan}").fetchall()[0][0]
    finally:
        con.close()


def training_cutoffs(first_day: date, last_outcome_day: date, step_days: int, min_history_days: int,
                     window_days: int) -> list[date]:
    """Cut-offs `step_days` apart, newest first from the last one whose longest horizon ends by
    `last_outcome_day`, none with less than `min_history_days` of data before it or older than `window_days`."""
    latest = last_outcome_day - timedelta(days=max(horizons()))
    earliest = max(first_day + timedelta(days=min_history_days), latest - timedelta(days=window_days))
    cutoffs = []
    day = latest
    while day >= earliest:
        cutoffs.append(day)
        day -= timedelta(days=step_days)
    return sorted(cutoffs)


def frame_hash(*frames: pd.DataFrame) -> str:
    """The identity of training data: floats to the cent, so the last bits of a parallel double aggregate (a
    standard deviation, a slope) do not make the same data look new."""
    digest = hashlib.sha256()
    for frame in frames:
        rounded = frame.copy()
        floats = rounded.select_dtypes("float").columns
        rounded[floats] = rounded[floats].round(2)
        digest.update(pd.util.hash_pandas_object(rounded, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Training and promotion
# ---------------------------------------------------------------------------------------------------------------

def fit_global(inputs: pd.DataFrame, labels: pd.DataFrame, seed: int = 0):
    from models.global_engine import GlobalEngine, GlobalEngineParams

    params = GlobalEngineParams(seed=seed, calibration_share=float(settings()["calibration_share"]),
                                horizons=horizons())
    return GlobalEngine().fit(inputs, labels, params)


def evaluate(forecast: pd.DataFrame, labels: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Headline metrics per horizon of a forecast against the outcomes (rows without an outcome are left out)."""
    from models import metrics

    joined = forecast.merge(labels, on=["customer_id", "cutoff", "horizon_days"], suffixes=("", "_true"))
    out: dict[str, dict[str, float]] = {}
    for horizon, rows in joined.groupby("horizon_days"):
        y = rows["is_shortfall"].astype(int).to_numpy()
        out[str(int(horizon))] = {
            "n_rows": int(len(rows)),
            "shortfall_rate": float(y.mean()) if len(y) else float("nan"),
            "roc_auc": metrics.roc_auc(y, rows["p_shortfall"]),
            "pr_auc": metrics.pr_auc(y, rows["p_shortfall"]),
            "brier": metrics.brier(y, rows["p_shortfall"]),
            "calibration_error": metrics.calibration_error(y, rows["p_shortfall"]),
            "coverage_p10_p90": metrics.coverage(rows["min_balance"], rows["min_balance_p10"],
                                                 rows["min_balance_p90"]),
        }
    return out


def train(paths: Paths, as_of: date | None = None, seed: int = 0) -> dict[str, Any]:
    """Train the global engine on a rolling window of cut-offs ending at `as_of` (default: the data's last day),
    check it on the latest cut-off held out, save it to the registry and promote it when it is at least as good as
    the promoted one on that held-out cut-off (Brier score at 30 days)."""
    started = time.perf_counter()
    end = as_of or data_end(paths)
    training = settings()["training"]
    cutoffs = training_cutoffs(data_start(paths), end, int(training["cutoff_step_days"]),
                               int(training["min_history_days"]), int(training["window_days"]))
    if len(cutoffs) < 2:
        raise SegoneError(
            f"not enough history to train: the data runs from {data_start(paths)} to {end}, and training needs "
            f"{training['min_history_days']} days of history plus {max(horizons())} days of outcomes at two "
            f"cut-offs at least ({training['cutoff_step_days']} days apart)")
    panel = build_panel(paths, end, cutoffs, with_labels=True, series_until=end)
    inputs = model_inputs(panel)
    labels = panel.labels
    holdout = pd.Timestamp(cutoffs[-1])
    fit_rows = inputs["cutoff"] < holdout
    if not fit_rows.any():
        raise SegoneError("not enough cut-offs before the held-out one to train on")
    engine = fit_global(inputs[fit_rows].reset_index(drop=True),
                        labels[labels["cutoff"] < holdout].reset_index(drop=True), seed)
    held_out_inputs = inputs[~fit_rows].reset_index(drop=True)
    held_out_labels = labels[labels["cutoff"] == holdout]
    held_out_known = known_payments(panel, held_out_inputs)
    validation = evaluate(predict(engine, held_out_inputs, held_out_known), held_out_labels)
    data_hash = frame_hash(inputs, labels)
    version = f"{ENGINE}-{end.isoformat()}-{data_hash[:10]}"
    metadata = {
        "engine": ENGINE,
        "trained_for": end.isoformat(),
        "training_window": {"first_cutoff": cutoffs[0].isoformat(), "last_cutoff": cutoffs[-2].isoformat(),
                            "n_cutoffs": len(cutoffs) - 1, "held_out_cutoff": cutoffs[-1].isoformat()},
        "features": engine.feature_names,
        "n_rows": int(fit_rows.sum()),
        "n_customers": int(inputs["customer_id"].nunique()),
        "metrics_held_out": validation,
        "data_hash": data_hash,
        "seed": seed,
        "notes": engine.notes,
    }
    registry.save_version(paths, FAMILY, version, engine.save, metadata)
    decision = _promotion(paths, version, engine, held_out_inputs, held_out_known, held_out_labels, validation)
    metrics = {"family": FAMILY, "version": version, "promoted": decision["promoted"], "reason": decision["reason"],
               "held_out": validation, "n_rows": metadata["n_rows"], "n_customers": metadata["n_customers"],
               "seconds": round(time.perf_counter() - started, 1)}
    write_run_metrics(paths, end.isoformat(), "train_cash_forecast", metrics)
    return metrics


def _promotion(paths: Paths, version: str, engine, held_out_inputs: pd.DataFrame, held_out_known: pd.DataFrame,
               held_out_labels: pd.DataFrame, validation: dict[str, dict[str, float]]) -> dict[str, Any]:
    current = registry.promoted_version(paths, FAMILY)
    candidate_brier = validation.get("30", {}).get("brier", float("nan"))
    if current is None or current == version:
        reason = "first model of its family" if current is None else "same data and settings as the promoted one"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason}
    try:
        champion = load_engine(paths, version=current)
        champion_brier = evaluate(predict(champion, held_out_inputs, held_out_known),
                                  held_out_labels)["30"]["brier"]
    except Exception as error:  # an unreadable or incompatible champion cannot defend its place
        reason = f"the promoted model {current} cannot score today's features ({error})"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason}
    if not candidate_brier > champion_brier:
        reason = f"Brier at 30 days {candidate_brier:.4f} <= {champion_brier:.4f} of {current}"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason}
    return {"promoted": False,
            "reason": f"Brier at 30 days {candidate_brier:.4f} worse than {champion_brier:.4f} of {current}"}


def load_engine(paths: Paths, version: str | None = None):
    """The promoted global engine (or a named version), refusing a missing or unreadable one clearly."""
    from models.global_engine import GlobalEngine, IncompatibleModelError

    if version is None:
        directory, metadata = registry.promoted(paths, FAMILY)
        version = metadata["version"]
    else:
        directory = registry.family_dir(paths, FAMILY) / version
    try:
        engine = GlobalEngine.load(directory)
    except (IncompatibleModelError, FileNotFoundError, KeyError, ValueError) as error:
        raise SegoneError(f"the {FAMILY} model {version} cannot be loaded ({error}): retrain with `segone train`") \
            from error
    engine.version = version
    engine.attributors = {}
    return engine


# ---------------------------------------------------------------------------------------------------------------
# The nightly stage: one shard
# ---------------------------------------------------------------------------------------------------------------

def shards() -> list[int]:
    """The units the nightly forecast maps over: customer buckets (a few per task when there are many)."""
    return list(range(lake.n_buckets()))


def confidence(features: pd.DataFrame) -> np.ndarray:
    rules = settings()["confidence"]
    history = features["history_days"].to_numpy(float)
    regular = features["has_regular_income"].to_numpy(float) > 0
    regularity = features["income_regularity"].to_numpy(float)
    reported = features["has_reported_balance"].to_numpy(float) > 0
    low = (history < rules["low_history_days"]) | ~regular
    medium = (history < rules["medium_history_days"]) | (regularity < 0.9) | ~reported
    return np.where(low, "low", np.where(medium, "medium", "high"))


def safe_to_save(forecast_30: pd.DataFrame) -> np.ndarray:
    """What can move to savings today with the 30-day shortfall risk staying at or below the configured level: the
    30-day minimum balance at that quantile (P10), rounded down to the step; zero when the risk is already higher."""
    rule = settings()["safe_to_save"]
    step = float(rule["step"])
    amount = np.floor(np.maximum(forecast_30["min_balance_p10"].to_numpy(float), 0.0) / step) * step
    return np.where(forecast_30["p_shortfall"].to_numpy(float) > float(rule["max_p_shortfall"]), 0.0, amount)


def drivers(engine, inputs: pd.DataFrame, forecast: pd.DataFrame, threshold: float) -> pd.Series:
    """Plain-language reasons per forecast row: the top features behind a risky forecast (p_shortfall at or above
    `threshold`) by path attribution on that horizon's classifier (models/attribution.py), in the words of
    config/forecast.yaml, after the known payment the balance cannot meet when there is one within the horizon
    (`forecast` columns unmet_day, unmet_amount, unmet_payments: `known_payment_driver`); a forecast below the
    threshold says there is no elevated risk."""
    from models.attribution import PathAttributor

    phrases = settings()["drivers"]
    out = pd.Series("no elevated risk of a shortfall", index=forecast.index, dtype=object)
    position = pd.Series(np.arange(len(inputs)), index=pd.MultiIndex.from_arrays(
        [inputs["customer_id"], pd.to_datetime(inputs["cutoff"])]))
    for horizon, rows in forecast.groupby("horizon_days"):
        risky = rows[rows["p_shortfall"].to_numpy(float) >= threshold]
        if risky.empty:
            continue
        at = position.loc[pd.MultiIndex.from_arrays([risky["customer_id"], pd.to_datetime(risky["cutoff"])])]
        X = inputs.iloc[at.to_numpy()][engine.feature_names].to_numpy(dtype=float)
        attributor = engine.attributors.setdefault(int(horizon), PathAttributor(engine.classifiers[int(horizon)]))
        texts = []
        payments = known_payment_driver(risky)
        for first, names in zip(payments, attributor.top_features(X, engine.feature_names, k=3)):
            words = list(dict.fromkeys(phrases[name] for name in names if name in phrases))
            words = [first, *words] if first else (words or [phrases["default"]])
            texts.append("; ".join(words))
        out.loc[risky.index] = texts
    return out


def known_payment_driver(forecast: pd.DataFrame) -> list[str | None]:
    """Per forecast row, the known payment the balance cannot meet within its horizon, in words (None when there is
    none): "a regular payment of £1,050.00 due around 01 July 2026 is more than your balance will be by then"."""
    if "unmet_day" not in forecast:
        return [None] * len(forecast)
    out: list[str | None] = []
    for cutoff, day, amount, count in zip(pd.to_datetime(forecast["cutoff"]), forecast["unmet_day"],
                                          forecast["unmet_amount"], forecast["unmet_payments"]):
        if not (day == day and amount == amount):
            out.append(None)
            continue
        when = (cutoff + pd.Timedelta(days=int(day))).strftime("%d %B %Y")
        what = (f"a regular payment of £{amount:,.2f} due around {when} is" if int(count) <= 1 else
                f"regular payments of £{amount:,.2f} due around {when} are")
        out.append(f"{what} more than your balance will be by then")
    return out


def cash_forecast_rows(engine, panel: feature_stage.Panel, as_of: date,
                       inputs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gold `cash_forecast` rows for every customer of the panel at cut-off `as_of` (`inputs`: the model inputs
    when already made)."""
    inputs = model_inputs(panel) if inputs is None else inputs
    known = known_payments(panel, inputs)
    forecast = predict(engine, inputs, known).reset_index(drop=True)
    payments = known[["customer_id", "cutoff", "unmet_amount", "unmet_payments"]]
    forecast = forecast.merge(payments, on=["customer_id", "cutoff"], how="left", validate="many_to_one")
    unmet = forecast["unmet_day"].notna()
    forecast["unmet_amount"] = forecast["unmet_amount"].where(unmet)
    features = panel.features.set_index("customer_id")
    by_customer = features.loc[forecast["customer_id"]]
    threshold = float(settings().get("driver_threshold", 0.2))
    forecast_30 = forecast[forecast["horizon_days"] == min(horizons())].set_index("customer_id")
    saving = pd.Series(safe_to_save(forecast_30), index=forecast_30.index)
    likely = forecast["p_shortfall"].to_numpy(float) >= 0.5
    days = forecast["days_to_shortfall"].to_numpy(float)
    expected = [as_of + timedelta(days=int(round(d))) if ok and d == d else None for d, ok in zip(days, likely)]
    rows = pd.DataFrame({
        "customer_id": forecast["customer_id"],
        "horizon_days": forecast["horizon_days"].astype("int32"),
        "p_shortfall": forecast["p_shortfall"].round(6),
        "min_balance_p10": forecast["min_balance_p10"].round(2),
        "min_balance_p50": forecast["min_balance_p50"].round(2),
        "min_balance_p90": forecast["min_balance_p90"].round(2),
        "expected_shortfall_date": pd.to_datetime(pd.Series(expected, dtype=object)).dt.date,
        "safe_to_save": saving.loc[forecast["customer_id"]].to_numpy(),
        "confidence": confidence(by_customer.reset_index()),
        "drivers": drivers(engine, inputs, forecast, threshold).to_numpy(),
        "model_version": engine.version,
    })
    return rows


def forecast_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Forecast every customer of one bucket as of D with the promoted engine; write gold cash_forecast,
    recurring_streams and balance_reconciliation for that bucket (as_of=D/bucket=N), each swapped in whole."""
    started = time.perf_counter()
    from models.global_engine import IncompatibleModelError

    engine = load_engine(paths)
    panel = build_panel(paths, day, [day], buckets=[bucket])
    try:
        rows = cash_forecast_rows(engine, panel, day) if len(panel.features) else _empty_forecast()
    except IncompatibleModelError as error:
        raise SegoneError(f"the promoted {FAMILY} model {engine.version} does not fit today's features ({error}): "
                          f"retrain with `segone train`") from error
    consent = feature_stage.consent_snapshot(paths, day, [bucket])
    rows = consented_forecast(rows, consent)
    streams = consented_streams(_streams_rows(panel.streams), consent)
    written = {}
    for table, frame in (("cash_forecast", rows), ("recurring_streams", streams),
                         ("balance_reconciliation", panel.reconciliation)):
        final = lake.partition_path(paths, "gold", table, as_of=day.isoformat(), bucket=str(bucket))
        written[table] = lake.write_frame(frame, final, paths)
    n_customers = _customers_in_bucket(paths, day, bucket)
    metrics = {
        "bucket": bucket, "as_of": day.isoformat(), "model_version": engine.version,
        "n_customers": n_customers, "n_forecast": int(rows["customer_id"].nunique()) if len(rows) else 0,
        "n_without_cash_position": n_customers - (int(rows["customer_id"].nunique()) if len(rows) else 0),
        "n_protective_only": int(rows.loc[rows["safe_to_save"].isna(), "customer_id"].nunique()) if len(rows) else 0,
        "rows": written, "seconds": round(time.perf_counter() - started, 2),
    }
    write_run_metrics(paths, day.isoformat(), f"forecast_cash_shortfall_bucket_{bucket}", metrics)
    return metrics


# What the gold forecast holds per consent (DESIGN principle 2; docs/forecasting.md, "Consent"): with
# `personalization`, everything; without it but with service alerts, only what a shortfall warning needs (the
# probability, the expected date, the confidence, the drivers and the model version; no projected balances, no
# safe-to-save); with neither, nothing.
INSIGHT_COLUMNS = ("min_balance_p10", "min_balance_p50", "min_balance_p90", "safe_to_save")


def _allowed(consent: pd.DataFrame, customer_ids: pd.Series, purpose: str, default: bool) -> np.ndarray:
    column = f"is_{purpose}_allowed"
    if column not in consent or consent.empty:
        return np.full(len(customer_ids), default)
    flags = consent.set_index(consent["customer_id"].astype(str))[column].astype("boolean").fillna(default)
    return flags.reindex(customer_ids.astype(str).to_numpy()).fillna(default).to_numpy(bool)


def consented_forecast(rows: pd.DataFrame, consent: pd.DataFrame) -> pd.DataFrame:
    """The gold cash_forecast rows each customer's consent on D allows (`consent`: customer_id and the
    is_<purpose>_allowed flags of silver consent_state; a customer without a row has no consent but service alerts)."""
    personal = _allowed(consent, rows["customer_id"], "personalization", False)
    alerts = _allowed(consent, rows["customer_id"], "service_alerts", True)
    out = rows[personal | alerts].copy()
    protective_only = ~personal[personal | alerts]
    for column in INSIGHT_COLUMNS:
        out[column] = out[column].astype("float64").where(~protective_only)
    return out.reset_index(drop=True)


def consented_streams(streams: pd.DataFrame, consent: pd.DataFrame) -> pd.DataFrame:
    """Gold recurring_streams: only for customers whose `personalization` consent holds on D (streams are an
    insight; without that consent they feed the forecast behind a shortfall warning and are never published)."""
    return streams[_allowed(consent, streams["customer_id"], "personalization", False)].reset_index(drop=True)


def _customers_in_bucket(paths: Paths, day: date, bucket: int) -> int:
    con = lake.connect()
    try:
        snapshot = feature_stage._latest_snapshot(paths, "customers", day)
        path = lake.partition_path(paths, "silver", "customers", as_of=snapshot)
        return int(con.execute(f"select count(*) from read_parquet('{path}/**/*.parquet') "
                               f"where bucket = {int(bucket)}").fetchall()[0][0])
    finally:
        con.close()


def _streams_rows(streams: pd.DataFrame) -> pd.DataFrame:
    return streams.drop(columns=["cutoff"]).reset_index(drop=True)


def _empty_forecast() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.Series(dtype=str), "horizon_days": pd.Series(dtype="int32"),
        "p_shortfall": pd.Series(dtype=float), "min_balance_p10": pd.Series(dtype=float),
        "min_balance_p50": pd.Series(dtype=float), "min_balance_p90": pd.Series(dtype=float),
        "expected_shortfall_date": pd.Series(dtype="object"), "safe_to_save": pd.Series(dtype=float),
        "confidence": pd.Series(dtype=str), "drivers": pd.Series(dtype=str), "model_version": pd.Series(dtype=str),
    })


def forecast_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the CLI's `segone forecast`); the DAG maps forecast_shard over the shards instead."""
    per_shard = [forecast_shard(paths, day, bucket) for bucket in shards()]
    return summarise_shards(paths, day, per_shard)


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = {
        "as_of": day.isoformat(),
        "n_shards": len(per_shard),
        "n_customers": sum(m["n_customers"] for m in per_shard),
        "n_forecast": sum(m["n_forecast"] for m in per_shard),
        "n_without_cash_position": sum(m["n_without_cash_position"] for m in per_shard),
        "model_versions": sorted({m["model_version"] for m in per_shard}),
    }
    write_run_metrics(paths, day.isoformat(), "forecast_cash_shortfall", metrics)
    return metrics
