"""Life-event classifiers: one calibrated LightGBM binary classifier per event type, with a threshold per event and
the evidence behind each flag.

Input: a features frame (customer_id, cutoff, numeric feature columns; one row per customer and cut-off) and a labels
frame (customer_id, cutoff, one 0/1 column per event type; NaN where a row must not be used for that event, e.g. a
customer without the consent the event needs). Per event, the caller names the feature columns the model may use
(so a location feature never reaches a model whose consent does not cover location) and the target precision.

Per event:
1. Time-based split: the latest `holdout_cutoffs` cut-offs are the validation set; training uses the cut-offs that
   end at least `embargo_days` before the first validation cut-off (labels look ahead, so a training cut-off just
   before the validation ones would share its events with them).
2. LightGBM binary classifier on the training rows (deterministic: fixed seed, deterministic mode, fixed threads).
3. Isotonic calibration (models.calibration.IsotonicCalibrator) fitted on the raw scores of the validation rows.
4. Threshold on the calibrated validation probabilities: the lowest one whose precision is >= the target precision
   (with at least `min_flagged_positives` true positives); if none reaches the target, the threshold with the best
   F1 is used and the fallback is written into `notes` (and the model metadata), unless its precision is under
   `min_fallback_lift` x the validation prevalence or under `min_fallback_precision`: then, as with no positive in
   validation, the event never flags
   (threshold = None), noted too.
   Calibration and threshold share the validation cut-offs (documented choice: with a few dozen positives per
   event, splitting them again would leave neither step anything to learn from).
5. Evidence: for a flagged row, the features with the largest positive contributions to its score (LightGBM
   path attributions: models/attribution.py), with their values.
6. Model or rule (DESIGN principle 6, "works from day one"): when the caller gives the event's hand-written rule
   (`spec["rule"]`, a models.life_event_rules dict), the event is published by its model only if the model could be
   trained, can flag (a threshold was found), the validation cut-offs hold at least `min_validation_positive_customers`
   customers with a labelled event, and the model ranks the validation rows at least as well as the rule (PR AUC of
   the raw score, held out from the trees, against the rule's 0/1 flag on the same rows). Otherwise the event falls
   back to its rule: `score` flags where the rule fires, with no probability (NaN: a rule does not estimate one), and
   the rule's conditions and their values as the evidence. The decision, its reason and the figures compared are in
   `events[event]["method"]`, `["method_reason"]`, `["comparison"]`. `rules_only` builds a classifier whose every
   event is on its rule (no labelled cut-off to learn from at all).

Why one model per event rather than one multi-label model:
- the events need different consent (travel_abroad also needs `location`), so they see different feature sets and
  are trained on different populations; a shared model would either leak location signals into the other events
  or drop them from travel;
- the label windows differ per event (a wedding is visible months ahead, a job loss only after it), so one row has
  different labels' horizons per event;
- events are not exclusive (a wedding with a honeymoon abroad, a job loss then a new job), so a multiclass softmax
  is wrong; LightGBM has no native multi-label objective, and a shared-tree multi-output model would be fitted to
  the frequent events (travel outnumbers retirement 80 to 1) at the expense of the rare ones;
- each event needs its own calibration and threshold (a different target precision, a different base rate) and can
  be retrained, monitored or withdrawn on its own.
The cost is 8 small models instead of one, which at ~150 trees of 15 leaves is negligible.

Modelling code only: never imports `pipelines`, reads no config file; save/load use the directory given.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.calibration import IsotonicCalibrator, inside
from models.global_engine import _jsonable, threads_for
from models.life_event_rules import rule_features, rule_fires
from models.metrics import pr_auc

MODEL, RULE = "model", "rule"

FORMAT_VERSION = 2  # 2: per event the method (model or its rule), the rule and the comparison that chose it
META_FILE = "life_events.json"
KEY_COLUMNS = ["customer_id", "cutoff"]


class IncompatibleModelError(ValueError):
    """Saved files that this code cannot read, or features that do not match the model."""


@dataclass
class LifeEventParams:
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 20
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    seed: int = 0
    num_threads: int = 2
    holdout_cutoffs: int = 4
    embargo_days: int = 28
    min_flagged_positives: int = 2
    min_fallback_lift: float = 5.0  # a best-F1 fallback under 5x the prevalence in precision does not flag at all
    min_fallback_precision: float = 0.1  # ... nor one under this precision (on declared labels: ~0.2-0.4 real)
    max_bin: int = 63
    refit: bool = True            # refit on training + validation cut-offs once calibration and threshold are set
    max_pos_weight: float = 20.0  # positives up-weighted by min(negatives / positives, this): rare events need it
    prior_strength: float = 20.0  # pseudo-rows at the base rate that smooth the rule prior's two rates
    min_validation_positive_customers: int = 3  # fewer customers with an event on the validation cut-offs: the rule stays

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LifeEventParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise IncompatibleModelError(f"features missing from the frame: {missing[:10]}")
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64, na_value=np.nan))


def _top_k(credit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries per column of a (features x rows) array, largest first (the lowest feature index
    first among equals): (rows x k indices, rows x k values). k passes of argmax, fast for a wide batch."""
    work = credit.copy()
    n = credit.shape[1]
    index = np.zeros((n, k), dtype=np.int64)
    value = np.zeros((n, k))
    rows = np.arange(n)
    for i in range(k):
        best = np.argmax(work, axis=0)
        index[:, i] = best
        value[:, i] = work[best, rows]
        work[best, rows] = -np.inf
    return index, value


def choose_threshold(y: np.ndarray, p: np.ndarray, target_precision: float, min_positives: int = 1,
                     min_fallback_lift: float = 0.0, min_fallback_precision: float = 0.0
                     ) -> tuple[float | None, str, dict[str, float]]:
    """The lowest threshold t whose rows p >= t reach `target_precision` (and hold >= min_positives positives);
    else the threshold of the best F1, unless its precision is below `min_fallback_precision` (a rare event's best F1
    can sit at a threshold that flags nearly everyone) or below `min_fallback_lift` times the validation
    prevalence (then the event never flags: a flag no better than chance is not a flag). The lift, not an absolute
    precision, because with partial labels (declared events only) an undeclared true event counts as a false
    positive, so the measured precision understates the real one by the declaration rate.
    Returns (threshold or None, how it was chosen, precision/recall there)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    n_pos = float(y.sum())
    if n_pos == 0 or len(y) == 0:
        return None, "no positive on the validation cut-offs: the event never flags", {}
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last]
    flagged = (np.arange(len(ys)) + 1.0)[last]
    thresholds = ps[last]
    precision = tp / flagged
    recall = tp / n_pos
    ok = (precision >= target_precision) & (tp >= min_positives) & (thresholds > 0)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])  # thresholds descend: the last admissible one is the lowest
        how = f"lowest threshold with validation precision >= {target_precision:g}"
    else:
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        f1 = np.where(thresholds > 0, f1, -1)
        i = int(np.argmax(f1))
        how = (f"fallback: no threshold reaches validation precision {target_precision:g}; best F1 "
               f"(precision {precision[i]:.3f}, recall {recall[i]:.3f})")
        prevalence = n_pos / len(y)
        if precision[i] < min_fallback_precision:
            return None, (f"no threshold reaches validation precision {target_precision:g} and the best F1 has "
                          f"precision {precision[i]:.3f} < {min_fallback_precision:g}: the event never flags"), \
                {"precision": float(precision[i]), "recall": float(recall[i])}
        if precision[i] < min_fallback_lift * prevalence:
            return None, (f"no threshold reaches validation precision {target_precision:g} and the best F1 has "
                          f"precision {precision[i]:.3f} < {min_fallback_lift:g} x the prevalence {prevalence:.4f}: "
                          f"the event never flags"), \
                {"precision": float(precision[i]), "recall": float(recall[i])}
    return float(thresholds[i]), how, {"precision": float(precision[i]), "recall": float(recall[i])}


class LifeEventClassifier:
    """One calibrated LightGBM per event type; see the module docstring."""

    def __init__(self, params: LifeEventParams | None = None) -> None:
        self.params = params or LifeEventParams()
        self.events: dict[str, dict[str, Any]] = {}
        self.boosters: dict[str, lgb.Booster | None] = {}
        self.calibrators: dict[str, IsotonicCalibrator | None] = {}
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------------------------- fitting
    def _lgb_params(self) -> dict[str, Any]:
        p = self.params
        return {"objective": "binary", "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
                "min_child_samples": p.min_child_samples, "feature_fraction": p.feature_fraction,
                "bagging_fraction": p.bagging_fraction, "bagging_freq": p.bagging_freq, "seed": p.seed,
                "bagging_seed": p.seed, "feature_fraction_seed": p.seed, "data_random_seed": p.seed,
                "deterministic": True, "force_col_wise": True, "num_threads": p.num_threads, "verbose": -1,
                "max_bin": p.max_bin}

    def _pos_weight(self, y: np.ndarray) -> float:
        n_pos = float(np.sum(y))
        return float(min((len(y) - n_pos) / max(n_pos, 1.0), self.params.max_pos_weight))

    def _prior(self, frame: pd.DataFrame, y: np.ndarray, column: str | None) -> dict[str, Any] | None:
        """The rule prior: the (positive-weighted, smoothed) log-odds of the label where the rule fires and where it
        does not, on the training rows. The trees start from it (init_score) and learn only the corrections the
        labels support; with a handful of labelled positives the model stays close to the rule, with many it can
        move far from it."""
        if not column or column not in frame.columns:
            return None
        fires = pd.to_numeric(frame[column], errors="coerce").fillna(0).to_numpy(float) >= 0.5
        w = self._pos_weight(y)
        k = float(self.params.prior_strength)
        base = float(np.mean(y)) if len(y) else 0.0
        logits = {}
        for name, mask in (("fires", fires), ("silent", ~fires)):
            pos = float(np.sum(y[mask])) * w
            neg = float(np.sum(mask) - np.sum(y[mask]))
            rate = (pos + k * base * w) / (pos + neg + k * (base * w + 1 - base))
            rate = min(max(rate, 1e-6), 1 - 1e-6)
            logits[name] = float(np.log(rate / (1 - rate)))
        return {"column": column, "logit_fires": logits["fires"], "logit_silent": logits["silent"]}

    @staticmethod
    def _prior_margin(frame: pd.DataFrame, prior: Mapping[str, Any] | None) -> np.ndarray | None:
        if not prior:
            return None
        fires = pd.to_numeric(frame[prior["column"]], errors="coerce").fillna(0).to_numpy(float) >= 0.5
        return np.where(fires, prior["logit_fires"], prior["logit_silent"])

    def _train(self, frame: pd.DataFrame, columns: list[str], y: np.ndarray,
               monotone: Mapping[str, int] | None = None, prior: Mapping[str, Any] | None = None
               ) -> lgb.Booster | None:
        n_pos = float(y.sum())
        n_neg = float(len(y) - n_pos)
        if n_pos < 1 or n_neg < 1:
            return None
        params = {**self._lgb_params(), "scale_pos_weight": self._pos_weight(y),
                  "num_threads": threads_for(len(frame), self.params.num_threads)}
        if monotone:
            params["monotone_constraints"] = [int(monotone.get(c, 0)) for c in columns]
            params["monotone_constraints_method"] = "advanced"
        dataset = lgb.Dataset(_matrix(frame, columns), label=y, feature_name=columns, free_raw_data=True,
                              init_score=self._prior_margin(frame, prior),
                              params={"verbose": -1, "max_bin": self.params.max_bin})
        return lgb.train(params, dataset, num_boost_round=self.params.n_estimators)

    def split(self, cutoffs: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(training mask, validation mask) over rows by their cut-off: latest cut-offs validate, an embargo before."""
        values = pd.to_datetime(cutoffs).to_numpy()
        unique = np.unique(values)
        n_val = min(self.params.holdout_cutoffs, max(len(unique) - 1, 0))
        if n_val == 0:
            return np.ones(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
        first_val = unique[len(unique) - n_val]
        validation = values >= first_val
        train = values <= first_val - np.timedelta64(int(self.params.embargo_days), "D")
        if not train.any():  # too few cut-offs for an embargo: keep the time order at least
            train = ~validation
        return train, validation

    def fit(self, features: pd.DataFrame, labels: pd.DataFrame, events: Mapping[str, Mapping[str, Any]]
            ) -> "LifeEventClassifier":
        """events: {event_type: {"features": [column, ...], "target_precision": float,
        "monotone": {column: +1 or -1, ...} (optional), "prior": rule indicator column (optional),
        "rule": the hand-written rule (optional), "rule_version": its version (optional)}}. A +1 constraint says more
        of that evidence never lowers the probability: with a few dozen labelled positives it keeps the trees from
        learning noise the other way. With a rule, the event falls back to it unless the model earns its place on
        the validation cut-offs (module docstring, step 6)."""
        data = features.merge(labels, on=KEY_COLUMNS, how="inner", validate="one_to_one", suffixes=("", "__label"))
        data = data.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
        self.events, self.boosters, self.calibrators, self.notes = {}, {}, {}, []
        for event, spec in events.items():
            if event not in labels.columns:
                raise KeyError(f"no label column for event {event!r}")
            columns = list(spec["features"])
            y_all = pd.to_numeric(data[event + "__label"] if event + "__label" in data else data[event],
                                  errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            usable = ~np.isnan(y_all)
            # the split is per event: an event with a longer look-ahead has fewer cut-offs with complete labels
            tr, va = np.zeros(len(data), dtype=bool), np.zeros(len(data), dtype=bool)
            if usable.any():
                tr[usable], va[usable] = self.split(data.loc[usable, "cutoff"])
            y_tr, y_va = y_all[tr], y_all[va]
            monotone = {c: int(v) for c, v in (spec.get("monotone") or {}).items() if c in columns and int(v)}
            info: dict[str, Any] = {"features": columns, "target_precision": float(spec["target_precision"]),
                                    "monotone": dict(sorted(monotone.items())),
                                    "n_train": int(tr.sum()), "n_train_positives": int(y_tr.sum()),
                                    "n_validation": int(va.sum()), "n_validation_positives": int(y_va.sum()),
                                    "base_rate": float(y_all[usable].mean()) if usable.any() else 0.0, "notes": []}
            prior = self._prior(data.loc[tr], y_tr, spec.get("prior")) if y_tr.sum() > 0 else None
            info["prior"] = prior
            booster = self._train(data.loc[tr], columns, y_tr, monotone, prior)
            if booster is None:
                info["notes"].append("no positive (or no negative) training row: the model predicts the base rate")
            raw_va = self._raw(event, data.loc[va], columns, booster, info["base_rate"], prior)
            calibrator = IsotonicCalibrator().fit(raw_va, y_va) if va.any() else None
            if calibrator is not None and calibrator.identity:
                info["notes"].append("calibration: a single class on the validation cut-offs, identity map")
            self.calibrators[event] = calibrator
            p_va = calibrator.predict(raw_va) if calibrator is not None else raw_va
            threshold, how, at = choose_threshold(y_va, p_va, info["target_precision"],
                                                  self.params.min_flagged_positives,
                                                  self.params.min_fallback_lift,
                                                  self.params.min_fallback_precision)
            info.update({"threshold": threshold, "threshold_rule": how, "validation_at_threshold": at,
                         "validation_pr_auc": pr_auc(y_va, p_va) if y_va.sum() > 0 else float("nan")})
            if how.startswith("fallback") or threshold is None:
                info["notes"].append(how)
                self.notes.append(f"{event}: {how}")
            if spec.get("rule"):
                comparison = self._compare_with_rule(data.loc[va], y_va, raw_va, spec["rule"])
                method, reason = self._choose_method(booster, bool(tr.any()), bool(va.any()), threshold, how,
                                                     comparison)
                info.update({"rule": dict(spec["rule"]), "rule_version": spec.get("rule_version"),
                             "comparison": comparison, "method": method, "method_reason": reason})
                if method == RULE:
                    self.notes.append(f"{event}: published by its rule: {reason}")
            else:
                info.update({"method": MODEL, "method_reason": "no rule given to compare with"})
            if self.params.refit and booster is not None and va.any():
                # the final trees see the validation cut-offs too (the newest behaviour); the calibrator and the
                # threshold fitted on the first model's validation scores are kept: a close approximation
                both = tr | va
                refitted = self._train(data.loc[both], columns, y_all[both], monotone, prior)
                if refitted is not None:
                    booster = refitted
                    info["refitted_on_validation"] = True
            self.boosters[event] = booster
            self.events[event] = info
        return self

    def _compare_with_rule(self, frame: pd.DataFrame, y: np.ndarray, raw: np.ndarray,
                           rule: Mapping[str, Any]) -> dict[str, Any]:
        """The model against its rule on the validation rows (held out from the trees that scored them): PR AUC of
        the raw score and of the rule's 0/1 flag, precision and recall of each flag, and how many rows and customers
        carry a labelled event."""
        fires = rule_fires(frame, rule) if len(frame) else np.zeros(0, dtype=bool)
        positive = y == 1
        n_pos = int(positive.sum())
        out: dict[str, Any] = {
            "metric": "validation PR AUC (model raw score vs rule flag, same rows)",
            "n_validation_rows": int(len(y)), "n_validation_positives": n_pos,
            "n_validation_positive_customers": int(frame.loc[positive, "customer_id"].nunique()) if n_pos else 0,
            "model_pr_auc": pr_auc(y, raw) if n_pos else float("nan"),
            "rule_pr_auc": pr_auc(y, fires.astype(float)) if n_pos else float("nan"),
            "rule_flag_rate": float(fires.mean()) if len(fires) else float("nan"),
            "rule_precision": float(y[fires].mean()) if fires.any() else float("nan"),
            "rule_recall": float(fires[positive].mean()) if n_pos else float("nan"),
        }
        return out

    def _choose_method(self, booster: lgb.Booster | None, has_training: bool, has_validation: bool,
                       threshold: float | None, how: str, comparison: Mapping[str, Any]) -> tuple[str, str]:
        """("model" or "rule", why): the model only where it could be trained, can flag, and ranks the validation
        rows at least as well as the rule with enough customers to tell."""
        least = int(self.params.min_validation_positive_customers)
        customers = int(comparison["n_validation_positive_customers"])
        if not has_training and not has_validation:
            return RULE, ("no cut-off with a complete label yet: the event's label window reaches past the last "
                          "day whose declarations are known")
        if booster is None:
            return RULE, "no labelled positive (or no negative) on the training cut-offs: no model could be trained"
        if not has_validation:
            return RULE, "no validation cut-off with complete labels: the model cannot be checked against the rule"
        if customers < least:
            return RULE, (f"{customers} customer(s) with a labelled event on the validation cut-offs (fewer than "
                          f"{least}): too few to show that the model does better than the rule")
        if threshold is None:
            return RULE, f"the model cannot flag ({how})"
        model_pr, rule_pr = float(comparison["model_pr_auc"]), float(comparison["rule_pr_auc"])
        if not model_pr >= rule_pr:
            return RULE, (f"validation PR AUC {model_pr:.3f} below the rule's {rule_pr:.3f} "
                          f"({customers} customers with an event)")
        return MODEL, (f"validation PR AUC {model_pr:.3f} at least the rule's {rule_pr:.3f} "
                       f"({customers} customers with an event)")

    @classmethod
    def rules_only(cls, events: Mapping[str, Mapping[str, Any]], reason: str,
                   params: LifeEventParams | None = None) -> "LifeEventClassifier":
        """A classifier whose every event is published by its rule (events: {event: {"rule": ..., "rule_version":
        ..., "features": [...] (optional), "target_precision": ... (optional)}}), for a bank with no labelled
        cut-off to learn from yet; `reason` says why."""
        model = cls(params)
        for event, spec in events.items():
            model.events[event] = {
                "features": list(spec.get("features", [])), "target_precision": spec.get("target_precision"),
                "monotone": {}, "n_train": 0, "n_train_positives": 0, "n_validation": 0,
                "n_validation_positives": 0, "base_rate": None, "prior": None, "threshold": None,
                "threshold_rule": "no model", "validation_at_threshold": {}, "validation_pr_auc": float("nan"),
                "notes": [reason], "rule": dict(spec["rule"]), "rule_version": spec.get("rule_version"),
                "comparison": {}, "method": RULE, "method_reason": reason}
            model.boosters[event] = None
            model.calibrators[event] = None
        model.notes.append(f"every event published by its rule: {reason}")
        return model

    def method(self, event: str) -> str:
        return self.events[event].get("method", MODEL)

    # ---------------------------------------------------------------------------------------------- prediction
    @classmethod
    def _raw(cls, event: str, frame: pd.DataFrame, columns: list[str], booster: lgb.Booster | None,
             base_rate: float, prior: Mapping[str, Any] | None = None) -> np.ndarray:
        if len(frame) == 0:
            return np.zeros(0)
        if booster is None:
            return np.full(len(frame), base_rate)
        margin = booster.predict(_matrix(frame, columns), raw_score=True, num_threads=threads_for(len(frame), 2))
        offset = cls._prior_margin(frame, prior)
        if offset is not None:
            margin = margin + offset
        return 1.0 / (1.0 + np.exp(-margin))

    def predict(self, features: pd.DataFrame, events: list[str] | None = None, published: bool = False
                ) -> pd.DataFrame:
        """Long frame: customer_id, cutoff, event_type, probability (calibrated), flagged, raw_score. The model's
        output for every event that has one (what the backtest measures); with `published`, or where no model was
        trained, an event on its rule gives the rule's flag and a NaN probability (what the night publishes)."""
        parts = []
        for event in events or list(self.events):
            info = self.events[event]
            if self.method(event) == RULE and (published or self.boosters.get(event) is None):
                fired = rule_fires(features, info["rule"]) if len(features) else np.zeros(0, dtype=bool)
                parts.append(pd.DataFrame({"customer_id": features["customer_id"].to_numpy(),
                                           "cutoff": features["cutoff"].to_numpy(), "event_type": event,
                                           "probability": np.nan, "flagged": fired, "raw_score": np.nan}))
                continue
            raw = self._raw(event, features, info["features"], self.boosters.get(event), info["base_rate"],
                            info.get("prior"))
            calibrator = self.calibrators.get(event)
            p = inside(calibrator.predict(raw) if calibrator is not None else raw)
            threshold = info["threshold"]
            flagged = np.zeros(len(p), dtype=bool) if threshold is None else p >= threshold
            parts.append(pd.DataFrame({"customer_id": features["customer_id"].to_numpy(),
                                       "cutoff": features["cutoff"].to_numpy(), "event_type": event,
                                       "probability": p, "flagged": flagged,
                                       "raw_score": raw}))
        if not parts:
            return pd.DataFrame(columns=["customer_id", "cutoff", "event_type", "probability", "flagged", "raw_score"])
        return pd.concat(parts, ignore_index=True)

    def _attributor(self, event: str):
        from models.attribution import PathAttributor

        attributors = self.__dict__.setdefault("_attributors", {})
        if event not in attributors:
            attributors[event] = PathAttributor(self.boosters[event])
        return attributors[event]

    def score(self, features: pd.DataFrame, event: str, k: int = 3) -> dict[str, Any]:
        """Everything the nightly stage needs of one event, from one LightGBM pass (the leaves of each row give both
        the score and its path attributions): probability (calibrated), flagged, raw_score, and the k features with
        the largest contributions as arrays top_index (into `columns`), top_value, top_contribution (rows x k,
        largest first; see `explain`). Arrays of len(features) rows."""
        info = self.events[event]
        if self.method(event) == RULE:
            return self._score_rule(features, event, k)
        columns = info["features"]
        n = len(features)
        booster = self.boosters.get(event)
        k = max(0, min(k, len(columns)))
        if booster is None or n == 0:
            raw = np.full(n, info["base_rate"])
            top_index = np.zeros((n, 0), dtype=np.int64)
            top_value = top_contribution = np.zeros((n, 0))
        else:
            matrix = _matrix(features, columns)
            attributor = self._attributor(event)
            leaves = attributor.leaves(matrix, threads_for(n, self.params.num_threads))
            credit = np.ascontiguousarray(attributor.attributions(leaves=leaves).T)   # features x rows
            margin = credit.sum(axis=0) + attributor.expected
            prior = info.get("prior")
            if prior:
                offset = self._prior_margin(features, prior)
                margin = margin + offset
                if prior["column"] in columns:
                    # the rule prior is part of the score: where the rule fires it adds its log-odds over silent rows
                    credit[columns.index(prior["column"])] += offset - prior["logit_silent"]
            raw = 1.0 / (1.0 + np.exp(-margin))
            top_index, top_contribution = _top_k(credit, k)
            top_value = np.take_along_axis(matrix, top_index, axis=1)
        calibrator = self.calibrators.get(event)
        p = inside(calibrator.predict(raw) if calibrator is not None else raw)
        threshold = info["threshold"]
        flagged = np.zeros(n, dtype=bool) if threshold is None else p >= threshold
        return {"probability": p, "flagged": flagged, "raw_score": raw, "columns": columns,
                "top_index": top_index, "top_value": top_value, "top_contribution": top_contribution}

    def _score_rule(self, features: pd.DataFrame, event: str, k: int) -> dict[str, Any]:
        """An event on its rule: flagged where the rule fires; probability and raw score NaN (a rule estimates no
        probability); as evidence, the rule's conditions (the features it read, with their values), those that hold
        first, contribution NaN."""
        rule = self.events[event]["rule"]
        columns = list(dict.fromkeys(rule_features(rule)))
        n = len(features)
        flagged = rule_fires(features, rule) if n else np.zeros(0, dtype=bool)
        k = max(0, min(k, len(columns)))
        matrix = _matrix(features, columns) if n else np.zeros((0, len(columns)))
        holds = np.zeros((len(columns), n))
        for condition in [*(rule.get("any") or []), *(rule.get("all") or [])]:
            holds[columns.index(condition[0])] = np.maximum(holds[columns.index(condition[0])],
                                                             rule_fires(features, {"any": [condition]}))
        top_index, _ = _top_k(holds, k) if n else (np.zeros((0, k), dtype=np.int64), None)
        return {"probability": np.full(n, np.nan), "flagged": flagged, "raw_score": np.full(n, np.nan),
                "columns": columns, "top_index": top_index,
                "top_value": np.take_along_axis(matrix, top_index, axis=1) if n else np.zeros((0, k)),
                "top_contribution": np.full((n, k), np.nan)}

    def explain(self, features: pd.DataFrame, event: str, k: int = 3) -> list[list[dict[str, Any]]]:
        """Per row: the k features with the largest positive contributions to the event's score (path attributions,
        models/attribution.py: an exact decomposition of the raw score, far faster than TreeSHAP; the rule prior's
        log-odds where the rule fires is credited to the rule indicator), as
        [{"feature", "value", "contribution"}], largest first; a row without any positive contribution gets its k
        largest (least negative) ones."""
        scored = self.score(features, event, k)
        columns, index = scored["columns"], scored["top_index"]
        values, top = scored["top_value"], scored["top_contribution"]
        out = []
        for row in range(len(features)):
            keep = [i for i in range(index.shape[1]) if top[row, i] > 0] or list(range(index.shape[1]))
            out.append([{"feature": columns[index[row, i]], "value": _jsonable(values[row, i]),
                         "contribution": round(float(top[row, i]), 4)} for i in keep])
        return out

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        """LightGBM text per event plus life_events.json (sorted keys: the same training gives the same bytes)."""
        if not self.events:
            raise ValueError("the classifier is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        models = {}
        for event, booster in self.boosters.items():
            name = f"{event}.txt"
            if booster is None:
                models[event] = None
                (directory / name).unlink(missing_ok=True)
                continue
            (directory / name).write_bytes(booster.model_to_string().encode("utf-8"))
            models[event] = name
        meta = {"format_version": FORMAT_VERSION, "kind": "life_event_classifier", "lightgbm_version": lgb.__version__,
                "params": self.params.to_dict(), "events": self.events, "models": models, "notes": self.notes,
                "calibrators": {e: (c.to_dict() if c is not None else None) for e, c in self.calibrators.items()}}
        text = json.dumps(_jsonable(meta), indent=2, sort_keys=True, allow_nan=False) + "\n"
        (directory / META_FILE).write_bytes(text.encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> "LifeEventClassifier":
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(f"{directory / META_FILE}: format_version {meta.get('format_version')!r}, "
                                         f"this code reads {FORMAT_VERSION}")
        model = cls(LifeEventParams.from_dict(meta["params"]))
        model.notes = list(meta.get("notes", []))
        for event, info in meta["events"].items():
            info = dict(info)
            if info.get("validation_pr_auc") is None:
                info["validation_pr_auc"] = float("nan")
            model.events[event] = info
            stored = meta["models"].get(event)
            if stored is None:
                model.boosters[event] = None
            else:
                path = directory / stored
                if not path.exists():
                    raise IncompatibleModelError(f"{path}: model file missing")
                model.boosters[event] = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
            calibrator = meta["calibrators"].get(event)
            model.calibrators[event] = None if calibrator is None else IsotonicCalibrator.from_dict(calibrator)
        return model
