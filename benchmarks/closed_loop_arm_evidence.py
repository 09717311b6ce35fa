"""How wide is the promotion rule's interval as a function of the no-contact arm's exploration share and of the
nights judged? (docs/closed_loop.md section 18)

    SEGONE_SETTINGS=<home>/closed_loop_settings.yaml PYTHONPATH=$PWD .venv/bin/python \\
        benchmarks/closed_loop_arm_evidence.py <home> --challenger policy-2026-12-10-3f49edbc8d \\
        --first 2026-11-27 --nights 7 14 21 --shares 0 0.05 0.10 0.20 [--json out.json]

Reads a finished `segone closed-loop` home (never writes it): the matured slot decisions of gold bandit_log with
their contexts, a challenger saved in the home's registry, and the catalogue policy as the champion. On the first
`nights[0]` nights from `first` it recomputes the paired doubly robust difference challenger minus catalogue exactly
as `retrain_policy` does (`pipelines.policy.evaluate`), and then:

- **by night count**: the same difference on the first 7, 14, 21 ... nights from `first` (observed), next to the
  width the first window's spread predicts for that many decisions (half-width x sqrt(n_first / n));
- **by the arm's exploration share** eta: a logger that, at every slot where the arm is a candidate, picks it with
  probability eta and otherwise runs the epsilon-greedy choice it has now (mu' = (1 - eta) mu + eta [arm]). The
  spread of one decision's paired term under mu' is estimated from the same log by importance weighting each logged
  decision by mu'(a)/mu(a) (its emulated frequency) and each later slot of a customer-night by the change in the
  chance of reaching it (the arm ends a customer's slots). Two readings of "the policies compared":
  `deployed` (both policies carry the share, as they would be deployed: the difference itself shrinks by 1 - eta)
  and `logger-only` (the share is exploration of the logger alone; the targets stay epsilon-greedy). The clustered
  half-width is the weighted i.i.d. one times the log's own design effect (its clustered over its i.i.d. width).

Printed per row: decisions, the paired difference and its 95% half-width, the chance a true +10% of the catalogue's
value passes the rule (one-sided, as section 14), and with the share the contacts the share withholds a night.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from datetime import date, timedelta
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

Z = NormalDist().inv_cdf(0.975)


def _terms(tn, to, q, mu_at, picked, reward):
    rows = np.arange(len(reward))
    return ((tn * q).sum(axis=1) - (to * q).sum(axis=1)
            + (tn[rows, picked] - to[rows, picked]) / mu_at * (reward - q[rows, picked]))


def _clustered_half(d: np.ndarray, groups: np.ndarray) -> float:
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=d - d.mean())
    g = len(sums)
    return Z * math.sqrt(g / (g - 1) * np.sum(sums ** 2)) / len(d)


def _reach_weights(slots: pd.DataFrame, cont: np.ndarray) -> np.ndarray:
    """Per decision: the product over the earlier slots of its customer-night of `cont` (the ratio of the chances
    of going on to the next slot under the emulated and the logged policy)."""
    frame = pd.DataFrame({"key": slots["customer_id"].astype(str) + "|" + slots["as_of"].astype(str),
                          "slot": slots["slot"].to_numpy(), "cont": cont})
    frame = frame.sort_values(["key", "slot"])
    earlier = frame.groupby("key")["cont"].transform(lambda s: s.cumprod().shift(1, fill_value=1.0))
    return earlier.reindex(slots.index).to_numpy(float)


def analyse(slots: pd.DataFrame, recs: pd.DataFrame, challenger, shares: list[float], arm: str) -> dict:
    from pipelines.policy import judged

    slots = slots.reset_index(drop=True)
    j = judged(challenger, None, recs, slots)
    names, available, logging, picked, rows = j.names, j.available, j.logging, j.picked, j.rows
    mu, reward, groups, tn, to, q = j.mu, j.reward, j.groups, j.target_new, j.target_old, j.q
    d = _terms(tn, to, q, mu, picked, reward)
    half = _clustered_half(d, groups)
    iid_half = Z * d.std(ddof=1) / math.sqrt(len(d))
    design = half / iid_half
    is_arm = available & (names == arm)
    has_arm = is_arm.any(axis=1)
    arm_col = is_arm.argmax(axis=1)
    logged_arm = is_arm[rows, picked]
    withhold = has_arm & (tn.argmax(axis=1) == arm_col)
    # where the spread comes from: the terms' squared deviations by the kind of logged decision
    dev2 = (d - d.mean()) ** 2
    kinds = {"logged the arm": logged_arm,
             "logged a contact the challenger would withhold": ~logged_arm & withhold,
             "logged a contact, the challenger also contacts": ~logged_arm & ~withhold}
    share_of_variance = {k: {"decisions": int(m.sum()), "share_of_variance": float(dev2[m].sum() / dev2.sum())}
                         for k, m in kinds.items()}
    # within the withheld contacts: the residual's squared size by what the customer did with the contact
    resid2 = (reward - q[rows, picked]) ** 2
    answers = slots[["recommendation_id"]].merge(
        recs[["recommendation_id", "accepted", "event_cost"]].drop_duplicates("recommendation_id"),
        on="recommendation_id", how="left")
    accepted = answers["accepted"].fillna(False).to_numpy(bool)
    costly = answers["event_cost"].fillna(0.0).to_numpy(float) != 0
    held = ~logged_arm & withhold
    total = resid2[held].sum()
    residual_by_answer = {name: {"decisions": int((held & m).sum()),
                                 "share_of_squared_residual": float(resid2[held & m].sum() / total) if total else 0.0}
                          for name, m in (("accepted", accepted), ("complained or unsubscribed, not accepted",
                                                                   costly & ~accepted),
                                          ("neither", ~accepted & ~costly))}
    champion = float(np.mean((to * q).sum(axis=1) + to[rows, picked] / mu * (reward - q[rows, picked])))
    out = {"n": int(len(d)), "customers": int(len(set(groups))), "difference": float(d.mean()), "half": half,
           "design_effect": design, "champion": champion, "greedy_agreement":
           float(np.mean(tn.argmax(axis=1) == to.argmax(axis=1))), "arm_logged_share": float(logged_arm.mean()),
           "challenger_withholds_share": float(withhold.mean()), "variance_by_kind": share_of_variance,
           "withheld_residual_by_answer": residual_by_answer,
           "shares": []}
    for eta in shares:
        def mix(matrix: np.ndarray) -> np.ndarray:
            mixed = np.where(has_arm[:, None], (1.0 - eta) * matrix, matrix)
            mixed[rows[has_arm], arm_col[has_arm]] += eta
            return mixed
        mu_new = mix(logging)
        p_stop_log = np.where(has_arm, logging[rows, arm_col], 0.0)
        p_stop_new = np.where(has_arm, mu_new[rows, arm_col], 0.0)
        reach = _reach_weights(slots, (1.0 - p_stop_new) / (1.0 - p_stop_log))
        w = reach * mu_new[rows, picked] / logging[rows, picked]
        row = {"eta": eta, "arm_share_of_decisions": float(np.sum(reach * mu_new[rows, arm_col] * has_arm) /
                                                            reach.sum()),
               "decisions": float(reach.sum()),
               "contacts": float(np.sum(reach * (1.0 - p_stop_new))),
               "contacts_now": float(np.sum(1.0 - p_stop_log))}
        for mode, (a, b) in (("deployed", (mix(tn), mix(to))), ("logger-only", (tn, to))):
            dd = _terms(a, b, q, mu_new[rows, picked], picked, reward)
            mean = float(np.sum(w * dd) / np.sum(w))
            var = float(np.sum(w * (dd - mean) ** 2) / np.sum(w))
            h = Z * math.sqrt(var / reach.sum()) * design
            gain = 0.1 * champion * ((1.0 - eta) if mode == "deployed" else 1.0)
            row[mode] = {"difference": mean, "half": h, "sigma": math.sqrt(var) * design,
                         "power_10pct": NormalDist().cdf(gain / (h / Z) - Z)}
        out["shares"].append(row)
    out["power_10pct"] = NormalDist().cdf(0.1 * champion / (half / Z) - Z)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home")
    parser.add_argument("--challenger", required=True, help="a policy version in the home's registry")
    parser.add_argument("--first", required=True, type=date.fromisoformat, help="first night judged")
    parser.add_argument("--nights", type=int, nargs="+", default=[7, 14])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.20])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--emulate-retrain", type=date.fromisoformat,
                        help="also re-run the policy retraining of this night offline (config/learning.yaml)")
    args = parser.parse_args()
    os.environ["SEGONE_HOME"] = str(Path(args.home).resolve())
    from pipelines.config import Paths
    from pipelines.decide import no_contact_arm, policy as decisioning
    from pipelines.policy import learning_data, load_scorer

    paths = Paths(Path(args.home).resolve())
    last = args.first + timedelta(days=max(args.nights) - 1)
    recs, slots = learning_data(paths, last + timedelta(days=1), 56)
    challenger = load_scorer(paths, args.challenger)
    arm = no_contact_arm(decisioning()) or "no_contact"
    results = []
    base = None
    for k in args.nights:
        end = args.first + timedelta(days=k - 1)
        sel = slots[(slots["as_of"] >= args.first) & (slots["as_of"] <= end)]
        r = analyse(sel, recs, challenger, args.shares if k == args.nights[0] else [0.0], arm)
        r["window"] = [args.first.isoformat(), end.isoformat()]
        if base is None:
            base = r
        r["half_predicted_from_first"] = base["half"] * math.sqrt(base["n"] / r["n"])
        results.append(r)
        print(f"{r['window'][0]}..{r['window'][1]} ({k} nights): n {r['n']}, customers {r['customers']}, "
              f"difference {r['difference']:+.4f} +- {r['half']:.4f} (predicted +- {r['half_predicted_from_first']:.4f}),"
              f" champion {r['champion']:.4f}, agreement {r['greedy_agreement']:.2f}, design effect "
              f"{r['design_effect']:.2f}, P(+10% passes) {r['power_10pct']:.3f}")
        for kind, v in r["variance_by_kind"].items():
            print(f"    {kind:<50} {v['decisions']:>6} decisions, {v['share_of_variance']:.1%} of the variance")
        for kind, v in r["withheld_residual_by_answer"].items():
            print(f"      withheld, {kind:<42} {v['decisions']:>6} decisions, "
                  f"{v['share_of_squared_residual']:.1%} of the squared residual")
        for s in r["shares"]:
            print(f"    eta {s['eta']:.2f}: arm {s['arm_share_of_decisions']:.1%} of {s['decisions']:.0f} decisions, "
                  f"contacts {s['contacts']:.0f} (now {s['contacts_now']:.0f}); deployed "
                  f"{s['deployed']['difference']:+.4f} +- {s['deployed']['half']:.4f} P {s['deployed']['power_10pct']:.3f};"
                  f" logger-only {s['logger-only']['difference']:+.4f} +- {s['logger-only']['half']:.4f} "
                  f"P {s['logger-only']['power_10pct']:.3f}")
    out: dict = {"windows": results}
    if args.emulate_retrain:
        out["emulated_retraining"] = emulate_retraining(paths, args.emulate_retrain)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float) + "\n")


def emulate_retraining(paths, day: date) -> dict:
    """`retrain_policy` of night `day` as the home's lake stood then, without writing anything: the recommendations
    of [day - window, day) with their values matured only through day - horizon (the final lake has them all), a
    challenger fitted on them, judged against the catalogue on the last `evaluation_nights` matured nights, and the
    promotion rule's decision."""
    from pipelines.config import load_config
    from pipelines.policy import (Scorer, evaluate, evaluation_nights, fit_challenger, learning_data,
                                  promotion_decision, recent_window, settings)

    cfg = settings()
    horizon = int(load_config("rewards")["horizon_days"])
    through = day - timedelta(days=horizon)
    recs, slots = learning_data(paths, day, int(cfg["window_nights"]))
    late = recs["as_of"] > through
    recs.loc[late, "matured"] = False
    recs.loc[late, "value"] = np.nan
    slots = recent_window(slots[slots["as_of"] <= through], evaluation_nights(cfg))
    challenger = Scorer(fit_challenger(recs, cfg), f"emulated-{day.isoformat()}")
    result = evaluate(challenger, None, recs, slots, float(cfg["promotion"]["level"]))
    promoted, reason = promotion_decision(result, cfg["promotion"])
    print(f"emulated retraining of {day} (evaluation_nights {evaluation_nights(cfg)}): {reason}; promoted {promoted}")
    return {"day": day.isoformat(), "evaluation_nights": evaluation_nights(cfg), "window": [min(result["nights"]),
            max(result["nights"])], "n_decisions": result["n_decisions"], "difference": result["difference"]["dr"],
            "greedy_agreement": result["greedy_agreement"], "log_ok": result["log_ok"], "promoted": promoted,
            "reason": reason}


if __name__ == "__main__":
    main()
