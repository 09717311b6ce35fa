"""Stage 3, features: per customer shard, as of one or more cut-offs, from silver tables only.

The SQL in sql/features_*.sql reads fixed view names that `register_silver` sets up over the lake (transactions_in,
balances_in, accounts_in, customers_in, cutoffs, cadences, mcc_categories); `build_panel` runs them in order:
account_days -> daily_balance -> recurring_streams -> customer features (and labels for training and backtests).
The same code serves the nightly run (one cut-off, D) and training (many cut-offs), so what a model is trained on is
what it scores.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Iterable

import duckdb
import pandas as pd

from pipelines import lake
from pipelines.config import REPO_ROOT, Paths, base_currency, load_config
from pipelines.errors import SegoneError

log = logging.getLogger(__name__)

SQL_DIR = REPO_ROOT / "sql"
HISTORY = "history"
FEATURE_WINDOW_DAYS = 90   # the longest look-back of a balance feature
SERIES_DAYS = 120          # days of daily series before the first cut-off, by default
STREAM_CANDIDATE_CARD_MCCS = ("5815", "5816", "5817", "5818", "4899", "7997")


def forecast_settings() -> dict:
    return load_config("forecast")


@dataclass
class Panel:
    """What the features stage hands the engines, in the long-format contract of models/contract.py."""

    features: pd.DataFrame          # one row per customer and cut-off
    streams: pd.DataFrame           # recurring streams per customer and cut-off
    series: pd.DataFrame            # customer_id, ds, value: the daily cash position up to the last cut-off
    labels: pd.DataFrame | None     # outcomes per customer, cut-off and horizon (training and backtests only)
    reconciliation: pd.DataFrame    # accounts whose reported balances disagree with their postings


def mcc_category_frame() -> pd.DataFrame:
    """Every four-digit MCC that config/mcc_categories.yaml names, with its category (first match wins)."""
    rows: dict[str, str] = {}
    for category, spec in load_config("mcc_categories")["categories"].items():
        codes = list(spec.get("codes", []))
        for low, high in spec.get("ranges", []):
            codes.extend(f"{code:04d}" for code in range(int(low), int(high) + 1))
        for code in codes:
            rows.setdefault(str(code), category)
    return pd.DataFrame({"mcc": list(rows), "category": list(rows.values())})


def cadence_frame() -> pd.DataFrame:
    cadences = forecast_settings()["recurring"]["cadences"]
    return pd.DataFrame([
        {"cadence": name, "cadence_days": int(spec["days"]), "tolerance": int(spec["tolerance"]), "priority": i}
        for i, (name, spec) in enumerate(cadences.items())
    ])


def _latest_snapshot(paths: Paths, table: str, as_of: date) -> str:
    root = paths.table("silver", table)
    values = sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*") if any(p.glob("*.parquet"))) \
        if root.exists() else []
    earlier = [v for v in values if v <= as_of.isoformat()]
    if not earlier:
        raise SegoneError(f"silver {table} has no snapshot on or before {as_of}: load the history first "
                          f"(`segone load-history`)")
    return earlier[-1]


def _bucket_filter(buckets: Iterable[int] | None) -> str:
    if buckets is None:
        return "true"
    values = sorted({int(b) for b in buckets})
    return f"bucket in ({', '.join(map(str, values))})" if values else "false"


def register_silver(con: duckdb.DuckDBPyConnection, paths: Paths, as_of: date,
                    buckets: Iterable[int] | None = None) -> None:
    """Views over the silver lake as the run for `as_of` sees it: facts loaded up to as_of, snapshots as of the
    latest partition on or before it, restricted to the given customer buckets (None: all)."""
    buckets = None if buckets is None else list(buckets)
    where_bucket = _bucket_filter(buckets)
    loads = f"(load_date = '{HISTORY}' or load_date <= '{as_of.isoformat()}')"
    con.register("mcc_categories_frame", mcc_category_frame())
    con.execute("create or replace temp table mcc_categories as select * from mcc_categories_frame")
    transactions = lake.scan_sql(paths, "silver", "transactions")
    balances = lake.scan_sql(paths, "silver", "balances")
    if transactions is None or balances is None:
        raise SegoneError("silver transactions or balances are missing: load the history first (`segone load-history`)")
    card_mccs = ", ".join(f"'{m}'" for m in STREAM_CANDIDATE_CARD_MCCS)
    fx = lake.partition_path(paths, "silver", "fx_rates", as_of=_latest_snapshot(paths, "fx_rates", as_of))
    con.execute(f"create or replace temp table fx_in as select currency, cast(rate_to_base as decimal(18, 6)) as rate "
                f"from read_parquet('{fx}/**/*.parquet')")
    base = base_currency()
    # Amounts in the base currency only: silver's amount_base (conform quarantines a posting whose currency has no
    # rate). Postings silver kept before that rule carry amount_base null: a base-currency one counts as it is, a
    # foreign one at today's rate when there is one, and none is ever counted 1:1 as the base currency.
    con.execute(f"""
        create or replace temp view transactions_in as
        select * from (
            select
                t.transaction_id, t.account_id, t.customer_id, t.source, t.booking_date, t.channel, t.mcc, t.country,
                t.currency, t.merchant_name, t.counterparty_id, t.description,
                cast(coalesce(t.amount_base, case when t.currency = '{base}' then t.amount end,
                              round(t.amount * fx_in.rate, 2)) as decimal(18, 2)) as amount_value,
                coalesce(m.category, 'other') as category,
                coalesce(t.counterparty_id, upper(t.merchant_name),
                         regexp_replace(upper(coalesce(t.description, '')), '[0-9]+', '#', 'g')) as stream_key,
                (t.channel not in ('card', 'atm', 'fee') or t.mcc in ({card_mccs})) as is_stream_candidate
            from {transactions} as t
            left join mcc_categories as m using (mcc)
            left join fx_in on t.currency = fx_in.currency
            where {where_bucket} and {loads} and t.booking_date <= date '{as_of.isoformat()}'
        ) where amount_value is not null
    """)
    # balances in the base currency, like the postings' amount_base (at the rate of the snapshot: a revaluation
    # of a foreign balance is not a posting, and reconciles as a gap only where the rate moved); a foreign balance
    # without a rate is left out, never read 1:1. Money stays DECIMAL: DuckDB sums decimals exactly, doubles in
    # parallel in no fixed order.
    con.execute(f"""
        create or replace temp view balances_in as
        select * from (
            select b.account_id, b.customer_id, b.source, b.as_of,
                b.balance * case when coalesce(b.currency, '{base}') = '{base}' then 1 else fx_in.rate end
                    as balance_value
            from {balances} as b
            left join fx_in using (currency)
            where {where_bucket} and {loads} and b.as_of <= date '{as_of.isoformat()}'
        ) where balance_value is not null
    """)
    for table in ("accounts", "customers"):
        snapshot = _latest_snapshot(paths, table, as_of)
        path = lake.partition_path(paths, "silver", table, as_of=snapshot)
        con.execute(f"create or replace temp table {table}_in as "
                    f"select * from read_parquet('{path}/**/*.parquet') where {where_bucket}")


def _set_variables(con: duckdb.DuckDBPyConnection, cutoffs: list[date], series_start: date) -> None:
    settings = forecast_settings()
    recurring = settings["recurring"]
    con.execute(f"set variable last_cutoff = date '{max(cutoffs).isoformat()}'")
    con.execute(f"set variable series_start = date '{series_start.isoformat()}'")
    con.execute(f"set variable stream_lookback_days = {int(recurring['lookback_days'])}")
    con.execute(f"set variable stream_min_occurrences = {int(recurring['min_occurrences'])}")
    con.execute(f"set variable stream_min_regularity = {float(recurring['min_regularity'])}")
    con.execute(f"set variable stream_max_amount_cv = {float(recurring['max_amount_cv'])}")
    con.execute(f"set variable min_income_regularity = {float(settings['confidence']['min_income_regularity'])}")


def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def build_panel(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = (30, 60, 90),
                with_labels: bool = False, series_until: date | None = None, series_days: int = SERIES_DAYS
                ) -> Panel:
    """Features (and optionally labels) for every customer registered in `con` at every cut-off.

    The daily cash position is built from `series_days` before the first cut-off (the features look 90 days back;
    a longer series is for engines that fit on it, like Prophet) and `series_until` extends it past the last
    cut-off, so labels can see the outcomes; features only ever read rows on or before their own cut-off.
    """
    cutoffs = sorted(set(cutoffs))
    if not cutoffs:
        raise SegoneError("no cut-off dates to build features for")
    series_start = cutoffs[0] - timedelta(days=max(int(series_days), FEATURE_WINDOW_DAYS) - 1)
    _set_variables(con, [*cutoffs, *([series_until] if series_until else [])], series_start)
    con.register("cutoffs_frame", pd.DataFrame({"cutoff": pd.to_datetime(cutoffs)}))
    con.execute("create or replace temp table cutoffs as select cast(cutoff as date) as cutoff from cutoffs_frame")
    con.register("horizons_frame", pd.DataFrame({"horizon_days": [int(h) for h in horizons]}))
    con.execute("create or replace temp table horizons as select cast(horizon_days as integer) as horizon_days "
                "from horizons_frame")
    con.register("cadences_frame", cadence_frame())
    con.execute("create or replace temp table cadences as select cadence, cast(cadence_days as integer) as cadence_days, "
                "cast(tolerance as integer) as tolerance, priority from cadences_frame")

    con.execute(f"create or replace temp table account_days as {sql_text('features_account_days')}")
    con.execute("create or replace temp table primary_days as select account_id, ds from account_days where is_primary")
    con.execute(f"create or replace temp table daily_balance as {sql_text('features_daily_balance')}")
    con.execute(f"create or replace temp table recurring_streams as {sql_text('features_recurring_streams')}")
    features = con.execute(f"{sql_text('features_customer')} order by customer_id, cutoff").df()
    streams = con.execute("select * from recurring_streams order by customer_id, cutoff, stream_id").df()
    last_cutoff = max(cutoffs).isoformat()
    series = con.execute(f"""
        select customer_id, cast(ds as timestamp) as ds, round(value, 6) as value from daily_balance
        where ds <= date '{last_cutoff}' order by customer_id, ds""").df()
    labels = None
    if with_labels:
        labels = con.execute(f"{sql_text('features_labels')} order by customer_id, cutoff, horizon_days").df()
        labels["min_balance"] = labels["min_balance"].round(6)
    reconciliation = con.execute("""
        select account_id, customer_id, source, count(*) as n_gap_days,
            round(sum(abs(reconciliation_gap)), 2) as total_abs_gap, min(ds) as first_gap_day, max(ds) as last_gap_day
        from account_days where abs(reconciliation_gap) >= 0.01 and ds <= (select max(cutoff) from cutoffs)
        group by all order by account_id""").df()
    for frame in (features, streams, labels):
        if frame is not None and "cutoff" in frame:
            frame["cutoff"] = pd.to_datetime(frame["cutoff"])
    return Panel(features=_numeric(features), streams=streams, series=series, labels=labels,
                 reconciliation=reconciliation)


def _numeric(features: pd.DataFrame) -> pd.DataFrame:
    """Booleans as 0/1 and every feature as float64, the one dtype the engines take, rounded to 6 decimals: DuckDB
    sums doubles in parallel in no fixed order, and the last bits must not change a model or its data hash."""
    out = features.copy()
    for column in out.columns:
        if column in ("customer_id", "cutoff"):
            continue
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64").round(6)
    return out
