"""Stage 3, the feature store (DESIGN section 6 step 3; docs/feature_store.md): lake/features/<table>/as_of=D/bucket=N/.

What it keeps, per customer bucket:
- daily rows (the bank's own postings and balances, aggregated by account, day and the facts the features read):
  `flow_days` (every posting, `posting_days`), `stream_days` (recurring-stream candidates, own-account transfers and
  the life-event income and payment streams, posting by posting where a later posting may pair with them,
  `recurring.lookback_days`), `balance_days` (reported balances, `balance_days`). A core table's partition as_of=N
  holds the rows night N added (the postings and balances of N's silver); the open-banking rows are kept whole
  in `ob_flow_days`, `ob_stream_days`, `ob_balance_days` (as_of=D holds all of them), so that a withdrawn consent
  takes them out of the store the next night.
- states (as_of=D holds all of it): `account_state` (first days, the balance carried into the series window),
  `customer_state` (first posting), `home_counts` (postings per currency and country), `stream_first` (first
  posting of each life-event stream), `customer_epochs` (customers rebuilt from silver: their older core rows are
  superseded).
- features as of D, what the later stages read: `customer_features` (the forecast's), `recurring_streams`,
  `life_event_features`, `balance_reconciliation`, `customer_context` (holdings, a credit card over its limit).

`update_features` (the DAG task of the same name) merges D's silver into D-1's store; `rebuild` computes the same
from silver alone (`segone features rebuild --date D`, the history load, and a night without a previous state).
A customer whose accounts changed (an account opened, a product, an open-banking consent), who has a posting or
balance dated before the series window, or one of whose own-account transfers would be classified differently
with the new postings, is rebuilt from silver that night: everything else merges exactly (sums, counts, minima).
Training and backtests compute their features with the same SQL over the rows `register_silver_rows` +
`build_rows` make from silver (pipelines/features.py), so a model sees what the night sees.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pandas as pd

from pipelines import lake, sql
from pipelines.config import Paths, base_currency, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

LAYER = "features"
HISTORY = "history"
DAY_TABLES = ("flow_days", "stream_days", "balance_days")
OB_TABLES = {table: f"ob_{table}" for table in DAY_TABLES}
STATE_TABLES = ("account_state", "customer_state", "home_counts", "stream_first", "stream_state", "inputs",
                "customer_epochs")
FEATURE_TABLES = ("customer_features", "recurring_streams", "life_event_features", "balance_reconciliation",
                  "customer_context")
STREAM_CANDIDATE_CARD_MCCS = ("5815", "5816", "5817", "5818", "4899", "7997")


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Windows:
    """How far back each kind of row is kept and read (config/features.yaml, config/forecast.yaml)."""

    series_days: int
    posting_days: int
    balance_days: int
    stream_days: int
    feature_nights: int

    def retention(self, table: str) -> int:
        base = table.removeprefix("ob_")
        return {"flow_days": self.posting_days, "stream_days": self.stream_days,
                "balance_days": self.balance_days}[base]


def windows() -> Windows:
    cfg = load_config("features")
    forecast = load_config("forecast")
    arrears = load_config("decisioning")["arrears"]
    out = Windows(series_days=int(cfg["series_days"]), posting_days=int(cfg["posting_days"]),
                  balance_days=int(cfg["balance_days"]),
                  stream_days=int(forecast["recurring"]["lookback_days"]),
                  feature_nights=int(cfg.get("feature_nights", 1)))
    problems = []
    if out.series_days < 91:
        problems.append("series_days must be at least 91 (the forecast features look 90 days back)")
    if out.posting_days < max(90, int(arrears["window_days"]), int(arrears["missed_repayment"]["days_since_last"]) + 1):
        problems.append("posting_days must cover 90 days, arrears.window_days and missed_repayment.days_since_last")
    if out.balance_days < max(out.series_days, 36):
        problems.append("balance_days must be at least series_days (the carry into the series window reads them)")
    if out.stream_days < out.series_days or out.posting_days < out.series_days:
        problems.append("posting_days and recurring.lookback_days must be at least series_days")
    if out.feature_nights < 1:
        problems.append("feature_nights must be at least 1")
    if out.posting_days < 30 * outflow_months():
        problems.append("posting_days must cover the large-expense threshold's outflow_months "
                        "(config/event_forecast.yaml) of 30 days")
    year = calendar()
    if out.stream_days < year["last_year_days"] + 1:
        problems.append("recurring.lookback_days must cover the calendar's last_year_days (config/event_forecast.yaml)")
    if year["last_year_rows"] == "all" and out.posting_days < year["last_year_days"] + 1:
        problems.append("posting_days must cover the calendar's last_year_days when last_year_rows is 'all' "
                        "(config/event_forecast.yaml)")
    if problems:
        raise SegoneError("config/features.yaml: " + "; ".join(problems))
    return out


def calendar() -> dict:
    """The event forecasts' calendar inputs (config/event_forecast.yaml `calendar`) sql/features_customer.sql reads:
    last_year_days and which rows of a year ago ('kept': the stream rows the store keeps that long; 'all')."""
    cfg = load_config("event_forecast")["calendar"]
    rows = str(cfg["last_year_rows"])
    if rows not in ("kept", "all"):
        raise SegoneError(f"config/event_forecast.yaml: calendar.last_year_rows must be 'kept' or 'all', not {rows!r}")
    return {"last_year_days": int(cfg["last_year_days"]), "last_year_rows": rows,
            "month_of_year": bool(cfg.get("month_of_year", True))}


def outflow_months() -> int:
    """The 30-day months the large-expense threshold's typical month is the median of (config/event_forecast.yaml
    expense.outflow_months; sql/features_customer.sql reads them from the store's postings)."""
    return int(load_config("event_forecast")["expense"]["outflow_months"])


def _escape(text: str) -> str:
    """A literal for an RE2 pattern."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def _alternatives(words: Iterable[str]) -> str:
    words = [_escape(str(w).upper()) for w in words]
    return "|".join(words) if words else "$^"


def mcc_facts_frame() -> pd.DataFrame:
    """Per MCC what a posting's features read: its spending category (config/mcc_categories.yaml, first match),
    its life-event signal groups (config/life_events.yaml mcc_signals), whether it is special-category data
    (forbidden_mccs: no life-event feature sees it) and whether a card posting with it can be a subscription."""
    from pipelines.life_events import forbidden_mccs

    categories: dict[str, str] = {}
    for category, spec in load_config("mcc_categories")["categories"].items():
        codes = list(spec.get("codes", []))
        for low, high in spec.get("ranges", []):
            codes.extend(f"{code:04d}" for code in range(int(low), int(high) + 1))
        for code in codes:
            categories.setdefault(str(code), category)
    le = load_config("life_events")
    signals: dict[str, list[str]] = {}
    for group, codes in le["mcc_signals"].items():
        for code in codes:
            signals.setdefault(str(code), []).append(str(group))
    forbidden = set(forbidden_mccs(le))
    mccs = sorted(set(categories) | set(signals) | forbidden | set(STREAM_CANDIDATE_CARD_MCCS))
    return pd.DataFrame({
        "mcc": mccs,
        "category": [categories.get(m) for m in mccs],
        "signals": [sorted(signals.get(m, [])) for m in mccs],
        "is_forbidden": [m in forbidden for m in mccs],
        "is_subscription": [m in STREAM_CANDIDATE_CARD_MCCS for m in mccs],
    })


def cadence_frame() -> pd.DataFrame:
    cadences = load_config("forecast")["recurring"]["cadences"]
    return pd.DataFrame([
        {"cadence": name, "cadence_days": int(spec["days"]), "tolerance": int(spec["tolerance"]), "priority": i}
        for i, (name, spec) in enumerate(cadences.items())
    ])


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


def variables(day: date, series_start: date, last_cutoff: date) -> dict[str, Any]:
    """Every DuckDB variable the store's and the features' SQL read (sql/store_*.sql, sql/features_*.sql)."""
    from pipelines.life_events import INFLOW_KEYWORD_SIGNALS

    forecast = load_config("forecast")
    recurring, own = forecast["recurring"], forecast["own_transfers"]
    arrears = load_config("decisioning")["arrears"]
    missed = arrears["missed_repayment"]
    le = load_config("life_events")
    keywords = [{"signal": str(group), "pattern": _alternatives(words),
                 "is_inflow": group in INFLOW_KEYWORD_SIGNALS}
                for group, words in le["keyword_signals"].items()]
    win = windows()
    patterns = arrears_patterns(arrears)
    return {
        "as_of": day, "series_start": series_start, "last_cutoff": last_cutoff,
        "base_currency": base_currency(),
        "series_days": win.series_days, "posting_days": win.posting_days, "balance_days": win.balance_days,
        "own_transfer_channels": [str(c) for c in own["channels"]],
        "own_description_pattern": _alternatives(own.get("descriptions", [])),
        "pair_window_days": int(own["pair_window_days"]),
        "lending_products": [str(p) for p in own["lending_products"]],
        "life_event_keywords": keywords,
        "any_keyword_pattern": _alternatives(w for words in le["keyword_signals"].values() for w in words),
        "returned_payment_pattern": patterns["returned_payment"],
        "arrears_fee_pattern": patterns["arrears_fee"],
        "arrears_window_days": int(arrears["window_days"]),
        "repayment_products": [str(p) for p in missed["products"]],
        "missed_repayment_days": int(missed["days_since_last"]),
        "first_repayment_days": int(missed["days_since_start"]),
        "stream_lookback_days": int(recurring["lookback_days"]),
        "stream_min_occurrences": int(recurring["min_occurrences"]),
        "stream_min_regularity": float(recurring["min_regularity"]),
        "stream_max_amount_cv": float(recurring["max_amount_cv"]),
        "min_income_regularity": float(forecast["confidence"]["min_income_regularity"]),
        "income_channels": [str(c) for c in forecast["income_history"]["income_channels"]],
        "stopped_lookback_days": int(le["stopped_streams"]["lookback_days"]),
        "stopped_min_occurrences": int(le["stopped_streams"]["min_occurrences"]),
        "stopped_silent_days": int(le["stopped_streams"]["silent_days"]),
        "replacement_overlap_days": int(le["income_replacement"]["overlap_days"]),
        "replacement_min_amount_ratio": float(le["income_replacement"]["min_amount_ratio"]),
        "replacement_min_payments": int(le["income_replacement"]["min_payments"]),
        "outflow_months": outflow_months(),
        "last_year_days": calendar()["last_year_days"],
        "last_year_all_rows": calendar()["last_year_rows"] == "all",
    }


def series_start(cutoff: date) -> date:
    """The first day of the daily series a night's features are computed from."""
    return cutoff - timedelta(days=windows().series_days - 1)


# ---------------------------------------------------------------------------------------------------------------
# Reading silver: reference snapshots and the postings and balances
# ---------------------------------------------------------------------------------------------------------------

def _bucket_filter(buckets: Iterable[int] | None, column: str = "bucket") -> str:
    if buckets is None:
        return "true"
    values = sorted({int(b) for b in buckets})
    return f"{column} in ({', '.join(map(str, values))})" if values else "false"


def snapshot_path(paths: Paths, table: str, day: date, required: bool = True):
    """The folder of silver `table`'s latest snapshot on or before `day`."""
    value = lake.latest_partition(paths, "silver", table, day)
    if value is None:
        if not required:
            return None
        raise SegoneError(f"silver {table} has no snapshot on or before {day}: load the history first "
                          f"(`segone load-history`)")
    return lake.partition_path(paths, "silver", table, as_of=value)


def register_reference(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, buckets: Iterable[int] | None,
                       series_begin: date | None = None, last_cutoff: date | None = None) -> None:
    """The snapshots as of `day` (customers_in, accounts_in: open-banking accounts only with that consent on
    `day`; fx_in; open_banking_allowed), the lookup tables and every variable, for the given buckets."""
    buckets = None if buckets is None else list(buckets)
    where = _bucket_filter(buckets)
    sql.set_variables(con, **variables(day, series_begin or series_start(day), last_cutoff or day))
    consent = snapshot_path(paths, "consent_state", day, required=False)
    con.execute("create or replace temp table open_banking_allowed as " + (
        f"select customer_id from read_parquet('{consent}/**/*.parquet') "
        f"where {where} and coalesce(is_open_banking_allowed, false)" if consent is not None
        else "select cast(null as varchar) as customer_id where false"))
    accounts = snapshot_path(paths, "accounts", day)
    con.execute(f"""create or replace temp table accounts_in as
        select * exclude (bucket) from read_parquet('{accounts}/**/*.parquet')
        where {where} and (source = 'core' or customer_id in (select customer_id from open_banking_allowed))""")
    customers = snapshot_path(paths, "customers", day)
    con.execute(f"create or replace temp table customers_in as "
                f"select * exclude (bucket) from read_parquet('{customers}/**/*.parquet') where {where}")
    fx = snapshot_path(paths, "fx_rates", day)
    con.execute(f"create or replace temp table fx_in as select currency, cast(rate_to_base as decimal(18, 6)) as rate "
                f"from read_parquet('{fx}/**/*.parquet')")
    con.register("mcc_facts_frame", mcc_facts_frame())
    con.execute("create or replace temp table mcc_facts as select * from mcc_facts_frame")
    con.register("cadences_frame", cadence_frame())
    con.execute("create or replace temp table cadences as select cadence, cast(cadence_days as integer) as "
                "cadence_days, cast(tolerance as integer) as tolerance, priority from cadences_frame")


def _silver_files(paths: Paths, table: str, loads: list[str], buckets: Iterable[int] | None) -> list[str]:
    """The Parquet files of silver `table` for the given load dates and buckets."""
    out = []
    for load in loads:
        root = lake.partition_path(paths, "silver", table, load_date=load)
        folders = [root / f"bucket={int(b)}" for b in buckets] if buckets is not None else [root]
        for folder in folders:
            out.extend(str(p) for p in sorted(folder.rglob("*.parquet")) if folder.exists())
    return out


def silver_loads(paths: Paths, day: date, after: date | None = None) -> list[str]:
    """The silver load dates a store as of `day` reads: the history and every night up to `day`, or (`after`
    given) the nights in (after, day]."""
    values = lake.partition_values(paths, "silver", "transactions", key="load_date")
    values += [v for v in lake.partition_values(paths, "silver", "balances", key="load_date") if v not in values]
    out = []
    for value in sorted(set(values)):
        if value == HISTORY:
            if after is None:
                out.append(value)
        elif value <= day.isoformat() and (after is None or value > after.isoformat()):
            out.append(value)
    return out


def _files_sql(files: list[str], empty: str) -> str:
    if not files:
        return f"(select * from {empty} where false)"
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], union_by_name = true)"


EMPTY_POSTINGS = """(select cast(null as varchar) as transaction_id, cast(null as varchar) as account_id,
    cast(null as varchar) as customer_id, cast(null as varchar) as source, cast(null as date) as booking_date,
    cast(null as decimal(18, 2)) as amount, cast(null as varchar) as currency, cast(null as decimal(18, 2)) as amount_base,
    cast(null as varchar) as description, cast(null as varchar) as merchant_name, cast(null as varchar) as mcc,
    cast(null as varchar) as channel, cast(null as varchar) as country, cast(null as varchar) as counterparty_id)"""
EMPTY_BALANCES = """(select cast(null as varchar) as account_id, cast(null as varchar) as customer_id,
    cast(null as varchar) as source, cast(null as date) as as_of, cast(null as decimal(18, 2)) as balance,
    cast(null as varchar) as currency)"""


def register_silver_rows(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, buckets: Iterable[int] | None,
                         loads: list[str], customers: str | None = None, within: str = "true") -> None:
    """Views `postings_in` and `balances_silver` over the silver postings and balances of the given loads, booked
    on or before `day`, in the buckets, of the customers in temp table `customers` (all when None) whose id meets
    `within` (a slice's predicate on customer_id: slice_predicates). Open-banking
    rows only for customers whose `open_banking` consent holds on `day` (open_banking_allowed), whatever night
    they were loaded (DESIGN principle 2). Amounts in the base currency: silver's amount_base; a posting silver
    kept without one (partitions written before that rule) counts as it is in the base currency, else at the rate
    of `day`'s snapshot, and is left out without one (such partitions predate the store: only a rebuild reads
    them)."""
    buckets = None if buckets is None else list(buckets)
    who = f" and customer_id in (select customer_id from {customers})" if customers else ""
    who += f" and ({within})" if within != "true" else ""
    consented = "(source = 'core' or customer_id in (select customer_id from open_banking_allowed))"
    postings = _files_sql(_silver_files(paths, "transactions", loads, buckets), EMPTY_POSTINGS)
    balances = _files_sql(_silver_files(paths, "balances", loads, buckets), EMPTY_BALANCES)
    con.execute(f"""
        create or replace temp view postings_in as
        select * from (
            select t.transaction_id, t.account_id, t.customer_id, t.source, t.booking_date, t.channel, t.mcc,
                t.country, t.currency, t.merchant_name, t.counterparty_id, t.description,
                cast(coalesce(t.amount_base, case when t.currency = getvariable('base_currency') then t.amount end,
                              round(t.amount * fx_in.rate, 2)) as decimal(18, 2)) as amount_value
            from {postings} as t
            left join fx_in on fx_in.currency = t.currency
            where t.booking_date <= getvariable('as_of') and {consented}{who}
        ) where amount_value is not null""")
    con.execute(f"""
        create or replace temp view balances_silver as
        select customer_id, account_id, source, as_of as ds, coalesce(currency, getvariable('base_currency'))
                as currency, balance
        from {balances}
        where as_of <= getvariable('as_of') and {consented}{who}""")


# ---------------------------------------------------------------------------------------------------------------
# Building rows and states
# ---------------------------------------------------------------------------------------------------------------

def classify_and_enrich(con: duckdb.DuckDBPyConnection, neighbours: str | None = None) -> None:
    """`enriched_postings` from `postings_in`: own-account transfers classified among the own-channel postings
    (and the stored `neighbours`, own-channel rows already in the store, when given), then every fact derived."""
    con.execute("""create or replace temp table new_candidates as
        select transaction_id, account_id, customer_id, booking_date as ds, amount_value as amount, counterparty_id,
            regexp_matches(upper(coalesce(description, '')), getvariable('own_description_pattern'))
                as is_own_description
        from postings_in
        where list_contains(getvariable('own_transfer_channels'), channel)""")
    if neighbours:
        con.execute(f"""create or replace temp view transfer_candidates as
            select * from new_candidates
            union all
            select transaction_id, account_id, customer_id, ds, amount, counterparty_id, is_own_description
            from {neighbours}""")
    else:
        con.execute("create or replace temp view transfer_candidates as select * from new_candidates")
    sql.create_table(con, "own_transfers", "store_own_transfers")
    sql.create_table(con, "enriched_postings", "store_postings")


def build_rows(con: duckdb.DuckDBPyConnection) -> None:
    """`new_day_rows` (sql/store_day_rows.sql) and `new_balance_rows` from `enriched_postings` and
    `balances_silver`."""
    sql.create_table(con, "new_day_rows", "store_day_rows")
    con.execute("""create or replace temp table new_balance_rows as
        select customer_id, account_id, source, ds, currency, max(balance) as balance
        from balances_silver group by all""")


def build_states(con: duckdb.DuckDBPyConnection, rows: str, balances: str, previous: dict[str, str] | None,
                 carry_flows: str, carry_balances: str, prefix: str = "new_", carry: bool = True) -> None:
    """The state tables from `rows` and `balances` merged into `previous` (table names per state; none for a
    rebuild): new_account_state, new_customer_state, new_home_counts, new_stream_first."""
    previous = previous or {}
    con.execute(f"create or replace temp view day_rows as select * from {rows}")
    con.execute(f"create or replace temp view balance_rows as select * from {balances}")
    empty = {
        "account_firsts": "select cast(null as varchar) as customer_id, cast(null as varchar) as account_id, "
                          "cast(null as varchar) as source, cast(null as date) as first_day, "
                          "cast(null as date) as first_credit_day, cast(null as date) as first_balance_day, "
                          "cast(null as date) as first_income_day where false",
        "customer_state": "select cast(null as varchar) as customer_id, cast(null as varchar) as source, "
                          "cast(null as date) as first_posting_day where false",
        "home_counts": "select cast(null as varchar) as customer_id, cast(null as varchar) as source, "
                       "cast(null as varchar) as kind, cast(null as varchar) as value, cast(null as bigint) as n "
                       "where false",
        "stream_first": "select cast(null as varchar) as customer_id, cast(null as varchar) as source, "
                        "cast(null as varchar) as stream_key, cast(null as varchar) as kind, "
                        "cast(null as varchar) as direction, cast(null as date) as first_day where false",
    }
    for name, query in empty.items():
        source = previous.get(name)
        con.execute(f"create or replace temp view previous_{name} as "
                    + (f"select * from {source}" if source else query))
    sql.create_table(con, f"{prefix}account_firsts", "store_account_firsts")
    for name in ("customer_state", "home_counts", "stream_first"):
        sql.create_table(con, f"{prefix}{name}", f"store_{name}")
    con.execute(f"create or replace temp view carry_flows as select * from {carry_flows}")
    con.execute(f"create or replace temp view carry_balances as select * from {carry_balances}")
    if not carry:
        return
    sql.create_table(con, f"{prefix}carry", "store_carry")
    con.execute(f"""create or replace temp table {prefix}account_state as
        select f.customer_id, f.account_id, f.source, f.first_day, f.first_credit_day, f.first_balance_day,
            f.first_income_day, c.carry_reported_day, c.carry_reported, c.carry_currency,
            coalesce(c.carry_flow, 0) as carry_flow
        from {prefix}account_firsts as f
        left join {prefix}carry as c using (customer_id, account_id, source)""")


# ---------------------------------------------------------------------------------------------------------------
# Features as of a cut-off (the night: D; training: many)
# ---------------------------------------------------------------------------------------------------------------

def register_feature_inputs(con: duckdb.DuckDBPyConnection, rows: str, balances: str, states: dict[str, str]) -> None:
    """The fixed view names sql/features_*.sql read: day_rows, balances_in (one reported balance per account and
    day, in the base currency at the rate of the snapshot), account_state, customer_state, home_counts,
    stream_first."""
    con.execute(f"create or replace temp view day_rows as select * from {rows}")
    con.execute(f"create or replace temp view balance_rows as select * from {balances}")
    con.execute(f"""create or replace temp view balances_in as
        select b.account_id, b.customer_id, b.source, b.ds as as_of,
            max(b.balance) * case when b.currency = getvariable('base_currency') then 1 else any_value(fx_in.rate) end
                as balance_value
        from {balances} as b
        left join fx_in using (currency)
        group by b.account_id, b.customer_id, b.source, b.ds, b.currency
        having balance_value is not null""")
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp view {name} as select * from {states[name]}")


def materialise_feature_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """The night's balances_in (one reported balance per account and day, in the base currency) computed once into a
    temp table, the view then reading it: account_days, the forecast's and the life events' features each read it,
    and as a view each of them grouped every balance of the window again (about a tenth of a shard's update at
    6,000 customers). It stays a view, so that life_events.restrict_to_customers narrows it as before. (day_rows is left
    a view: copying its rows cost about what its readers saved.)"""
    con.execute("create or replace temp table night_balances_in as select * from balances_in")
    con.execute("create or replace temp view balances_in as select * from night_balances_in")


def set_cutoffs(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = ()) -> None:
    con.register("cutoffs_frame", pd.DataFrame({"cutoff": pd.to_datetime(sorted(set(cutoffs)))}))
    con.execute("create or replace temp table cutoffs as select cast(cutoff as date) as cutoff from cutoffs_frame")
    con.register("horizons_frame", pd.DataFrame({"horizon_days": [int(h) for h in horizons]}, dtype="int64"))
    con.execute("create or replace temp table horizons as select cast(horizon_days as integer) as horizon_days "
                "from horizons_frame")


def compute_daily_balance(con: duckdb.DuckDBPyConnection, daily_balance: bool = True) -> None:
    """account_days, primary_days and daily_balance for the registered cut-offs (what the features and the labels
    read; `daily_balance` False: not daily_balance, which only the labels and the per-customer series read)."""
    sql.create_table(con, "account_days", "features_account_days")
    con.execute("create or replace temp table primary_days as select account_id, ds from account_days where is_primary")
    if daily_balance:
        sql.create_table(con, "daily_balance", "features_daily_balance")


def compute_streams(con: duckdb.DuckDBPyConnection, streams: str | None = None) -> None:
    """recurring_streams for the registered cut-offs; `streams`: a table of the streams already detected (the
    night's, store.night_features) instead of detecting them all."""
    if streams is None:
        detect_streams(con, "(select * from day_rows where is_stream_candidate and stream_key is not null)")
        con.execute("create or replace temp table recurring_streams as select * from detected_streams")
    else:
        con.execute(f"create or replace temp table recurring_streams as select * from {streams}")


def compute_series(con: duckdb.DuckDBPyConnection, streams: str | None = None, daily_balance: bool = True) -> None:
    """account_days, primary_days, daily_balance (unless `daily_balance` is False: the night's features do not read
    it, only the labels and the per-customer series do) and recurring_streams for the registered cut-offs."""
    compute_daily_balance(con, daily_balance)
    compute_streams(con, streams)


def detect_streams(con: duckdb.DuckDBPyConnection, candidates: str) -> None:
    """detected_streams: sql/features_recurring_streams.sql over the given stream-candidate rows."""
    con.execute(sql.text("stream_lifecycle"))
    con.execute(f"create or replace temp view stream_candidates as select * from {candidates}")
    sql.create_table(con, "detected_streams", "features_recurring_streams")


# ---------------------------------------------------------------------------------------------------------------
# The lake side: reading and writing the store's partitions
# ---------------------------------------------------------------------------------------------------------------

def table_path(paths: Paths, table: str, as_of: date | str, bucket: int):
    value = as_of.isoformat() if isinstance(as_of, date) else as_of
    return lake.partition_path(paths, LAYER, table, as_of=value, bucket=str(int(bucket)))


def state_date(paths: Paths, day: date, bucket: int) -> date | None:
    """The store's latest state before `day` for a bucket (None: the store has none yet)."""
    value = lake.latest_partition(paths, LAYER, "customer_epochs", day, bucket=bucket, strictly_before=True)
    return date.fromisoformat(value) if value else None


def _partition_files(paths: Paths, table: str, bucket: int, first: date | None, last: date) -> list[str]:
    files = []
    for value in lake.partition_values(paths, LAYER, table, bucket=bucket):
        if value <= last.isoformat() and (first is None or value >= first.isoformat()):
            folder = table_path(paths, table, value, bucket)
            files.extend(str(p) for p in sorted(folder.glob("*.parquet")))
    return files


def _read(paths: Paths, table: str, bucket: int, first: date | None, last: date, with_as_of: bool = False) -> str:
    """SQL over the store's partitions of `table` for one bucket with as_of in [first, last]."""
    files = _partition_files(paths, table, bucket, first, last)
    if not files:
        raise SegoneError(f"the feature store has no {table} for bucket {bucket} up to {last}: rebuild it with "
                          f"`segone features rebuild --date {last}`")
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    if with_as_of:
        return (f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true, "
                f"hive_types = {{'as_of': date, 'bucket': integer}})")
    return f"(select * exclude (as_of, bucket) from read_parquet([{listed}], hive_partitioning = true, " \
           f"union_by_name = true, hive_types = {{'as_of': varchar, 'bucket': integer}}))"


def typed_select(con: duckdb.DuckDBPyConnection, table: str, query: str, have: list[str] | None = None) -> str:
    """`query` with the columns and types config/tables.yaml gives features.<table>, in its order: a column the
    schema does not name is an error (it would be undocumented), unless the table has `feature_columns` (then it is
    a feature of that type, after the listed ones); a column the schema names that the query lacks is an error."""
    from pipelines.schemas import table_schema

    schema = table_schema(LAYER, table)
    if have is None:   # the query's columns (`have` given: a registered frame's, which DuckDB would scan to tell)
        have = [row[0] for row in con.execute(f"describe ({query})").fetchall()]
    declared = schema.data_column_names
    missing = [c for c in declared if c not in have]
    extra = [c for c in have if c not in declared]
    if missing or (extra and not schema.feature_type):
        raise SegoneError(f"features.{table}: the store's columns differ from config/tables.yaml "
                          f"(missing: {missing}, not in the schema: {extra})")
    types = {c.name: c.type for c in schema.columns}
    columns = [f'cast("{c}" as {types[c]}) as "{c}"' for c in declared]
    columns += [f'cast("{c}" as {schema.feature_type}) as "{c}"' for c in extra]
    return f"select {', '.join(columns)} from ({query})"


def _write(con: duckdb.DuckDBPyConnection, paths: Paths, table: str, query: str, day: date, bucket: int,
           columns: list[str] | None = None) -> int:
    """One partition of the store (as_of=D/bucket=N), typed by config/tables.yaml, swapped in whole (`columns`: the
    query's, when known)."""
    return lake.write_relation(con, typed_select(con, table, query, columns), table_path(paths, table, day, bucket),
                               paths)


# ---------------------------------------------------------------------------------------------------------------
# What invalidates the store
# ---------------------------------------------------------------------------------------------------------------

# What the store keeps is shaped by these SQL files (the rows' facts, the states, the streams carried to the next
# night) and by the settings in `variables`, `windows`, the MCC facts and the cadences.
DEFINITION_SQL = ("store_*.sql", "features_recurring_streams.sql", "stream_lifecycle.sql")
INPUT_SNAPSHOTS = ("accounts", "customers", "consent_state", "fx_rates")
FACT_TABLES = ("transactions", "balances")


def _fingerprint(folder) -> str | None:
    """sha256 of the names, sizes and modification times of a folder's Parquet files (None: no file). Every write
    of the lake swaps in new files (lake.write_relation), so a partition written again has a new fingerprint; a
    copy that keeps modification times (`cp -a`) keeps it."""
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def definition_fingerprint() -> str:
    """sha256 of what shapes the store's rows and states: the settings (config/features.yaml, forecast.yaml
    recurring and own_transfers, decisioning.yaml arrears, life_events.yaml signals, mcc_categories.yaml) and the
    SQL that derives them."""
    day = date(2000, 1, 1)
    settings = {k: v for k, v in variables(day, day, day).items() if k not in ("as_of", "series_start", "last_cutoff")}
    parts = [json.dumps(settings, sort_keys=True, default=str), json.dumps(windows().__dict__, sort_keys=True),
             mcc_facts_frame().to_json(), cadence_frame().to_json()]
    for pattern in DEFINITION_SQL:
        parts += [f"{path.name}\n{path.read_text(encoding='utf-8')}" for path in sorted(sql.SQL_DIR.glob(pattern))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def store_inputs(paths: Paths, day: date, bucket: int, definition: str | None = None) -> pd.DataFrame:
    """What a bucket's store as of `day` is computed from, each with its fingerprint (features.inputs): the
    definition, the postings and balances of every silver load up to `day` of the bucket, and the snapshots as of
    `day` (accounts, customers, consent, fx rates). A rebuild from silver as of `day` reads exactly these; so does
    a merge, through the state of the night before (tests/test_feature_store.py)."""
    rows = [("definition", "store", definition or definition_fingerprint())]
    for table in FACT_TABLES:
        for load in silver_loads(paths, day):
            folder = lake.partition_path(paths, "silver", table, load_date=load) / f"bucket={int(bucket)}"
            fingerprint = _fingerprint(folder)
            if fingerprint:
                rows.append(("load", f"{table}/load_date={load}/bucket={int(bucket)}", fingerprint))
    for table in INPUT_SNAPSHOTS:
        value = lake.latest_partition(paths, "silver", table, day)
        if value:
            rows.append(("snapshot", f"{table}/as_of={value}",
                         _fingerprint(lake.partition_path(paths, "silver", table, as_of=value)) or ""))
    return pd.DataFrame(rows, columns=["kind", "name", "fingerprint"])


def stale_inputs(paths: Paths, previous: date, bucket: int, definition: str | None = None) -> list[str]:
    """How the inputs of the store as of `previous` differ from the same inputs now: a silver load of a night up to
    `previous` conformed again (a correction), a load that appeared (a night delivered late, conformed after the
    store moved on) or disappeared, a snapshot rewritten, the definition changed. Empty: the state is what a
    rebuild as of `previous` would give, and the night can merge into it."""
    if previous.isoformat() not in lake.partition_values(paths, LAYER, "inputs", bucket=bucket):
        return [f"the store of {previous} recorded no inputs"]
    con = lake.connect(shared=True)
    try:
        recorded = con.execute(f"select kind, name, fingerprint from {_read(paths, 'inputs', bucket, previous, previous)}"
                               ).fetchall()
    finally:
        con.close()
    then = {(kind, name): fingerprint for kind, name, fingerprint in recorded}
    now = {(kind, name): fingerprint for kind, name, fingerprint in store_inputs(paths, previous, bucket,
                                                                                 definition).itertuples(
        index=False)}
    changes = [f"{name} {'changed' if key in now else 'removed'}" if key[0] != "definition" else
               "the store's definition (settings or SQL) changed"
               for key, fingerprint in sorted(then.items()) if now.get(key) != fingerprint
               for name in [key[1]]]
    changes += [f"{key[1]} is new" for key in sorted(now) if key not in then]
    return changes


# ---------------------------------------------------------------------------------------------------------------
# Rebuild and nightly update
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Built:
    """The temp tables of one bucket's store as of a day, in a connection: rows (core and open banking) to write,
    every row the features read, the states, and who was rebuilt from silver."""

    day: date
    bucket: int
    core_rows: str          # the core rows written as as_of=D (a rebuild: all of them; a night: what it added)
    core_balances: str
    ob_rows: str            # every open-banking row (as_of=D holds all of them)
    ob_balances: str
    all_rows: str           # every row the features read
    all_balances: str
    rebuilt: str            # temp table of the customers rebuilt from silver (their older core rows superseded)
    previous_streams: str | None = None   # the night before's streams, to carry those no new row touched
    metrics: dict[str, Any] = field(default_factory=dict)
    inputs: pd.DataFrame | None = None    # what the store as of `day` is computed from (store_inputs)


def _build_from_silver(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int,
                       customers: str | None, prefix: str, anyone: bool = True) -> None:
    """<prefix>rows, <prefix>balances and <prefix><state> of the given customers (all when None), from every silver
    load up to `day`: every day's rows (the states need the whole history); the caller keeps the retained window.
    `anyone` False (nobody to rebuild): the same tables, empty, without reading silver."""
    register_silver_rows(con, paths, day, [bucket], silver_loads(paths, day) if anyone else [], customers)
    classify_and_enrich(con)
    build_rows(con)
    con.execute(f"create or replace temp table {prefix}rows as select * from new_day_rows")
    con.execute(f"create or replace temp table {prefix}balances as select * from new_balance_rows")
    build_states(con, f"{prefix}rows", f"{prefix}balances", None,
                 carry_flows=f"(select customer_id, account_id, source, ds, amount from {prefix}rows)",
                 carry_balances=f"{prefix}balances", prefix=prefix)


def store_slices(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int) -> int:
    """How many slices the store of the bucket is built in: its customers (snapshot as of `day`) over
    config/features.yaml slice_customers, rounded up."""
    per = int(load_config("features").get("slice_customers") or 0)
    if per <= 0:
        return 1
    register_reference(con, paths, day, [bucket])
    n = int(con.execute("select count(*) from customers_in").fetchall()[0][0])
    return max(1, -(-n // per))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def slice_predicates(con: duckdb.DuckDBPyConnection, slices: int) -> list[str]:
    """`slices` predicates on customer_id that split every id into consecutive ranges of about as many customers of
    customers_in each: the first has no lower bound and the last no upper one, so a customer the snapshot no
    longer holds (still in the store's rows) falls in exactly one slice too. Ranges, not a hash: the store's files
    are sorted by customer, so a slice's scan of them skips the row groups of the other slices."""
    if slices <= 1:
        return ["true"]
    ids = [c for (c,) in con.execute("select customer_id from customers_in where customer_id is not null "
                                     "order by customer_id").fetchall()]
    bounds = sorted({ids[len(ids) * s // slices] for s in range(1, slices)} - {None}) if ids else []
    edges = [None, *bounds, None]
    out = []
    for low, high in zip(edges, edges[1:]):
        parts = ([f"customer_id >= {_literal(low)}"] if low is not None else []) + \
                ([f"customer_id < {_literal(high)}"] if high is not None else [])
        out.append(" and ".join(parts) or "true")
    return out


def narrow_reference(con: duckdb.DuckDBPyConnection, within: str) -> None:
    """The registered snapshots (register_reference, register_consent) narrowed to a slice's customers."""
    if within == "true":
        return
    for table in ("customers_in", "accounts_in", "consent_in", "open_banking_allowed"):
        if con.execute("select count(*) from duckdb_tables() where table_name = ? and temporary",
                       [table]).fetchall()[0][0]:
            con.execute(f"delete from {table} where not ({within}) or customer_id is null")


SLICE_TABLES = ("core_rows", "core_balances", "ob_rows", "ob_balances", "final_account_state",
                "final_customer_state", "final_home_counts", "final_stream_first", "final_stream_state",
                "final_customer_epochs")


def _sum_metrics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a bucket built in slices: counts and seconds added up, the reasons' counts too."""
    out: dict[str, Any] = {}
    for metrics in parts:
        for key, value in metrics.items():
            if isinstance(value, dict):
                merged = out.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key in out:
                out[key] = round(out[key] + value, 2) if isinstance(value, float) else out[key] + value
            else:
                out.setdefault(key, value)
    return out


def _build_in_slices(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int, slices: int,
                     definition: str, previous: date | None) -> tuple[Built, dict[str, pd.DataFrame]]:
    """The store of a large bucket built a slice of its customers at a time (slice_predicates), rebuilt from
    silver (`previous` None) or merged into the state of `previous`: each slice in its own connection, with the
    reference tables, the consent, the store's rows and states and the silver rows narrowed to its customers; its
    rows, states and features written to scratch Parquet files; then the bucket's tables in `con` from those files,
    as one build of the whole bucket gives them (every feature is a customer's own). `con` holds the bucket's
    snapshots as of `day` (store_slices registered them)."""
    scratch = lake.staging_dir(paths)
    predicates = slice_predicates(con, slices)
    parts: list[dict[str, Any]] = []
    try:
        for s, within in enumerate(predicates):
            part = lake.connect(shared=True)
            try:
                register_consent(part, paths, day, bucket)
                if previous is None:
                    register_reference(part, paths, day, [bucket])
                    narrow_reference(part, within)
                    part.execute("create or replace temp table slice_customers as select customer_id from customers_in")
                    built = rebuild_bucket(part, paths, day, bucket, customers="slice_customers")
                else:
                    built = update_bucket(part, paths, day, bucket, previous, within=within)
                frames = night_features(part, built)
                parts.append(built.metrics)
                names = dict(zip(SLICE_TABLES[:4], (built.core_rows, built.core_balances, built.ob_rows,
                                                    built.ob_balances))) | {t: t for t in SLICE_TABLES[4:]}
                for name, source in names.items():
                    (scratch / name).mkdir(parents=True, exist_ok=True)
                    part.execute(f"copy (select * from {source}) to '{scratch / name / f'slice-{s}.parquet'}' "
                                 f"({lake.parquet_options()})")
                for name, frame in frames.items():
                    (scratch / name).mkdir(parents=True, exist_ok=True)
                    frame.to_parquet(scratch / name / f"slice-{s}.parquet", index=False)
            finally:
                part.close()
        for name in SLICE_TABLES:
            con.execute(f"create or replace temp table {name} as select * from "
                        f"read_parquet('{scratch / name}/*.parquet', union_by_name = true)")
        # the feature frames in the order of their keys (config/tables.yaml)
        from pipelines.schemas import table_schema

        tables = {name: pd.concat([pd.read_parquet(f) for f in sorted((scratch / name).glob("*.parquet"))],
                                  ignore_index=True).sort_values(list(table_schema(LAYER, name).key))
                  .reset_index(drop=True)
                  for name in FEATURE_TABLES}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    built = Built(day=day, bucket=bucket, core_rows="core_rows", core_balances="core_balances", ob_rows="ob_rows",
                  ob_balances="ob_balances", all_rows="core_rows", all_balances="core_balances",
                  rebuilt="final_customer_epochs",
                  metrics={**_sum_metrics(parts), "slices": slices})
    if previous is None:
        built.metrics["n_rebuilt_customers"] = None
    built.inputs = store_inputs(paths, day, bucket, definition)
    return built, tables


def rebuild_bucket(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int,
                   customers: str | None = None) -> Built:
    """The store of one bucket as of `day` computed from silver alone (of the customers in temp table `customers`
    only, when given: call register_reference first and narrow it to them)."""
    if customers is None:
        register_reference(con, paths, day, [bucket])
    _build_from_silver(con, paths, day, bucket, customers, "rb_")
    con.execute("create or replace temp table rb_customers as select cast(null as varchar) as customer_id where false")
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp view final_{name} as select * from rb_{name}")
    con.execute("create or replace temp table final_customer_epochs as "
                "select cast(null as varchar) as customer_id, cast(null as date) as rebuilt_on where false")
    built = _retained(con, day, bucket, "rb_rows", "rb_balances", "rb_customers")
    # Nothing reads the whole history's rows again (the features read the retained window and the states): their
    # memory goes back to DuckDB before the features are computed. At a million customers in 16 buckets a shard's
    # year of rows does not fit beside sql/features_account_days.sql, which cannot spill.
    for name in REBUILD_SCRATCH:
        con.execute(f"drop table if exists {name}")
    built.metrics = {"mode": "rebuild", "n_rebuilt_customers": None}
    return built


# The temp tables of a rebuild that hold the whole history or what it was built from (rebuild_bucket).
REBUILD_SCRATCH = ("new_candidates", "own_transfers", "enriched_postings", "new_day_rows", "new_balance_rows",
                   "rb_rows", "rb_balances", "rb_carry", "rb_account_firsts")


def _retained(con: duckdb.DuckDBPyConnection, day: date, bucket: int, rows: str, balances: str, rebuilt: str
              ) -> Built:
    """Split rows into the core and open-banking tables, keeping each table's window."""
    keep_rows = ("ds > getvariable('as_of') - case when is_stream_row then getvariable('stream_lookback_days') "
                 "else getvariable('posting_days') end")
    keep_balances = "ds > getvariable('as_of') - getvariable('balance_days')"
    con.execute(f"create or replace temp table core_rows as select * from {rows} where source = 'core' and {keep_rows}")
    con.execute(f"create or replace temp table ob_rows as select * from {rows} where source <> 'core' and {keep_rows}")
    con.execute(f"create or replace temp table core_balances as select * from {balances} "
                f"where source = 'core' and {keep_balances}")
    con.execute(f"create or replace temp table ob_balances as select * from {balances} "
                f"where source <> 'core' and {keep_balances}")
    return Built(day=day, bucket=bucket, core_rows="core_rows", core_balances="core_balances", ob_rows="ob_rows",
                 ob_balances="ob_balances",
                 all_rows="(select * from core_rows union all by name select * from ob_rows)",
                 all_balances="(select * from core_balances union all by name select * from ob_balances)",
                 rebuilt=rebuilt)


# Rows of one key (account, day, facts) added up: what several deliveries of the same key mean.
MERGE_ROWS = """select * exclude (n, amount, max_neg_amount), cast(sum(n) as integer) as n,
    cast(sum(amount) as decimal(18, 2)) as amount, max(max_neg_amount) as max_neg_amount
    from {rows} group by all"""
MERGE_BALANCES = """select customer_id, account_id, source, ds, currency, max(balance) as balance
    from {balances} group by all"""


def _consent_sql(paths: Paths, day: date, bucket: int, within: str = "true") -> str:
    """The customers of the bucket whose `open_banking` consent holds on `day` (of a slice: `within`)."""
    consent = snapshot_path(paths, "consent_state", day, required=False)
    return (f"(select customer_id from read_parquet('{consent}/**/*.parquet') "
            f"where bucket = {int(bucket)} and coalesce(is_open_banking_allowed, false) and ({within}))"
            if consent is not None else "(select cast(null as varchar) as customer_id where false)")


def _accounts_sql(paths: Paths, day: date, bucket: int, full: bool = False, within: str = "true") -> str:
    """(customer_id, account_id, product) of the accounts the store's rows of `day` were classified with: the
    accounts snapshot as of `day`, open-banking accounts only with that consent on `day` (`full`: every column the
    features read; `within`: of a slice's customers)."""
    accounts = snapshot_path(paths, "accounts", day)
    columns = ("customer_id, account_id, source, product, currency, opened_on, closed_on, overdraft_limit, "
               "credit_limit, is_open" if full else "customer_id, account_id, product")
    return (f"(select {columns} from read_parquet('{accounts}/**/*.parquet', union_by_name = true) "
            f"where bucket = {int(bucket)} and ({within}) "
            f"and (source = 'core' or customer_id in {_consent_sql(paths, day, bucket, within)}))")


def roll_carry_inputs(con: duckdb.DuckDBPyConnection, rows: str, balances: str, account_state: str) -> None:
    """Views carry_flow_rows and carry_balance_rows: what sql/store_carry.sql reads to move the carry from the
    series window that started on `previous_series_start` to the one that starts on `series_start` (variables):
    the postings and balances of the days that left the window, and the previous carry as rows (its postings
    summed on the day before the old window, its reported balance on its day). The carry is then what a rebuild
    computes from every day before the new window (tests/test_feature_store_merge.py); a posting or balance dated
    before it arriving later makes the store rebuild that customer instead."""
    con.execute(f"""create or replace temp view carry_flow_rows as
        select customer_id, account_id, source, ds, amount from {rows}
        where ds >= getvariable('previous_series_start') and ds < getvariable('series_start')
        union all
        select customer_id, account_id, source, getvariable('previous_series_start') - 1 as ds, carry_flow as amount
        from {account_state}
        where carry_reported_day is not null or carry_flow is not null""")
    con.execute(f"""create or replace temp view carry_balance_rows as
        select customer_id, account_id, source, ds, currency, balance from {balances}
        where ds >= getvariable('previous_series_start') and ds < getvariable('series_start')
        union all
        select customer_id, account_id, source, carry_reported_day as ds, carry_currency as currency,
            carry_reported as balance
        from {account_state}
        where carry_reported_day is not null""")


def update_bucket(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int, previous: date,
                  within: str = "true") -> Built:
    """The store of one bucket as of `day` from the store as of `previous` and the silver loads of (previous, day]:
    the rows of those loads merged in, the states merged (minima, sums) and the carry rolled forward; customers
    whose accounts changed, with a row dated before the series window, or with an own-account transfer that the new
    postings would classify differently, rebuilt from silver instead. `within`: of one slice of the bucket's
    customers only (a predicate on customer_id, slice_predicates): every read of the store, of silver and of the
    snapshots is narrowed to it."""
    started = time.perf_counter()
    win = windows()
    register_reference(con, paths, day, [bucket])
    narrow_reference(con, within)

    def read(table: str, first: date | None, last: date, with_as_of: bool = False) -> str:
        scan = _read(paths, table, bucket, first, last, with_as_of)
        return scan if within == "true" else f"(select * from {scan} where {within})"

    begin, begin_before = series_start(day), series_start(previous)
    oldest = min(begin_before, day - timedelta(days=max(win.posting_days, win.stream_days, win.balance_days) - 1))
    epochs = read("customer_epochs", previous, previous)
    con.execute(f"create or replace temp table prev_epochs as select * from {epochs}")
    for table in DAY_TABLES:
        scan = read(table, oldest, previous, with_as_of=True)
        con.execute(f"""create or replace temp table prev_core_{table} as
            select r.* exclude (as_of, bucket) from {scan} as r
            left join prev_epochs as e using (customer_id)
            where r.as_of >= coalesce(e.rebuilt_on, cast('0001-01-01' as date))""")
        con.execute(f"create or replace temp table prev_ob_{table} as "
                    f"select * from {read(OB_TABLES[table], previous, previous)}")
    con.execute("create or replace temp view prev_rows as select * from prev_core_flow_days "
                "union all by name select * from prev_core_stream_days union all by name select * from prev_ob_flow_days "
                "union all by name select * from prev_ob_stream_days")
    con.execute("create or replace temp view prev_balances as select * from prev_core_balance_days "
                "union all by name select * from prev_ob_balance_days")
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp table prev_{name} as select * from "
                    f"{read(name, previous, previous)}")

    # the new loads, classified against the own-channel rows already in the store
    register_silver_rows(con, paths, day, [bucket], silver_loads(paths, day, after=previous), within=within)
    con.execute("""create or replace temp table neighbour_rows as
        select r.transaction_id, r.account_id, r.customer_id, r.ds, r.amount, r.counterparty_id, r.is_own_description,
            r.is_own_transfer
        from prev_rows as r
        where r.transaction_id is not null
          and r.customer_id in (select customer_id from postings_in
                                where list_contains(getvariable('own_transfer_channels'), channel))
          and r.ds between (select min(booking_date) from postings_in) - getvariable('pair_window_days')
                       and (select max(booking_date) from postings_in) + getvariable('pair_window_days')
          and r.transaction_id not in (select transaction_id from postings_in)""")
    classify_and_enrich(con, neighbours="neighbour_rows")
    build_rows(con)

    # who is rebuilt from silver
    previous_accounts = _accounts_sql(paths, previous, bucket, within=within)
    con.execute(f"""create or replace temp table recompute as
        with changed_accounts as (
            select customer_id from (
                (select customer_id, account_id, product from accounts_in
                 except select customer_id, account_id, product from {previous_accounts})
                union all
                (select customer_id, account_id, product from {previous_accounts}
                 except select customer_id, account_id, product from accounts_in))
        ),
        before_window as (
            select customer_id from postings_in where booking_date < getvariable('series_start')
            union all
            select customer_id from balances_silver where ds < getvariable('series_start')
        ),
        flipped as (
            select n.customer_id from neighbour_rows as n
            where n.is_own_transfer <> (n.transaction_id in (select transaction_id from own_transfers))
        ),
        reasons as (
            select customer_id, 'accounts' as reason from changed_accounts
            union all select customer_id, 'before_window' from before_window
            union all select customer_id, 'own_transfer' from flipped
        )
        select customer_id, list(distinct reason order by reason) as reasons from reasons
        where customer_id is not null group by customer_id""")
    con.execute("create or replace temp table inc_rows as select * from new_day_rows "
                "where customer_id not in (select customer_id from recompute)")
    con.execute("create or replace temp table inc_balances as select * from new_balance_rows "
                "where customer_id not in (select customer_id from recompute)")
    reasons = dict(con.execute("select r, count(*) from (select unnest(reasons) as r from recompute) group by r")
                   .fetchall())
    n_recompute = int(con.execute("select count(*) from recompute").fetchall()[0][0])

    # states of everyone else: the previous state (without the rebuilt customers, without open-banking rows of a
    # customer whose consent no longer holds) merged with the new rows; the carry rolled into the new window
    kept = ("customer_id not in (select customer_id from recompute) and (source = 'core' or customer_id in "
            "(select customer_id from open_banking_allowed))")
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp table kept_{name} as select * from prev_{name} where {kept}")
    # the previous rows are materialised once (prev_core_*, prev_ob_*): the rows that are not kept are deleted from
    # them here, once, rather than filtered out again by every query that reads them (the features read them five
    # times); the core tables hold core rows only, so without a customer to rebuild they keep every row
    for table in DAY_TABLES:
        if n_recompute:
            con.execute(f"delete from prev_core_{table} where ({kept}) is not true")
        con.execute(f"delete from prev_ob_{table} where ({kept}) is not true")
    con.execute("create or replace temp view kept_rows as select * from prev_rows")
    con.execute("create or replace temp view kept_balances as select * from prev_balances")
    sql.set_variables(con, previous_series_start=begin_before, previous_as_of=previous)
    roll_carry_inputs(con, "kept_rows", "kept_balances", "kept_account_state")
    build_states(con, "inc_rows", "inc_balances",
                 {"account_firsts": "(select customer_id, account_id, source, first_day, first_credit_day, "
                                    "first_balance_day, first_income_day from kept_account_state)",
                  "customer_state": "kept_customer_state", "home_counts": "kept_home_counts",
                  "stream_first": "kept_stream_first"},
                 carry_flows="carry_flow_rows", carry_balances="carry_balance_rows", prefix="inc_")

    # recurring streams: those no new row touched are carried from the night before (their occurrences in the
    # window and every fact they depend on are unchanged); the others are detected again
    previous_full = _accounts_sql(paths, previous, bucket, full=True, within=within)
    current_full = _accounts_sql(paths, day, bucket, full=True, within=within)
    consent_before = _consent_sql(paths, previous, bucket, within)
    con.execute(f"""create or replace temp table stream_dirty_customers as
        select customer_id from recompute
        union select customer_id from (
            (select * from {current_full} except select * from {previous_full})
            union all
            (select * from {previous_full} except select * from {current_full}))
        union select customer_id from (
            (select customer_id from open_banking_allowed except select customer_id from {consent_before})
            union all
            (select customer_id from {consent_before} except select customer_id from open_banking_allowed))
        union select r.customer_id from inc_rows as r
            join prev_account_state as s using (customer_id, account_id, source) where r.ds < s.first_day
        union select b.customer_id from inc_balances as b
            join prev_account_state as s using (customer_id, account_id, source) where b.ds < s.first_day""")
    con.execute("""create or replace temp table stream_dirty_keys as
        select distinct customer_id, stream_key, sign > 0 as is_inflow from inc_rows
        where is_stream_candidate and stream_key is not null
        union
        select distinct customer_id, stream_key, sign > 0 as is_inflow from kept_rows
        where is_stream_candidate and stream_key is not null
          and ds > getvariable('previous_as_of') - getvariable('stream_lookback_days')
          and ds <= getvariable('as_of') - getvariable('stream_lookback_days')""")
    previous_streams = None
    if lake.partition_values(paths, LAYER, "stream_state", bucket=bucket).count(previous.isoformat()):
        con.execute(f"create or replace temp table prev_stream_state as "
                    f"select * from {read('stream_state', previous, previous)}")
        previous_streams = "prev_stream_state"

    # the customers rebuilt from silver
    if n_recompute:
        _build_from_silver(con, paths, day, bucket, "recompute", "rc_")
    else:   # nobody: the same tables, empty (the incremental ones have their columns: the same SQL made them)
        for name, like in (("rows", "new_day_rows"), ("balances", "new_balance_rows"),
                           *((name, f"inc_{name}") for name in ("account_state", "customer_state", "home_counts",
                                                                "stream_first"))):
            con.execute(f"create or replace temp table rc_{name} as select * from {like} where false")
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp table final_{name} as "
                    f"select * from inc_{name} union all by name select * from rc_{name}")
    con.execute("""create or replace temp table final_customer_epochs as
        select customer_id, rebuilt_on from prev_epochs
        where customer_id not in (select customer_id from recompute)
        union all
        select customer_id, getvariable('as_of') as rebuilt_on from recompute""")

    # what this night writes: the core rows it adds, every open-banking row; what the features read: all of them
    con.execute("create or replace temp table night_rows as select * from inc_rows "
                "union all by name select * from rc_rows")
    con.execute("create or replace temp table night_balances as select * from inc_balances "
                "union all by name select * from rc_balances")
    built = _retained(con, day, bucket, "night_rows", "night_balances", "recompute")
    keep_rows = ("ds > getvariable('as_of') - case when is_stream_row then getvariable('stream_lookback_days') "
                 "else getvariable('posting_days') end")
    keep_balances = "ds > getvariable('as_of') - getvariable('balance_days')"
    ob_rows = ("(select * from ob_rows union all by name "
               f"select * from kept_rows where source <> 'core' and {keep_rows})")
    ob_balances = ("(select * from ob_balances union all by name "
                   f"select * from kept_balances where source <> 'core' and {keep_balances})")
    con.execute("create or replace temp table all_ob_rows as " + MERGE_ROWS.format(rows=ob_rows))
    con.execute("create or replace temp table all_ob_balances as " + MERGE_BALANCES.format(balances=ob_balances))
    con.execute(f"""create or replace temp view all_core_rows as
        select * from core_rows
        union all by name select * from kept_rows where source = 'core' and {keep_rows}""")
    con.execute(f"""create or replace temp view all_core_balances as
        select * from core_balances
        union all by name select * from kept_balances where source = 'core' and {keep_balances}""")
    built.ob_rows, built.ob_balances = "all_ob_rows", "all_ob_balances"
    built.all_rows = "(select * from all_core_rows union all by name select * from all_ob_rows)"
    built.all_balances = "(select * from all_core_balances union all by name select * from all_ob_balances)"
    built.previous_streams = previous_streams
    built.metrics = {"mode": "incremental", "previous": previous.isoformat(), "n_rebuilt_customers": n_recompute,
                     "rebuilt_because": reasons, "merge_seconds": round(time.perf_counter() - started, 2)}
    return built


# ---------------------------------------------------------------------------------------------------------------
# The night's features, the writes, the entry points
# ---------------------------------------------------------------------------------------------------------------

def register_consent(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int) -> None:
    """consent_in: the silver consent state as of `day` for the bucket (purpose flags; absent: no consent)."""
    consent = snapshot_path(paths, "consent_state", day, required=False)
    con.execute("create or replace temp table consent_in as " + (
        f"select * exclude (bucket) from read_parquet('{consent}/**/*.parquet') where bucket = {int(bucket)}"
        if consent is not None else
        "select cast(null as varchar) as customer_id, false as is_personalization_allowed, "
        "false as is_life_events_allowed, true as is_service_alerts_allowed where false"))


def night_features(con: duckdb.DuckDBPyConnection, built: Built) -> dict[str, pd.DataFrame]:
    """The per-customer feature tables as of D from the built rows and states: what the later stages read. Consent
    on D decides who has rows (docs/decisioning.md, "Consent matrix"): the forecast's features and streams for
    customers with `personalization` or service alerts (a shortfall warning needs them), life-event features for
    customers with `life_events` and `personalization` (computed from their rows only), the balance
    reconciliation and the context for everyone."""
    from pipelines import features as feature_sql
    from pipelines import life_events

    register_feature_inputs(con, built.all_rows, built.all_balances, {
        name: f"final_{name}" for name in ("account_state", "customer_state", "home_counts", "stream_first")})
    materialise_feature_inputs(con)
    sql.set_variables(con, series_start=series_start(built.day), last_cutoff=built.day)
    set_cutoffs(con, [built.day])
    streams = None
    if built.previous_streams:
        detect_streams(con, """(select * from day_rows as d
            where d.is_stream_candidate and d.stream_key is not null
              and (d.customer_id in (select customer_id from stream_dirty_customers)
                   or (d.customer_id, d.stream_key, d.sign > 0) in (select * from stream_dirty_keys)))""")
        con.execute(f"""create or replace temp table night_streams as
            select * from detected_streams
            union all by name
            select * replace (getvariable('as_of') as cutoff,
                              stream_lifecycle(getvariable('as_of'), last_date, cadence, cadence_days, n_occurrences)
                                  as lifecycle)
            from {built.previous_streams} as p
            where p.customer_id not in (select customer_id from stream_dirty_customers)
              and (p.customer_id, p.stream_key, p.direction = 'in') not in (select * from stream_dirty_keys)""")
        streams = "night_streams"
        built.metrics["n_streams_detected"] = int(con.execute("select count(*) from detected_streams").fetchall()[0][0])
    compute_series(con, streams, daily_balance=False)
    forecast_ids = ("(select customer_id from consent_in where coalesce(is_personalization_allowed, false) "
                    "or coalesce(is_service_alerts_allowed, true) "
                    "union select customer_id from customers_in where customer_id not in "
                    "(select customer_id from consent_in))")
    customer = feature_sql.customer_features(con)
    allowed = {c for (c,) in con.execute(forecast_ids).fetchall()}
    customer = customer[customer["customer_id"].isin(allowed)].drop(columns=["cutoff"]).reset_index(drop=True)
    streams = con.execute(f"""select * exclude (cutoff) from recurring_streams
        where customer_id in {forecast_ids} order by customer_id, stream_id""").df()
    con.execute("create or replace temp table final_stream_state as select * from recurring_streams")
    reconciliation = sql.frame(con, "features_reconciliation", order_by="account_id")
    context = sql.frame(con, "features_customer_context", order_by="customer_id")
    consented = [c for (c,) in con.execute(
        "select customer_id from consent_in where coalesce(is_life_events_allowed, false) "
        "and coalesce(is_personalization_allowed, false) order by customer_id").fetchall()]
    life_events.restrict_to_customers(con, consented)   # none consented: no rows, every column all the same
    life = life_events.life_event_frame(con).drop(columns=["cutoff"])
    return {"customer_features": customer, "recurring_streams": streams, "life_event_features": life,
            "balance_reconciliation": reconciliation, "customer_context": context}


def _write_bucket(con: duckdb.DuckDBPyConnection, paths: Paths, built: Built, tables: dict[str, pd.DataFrame]
                  ) -> dict[str, int]:
    """Every partition of as_of=D for the bucket; customer_epochs last (it marks D's store complete)."""
    day, bucket = built.day, built.bucket
    rows: dict[str, int] = {}
    rows["flow_days"] = _write(con, paths, "flow_days", f"select * from {built.core_rows} where not is_stream_row "
                               f"order by customer_id, account_id, ds", day, bucket)
    rows["stream_days"] = _write(con, paths, "stream_days", f"select * from {built.core_rows} where is_stream_row "
                                 f"order by customer_id, account_id, ds", day, bucket)
    rows["balance_days"] = _write(con, paths, "balance_days", f"select * from {built.core_balances} "
                                  f"order by customer_id, account_id, ds", day, bucket)
    rows["ob_flow_days"] = _write(con, paths, "ob_flow_days", f"select * from {built.ob_rows} where not is_stream_row "
                                  f"order by customer_id, account_id, ds", day, bucket)
    rows["ob_stream_days"] = _write(con, paths, "ob_stream_days", f"select * from {built.ob_rows} "
                                    f"where is_stream_row order by customer_id, account_id, ds", day, bucket)
    rows["ob_balance_days"] = _write(con, paths, "ob_balance_days", f"select * from {built.ob_balances} "
                                     f"order by customer_id, account_id, ds", day, bucket)
    orders = {"account_state": "customer_id, account_id, source", "customer_state": "customer_id, source",
              "home_counts": "customer_id, source, kind, value",
              "stream_first": "customer_id, source, stream_key, kind, direction",
              "stream_state": "customer_id, stream_id"}
    for name, order in orders.items():
        rows[name] = _write(con, paths, name, f"select * from final_{name} order by {order}", day, bucket)
    for name, frame in tables.items():
        con.register(f"frame_{name}", frame)
        rows[name] = _write(con, paths, name, f"select * from frame_{name}", day, bucket,
                            [str(c) for c in frame.columns])
    con.register("frame_inputs", built.inputs)
    rows["inputs"] = _write(con, paths, "inputs", "select * from frame_inputs order by kind, name", day, bucket,
                            [str(c) for c in built.inputs.columns])
    rows["customer_epochs"] = _write(con, paths, "customer_epochs",
                                     "select * from final_customer_epochs order by customer_id", day, bucket)
    return rows


def _clean_up(paths: Paths, day: date, bucket: int, rebuilt: bool) -> None:
    """Retention (docs/feature_store.md): core daily rows for their window; the open-banking rows and the states of
    D and the night before; the feature tables of `feature_nights` nights. After a rebuild nothing older than D
    is kept. Partitions after D (a rebuild of an earlier day) are removed too."""
    win = windows()
    for table in (*DAY_TABLES, *OB_TABLES.values(), *STATE_TABLES, *FEATURE_TABLES):
        values = lake.partition_values(paths, LAYER, table, bucket=bucket)
        later = [v for v in values if v > day.isoformat()]
        earlier = [v for v in values if v < day.isoformat()]
        if rebuilt:
            drop = earlier
        elif table in DAY_TABLES:
            drop = [v for v in earlier if v <= (day - timedelta(days=win.retention(table))).isoformat()]
        elif table in FEATURE_TABLES:
            drop = earlier[:max(len(earlier) - (win.feature_nights - 1), 0)]
        else:
            drop = earlier[:-1]
        for value in [*drop, *later]:
            folder = table_path(paths, table, value, bucket)
            shutil.rmtree(folder, ignore_errors=True)
            remove_if_empty(folder.parent)


def remove_if_empty(folder: Path) -> bool:
    """Remove `folder` when it is empty. The shards of a night clean up in parallel processes (the closed loop's and
    the DAG's workers): two may find the same partition folder empty at once, and the second's removal then finds it
    gone, or another shard's file arrived in between; neither is an error. True when this call removed it."""
    try:
        folder.rmdir()
        return True
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise


def _purge_withdrawn(paths: Paths, day: date, bucket: int) -> int:
    """Withdrawn consent leaves the store the next night (DESIGN principle 2): the partitions kept from before D
    (the previous night's open-banking rows and states, which a re-run of D reads) lose the open-banking rows of
    every customer whose `open_banking` consent does not hold on D. Returns the rows removed."""
    allowed = _consent_sql(paths, day, bucket)
    tables = (*OB_TABLES.values(), "account_state", "customer_state", "home_counts", "stream_first", "stream_state")
    kept = sorted({value for table in tables for value in lake.partition_values(paths, LAYER, table, bucket=bucket)
                   if value < day.isoformat()})
    removed = 0
    con = lake.connect(shared=True)
    try:
        # a kept partition holds open-banking rows only of customers whose consent held on its night (every write
        # of the store filters them by that night's consent): when nobody's consent of those nights has lapsed by
        # D, there is nothing to remove, and the partitions need not be read
        lapsed = [value for value in kept if con.execute(
            f"select count(*) from {_consent_sql(paths, date.fromisoformat(value), bucket)} "
            f"where customer_id not in {allowed}").fetchall()[0][0]]
        if not lapsed:
            return 0
        for table in tables:
            for value in lake.partition_values(paths, LAYER, table, bucket=bucket):
                if value not in lapsed:
                    continue
                folder = table_path(paths, table, value, bucket)
                scan = f"read_parquet('{folder}/*.parquet')"
                source = "has_open_banking" if table == "stream_state" else "source <> 'core'"
                gone = f"{source} and customer_id not in {allowed}"
                n = int(con.execute(f"select count(*) from {scan} where {gone}").fetchall()[0][0])
                if n:
                    con.execute(f"create or replace temp table kept as select * from {scan} where not ({gone})")
                    lake.write_relation(con, "select * from kept", folder, paths)
                    removed += n
    finally:
        con.close()
    return removed


def build_bucket(paths: Paths, day: date, bucket: int, rebuild: bool = False) -> dict[str, Any]:
    """The store of one bucket as of `day`, written: merged into the previous night's state, or rebuilt from silver
    (asked for, or when the store has no state before `day`); a bucket of more customers than
    config/features.yaml slice_customers a slice of them at a time either way."""
    started = time.perf_counter()
    previous = None if rebuild else state_date(paths, day, bucket)
    definition = definition_fingerprint()   # once a shard: the state's inputs and D's are checked against it
    stale = stale_inputs(paths, previous, bucket, definition) if previous is not None else []
    from_silver = previous is None or bool(stale)
    con = lake.connect(shared=True)
    try:
        register_consent(con, paths, day, bucket)
        slices = store_slices(con, paths, day, bucket)
        if slices > 1:
            built, tables = _build_in_slices(con, paths, day, bucket, slices, definition,
                                             None if from_silver else previous)
        elif from_silver:
            built = rebuild_bucket(con, paths, day, bucket)
        else:
            built = update_bucket(con, paths, day, bucket, previous)
        if stale:
            built.metrics.update(reason=f"the inputs of the store of {previous} changed since: rebuilt from silver",
                                 n_stale_inputs=len(stale), stale_inputs=stale[:20])
        elif previous is None and not rebuild:
            built.metrics["reason"] = "no previous state in the store: rebuilt from silver"
        if slices <= 1:
            built.inputs = store_inputs(paths, day, bucket, definition)
            tables = night_features(con, built)
        rows = _write_bucket(con, paths, built, tables)
    finally:
        con.close()
    _clean_up(paths, day, bucket, rebuilt=from_silver)
    purged = _purge_withdrawn(paths, day, bucket)
    if purged:
        built.metrics["open_banking_rows_purged"] = purged
    return {"bucket": int(bucket), "as_of": day.isoformat(), **built.metrics, "rows": rows,
            "n_customers_with_features": int(len(tables["customer_features"])),
            "seconds": round(time.perf_counter() - started, 2)}


def update_features(paths: Paths, day: date, bucket: int) -> dict[str, Any]:
    """The DAG task update_features for one shard: D's silver merged into the store (or the store rebuilt when it
    has no earlier state), the features as of D written; metrics in runs/D/update_features_bucket_N.json."""
    metrics = build_bucket(paths, day, int(bucket))
    write_run_metrics(paths, day.isoformat(), f"update_features_bucket_{int(bucket)}", metrics)
    return metrics


def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]], load: str | None = None
                     ) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for m in per_shard:
        for k, v in (m.get("rebuilt_because") or {}).items():
            reasons[k] = reasons.get(k, 0) + int(v)
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "modes": sorted({m.get("mode", "?") for m in per_shard}),
               "n_rebuilt_customers": sum(int(m.get("n_rebuilt_customers") or 0) for m in per_shard),
               "rebuilt_because": reasons,
               "buckets_rebuilt": {reason: sorted(int(m["bucket"]) for m in per_shard if m.get("reason") == reason)
                                   for reason in sorted({m["reason"] for m in per_shard if m.get("reason")})},
               "n_customers_with_features": sum(m["n_customers_with_features"] for m in per_shard),
               "seconds": round(sum(m["seconds"] for m in per_shard), 2)}
    write_run_metrics(paths, load or day.isoformat(), "update_features", metrics)
    return metrics


def update_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the CLI's `segone run`); the DAG maps update_features over the shards instead."""
    return summarise_shards(paths, day, [update_features(paths, day, b) for b in shards()])


def rebuild(paths: Paths, day: date, buckets: Iterable[int] | None = None, load: str | None = None
            ) -> dict[str, Any]:
    """`segone features rebuild --date D` (and the history load, `load` 'history'): every table of the store as of
    D computed from silver alone, replacing what the store held for those buckets (and removing its partitions
    after D). Metrics in runs/<load or D>/."""
    per_shard = []
    for bucket in (shards() if buckets is None else list(buckets)):
        metrics = build_bucket(paths, day, bucket, rebuild=True)
        write_run_metrics(paths, load or day.isoformat(), f"update_features_bucket_{bucket}", metrics)
        per_shard.append(metrics)
    return summarise_shards(paths, day, per_shard, load)


def validate_features(paths: Paths, day: date) -> dict[str, Any]:
    """The gate of stage 3 (validate_features): every shard's update of D has a result, every bucket's store is
    complete for D, and the tables the later stages read hold their keys once and their not-null columns filled
    (config/tables.yaml `features` checks). In SQL over the whole partitions: the store is read only by the
    pipeline's own stages, and its writes are already typed by the schema. Raises GateFailed, naming what failed."""
    from pipelines.errors import GateFailed
    from pipelines.runs import read_run_metrics
    from pipelines.schemas import table_schema

    started = time.perf_counter()
    buckets = shards()
    per_shard = [read_run_metrics(paths, day.isoformat(), f"update_features_bucket_{b}") for b in buckets]
    missing = [b for b, m in zip(buckets, per_shard) if m is None]
    if missing:
        raise SegoneError(f"the feature store of {day} is incomplete: no update_features result for buckets {missing}")
    summary = summarise_shards(paths, day, per_shard)
    problems, checked = [], {}
    incomplete = [b for b in buckets if day.isoformat() not in
                  lake.partition_values(paths, LAYER, "customer_epochs", bucket=b)]
    if incomplete:
        problems.append(f"no complete store as of {day} for buckets {incomplete}")
    con = lake.connect(shared=True)
    try:
        for table in (*FEATURE_TABLES, "account_state", "customer_epochs"):
            schema = table_schema(LAYER, table)
            files = [f for b in buckets if b not in incomplete for f in _partition_files(paths, table, b, day, day)]
            if not files:
                problems.append(f"features.{table} has no partition for {day}")
                continue
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            scan = f"read_parquet([{listed}], hive_partitioning = false)"
            key = ", ".join(schema.key)
            not_null = schema.checks.get("not_null", [])
            row = con.execute(f"""select count(*),
                count(*) - count(distinct ({key})),
                {', '.join(f'count(*) filter (where "{c}" is null)' for c in not_null) or '0'}
                from {scan}""").fetchall()[0]
            checked[table] = {"rows": int(row[0]), "duplicate_keys": int(row[1]),
                              "nulls": {c: int(n) for c, n in zip(not_null, row[2:]) if n}}
            if row[1]:
                problems.append(f"features.{table}: {row[1]} rows repeat a key ({key})")
            if checked[table]["nulls"]:
                problems.append(f"features.{table}: nulls in {checked[table]['nulls']}")
    finally:
        con.close()
    metrics = {"as_of": day.isoformat(), "features": summary, "tables": checked, "passed": not problems,
               "problems": problems, "seconds": round(time.perf_counter() - started, 3)}
    write_run_metrics(paths, day.isoformat(), "validate_features", metrics)
    if problems:
        raise GateFailed(f"the feature store of {day} failed validation: " + " | ".join(problems))
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Reading the store (the later stages, tests)
# ---------------------------------------------------------------------------------------------------------------

def require(paths: Paths, day: date, bucket: int) -> None:
    """Refuse to read features of a night whose store is not complete for the bucket."""
    if day.isoformat() not in lake.partition_values(paths, LAYER, "customer_epochs", bucket=bucket):
        raise SegoneError(f"the feature store has no features as of {day} for bucket {bucket}: run "
                          f"`segone features update --date {day}` (or the night's update_features task) first")


def read_table(paths: Paths, table: str, day: date, bucket: int, columns: str = "*") -> pd.DataFrame:
    """One feature or state table of the store as of `day` for a bucket."""
    require(paths, day, bucket)
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select {columns} from {_read(paths, table, bucket, day, day)}").df()
    finally:
        con.close()


def register_store(con: duckdb.DuckDBPyConnection, paths: Paths, day: date, bucket: int,
                   customers: str | None = None) -> None:
    """Views of the store as of `day` for a bucket, under the names the feature SQL reads (call register_reference
    first): day_rows (the core rows of every retained night, those of customers rebuilt since left out, and the
    open-banking rows, merged by key), balance_rows, balances_in, account_state, customer_state, home_counts,
    stream_first; of the customers in temp table `customers` only (all when None: the rows are read and merged for
    those customers alone, so a stage that needs a few customers' rows does not merge the whole bucket's)."""
    require(paths, day, bucket)
    win = windows()
    oldest = day - timedelta(days=max(win.posting_days, win.stream_days, win.balance_days))
    epochs = _read(paths, "customer_epochs", bucket, day, day)
    who = f"customer_id in (select customer_id from {customers})" if customers else "true"
    r_who = f"r.{who}" if customers else "true"
    con.execute(f"create or replace temp table store_epochs as select * from {epochs} where {who}")
    parts = {}
    for table in DAY_TABLES:
        scan = _read(paths, table, bucket, oldest, day, with_as_of=True)
        window = {"flow_days": "posting_days", "stream_days": "stream_lookback_days",
                  "balance_days": "balance_days"}[table]
        keep = f"ds > getvariable('as_of') - getvariable('{window}')"
        parts[table] = (f"(select r.* exclude (as_of, bucket) from {scan} as r left join store_epochs as e "
                        f"using (customer_id) where r.as_of >= coalesce(e.rebuilt_on, cast('0001-01-01' as date)) "
                        f"and {keep} and {r_who} union all by name select * from "
                        f"{_read(paths, OB_TABLES[table], bucket, day, day)} where {who})")
    rows = f"(select * from {parts['flow_days']} union all by name select * from {parts['stream_days']})"
    con.execute("create or replace temp table store_rows as " + MERGE_ROWS.format(rows=rows))
    con.execute("create or replace temp table store_balances as " + MERGE_BALANCES.format(balances=parts["balance_days"]))
    states = {}
    for name in ("account_state", "customer_state", "home_counts", "stream_first"):
        con.execute(f"create or replace temp table store_{name} as select * from "
                    f"{_read(paths, name, bucket, day, day)} where {who}")
        states[name] = f"store_{name}"
    register_feature_inputs(con, "store_rows", "store_balances", states)


def logical_tables(paths: Paths, day: date, bucket: int) -> dict[str, pd.DataFrame]:
    """What the store holds as of `day` for a bucket, independent of how its partitions were written (nightly
    deltas or one rebuild): the daily rows merged by key, the balances, every state and feature table, each sorted.
    Two stores hold the same data exactly when these frames are equal (tests/test_feature_store.py)."""
    con = lake.connect()
    try:
        register_reference(con, paths, day, [bucket])
        register_store(con, paths, day, bucket)
        out = {
            "day_rows": con.execute("select * from store_rows order by all").df(),
            "balance_rows": con.execute("select * from store_balances order by all").df(),
        }
        for name in ("account_state", "customer_state", "home_counts", "stream_first"):
            out[name] = con.execute(f"select * from store_{name} order by all").df()
        out["stream_state"] = con.execute(f"select * from {_read(paths, 'stream_state', bucket, day, day)} "
                                          f"order by customer_id, stream_id").df()
    finally:
        con.close()
    for name in FEATURE_TABLES:
        frame = read_table(paths, name, day, bucket)
        out[name] = frame.sort_values(list(frame.columns[:3]) if len(frame.columns) >= 3 else list(frame.columns),
                                      kind="stable").reset_index(drop=True)
    return out
