"""A contextual model of response and value per action: customer context in, expected reward out (models never
import pipelines: frames and arrays in, arrays out).

Expected reward of action a for a customer with context x:

    q(x, a) = P(accept | x, a) * E[value | accepted, x, a] + E[cost of complaints and unsubscribes | a]

- P(accept | x, a): a LightGBM classifier over the context features and the action (a categorical feature),
  trained on every logged recommendation whose answer is known, each weighted by 1 / its logging probability
  (clipped): the weights undo the logging policy's preference for some actions in some contexts, so the model
  learns each action's response where it was rarely chosen too. Shrunk towards the catalogue's prior propensity for
  actions with little data (a Beta prior of `prior_strength` pseudo-decisions).
- E[value | accepted, x, a]: a LightGBM regression on the accepted recommendations whose realised value has
  matured, same weights; with too few of them, the mean accepted value per action, shrunk to the overall mean.
- The event cost: the mean cost per recommendation of the action (complaints, unsubscribes), shrunk the same way.

Cross-fitting: customers are split in two folds (the caller gives the fold of each row); the model that scores a
customer of fold k was trained on the other fold only. The policy a promoted model runs is therefore exactly the one
evaluated offline on the logged data (an honest, out-of-sample evaluation), and the same out-of-fold predictions
serve as the doubly robust estimator's reward model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
MODEL_FILE = "policy_model.json"
FOLDS = 2


class IncompatibleModelError(ValueError):
    """A saved policy model this code cannot read."""


@dataclass
class PolicyParams:
    num_leaves: int = 15
    learning_rate: float = 0.05
    rounds: int = 150
    min_child_samples: int = 30
    max_weight: float = 20.0
    prior_strength: float = 20.0
    min_accepted: int = 30
    min_positives: int = 20
    seed: int = 7

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PolicyParams":
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Fold:
    accept: Any = None                 # lgb.Booster or None
    value: Any = None
    accept_rate: dict[str, float] = field(default_factory=dict)
    value_mean: dict[str, float] = field(default_factory=dict)
    event_cost: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_accepted: int = 0
    n_matured_accepted: int = 0


@dataclass
class PolicyModel:
    actions: list[str]
    features: list[str]
    params: PolicyParams
    folds: list[_Fold]
    prior: dict[str, float]

    # ---------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, context: pd.DataFrame, action: np.ndarray, accepted: np.ndarray, value: np.ndarray,
            event_cost: np.ndarray, logging_probability: np.ndarray, fold: np.ndarray, actions: list[str],
            features: list[str], prior: dict[str, float], params: PolicyParams | None = None) -> "PolicyModel":
        """Fit on logged decisions. context: one row per decision with the feature columns; action: the action id
        taken; accepted: answered accepted; value: realised value once matured (NaN before); event_cost: the cost
        of its complaints and unsubscribes; fold: 0 or 1 per row (by customer)."""
        params = params or PolicyParams()
        action = np.asarray(action, dtype=object)
        accepted = np.asarray(accepted, dtype=bool)
        value = np.asarray(value, dtype=float)
        event_cost = np.asarray(event_cost, dtype=float)
        mu = np.asarray(logging_probability, dtype=float)
        if ((mu <= 0) | (mu > 1) | ~np.isfinite(mu)).any():
            raise ValueError("logging probabilities must be in (0, 1]")
        fold = np.asarray(fold, dtype=np.int64)
        weight = np.minimum(1.0 / mu, params.max_weight)
        model = cls(actions=list(actions), features=list(features), params=params, folds=[], prior=dict(prior))
        X = model._matrix(context, action)
        for k in range(FOLDS):
            train = fold != k
            model.folds.append(model._fit_fold(X[train], action[train], accepted[train], value[train],
                                               event_cost[train], weight[train]))
        return model

    def _fit_fold(self, X: np.ndarray, action: np.ndarray, accepted: np.ndarray, value: np.ndarray,
                  event_cost: np.ndarray, weight: np.ndarray) -> _Fold:
        p = self.params
        out = _Fold(n_train=len(action), n_accepted=int(accepted.sum()))
        overall_cost = float(event_cost.mean()) if len(event_cost) else 0.0
        matured = accepted & np.isfinite(value)
        out.n_matured_accepted = int(matured.sum())
        overall_value = float(np.average(value[matured], weights=weight[matured])) if matured.any() else 0.0
        for a in self.actions:
            mine = action == a
            w = weight[mine]
            prior = float(self.prior.get(a, 0.05))
            out.accept_rate[a] = float((prior * p.prior_strength + np.sum(w * accepted[mine])) /
                                       (p.prior_strength + np.sum(w)))
            m = mine & matured
            out.value_mean[a] = float((overall_value * p.prior_strength / 4 + np.sum(weight[m] * value[m])) /
                                      (p.prior_strength / 4 + np.sum(weight[m])))
            out.event_cost[a] = float((overall_cost * p.prior_strength + np.sum(event_cost[mine])) /
                                      (p.prior_strength + mine.sum()))
        if accepted.sum() >= p.min_positives and (~accepted).sum() >= p.min_positives:
            out.accept = self._train(X, accepted.astype(float), weight, "binary")
        if matured.sum() >= p.min_accepted:
            out.value = self._train(X[matured], value[matured], weight[matured], "regression")
        return out

    def _train(self, X: np.ndarray, y: np.ndarray, weight: np.ndarray, objective: str):
        import lightgbm as lgb

        p = self.params
        params = {"objective": objective, "num_leaves": p.num_leaves, "learning_rate": p.learning_rate,
                  "min_child_samples": p.min_child_samples, "seed": p.seed, "deterministic": True,
                  "force_row_wise": True, "num_threads": 1, "verbose": -1,
                  "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1,
                  "bagging_seed": p.seed + 1, "feature_fraction_seed": p.seed + 2, "data_random_seed": p.seed + 3}
        data = lgb.Dataset(X, label=y, weight=weight, feature_name=[*self.features, "action"],
                           categorical_feature=["action"], params=params, free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=p.rounds)
        return lgb.Booster(model_str=booster.model_to_string())

    def _matrix(self, context: pd.DataFrame, action: np.ndarray) -> np.ndarray:
        cols = []
        for name in self.features:
            col = context[name] if name in context.columns else pd.Series(np.nan, index=context.index)
            cols.append(pd.to_numeric(col.astype("object").where(col.notna(), np.nan), errors="coerce")
                        .astype(float).to_numpy())
        code = pd.Index(self.actions).get_indexer(np.asarray(action, dtype=object)).astype(float)
        code[code < 0] = np.nan
        return np.column_stack([*cols, code]) if cols else code[:, None]

    # ---------------------------------------------------------------------------------------------- scoring
    def score(self, context: pd.DataFrame, actions: list[str], fold: np.ndarray) -> dict[str, np.ndarray]:
        """(n, len(actions)) arrays: p_accept, value (given acceptance), event_cost and expected (the reward q), each
        customer scored by the model of the other fold."""
        n = len(context)
        rows = np.repeat(np.arange(n), len(actions))
        names = np.tile(np.asarray(actions, dtype=object), n)
        flat = self.score_pairs(context, rows, names, np.asarray(fold, dtype=np.int64)[rows])
        return {k: v.reshape(n, len(actions)) for k, v in flat.items()}

    def score_pairs(self, context: pd.DataFrame, rows: np.ndarray, actions: np.ndarray,
                    fold: np.ndarray) -> dict[str, np.ndarray]:
        """The same for (context row, action) pairs: 1-d arrays over the pairs; fold is the fold of each pair's
        customer (scored by the model trained on the other fold)."""
        rows = np.asarray(rows, dtype=np.int64)
        actions = np.asarray(actions, dtype=object)
        fold = np.asarray(fold, dtype=np.int64)
        m = len(rows)
        out = {name: np.zeros(m) for name in ("p_accept", "value", "event_cost")}
        X = self._matrix(context.iloc[rows].reset_index(drop=True), actions) if m else np.zeros((0, 1))
        known = np.isin(actions, self.actions)
        for k in range(FOLDS):
            f = self.folds[k]
            sel = np.flatnonzero(fold == k)
            if not len(sel):
                continue
            rate = np.array([f.accept_rate.get(a, float(self.prior.get(a, 0.05))) for a in actions[sel]])
            mean = np.array([f.value_mean.get(a, 0.0) for a in actions[sel]])
            cost = np.array([f.event_cost.get(a, 0.0) for a in actions[sel]])
            p_acc = f.accept.predict(X[sel]) if f.accept is not None else rate
            val = f.value.predict(X[sel]) if f.value is not None else mean
            p_acc = np.where(known[sel], p_acc, rate)
            val = np.where(known[sel], val, mean)
            out["p_accept"][sel] = np.clip(p_acc, 0.0, 1.0)
            out["value"][sel] = val
            out["event_cost"][sel] = cost
        out["expected"] = out["p_accept"] * out["value"] + out["event_cost"]
        return out

    # ---------------------------------------------------------------------------------------------- files
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        folds = []
        for k, f in enumerate(self.folds):
            entry: dict[str, Any] = {"accept_rate": f.accept_rate, "value_mean": f.value_mean,
                                     "event_cost": f.event_cost, "n_train": f.n_train, "n_accepted": f.n_accepted,
                                     "n_matured_accepted": f.n_matured_accepted}
            for name in ("accept", "value"):
                booster = getattr(f, name)
                entry[name] = None if booster is None else f"fold{k}_{name}.txt"
                path = directory / f"fold{k}_{name}.txt"
                if booster is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_text(booster.model_to_string(), encoding="utf-8")
            folds.append(entry)
        doc = {"format_version": FORMAT_VERSION, "actions": self.actions, "features": self.features,
               "params": self.params.__dict__, "prior": self.prior, "folds": folds}
        (directory / MODEL_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "PolicyModel":
        import lightgbm as lgb

        directory = Path(directory)
        doc = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
        if doc.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(f"{directory / MODEL_FILE}: format_version {doc.get('format_version')!r}, "
                                         f"this code reads {FORMAT_VERSION}")
        folds = []
        for entry in doc["folds"]:
            f = _Fold(accept_rate=entry["accept_rate"], value_mean=entry["value_mean"],
                      event_cost=entry["event_cost"], n_train=entry["n_train"], n_accepted=entry["n_accepted"],
                      n_matured_accepted=entry["n_matured_accepted"])
            for name in ("accept", "value"):
                if entry.get(name):
                    setattr(f, name, lgb.Booster(model_str=(directory / entry[name]).read_text(encoding="utf-8")))
            folds.append(f)
        return cls(actions=doc["actions"], features=doc["features"], params=PolicyParams.from_dict(doc["params"]),
                   folds=folds, prior=doc["prior"])


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x), stable: a positive, increasing transform of an expected value (priorities must be >= 0)."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30))))
