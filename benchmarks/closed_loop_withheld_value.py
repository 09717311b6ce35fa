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
- per action, the realised value of accepted recommendations (gold realised_value, matured, after the launch night).
"""
from __future__ import annotations

import math
import sys
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipelines import lake
from pipelines.config import Paths
from pipelines.policy import customer_folds, judged, learning_data, load_scorer, recent_window


def clustered(x: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=x - x.mean())
    g = len(sums)
    se = math.sqrt(g / (g - 1) * np.sum(sums ** 2)) / len(x)
    return x.mean(), x.mean() - 1.96 * se, x.mean() + 1.96 * se


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


if __name__ == "__main__":
    main()
