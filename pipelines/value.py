"""Value, not clicks: the realised value of every recommendation and of every customer, measured from the lake
(config/rewards.yaml; docs/closed_loop.md).

Per customer and day, the outcomes the lake can measure (`daily_outcomes`, from silver balances, accounts and fee
postings): fees and overdraft interest paid (interest accrued on the day's negative current balance at the bank's
tariff), whether the current accounts ended below zero (a shortfall day), net money into savings, and the bank's
margin on the customer's products. Each outcome has a value per unit in config.

A recommendation made on night D (`realised_values`) is judged on the days D+1 .. D+horizon by the outcomes its
action is meant to change, once accepted: for each such day and outcome, the customer's outcome minus their own
baseline (the average day of the baseline_days up to D) minus the control group's trend on that day (the control
customers' outcome minus their own baseline: month ends, paydays and seasons move everyone), shared equally between
the customer's accepted recommendations that target the same outcome on that day (so a day is never counted twice).
A recommendation that was not accepted changed nothing (its customer's outcomes are theirs); complaints and
unsubscribes cost their configured value whatever happened. The value is final ("matured") after horizon days.

Per night (`value_summary`): value per customer for the treated and the control customers, the day's and the
cumulative since the first night, by action class, each with a 95% interval (normal approximation over customers),
and the treated-minus-control uplift (Welch). Written as gold tables `customer_outcomes`, `realised_value` and
`value_summary` (config/tables.yaml) by the nightly stage `measure_value`.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake
from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

OUTCOMES = ("fees_and_interest", "shortfall_days", "savings_added", "product_margin")
CLASSES = ("protective", "service", "commercial")
EVENTS = ("complained", "unsubscribed")
MARGIN_PRODUCTS = ("savings", "credit_card", "loan", "mortgage")
Z95 = 1.959963984540054


def rewards(cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """config/rewards.yaml, checked: a clear message naming every problem."""
    cfg = cfg if cfg is not None else load_config("rewards")
    problems = []
    for key in ("version", "horizon_days", "baseline_days", "outcomes", "overdraft_ear", "product_margin_per_year",
                "events", "actions"):
        if key not in cfg:
            problems.append(f"missing '{key}'")
    if not problems:
        if set(cfg["outcomes"]) != set(OUTCOMES):
            problems.append(f"outcomes must be exactly {', '.join(OUTCOMES)}, not {', '.join(cfg['outcomes'])}")
        for name, targets in (cfg["actions"] or {}).items():
            unknown = set(targets or []) - set(OUTCOMES)
            if unknown:
                problems.append(f"action '{name}': unknown outcomes {sorted(unknown)}")
        if set(cfg["events"]) - set(EVENTS):
            problems.append(f"events must be among {', '.join(EVENTS)}")
        if int(cfg["horizon_days"]) < 1 or int(cfg["baseline_days"]) < 1:
            problems.append("horizon_days and baseline_days must be at least 1")
        unknown = set(cfg["product_margin_per_year"]) - set(MARGIN_PRODUCTS)
        if unknown:
            problems.append(f"product_margin_per_year: unknown products {sorted(unknown)}")
    if problems:
        raise SegoneError("config/rewards.yaml: " + "; ".join(problems))
    return cfg


def targets_of(action_id: str, cfg: dict[str, Any]) -> tuple[str, ...]:
    targets = (cfg.get("actions") or {}).get(action_id)
    return tuple(OUTCOMES) if targets is None else tuple(targets)


# ---------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------

def daily_outcomes(balances: pd.DataFrame, fees: pd.DataFrame, days: list[date], cfg: dict[str, Any]) -> pd.DataFrame:
    """Per customer and day of `days`: the measured outcomes in their natural units.

    balances: customer_id, account_id, product, as_of (date), balance (end of day) of the bank's own accounts, for
    the days and the day before the first (for the savings change); an account without a balance on a day keeps its
    last one. fees: customer_id, booking_date, amount (signed), description: fee postings on the bank's accounts.
    Returns customer_id, as_of, current_balance, savings_balance, fees_and_interest, shortfall_days, savings_added,
    product_margin."""
    columns = ["customer_id", "as_of", "current_balance", "savings_balance", *OUTCOMES]
    if not days:
        return pd.DataFrame({c: [] for c in columns})
    first, last = min(days), max(days)
    spine = pd.date_range(first - timedelta(days=1), last, freq="D").date
    bal = balances[["customer_id", "account_id", "product", "as_of", "balance"]].copy()
    bal["as_of"] = pd.to_datetime(bal["as_of"]).dt.date
    bal = bal[(bal["as_of"] >= spine[0]) & (bal["as_of"] <= last)]
    if bal.empty:
        return pd.DataFrame({c: [] for c in columns})
    wide = bal.pivot_table(index="as_of", columns="account_id", values="balance", aggfunc="last")
    wide = wide.reindex(spine).ffill()
    owner = bal.drop_duplicates("account_id").set_index("account_id")
    long = wide.stack().rename("balance").reset_index()
    long.columns = ["as_of", "account_id", "balance"]
    long["customer_id"] = owner["customer_id"].reindex(long["account_id"]).to_numpy()
    long["product"] = owner["product"].reindex(long["account_id"]).to_numpy()
    long["balance"] = long["balance"].astype(float)
    rates = cfg["product_margin_per_year"]
    sign = {"savings": 1.0, "credit_card": -1.0, "loan": -1.0, "mortgage": -1.0}
    long["margin"] = 0.0
    for product, rate in rates.items():
        mine = long["product"] == product
        long.loc[mine, "margin"] = np.maximum(0.0, sign[product] * long.loc[mine, "balance"]) * float(rate) / 365.0
    long["current"] = np.where(long["product"] == "current", long["balance"], 0.0)
    long["savings"] = np.where(long["product"] == "savings", long["balance"], 0.0)
    long["has_current"] = long["product"] == "current"
    per = long.groupby(["customer_id", "as_of"], sort=True).agg(
        current_balance=("current", "sum"), savings_balance=("savings", "sum"), product_margin=("margin", "sum"),
        has_current=("has_current", "any")).reset_index()
    per = per.sort_values(["customer_id", "as_of"])
    previous = per.groupby("customer_id")["savings_balance"].shift(1)
    per["savings_added"] = per["savings_balance"] - previous.fillna(per["savings_balance"])
    per["shortfall_days"] = ((per["current_balance"] < 0) & per["has_current"]).astype(float)
    interest = np.maximum(0.0, -per["current_balance"]) * float(cfg["overdraft_ear"]) / 365.0
    fee = fees[["customer_id", "booking_date", "amount", "description"]].copy() if len(fees) else \
        pd.DataFrame({"customer_id": [], "booking_date": [], "amount": [], "description": []})
    if len(fee):
        fee["booking_date"] = pd.to_datetime(fee["booking_date"]).dt.date
        charge = fee["description"].fillna("").str.contains(str(cfg.get("interest_charge_text") or "\0"),
                                                            case=False, regex=False)
        fee = fee[~charge & (fee["amount"].astype(float) < 0)]
        fee = fee.groupby(["customer_id", "booking_date"])["amount"].sum().rename("fee").reset_index()
        fee["fee"] = -fee["fee"].astype(float)
        per = per.merge(fee, left_on=["customer_id", "as_of"], right_on=["customer_id", "booking_date"], how="left")
        paid = per["fee"].fillna(0.0)
    else:
        paid = 0.0
    per["fees_and_interest"] = interest + paid
    out = per[per["as_of"] >= first]
    return out[columns].reset_index(drop=True)


def _baselines(outcomes: pd.DataFrame, customers: np.ndarray, nights: list[date], days: int) -> pd.DataFrame:
    """Per (customer, night): the mean of each outcome over the `days` days up to the night (what is available)."""
    rows = []
    o = outcomes[outcomes["customer_id"].isin(customers)]
    for night in nights:
        window = o[(o["as_of"] > night - timedelta(days=days)) & (o["as_of"] <= night)]
        base = window.groupby("customer_id")[list(OUTCOMES)].mean().reset_index()
        base["night"] = night
        rows.append(base)
    if not rows:
        return pd.DataFrame(columns=["customer_id", "night", *OUTCOMES])
    return pd.concat(rows, ignore_index=True)


def realised_values(recs: pd.DataFrame, responses: pd.DataFrame, outcomes: pd.DataFrame, controls: set[str] | None,
                    through: date, cfg: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The realised value of each recommendation as of `through` (see the module docstring).

    recs: recommendation_id, customer_id, as_of (the night), action_id, action_class (more columns are kept).
    responses: recommendation_id, event, event_at. outcomes: daily_outcomes rows covering the baselines and the
    windows. controls: the control group's customers (the trend; none means no trend correction).
    Returns (per recommendation: the recs columns plus accepted, complained, unsubscribed, days_measured, matured,
    value_to_date, value) and (per customer, day and action class: the value realised that day)."""
    horizon, base_days = int(cfg["horizon_days"]), int(cfg["baseline_days"])
    weights = {k: float(v) for k, v in cfg["outcomes"].items()}
    event_value = {k: float(v) for k, v in cfg["events"].items()}
    r = recs.copy()
    r["as_of"] = pd.to_datetime(r["as_of"]).dt.date
    r = r[r["as_of"] < through].reset_index(drop=True)
    ev = responses[["recommendation_id", "event", "event_at"]].copy() if len(responses) else \
        pd.DataFrame({"recommendation_id": [], "event": [], "event_at": []})
    ev["day"] = pd.to_datetime(ev["event_at"], utc=True).dt.date if len(ev) else []
    ev = ev[ev["recommendation_id"].isin(r["recommendation_id"])]
    ev = ev[ev["day"] <= through] if len(ev) else ev
    flags = {name: set(ev.loc[ev["event"] == name, "recommendation_id"]) for name in ("accepted", *EVENTS)}
    for name in ("accepted", *EVENTS):
        r[name] = r["recommendation_id"].isin(flags[name])
    r["days_measured"] = [max(0, min(horizon, (through - n).days)) for n in r["as_of"]]
    r["matured"] = r["days_measured"] >= horizon

    # --- accepted recommendations: outcome contributions per day ---------------------------------------------
    acc = r[r["accepted"]][["recommendation_id", "customer_id", "as_of", "action_id", "action_class"]]
    contrib_rows = []
    if len(acc):
        span = np.arange(1, horizon + 1)
        exp = acc.loc[acc.index.repeat(horizon)].reset_index(drop=True)
        exp["day"] = [n + timedelta(days=int(k)) for n, k in zip(exp["as_of"], np.tile(span, len(acc)))]
        exp = exp[exp["day"] <= through]
        nights = sorted(set(acc["as_of"]))
        o = outcomes.copy()
        o["as_of"] = pd.to_datetime(o["as_of"]).dt.date
        base = _baselines(o, acc["customer_id"].unique(), nights, base_days)
        exp = exp.merge(o.rename(columns={"as_of": "day"})[["customer_id", "day", *OUTCOMES]],
                        on=["customer_id", "day"], how="left")
        exp = exp.merge(base.rename(columns={k: f"base_{k}" for k in OUTCOMES}),
                        left_on=["customer_id", "as_of"], right_on=["customer_id", "night"], how="left")
        trend = _trend(o, controls, nights, through, horizon, base_days)
        exp = exp.merge(trend, left_on=["as_of", "day"], right_on=["night", "day"], how="left",
                        suffixes=("", "_trend"))
        for k in OUTCOMES:
            targeted = np.array([k in targets_of(a, cfg) for a in exp["action_id"]], dtype=bool)
            change = (exp[k] - exp[f"base_{k}"] - exp[f"trend_{k}"].fillna(0.0)).fillna(0.0)
            exp[f"t_{k}"] = targeted
            exp[f"c_{k}"] = np.where(targeted, change, 0.0)
            # share the day between the customer's accepted recommendations that target the same outcome
            n_active = exp.groupby(["customer_id", "day"])[f"t_{k}"].transform("sum")
            exp[f"c_{k}"] = np.where(targeted, exp[f"c_{k}"] / np.maximum(n_active, 1), 0.0) * weights[k]
        exp["value"] = exp[[f"c_{k}" for k in OUTCOMES]].sum(axis=1)
        contrib_rows.append(exp[["recommendation_id", "customer_id", "day", "action_class", "value"]])
    # --- events: complaints and unsubscribes cost their value on the day they happen --------------------------
    costs = ev[ev["event"].isin(list(event_value))].copy()
    if len(costs):
        costs["value"] = costs["event"].map(event_value).astype(float)
        costs = costs.merge(r[["recommendation_id", "customer_id", "action_class"]], on="recommendation_id")
        contrib_rows.append(costs[["recommendation_id", "customer_id", "day", "action_class", "value"]])
    contrib = pd.concat(contrib_rows, ignore_index=True) if contrib_rows else \
        pd.DataFrame({"recommendation_id": [], "customer_id": [], "day": [], "action_class": [], "value": []})
    per_rec = contrib.groupby("recommendation_id")["value"].sum()
    r["value_to_date"] = per_rec.reindex(r["recommendation_id"]).fillna(0.0).to_numpy()
    r["value"] = np.where(r["matured"], r["value_to_date"], np.nan)
    customer_day = contrib.groupby(["customer_id", "day", "action_class"], as_index=False)["value"].sum()
    return r, customer_day


def _trend(outcomes: pd.DataFrame, controls: set[str] | None, nights: list[date], through: date, horizon: int,
           base_days: int) -> pd.DataFrame:
    """Per (night, day): the control customers' mean of outcome minus their own baseline at the night."""
    columns = ["night", "day", *(f"trend_{k}" for k in OUTCOMES)]
    if not controls:
        return pd.DataFrame({c: [] for c in columns})
    ids = np.array(sorted(controls), dtype=object)
    base = _baselines(outcomes, ids, nights, base_days)
    o = outcomes[outcomes["customer_id"].isin(ids)]
    rows = []
    for night in nights:
        b = base[base["night"] == night].set_index("customer_id")
        window = o[(o["as_of"] > night) & (o["as_of"] <= min(through, night + timedelta(days=horizon)))]
        if window.empty or b.empty:
            continue
        diff = window.set_index("customer_id")[list(OUTCOMES)] - b[list(OUTCOMES)].reindex(
            window["customer_id"]).to_numpy()
        diff["day"] = window["as_of"].to_numpy()
        mean = diff.groupby("day")[list(OUTCOMES)].mean()
        mean.columns = [f"trend_{k}" for k in OUTCOMES]
        mean["night"] = night
        rows.append(mean.reset_index())
    if not rows:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(rows, ignore_index=True)[columns]


def _mean_ci(values: np.ndarray, n: int) -> tuple[float, float, float, float]:
    """Mean over n customers of the given values (customers not listed count 0), its 95% interval and variance."""
    if n == 0:
        return (math.nan,) * 4
    total = float(np.sum(values))
    mean = total / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sq = float(np.sum(np.square(values)))
    var = max(0.0, (sq - n * mean * mean) / (n - 1))
    se = math.sqrt(var / n)
    return mean, mean - Z95 * se, mean + Z95 * se, var


def value_summary(day_values: pd.DataFrame, cumulative_values: pd.DataFrame, population: pd.DataFrame,
                  recs: pd.DataFrame, as_of: date, since: date, cfg: dict[str, Any]) -> pd.DataFrame:
    """The night's summary rows (see the module docstring).

    day_values / cumulative_values: customer_id, action_class, value (the day's and the cumulative value).
    population: customer_id, is_control (every customer the policy decided for since `since`).
    recs: the night's recommendations judged so far (accepted, complained, unsubscribed, is_control, action_class)
    for the counts."""
    pop = population.drop_duplicates("customer_id", keep="last")
    group_of = pop.set_index("customer_id")["is_control"].astype(bool)
    rows = []
    stats: dict[tuple[str, str], dict[str, float]] = {}
    for group, is_control in (("treated", False), ("control", True)):
        members = group_of[group_of == is_control].index
        n = len(members)
        for cls in ("all", *CLASSES):
            figures: dict[str, Any] = {"arm": group, "action_class": cls, "n_customers": n}
            for label, frame in (("", day_values), ("cumulative_", cumulative_values)):
                f = frame[frame["customer_id"].isin(members)]
                if cls != "all":
                    f = f[f["action_class"] == cls]
                per_customer = f.groupby("customer_id")["value"].sum().to_numpy()
                mean, lo, hi, var = _mean_ci(per_customer, n)
                figures.update({f"{label}value_per_customer": mean, f"{label}ci_low": lo, f"{label}ci_high": hi})
                stats[(group, cls + label)] = {"mean": mean, "var": var, "n": n}
            rr = recs[recs["is_control"].astype(bool) == is_control] if len(recs) else recs
            if cls != "all" and len(rr):
                rr = rr[rr["action_class"] == cls]
            n_recs = int(len(rr))
            accepted = int(rr["accepted"].sum()) if n_recs else 0
            figures.update({"n_recommendations": n_recs, "n_accepted": accepted,
                            "acceptance_rate": accepted / n_recs if n_recs else math.nan,
                            "n_complaints": int(rr["complained"].sum()) if n_recs else 0,
                            "n_unsubscribes": int(rr["unsubscribed"].sum()) if n_recs else 0})
            rows.append(figures)
    for cls in ("all", *CLASSES):
        figures = {"arm": "uplift", "action_class": cls, "n_customers": int(len(group_of))}
        for label in ("", "cumulative_"):
            t, c = stats[("treated", cls + label)], stats[("control", cls + label)]
            diff = t["mean"] - c["mean"]
            se = math.sqrt(t["var"] / t["n"] + c["var"] / c["n"]) if t["n"] > 1 and c["n"] > 1 else math.nan
            figures.update({f"{label}value_per_customer": diff, f"{label}ci_low": diff - Z95 * se,
                            f"{label}ci_high": diff + Z95 * se})
        figures.update({"n_recommendations": 0, "n_accepted": 0, "acceptance_rate": math.nan, "n_complaints": 0,
                        "n_unsubscribes": 0})
        rows.append(figures)
    out = pd.DataFrame(rows)
    out["since"] = since
    out["value_version"] = str(cfg["version"])
    return out[SCHEMAS["value_summary"].keys()]


# ---------------------------------------------------------------------------------------------------------------
# The nightly stage
# ---------------------------------------------------------------------------------------------------------------

SCHEMAS: dict[str, dict[str, str]] = {
    "customer_outcomes": {
        "customer_id": "varchar", "current_balance": "double", "savings_balance": "double",
        "fees_and_interest": "double", "shortfall_days": "double", "savings_added": "double",
        "product_margin": "double", "value_version": "varchar"},
    "realised_value": {
        "recommendation_id": "varchar", "customer_id": "varchar", "rank": "integer", "action_id": "varchar",
        "action_class": "varchar", "channel": "varchar", "is_control": "boolean", "is_exploration": "boolean",
        "logging_probability": "double", "policy_version": "varchar", "accepted": "boolean",
        "complained": "boolean", "unsubscribed": "boolean", "days_measured": "integer", "matured": "boolean",
        "value_to_date": "double", "value": "double", "value_version": "varchar"},
    "value_summary": {
        "arm": "varchar", "action_class": "varchar", "n_customers": "bigint", "value_per_customer": "double",
        "ci_low": "double", "ci_high": "double", "cumulative_value_per_customer": "double",
        "cumulative_ci_low": "double", "cumulative_ci_high": "double", "n_recommendations": "bigint",
        "n_accepted": "bigint", "acceptance_rate": "double", "n_complaints": "bigint", "n_unsubscribes": "bigint",
        "since": "date", "value_version": "varchar"},
}


def _write(paths: Paths, table: str, frame: pd.DataFrame, as_of: date) -> int:
    final = lake.partition_path(paths, "gold", table, as_of=as_of.isoformat())
    columns = ", ".join(f'cast("{name}" as {kind}) as "{name}"' for name, kind in SCHEMAS[table].items())
    con = lake.connect()
    try:
        con.register("frame", frame[list(SCHEMAS[table])])
        return lake.write_relation(con, f"select {columns} from frame", final, paths)
    finally:
        con.close()


def _partitions(paths: Paths, layer: str, table: str) -> list[str]:
    root = paths.table(layer, table)
    if not root.exists():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*") if any(p.rglob("*.parquet")))


def _latest_snapshot(paths: Paths, table: str, day: date) -> str | None:
    return lake.latest_partition(paths, "silver", table, day)


def _read_outcome_inputs(paths: Paths, first: date, last: date, bucket: int | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Silver balances of the bank's own accounts (with their product) and fee postings for [first - 1, last]: of
    the customers of one bucket when given (silver balances and postings are partitioned by their customer's
    bucket), else of the whole bank."""
    snap = _latest_snapshot(paths, "accounts", last)
    balances_scan = lake.scan_sql(paths, "silver", "balances")
    tx_scan = lake.scan_sql(paths, "silver", "transactions")
    if snap is None or balances_scan is None:
        return (pd.DataFrame(columns=["customer_id", "account_id", "product", "as_of", "balance"]),
                pd.DataFrame(columns=["customer_id", "booking_date", "amount", "description"]))
    accounts = lake.partition_path(paths, "silver", "accounts", as_of=snap)
    lo, hi = (first - timedelta(days=1)).isoformat(), last.isoformat()
    in_bucket = "" if bucket is None else f" and bucket = {int(bucket)}"
    con = lake.connect()
    try:
        balances = con.execute(f"""
            select b.customer_id, b.account_id, a.product, b.as_of, cast(b.balance as double) as balance
            from {balances_scan} as b
            join read_parquet('{accounts}/**/*.parquet') as a using (account_id)
            where b.source = 'core' and a.source = 'core' and b.as_of between date '{lo}' and date '{hi}'
                and (b.load_date = 'history' or b.load_date <= '{hi}'){in_bucket.replace('bucket', 'b.bucket')}""").df()
        fees = pd.DataFrame(columns=["customer_id", "booking_date", "amount", "description"])
        if tx_scan is not None:
            fees = con.execute(f"""
                select customer_id, booking_date, cast(amount_base as double) as amount, description
                from {tx_scan}
                where source = 'core' and channel = 'fee' and booking_date between date '{lo}' and date '{hi}'
                    and (load_date = 'history' or load_date <= '{hi}'){in_bucket}""").df()
    finally:
        con.close()
    return balances, fees


def _read_gold(paths: Paths, table: str, nights: list[str], columns: str = "*",
               customers: set[str] | None = None) -> pd.DataFrame:
    """A gold table's rows of these nights (with their as_of); only those of `customers` when given, kept night by
    night, so that memory holds one night of the bank besides the rows kept."""
    frames = []
    keep = None if customers is None else list(customers)
    con = lake.connect()
    try:
        for night in nights:
            folder = lake.partition_path(paths, "gold", table, as_of=night)
            if folder.exists() and any(folder.rglob("*.parquet")):
                frame = con.execute(f"select {columns} from read_parquet('{folder}/**/*.parquet')").df()
                frame["as_of"] = date.fromisoformat(night)
                frames.append(frame if keep is None else frame[frame["customer_id"].isin(keep)])
    finally:
        con.close()
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compute_outcomes(paths: Paths, days: list[date], cfg: dict[str, Any]) -> dict[date, int]:
    """Gold customer_outcomes of `days` computed from silver and written, one partition a day (rows in customer
    order); the rows written each day.

    The outcomes are per customer, so they are computed a customer bucket at a time (the bank's silver balances of
    the days, the largest input, held in memory one bucket at a time: at a million customers the whole bank's are
    tens of GB of frames) into scratch Parquet files, and each day's partition is then written from them."""
    first, last = min(days), max(days)
    schema = SCHEMAS["customer_outcomes"]
    casts = ", ".join(f'cast("{name}" as {kind}) as "{name}"' for name, kind in schema.items())
    scratch = lake.staging_dir(paths)
    con = lake.connect()
    try:
        for bucket in range(lake.n_buckets()):
            balances, fees = _read_outcome_inputs(paths, first, last, bucket)
            part = daily_outcomes(balances, fees, days, cfg)
            del balances, fees
            if not len(part):
                continue
            part["value_version"] = str(cfg["version"])
            con.register("part", part)
            con.execute(f"copy (select cast(as_of as date) as as_of, {casts} from part) to '{scratch}' "
                        f"({lake.parquet_options()}, partition_by (as_of), overwrite_or_ignore true, "
                        f"filename_pattern 'bucket-{bucket}-{{i}}')")
            con.unregister("part")
        empty = "select " + ", ".join(f'cast(null as {kind}) as "{name}"' for name, kind in schema.items()) + \
            " where false"
        written = {}
        for d in days:
            files = sorted(str(f) for f in (scratch / f"as_of={d.isoformat()}").glob("*.parquet"))
            query = (f"select {casts} from read_parquet({files!r}) order by customer_id" if files else empty)
            final = lake.partition_path(paths, "gold", "customer_outcomes", as_of=d.isoformat())
            written[d] = lake.write_relation(con, query, final, paths)
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def ensure_outcomes(paths: Paths, first: date, last: date, cfg: dict[str, Any],
                    customers: set[str] | None = None) -> tuple[pd.DataFrame, int]:
    """Gold customer_outcomes for every day in [first, last] (computing the missing days, and always `last`):
    (the rows of those days, only those of `customers` when given, none when it is empty; the rows of `last`)."""
    have = set(_partitions(paths, "gold", "customer_outcomes"))
    days = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    missing = [d for d in days if d.isoformat() not in have or d == last]
    n_last = compute_outcomes(paths, missing, cfg)[last]
    columns = ["customer_id", "as_of", *OUTCOMES]
    if customers is not None and not customers:
        return pd.DataFrame(columns=columns), n_last
    out = _read_gold(paths, "customer_outcomes", [d.isoformat() for d in days], customers=customers)
    # as when every row is read: a frame of the columns alone only when the days have no rows at all
    if not len(out) and (customers is None or not n_last and not any(
            len(_read_gold(paths, "customer_outcomes", [d.isoformat()], "customer_id")) for d in days)):
        return pd.DataFrame(columns=columns), n_last
    return out, n_last


def _population(paths: Paths, nights: list[str]) -> pd.DataFrame:
    """Customers the policy decided for on these nights, with their group: those with a published recommendation
    (is_control as published), those the bandit decided for (the no-contact arm's choice included: a customer the
    policy chose not to contact is treated, with whatever value that brings) and those whose non-protective
    candidates the control group withheld. A customer whose every candidate fell earlier in the funnel was not
    touched by the assignment that night."""
    nba = _read_gold(paths, "next_best_actions", nights, "distinct customer_id, is_control")
    log_ = _read_gold(paths, "decision_log", nights, "distinct customer_id, stage")
    bandit = _read_gold(paths, "bandit_log", nights, "distinct customer_id")
    frames = []
    if len(nba):
        frames.append(nba[["customer_id", "is_control", "as_of"]])
    if len(bandit):
        bandit["is_control"] = False     # the control group gets no non-protective slot
        frames.append(bandit[["customer_id", "is_control", "as_of"]])
    if len(log_):
        held = log_[log_["stage"] == "control_group"][["customer_id", "as_of"]].copy()
        held["is_control"] = True
        frames.append(held)
    if not frames:
        return pd.DataFrame({"customer_id": [], "is_control": [], "as_of": []})
    pop = pd.concat(frames, ignore_index=True)
    pop = pop.sort_values(["as_of", "customer_id"]).groupby(["customer_id", "as_of"], as_index=False)[
        "is_control"].max()
    return pop.sort_values(["customer_id", "as_of"]).drop_duplicates("customer_id", keep="last")


def measure_value(paths: Paths, day: date) -> dict[str, Any]:
    """The nightly stage: outcomes of D, realised values of the recommendations whose window includes D, and the
    night's value summary (gold customer_outcomes, realised_value, value_summary)."""
    started = time.perf_counter()
    cfg = rewards()
    horizon, base_days = int(cfg["horizon_days"]), int(cfg["baseline_days"])
    nights_all = [n for n in _partitions(paths, "gold", "next_best_actions") if n < day.isoformat()]
    since = date.fromisoformat(str(cfg["cumulative_from"])) if cfg.get("cumulative_from") else \
        (date.fromisoformat(nights_all[0]) if nights_all else day)
    nights_all = [n for n in nights_all if n >= since.isoformat()]
    judged = set(_partitions(paths, "gold", "realised_value"))
    open_nights = [n for n in nights_all
                   if n >= (day - timedelta(days=horizon)).isoformat() or n not in judged]
    first_needed = min([date.fromisoformat(n) for n in open_nights], default=day) - timedelta(days=base_days - 1)
    recs = _read_gold(paths, "next_best_actions", open_nights,
                      "recommendation_id, customer_id, rank, action_id, action_class, channel, is_control, "
                      "is_exploration, logging_probability, policy_version")
    population = _population(paths, nights_all)
    controls = set(population.loc[population["is_control"].astype(bool), "customer_id"]) if len(population) else set()
    # realised_values reads the outcomes of the recommendations' customers and of the control group only
    needed = (set(recs["customer_id"]) | controls) if len(recs) else set()
    outcomes, n_today = ensure_outcomes(paths, min(first_needed, day), day, cfg, customers=needed)
    written = {"customer_outcomes": n_today}
    responses = _responses(paths, day)
    if len(recs):
        rec_values, customer_day = realised_values(recs, responses, outcomes, controls, day, cfg)
        rec_values["value_version"] = str(cfg["version"])
        for night in open_nights:
            part = rec_values[rec_values["as_of"] == date.fromisoformat(night)]
            _write(paths, "realised_value", part, date.fromisoformat(night))
        written["realised_value"] = int(len(rec_values))
    else:
        customer_day = pd.DataFrame({"customer_id": [], "day": [], "action_class": [], "value": []})
    day_values = customer_day[customer_day["day"] == day] if len(customer_day) else customer_day
    all_values = _read_gold(paths, "realised_value", nights_all,
                            "customer_id, action_class, value_to_date as value, is_control, accepted, "
                            "complained, unsubscribed, days_measured")
    tonight = all_values[all_values["as_of"] == day - timedelta(days=1)] if len(all_values) else all_values
    summary = value_summary(day_values, all_values if len(all_values) else customer_day.iloc[0:0],
                            population if len(population) else pd.DataFrame({"customer_id": [], "is_control": []}),
                            tonight, day, since, cfg)
    written["value_summary"] = _write(paths, "value_summary", summary, day)
    treated = summary[(summary["arm"] == "uplift") & (summary["action_class"] == "all")].iloc[0]
    metrics = {"as_of": day.isoformat(), "since": since.isoformat(), "nights_judged": open_nights, "rows": written,
               "uplift_per_customer": _num(treated["cumulative_value_per_customer"]),
               "uplift_ci": [_num(treated["cumulative_ci_low"]), _num(treated["cumulative_ci_high"])],
               "value_version": str(cfg["version"]), "seconds": round(time.perf_counter() - started, 2)}
    write_run_metrics(paths, day.isoformat(), "measure_value", metrics)
    return metrics


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else round(x, 6)


def _responses(paths: Paths, day: date) -> pd.DataFrame:
    scan = lake.scan_sql(paths, "silver", "crm_responses")
    if scan is None:
        return pd.DataFrame({"recommendation_id": [], "event": [], "event_at": []})
    con = lake.connect()
    try:
        return con.execute(f"select recommendation_id, event, event_at from {scan} "
                           f"where load_date = 'history' or load_date <= '{day.isoformat()}'").df()
    finally:
        con.close()
