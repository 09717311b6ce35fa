"""Where a challenger's offline gain comes from, and whether the value it learns from is true of the actions
(docs/closed_loop.md section 19).

    SEGONE_SETTINGS=<home>/closed_loop_settings.yaml PYTHONPATH=$PWD .venv/bin/python \\
        benchmarks/closed_loop_withheld_value.py <home> <challenger version> <day> [nights]

Reads a finished (or stopped) `segone closed-loop` home, never writes it. On the last `nights` (14) nights with
matured decisions as of `day` it recomputes the promotion rule's paired doubly robust difference, challenger minus
the catalogue, with `pipelines.policy.judged` (the arrays `evaluate` judges on), and prints:

- the difference with its customer-clustered 95% interval, on all customers and on each of the two customer folds;
- a conservative challenger per threshold tau: the learned policy where its own model expects a gain above tau, the
  catalogue elsewhere (the Safe Policy Improvement idea: follow the model only where it is sure);
- the decisions where the two policies' greedy actions differ, grouped by (catalogue's pick, challenger's pick),
  with the realised paired term and the model's expected gain;
- per action, the realised value of accepted recommendations (gold realised_value, matured, after the launch night);
- per action in WITHOUT_SELECTION, a comparison without the acceptance's selection: the customer's next 7 days
  (fees and interest, and 4 pounds a day short, from gold customer_outcomes) against their own last 28 days, for
  every slot decision where the action was a candidate, sent or not, accepted or not; the sent and the not-sent
  means Hajek-weighted by the inverse of the exact probability of what the log did; a 95% interval from 400
  bootstrap resamples of customers.
"""
from __future__ import annotations

import math
import sys
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from models.ope import on_policy
from pipelines import lake
from pipelines.config import Paths
from pipelines.policy import customer_folds, judged, learning_data, load_scorer, recent_window


def clustered(x: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """The mean of per-decision terms with its 95% interval clustered by customer (models.ope's own)."""
    estimate = on_policy(x, groups)
    return estimate.estimate, estimate.ci_low, estimate.ci_high


WITHOUT_SELECTION = ("bill_reminder", "subscription_review", "savings_plan")


def sent_against_not_sent(paths: Paths, action: str, seed: int = 0) -> str:
    bandit_log = lake.scan_sql(paths, "gold", "bandit_log")
    outcomes = lake.scan_sql(paths, "gold", "customer_outcomes")
    frame = duckdb.sql(f"""
        with outcome_days as (select customer_id, cast(as_of as date) as as_of, fees_and_interest, shortfall_days
                             from {outcomes}),
        limits as (select max(as_of) as last_outcome from outcome_days),
        decisions as (
            select customer_id, cast(as_of as date) as as_of, slot, action_id, epsilon, n_candidates,
                   candidates[1] = '{action}' as greedy
            from {bandit_log}, limits
            where list_contains(candidates, '{action}')
              and cast(as_of as date) > (select min(cast(as_of as date)) from {bandit_log})
              and cast(as_of as date) + 7 <= last_outcome),
        days as (
            select d.customer_id, d.as_of, d.slot,
                   sum(-o.fees_and_interest - 4 * o.shortfall_days) filter (where o.as_of > d.as_of) as next_7,
                   sum(-o.fees_and_interest - 4 * o.shortfall_days) filter (where o.as_of <= d.as_of) / 28 * 7
                       as usual_7
            from decisions as d join outcome_days as o
              on o.customer_id = d.customer_id and o.as_of between d.as_of - 27 and d.as_of + 7
            group by all),
        final as (select decisions.*, next_7 - usual_7 as outcome from decisions join days using (customer_id, as_of, slot))
        select * from final""").df()
    if not len(frame):
        return f"{action}: no decision with it as a candidate"
    eps, m = frame["epsilon"].to_numpy(float), frame["n_candidates"].to_numpy(float)
    p_send = np.where(frame["greedy"], 1 - eps, 0.0) + eps / m
    sent = (frame["action_id"] == action).to_numpy()
    weight = np.where(sent, 1 / p_send, 1 / (1 - p_send))
    y = frame["outcome"].to_numpy(float)
    _, index = np.unique(frame["customer_id"].to_numpy(), return_inverse=True)

    def difference(w: np.ndarray) -> tuple[float, float, float]:
        a = np.sum(w[sent] * y[sent]) / np.sum(w[sent])
        b = np.sum(w[~sent] * y[~sent]) / np.sum(w[~sent])
        return a - b, a, b

    rng = np.random.default_rng(seed)
    boots = [difference(weight * np.bincount(rng.integers(0, index.max() + 1, index.max() + 1),
                                             minlength=index.max() + 1)[index])[0] for _ in range(400)]
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    d, a, b = difference(weight)
    return (f"{action}: {len(frame)} decisions ({sent.sum()} sent); sent minus not sent, next 7 days against the "
            f"usual 7: {d:+.3f} [{low:+.3f}, {high:+.3f}] pounds (sent {a:+.3f}, not sent {b:+.3f})")


def main() -> None:
    home, version, day = sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3])
    nights = int(sys.argv[4]) if len(sys.argv) > 4 else 14
    paths = Paths(Path(home).resolve())
    recs, slots = learning_data(paths, day, 56)
    slots = recent_window(slots, nights)
    print(f"{len(slots)} decisions, nights {slots['as_of'].min()} .. {slots['as_of'].max()}")
    j = judged(load_scorer(paths, version), None, recs, slots)
    rows = j.rows
    gain = (j.target_new * j.q).sum(1) - (j.target_old * j.q).sum(1)
    d = gain + (j.target_new[rows, j.picked] - j.target_old[rows, j.picked]) / j.mu \
        * (j.reward - j.q[rows, j.picked])
    fold = customer_folds(j.groups)
    print("challenger minus catalogue: %.4f [%.4f, %.4f]" % clustered(d, j.groups))
    for tau in (-math.inf, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2):
        x = np.where(gain > tau, d, 0.0)
        parts = "  ".join("fold %d %.4f [%.4f, %.4f]" % ((f,) + clustered(x[fold == f], j.groups[fold == f]))
                          for f in (0, 1))
        print(f"tau {tau:>5}: follows the model on {np.mean(gain > tau):.3f}  all %.4f [%.4f, %.4f]  "
              % clustered(x, j.groups) + parts)
    frame = pd.DataFrame({"catalogue": j.names[rows, j.target_old.argmax(1)],
                          "challenger": j.names[rows, j.target_new.argmax(1)], "term": d, "expected": gain})
    frame = frame[frame["catalogue"] != frame["challenger"]]
    print(frame.groupby(["catalogue", "challenger"]).agg(n=("term", "size"), term=("term", "mean"),
                                                        expected=("expected", "mean"), total=("term", "sum"))
          .sort_values("n", ascending=False).head(12).round(4).to_string())
    scan = lake.scan_sql(paths, "gold", "realised_value")
    print(duckdb.sql(f"""
        with matured as (select * from {scan} where matured and as_of > (select min(as_of) from {scan})),
        final as (
            select action_id, count(*) as recommendations, sum(accepted::int) as accepted,
                   round(avg(value) filter (where accepted), 2) as mean_value_accepted,
                   round(median(value) filter (where accepted), 2) as median_value_accepted
            from matured group by action_id having sum(accepted::int) >= 5)
        select * from final order by action_id""").df().to_string(index=False))
    for action in WITHOUT_SELECTION:
        print(sent_against_not_sent(paths, action))


if __name__ == "__main__":
    main()
