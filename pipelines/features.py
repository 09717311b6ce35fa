"""Stage 3, features: per customer shard, as of one or more cut-offs, from silver tables only.

The SQL in sql/features_*.sql reads fixed view names that `register_silver` sets up over the lake (transactions_in,
balances_in, accounts_in, customers_in, cutoffs, cadences, mcc_categories); `build_panel` runs them in order:
account_days -> daily_balance -> recurring_streams -> customer features (and labels for training and backtests).
The same code serves the nightly run (one cut-off, D) and training (many cut-offs), so what a model is trained on is
what it scores.
"""
from __future__ import annotations

import logging
import re
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


def _consent_path(paths: Paths, as_of: date):
    """The folder of the latest silver consent_state snapshot on or before `as_of` (None: there is none)."""
    root = paths.table("silver", "consent_state")
    values = sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*") if any(p.glob("*.parquet"))) \
        if root.exists() else []
    earlier = [v for v in values if v <= as_of.isoformat()]
    return lake.partition_path(paths, "silver", "consent_state", as_of=earlier[-1]) if earlier else None


def consent_snapshot(paths: Paths, as_of: date, buckets: Iterable[int] | None = None) -> pd.DataFrame:
    """The silver consent state as of `as_of` (the latest snapshot on or before it): one row per customer with the
    `is_<purpose>_allowed` flags. Without any snapshot nobody has consented to anything (service alerts aside)."""
    path = _consent_path(paths, as_of)
    if path is None:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str)})
    con = lake.connect()
    try:
        return con.execute(f"select * exclude (bucket) from read_parquet('{path}/**/*.parquet') "
                           f"where {_bucket_filter(buckets)} order by customer_id").df()
    finally:
        con.close()


def own_transfer_settings() -> dict:
    return forecast_settings()["own_transfers"]


def _sql_list(values: Iterable[str]) -> str:
    quoted = ["'" + str(v).replace("'", "''") + "'" for v in values]
    return ", ".join(quoted) if quoted else "null"


def register_silver(con: duckdb.DuckDBPyConnection, paths: Paths, as_of: date,
                    buckets: Iterable[int] | None = None) -> None:
    """Views over the silver lake as the run for `as_of` sees it: facts loaded up to as_of, snapshots as of the
    latest partition on or before it, restricted to the given customer buckets (None: all).

    Consent as of `as_of` decides, whatever the load date of the data (DESIGN principle 2): open-banking accounts,
    postings and balances of a customer whose `open_banking` consent does not hold on `as_of` are left out of every
    view, even when they were loaded while it held. Each posting carries `is_own_transfer`: money moved between
    two of the customer's own accounts (docs/forecasting.md), which is neither income nor spend."""
    buckets = None if buckets is None else list(buckets)
    where_bucket = _bucket_filter(buckets)
    loads = f"(load_date = '{HISTORY}' or load_date <= '{as_of.isoformat()}')"
    con.register("mcc_categories_frame", mcc_category_frame())
    con.execute("create or replace temp table mcc_categories as select * from mcc_categories_frame")
    transactions = lake.scan_sql(paths, "silver", "transactions")
    balances = lake.scan_sql(paths, "silver", "balances")
    if transactions is None or balances is None:
        raise SegoneError("silver transactions or balances are missing: load the history first (`segone load-history`)")
    consent = _consent_path(paths, as_of)
    con.execute("create or replace temp table open_banking_allowed as " + (
        f"select customer_id from read_parquet('{consent}/**/*.parquet') "
        f"where {where_bucket} and coalesce(is_open_banking_allowed, false)" if consent is not None
        else "select cast(null as varchar) as customer_id where false"))
    consented = "(source = 'core' or customer_id in (select customer_id from open_banking_allowed))"
    for table in ("accounts", "customers"):
        snapshot = _latest_snapshot(paths, table, as_of)
        path = lake.partition_path(paths, "silver", table, as_of=snapshot)
        kept = consented if table == "accounts" else "true"
        con.execute(f"create or replace temp table {table}_in as "
                    f"select * from read_parquet('{path}/**/*.parquet') where {where_bucket} and {kept}")
    fx = lake.partition_path(paths, "silver", "fx_rates", as_of=_latest_snapshot(paths, "fx_rates", as_of))
    con.execute(f"create or replace temp table fx_in as select currency, cast(rate_to_base as decimal(18, 6)) as rate "
                f"from read_parquet('{fx}/**/*.parquet')")
    base = base_currency()
    # Amounts in the base currency only: silver's amount_base (conform quarantines a posting whose currency has no
    # rate). Postings silver kept before that rule carry amount_base null: a base-currency one counts as it is, a
    # foreign one at today's rate when there is one, and none is ever counted 1:1 as the base currency.
    con.execute(f"""
        create or replace temp view consented_transactions as
        select * from (
            select t.*,
                cast(coalesce(t.amount_base, case when t.currency = '{base}' then t.amount end,
                              round(t.amount * fx_in.rate, 2)) as decimal(18, 2)) as amount_value
            from {transactions} as t
            left join fx_in on t.currency = fx_in.currency
            where {where_bucket} and {loads} and t.booking_date <= date '{as_of.isoformat()}' and {consented}
        ) where amount_value is not null
    """)
    _register_own_transfers(con)
    card_mccs = ", ".join(f"'{m}'" for m in STREAM_CANDIDATE_CARD_MCCS)
    con.execute(f"""
        create or replace temp view transactions_in as
        select
            t.transaction_id, t.account_id, t.customer_id, t.source, t.booking_date, t.channel, t.mcc, t.country,
            t.currency, t.merchant_name, t.counterparty_id, t.description, t.amount_value,
            coalesce(m.category, 'other') as category,
            coalesce(t.counterparty_id, upper(t.merchant_name),
                     regexp_replace(upper(coalesce(t.description, '')), '[0-9]+', '#', 'g')) as stream_key,
            -- card spending only at subscription-like merchants; a direct debit coming back (a payment returned
            -- unpaid, a refund, an indemnity claim) is never an income stream
            (t.channel not in ('card', 'atm', 'fee') or t.mcc in ({card_mccs}))
                and not (t.channel = 'direct_debit' and t.amount > 0) as is_stream_candidate,
            t.transaction_id in (select transaction_id from own_transfers) as is_own_transfer
        from consented_transactions as t
        left join mcc_categories as m using (mcc)
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
            where {where_bucket} and {loads} and b.as_of <= date '{as_of.isoformat()}' and {consented}
        ) where balance_value is not null
    """)


def _register_own_transfers(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table own_transfers(account_id, transaction_id): the postings that move money between two of the
    customer's own accounts (config/forecast.yaml `own_transfers`, docs/forecasting.md):
    - the counterparty is another of the customer's accounts (core, or open banking with consent), or
    - an opposite posting of the same amount on another of the customer's accounts within `pair_window_days`, both
      on a transfer-like channel, or
    - the description names an own-account transfer (`descriptions`, for an account the bank cannot see).
    A payment out of a current or savings account to the customer's own loan, mortgage or credit card is a
    repayment (a commitment, like a bill), not an own transfer; the credit on the lending account is one."""
    rules = own_transfer_settings()
    channels = _sql_list(rules["channels"])
    patterns = " or ".join(f"upper(coalesce(t.description, '')) like {_sql_list(['%' + str(d).upper() + '%'])}"
                           for d in rules.get("descriptions", [])) or "false"
    lending = _sql_list(rules["lending_products"])
    window = int(rules["pair_window_days"])
    con.execute(f"""
        create or replace temp table own_transfers as
        with candidates as (
            select t.transaction_id, t.account_id, t.customer_id, t.booking_date, t.counterparty_id, t.description,
                t.amount_value
            from consented_transactions as t
            where t.channel in ({channels})
        ),
        by_counterparty as (
            select c.transaction_id, c.account_id, c.amount_value, other.product as other_product
            from candidates as c
            join accounts_in as other
                on other.account_id = c.counterparty_id and other.customer_id = c.customer_id
                and other.account_id <> c.account_id
        ),
        by_pair as (
            select c.transaction_id, c.account_id, c.amount_value,
                arg_min(other.product, abs(o.booking_date - c.booking_date)) as other_product
            from candidates as c
            join candidates as o
                on o.customer_id = c.customer_id and o.account_id <> c.account_id
                and o.amount_value = -c.amount_value and c.amount_value <> 0
                and o.booking_date between c.booking_date - {window} and c.booking_date + {window}
            left join accounts_in as other on other.account_id = o.account_id
            group by all
        ),
        by_description as (
            select t.transaction_id, t.account_id, t.amount_value, cast(null as varchar) as other_product
            from candidates as t
            where {patterns}
        ),
        matched as (
            select * from by_counterparty
            union all select * from by_pair
            union all select * from by_description
        ),
        classified as (
            -- a payment out of a deposit account into the customer's own lending account is a repayment
            select matched.account_id, matched.transaction_id,
                matched.amount_value < 0 and coalesce(mine.product, '') not in ({lending})
                    and coalesce(matched.other_product, '') in ({lending}) as is_repayment
            from matched
            left join accounts_in as mine on mine.account_id = matched.account_id
        ),
        final as (
            select account_id, transaction_id
            from classified
            group by all
            having not bool_or(is_repayment)
        )
        select * from final
    """)


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
    arrears = arrears_settings()
    missed = arrears["missed_repayment"]
    con.execute(f"set variable arrears_window_days = {int(arrears['window_days'])}")
    con.execute(f"set variable repayment_products = [{_sql_list(missed['products'])}]")
    con.execute(f"set variable missed_repayment_days = {int(missed['days_since_last'])}")
    con.execute(f"set variable first_repayment_days = {int(missed['days_since_start'])}")
    for kind, pattern in arrears_patterns(arrears).items():
        con.execute(f"set variable {kind}_pattern = $pattern", {"pattern": pattern})
    channels = sorted({str(channel) for rule in arrears["evidence"] for channel in rule["channels"]})
    con.execute(f"set variable arrears_channels = [{_sql_list(channels)}]")


def arrears_settings() -> dict:
    """What counts as arrears (config/decisioning.yaml `arrears`): read by the features stage, which counts the
    evidence, and by decide, which words it."""
    return load_config("decisioning")["arrears"]


ARREARS_KINDS = ("returned_payment", "arrears_fee")


def arrears_patterns(arrears: dict) -> dict[str, str]:
    """Per evidence kind, one regular expression over `<channel> <DESCRIPTION IN UPPER CASE>` that holds when the
    posting is on one of a rule's channels and its description has one of that rule's patterns as whole words
    ("RETURNED" is not found in "C_RETURNED" or "UNRETURNED"). One constant expression per kind: DuckDB compiles it
    once, where a pattern read from a table would be compiled again for every row."""
    alternatives: dict[str, list[str]] = {kind: [] for kind in ARREARS_KINDS}
    for rule in arrears["evidence"]:
        if rule["kind"] not in ARREARS_KINDS:
            raise SegoneError(f"config/decisioning.yaml arrears.evidence: kind {rule['kind']!r} is not one of "
                              f"{', '.join(ARREARS_KINDS)}")
        channels = "|".join(re.escape(str(channel)) for channel in rule["channels"])
        words = "|".join(r"\s+".join(re.escape(word) for word in str(pattern).upper().split())
                         for pattern in rule["patterns"])
        alternatives[rule["kind"]].append(f"^(?:{channels}) .*\\b(?:{words})\\b")
    return {kind: "|".join(f"(?:{a})" for a in parts) if parts else "$^" for kind, parts in alternatives.items()}


def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def _daily_balance(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int],
                   series_until: date | None, series_days: int) -> list[date]:
    """The temp tables cutoffs, horizons, cadences, account_days, primary_days and daily_balance in `con`, for
    the features and the labels; returns the sorted cut-offs."""
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
    return cutoffs


def build_labels(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = (30, 60, 90),
                 series_until: date | None = None, series_days: int = SERIES_DAYS) -> pd.DataFrame:
    """Only the outcomes after each cut-off (features_labels.sql, the same daily cash position as build_panel's):
    customer_id, cutoff, horizon_days, is_shortfall, min_balance, days_to_shortfall. For scoring past forecasts
    against what happened (the nightly report's realised calibration) without building every feature."""
    _daily_balance(con, cutoffs, horizons, series_until, series_days)
    labels = con.execute(f"{sql_text('features_labels')} order by customer_id, cutoff, horizon_days").df()
    labels["min_balance"] = labels["min_balance"].round(6)
    labels["cutoff"] = pd.to_datetime(labels["cutoff"])
    return labels


def build_panel(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = (30, 60, 90),
                with_labels: bool = False, series_until: date | None = None, series_days: int = SERIES_DAYS
                ) -> Panel:
    """Features (and optionally labels) for every customer registered in `con` at every cut-off.

    The daily cash position is built from `series_days` before the first cut-off (the features look 90 days back;
    a longer series is for engines that fit on it, like Prophet) and `series_until` extends it past the last
    cut-off, so labels can see the outcomes; features only ever read rows on or before their own cut-off.
    """
    cutoffs = _daily_balance(con, cutoffs, horizons, series_until, series_days)
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
