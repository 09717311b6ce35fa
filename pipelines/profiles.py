"""Stage 3c, customer profiles (per shard): what each customer does in the bank's app and the roles their own
income shows, persisted for decide (the dashboard layout and the channel context).

For one customer bucket as of D, and only for customers whose personalization consent holds on D (without it the
app's events and the postings feed nothing here):
- gold `app_usage`: per customer and area of the app, views, feature uses, searches and notifications answered in
  the window (config/profiles.yaml `app`), the days the area was used and the last one;
- gold `app_signals`: per customer, activity in the window, whether they are an app user, and how they answer
  notifications, with push fatigue (most push notifications dismissed) and its reason;
- gold `customer_roles`: irregular_earner (most income from self-employed work) and retiree (most income from
  pensions, of pension age), with the evidence in plain words.

Read (silver app_events, transactions, accounts, customers, consent_state of the bucket) -> `profile_frames` (pure:
frames in, frames out, tested on hand-made frames) -> write. Decide reads the persisted tables through
`read_profile_context`, never the events or the postings. docs/decisioning.md explains the choices.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines import lake
from pipelines.config import Paths, load_config
from pipelines.contract import landing_contract
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics
from pipelines.schemas import table_schema

log = logging.getLogger(__name__)

TABLES = ("app_usage", "app_signals", "customer_roles")
ROLES = ("irregular_earner", "retiree")
NOTIFICATION_EVENTS = ("notification_opened", "notification_dismissed")
# what opens an area: a screen viewed, a feature of it used, a notification that opens it opened
USE_EVENTS = ("screen_viewed", "feature_used", "notification_opened")
INCOME_KINDS = ("salary", "benefit", "pension", "self_employed")
EVENT_COLUMNS = ["customer_id", "day", "event_type", "target", "channel", "n"]
CREDIT_COLUMNS = ["customer_id", "source", "text", "channel", "payer", "n", "amount"]
COVERAGE_COLUMNS = ["customer_id", "source", "first_day"]


def settings() -> dict[str, Any]:
    cfg = load_config("profiles")
    for role in ROLES:
        # the reasons say "most of your income": a role needs more than half of it
        if float(cfg["roles"][role]["min_share"]) < 0.5:
            raise SegoneError(f"config/profiles.yaml roles.{role}.min_share is {cfg['roles'][role]['min_share']}: "
                              f"it must be at least 0.5 (the reason says 'most of your income')")
    return cfg


def app_targets() -> tuple[str, ...]:
    """The app's vocabulary of areas: the `target` values of the landing contract's app_events."""
    return tuple(next(c for c in landing_contract()["app_events"].columns if c.name == "target").values)


def pension_keywords() -> list[str]:
    """The words that make a credit a pension: config/life_events.yaml keyword_signals.pension (one list)."""
    return [str(k).upper() for k in load_config("life_events")["keyword_signals"]["pension"]]


@dataclass
class Profiles:
    app_usage: pd.DataFrame
    app_signals: pd.DataFrame
    customer_roles: pd.DataFrame


# ---------------------------------------------------------------------------------------------------------------
# The pure function
# ---------------------------------------------------------------------------------------------------------------

def consented(consents: pd.DataFrame, purpose: str = "personalization") -> set[str]:
    column = f"is_{purpose}_allowed"
    if consents is None or consents.empty or column not in consents:
        return set()
    return set(consents.loc[consents[column].astype("boolean").fillna(False).to_numpy(bool), "customer_id"])


def profile_frames(events: pd.DataFrame, credits: pd.DataFrame, customers: pd.DataFrame, consents: pd.DataFrame,
                   as_of: date, cfg: dict[str, Any] | None = None, coverage: pd.DataFrame | None = None
                   ) -> Profiles:
    """The three gold frames of one shard as of D (without as_of and bucket).

    events: customer_id, day (UTC date), event_type, target, channel, n (events of that kind that day).
    credits: customer_id, source (core/openbanking), text (upper-cased description and merchant), channel, payer,
    n, amount (base currency): money in to the customer's current accounts in the roles window, own-account
    transfers left out; payer is the counterparty id (null when the posting has none). customers: customer_id,
    birth_year. consents: customer_id, is_personalization_allowed, is_open_banking_allowed. coverage: customer_id,
    source, first_day: the customer's first posting (any, in or out) on those accounts in the roles window, so that
    a reason speaks only of days the data covers (`customer_roles`); None: the data covers the whole window. Only
    personalization-consented customers get rows; open-banking credits (and coverage) count only with the
    open_banking consent."""
    cfg = cfg or settings()
    allowed = consented(consents)
    events = events[events["customer_id"].isin(allowed)] if len(events) else events
    usage, signals = app_profiles(events, as_of, cfg["app"])
    external = consented(consents, "open_banking")

    def mine(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None or not len(frame):
            return frame
        frame = frame[frame["customer_id"].isin(allowed)]
        return frame[(frame["source"] != "openbanking") | frame["customer_id"].isin(external)]

    roles = customer_roles(mine(credits), customers[customers["customer_id"].isin(allowed)], as_of, cfg["roles"],
                           mine(coverage) if coverage is not None else None)
    return Profiles(usage, signals, roles)


def _days_before(values: pd.Series, as_of: date) -> np.ndarray:
    """Whole days from each date to D (0 on D, negative after it), as int64."""
    stamps = pd.to_datetime(values).to_numpy().astype("datetime64[D]")
    return (np.datetime64(as_of, "D") - stamps).astype("int64")


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an int64 array (a sort, faster here than a hash)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _dates(before: np.ndarray, as_of: date) -> list:
    """The dates `before` days before D (None where negative: none)."""
    out = (np.datetime64(as_of, "D") - before.astype("timedelta64[D]")).astype(object)
    return [d if b >= 0 else None for d, b in zip(out, before)]


def app_profiles(events: pd.DataFrame, as_of: date, cfg: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(app_usage, app_signals) from the day-level event counts of consented customers.

    Days are counted as whole days before D and the strings as codes, so that a million customers' events group in
    numpy rather than in Python objects."""
    events = events if len(events) else pd.DataFrame(columns=EVENT_COLUMNS)
    before = _days_before(events["day"], as_of) if len(events) else np.zeros(0, dtype="int64")
    keep = (before >= 0) & (before < int(cfg["window_days"]))
    events, before = events[keep], before[keep]
    cust, customers = pd.factorize(events["customer_id"].astype(str), sort=True)
    target, targets = pd.factorize(events["target"].astype(str), sort=True)
    customers, targets = np.asarray(customers, dtype=object), np.asarray(targets, dtype=object)
    kind = events["event_type"].astype(str).to_numpy()
    channel = events["channel"].astype(str).to_numpy()
    n = events["n"].to_numpy().astype("int64")
    n_targets = max(len(targets), 1)

    # app_usage: per customer and area (one key per pair)
    slot, pairs = pd.factorize(cust.astype("int64") * n_targets + target, sort=True)
    pairs = np.asarray(pairs, dtype="int64")
    usage = pd.DataFrame({"customer_id": customers[pairs // n_targets] if len(pairs) else np.array([], dtype=object),
                          "target": targets[pairs % n_targets] if len(pairs) else np.array([], dtype=object)})
    for column, name in (("n_views", "screen_viewed"), ("n_feature_uses", "feature_used"), ("n_searches", "searched"),
                         ("n_notifications_opened", "notification_opened"),
                         ("n_notifications_dismissed", "notification_dismissed")):
        usage[column] = np.bincount(slot, weights=np.where(kind == name, n, 0), minlength=len(pairs)).astype("int64")
    use = np.isin(kind, USE_EVENTS)
    used_days = _distinct(slot[use].astype("int64") * 1_000_000 + before[use])
    usage["n_days_used"] = np.bincount(used_days // 1_000_000, minlength=len(pairs)).astype("int64")
    latest = np.full(len(pairs), -1, dtype="int64")
    if len(used_days):
        # the smallest days-before of a pair is its latest day: used_days is sorted by pair, then by days-before
        first_of_pair = np.r_[True, np.diff(used_days // 1_000_000) != 0]
        latest[used_days[first_of_pair] // 1_000_000] = used_days[first_of_pair] % 1_000_000
    usage["last_used_on"] = _dates(latest, as_of)

    # app_signals: per customer. A day the customer opened the app: any event but a dismissed notification
    n_customers = len(customers)
    active = kind != "notification_dismissed"
    active_days = _distinct(cust[active].astype("int64") * 1_000_000 + before[active])
    who = active_days // 1_000_000
    signals = pd.DataFrame({"customer_id": customers,
                            "n_events": np.bincount(cust, weights=n, minlength=n_customers).astype("int64"),
                            "n_active_days": np.bincount(who, minlength=n_customers).astype("int64")})
    first = np.full(n_customers, -1, dtype="int64")
    last = np.full(n_customers, -1, dtype="int64")
    if len(active_days):
        days = active_days % 1_000_000
        np.maximum.at(first, who, days)                     # the earliest day: the most days before D
        last_days = np.full(n_customers, np.iinfo("int64").max)
        np.minimum.at(last_days, who, days)
        last = np.where(last_days == np.iinfo("int64").max, -1, last_days)
    signals["first_active_on"] = _dates(first, as_of)
    signals["last_active_on"] = _dates(last, as_of)
    signals["is_app_user"] = signals["n_active_days"] >= int(cfg["min_active_days"])
    # the first day of the window the app's events cover: the shard's first event (any consented customer's) in it.
    # The window start when the bank delivered the app's events for the whole window; later when it started
    # delivering them since (the sentences then speak of fewer days). Not the customer's own first event: a customer
    # who started using the app last week has not opened a module in the 90 days either.
    covered = int(before.max()) + 1 if len(before) else 0
    signals["app_data_since"] = as_of - timedelta(days=covered - 1) if covered else None
    note = cfg["notifications"]
    recent = before < int(note["window_days"])
    for name in ("push", "inapp"):
        for answer in ("opened", "dismissed"):
            mine = recent & (channel == name) & (kind == f"notification_{answer}")
            signals[f"n_{name}_{answer}"] = np.bincount(cust[mine], weights=n[mine],
                                                        minlength=n_customers).astype("int64")
    answered = signals["n_push_opened"] + signals["n_push_dismissed"]
    signals["push_dismiss_share"] = (signals["n_push_dismissed"] / answered.where(answered > 0)).round(4)
    signals["is_push_fatigued"] = (answered >= int(note["min_responses"])) & \
        (signals["push_dismiss_share"].fillna(0) >= float(note["fatigue_dismiss_share"]))
    # the days the reason speaks of: the notification window, or fewer when the app's events cover less of it
    span = min(int(note["window_days"]), covered) if covered else int(note["window_days"])
    words = ("dismissed " + signals["n_push_dismissed"].astype(str) + " of the " + answered.astype(str)
             + f" push notifications they answered in the last {span} days")
    signals["push_fatigue_reason"] = words.where(signals["is_push_fatigued"], None)
    return usage, signals


def income_kinds(credits: pd.DataFrame, cfg: dict[str, Any]) -> np.ndarray:
    """Per credit: salary, benefit, pension, self_employed or None (another credit: no income of a kind)."""
    text = credits["text"].fillna("").astype(str).str.upper()
    channel = credits["channel"].astype(str)
    income = cfg["income"]
    pension = text.str.contains("|".join(re.escape(k) for k in pension_keywords()), regex=True).to_numpy()
    words = r"\b(?:" + "|".join(re.escape(p.upper()) for p in income["self_employed"]["patterns"]) + r")\b"
    self_employed = channel.isin(income["self_employed"]["channels"]).to_numpy() & \
        text.str.contains(words, regex=True).to_numpy()
    return np.select([pension, channel.isin(income["salary_channels"]).to_numpy(),
                      channel.isin(income["benefit_channels"]).to_numpy(), self_employed],
                     ["pension", "salary", "benefit", "self_employed"], default=None).astype(object)


def customer_roles(credits: pd.DataFrame, customers: pd.DataFrame, as_of: date, cfg: dict[str, Any],
                   coverage: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per customer and role that holds: irregular_earner (self-employed income is more than half of the
    income) and retiree (pensions are more than half of the income, and of pension age), with the evidence in words
    that are true of the customer: of the income paid into their accounts (the bank sees no other); over the window,
    or fewer days when the data covers less of it (`coverage`: the shard's first own-bank posting, the customer's
    first open-banking posting); payers counted only when every payment names one (a counterparty id)."""
    columns = ["customer_id", "role", "n_payments", "n_payers", "amount", "income_share", "reason"]
    if credits is None or credits.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    credits = credits.assign(kind=income_kinds(credits, cfg)).dropna(subset=["kind"])
    credits = credits.assign(amount=credits["amount"].astype("float64"), n=credits["n"].astype("int64"))
    income = credits.groupby("customer_id")["amount"].sum()
    age = (as_of.year - customers.set_index("customer_id")["birth_year"].astype("float64"))
    window = int(cfg["window_days"])
    # the first day the data covers for each customer: the shard's first posting on its own accounts in the window
    # (the bank's history may be shorter than the window) and, when their open-banking postings count, their first
    # open-banking posting (the aggregator may have fetched less); the later of the two
    first = pd.Series(dtype="datetime64[ns]")
    if coverage is not None and len(coverage):
        days = coverage.assign(first_day=pd.to_datetime(coverage["first_day"]))
        core = days.loc[days["source"] != "openbanking", "first_day"].min()
        external = days[days["source"] == "openbanking"].groupby("customer_id")["first_day"].min()
        customers_seen = pd.Index(days["customer_id"].unique())
        first = pd.Series(core, index=customers_seen, dtype="datetime64[ns]")
        first = pd.concat([first, external], axis=1).max(axis=1)
    parts = []
    for role in ROLES:
        rule = cfg[role]
        mine = credits[credits["kind"] == rule["kind"]]
        mine = mine.assign(unnamed=mine["n"].where(mine["payer"].isna(), 0))
        per = mine.groupby("customer_id").agg(n_payments=("n", "sum"), n_payers=("payer", "nunique"),
                                              n_unnamed=("unnamed", "sum"), amount=("amount", "sum"))
        share = per["amount"] / income.reindex(per.index)
        per["income_share"] = share.clip(0, 1).round(4)
        # "most": more than half, and more than min_share (compared unrounded)
        keep = (share > max(float(rule["min_share"]), 0.5)) & (per["n_payments"] >= int(rule["min_payments"]))
        if "min_age" in rule:
            keep &= age.reindex(per.index).fillna(-1) >= float(rule["min_age"])
        per = per[keep].reset_index()
        since = (pd.Timestamp(as_of) - pd.to_datetime(first.reindex(per["customer_id"]))).dt.days + 1
        days = since.clip(upper=window).fillna(window).astype(int).astype(str).to_numpy()
        n, k = per["n_payments"].astype(int), per["n_payers"].astype(int)
        payments = n.astype(str) + np.where(n == 1, " payment", " payments")
        if role == "irregular_earner":
            named = per["n_unnamed"].to_numpy() == 0
            payers = np.where(named, " from " + k.astype(str) + np.where(k == 1, " payer", " payers"), "")
            reason = ("most of the income paid into your accounts in the last " + days
                      + " days came from self-employed work (" + payments + payers + ")")
        else:
            reason = ("most of the income paid into your accounts in the last " + days + " days was pension payments ("
                      + payments + ")")
        parts.append(per.assign(role=role, reason=pd.Series(reason, index=per.index, dtype=object)))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out = out[columns].sort_values(["customer_id", "role"], kind="stable").reset_index(drop=True)
    return out.astype({"n_payments": "int64", "n_payers": "int64", "amount": "float64",
                       "income_share": "float64"}).assign(amount=lambda f: f["amount"].round(2))


# ---------------------------------------------------------------------------------------------------------------
# Read, write, the stage
# ---------------------------------------------------------------------------------------------------------------

def _snapshot(paths: Paths, table: str, day: date) -> str | None:
    root = paths.table("silver", table)
    values = sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*") if any(p.rglob("*.parquet"))) \
        if root.exists() else []
    earlier = [v for v in values if v <= day.isoformat()]
    return str(lake.partition_path(paths, "silver", table, as_of=earlier[-1])) if earlier else None


def _bucket_files(paths: Paths, table: str, bucket: int) -> str | None:
    root = paths.table("silver", table)
    if not root.exists() or not any(root.glob(f"load_date=*/bucket={int(bucket)}/*.parquet")):
        return None
    return (f"read_parquet('{root}/load_date=*/bucket={int(bucket)}/*.parquet', hive_partitioning = true, "
            f"union_by_name = true, hive_types_autocast = false, hive_types = {{'bucket': integer}})")


def read_inputs(paths: Paths, day: date, bucket: int, cfg: dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """The read step: consents, customers (birth year), day-level app event counts in the app window, the credits
    to current accounts in the roles window and the first posting on those accounts in it (coverage), of the
    bucket's personalization-consented customers."""
    cfg = cfg or settings()
    iso, b = day.isoformat(), int(bucket)
    con = lake.connect(shared=True)
    try:
        consent_path = _snapshot(paths, "consent_state", day)
        consents = con.execute(
            f"select customer_id, is_personalization_allowed, is_open_banking_allowed "
            f"from read_parquet('{consent_path}/**/*.parquet') where bucket = {b}").df() if consent_path else \
            pd.DataFrame({"customer_id": pd.Series(dtype=str), "is_personalization_allowed": pd.Series(dtype=bool),
                          "is_open_banking_allowed": pd.Series(dtype=bool)})
        customers_path = _snapshot(paths, "customers", day)
        customers = con.execute(f"select customer_id, birth_year from read_parquet('{customers_path}/**/*.parquet') "
                                f"where bucket = {b}").df() if customers_path else \
            pd.DataFrame({"customer_id": pd.Series(dtype=str), "birth_year": pd.Series(dtype="float64")})
        allowed = sorted(consented(consents))
        con.register("allowed_frame", pd.DataFrame({"customer_id": pd.Series(allowed, dtype=object)}))
        end = f"timestamptz '{(day + timedelta(days=1)).isoformat()} 00:00:00+00'"
        events = pd.DataFrame(columns=EVENT_COLUMNS)
        scan = _bucket_files(paths, "app_events", b)
        if scan is not None and allowed:
            since = (day - timedelta(days=int(cfg["app"]["window_days"]) - 1)).isoformat()
            events = con.execute(f"""
                with delivered as (
                    select customer_id, occurred_at, event_type, target, channel from {scan}
                    where (load_date = 'history' or load_date <= '{iso}')
                        and occurred_at >= timestamptz '{since} 00:00:00+00' and occurred_at < {end}
                        and customer_id in (select customer_id from allowed_frame)
                    qualify row_number() over (partition by event_id order by load_date) = 1)
                select customer_id, cast(occurred_at as date) as day, event_type, target, channel, count(*) as n
                from delivered group by all order by all""").df()
        credits = pd.DataFrame(columns=CREDIT_COLUMNS)
        coverage = pd.DataFrame(columns=COVERAGE_COLUMNS)
        scan = _bucket_files(paths, "transactions", b)
        accounts_path = _snapshot(paths, "accounts", day)
        if scan is not None and accounts_path is not None and allowed:
            since = (day - timedelta(days=int(cfg["roles"]["window_days"]) - 1)).isoformat()
            own = (f"select account_id, customer_id, product from read_parquet('{accounts_path}/**/*.parquet') "
                   f"where bucket = {b}")
            window = (f"(t.load_date = 'history' or t.load_date <= '{iso}') "
                      f"and t.booking_date between date '{since}' and date '{iso}' "
                      f"and t.customer_id in (select customer_id from allowed_frame)")
            credits = con.execute(f"""
                with own as ({own}),
                credits as (
                    select t.customer_id, t.source, upper(concat_ws(' ', t.description, t.merchant_name)) as text,
                        t.channel, t.counterparty_id as payer, cast(t.amount_base as double) as amount
                    from {scan} as t
                    join own on own.account_id = t.account_id and own.product = 'current'
                    where {window} and t.amount_base > 0
                        and not exists (select 1 from own as mine
                                        where mine.customer_id = t.customer_id
                                            and mine.account_id = t.counterparty_id))
                select customer_id, source, text, channel, payer, count(*) as n, sum(amount) as amount
                from credits group by all order by all""").df()
            # the first posting (in or out) on those accounts in the window: how much of it the data covers
            coverage = con.execute(f"""
                with own as ({own})
                select t.customer_id, t.source, min(t.booking_date) as first_day
                from {scan} as t join own on own.account_id = t.account_id and own.product = 'current'
                where {window} group by all order by all""").df()
    finally:
        con.close()
    return {"events": events, "credits": credits, "customers": customers, "consents": consents,
            "coverage": coverage}


def write_gold(paths: Paths, table: str, frame: pd.DataFrame, day: date, bucket: int) -> int:
    """One gold partition (as_of=D/bucket=N) with exactly the columns and types of config/tables.yaml, swapped in
    whole (an empty frame writes an empty partition: a re-run never leaves stale rows)."""
    schema = table_schema("gold", table)
    columns = [c for c in schema.columns if c.name not in schema.partition]
    frame = frame.reindex(columns=[c.name for c in columns])
    select = ", ".join(f'cast("{c.name}" as {c.type}) as "{c.name}"' for c in columns)
    final = lake.partition_path(paths, "gold", table, as_of=day.isoformat(), bucket=str(int(bucket)))
    con = lake.connect(shared=True)
    try:
        con.register("frame", frame.astype(object).where(frame.notna(), None))
        return lake.write_relation(con, f"select {select} from frame", final, paths)
    finally:
        con.close()


def profile_shard(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """Read, profile and write gold app_usage, app_signals and customer_roles of one bucket as of D."""
    started = time.perf_counter()
    cfg = settings()
    inputs = read_inputs(paths, day, bucket, cfg)
    read_seconds = time.perf_counter() - started
    profiles = profile_frames(inputs["events"], inputs["credits"], inputs["customers"], inputs["consents"], day, cfg,
                              coverage=inputs["coverage"])
    rows = {table: write_gold(paths, table, getattr(profiles, table), day, bucket) for table in TABLES}
    signals, roles = profiles.app_signals, profiles.customer_roles
    metrics = {"bucket": int(bucket), "as_of": day.isoformat(), "rows": rows,
               "n_consented": len(consented(inputs["consents"])),
               "n_customers_with_app_events": int(len(signals)),
               "n_app_users": int(signals["is_app_user"].sum()) if len(signals) else 0,
               "n_push_fatigued": int(signals["is_push_fatigued"].sum()) if len(signals) else 0,
               "roles": {role: int((roles["role"] == role).sum()) for role in ROLES},
               "seconds": round(time.perf_counter() - started, 2), "read_seconds": round(read_seconds, 2)}
    write_run_metrics(paths, day.isoformat(), f"profiles_bucket_{int(bucket)}", metrics)
    return metrics


def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def profile_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the DAG maps profile_shard over the shards instead)."""
    return summarise_shards(paths, day, [profile_shard(paths, day, b) for b in shards()])


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_consented": sum(m["n_consented"] for m in per_shard),
               "n_customers_with_app_events": sum(m["n_customers_with_app_events"] for m in per_shard),
               "n_app_users": sum(m["n_app_users"] for m in per_shard),
               "n_push_fatigued": sum(m["n_push_fatigued"] for m in per_shard),
               "roles": {role: sum(m["roles"][role] for m in per_shard) for role in ROLES},
               "rows": {t: sum(m["rows"][t] for m in per_shard) for t in TABLES}}
    write_run_metrics(paths, day.isoformat(), "profiles", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# What decide reads
# ---------------------------------------------------------------------------------------------------------------

def read_gold(paths: Paths, table: str, day: date, bucket: int) -> pd.DataFrame:
    """D's persisted partition of one profile table for one bucket; empty (with the columns) when the stage wrote
    none."""
    schema = table_schema("gold", table)
    columns = [c.name for c in schema.columns if c.name not in schema.partition]
    folder = lake.partition_path(paths, "gold", table, as_of=day.isoformat(), bucket=str(int(bucket)))
    if not any(folder.glob("*.parquet")):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select {', '.join(columns)} from read_parquet('{folder}/*.parquet', "
                           f"hive_partitioning = false)").df()
    finally:
        con.close()


def read_profile_context(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """The persisted profiles of D for one bucket as decide's context fields (one row per customer with any):
    see `profile_context`."""
    return profile_context(*(read_gold(paths, t, day, bucket) for t in TABLES))


def profile_context(app_usage: pd.DataFrame, app_signals: pd.DataFrame, customer_roles: pd.DataFrame
                    ) -> pd.DataFrame:
    """Context fields per customer: is_app_user, app_active_days, app_data_since, is_push_fatigued, push_dismissed,
    push_answered, push_fatigue_reason; app_days_<area> (days the area was used in the window) and
    app_searches_<area> for every area of the app's vocabulary; is_<role> and <role>_reason for every role."""
    frames = []
    if len(app_signals):
        s = app_signals.set_index("customer_id")
        frames.append(pd.DataFrame({
            "is_app_user": s["is_app_user"].astype(bool), "app_active_days": s["n_active_days"].astype("float64"),
            "app_data_since": pd.to_datetime(s["app_data_since"]),
            "is_push_fatigued": s["is_push_fatigued"].astype(bool),
            "push_dismissed": s["n_push_dismissed"].astype("float64"),
            "push_answered": (s["n_push_opened"] + s["n_push_dismissed"]).astype("float64"),
            "push_fatigue_reason": s["push_fatigue_reason"].astype(object)}))
    if len(app_usage):
        for value, prefix in (("n_days_used", "app_days_"), ("n_searches", "app_searches_")):
            wide = app_usage.pivot_table(index="customer_id", columns="target", values=value, aggfunc="sum")
            frames.append(wide.reindex(columns=list(app_targets())).fillna(0).add_prefix(prefix).astype("float64"))
    if len(customer_roles):
        r = customer_roles.set_index(["customer_id", "role"])["reason"].unstack("role")
        r = r.reindex(columns=list(ROLES))
        frames.append(pd.concat([r.notna().add_prefix("is_"), r.add_suffix("_reason")], axis=1))
    if not frames:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object)})
    out = pd.concat(frames, axis=1)
    out.index.name = "customer_id"
    return out.reset_index()
