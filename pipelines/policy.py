"""The learned policy: what it learns from, how the night scores with it, and how a challenger is judged offline
before it is promoted (config/learning.yaml; models/policy_model.py; docs/closed_loop.md).

- Learning data: every published recommendation of the last `window_nights` nights with its answer and, once
  matured, its realised value (gold realised_value), the context the policy saw that night (gold decision_context)
  and its logging probability.
- Scoring at night (`promoted_scorer`): the promoted version of family `policy` in the registry; none (or
  `catalogue`) means the catalogue's priors. A customer is scored by the model of the other cross-fitting fold.
- Offline evaluation (`evaluate`): on the bandit's logged slot decisions whose value has matured (gold bandit_log),
  each with its exact logging probability and the candidates it chose among, the challenger's and the champion's
  value per decision by IPS, self-normalised IPS and doubly robust (the challenger's out-of-fold model as the reward
  model), each with a 95% interval (cluster-robust by customer), and the log's checks. The catalogue policy is
  evaluated from the catalogue priorities logged with each candidate; a learned champion from its saved model.
- Promotion (`retrain_policy`): judged on the matured decisions of the last `evaluation_nights` nights (by default
  the retraining period: a week like the one the promoted policy will be deployed for), the challenger replaces the
  champion only when the lower bound of the paired difference challenger minus champion (doubly robust, the same
  decisions, cluster-robust by customer) is above zero, the log passes its checks and the effective sample size is
  enough; every decision goes to gold model_registry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake, registry
from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILY = "policy"
CATALOGUE = "catalogue"


def settings() -> dict[str, Any]:
    return load_config("learning")["policy"]


def features() -> list[str]:
    """The policy's features: the columns of gold decision_context (config/tables.yaml)."""
    from pipelines.schemas import table_schema

    schema = table_schema("gold", "decision_context")
    return [c for c in schema.data_column_names if c != "customer_id"]


def customer_folds(customer_ids) -> np.ndarray:
    """Cross-fitting fold (0 or 1) of each customer: md5 of the customer_id, modulo 2."""
    return lake.bucket_of([str(c) for c in customer_ids], 2).astype(np.int64)


class Scorer:
    """A promoted policy model as the night's arbitration uses it."""

    def __init__(self, model, version: str) -> None:
        self.model = model
        self.version = version

    def score(self, ctx: pd.DataFrame, ci: np.ndarray, aj: np.ndarray, catalogue) -> dict[str, np.ndarray]:
        """For candidate pairs (customer row ci, catalogue index aj): p_accept, value (given acceptance, pounds),
        expected value (pounds) and the priority the arbitration sorts by: softplus(expected) x lever (positive,
        increasing in the expected value)."""
        from models.policy_model import softplus

        action_ids = np.array([x.id for x in catalogue], dtype=object)[aj]
        folds = customer_folds(ctx["customer_id"].to_numpy()[ci]) if len(ci) else np.zeros(0, dtype=np.int64)
        out = self.model.score_pairs(ctx, ci, action_ids, folds)
        levers = np.array([x.lever for x in catalogue])[aj]
        out["priority"] = np.round(softplus(out["expected"]) * levers, 9)
        return out


def promoted_version(paths: Paths) -> str:
    return registry.promoted_version(paths, FAMILY) or CATALOGUE


def load_scorer(paths: Paths, version: str) -> Scorer | None:
    """The scorer of a registry version (None for the catalogue policy). Loaded once per process while the
    version's files stand (`registry.load_cached`: a version saved again under its name, or a file rewritten, is
    loaded again; a newly promoted version replaces its predecessor in the cache)."""
    from models.policy_model import IncompatibleModelError, PolicyModel

    if version == CATALOGUE:
        return None
    directory = registry.family_dir(paths, FAMILY) / version
    try:
        return registry.load_cached(directory, "policy", lambda folder: Scorer(PolicyModel.load(folder), version))
    except (FileNotFoundError, IncompatibleModelError) as error:
        raise SegoneError(f"the promoted policy {version} cannot be loaded ({error}): run `segone retrain` "
                          f"or promote another version") from error


def promoted_scorer(paths: Paths) -> Scorer | None:
    """The night's learned policy, or None while the catalogue's priors are the promoted policy."""
    return load_scorer(paths, promoted_version(paths))


def logged_version(paths: Paths, version: str) -> str:
    """The policy_version a registry version writes on its recommendations."""
    from pipelines.decide import policy as decisioning

    base = str(decisioning()["policy_version"])
    return base if version == CATALOGUE else f"{base}+{version}"


# ---------------------------------------------------------------------------------------------------------------
# Decision context (written by the decide stage)
# ---------------------------------------------------------------------------------------------------------------

def decision_context_frame(ctx: pd.DataFrame, customers) -> pd.DataFrame:
    """The rows of gold decision_context for these customers: customer_id and every policy feature as a float (NaN
    where the context lacks it)."""
    names = features()
    sub = ctx[ctx["customer_id"].astype(str).isin({str(c) for c in customers})]
    data: dict[str, Any] = {"customer_id": sub["customer_id"].astype(str).to_numpy()}
    for name in names:
        col = sub[name] if name in sub.columns else pd.Series(np.nan, index=sub.index)
        data[name] = pd.to_numeric(col.astype("object").where(col.notna(), np.nan), errors="coerce") \
            .astype(float).to_numpy()
    return pd.DataFrame(data)


def write_decision_context(paths: Paths, frame: pd.DataFrame, day: date, bucket: int) -> int:
    """Gold decision_context as_of=D/bucket=N: the features of every customer the policy decided for (a published
    recommendation or a bandit decision, the no-contact arm's included): `decision_context_frame`."""
    names = features()
    final = lake.partition_path(paths, "gold", "decision_context", as_of=day.isoformat(), bucket=str(int(bucket)))
    columns = ", ".join(['cast("customer_id" as varchar) as "customer_id"'] +
                        [f'cast("{n}" as double) as "{n}"' for n in names])
    con = lake.connect(shared=True)
    try:
        con.register("frame", frame)
        return lake.write_relation(con, f"select {columns} from frame", final, paths)
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------------------
# Data for learning and evaluation
# ---------------------------------------------------------------------------------------------------------------

def _scan(paths: Paths, table: str) -> str | None:
    return lake.scan_sql(paths, "gold", table)


def learning_data(paths: Paths, day: date, window_nights: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(recommendations, slot decisions) of the nights in [day - window, day): the recommendations with their answer,
    realised value (NaN until matured) and context; the bandit's slot decisions with their candidates, matured only."""
    rv, ctx, bl = _scan(paths, "realised_value"), _scan(paths, "decision_context"), _scan(paths, "bandit_log")
    if rv is None or ctx is None:
        return pd.DataFrame(), pd.DataFrame()
    lo, hi = (day - timedelta(days=window_nights)).isoformat(), day.isoformat()
    names = features()
    cost = load_config("rewards")["events"]
    con = lake.connect()
    try:
        feature_cols = ", ".join(f'c."{n}"' for n in names)
        recs = con.execute(f"""
            with r as (select * from {rv} where as_of >= '{lo}' and as_of < '{hi}'),
            c as (select * from {ctx} where as_of >= '{lo}' and as_of < '{hi}')
            select r.recommendation_id, r.customer_id, r.as_of, r.action_id, r.action_class, r.logging_probability,
                r.policy_version, r.accepted, r.complained, r.unsubscribed, r.matured,
                case when r.matured then r.value end as value,
                {float(cost.get('complained', 0.0))} * r.complained::int
                    + {float(cost.get('unsubscribed', 0.0))} * r.unsubscribed::int as event_cost,
                {feature_cols}
            from r join c on c.customer_id = r.customer_id and c.as_of = r.as_of
            order by r.as_of, r.customer_id, r.recommendation_id""").df()
        slots = pd.DataFrame()
        if bl is not None:
            slots = con.execute(f"""
                with c as (select * from {ctx} where as_of >= '{lo}' and as_of < '{hi}')
                select b.customer_id, b.as_of, b.slot, b.recommendation_id, b.action_id, b.logging_probability,
                    b.candidates, b.catalogue_scores, b.epsilon, b.policy_version, b.value,
                    {feature_cols}
                from {matured_decisions_sql(bl, rv)} as b
                    left join c on c.customer_id = b.customer_id and c.as_of = b.as_of
                where b.as_of >= '{lo}' and b.as_of < '{hi}'
                order by b.as_of, b.customer_id, b.slot""").df()
    finally:
        con.close()
    for frame in (recs, slots):
        if len(frame):
            frame["as_of"] = pd.to_datetime(frame["as_of"].astype(str)).dt.date
    return recs, slots


def matured_decisions_sql(bandit_log: str, realised_value: str) -> str:
    """The bandit's slot decisions whose value has matured, each with its `value` (a subquery over the two scans or
    views). The no-contact arm's decisions have no recommendation and a known value, 0; they count once the
    recommendations of their night have matured, so they are judged on the same nights as the contacts they compete
    with. One definition for the offline evaluation (`learning_data`) and what a policy then earned
    (`closed_loop._realized`)."""
    return f"""(select b.*, case when b.recommendation_id is null then 0.0 else r.value end as value
        from {bandit_log} as b left join {realised_value} as r using (recommendation_id),
            (select max(as_of) as through from {realised_value} where matured) as m
        where r.matured or (b.recommendation_id is null and b.as_of <= m.through))"""


def fit_challenger(recs: pd.DataFrame, cfg: dict[str, Any]):
    """A policy model on the learning data (every action of the catalogue; its prior propensities as the prior)."""
    from models.policy_model import PolicyModel, PolicyParams
    from pipelines.actions import load_catalogue

    catalogue = load_catalogue()
    return PolicyModel.fit(
        recs, recs["action_id"].to_numpy(), recs["accepted"].to_numpy(bool), recs["value"].to_numpy(float),
        recs["event_cost"].to_numpy(float), recs["logging_probability"].to_numpy(float),
        customer_folds(recs["customer_id"].to_numpy()), [x.id for x in catalogue], features(),
        {x.id: float(x.prior_propensity) for x in catalogue}, PolicyParams.from_dict(cfg.get("model")))


# ---------------------------------------------------------------------------------------------------------------
# Offline evaluation
# ---------------------------------------------------------------------------------------------------------------

def _decision_matrix(slots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per slot decision: the candidate matrix (n, K) of action ids (None pads), availability, the logging
    distribution, the column of the logged pick and the catalogue scores."""
    k = int(slots["candidates"].map(len).max()) if len(slots) else 1
    n = len(slots)
    names = np.full((n, k), None, dtype=object)
    cat = np.full((n, k), np.nan)
    for i, (cands, scores) in enumerate(zip(slots["candidates"], slots["catalogue_scores"])):
        names[i, :len(cands)] = list(cands)
        cat[i, :len(scores)] = list(scores)
    available = names != None  # noqa: E711
    m = available.sum(axis=1)
    eps = slots["epsilon"].to_numpy(float)
    logging = np.where(available, (eps / np.maximum(m, 1))[:, None], 0.0)
    logging[:, 0] += np.where(m > 0, 1.0 - eps, 0.0)
    picked = np.array([list(c).index(a) for c, a in zip(slots["candidates"], slots["action_id"])], dtype=np.int64)
    return names, available, logging, picked, cat


def _context_rows(recs_context: pd.DataFrame, slots: pd.DataFrame) -> pd.DataFrame:
    """The decision context of each slot decision (customer and night): the slot's own, read with it from gold
    decision_context (`learning_data`), else the recommendations'. The recommendations' alone would bias the
    evaluation: a customer whose only decision was the no-contact arm has no recommendation, so the target policy
    would see their context only when the log did not pick the arm (its importance weights then average below 1:
    measured at 0.87, z -2.8, on a week of the 3000 x 28 loop)."""
    names = features()
    if all(name in slots.columns for name in names):
        return slots[["customer_id", "as_of", *names]].reset_index(drop=True)
    ctx = recs_context.drop_duplicates(["customer_id", "as_of"]).set_index(["customer_id", "as_of"])
    index = pd.MultiIndex.from_arrays([slots["customer_id"], slots["as_of"]])
    return ctx.reindex(index).reset_index()


def policy_probabilities(scorer: Scorer | None, ctx: pd.DataFrame, names: np.ndarray, available: np.ndarray,
                         catalogue_scores: np.ndarray, epsilon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target matrix, expected-value matrix) of a policy over the logged candidates: epsilon-greedy by its priority
    (the catalogue's logged priorities for the catalogue policy, the model's for a learned one)."""
    from models.ope import epsilon_greedy_probabilities
    from pipelines.actions import load_catalogue

    from pipelines.decide import no_contact_arm, no_contact_priority, policy as decisioning

    n, k = names.shape
    expected = np.full((n, k), np.nan)
    arm = no_contact_arm(decisioning())
    is_arm = available & (names == arm) if arm is not None else np.zeros((n, k), dtype=bool)
    if scorer is None:
        scores = np.where(available, catalogue_scores, np.nan)
    else:
        catalogue = load_catalogue()
        index = {x.id: j for j, x in enumerate(catalogue)}
        rows, cols = np.nonzero(available & ~is_arm)
        aj = np.array([index.get(str(a), -1) for a in names[rows, cols]], dtype=np.int64)
        ok = aj >= 0
        out = scorer.score(ctx, rows[ok], aj[ok], catalogue)
        scores = np.full((n, k), np.nan)
        scores[rows[ok], cols[ok]] = out["priority"]
        expected[rows[ok], cols[ok]] = out["expected"]
        scores[is_arm] = no_contact_priority()         # the no-contact arm: expected value 0, as the night ranks it
    expected[is_arm] = 0.0
    probs = np.zeros((n, k))
    for e in np.unique(epsilon):
        sel = epsilon == e
        probs[sel] = epsilon_greedy_probabilities(scores[sel], available[sel], float(e))
    return probs, expected


@dataclass
class Judged:
    """The matured slot decisions as the offline evaluation reads them (`judged`): per decision its candidates'
    names, availability and logging distribution, the pick, the catalogue scores, epsilon, the logged probability
    `mu`, the realised `reward`, the customer (`groups`), both policies' probabilities and the challenger's
    out-of-fold reward model `q` (0 where a candidate is not available)."""
    names: np.ndarray
    available: np.ndarray
    logging: np.ndarray
    picked: np.ndarray
    cat: np.ndarray
    eps: np.ndarray
    mu: np.ndarray
    reward: np.ndarray
    groups: np.ndarray
    target_new: np.ndarray
    target_old: np.ndarray
    q: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.arange(len(self.mu))


def judged(challenger: Scorer, champion: Scorer | None, recs: pd.DataFrame, slots: pd.DataFrame) -> Judged:
    """The arrays `evaluate` judges a challenger on (and benchmarks/closed_loop_arm_evidence.py re-weights)."""
    names, available, logging, picked, cat = _decision_matrix(slots)
    ctx = _context_rows(recs, slots)
    eps = slots["epsilon"].to_numpy(float)
    target_new, q = policy_probabilities(challenger, ctx, names, available, cat, eps)
    target_old, _ = policy_probabilities(champion, ctx, names, available, cat, eps)
    return Judged(names=names, available=available, logging=logging, picked=picked, cat=cat, eps=eps,
                  mu=slots["logging_probability"].to_numpy(float), reward=slots["value"].to_numpy(float),
                  groups=slots["customer_id"].to_numpy(), target_new=target_new, target_old=target_old,
                  q=np.where(available, np.nan_to_num(q, nan=0.0), 0.0))   # the challenger's out-of-fold model


def evaluate(challenger: Scorer, champion: Scorer | None, recs: pd.DataFrame, slots: pd.DataFrame,
             level: float = 0.95) -> dict[str, Any]:
    """IPS, SNIPS and DR of the challenger and the champion on the matured slot decisions, and the log's checks."""
    from models.ope import check_log, evaluate as ope, paired_difference

    j = judged(challenger, champion, recs, slots)
    available, logging, picked, rows, mu, reward, groups = j.available, j.logging, j.picked, j.rows, j.mu, \
        j.reward, j.groups
    target_new, target_old, q = j.target_new, j.target_old, j.q
    out: dict[str, Any] = {"n_decisions": int(len(slots)), "n_customers": int(len(set(groups))),
                           "nights": sorted({d.isoformat() for d in slots["as_of"]})}
    for name, target in (("challenger", target_new), ("champion", target_old)):
        estimates = ope(reward, mu, target[rows, picked], q[rows, picked], (target * q).sum(axis=1), groups, level)
        out[name] = {k: v.as_dict() for k, v in estimates.items()}
    # the challenger minus the champion on the same decisions, with the interval of the paired difference
    difference = paired_difference(reward, mu, target_new[rows, picked], target_old[rows, picked], q[rows, picked],
                                   (target_new * q).sum(axis=1), (target_old * q).sum(axis=1), groups, level)
    out["difference"] = {k: v.as_dict() for k, v in difference.items()}
    out["greedy_agreement"] = float(np.mean(target_new.argmax(axis=1) == target_old.argmax(axis=1))) \
        if len(slots) else math.nan
    check = check_log(mu, actions=picked, available=available, logging_matrix=logging,
                      target_probability=target_new[rows, picked], target_matrix=target_new)
    out["log_check"] = {k: v for k, v in check.as_dict().items() if k not in ("weight_balance", "frequency_z")}
    out["log_ok"] = check.ok
    out["logged_value_per_decision"] = float(reward.mean()) if len(reward) else math.nan
    return out


# ---------------------------------------------------------------------------------------------------------------
# Retraining
# ---------------------------------------------------------------------------------------------------------------

def retrain_policy(paths: Paths, day: date) -> dict[str, Any]:
    """Train a challenger on the logged decisions, judge it offline against the champion, promote it only when its
    lower bound beats the champion's estimate. Returns the registry decision."""
    started = time.perf_counter()
    cfg = settings()
    promotion = cfg["promotion"]
    champion_version = promoted_version(paths)
    recs, slots = learning_data(paths, day, int(cfg["window_nights"]))
    matured = int(recs["matured"].sum()) if len(recs) else 0
    decision: dict[str, Any] = {"family": FAMILY, "as_of": day.isoformat(), "challenger_version": None,
                                "champion_version": champion_version, "promoted": False,
                                "promoted_version": champion_version, "metric": f"{promotion['estimator']} value per "
                                f"decision (pounds), {int(float(promotion['level']) * 100)}% interval"
                                + (", promoted on the paired difference" if promotion.get("rule", "paired") ==
                                   "paired" else ""),
                                "n_samples": matured}
    if matured < int(cfg["min_decisions"]) or not len(slots):
        decision["reason"] = (f"not enough data to train a challenger: {matured} recommendations with a matured "
                              f"value (need {cfg['min_decisions']})")
        return _finish(paths, day, decision, {}, started)
    model = fit_challenger(recs, cfg)
    slots = recent_window(slots, evaluation_nights(cfg))
    digest = hashlib.sha256(pd.util.hash_pandas_object(recs[["recommendation_id", "accepted"]], index=False)
                            .to_numpy().tobytes()).hexdigest()[:10]
    version = f"policy-{day.isoformat()}-{digest}"
    challenger = Scorer(model, version)
    champion = load_scorer(paths, champion_version)
    result = evaluate(challenger, champion, recs, slots, float(promotion["level"]))
    est = promotion["estimator"]
    new, old = result["challenger"][est], result["champion"][est]
    metadata = {"trained_for": day.isoformat(), "window_nights": int(cfg["window_nights"]),
                "evaluation_nights": evaluation_nights(cfg), "n_recommendations":
                int(len(recs)), "n_matured": matured, "features": features(), "evaluation": result,
                "params": cfg.get("model")}
    registry.save_version(paths, FAMILY, version, model.save, metadata)
    decision.update({"challenger_version": version, "challenger_score": new["estimate"],
                     "challenger_ci_low": new["ci_low"], "challenger_ci_high": new["ci_high"],
                     "champion_score": old["estimate"], "n_samples": result["n_decisions"]})
    promoted, reason = promotion_decision(result, promotion)
    decision["reason"] = reason
    if promoted:
        registry.promote(paths, FAMILY, version, reason)
        decision.update({"promoted": True, "promoted_version": version})
    return _finish(paths, day, decision, result, started)


def evaluation_nights(cfg: dict[str, Any]) -> int:
    """Nights of matured decisions a challenger is judged on: `evaluation_nights`, by default the retraining period
    (a promoted policy is deployed for that many nights: its estimate should be of decisions like those)."""
    value = cfg.get("evaluation_nights")
    if value is None:
        value = load_config("learning")["retrain"]["every_nights"]
    if int(value) < 1:
        raise SegoneError(f"config/learning.yaml: policy.evaluation_nights must be at least 1, not {value}")
    return int(value)


def recent_window(slots: pd.DataFrame, nights: int) -> pd.DataFrame:
    """The slot decisions of the last `nights` nights that have matured decisions (the most recent comparable
    week): the whole log mixes a launch night's backlog (every customer eligible at once, one-off products taken)
    with ordinary nights, and a policy deployed next week meets ordinary nights."""
    if not len(slots):
        return slots
    days = sorted(set(slots["as_of"]))
    keep = set(days[-nights:])
    return slots[slots["as_of"].isin(keep)].reset_index(drop=True)


def promotion_decision(result: dict[str, Any], promotion: dict[str, Any]) -> tuple[bool, str]:
    """The promotion rule on an evaluation (`evaluate`): the log passes its checks, the challenger's weights leave
    enough effective sample, and (rule `paired`, the default) the lower bound of the paired difference challenger
    minus champion on the same decisions is above zero, or (rule `separate`, the former rule) the lower bound of the
    challenger's own interval beats the champion's estimate."""
    est = promotion["estimator"]
    rule = str(promotion.get("rule", "paired"))
    if rule not in ("paired", "separate"):
        raise SegoneError(f"config/learning.yaml: policy.promotion.rule must be paired or separate, not {rule}")
    new, old = result["challenger"][est], result["champion"][est]
    ess = float(result["log_check"].get("ess_share", 0.0))
    if not result["log_ok"]:
        return False, "the log failed its checks: " + "; ".join(result["log_check"]["problems"])
    if ess < float(promotion["min_ess_share"]):
        return False, f"too little overlap with the logged decisions (effective sample share {ess:.1%})"
    if rule == "paired":
        diff = result["difference"][est]
        words = (f"challenger minus champion, {est} on the same {result['n_decisions']} decisions: "
                 f"{diff['estimate']:.3f} [{diff['ci_low']:.3f}, {diff['ci_high']:.3f}] (challenger "
                 f"{new['estimate']:.3f}, champion {old['estimate']:.3f})")
        if diff["ci_low"] > 0:
            return True, f"the challenger beats the champion: {words}"
        return False, f"the challenger does not beat the champion: {words}"
    if new["ci_low"] > old["estimate"]:
        return True, (f"{est} lower bound {new['ci_low']:.3f} beats the champion's estimate {old['estimate']:.3f} "
                      f"({result['n_decisions']} decisions)")
    return False, (f"{est} lower bound {new['ci_low']:.3f} does not beat the champion's estimate "
                   f"{old['estimate']:.3f} ({result['n_decisions']} decisions)")


def _finish(paths: Paths, day: date, decision: dict[str, Any], details: dict[str, Any], started: float) -> dict:
    decision["details"] = details
    decision["seconds"] = round(time.perf_counter() - started, 2)
    write_run_metrics(paths, day.isoformat(), "retrain_policy", decision)
    log.info("policy retraining for %s: %s", day, decision["reason"])
    return decision
