"""A global engine for a customer event within a horizon: one LightGBM over all customers, direct per horizon.

The cash-shortfall engine (models/global_engine.py) forecasts one event with quantiles of a balance; the income-drop
and large-expense forecasts (pipelines/event_forecast.py) need the same calibrated probability with a date and, for
an expense, an amount. This engine is that, with the shortfall engine's training discipline reused as is:
- per horizon H a binary classifier of `is_event`, calibrated on forward-chaining, out-of-time predictions for the
  latest cut-offs, each calibration row predicted by a classifier blind to the outcomes of its customer group that
  had not ended by then (`global_engine.fold_training_rows`); the latest calibration cut-off's classifiers are
  published, one per customer group, each scoring its group. The map (`fit_calibration`) is isotonic, or logistic
  when the calibration rows hold few events, and may follow the level of the latest calibration cut-off;
- a regressor of `days_to_event` on the positive rows (the expected date *given* the event), L1 objective;
- optionally a regressor of `event_amount` on the positive rows (the expected amount given the event), L1.
Regressors with fewer than `min_positives` positives at a horizon are skipped (NaN forecast).

Output per customer, cut-off and horizon: p_event (calibrated, never falling with the horizon), days_to_event,
event_amount. Modelling code only: no `pipelines`, no paths other than the directory given to save/load.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.global_engine import (
    IncompatibleModelError,
    _as_matrix,
    _calibration_cutoffs,
    _jsonable,
    customer_groups,
    fold_training_rows,
    threads_for,
    write_boosters,
)

FORMAT_VERSION = 1
ENGINE_FILE = "engine.json"
KEY_COLUMNS = ["customer_id", "cutoff"]
LABEL_COLUMNS = ["customer_id", "cutoff", "horizon_days", "is_event", "days_to_event", "event_amount"]
OUTPUT_COLUMNS = ["customer_id", "cutoff", "horizon_days", "p_event", "days_to_event", "event_amount"]


@dataclass
class EventEngineParams:
    """Hyper-parameters (stored with the model)."""

    n_estimators: int = 200
    regressor_estimators: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    seed: int = 0
    num_threads: int = 2
    calibration_share: float = 0.2
    calibration_min_folds: int = 3
    calibration_groups: int = 4
    min_positives: int = 30
    # calibration map: isotonic when the calibration rows hold at least this many of the rarer class, else a
    # two-parameter logistic map (config/event_forecast.yaml calibration)
    isotonic_min_events: int = 0
    # move the map's level to the latest calibration cut-off's event rate (a shrunk log-odds shift): True, False, or
    # "auto": per horizon, when the training labels show that a cut-off's rate is better foreseen by the latest
    # matured cut-off's rate than by the pooled rate (`level_persists`)
    follow_level: bool | str = False
    # shrink the map toward the calibration rows' event rate by the weight that minimised the Brier score of the
    # map's leave-one-cut-off-out predictions (config/event_forecast.yaml calibration.shrink_to_base_rate)
    shrink_to_base_rate: bool = False
    with_amount: bool = False
    horizons: tuple[int, ...] = (30, 60, 90)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["horizons"] = [int(h) for h in self.horizons]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EventEngineParams":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "horizons" in kwargs:
            kwargs["horizons"] = tuple(int(h) for h in kwargs["horizons"])
        return cls(**kwargs)


def fit_calibration(p: np.ndarray, y: np.ndarray, cutoff: np.ndarray, isotonic_min_events: int,
                    follow_level: bool, shrink_to_base_rate: bool = False) -> tuple[Any, str]:
    """The calibration of a horizon from the out-of-time predictions `p` of its calibration rows, their outcomes `y`
    and cut-offs, and a note saying what was chosen:
    - the map: isotonic when the rows hold at least `isotonic_min_events` of the rarer class, else logistic (Platt
      on the logit): with few events isotonic regression builds steps on a handful of positives and spreads
      probability mass too far;
    - `follow_level`: the map's log-odds shifted so that it matches the event rate of the latest calibration
      cut-off (the most recent whose outcome had ended: a base rate that drifts is followed), the shift shrunk
      toward none by its standard error (models.calibration.shrunk_shift: a shift within the noise of the few
      events of one cut-off is not followed);
    - `shrink_to_base_rate`: the map shrunk toward the rows' event rate, p -> w map(p) + (1 - w) rate, w the weight
      that minimises the Brier score of the map's out-of-sample predictions (each calibration cut-off's rows
      predicted by the map fitted on the other cut-offs, against the event rate of those others): a map that does
      not separate the events out of sample (few events, noisy labels) gives way to the base rate, one that does is
      kept (w near 1). Needs two calibration cut-offs or more (else w = 1)."""
    from models.calibration import (BlendedCalibrator, IsotonicCalibrator, LogisticCalibrator, ShiftedCalibrator,
                                    blend_weight, level_shift, shrunk_shift)

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    rarer = int(min(y.sum(), len(y) - y.sum()))
    isotonic = rarer >= int(isotonic_min_events)

    def new_map() -> Any:
        return IsotonicCalibrator() if isotonic else LogisticCalibrator()

    calibrator: Any = new_map().fit(p, y)
    note = (f"{'isotonic' if isotonic else 'logistic'} map ({rarer} of the rarer class; isotonic from "
            f"{int(isotonic_min_events)})")
    if follow_level and len(p):
        latest = cutoff == np.max(cutoff)
        d, se = level_shift(calibrator.predict(p[latest]), y[latest])
        shift = shrunk_shift(d, se)
        calibrator = ShiftedCalibrator(calibrator, shift)
        note += (f"; level of the latest calibration cut-off: log-odds shift {d:+.3f} (s.e. {se:.3f}), followed "
                 f"{shift:+.3f}")
    if shrink_to_base_rate and len(p):
        held = np.unique(cutoff)
        q, base = np.full(len(p), np.nan), np.full(len(p), np.nan)
        for c in held:
            out = cutoff == c
            if len(held) < 2 or len(np.unique(y[~out])) < 2:
                continue
            q[out] = new_map().fit(p[~out], y[~out]).predict(p[out])
            base[out] = y[~out].mean()
        known = np.isfinite(q) & np.isfinite(base)
        weight = blend_weight(q[known], base[known], y[known]) if known.any() else 1.0
        calibrator = BlendedCalibrator(calibrator, weight, float(y.mean()))
        note += f"; shrunk toward the event rate {y.mean():.4f}: weight of the map {weight:.3f}"
    return calibrator, note


def level_persists(cutoffs: np.ndarray, y: np.ndarray, horizon_days: int, min_pairs: int = 3
                   ) -> tuple[bool, str]:
    """Whether a horizon's event rate keeps the level it last had, judged on the training labels alone (`cutoffs`
    and outcomes `y` of every labelled row of the horizon): each labelled cut-off t that has at least two cut-offs
    whose outcome had ended by it (c + horizon_days <= t, what a model trained on t would know) is foreseen two
    ways, by the latest of those cut-offs' event rate and by their pooled rate (all their rows); the level is
    followed when the latest's mean squared error over those cut-offs is below the pooled one's, with at least
    `min_pairs` of them (else not: too short a history to tell). A rate that wanders (a level that persists) is
    followed; one that swings back (a season, noise around a steady rate) is not. Returns the answer and a note."""
    cutoffs = np.asarray(cutoffs, dtype="datetime64[ns]")
    y = np.asarray(y, dtype=float)
    unique, inverse = np.unique(cutoffs, return_inverse=True)
    events = np.bincount(inverse, weights=y, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique)).astype(float)
    rates = events / counts
    gap = np.timedelta64(int(horizon_days), "D")
    latest_err, pooled_err = [], []
    for j, t in enumerate(unique):
        known = np.flatnonzero(unique + gap <= t)
        if len(known) < 2:
            continue
        latest_err.append((rates[known[-1]] - rates[j]) ** 2)
        pooled_err.append((events[known].sum() / counts[known].sum() - rates[j]) ** 2)
    n = len(latest_err)
    if n < int(min_pairs):
        return False, f"level not followed: {n} cut-off(s) to judge it on (< {int(min_pairs)})"
    latest, pooled = float(np.mean(latest_err)), float(np.mean(pooled_err))
    follow = latest < pooled
    return follow, (f"level {'followed' if follow else 'not followed'}: the latest matured cut-off's rate foresaw "
                    f"{n} cut-offs with squared error {latest:.2e} against the pooled rate's {pooled:.2e}")


def _calibrator_from_dict(stored: dict[str, Any]) -> Any:
    from models.calibration import calibrator_from_dict

    return calibrator_from_dict(stored)


def monotone_in_horizon(frame: pd.DataFrame, column: str = "p_event") -> pd.DataFrame:
    """The event within 60 days includes the event within 30: the probability never falls with the horizon (a
    running maximum over the horizons per customer and cut-off), strictly inside (0, 1) (models.calibration
    PUBLISHED_EPSILON: no forecast is certain; the calibrators' own bounds are tighter)."""
    from models.calibration import PUBLISHED_EPSILON

    out = frame.sort_values(["customer_id", "cutoff", "horizon_days"], kind="stable").reset_index(drop=True)
    out[column] = out[column].clip(PUBLISHED_EPSILON, 1.0 - PUBLISHED_EPSILON)
    out[column] = out.groupby(["customer_id", "cutoff"], sort=False)[column].cummax()
    return out


class EventEngine:
    """One calibrated classifier (per customer group) and up to two regressors per horizon."""

    def __init__(self) -> None:
        self._reset(EventEngineParams())

    def _reset(self, params: EventEngineParams) -> None:
        self.params = params
        self.feature_names: list[str] = []
        self.classifiers: dict[int, list[lgb.Booster]] = {}
        self.calibrators: dict[int, Any] = {}
        self.date_models: dict[int, lgb.Booster | None] = {}
        self.amount_models: dict[int, lgb.Booster | None] = {}
        self.notes: list[str] = []
        self.base_rates: dict[int, float] = {}
        # per horizon, the calibration rows (raw prediction, outcome, cut-off) of the last fit: not saved
        self.calibration_rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._threads = params.num_threads

    def _lgb_params(self, objective: str) -> dict[str, Any]:
        p = self.params
        return {"objective": objective, "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
                "min_child_samples": p.min_child_samples, "feature_fraction": p.feature_fraction,
                "bagging_fraction": p.bagging_fraction, "bagging_freq": p.bagging_freq, "seed": p.seed,
                "bagging_seed": p.seed + 1, "feature_fraction_seed": p.seed + 2, "data_random_seed": p.seed + 3,
                "num_threads": self._threads, "deterministic": True, "force_row_wise": True, "verbose": -1}

    def _train(self, X: np.ndarray, y: np.ndarray, objective: str, rounds: int) -> lgb.Booster:
        params = self._lgb_params(objective)
        data = lgb.Dataset(X, label=y, feature_name=self.feature_names, params=params, free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=rounds)
        return lgb.Booster(model_str=booster.model_to_string())

    def fit(self, features: pd.DataFrame, labels: pd.DataFrame, params: EventEngineParams | None = None
            ) -> "EventEngine":
        """`features`: customer_id, cutoff and numeric feature columns; `labels`: LABEL_COLUMNS (rows of a horizon
        without a label are left out of that horizon)."""
        self._reset(params or EventEngineParams())
        p = self.params
        missing = [c for c in KEY_COLUMNS if c not in features] + [c for c in LABEL_COLUMNS if c not in labels]
        if missing:
            raise ValueError(f"missing columns: {missing}")
        self.feature_names = [str(c) for c in features.columns if c not in KEY_COLUMNS]
        not_numeric = [c for c in self.feature_names if not pd.api.types.is_numeric_dtype(features[c])]
        if not self.feature_names or not_numeric:
            raise ValueError(f"features need numeric feature columns (not numeric: {not_numeric})")
        if features.duplicated(KEY_COLUMNS).any():
            raise ValueError("features has duplicate (customer_id, cutoff) rows")
        self._threads = threads_for(len(features), p.num_threads)
        keyed = features.assign(customer_id=features["customer_id"].astype(str),
                                cutoff=pd.to_datetime(features["cutoff"]))
        lab = labels.assign(customer_id=labels["customer_id"].astype(str), cutoff=pd.to_datetime(labels["cutoff"]))
        for h in p.horizons:
            rows = keyed.merge(lab[lab["horizon_days"] == h], on=KEY_COLUMNS, how="inner", validate="one_to_one")
            if rows.empty:
                raise ValueError(f"no labelled row at horizon {h}")
            y = rows["is_event"].astype(int).to_numpy()
            if len(np.unique(y)) < 2:
                raise ValueError(f"one class only at horizon {h} ({int(y.sum())} events in {len(y)} rows)")
            X = _as_matrix(rows, self.feature_names)
            cutoffs = rows["cutoff"].to_numpy(dtype="datetime64[ns]")
            groups = customer_groups(rows["customer_id"], p.calibration_groups)
            self.base_rates[h] = float(y.mean())
            self._fit_classifier(h, X, y, cutoffs, groups)
            positive = y == 1
            self.date_models[h] = self._regressor(h, "days_to_event", X, rows, positive)
            self.amount_models[h] = (self._regressor(h, "event_amount", X, rows, positive) if p.with_amount
                                     else None)
        return self

    def _regressor(self, h: int, target: str, X: np.ndarray, rows: pd.DataFrame, positive: np.ndarray
                   ) -> lgb.Booster | None:
        values = rows[target].to_numpy(float)
        use = positive & np.isfinite(values)
        if use.sum() < self.params.min_positives:
            self.notes.append(f"h{h}: no {target} model ({int(use.sum())} positives < {self.params.min_positives})")
            return None
        return self._train(X[use], values[use], "regression_l1", self.params.regressor_estimators)

    def _fit_classifier(self, h: int, X: np.ndarray, y: np.ndarray, cutoffs: np.ndarray, groups: np.ndarray
                        ) -> None:
        """As models/global_engine.GlobalEngine._fit_classifier: blind forward-chaining folds, isotonic map on their
        predictions, the latest fold's per-group classifiers published; identity and one classifier on all rows
        when calibration cannot be done (the note says why)."""
        p = self.params
        n_groups = max(int(p.calibration_groups), 1)
        folds = _calibration_cutoffs(cutoffs, p.calibration_share, p.calibration_min_folds)
        raw, outcome, at_fold, last = [], [], [], {}
        for fold in folds:
            at = cutoffs == fold
            for group in range(n_groups):
                learn = fold_training_rows(cutoffs, groups, fold, group, h)
                score = at & (groups == group)
                if len(np.unique(y[learn])) < 2:
                    continue
                model = self._train(X[learn], y[learn], "binary", p.n_estimators)
                if fold == folds[-1]:
                    last[group] = model
                if score.any():
                    raw.append(model.predict(X[score], num_threads=self._threads))
                    outcome.append(y[score])
                    at_fold.append(cutoffs[score])
        ok = bool(raw) and len(np.unique(np.concatenate(outcome))) == 2 and len(last) == n_groups
        if ok:
            follow, why = bool(p.follow_level), ""
            if p.follow_level == "auto":
                follow, why = level_persists(cutoffs, y, h)
                why = f"; {why}"
            calibrator, how = fit_calibration(np.concatenate(raw), np.concatenate(outcome), np.concatenate(at_fold),
                                              p.isotonic_min_events, follow, p.shrink_to_base_rate)
            how += why
            self.calibrators[h] = calibrator
            self.calibration_rows[h] = (np.concatenate(raw), np.concatenate(outcome), np.concatenate(at_fold))
            self.classifiers[h] = [last[g] for g in range(n_groups)]
            self.notes.append(f"h{h}: calibrated on {sum(len(r) for r in raw)} out-of-time predictions over "
                              f"{len(folds)} cut-off(s), {n_groups} customer group(s): {how}")
        else:
            self.calibrators[h] = None
            self.classifiers[h] = [self._train(X, y, "binary", p.n_estimators)]
            self.notes.append(f"h{h}: calibration skipped (too few cut-offs or one class): identity")

    def classifier_rows(self, h: int, customer_ids: pd.Series | np.ndarray) -> list[tuple[lgb.Booster, np.ndarray]]:
        boosters = self.classifiers[h]
        if len(boosters) == 1:
            return [(boosters[0], np.ones(len(customer_ids), dtype=bool))]
        groups = customer_groups(pd.Series(np.asarray(customer_ids)), len(boosters))
        return [(b, groups == g) for g, b in enumerate(boosters)]

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """One row per customer, cut-off and horizon: OUTPUT_COLUMNS (p_event monotone in the horizon)."""
        if not self.feature_names:
            raise ValueError("the engine is not fitted")
        missing = [c for c in KEY_COLUMNS + self.feature_names if c not in features]
        if missing:
            raise IncompatibleModelError(f"features lack columns the model was trained with: {missing}")
        n = len(features)
        horizons = list(self.params.horizons)
        X = _as_matrix(features, self.feature_names)
        ids = features["customer_id"].astype(str)
        threads = threads_for(n, self.params.num_threads)
        cols = {k: np.full((n, len(horizons)), np.nan) for k in ("p_event", "days_to_event", "event_amount")}
        for j, h in enumerate(horizons):
            prob = np.zeros(n)
            for booster, rows in self.classifier_rows(h, ids):
                if rows.any():
                    prob[rows] = booster.predict(X[rows], num_threads=threads)
            if self.calibrators.get(h) is not None and n:
                prob = np.asarray(self.calibrators[h].predict(prob), dtype=float)
            cols["p_event"][:, j] = prob
            if self.date_models.get(h) is not None and n:
                cols["days_to_event"][:, j] = np.clip(self.date_models[h].predict(X, num_threads=threads), 1.0, h)
            if self.amount_models.get(h) is not None and n:
                cols["event_amount"][:, j] = np.maximum(self.amount_models[h].predict(X, num_threads=threads), 0.0)
        frame = pd.DataFrame({
            "customer_id": np.repeat(features["customer_id"].to_numpy(), len(horizons)),
            "cutoff": np.repeat(pd.to_datetime(features["cutoff"]).to_numpy(), len(horizons)),
            "horizon_days": np.tile(np.asarray(horizons, dtype=np.int64), n),
            **{k: v.reshape(-1) for k, v in cols.items()},
        })
        return monotone_in_horizon(frame)

    # ------------------------------------------------------------------ persistence
    def _files(self) -> dict[str, lgb.Booster | None]:
        files: dict[str, lgb.Booster | None] = {}
        for h in self.params.horizons:
            for g, booster in enumerate(self.classifiers[h]):
                files[f"classifier_h{h}_g{g}.txt"] = booster
            files[f"days_to_event_h{h}.txt"] = self.date_models.get(h)
            files[f"event_amount_h{h}.txt"] = self.amount_models.get(h)
        return files

    def save(self, directory: Path) -> None:
        if not self.classifiers:
            raise ValueError("the engine is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        models = write_boosters(directory, self._files())
        meta = {"format_version": FORMAT_VERSION, "engine": "event", "lightgbm_version": lgb.__version__,
                "feature_names": self.feature_names, "params": self.params.to_dict(), "models": models,
                "n_classifiers": {str(h): len(self.classifiers[h]) for h in self.params.horizons},
                "calibrators": {str(h): (None if self.calibrators.get(h) is None else self.calibrators[h].to_dict())
                                for h in self.params.horizons},
                "base_rates": {str(h): r for h, r in self.base_rates.items()}, "notes": self.notes}
        text = json.dumps(_jsonable(meta), indent=2, sort_keys=True, allow_nan=False) + "\n"
        (directory / ENGINE_FILE).write_bytes(text.encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> "EventEngine":
        directory = Path(directory)
        meta = json.loads((directory / ENGINE_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("engine") != "event":
            raise IncompatibleModelError(f"{directory / ENGINE_FILE}: not an event engine of format "
                                         f"{FORMAT_VERSION}")
        engine = cls()
        engine._reset(EventEngineParams.from_dict(meta["params"]))
        engine.feature_names = list(meta["feature_names"])
        engine.notes = list(meta.get("notes", []))
        engine.base_rates = {int(h): float(r) for h, r in meta.get("base_rates", {}).items()}

        def booster(name: str) -> lgb.Booster | None:
            if meta["models"].get(name) is None:
                return None
            path = directory / name
            if not path.exists():
                raise IncompatibleModelError(f"{path}: model file missing")
            return lgb.Booster(model_str=path.read_text(encoding="utf-8"))

        for h in engine.params.horizons:
            n = int(meta["n_classifiers"][str(h)])
            engine.classifiers[h] = [booster(f"classifier_h{h}_g{g}.txt") for g in range(n)]
            if any(b is None for b in engine.classifiers[h]):
                raise IncompatibleModelError(f"no classifier for horizon {h}")
            stored = meta["calibrators"].get(str(h))
            engine.calibrators[h] = None if stored is None else _calibrator_from_dict(stored)
            engine.date_models[h] = booster(f"days_to_event_h{h}.txt")
            engine.amount_models[h] = booster(f"event_amount_h{h}.txt")
        return engine
