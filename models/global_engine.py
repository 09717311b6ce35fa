"""The `global` cash-shortfall engine: one LightGBM model over all customers at once, direct per horizon.

Why global: a per-customer model has a few dozen cut-offs to learn from; a single model over the whole book learns
how balance level, flows and their volatility translate into risk, and scores a million customers in seconds.

Per horizon H (days) it trains, on the rows of `features` joined to the `labels` of that horizon:
- a binary classifier of `is_shortfall`, calibrated with an isotonic map fitted on out-of-time predictions for the
  latest cut-offs (time-based, never random: the calibrator must see the model's errors on cut-offs it did not train
  on);
- one quantile regressor of `min_balance` per quantile (objective `quantile`, alpha = q);
- one regressor of `days_to_shortfall` on the positive rows only (it is the expected date *given* a shortfall);
  skipped (NaN forecast) when the horizon has fewer than `min_date_positives` positives.

Calibration (documented choice, forward-chaining, blind to the outcome it predicts): the calibration cut-offs are
the latest ones that hold about `calibration_share` of the rows, and at least `calibration_min_folds` of them (never
the first). Customers fall into `calibration_groups` groups by a fixed hash of their id. Each calibration row (a
customer at a calibration cut-off f) is predicted by a classifier fitted on the cut-offs before f, except the
outcomes of that customer's group that had not ended by f (c + H > f): `fold_training_rows`. The isotonic map is
fitted on all those predictions together. The classifiers of the latest calibration cut-off, one per group (fitted
on every cut-off but the latest), are published, each scoring its own group's customers (`classifier_rows`): the
model that scores a customer is one the calibrator saw, blind to that customer in the same way.
Why blind: on the day it forecasts, the published classifier has seen no outcome that reaches into the window it
predicts (training labels end by that day). A fold classifier fitted on every earlier cut-off had: with 14-day steps,
a customer's 90-day windows of the six cut-offs before f overlap f's window, and hold the very shortfall it predicts
(a customer short on day f + 20 is a positive at f - 14 and at f). Its predictions for those customers look more
certain than any forecast can be, and the isotonic map learned from them is over-confident: on 240-day banks, where
every 90-day training cut-off overlaps the calibration ones, 0.71 was forecast where 0.59 happened, 0.33 where
0.27 did (seed 11, docs/forecasting.md, "Calibration off the tuning bank"). Other customers' overlapping outcomes
stay in (no purge gap for them: they are not the outcome predicted), and so do the group's outcomes that had ended
(what a model knows of a customer's past). Publishing one classifier fitted on every cut-off instead (tried first)
left it sharper than the blind ones the map was fitted on, and over-predicted 60 days on banks not used to choose.
History: until 2026-12-06 (morning) a single classifier fitted on the earlier cut-offs calibrated the latest ones
and a refit on all rows was published; then (branch day-one) each fold's classifier saw every earlier outcome and
the last of them was published; now (branch calib90) the folds are blind to the open outcomes of the customers they
predict and the last fold's classifiers are published, one per customer group.

Output goes through `models.contract.make_coherent`, like every engine. Modelling code only: no `pipelines`, no
file paths other than the directory given to `save`/`load`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.contract import FORECAST_COLUMNS, HORIZONS, LABEL_COLUMNS, QUANTILES, make_coherent

FORMAT_VERSION = 1
ENGINE_FILE = "engine.json"
KEY_COLUMNS = ["customer_id", "cutoff"]
PREDICT_CHUNK_ROWS = 250_000


class IncompatibleModelError(ValueError):
    """The features or the saved files do not match what the model was trained with / the code can read."""


@dataclass
class GlobalEngineParams:
    """Hyper-parameters of the global engine (stored with the model, so a saved engine says how it was made)."""

    n_estimators: int = 200  # trees of each shortfall classifier
    regressor_estimators: int = 100  # trees of each quantile / date regressor (prediction cost is per tree)
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    seed: int = 0
    num_threads: int = 2
    calibration_share: float = 0.2  # share of rows, on the latest cut-offs, whose out-of-time predictions calibrate
    calibration_min_folds: int = 3  # ... and at least this many cut-offs (forward-chaining folds), never the first
    calibration_groups: int = 4  # customer groups: a calibration row's customer has no open outcome in its model
    min_date_positives: int = 50  # fewer positives than this at a horizon: no date model, NaN forecast
    date_objective: str = "regression_l1"  # the median day is robust to the long tail of late shortfalls
    horizons: tuple[int, ...] = HORIZONS
    quantiles: tuple[float, ...] = QUANTILES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists)."""
        out = asdict(self)
        out["horizons"] = [int(h) for h in self.horizons]
        out["quantiles"] = [float(q) for q in self.quantiles]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GlobalEngineParams":
        """Inverse of `to_dict`; unknown keys are ignored, missing ones take the default."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "horizons" in kwargs:
            kwargs["horizons"] = tuple(int(h) for h in kwargs["horizons"])
        if "quantiles" in kwargs:
            kwargs["quantiles"] = tuple(float(q) for q in kwargs["quantiles"])
        return cls(**kwargs)


def _calibrator_class() -> Any:
    """Imported lazily: the calibrator lives in its own module (fit(p, y), predict(p), to_dict(), from_dict(d))."""
    from models.calibration import IsotonicCalibrator

    return IsotonicCalibrator


def _quantile_tag(q: float) -> str:
    """0.1 -> 'p10', 0.5 -> 'p50', 0.975 -> 'p97.5'."""
    return "p" + f"{q * 100:.6g}"


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays included), NaN/inf as null, so json.dumps is strict and stable."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    return value


def write_boosters(directory: Path, files: dict[str, lgb.Booster | None]) -> dict[str, str | None]:
    """Each booster as LightGBM text in `directory` under its file name (a None removes a stale file of that name:
    an earlier save's would mislead); returns the file names for engine.json (None where no booster)."""
    models: dict[str, str | None] = {}
    for name, booster in files.items():
        if booster is None:
            models[name] = None
            (directory / name).unlink(missing_ok=True)
            continue
        (directory / name).write_bytes(booster.model_to_string().encode("utf-8"))
        models[name] = name
    return models


def _as_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The feature block as a C-contiguous float64 matrix (what LightGBM reads without another copy)."""
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64, na_value=np.nan))


def _calibration_cutoffs(cutoffs: np.ndarray, share: float, min_folds: int) -> np.ndarray:
    """The calibration cut-offs, ascending: the latest ones holding about `share` of the rows, at least
    `min_folds` of them, never the first (a fold needs an earlier cut-off to learn from). Empty when there is a
    single cut-off or `share` <= 0."""
    unique = np.unique(cutoffs)
    mask = _calibration_mask(cutoffs, share)
    if not mask.any():
        return unique[:0]
    n = max(len(np.unique(cutoffs[mask])), min(int(min_folds), len(unique) - 1))
    return unique[len(unique) - n:]


def _calibration_mask(cutoffs: np.ndarray, share: float) -> np.ndarray:
    """Rows of the latest cut-offs that together hold about `share` of the rows (at least one cut-off, and never
    all of them). All False when there is a single cut-off or `share` <= 0."""
    unique, counts = np.unique(cutoffs, return_counts=True)  # sorted ascending
    if len(unique) < 2 or share <= 0:
        return np.zeros(len(cutoffs), dtype=bool)
    target = share * counts.sum()
    tail = np.cumsum(counts[::-1])  # rows held by the latest 1, 2, ... cut-offs
    n_latest = int(np.argmin(np.abs(tail[: len(unique) - 1] - target))) + 1
    first_calibration = unique[len(unique) - n_latest]
    return cutoffs >= first_calibration


def customer_groups(customer_ids: pd.Series, n_groups: int) -> np.ndarray:
    """A customer's calibration group, 0..n_groups-1: a fixed hash of the id (pandas' keyed SipHash, the same on
    every run and machine), so every row of a customer falls in the same group."""
    if int(n_groups) <= 1:
        return np.zeros(len(customer_ids), dtype=np.int64)
    hashed = pd.util.hash_pandas_object(customer_ids.astype(str).reset_index(drop=True), index=False).to_numpy()
    return (hashed % np.uint64(n_groups)).astype(np.int64)


def fold_training_rows(cutoffs: np.ndarray, groups: np.ndarray, fold: np.datetime64, group: int,
                       horizon_days: int) -> np.ndarray:
    """The rows a calibration classifier learns from when it predicts the customers of `group` at cut-off `fold`:
    every earlier cut-off of the other groups, and of `group` itself only the cut-offs whose `horizon_days`
    outcome had ended by `fold` (c + h <= fold). So it knows of those customers what a model knows on the day it
    forecasts (their past outcomes, none that reaches into the window it predicts): an outcome window overlapping
    the predicted one holds the very shortfall being predicted."""
    before = cutoffs < fold
    ended = cutoffs + np.timedelta64(int(horizon_days), "D") <= fold
    return before & ((groups != group) | ended)


# OpenMP threads spin at every barrier: on a small batch, or a busy machine, a second thread costs far more than it
# brings (measured here under load: 3,887 training rows took 13 s on one thread and 94 s on two).
MIN_ROWS_PER_THREAD = 50_000


def threads_for(n_rows: int, wanted: int) -> int:
    """Threads worth using for n_rows: one below MIN_ROWS_PER_THREAD rows per thread."""
    return max(1, min(wanted, n_rows // MIN_ROWS_PER_THREAD))


class GlobalEngine:
    """One LightGBM per target and horizon over all customers; see the module docstring."""

    def __init__(self) -> None:
        self._reset(GlobalEngineParams())

    def _reset(self, params: GlobalEngineParams) -> None:
        """Forget any previous fit (fit can be called again on the same object)."""
        self.params: GlobalEngineParams = params
        self.feature_names: list[str] = []
        # per horizon, the published classifiers: one per customer group (calibration_groups), or a single one
        # for every customer (calibration skipped, or an engine saved before per-group classifiers)
        self.classifiers: dict[int, list[lgb.Booster]] = {}
        self.calibrators: dict[int, Any] = {}  # None = identity (calibration skipped, see notes)
        self.quantile_models: dict[tuple[int, float], lgb.Booster] = {}
        self.date_models: dict[int, lgb.Booster | None] = {}
        self.notes: list[str] = []
        self.training_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def _lgb_params(self, objective: str, **extra: Any) -> dict[str, Any]:
        """LightGBM parameters, deterministic: fixed seeds, fixed threads, row-wise histograms."""
        p = self.params
        out: dict[str, Any] = {
            "objective": objective,
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_child_samples": p.min_child_samples,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": p.bagging_freq,
            "seed": p.seed,
            "bagging_seed": p.seed + 1,
            "feature_fraction_seed": p.seed + 2,
            "data_random_seed": p.seed + 3,
            "num_threads": getattr(self, "_train_threads", p.num_threads),
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        out.update(extra)
        return out

    def _train(self, X: np.ndarray, y: np.ndarray, objective: str, rounds: int, **extra: Any) -> lgb.Booster:
        """Train one booster and return it re-read from its text form, so the fitted engine predicts exactly like
        a saved-and-loaded one (and the training Dataset is freed)."""
        params = self._lgb_params(objective, **extra)
        data = lgb.Dataset(X, label=y, feature_name=self.feature_names, params=params, free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=rounds)
        return lgb.Booster(model_str=booster.model_to_string())

    def fit(
        self, features: pd.DataFrame, labels: pd.DataFrame, params: GlobalEngineParams | None = None
    ) -> "GlobalEngine":
        """Fit every model of every horizon. `features`: customer_id, cutoff and numeric feature columns (all other
        columns are features, in their order); `labels`: the contract's LABEL_COLUMNS. Returns self."""
        self._reset(params or GlobalEngineParams())
        p = self.params
        missing = [c for c in KEY_COLUMNS if c not in features.columns]
        missing_labels = [c for c in LABEL_COLUMNS if c not in labels.columns]
        if missing or missing_labels:
            raise ValueError(f"missing columns: features {missing}, labels {missing_labels}")
        self.feature_names = [str(c) for c in features.columns if c not in KEY_COLUMNS]
        if not self.feature_names:
            raise ValueError("features has no feature column")
        not_numeric = [c for c in self.feature_names if not pd.api.types.is_numeric_dtype(features[c])]
        if not_numeric:
            raise ValueError(f"feature columns must be numeric: {not_numeric}")
        if features.duplicated(KEY_COLUMNS).any():
            raise ValueError("features has duplicate (customer_id, cutoff) rows")
        self._train_threads = threads_for(len(features), p.num_threads)
        if not 0 <= p.calibration_share < 1:
            raise ValueError("calibration_share must be in [0, 1)")
        if int(p.calibration_groups) < 1:
            raise ValueError("calibration_groups must be at least 1")

        keys = pd.DataFrame(
            {
                "customer_id": features["customer_id"].astype(str).to_numpy(),
                "cutoff": pd.to_datetime(features["cutoff"]).to_numpy(dtype="datetime64[ns]"),
                "_row": np.arange(len(features)),
            }
        )
        lab = labels[LABEL_COLUMNS].copy()
        lab["customer_id"] = lab["customer_id"].astype(str)
        lab["cutoff"] = pd.to_datetime(lab["cutoff"]).to_numpy(dtype="datetime64[ns]")
        lab = lab.merge(keys, on=KEY_COLUMNS, how="inner", validate="many_to_one")
        if lab.duplicated(["customer_id", "cutoff", "horizon_days"]).any():
            raise ValueError("labels has duplicate (customer_id, cutoff, horizon_days) rows")
        X_all = _as_matrix(features, self.feature_names)
        groups = customer_groups(keys["customer_id"], p.calibration_groups)

        used_rows = np.unique(lab["_row"].to_numpy())
        summary: dict[str, Any] = {
            "n_rows": int(len(used_rows)),
            "n_customers": int(keys["customer_id"].iloc[used_rows].nunique()),
            "cutoff_min": _jsonable(keys["cutoff"].iloc[used_rows].min()) if len(used_rows) else None,
            "cutoff_max": _jsonable(keys["cutoff"].iloc[used_rows].max()) if len(used_rows) else None,
            "horizons": {},
        }

        for h in p.horizons:
            part = lab[lab["horizon_days"] == h].sort_values(["cutoff", "customer_id"], kind="stable")
            part = part[part["is_shortfall"].notna()]
            if part.empty:
                raise ValueError(f"no labelled rows for horizon {h}")
            rows = part["_row"].to_numpy()
            X = X_all[rows]
            y = part["is_shortfall"].astype(float).to_numpy()
            cut = part["cutoff"].to_numpy()
            self._fit_classifier(h, X, y, cut, groups[rows])

            balance = part["min_balance"].to_numpy(dtype=float)
            ok = np.isfinite(balance)
            for q in p.quantiles:
                self.quantile_models[(h, q)] = self._train(
                    X[ok], balance[ok], "quantile", p.regressor_estimators, alpha=float(q)
                )

            days = part["days_to_shortfall"].to_numpy(dtype=float)
            positive = (y == 1) & np.isfinite(days)
            if positive.sum() >= p.min_date_positives:
                self.date_models[h] = self._train(X[positive], days[positive], p.date_objective, p.regressor_estimators)
            else:
                self.date_models[h] = None
                self.notes.append(
                    f"h{h}: {int(positive.sum())} positives < {p.min_date_positives}: no date model, NaN forecast"
                )
            summary["horizons"][str(h)] = {
                "n_rows": int(len(part)),
                "positive_rate": float(y.mean()),
                "n_positive": int(y.sum()),
            }
        self.training_summary = summary
        return self

    def _fit_classifier(self, h: int, X: np.ndarray, y: np.ndarray, cutoffs: np.ndarray, groups: np.ndarray) -> None:
        """Classifiers of horizon h with their isotonic calibrator (module docstring, "Calibration"): each row of
        each calibration cut-off is predicted by a classifier fitted on the rows `fold_training_rows` allows (the
        cut-offs before it, without the outcomes of its customer group that had not ended by then; `groups`: the
        customer group of each row); the calibrator is fitted on those predictions together; the classifiers of
        the last calibration cut-off, one per group, are published, each for its group's customers."""
        p = self.params
        n_groups = max(int(p.calibration_groups), 1)
        folds = _calibration_cutoffs(cutoffs, p.calibration_share, p.calibration_min_folds)
        raw: list[np.ndarray] = []
        outcome: list[np.ndarray] = []
        last: dict[int, lgb.Booster] = {}
        skipped = 0
        n_folds = 0
        for fold in folds:
            at = cutoffs == fold
            used = False
            for group in range(n_groups):
                learn = fold_training_rows(cutoffs, groups, fold, group, h)
                score = at & (groups == group)
                if len(np.unique(y[learn])) < 2:
                    skipped += 1   # nothing to learn: one class only
                    continue
                model = self._train(X[learn], y[learn], "binary", p.n_estimators)
                if fold == folds[-1]:
                    last[group] = model
                if score.any():
                    raw.append(model.predict(X[score], num_threads=self._train_threads))
                    outcome.append(y[score])
                    used = True
            n_folds += used
        reason = ""
        if not len(folds):
            reason = "a single cut-off" if len(np.unique(cutoffs)) < 2 else "calibration_share is 0"
        elif not raw:
            reason = "one class only before every calibration cut-off"
        elif len(np.unique(np.concatenate(outcome))) < 2:
            reason = "one class only on the calibration cut-offs"
        elif len(last) < n_groups:
            reason = "one class only for some customer group before the latest calibration cut-off"
        calibrator = None
        if not reason:
            calibrator = _calibrator_class()()
            calibrator.fit(np.concatenate(raw), np.concatenate(outcome))
            n_rows = int(sum(len(r) for r in raw))
            self.notes.append(
                f"h{h}: calibrated on out-of-time predictions for the latest {n_folds} cut-off(s), {n_rows} rows "
                f"({n_rows / len(y):.1%}), each by a classifier fitted on the cut-offs before it and blind to the "
                f"outcomes of its customer group ({n_groups} group(s)) that had not ended by then"
                + (f" ({skipped} fold(s) skipped: one class only to learn from)" if skipped else "")
                + "; the classifiers of the latest of them are published, each for its group")
            self.classifiers[h] = [last[group] for group in range(n_groups)]
        else:
            self.notes.append(f"h{h}: calibration skipped ({reason}): identity, one classifier fitted on all rows")
            self.classifiers[h] = [self._train(X, y, "binary", p.n_estimators)]
        self.calibrators[h] = calibrator

    def classifier_rows(self, h: int, customer_ids: pd.Series | np.ndarray) -> list[tuple[lgb.Booster, np.ndarray]]:
        """The published classifiers of horizon h with the rows (boolean masks over `customer_ids`) each one
        scores: a customer is scored by its group's classifier, the one that never saw its open outcomes when the
        calibrator was fitted (module docstring)."""
        boosters = self.classifiers[h]
        n = len(customer_ids)
        if len(boosters) == 1:
            return [(boosters[0], np.ones(n, dtype=bool))]
        groups = customer_groups(pd.Series(np.asarray(customer_ids)), len(boosters))
        return [(booster, groups == g) for g, booster in enumerate(boosters)]

    # ------------------------------------------------------------------ prediction
    def _check_features(self, features: pd.DataFrame, keys: bool = True) -> None:
        """Raise IncompatibleModelError unless `features` holds every trained feature column (extras are ignored)."""
        if not self.feature_names:
            raise ValueError("the engine is not fitted")
        needed = (KEY_COLUMNS if keys else []) + self.feature_names
        missing = [c for c in needed if c not in features.columns]
        if missing:
            raise IncompatibleModelError(f"features lack columns the model was trained with: {missing}")
        not_numeric = [c for c in self.feature_names if not pd.api.types.is_numeric_dtype(features[c])]
        if not_numeric:
            raise IncompatibleModelError(f"feature columns must be numeric: {not_numeric}")

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Forecast every row of `features` (customer_id, cutoff, the trained feature columns) at every horizon:
        one row per customer, cut-off and horizon with FORECAST_COLUMNS, made coherent."""
        self._check_features(features)
        p = self.params
        n = len(features)
        horizons = list(p.horizons)
        out = {
            "p_shortfall": np.empty((n, len(horizons))),
            "min_balance_p10": np.empty((n, len(horizons))),
            "min_balance_p50": np.empty((n, len(horizons))),
            "min_balance_p90": np.empty((n, len(horizons))),
            "days_to_shortfall": np.full((n, len(horizons)), np.nan),
        }
        lo, mid, hi = self._published_quantiles()
        for start in range(0, n, PREDICT_CHUNK_ROWS):
            stop = min(start + PREDICT_CHUNK_ROWS, n)
            X = _as_matrix(features.iloc[start:stop], self.feature_names)
            threads = threads_for(stop - start, p.num_threads)
            ids = features["customer_id"].iloc[start:stop]
            for j, h in enumerate(horizons):
                prob = np.empty(stop - start)
                for booster, rows in self.classifier_rows(h, ids):
                    if rows.any():
                        prob[rows] = booster.predict(X[rows], num_threads=threads)
                if self.calibrators.get(h) is not None:
                    prob = np.asarray(self.calibrators[h].predict(prob), dtype=float)
                out["p_shortfall"][start:stop, j] = prob
                for column, q in (("min_balance_p10", lo), ("min_balance_p50", mid), ("min_balance_p90", hi)):
                    out[column][start:stop, j] = self.quantile_models[(h, q)].predict(X, num_threads=threads)
                model = self.date_models.get(h)
                if model is not None:
                    days = model.predict(X, num_threads=threads)
                    out["days_to_shortfall"][start:stop, j] = np.clip(days, 1.0, float(h))
        frame = pd.DataFrame(
            {
                "customer_id": np.repeat(features["customer_id"].to_numpy(), len(horizons)),
                "cutoff": np.repeat(features["cutoff"].to_numpy(), len(horizons)),
                "horizon_days": np.tile(np.asarray(horizons, dtype=np.int64), n),
                **{column: values.reshape(-1) for column, values in out.items()},
            }
        )
        return make_coherent(frame)

    def _published_quantiles(self) -> tuple[float, float, float]:
        """The trained quantiles published as P10/P50/P90 (the contract has exactly three quantile columns)."""
        qs = sorted(self.params.quantiles)
        if len(qs) != 3:
            raise IncompatibleModelError(f"the forecast contract needs exactly three quantiles, got {qs}")
        return qs[0], qs[1], qs[2]

    def top_drivers(
        self,
        features: pd.DataFrame,
        horizon_days: int = 30,
        k: int = 3,
        only_rows: np.ndarray | pd.Series | None = None,
    ) -> list[list[str]]:
        """Per row, the names of the (at most) k features pushing the shortfall classifier's raw score up the most
        (SHAP values from LightGBM's pred_contrib), to explain a forecast in words. Features with a contribution
        <= 0 are never listed. SHAP is slow (about 1k rows/s): pass `only_rows` (boolean mask) to explain only
        some rows; the others get []."""
        self._check_features(features, keys=False)
        if horizon_days not in self.classifiers:
            raise ValueError(f"no classifier for horizon {horizon_days}; horizons: {sorted(self.classifiers)}")
        n = len(features)
        mask = np.ones(n, dtype=bool) if only_rows is None else np.asarray(only_rows, dtype=bool)
        if mask.shape != (n,):
            raise ValueError("only_rows must be a boolean mask with one entry per row")
        result: list[list[str]] = [[] for _ in range(n)]
        names = np.asarray(self.feature_names, dtype=object)
        if "customer_id" not in features and len(self.classifiers[horizon_days]) > 1:
            raise ValueError("top_drivers needs customer_id: each customer group has its own classifier")
        ids = features["customer_id"] if "customer_id" in features else pd.Series([""] * n)
        chunk = 50_000
        for booster, rows in self.classifier_rows(horizon_days, ids):
            selected = np.flatnonzero(mask & rows)
            for start in range(0, len(selected), chunk):
                idx = selected[start : start + chunk]
                X = _as_matrix(features.iloc[idx], self.feature_names)
                contrib = booster.predict(X, pred_contrib=True, num_threads=self.params.num_threads)[:, :-1]
                order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
                top = np.take_along_axis(contrib, order, axis=1)
                for row, cols, values in zip(idx, order, top):
                    result[row] = [str(name) for name in names[cols[values > 0]]]
        return result

    def feature_importance(self) -> pd.DataFrame:
        """Total gain per feature of the 30-day classifier (the shortest horizon if 30 is not trained)."""
        if not self.classifiers:
            raise ValueError("the engine is not fitted")
        h = 30 if 30 in self.classifiers else min(self.classifiers)
        gain = sum(b.feature_importance(importance_type="gain").astype(float) for b in self.classifiers[h])
        frame = pd.DataFrame({"feature": self.feature_names, "gain": gain.astype(float)})
        return frame.sort_values(["gain", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------ persistence
    def _model_files(self) -> dict[str, lgb.Booster | None]:
        """File name -> booster, in a fixed order (None: the date model was skipped)."""
        files: dict[str, lgb.Booster | None] = {}
        for h in self.params.horizons:
            boosters = self.classifiers[h]
            if len(boosters) == 1:
                files[f"classifier_h{h}.txt"] = boosters[0]
            else:
                for g, booster in enumerate(boosters):
                    files[f"classifier_h{h}_g{g}.txt"] = booster
            for q in self.params.quantiles:
                files[f"min_balance_{_quantile_tag(q)}_h{h}.txt"] = self.quantile_models[(h, q)]
            files[f"days_to_shortfall_h{h}.txt"] = self.date_models.get(h)
        return files

    def save(self, directory: Path) -> None:
        """Write every booster as LightGBM text plus engine.json (stable order: same training, same bytes)."""
        if not self.classifiers:
            raise ValueError("the engine is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        models = write_boosters(directory, self._model_files())
        meta = {
            "format_version": FORMAT_VERSION,
            "engine": "global",
            "lightgbm_version": lgb.__version__,
            "feature_names": self.feature_names,
            "params": self.params.to_dict(),
            "horizons": [int(h) for h in self.params.horizons],
            "quantiles": [float(q) for q in self.params.quantiles],
            "calibrators": {
                str(h): (None if self.calibrators.get(h) is None else self.calibrators[h].to_dict())
                for h in self.params.horizons
            },
            "models": models,
            "notes": self.notes,
            "training_summary": self.training_summary,
        }
        text = json.dumps(_jsonable(meta), indent=2, sort_keys=True, allow_nan=False) + "\n"
        (directory / ENGINE_FILE).write_bytes(text.encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> "GlobalEngine":
        """Read an engine written by `save`; a different format_version raises IncompatibleModelError."""
        directory = Path(directory)
        meta = json.loads((directory / ENGINE_FILE).read_text(encoding="utf-8"))
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"{directory / ENGINE_FILE}: format_version {version!r}, this code reads {FORMAT_VERSION}"
            )
        engine = cls()
        engine.params = GlobalEngineParams.from_dict(meta["params"])
        engine.feature_names = list(meta["feature_names"])
        engine.notes = list(meta.get("notes", []))
        engine.training_summary = meta.get("training_summary", {})

        def booster(name: str) -> lgb.Booster | None:
            stored = meta["models"].get(name, "missing")
            if stored is None:
                return None
            path = directory / name
            if stored == "missing" or not path.exists():
                raise IncompatibleModelError(f"{path}: model file missing")
            return lgb.Booster(model_str=path.read_text(encoding="utf-8"))

        for h in engine.params.horizons:
            names = [f"classifier_h{h}.txt"] if f"classifier_h{h}.txt" in meta["models"] else sorted(
                (name for name in meta["models"] if name.startswith(f"classifier_h{h}_g")),
                key=lambda name: int(name.rsplit("_g", 1)[1].split(".")[0]))
            boosters = [booster(name) for name in names]
            if not boosters or any(b is None for b in boosters):
                raise IncompatibleModelError(f"no classifier for horizon {h}")
            engine.classifiers[h] = boosters
            stored = meta["calibrators"].get(str(h))
            engine.calibrators[h] = None if stored is None else _calibrator_class().from_dict(stored)
            for q in engine.params.quantiles:
                model = booster(f"min_balance_{_quantile_tag(q)}_h{h}.txt")
                if model is None:
                    raise IncompatibleModelError(f"no min_balance q={q} model for horizon {h}")
                engine.quantile_models[(h, q)] = model
            engine.date_models[h] = booster(f"days_to_shortfall_h{h}.txt")
        return engine
