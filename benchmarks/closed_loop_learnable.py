"""How much of a customer's acceptance can their own earlier answers predict? (docs/closed_loop.md section 12)

    .venv/bin/python benchmarks/closed_loop_learnable.py <a finished segone closed-loop home>

Per delivered non-protective recommendation (silver crm_responses, gold next_best_actions): accepted or not; what was
known before its day: the customer's earlier delivered recommendations, the share they engaged with, accepted and
declined counts overall and of the same action, contacts in the last 7 days. A logistic regression fitted on the
earlier half of the delivery days is judged on the later half (ROC AUC), with the action alone and with the history."""
import sys
import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.linear_model import LogisticRegression

home = sys.argv[1]
con = duckdb.connect()
r = con.execute(f"""
with ev as (select * from read_parquet('{home}/lake/silver/crm_responses/**/*.parquet', hive_partitioning=true)),
per as (
  select recommendation_id, any_value(customer_id) customer_id, any_value(action_id) action_id,
         min(event_at) filter (where event = 'delivered') delivered_at,
         bool_or(event in ('opened','clicked','accepted','declined')) engaged,
         bool_or(event = 'accepted') accepted, bool_or(event = 'declined') declined
  from ev group by all)
select * from per where delivered_at is not null order by customer_id, delivered_at""").df()
nba = con.execute(f"select recommendation_id, action_class from read_parquet('{home}/lake/gold/next_best_actions/**/*.parquet', hive_partitioning=true)").df()
r = r.merge(nba.drop_duplicates("recommendation_id"), on="recommendation_id", how="left")
r["day"] = pd.to_datetime(r["delivered_at"]).dt.floor("D")
rows = []
for cust, g in r.groupby("customer_id", sort=False):
    g = g.sort_values("delivered_at")
    for i, row in enumerate(g.itertuples()):
        earlier = g[g["day"] < row.day]
        same = earlier[earlier["action_id"] == row.action_id]
        rows.append((row.recommendation_id, len(earlier), earlier["engaged"].mean() if len(earlier) else np.nan,
                     earlier["accepted"].sum(), earlier["declined"].sum(), len(same), same["accepted"].sum(),
                     same["declined"].sum(), (earlier["day"] >= row.day - pd.Timedelta(days=7)).sum()))
h = pd.DataFrame(rows, columns=["recommendation_id", "n_before", "engaged_share", "acc_before", "dec_before",
                                "same_before", "same_acc", "same_dec", "n_7d"])
d = r.merge(h, on="recommendation_id")
d = d[d["action_class"] != "protective"]
print("non-protective delivered:", len(d), "accepted:", int(d["accepted"].sum()),
      "with earlier contacts:", int((d["n_before"] > 0).sum()))
a = pd.get_dummies(d["action_id"]).astype(float)
hist = d[["n_before", "acc_before", "dec_before", "same_before", "same_acc", "same_dec", "n_7d"]].astype(float)
hist["engaged_share"] = d["engaged_share"].fillna(d["engaged_share"].mean())
hist["no_history"] = (d["n_before"] == 0).astype(float)
y = d["accepted"].to_numpy()
cut = d["day"] >= d["day"].quantile(0.5)   # fit on the earlier half of the nights, judge on the later
for name, X in (("action only", a), ("action + own history", pd.concat([a, hist], axis=1))):
    m = LogisticRegression(max_iter=2000, C=1.0).fit(X[~cut], y[~cut])
    p = m.predict_proba(X[cut])[:, 1]
    print(f"{name:24s} AUC later half {roc_auc_score(y[cut], p):.3f}  (n={int(cut.sum())}, pos={int(y[cut].sum())})")
print(d.groupby(d["same_dec"] > 0)["accepted"].agg(["mean", "size"]))
print(d.groupby(pd.cut(d["engaged_share"], [-.01, .2, .4, .6, .8, 1.0]))["accepted"].agg(["mean", "size"]))
