"""Stage 4c, plans that can run themselves (per shard): gold `plans`, instructions the bank's payment systems could
execute with the customer's mandate (docs/plans.md, config/plans.yaml):

- bill_provision: money set aside in a pot ahead of a known large bill (an open-banking scheduled payment or
  standing order, a quarterly or yearly stream, a payment made about a year before), released on the due date;
- tax_pot: a share of an irregular earner's self-employed income set aside each month (gold customer_roles);
- debt_overpayment: the customer's dearest debt held here first (avalanche by the rate their interest postings show);
- savings_sweep: what is left of safe-to-save into their savings account.

THE SAFETY RULE: for every horizon h of the cash forecast, what the plan moves out of the current account on or
before D + h never exceeds the projected P10 minimum balance over h (gold cash_forecast min_balance_p10) less the
buffer: no plan makes the projected P10 balance go below zero within its horizon. Every row carries the P10 before
and after; `validate_plans` checks every row of the night against the persisted forecast again and fails the night
if one breaks it.

Read (gold cash_forecast and customer_roles of D, silver accounts, balances, postings, consent and open-banking
payments, gold recurring_streams, the feature store's income) -> `plan_frame` (pure: frames in, frames out, tested
on hand-made customers in tests/test_plans.py) -> write (pipelines/outputs.py).
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake, outputs, store
from pipelines.config import Paths, base_currency, load_config
from pipelines.errors import GateFailed, SegoneError
from pipelines.runs import read_run_metrics, write_run_metrics

log = logging.getLogger(__name__)

TABLE = "plans"
ACTIONS = ("bill_provision", "tax_pot", "debt_overpayment", "savings_sweep")
KIND = {"bill_provision": "savings", "tax_pot": "savings", "savings_sweep": "savings", "debt_overpayment": "debt"}
BILL_COLUMNS = ["customer_id", "source", "due_date", "amount", "needs_open_banking", "key"]
ACCOUNT_COLUMNS = ["customer_id", "account_id", "product", "balance", "interest_charged", "window_days"]


# where a reason states the amount of its instruction: the amount granted (allocate), not the one asked for
GRANTED = "\x00granted\x00"


def settings() -> dict[str, Any]:
    return load_config("plans")


def _money(value: float) -> str:
    return f"£{value:,.2f}"


def _day(value: date) -> str:
    return f"{value.day} {value:%b %Y}"


def _md5(*parts: Any) -> str:
    return hashlib.md5("|".join(str(p) for p in parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# The pure step
# ---------------------------------------------------------------------------------------------------------------

def capacities(forecast: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Per customer and horizon: the most the plan may move out of the current account by D + h (min_balance_p10
    of that horizon less the buffer, never more than a shorter horizon's, never negative; zero for every horizon when
    the 30-day shortfall probability is above max_p_shortfall_30) and safe-to-save. Customers whose forecast has no
    P10 (withheld by consent) have none."""
    horizons = [int(h) for h in cfg["horizons"]]
    rows = forecast[forecast["horizon_days"].isin(horizons) & forecast["min_balance_p10"].notna()]
    wide = rows.pivot_table(index="customer_id", columns="horizon_days", values="min_balance_p10", aggfunc="min")
    wide = wide.reindex(columns=horizons)
    complete = wide.notna().all(axis=1)
    wide = wide[complete]
    p10 = wide.cummin(axis=1)   # the minimum over a longer horizon is never above a shorter one's
    cap = (p10 - float(cfg["buffer"])).clip(lower=0.0)
    p30 = rows.pivot_table(index="customer_id", columns="horizon_days", values="p_shortfall", aggfunc="max")
    risky = (p30.reindex(wide.index)[horizons[0]] > float(cfg["max_p_shortfall_30"])).to_numpy()
    cap[risky] = 0.0
    out = pd.DataFrame(index=wide.index)
    for h in horizons:
        out[f"p10_{h}"] = p10[h]
        out[f"cap_{h}"] = cap[h]
    first = rows.sort_values("horizon_days").drop_duplicates("customer_id").set_index("customer_id")
    out["safe_to_save"] = first["safe_to_save"].reindex(out.index).fillna(0.0)
    out["model_version"] = first["model_version"].reindex(out.index)
    return out


def instalment_days(day: date, due: date, lead_days: int) -> list[date]:
    """The days a provision for a bill due on `due` is set aside: the first day of each month after D and at least
    `lead_days` before the due date; when there is none, tomorrow (if it is before the due date)."""
    out = []
    month = date(day.year + (day.month // 12), day.month % 12 + 1, 1)
    while month <= due - timedelta(days=lead_days):
        out.append(month)
        month = date(month.year + (month.month // 12), month.month % 12 + 1, 1)
    if not out and day + timedelta(days=1) < due:
        out = [day + timedelta(days=1)]
    return out


BILL_HEADLINE = {"scheduled_payment": "a payment scheduled from your account at another bank",
                 "standing_order": "a standing order from your account at another bank",
                 "stream": "a regular payment", "last_year": "a bill like one you paid a year ago"}


def _bill_words(source: str, amount: float, due: date) -> str:
    return {
        "scheduled_payment": f"a payment of {_money(amount)} is scheduled from your account at another bank on "
                             f"{_day(due)}",
        "standing_order": f"a standing order of {_money(amount)} from your account at another bank is due on "
                          f"{_day(due)}",
        "stream": f"a regular payment of about {_money(amount)} is next due around {_day(due)}",
        "last_year": f"you paid {_money(amount)} to the same payee around {_day(due - timedelta(days=365))}, so a "
                     f"similar bill is likely around {_day(due)}",
    }[source]


def demands(day: date, caps: pd.DataFrame, bills: pd.DataFrame, roles: pd.DataFrame, accounts: pd.DataFrame,
            income: pd.DataFrame, consent: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Every instruction a customer's plan would hold if money were no object, in priority order per customer:
    provisions (earliest bill first, then by instalment), the tax pot, debts (dearest first), the savings sweep.
    Only for customers with a capacity (a forecast with P10) and personalization consent; a bill known from another
    bank's data only with open_banking consent too."""
    horizon_end = day + timedelta(days=max(int(h) for h in cfg["horizons"]))
    allowed = consent.set_index("customer_id")
    personal = allowed["is_personalization_allowed"].astype("boolean").fillna(False)
    ob = allowed["is_open_banking_allowed"].astype("boolean").fillna(False)
    ok = set(caps.index) & set(personal[personal].index)
    ob_ok = set(ob[ob].index)
    rows: list[dict[str, Any]] = []
    current = accounts[accounts["product"] == "current"].groupby("customer_id")["account_id"].first().to_dict()
    savings = (accounts[accounts["product"] == "savings"].sort_values(["customer_id", "balance"],
                                                                       ascending=[True, False])
               .groupby("customer_id")["account_id"].first().to_dict())
    safe = caps["safe_to_save"].to_dict()

    def add(customer: str, action: str, rank: int, execute_on: date, amount: float, reason: str, target: str,
            to_account: Any, due: Any, key: str, extra_consent: tuple[str, ...] = (), headline: str = "") -> None:
        rows.append({"customer_id": customer, "action": action, "rank": rank, "execute_on": execute_on,
                     "requested": float(amount), "reason": reason, "headline": headline, "target": target,
                     "from_account_id": current.get(customer), "to_account_id": to_account, "due_date": due,
                     "plan_key": key, "consents": ",".join([*cfg["consents"][action], *extra_consent])})

    # 1. provisions ahead of known large bills
    prov = cfg["provision"]
    monthly_income = income.set_index("customer_id")["monthly_income"].to_dict() if len(income) else {}
    for b in bills.sort_values(["customer_id", "due_date"]).itertuples(index=False):
        if b.customer_id not in ok or (bool(b.needs_open_banking) and b.customer_id not in ob_ok):
            continue
        due = pd.Timestamp(b.due_date).date()
        amount = float(b.amount)
        if not day < due <= day + timedelta(days=int(prov["lookahead_days"])) or amount < float(prov["min_amount"]):
            continue
        monthly = monthly_income.get(b.customer_id)
        if monthly is not None and monthly == monthly and monthly > 0 \
                and amount < float(prov["min_share_of_monthly_income"]) * float(monthly):
            continue
        days = instalment_days(day, due, int(prov["lead_days"]))
        if not days:
            continue
        each = amount / len(days)
        words = _bill_words(str(b.source), amount, due)
        for i, when in enumerate(days):
            if when > horizon_end:
                break
            # the amount is the one granted (allocate: within the safety rule, rounded down to the step), filled in
            # by plan_frame; "towards it": what is granted may be less than the bill needs
            reason = (f"{words}: setting aside {GRANTED} on {_day(when)}"
                      + (f" (instalment {i + 1} of {len(days)})" if len(days) > 1 else "") + " towards it")
            add(b.customer_id, "bill_provision", 0, when, each, reason, f"provision for the bill due {due}", None,
                due, f"{b.source}:{b.key}:{due}", ("open_banking",) if bool(b.needs_open_banking) else (),
                headline=f"money set aside ahead of {BILL_HEADLINE[str(b.source)]} due around {_day(due)}")
    # 2. the tax pot of an irregular earner
    share = float(cfg["tax_pot"]["share"])
    earners = roles[roles["role"] == "irregular_earner"] if len(roles) else roles
    months = []
    month = date(day.year + (day.month // 12), day.month % 12 + 1, 1)
    while month <= horizon_end:
        months.append(month)
        month = date(month.year + (month.month // 12), month.month % 12 + 1, 1)
    for r in earners.itertuples(index=False):
        if r.customer_id not in ok:
            continue
        per_month = share * float(r.amount) * 30.0 / float(r.window_days)
        for when in months:
            reason = (f"{r.reason}; setting aside {GRANTED} on {_day(when)} towards the tax on it ({share:.0%} "
                      f"of that income would be {_money(per_month)} a month)")
            add(r.customer_id, "tax_pot", 1, when, per_month, reason, "tax pot", None, None, "tax_pot",
                headline="a tax pot: money set aside for the tax on the self-employed income paid into your accounts")
    # 3. debts, avalanche: the dearest first
    debt = cfg["debt"]
    lending = accounts[accounts["product"].isin(debt["products"]) & (accounts["balance"] < 0)].copy()
    lending["owed"] = -lending["balance"].astype(float)
    lending["rate"] = (lending["interest_charged"].astype(float) / lending["owed"]
                       * 365.0 / lending["window_days"].astype(float))
    lending = lending[lending["rate"] >= float(debt["min_rate"])]
    lending = lending.sort_values(["customer_id", "rate", "account_id"], ascending=[True, False, True])
    tomorrow = day + timedelta(days=1)
    lending["nth"] = lending.groupby("customer_id").cumcount()
    lending["n"] = lending.groupby("customer_id")["account_id"].transform("size")
    for d in lending.itertuples(index=False):
        if d.customer_id not in ok:
            continue
        limit = d.owed * (float(debt["mortgage_max_share"]) if d.product == "mortgage" else 1.0)
        name = {"credit_card": "credit card", "loan": "loan", "mortgage": "mortgage"}[d.product]
        words = ("the only debt you hold with us that costs more than savings earn" if d.n == 1 else
                 "the highest rate of your debts with us" if d.nth == 0 else
                 "next after your dearer debts")
        reason = (f"your {name} costs you about {d.rate:.1%} a year in interest ({_money(d.interest_charged)} in the "
                  f"last {int(d.window_days)} days on {_money(d.owed)} owed), {words}; paying some off tomorrow "
                  f"saves that interest")
        add(d.customer_id, "debt_overpayment", 2, tomorrow, limit, reason, f"overpayment of your {name}",
            d.account_id, None, f"debt:{d.account_id}",
            headline=f"your {name} costs you about {d.rate:.1%} a year in interest, {words}")
    # 4. the savings sweep: the rest of safe-to-save
    for customer in sorted(ok):
        to = savings.get(customer)
        reason = "what is left of what is safe to save today"
        add(customer, "savings_sweep", 3, tomorrow, float(safe[customer]), reason,
            "your savings account" if to is not None else "a new easy-access savings pot", to, None, "sweep",
            headline="what is safe to save moved to savings tomorrow")
    out = pd.DataFrame(rows, columns=["customer_id", "action", "rank", "execute_on", "requested", "reason",
                                      "headline", "target",
                                      "from_account_id", "to_account_id", "due_date", "plan_key", "consents"])
    out["order"] = np.arange(len(out))
    return out.sort_values(["customer_id", "rank", "order"], kind="stable").reset_index(drop=True)


def allocate(day: date, wanted: pd.DataFrame, caps: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Grant each wanted instruction, in priority order per customer, the most that keeps the safety rule: for every
    horizon h it falls in (execute_on <= D + h), what the customer's granted instructions move by D + h stays within
    cap_h. Vectorised over customers: one pass per position in the customers' priority lists. The sweep is also
    held within safe-to-save less what moves within the first horizon. Rows granted less than the minimum are
    dropped."""
    horizons = [int(h) for h in cfg["horizons"]]
    if wanted.empty:
        return wanted.assign(amount=pd.Series(dtype=float), horizon_days=pd.Series(dtype="int32"))
    step = float(cfg["step"])
    w = wanted.copy()
    offset = (pd.to_datetime(w["execute_on"]) - pd.Timestamp(day)).dt.days.to_numpy()
    w = w[(offset >= 1) & (offset <= horizons[-1])].reset_index(drop=True)
    offset = (pd.to_datetime(w["execute_on"]) - pd.Timestamp(day)).dt.days.to_numpy()
    customers, code = np.unique(w["customer_id"].to_numpy(str), return_inverse=True)
    cap = caps.reindex(customers)[[f"cap_{h}" for h in horizons]].to_numpy(float)     # customers x horizons
    used = np.zeros_like(cap)
    counts = np.cumsum(np.ones(len(w), dtype=int)) - 1
    first = pd.Series(np.arange(len(w))).groupby(code).transform("min").to_numpy()
    position = counts - first
    inside = offset[:, None] <= np.array(horizons)[None, :]                              # rows x horizons
    safe = caps.reindex(customers)["safe_to_save"].to_numpy(float)
    granted = np.zeros(len(w))
    is_sweep = (w["action"] == "savings_sweep").to_numpy()
    for k in range(int(position.max()) + 1 if len(w) else 0):
        at = np.flatnonzero(position == k)
        c = code[at]
        room = np.where(inside[at], cap[c] - used[c], np.inf).min(axis=1)
        sweep_room = np.where(is_sweep[at], safe[c] - used[c, 0], np.inf)
        amount = np.minimum(np.minimum(w["requested"].to_numpy(float)[at], room), sweep_room)
        amount = np.floor(np.maximum(amount, 0.0) / step + 1e-9) * step
        small = amount < np.where(is_sweep[at], float(cfg["savings"]["min_amount"]), float(cfg["min_amount"]))
        amount[small] = 0.0
        granted[at] = amount
        np.add.at(used, c, inside[at] * amount[:, None])
    w["amount"] = granted
    w["horizon_days"] = np.array(horizons)[np.argmax(inside, axis=1)].astype("int32")
    return w[w["amount"] > 0].reset_index(drop=True)


def projected_after(day: date, plans: pd.DataFrame, p10: pd.DataFrame, horizons: list[int]) -> np.ndarray:
    """Per plan row: the lowest projected P10 balance after the customer's whole plan, over the horizons the row
    falls in (min over h >= its day of P10_h less everything the plan moves by D + h). `p10`: customers x
    p10_<h> columns."""
    if plans.empty:
        return np.zeros(0)
    offset = (pd.to_datetime(plans["execute_on"]) - pd.Timestamp(day)).dt.days.to_numpy()
    inside = offset[:, None] <= np.array(horizons)[None, :]
    moved = pd.DataFrame(inside * plans["amount"].to_numpy(float)[:, None], columns=horizons)
    moved["customer_id"] = plans["customer_id"].to_numpy()
    by_customer = moved.groupby("customer_id")[horizons].sum()
    total = by_customer.reindex(plans["customer_id"]).to_numpy(float)
    base = p10.reindex(plans["customer_id"])[[f"p10_{h}" for h in horizons]].to_numpy(float)
    return np.where(inside, base - total, np.inf).min(axis=1)


REVERSAL = {
    "bill_provision": ("The pot pays the money back to your current account on the due date to meet the bill; to "
                       "undo it earlier, the same amount moves back from the pot to the current account."),
    "tax_pot": "The tax pot is easy access: undoing it moves the same amount back to your current account.",
    "savings_sweep": "Your savings are easy access: undoing it moves the same amount back to your current account.",
    "debt_overpayment": ("An overpayment cannot be taken back once paid: it can be cancelled until the day before it "
                         "is made, and the instruction is never executed without your mandate."),
}


def plan_frame(day: date, forecast: pd.DataFrame, roles: pd.DataFrame, accounts: pd.DataFrame, bills: pd.DataFrame,
               income: pd.DataFrame, consent: pd.DataFrame, cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """The pure step: the forecast of D (gold cash_forecast rows), the roles (gold customer_roles with window_days),
    the customer's accounts held here with their balance and the interest charged on them (ACCOUNT_COLUMNS), the
    known upcoming bills (BILL_COLUMNS), the monthly income (customer_id, monthly_income) and consent (customer_id,
    is_personalization_allowed, is_open_banking_allowed) -> gold plans rows."""
    cfg = cfg or settings()
    horizons = [int(h) for h in cfg["horizons"]]
    caps = capacities(forecast, cfg)
    wanted = demands(day, caps, bills, roles, accounts, income, consent, cfg)
    plans = allocate(day, wanted, caps, cfg)
    if plans.empty:
        return empty_plans()
    after = projected_after(day, plans, caps, horizons)
    before = caps.reindex(plans["customer_id"])[[f"p10_{h}" for h in horizons]].to_numpy(float)
    level = np.searchsorted(horizons, plans["horizon_days"].to_numpy())
    plans["p10_before"] = before[np.arange(len(plans)), level]
    plans["p10_after"] = after
    # p10_after is the lowest over every horizon from the row's own to the longest: the words name the longest
    # (capacities' P10 never rises with the horizon, so the longest horizon's is among them: true of the whole span)
    safety = [f". Your balance is projected to stay at or above {_money(max(a, 0.0))} over the next {horizons[-1]} "
              f"days in 9 cases out of 10 with this plan." for a in after]
    sweep = (plans["action"] == "savings_sweep").to_numpy()
    granted = [str(r).replace(GRANTED, _money(a)) for r, a in zip(plans["reason"], plans["amount"])]
    plans["reason"] = np.where(sweep, [f"you could move {_money(a)} to savings tomorrow without risking a shortfall"
                                       for a in plans["amount"]], granted) + np.array(safety, dtype=object)
    plans["kind"] = plans["action"].map(KIND)
    plans["plan_id"] = [_md5(c, a, k) for c, a, k in zip(plans["customer_id"], plans["action"], plans["plan_key"])]
    plans["instruction_id"] = [_md5(p, e) for p, e in zip(plans["plan_id"], plans["execute_on"])]
    plans["reversal"] = plans["action"].map(REVERSAL)
    plans["reversible_until"] = np.where(plans["action"] == "debt_overpayment",
                                         pd.to_datetime(plans["execute_on"]) - pd.Timedelta(days=1), pd.NaT)
    plans["reversible_until"] = pd.to_datetime(plans["reversible_until"]).dt.date
    plans["priority"] = plans.groupby("customer_id").cumcount().astype("int32") + 1
    plans["requires_mandate"] = True
    plans["policy_version"] = str(cfg["policy_version"])
    plans["model_version"] = caps["model_version"].reindex(plans["customer_id"]).to_numpy()
    parts = pd.Series([f"{i}:{a:.2f}" for i, a in zip(plans["instruction_id"], plans["amount"])], index=plans.index)
    content = parts.groupby(plans["customer_id"]).agg("|".join)
    versions = {c: _md5(cfg["policy_version"], text)[:12] for c, text in content.items()}
    plans["plan_version"] = plans["customer_id"].map(versions).to_numpy()
    plans["amount"] = plans["amount"].round(2)
    plans["p10_before"] = plans["p10_before"].round(2)
    plans["p10_after"] = np.floor(plans["p10_after"] * 100) / 100
    return plans[PLAN_COLUMNS].reset_index(drop=True)


PLAN_COLUMNS = ["instruction_id", "plan_id", "customer_id", "kind", "action", "priority", "execute_on", "amount",
                "from_account_id", "to_account_id", "target", "due_date", "horizon_days", "p10_before", "p10_after",
                "reason", "headline", "reversal", "reversible_until", "consents", "requires_mandate", "plan_version",
                "policy_version", "model_version"]


def empty_plans() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PLAN_COLUMNS})


def safety_violations(day: date, plans: pd.DataFrame, forecast: pd.DataFrame, horizons: list[int]) -> pd.DataFrame:
    """The check the gate runs on every plan row of a night, from the persisted tables alone: for each customer and
    horizon h, the forecast's P10 minimum balance over h (as published, no buffer) less everything the customer's
    plan moves by D + h must stay at or above zero. A customer with plan rows but no P10 breaks it too. Returns the
    rows that break it (customer_id, horizon_days, p10, moved)."""
    if plans.empty:
        return pd.DataFrame(columns=["customer_id", "horizon_days", "p10", "moved"])
    offset = (pd.to_datetime(plans["execute_on"]) - pd.Timestamp(day)).dt.days.to_numpy()
    out = []
    for h in horizons:
        moved = (plans.assign(m=np.where(offset <= h, plans["amount"].astype(float), 0.0))
                 .groupby("customer_id")["m"].sum())
        p10 = (forecast[forecast["horizon_days"] == h].groupby("customer_id")["min_balance_p10"].min()
               .reindex(moved.index))
        bad = p10.isna() | (p10 - moved < -0.005) | pd.Series(offset > horizons[-1], index=plans.index).groupby(
            plans["customer_id"]).any().reindex(moved.index)
        bad |= pd.Series(offset < 1, index=plans.index).groupby(plans["customer_id"]).any().reindex(moved.index)
        frame = pd.DataFrame({"customer_id": moved.index, "horizon_days": h, "p10": p10.to_numpy(),
                              "moved": moved.to_numpy()})
        out.append(frame[bad.to_numpy(bool)])
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------------
# Read, write
# ---------------------------------------------------------------------------------------------------------------

def _snapshot(paths: Paths, table: str, day: date) -> str | None:
    folder = store.snapshot_path(paths, table, day, required=False)
    return str(folder) if folder is not None and any(folder.rglob("*.parquet")) else None


def _bucket_scan(paths: Paths, table: str, bucket: int) -> str | None:
    root = paths.table("silver", table)
    if not root.exists() or not any(root.glob(f"load_date=*/bucket={int(bucket)}/*.parquet")):
        return None
    return (f"read_parquet('{root}/load_date=*/bucket={int(bucket)}/*.parquet', hive_partitioning = true, "
            f"union_by_name = true, hive_types_autocast = false, hive_types = {{'bucket': integer}})")


def _gold(paths: Paths, table: str, day: date, bucket: int) -> pd.DataFrame | None:
    folder = lake.partition_path(paths, "gold", table, as_of=day.isoformat(), bucket=str(int(bucket)))
    if not any(folder.glob("*.parquet")):
        return None
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").df()
    finally:
        con.close()


def _cadence_months(frequency: Any) -> float:
    """Months between the payments of an OBIE standing-order frequency code (0 when it is shorter or unknown)."""
    text = str(frequency or "")
    found = re.match(r"IntrvlMnthDay:(\d+)", text)
    if found:
        return float(found.group(1))
    return 3.0 if text.startswith("QtrDay") else 0.0


def read_inputs(paths: Paths, day: date, bucket: int, cfg: dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """The read step: what earlier stages persisted for D and the bucket (gold cash_forecast, customer_roles and
    recurring_streams; the feature store's income), silver snapshots (consent, accounts, open-banking payments) and
    the bucket's silver balances and postings (the latest balance and the interest charged per account, last year's
    payments)."""
    cfg = cfg or settings()
    iso, b = day.isoformat(), int(bucket)
    prov = cfg["provision"]
    forecast = _gold(paths, "cash_forecast", day, b)
    if forecast is None:
        raise SegoneError(f"gold cash_forecast has no partition as_of={iso}/bucket={b}: run the forecast first")
    from pipelines.profiles import read_gold, settings as profile_settings

    roles = read_gold(paths, "customer_roles", day, b).assign(
        window_days=int(profile_settings()["roles"]["window_days"]))
    streams = _gold(paths, "recurring_streams", day, b)
    features = store.read_table(paths, "customer_features", day, b, columns="customer_id, income_90")
    income = pd.DataFrame({"customer_id": features["customer_id"],
                           "monthly_income": features["income_90"].astype(float) / 3.0})
    con = lake.connect(shared=True)
    try:
        consent_path = _snapshot(paths, "consent_state", day)
        consent = con.execute(
            f"select customer_id, is_personalization_allowed, is_open_banking_allowed "
            f"from read_parquet('{consent_path}/**/*.parquet') where bucket = {b}").df() if consent_path else \
            pd.DataFrame({"customer_id": pd.Series(dtype=str), "is_personalization_allowed": pd.Series(dtype=bool),
                          "is_open_banking_allowed": pd.Series(dtype=bool)})
        accounts = pd.DataFrame(columns=ACCOUNT_COLUMNS)
        accounts_path = _snapshot(paths, "accounts", day)
        balances, postings = _bucket_scan(paths, "balances", b), _bucket_scan(paths, "transactions", b)
        window = int(cfg["debt"]["rate_window_days"])
        loaded = f"(load_date = 'history' or load_date <= '{iso}')"
        # the amount in the base currency, as the feature store reads it (partitions conformed before amount_base
        # was filled hold nulls there: the amount itself when it is in the base currency, else the posting is left)
        base = f"coalesce(amount_base, case when currency = '{base_currency()}' then amount end)"
        if accounts_path and balances:
            patterns = " or ".join(f"upper(coalesce(description, '')) like '%{p.upper()}%'"
                                   for p in cfg["debt"]["interest_patterns"])
            interest = (f"select account_id, -sum({base}) as charged from {postings} where {loaded} "
                        f"and booking_date > date '{iso}' - interval {window} day and booking_date <= date '{iso}' "
                        f"and {base} < 0 and channel in ('interest', 'fee') and ({patterns}) group by all"
                        if postings else "select cast(null as varchar) as account_id, 0.0 as charged where false")
            accounts = con.execute(f"""
                with own as (
                    select customer_id, account_id, product from read_parquet('{accounts_path}/**/*.parquet',
                        union_by_name = true)
                    where bucket = {b} and source = 'core' and is_open),
                latest as (
                    select account_id, balance from {balances} where {loaded} and as_of <= date '{iso}'
                        and as_of > date '{iso}' - interval 35 day
                    qualify row_number() over (partition by account_id order by as_of desc, load_date desc) = 1),
                charged as ({interest})
                select own.customer_id, own.account_id, own.product, cast(latest.balance as double) as balance,
                    cast(coalesce(charged.charged, 0) as double) as interest_charged, {window} as window_days
                from own left join latest using (account_id) left join charged using (account_id)
                order by all""").df()
        bills = [pd.DataFrame(columns=BILL_COLUMNS)]
        until = (day + timedelta(days=int(prov["lookahead_days"]))).isoformat()
        scheduled = _snapshot(paths, "scheduled_payments", day)
        if scheduled:
            bills.append(con.execute(f"""
                select customer_id, 'scheduled_payment' as source, cast(execution_at as date) as due_date,
                    -cast(amount as double) as amount, true as needs_open_banking, scheduled_payment_id as key
                from read_parquet('{scheduled}/**/*.parquet') where bucket = {b} and amount < 0
                    and cast(execution_at as date) > date '{iso}' and cast(execution_at as date) <= date '{until}'
                """).df())
        orders = _snapshot(paths, "standing_orders", day)
        if orders:
            found = con.execute(f"""
                select customer_id, frequency, cast(next_payment_at as date) as due_date,
                    -cast(next_payment_amount as double) as amount, standing_order_id as key
                from read_parquet('{orders}/**/*.parquet') where bucket = {b} and next_payment_amount < 0
                    and cast(next_payment_at as date) > date '{iso}'
                    and cast(next_payment_at as date) <= date '{until}'
                    and coalesce(lower(status), 'active') not in ('inactive', 'cancelled', 'expired')""").df()
            found = found[found["frequency"].map(_cadence_months) >= float(prov["min_cadence_months"])]
            bills.append(found.drop(columns="frequency").assign(source="standing_order", needs_open_banking=True))
        if postings:
            con.register("consent_of_d", consent)
            allowed = "select customer_id from consent_of_d where coalesce(is_open_banking_allowed, false)"
            bills.append(con.execute(last_year_sql(postings, loaded, base, day, prov, allowed)).df())
    finally:
        con.close()
    if streams is not None and len(streams):
        cadences = set(prov["stream_cadences"])
        s = streams[(streams["direction"] == "out") & streams["cadence"].isin(cadences)
                    & (streams["lifecycle"] != "stopped") & ~streams["is_own_transfer"].astype("boolean").fillna(False)]
        bills.append(pd.DataFrame({"customer_id": s["customer_id"], "source": "stream",
                                   "due_date": pd.to_datetime(s["next_expected_date"]).dt.date,
                                   "amount": -s["amount"].astype(float), "needs_open_banking": False,
                                   "key": s["stream_id"]}))
    frames = [f for f in bills if len(f)]
    bill_frame = (pd.concat(frames, ignore_index=True)[BILL_COLUMNS] if frames else bills[0])
    if len(bill_frame):
        bill_frame["due_date"] = pd.to_datetime(bill_frame["due_date"]).dt.date
        bill_frame = bill_frame.drop_duplicates(["customer_id", "due_date", "amount"]).reset_index(drop=True)
    return {"forecast": forecast, "roles": roles, "accounts": accounts, "bills": bill_frame, "income": income,
            "consent": consent}


def last_year_sql(postings: str, loaded: str, base: str, day: date, prov: dict[str, Any],
                  open_banking_customers: str) -> str:
    """The payments made about a year before D (booked between D + 1 - 365 and D + lookahead_days - 365, money out in
    the base currency, on one of `last_year_channels`) to a payee not paid again in the `last_year_quiet_days`
    before D, each expected again 365 days after it (source last_year). A posting delivered in more than one load
    counts once, as its first load has it. `postings` scans the bucket's silver postings, `loaded` selects the loads
    up to D, `base` is the amount in the base currency, `open_banking_customers` a query of the customers whose
    open-banking postings may be read on D (their consent): no other customer's open-banking posting is read, neither
    as a bill nor as the later payment that rules a bill out.

    Silver holds a posting once per load (conform rejects or skips a second delivery within a load, and within its
    dedup windows across loads), so only the ids found more than once are ranked by load (found by a hash of the id:
    a collision only ranks a few more ids, each then its own first load); a window over every payment of the year,
    to keep each posting's first load, cost most of the query (docs/plans.md, "What it costs"). The later payments
    are not made distinct before the anti join (one hash join instead of an aggregate and a join).

    What is held in memory is kept narrow: the year's payments are materialised once with the id's hash, not the id
    (the few repeated ids' rows are scanned again, with their ids, to rank their loads), and `paid` is not
    materialised (each of its two readers streams it). At a bucket of 62,500 customers (42M postings) the wide
    materialised rows no longer fit the connection's memory and spilled: 48 CPU-s a bucket, 30 now; the same at
    6,250 (docs/plans.md, "What it costs")."""
    channels = ", ".join(f"'{c}'" for c in prov["last_year_channels"])
    start = (day + timedelta(days=1) - timedelta(days=365)).isoformat()
    end = (day + timedelta(days=int(prov["lookahead_days"])) - timedelta(days=365)).isoformat()
    quiet = (day - timedelta(days=int(prov["last_year_quiet_days"]))).isoformat()
    rows = f"""
            select transaction_id, load_date, customer_id, source, booking_date, -cast({base} as double) as amount,
                coalesce(counterparty_id, merchant_name, regexp_replace(description, '[0-9]', '#', 'g')) as payee
            from {postings} where {loaded} and {base} < 0 and channel in ({channels})
                and booking_date <= date '{day.isoformat()}'
                and (source <> 'openbanking' or customer_id in ({open_banking_customers}))"""
    return f"""
        with payments as (
            select hash(transaction_id) as id_hash, customer_id, source, booking_date, amount, payee
            from ({rows})),
        repeated as (
            select id_hash from payments group by id_hash having count(*) > 1),
        first_loads as (
            select * from ({rows}) where hash(transaction_id) in (select id_hash from repeated)
            qualify row_number() over (partition by transaction_id order by load_date) = 1),
        paid as not materialized (
            select customer_id, source, booking_date, amount, payee from payments
            where id_hash not in (select id_hash from repeated)
            union all
            select customer_id, source, booking_date, amount, payee from first_loads),
        last_year as (
            select * from paid where booking_date between date '{start}' and date '{end}'),
        since as (
            select customer_id, payee from paid where booking_date > date '{quiet}')
        select l.customer_id, 'last_year' as source, l.booking_date + interval 365 day as due_date,
            l.amount, l.source = 'openbanking' as needs_open_banking, md5(l.payee) as key
        from last_year as l anti join since using (customer_id, payee)
        order by all"""


def make_plans(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task make_plans for one shard: read (`read_inputs`), plan (`plan_frame`), write gold plans."""
    started = time.perf_counter()
    cfg = settings()
    inputs = read_inputs(paths, day, bucket, cfg)
    plans = plan_frame(day, cfg=cfg, **inputs)
    metrics = {"n_plan_rows": int(len(plans)), "n_customers": int(plans["customer_id"].nunique()),
               "by_action": {a: int((plans["action"] == a).sum()) for a in ACTIONS},
               "amount_by_action": {a: round(float(plans.loc[plans["action"] == a, "amount"].sum()), 2)
                                    for a in ACTIONS},
               "n_bills_known": int(len(inputs["bills"])),
               "policy_version": str(cfg["policy_version"]),
               "seconds": round(time.perf_counter() - started, 2)}
    return outputs.write_stage(paths, day, bucket, "plans", {TABLE: plans}, metrics)


def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def plan_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (`segone run`); the DAG maps make_plans over the shards."""
    return summarise_shards(paths, day, [make_plans(paths, day, b) for b in shards()])


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_plan_rows": sum(m["n_plan_rows"] for m in per_shard),
               "n_customers": sum(m["n_customers"] for m in per_shard),
               "by_action": {a: sum(m["by_action"][a] for m in per_shard) for a in ACTIONS},
               "amount_by_action": {a: round(sum(m["amount_by_action"][a] for m in per_shard), 2) for a in ACTIONS},
               "n_bills_known": sum(m["n_bills_known"] for m in per_shard),
               "policy_version": per_shard[0]["policy_version"] if per_shard else settings()["policy_version"]}
    write_run_metrics(paths, day.isoformat(), "plans", metrics)
    return metrics


def check_safety(paths: Paths, day: date) -> dict[str, Any]:
    """The safety rule on every plan row of D, from the persisted gold plans and cash_forecast alone (not the
    stage's own p10_after): raises GateFailed naming the customers that break it."""
    con = lake.connect(shared=True)
    try:
        root = paths.table("gold", TABLE) / f"as_of={day.isoformat()}"
        plans = con.execute(f"select customer_id, execute_on, amount from read_parquet('{root}/*/*.parquet', "
                            f"hive_partitioning = false)").df() if any(root.glob("*/*.parquet")) else empty_plans()
        froot = paths.table("gold", "cash_forecast") / f"as_of={day.isoformat()}"
        forecast = con.execute(f"select customer_id, horizon_days, min_balance_p10 from read_parquet("
                               f"'{froot}/*/*.parquet', hive_partitioning = false)").df() \
            if any(froot.glob("*/*.parquet")) else pd.DataFrame(columns=["customer_id", "horizon_days",
                                                                          "min_balance_p10"])
    finally:
        con.close()
    horizons = [int(h) for h in settings()["horizons"]]
    broken = safety_violations(day, plans, forecast, horizons)
    result = {"n_rows_checked": int(len(plans)), "n_customers_checked": int(plans["customer_id"].nunique()),
              "n_customer_horizons_checked": int(plans["customer_id"].nunique()) * len(horizons),
              "n_violations": int(len(broken))}
    if len(broken):
        sample = "; ".join(f"{r.customer_id} within {r.horizon_days} days: P10 {r.p10} less {r.moved:.2f} moved"
                           for r in broken.head(5).itertuples())
        raise GateFailed(f"the plans of {day} break the safety rule for {broken['customer_id'].nunique()} customers "
                         f"(the projected P10 balance would go below zero): {sample}")
    return result


def validate_plans(paths: Paths, day: date, shard_list: list[int]) -> dict[str, Any]:
    """The plans' gate: every shard's result, the gold suite (expectations/gold_plans.json) and the safety rule
    on every row against the persisted forecast; raises GateFailed to stop the night."""
    from pipelines.quality import validate_gold

    shard_metrics = [read_run_metrics(paths, day.isoformat(), f"plans_bucket_{b}") for b in shard_list]
    missing = [b for b, m in zip(shard_list, shard_metrics) if m is None]
    if missing:
        raise SegoneError(f"the plans of {day} are incomplete: no result for buckets {missing}")
    metrics = {"plans": summarise_shards(paths, day, shard_metrics),
               "validation": validate_gold(paths, day, [TABLE], gate="validate_plans"),
               "safety": check_safety(paths, day)}
    write_run_metrics(paths, day.isoformat(), "validate_plans", metrics)
    return metrics
