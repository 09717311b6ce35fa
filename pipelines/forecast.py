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

from pipelines import wording
from pipelines import features as feature_stage
from pipelines import lake, outputs, registry, store
from pipelines.config import Paths
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILY = "cash_forecast"
ENGINE = "global"
BASELINE = "baseline"


def settings() -> dict[str, Any]:
    return feature_stage.forecast_settings()


def horizons() -> tuple[int, ...]:
    return tuple(int(h) for h in settings()["horizons"])


# ---------------------------------------------------------------------------------------------------------------
# Features with the baseline's projection attached: what the global engine is trained on and scores
# ---------------------------------------------------------------------------------------------------------------

# Store features that are not the cash engine's inputs: the large-expense threshold's typical month
# (pipelines/event_forecast.py), added after the cash engine's backtest; an input of it only once measured there.
# The event forecasts' calendar (config/event_forecast.yaml `calendar`, 2026-12-07): the same weeks a year before.
NOT_CASH_INPUTS = ("typical_monthly_outflow", "has_last_year", "ly_outflow_1", "ly_outflow_2", "ly_outflow_3",
                   "ly_largest_1", "ly_largest_2", "ly_largest_3")


def model_inputs(panel: feature_stage.Panel) -> pd.DataFrame:
    """The customer features plus the baseline projection per horizon (projected recurring net flow, projected
    minimum, baseline probability): the global engine learns where the rules engine is wrong."""
    from models.baseline_engine import baseline_features

    extra = baseline_features(panel.features, projected_streams(panel.streams), horizons())
    features = panel.features.drop(columns=list(NOT_CASH_INPUTS), errors="ignore")
    return features.merge(extra, on=["customer_id", "cutoff"], how="left", validate="one_to_one")


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
    meet and the lowest balance the known flows reach (models.baseline_engine.known_payment_shortfall).

    The known flows are the recurring streams alone; a customer whose history is too short to have seen a monthly
    income as a stream (`features.income_known_days`) and who has been paid on no stream (`unscheduled_income_90`)
    has an income the streams cannot place on a date yet: that the balance cannot meet a bill before it is not
    known, so no payment bounds the row (the engine's own forecast stands)."""
    from models.baseline_engine import known_payment_shortfall

    features = panel.features
    if inputs is not None:
        features = features.merge(inputs[["customer_id", "cutoff"]], on=["customer_id", "cutoff"], how="inner")
    known = known_payment_shortfall(features, projected_streams(panel.streams), horizons())
    unplaced = (feature_stage.income_unknown(features)
                & (np.nan_to_num(features["unscheduled_income_90"].to_numpy(float)) > 0))
    for column in ("unmet_day", "unmet_amount", "unmet_balance"):
        known.loc[unplaced, column] = np.nan
    known.loc[unplaced, "unmet_payments"] = 0
    return known


def predict(engine, inputs: pd.DataFrame, known: pd.DataFrame, streams: pd.DataFrame | None = None
            ) -> pd.DataFrame:
    """The engine's forecast made to agree with the payments already known to be due (`known`, from
    `known_payments`): the expected shortfall never comes after the first known payment the balance cannot meet,
    and such a payment due within `known_payments.within_days` gives a probability of at least
    `known_payments.min_p_shortfall` at every horizon (models.contract.bound_by_known_payments). What the night
    publishes, the training's held-out check and the backtest all score this. The baseline engine (registered where
    the global engine cannot be trained or does worse) projects the recurring `streams` of the same panel."""
    from models.contract import bound_by_known_payments

    rule = settings()["known_payments"]
    if getattr(engine, "engine", None) == BASELINE:
        if streams is None:
            raise ValueError("the baseline engine forecasts from the recurring streams: pass them")
        raw = engine.predict(inputs, projected_streams(streams))
    else:
        raw = engine.predict(inputs)
    return bound_by_known_payments(raw, known, float(rule["min_p_shortfall"]), int(rule["within_days"]))


def build_panel(paths: Paths, as_of: date, cutoffs: Iterable[date], buckets: Iterable[int] | None = None,
                with_labels: bool = False, series_until: date | None = None,
                series_days: int | None = None) -> feature_stage.Panel:
    """Features at the cut-offs from silver as of `as_of`, the way the nightly feature store computes them
    (features.register_silver + build_panel): what training and the backtests read, built a customer bucket at a
    time (features.bucket_groups)."""
    cutoffs = list(cutoffs)
    panels = []
    for group in feature_stage.bucket_groups(buckets):
        con = lake.connect()
        try:
            feature_stage.register_silver(con, paths, as_of, group)
            panels.append(feature_stage.build_panel(con, cutoffs, horizons(), with_labels=with_labels,
                                                    series_until=series_until, series_days=series_days))
        finally:
            con.close()
    return feature_stage.concat_panels(panels)


def build_labels(paths: Paths, as_of: date, cutoffs: Iterable[date], series_until: date | None = None,
                 buckets: Iterable[int] | None = None) -> pd.DataFrame:
    """What happened after each cut-off per customer and horizon (features.build_labels), from silver as of
    `as_of`: the labels training uses, without the features."""
    con = lake.connect()
    try:
        feature_stage.register_silver(con, paths, as_of, buckets)
        return feature_stage.build_labels(con, cutoffs, horizons(), series_until=series_until)
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
    """Cut-offs `step_days` apart through the last one whose longest horizon ends by `last_outcome_day` (the
    anchor), up to the last one whose shortest horizon ends by then, none with less than `min_history_days` of data
    before it or more than `window_days` before the anchor. Each horizon's model learns from the cut-offs whose
    outcome window of that horizon has ended (`labelled_cutoffs`): the 30-day model from cut-offs up to 56 days more
    recent than the 90-day model's (with 14-day steps), the closest to the day it forecasts from."""
    anchor = last_outcome_day - timedelta(days=max(horizons()))   # the newest cut-off every horizon can learn from
    newest = last_outcome_day - timedelta(days=min(horizons()))
    earliest = max(first_day + timedelta(days=min_history_days), anchor - timedelta(days=window_days))
    step = timedelta(days=step_days)
    latest = anchor + step * ((newest - anchor) // step)          # the grid runs through the anchor
    cutoffs = []
    day = latest
    while day >= earliest:
        cutoffs.append(day)
        day -= step
    return sorted(cutoffs)


def labelled_cutoffs(cutoffs: list[date], known_until: date) -> dict[int, list[date]]:
    """Per horizon, the cut-offs whose outcome window of that horizon ends by `known_until`."""
    return {h: [c for c in cutoffs if c + timedelta(days=h) <= known_until] for h in horizons()}


def known_labels(labels: pd.DataFrame, known_until: date | pd.Timestamp) -> pd.DataFrame:
    """The label rows whose outcome window ends by `known_until` (what was known on that day)."""
    ends = pd.to_datetime(labels["cutoff"]) + pd.to_timedelta(labels["horizon_days"].astype("int64"), unit="D")
    return labels[(ends <= pd.Timestamp(known_until)).to_numpy()]


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
                                calibration_min_folds=int(settings().get("calibration_min_folds", 3)),
                                calibration_groups=int(settings().get("calibration_groups", 4)),
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


def mean_brier(metrics: dict[str, dict[str, float]]) -> float:
    """The figure engines are compared on: the Brier score averaged over the horizons (a proper score of the
    probability, every horizon counting the same)."""
    values = [m["brier"] for m in metrics.values() if m.get("brier") == m.get("brier")]
    return float(np.mean(values)) if values else float("nan")


def train(paths: Paths, as_of: date | None = None, seed: int = 0) -> dict[str, Any]:
    """Train the global engine on a rolling window of cut-offs ending at `as_of` (default: the data's last day), each
    horizon on the cut-offs whose outcome of that horizon is known, and check it on each horizon's latest labelled
    cut-off, held out, against the baseline engine on the same rows. The global engine is registered when it could
    be trained and its Brier score there (mean over the horizons) is no worse than the baseline's; otherwise the
    baseline is (DESIGN principle 6: a history too short to train on, or a model that does worse than the baseline,
    never stops the night). The version is promoted when it is at least as good as the promoted one on the held-out
    cut-offs. The decision, its reason and the figures compared are in the metadata and the run metrics."""
    from models.baseline_engine import BaselineEngine

    started = time.perf_counter()
    end = as_of or data_end(paths)
    first = data_start(paths)
    training = settings()["training"]
    cutoffs = training_cutoffs(first, end, int(training["cutoff_step_days"]),
                               int(training["min_history_days"]), int(training["window_days"]))
    held: dict[str, Any] | None = None
    engine, reason, comparison, n_rows, n_customers = None, "", {}, 0, 0
    per_horizon = labelled_cutoffs(cutoffs, end)
    window: dict[str, Any] = {"n_cutoffs": len(cutoffs), "step_days": int(training["cutoff_step_days"]),
                              "by_horizon": {str(h): {"n_cutoffs": max(len(c) - 1, 0),
                                                      "first_cutoff": c[0].isoformat() if len(c) > 1 else None,
                                                      "last_cutoff": c[-2].isoformat() if len(c) > 1 else None,
                                                      "held_out_cutoff": c[-1].isoformat() if c else None}
                                             for h, c in per_horizon.items()}}
    short = {h: len(c) for h, c in per_horizon.items() if len(c) < 2}
    if short:
        reason = (f"too little history to train the global engine: the data runs from {first} to {end}; each "
                  f"horizon needs two cut-offs at least ({training['cutoff_step_days']} days apart, one of them held "
                  f"out) with {training['min_history_days']} days of history before them and their outcome window "
                  f"inside the data, and "
                  + ", ".join(f"the {h}-day horizon has {n}" for h, n in sorted(short.items())))
        data_hash = hashlib.sha256(f"{first}|{end}|{horizons()}|{reason}".encode()).hexdigest()
    else:
        panel = build_panel(paths, end, cutoffs, with_labels=True, series_until=end)
        inputs = model_inputs(panel)
        labels = known_labels(panel.labels, end)
        data_hash = frame_hash(inputs, labels)
        # per horizon, its latest labelled cut-off is held out: the engine is fitted on the earlier ones
        holdout = labels["horizon_days"].map({h: pd.Timestamp(c[-1]) for h, c in per_horizon.items()})
        held_rows = (pd.to_datetime(labels["cutoff"]) == holdout).to_numpy()
        held_cutoffs = sorted({pd.Timestamp(c[-1]) for c in per_horizon.values()})
        at_held = inputs["cutoff"].isin(held_cutoffs).to_numpy()
        held = {"inputs": inputs[at_held].reset_index(drop=True),
                "labels": labels[held_rows].reset_index(drop=True),
                "streams": panel.streams[pd.to_datetime(panel.streams["cutoff"]).isin(held_cutoffs)
                                         ].reset_index(drop=True)}
        held["known"] = known_payments(panel, held["inputs"])
        fit_labels = labels[~held_rows & (pd.to_datetime(labels["cutoff"]) < holdout).to_numpy()]
        fit_inputs = inputs[inputs["cutoff"].isin(pd.to_datetime(fit_labels["cutoff"].unique()))]
        n_rows, n_customers = int(len(fit_inputs)), int(inputs["customer_id"].nunique())
        try:
            engine = fit_global(fit_inputs.reset_index(drop=True), fit_labels.reset_index(drop=True), seed)
        except ValueError as error:   # e.g. a horizon without a labelled row or with a single class
            reason = f"the global engine could not be trained: {error}"
        baseline_metrics = evaluate(predict(BaselineEngine(horizons()), held["inputs"], held["known"],
                                            held["streams"]), held["labels"])
        comparison = {"metric": "mean Brier score over the horizons on the held-out cut-offs (per horizon its latest "
                                "labelled cut-off)",
                      "held_out_cutoffs": {str(h): c[-1].isoformat() for h, c in per_horizon.items()},
                      "n_customers": int(held["labels"]["customer_id"].nunique()),
                      "baseline": {"mean_brier": mean_brier(baseline_metrics), "by_horizon": baseline_metrics}}
        if engine is not None:
            global_metrics = evaluate(predict(engine, held["inputs"], held["known"]), held["labels"])
            comparison[ENGINE] = {"mean_brier": mean_brier(global_metrics), "by_horizon": global_metrics}
            g, b = comparison[ENGINE]["mean_brier"], comparison["baseline"]["mean_brier"]
            if not g <= b:
                reason = (f"the global engine's mean Brier score on the held-out cut-offs {g:.4f} is worse than the "
                          f"baseline's {b:.4f}")
                engine = None
            else:
                reason = f"the global engine's mean Brier score on the held-out cut-offs {g:.4f} <= the baseline's {b:.4f}"
    if engine is None:
        log.warning("cash forecast: the baseline engine is registered: %s", reason)
        engine = BaselineEngine(horizons())
        engine.notes.append(reason)
    kind = getattr(engine, "engine", ENGINE)
    validation = comparison.get(kind, {}).get("by_horizon", {})
    version = f"{kind}-{end.isoformat()}-{data_hash[:10]}"
    metadata = {
        "engine": kind,
        "decision": {"engine": kind, "reason": reason, "comparison": comparison},
        "trained_for": end.isoformat(),
        "training_window": window,
        "features": list(getattr(engine, "feature_names", [])),
        "n_rows": n_rows if kind == ENGINE else 0,
        "n_customers": n_customers,
        "metrics_held_out": validation,
        "data_hash": data_hash,
        "seed": seed,
        "notes": engine.notes,
    }
    registry.save_version(paths, FAMILY, version, engine.save, metadata)
    decision = _promotion(paths, version, engine, held, validation)
    metrics = {"family": FAMILY, "version": version, "engine": kind, "engine_reason": reason,
               "promoted": decision["promoted"], "reason": decision["reason"], "comparison": comparison,
               "challenger_score": decision.get("challenger_score"), "champion_score": decision.get("champion_score"),
               "held_out": validation, "n_rows": metadata["n_rows"], "n_customers": n_customers,
               "seconds": round(time.perf_counter() - started, 1)}
    write_run_metrics(paths, end.isoformat(), "train_cash_forecast", metrics)
    return metrics


def _promotion(paths: Paths, version: str, engine, held: dict[str, Any] | None,
               validation: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Promote `version` when it is the first, the same as the promoted one, or no worse than the promoted one on
    the held-out cut-off (mean Brier over the horizons). Without a held-out cut-off (a history too short to train
    on) a promoted model that still loads keeps its place."""
    current = registry.promoted_version(paths, FAMILY)
    if current is None or current == version:
        reason = "first model of its family" if current is None else "same data and settings as the promoted one"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason}
    try:
        champion = load_engine(paths, version=current)
        if held is None:
            return {"promoted": False, "reason": f"no held-out cut-off to compare with the promoted {current}, "
                                                 f"which still loads: it stays"}
        champion_score = mean_brier(evaluate(predict(champion, held["inputs"], held["known"], held["streams"]),
                                             held["labels"]))
    except Exception as error:  # an unreadable or incompatible champion cannot defend its place
        reason = f"the promoted model {current} cannot score today's features ({error})"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason}
    candidate_score = mean_brier(validation) if validation else float("nan")
    scores = {"challenger_score": candidate_score, "champion_score": champion_score}
    if not candidate_score > champion_score:
        reason = f"mean Brier {candidate_score:.4f} <= {champion_score:.4f} of {current} on the held-out cut-off"
        registry.promote(paths, FAMILY, version, reason)
        return {"promoted": True, "reason": reason, **scores}
    return {"promoted": False,
            "reason": f"mean Brier {candidate_score:.4f} worse than {champion_score:.4f} of {current} on the "
                      f"held-out cut-off", **scores}


def load_engine(paths: Paths, version: str | None = None):
    """The promoted engine (or a named version): the global engine, or the baseline when that is what training
    registered; a missing or unreadable one is refused clearly."""
    from models.baseline_engine import BaselineEngine
    from models.global_engine import GlobalEngine, IncompatibleModelError

    if version is None:
        directory, metadata = registry.promoted(paths, FAMILY)
        version = metadata["version"]
    else:
        directory = registry.family_dir(paths, FAMILY) / version
        metadata = registry.read_metadata(paths, FAMILY, version)
    kind = BASELINE if metadata.get("engine", ENGINE) == BASELINE else ENGINE

    def load(folder):
        engine = BaselineEngine.load(folder) if kind == BASELINE else GlobalEngine.load(folder)
        engine.version = version
        engine.attributors = {}  # built once per booster (drivers), kept with the engine: they only depend on it
        return engine

    try:
        return registry.load_cached(directory, kind, load)  # once per process while the version's files stand
    except (IncompatibleModelError, FileNotFoundError, KeyError, ValueError) as error:
        raise SegoneError(f"the {FAMILY} model {version} cannot be loaded ({error}): retrain with `segone train`") \
            from error


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


def driver_phrases() -> dict[str, Any]:
    """config/forecast.yaml `drivers`, checked (pipelines/wording.py: conditions, no number typed twice)."""
    phrases = settings()["drivers"]
    wording.check_phrases(phrases, "config/forecast.yaml drivers", plain=("default", "baseline_before_income"))
    return phrases


def drivers(engine, inputs: pd.DataFrame, forecast: pd.DataFrame, threshold: float) -> pd.Series:
    """Plain-language reasons per forecast row: the top features behind a risky forecast (p_shortfall at or above
    `threshold`) by path attribution on that horizon's classifier (models/attribution.py), in the words of
    config/forecast.yaml, after the known payment the balance cannot meet when there is one within the horizon
    (`forecast` columns unmet_day, unmet_amount, unmet_payments: `known_payment_driver`); a forecast below the
    threshold says there is no elevated risk."""
    from models.attribution import PathAttributor

    phrases = driver_phrases()
    out = pd.Series("no elevated risk of a shortfall", index=forecast.index, dtype=object)
    position = pd.Series(np.arange(len(inputs)), index=pd.MultiIndex.from_arrays(
        [inputs["customer_id"], pd.to_datetime(inputs["cutoff"])]))
    for horizon, rows in forecast.groupby("horizon_days"):
        risky = rows[rows["p_shortfall"].to_numpy(float) >= threshold]
        if risky.empty:
            continue
        at = position.loc[pd.MultiIndex.from_arrays([risky["customer_id"], pd.to_datetime(risky["cutoff"])])]
        X = inputs.iloc[at.to_numpy()][engine.feature_names].to_numpy(dtype=float)
        top: list[list[str]] = [[] for _ in range(len(risky))]
        for g, (booster, rows) in enumerate(engine.classifier_rows(int(horizon), risky["customer_id"])):
            if rows.any():   # each customer explained by its group's classifier, the one that scored it
                attributor = engine.attributors.get((int(horizon), g))
                if attributor is None:   # built once per booster (not per call: setdefault would build it each time)
                    attributor = engine.attributors[(int(horizon), g)] = PathAttributor(booster)
                for i, names in zip(np.flatnonzero(rows), attributor.top_features(X[rows], engine.feature_names, k=3)):
                    top[i] = names
        texts = []
        payments = known_payment_driver(risky)
        column = {name: j for j, name in enumerate(engine.feature_names)}
        # nothing of the regular income where a source's history is too short to show one (income_claims)
        unknown = feature_stage.income_unknown(inputs.iloc[at.to_numpy()])
        claims = feature_stage.income_claims()
        for i, (first, names) in enumerate(zip(payments, top)):
            # a top feature is named only when its words are true of this customer (config: [words, op, bound])
            words = list(dict.fromkeys(
                wording.words(name, phrases[name]) for name in names
                if isinstance(phrases.get(name), list) and name in column
                and not (unknown[i] and name in claims)
                and wording.holds(phrases[name], X[i:i + 1, column[name]])[0]))
            words = [first, *words] if first else (words or [phrases["default"]])
            texts.append("; ".join(words))
        out.loc[risky.index] = texts
    return out


def baseline_drivers(inputs: pd.DataFrame, streams: pd.DataFrame, forecast: pd.DataFrame,
                     threshold: float) -> pd.Series:
    """Plain-language reasons for the baseline engine's risky forecasts (p_shortfall at or above `threshold`): the
    facts of its projection and of the customer's recent flows that hold for that row, at most three, in the words
    of config/forecast.yaml: regular payments due before the next regular income within the horizon; regular bills
    larger than regular income over the horizon (on a history long enough to see a monthly income as a stream:
    `features.income_known_days`); a balance below zero today; days overdrawn in the last month; more
    spent than received last month; after the known payment the balance cannot meet when there is one within the
    horizon (`known_payment_driver`). A risky row with none of them gets the general phrase."""
    from models.baseline_engine import projected_paths

    phrases = driver_phrases()
    out = pd.Series("no elevated risk of a shortfall", index=forecast.index, dtype=object)
    if forecast.empty:
        return out
    _, recurring, _ = projected_paths(inputs, projected_streams(streams), max(horizons()))
    position = pd.Series(np.arange(len(inputs)), index=pd.MultiIndex.from_arrays(
        [inputs["customer_id"], pd.to_datetime(inputs["cutoff"])]))
    value = lambda column, at: (inputs[column].to_numpy(float)[at] if column in inputs  # noqa: E731
                                else np.full(len(at), np.nan))
    for horizon, rows in forecast.groupby("horizon_days"):
        risky = rows[rows["p_shortfall"].to_numpy(float) >= threshold]
        if risky.empty:
            continue
        at = position.loc[pd.MultiIndex.from_arrays([risky["customer_id"], pd.to_datetime(risky["cutoff"])])]
        at = at.to_numpy()
        flows = recurring[at, :int(horizon)]
        running = np.cumsum(flows, axis=1)
        lowest = running.argmin(axis=1)
        income_after = np.array([(flows[i, lowest[i] + 1:] > 0).any() for i in range(len(at))], dtype=bool)
        # the horizon's own projected net (its words name its window), each feature fact by its config condition
        net = f"projected_recurring_net_{int(horizon)}"
        said = lambda name: (wording.holds(phrases[name], value(name, at)),  # noqa: E731
                             wording.words(name, phrases[name]))
        # "payments out larger than income" only where the history could have seen a monthly income as a stream
        income_known = ~feature_stage.income_unknown(inputs.iloc[at])
        short = ((flows.sum(axis=1) < 0) & income_known, wording.words(net, phrases[net])) if net in phrases else \
            (np.zeros(len(at), dtype=bool), "")
        facts = [
            (running.min(axis=1) < 0) & income_after, phrases["baseline_before_income"],
            *short,
            *said("balance_now"),
            *said("n_days_negative_30"),
            *said("net_flow_30"),
        ]
        texts = []
        for i, first in enumerate(known_payment_driver(risky)):
            words = list(dict.fromkeys(text for held, text in zip(facts[0::2], facts[1::2]) if held[i]))[:3]
            words = [first, *words] if first else (words or [phrases["default"]])
            texts.append("; ".join(words))
        out.loc[risky.index] = texts
    return out


def known_payment_driver(forecast: pd.DataFrame) -> list[str | None]:
    """Per forecast row, the known payment the balance cannot meet within its horizon, in words (None when there is
    none): "a regular payment of £1,050.00 due around 01 July 2026 is more than your balance is projected to be by then"."""
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
        out.append(f"{what} more than your balance is projected to be by then")
    return out


def cash_forecast_rows(engine, panel: feature_stage.Panel, as_of: date,
                       inputs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gold `cash_forecast` rows for every customer of the panel at cut-off `as_of` (`inputs`: the model inputs
    when already made)."""
    inputs = model_inputs(panel) if inputs is None else inputs
    known = known_payments(panel, inputs)
    forecast = predict(engine, inputs, known, panel.streams).reset_index(drop=True)
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
        "drivers": (baseline_drivers(inputs, panel.streams, forecast, threshold)
                    if getattr(engine, "engine", None) == BASELINE
                    else drivers(engine, inputs, forecast, threshold)).to_numpy(),
        "model_version": engine.version,
    })
    return rows


def forecast_frame(engine, features: pd.DataFrame, streams: pd.DataFrame, consent: pd.DataFrame,
                   day: date) -> dict[str, pd.DataFrame]:
    """The pure step of the forecast stage: the feature store's features and streams of D (one row per customer;
    streams per customer) and the consent of D -> gold cash_forecast and recurring_streams rows, what each
    customer's consent allows (consented_forecast, consented_streams)."""
    from models.global_engine import IncompatibleModelError

    stamp = pd.Timestamp(day)
    panel = feature_stage.Panel(features=features.assign(cutoff=stamp), streams=streams.assign(cutoff=stamp),
                                series=pd.DataFrame(), labels=None, reconciliation=pd.DataFrame())
    try:
        rows = cash_forecast_rows(engine, panel, day) if len(features) else _empty_forecast()
    except IncompatibleModelError as error:
        raise SegoneError(f"the promoted {FAMILY} model {engine.version} does not fit today's features ({error}): "
                          f"retrain with `segone train`") from error
    published = streams.drop(columns=["has_open_banking"], errors="ignore").reset_index(drop=True)
    return {"cash_forecast": consented_forecast(rows, consent), "recurring_streams": consented_streams(published, consent)}


def forecast_cash_shortfall(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task forecast_cash_shortfall for one shard: read the feature store's features, streams and balance
    reconciliation of D and the promoted engine, forecast (`forecast_frame`), write gold cash_forecast,
    recurring_streams and balance_reconciliation for the bucket (as_of=D/bucket=N), each swapped in whole."""
    started = time.perf_counter()
    engine = load_engine(paths)
    features = feature_stage.numeric(store.read_table(paths, "customer_features", day, bucket), ["customer_id"])
    streams = store.read_table(paths, "recurring_streams", day, bucket)
    reconciliation = store.read_table(paths, "balance_reconciliation", day, bucket)
    consent = feature_stage.consent_snapshot(paths, day, [bucket])
    n_customers = _customers_in_bucket(paths, day, bucket)
    tables = forecast_frame(engine, features, streams, consent, day)
    rows = tables["cash_forecast"]
    tables["balance_reconciliation"] = reconciliation
    n_forecast = int(rows["customer_id"].nunique()) if len(rows) else 0
    metrics = {
        "model_version": engine.version, "n_customers": n_customers, "n_forecast": n_forecast,
        "n_without_cash_position": n_customers - n_forecast,
        "n_protective_only": int(rows.loc[rows["safe_to_save"].isna(), "customer_id"].nunique()) if len(rows) else 0,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return outputs.write_stage(paths, day, bucket, "forecast_cash_shortfall", tables, metrics)


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
    con = lake.connect(shared=True)
    try:
        path = store.snapshot_path(paths, "customers", day)
        return int(con.execute(f"select count(*) from read_parquet('{path}/**/*.parquet') "
                               f"where bucket = {int(bucket)}").fetchall()[0][0])
    finally:
        con.close()


def _empty_forecast() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.Series(dtype=str), "horizon_days": pd.Series(dtype="int32"),
        "p_shortfall": pd.Series(dtype=float), "min_balance_p10": pd.Series(dtype=float),
        "min_balance_p50": pd.Series(dtype=float), "min_balance_p90": pd.Series(dtype=float),
        "expected_shortfall_date": pd.Series(dtype="object"), "safe_to_save": pd.Series(dtype=float),
        "confidence": pd.Series(dtype=str), "drivers": pd.Series(dtype=str), "model_version": pd.Series(dtype=str),
    })


def forecast_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the CLI's `segone forecast`); the DAG maps forecast_cash_shortfall over the shards."""
    per_shard = [forecast_cash_shortfall(paths, day, bucket) for bucket in shards()]
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
