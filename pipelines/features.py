"""Stage 3's feature SQL (sql/features_*.sql) over the feature store's rows, for one cut-off or many.

The SQL reads fixed view names: day_rows, balances_in and balance_rows (the store's daily rows), account_state,
customer_state, home_counts, stream_first (its states), accounts_in, customers_in, fx_in, cutoffs, cadences,
horizons. Two ways fill them, one SQL reads them:
- the night: pipelines/store.py, from the store's partitions merged with D's silver, cut-off D;
- training and backtests: `register_silver`, the same rows and states built from silver in one go (the store's
  rebuild path), at as many cut-offs as they like.
So a model is trained on exactly what the night scores (tests/test_feature_store.py checks it). `build_panel` runs
the SQL in order: account_days -> daily_balance -> recurring_streams -> customer features (and labels).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Iterable

import duckdb
import numpy as np
import pandas as pd

from pipelines import lake, sql, store
from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError

log = logging.getLogger(__name__)

HISTORY = "history"
FEATURE_WINDOW_DAYS = 90   # the longest look-back of a balance feature


def forecast_settings() -> dict:
    return load_config("forecast")


def income_known_days(cfg: dict | None = None) -> int:
    """The history that shows a monthly income as a recurring stream whatever day of the month the history starts:
    `recurring.min_occurrences` payments at the longest monthly gap (config/forecast.yaml; 3 x 34 = 102 days). On a
    shorter history a missing or small regular income may only be one not seen yet: nothing says the customer's
    regular income is low or smaller than their bills (docs/operations.md, "History lengths")."""
    recurring = (cfg or forecast_settings())["recurring"]
    monthly = recurring["cadences"]["monthly"]
    return int(recurring["min_occurrences"]) * (int(monthly["days"]) + int(monthly["tolerance"]))


def income_unknown(frame: pd.DataFrame) -> np.ndarray:
    """Per row of customer features (or forecast inputs): the history of the customer's shortest source or current
    account (`income_history_days`, sql/features_income_history.sql; `history_days` where it is missing) is shorter
    than `income_known_days`, so nothing may be said of the customer's regular income: an open-banking account
    connected 40 days ago, or a current account opened here 30 days ago, may carry a salary that is not a stream
    yet, however long the core history. Missing both: False. Nor while a stopped income's replacement is pending
    (`income_pending`)."""
    def column(name: str) -> np.ndarray:
        return (pd.to_numeric(frame[name], errors="coerce").to_numpy(float) if name in frame
                else np.full(len(frame), np.nan))
    shortest = column("income_history_days")
    history = np.where(np.isnan(shortest), column("history_days"), shortest)
    return (np.nan_to_num(history, nan=np.inf) < income_known_days()) | income_pending(frame)


def income_pending(frame: pd.DataFrame) -> np.ndarray:
    """Per row of customer or life-event features: a regular income stopped and a new payer of its kind, of at least
    its share of the old payment, has paid once so far (`is_income_pending`, sql/features_income_payers.sql;
    config/life_events.yaml income_replacement): it may be a new employer's first salary or a one-off payment, so
    nothing is said of the customer's regular income (`income_unknown`) until its second payment, or until it is
    40 days old. Missing: False."""
    if "is_income_pending" not in frame:
        return np.zeros(len(frame), dtype=bool)
    return pd.to_numeric(frame["is_income_pending"], errors="coerce").fillna(0).to_numpy(float) > 0


def income_claims(cfg: dict | None = None) -> frozenset[str]:
    """The features whose driver words state something of the customer's regular income (config/forecast.yaml
    `income_claims`): said only where `income_unknown` is false, in the cash forecast's and the event forecasts'
    drivers alike."""
    return frozenset(str(name) for name in (cfg or forecast_settings())["income_claims"])


def series_days() -> int:
    """The daily series a night's features are computed from (config/features.yaml series_days)."""
    return store.windows().series_days


@dataclass
class Panel:
    """What the features stage hands the engines, in the long-format contract of models/contract.py."""

    features: pd.DataFrame          # one row per customer and cut-off
    streams: pd.DataFrame           # recurring streams per customer and cut-off
    series: pd.DataFrame            # customer_id, ds, value: the daily cash position up to the last cut-off
    labels: pd.DataFrame | None     # outcomes per customer, cut-off and horizon (training and backtests only)
    reconciliation: pd.DataFrame    # accounts whose reported balances disagree with their postings



def bucket_groups(buckets: Iterable[int] | None = None) -> list[list[int]]:
    """The customer buckets (None: all of them) that training and the backtests build features over, one bucket at a
    time, as the nightly store does: a bucket's postings joined to every cut-off fit in memory, where the whole
    bank's at once (every stream posting times some 25 training cut-offs) spilled tens of GB to disk and failed a
    10,000-customer, 365-day bank. Every feature is a customer's own, so the buckets' frames concatenated and sorted
    are the whole bank's."""
    return [[int(b)] for b in (store.shards() if buckets is None else buckets)]


def concat_sorted(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Frames of several buckets as one, in the order a single query over all of them gives (sorted by `keys`)."""
    filled = [f for f in frames if len(f)]
    if not filled:
        return frames[0] if frames else pd.DataFrame()
    out = pd.concat(filled, ignore_index=True) if len(filled) > 1 else filled[0]
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True) if keys else out


def concat_panels(panels: list[Panel]) -> Panel:
    """One Panel of the per-bucket panels (bucket_groups), ordered as features.build_panel orders its frames."""
    labels = [p.labels for p in panels if p.labels is not None]
    return Panel(features=concat_sorted([p.features for p in panels], ["customer_id", "cutoff"]),
                 streams=concat_sorted([p.streams for p in panels], ["customer_id", "cutoff", "stream_id"]),
                 series=concat_sorted([p.series for p in panels], ["customer_id", "ds"]),
                 labels=concat_sorted(labels, ["customer_id", "cutoff", "horizon_days"]) if labels else None,
                 reconciliation=concat_sorted([p.reconciliation for p in panels], ["account_id"]))


def consent_snapshot(paths: Paths, as_of: date, buckets: Iterable[int] | None = None) -> pd.DataFrame:
    """The silver consent state as of `as_of` (the latest snapshot on or before it): one row per customer with the
    `is_<purpose>_allowed` flags. Without any snapshot nobody has consented to anything (service alerts aside)."""
    path = store.snapshot_path(paths, "consent_state", as_of, required=False)
    if path is None:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str)})
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select * exclude (bucket) from read_parquet('{path}/**/*.parquet') "
                           f"where {store._bucket_filter(buckets)} order by customer_id").df()
    finally:
        con.close()


def arrears_settings() -> dict:
    """What counts as arrears (config/decisioning.yaml `arrears`): read by the features stage, which counts the
    evidence, and by decide, which words it."""
    return load_config("decisioning")["arrears"]


def register_silver(con: duckdb.DuckDBPyConnection, paths: Paths, as_of: date,
                    buckets: Iterable[int] | None = None) -> None:
    """The store's rows and states built from silver as the run for `as_of` sees it (every load up to it, snapshots
    as of the latest partition on or before it, the given customer buckets; None: all), for training, backtests and
    tests: the same rows the nightly store keeps (pipelines/store.py), over the whole history.

    Consent as of `as_of` decides, whatever the load date of the data (DESIGN principle 2): open-banking accounts,
    postings and balances of a customer whose `open_banking` consent does not hold on `as_of` are left out. Also
    registers `transactions_in` (the silver postings with their base-currency amount_value) for inspection."""
    buckets = None if buckets is None else list(buckets)
    store.register_reference(con, paths, as_of, buckets)
    store.register_silver_rows(con, paths, as_of, buckets, store.silver_loads(paths, as_of))
    con.execute("create or replace temp view transactions_in as select * from postings_in")
    store.classify_and_enrich(con)
    store.build_rows(con)
    con.execute("create or replace temp table silver_day_rows as select * from new_day_rows")
    con.execute("create or replace temp table silver_balance_rows as select * from new_balance_rows")
    store.build_states(con, "silver_day_rows", "silver_balance_rows", None,
                       carry_flows="silver_day_rows", carry_balances="silver_balance_rows", prefix="silver_",
                       carry=False)
    store.register_feature_inputs(con, "silver_day_rows", "silver_balance_rows", {
        "account_state": "silver_account_firsts", "customer_state": "silver_customer_state",
        "home_counts": "silver_home_counts", "stream_first": "silver_stream_first"})


def _daily_balance(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int],
                   series_until: date | None, series_days: int | None, carry: bool) -> list[date]:
    """The variables, the carry, cutoffs, horizons, account_days, primary_days and daily_balance in `con`: what the
    features and the labels both read. Returns the sorted cut-offs."""
    cutoffs = sorted(set(cutoffs))
    if not cutoffs:
        raise SegoneError("no cut-off dates to build features for")
    days = max(int(series_days or store.windows().series_days), store.windows().series_days)
    begin = cutoffs[0] - timedelta(days=days - 1)
    last = max([*cutoffs, *([series_until] if series_until else [])])
    sql.set_variables(con, series_start=begin, last_cutoff=last)
    if carry:
        sql.create_table(con, "panel_carry", "store_carry")
        con.execute("""create or replace temp view account_state as
            select f.customer_id, f.account_id, f.source, f.first_day, f.first_credit_day, f.first_balance_day,
                f.first_income_day, c.carry_reported_day, c.carry_reported, c.carry_currency, coalesce(c.carry_flow, 0) as carry_flow
            from silver_account_firsts as f
            left join panel_carry as c using (customer_id, account_id, source)""")
    store.set_cutoffs(con, cutoffs, horizons)
    store.compute_daily_balance(con)
    return cutoffs


def _labels(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    labels = sql.frame(con, "features_labels", order_by="customer_id, cutoff, horizon_days")
    labels["min_balance"] = labels["min_balance"].round(6)
    labels["cutoff"] = pd.to_datetime(labels["cutoff"])
    return labels


def build_labels(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = (30, 60, 90),
                 series_until: date | None = None, series_days: int | None = None, carry: bool = True
                 ) -> pd.DataFrame:
    """Only the outcomes after each cut-off (features_labels.sql, the same daily cash position as build_panel's):
    customer_id, cutoff, horizon_days, is_shortfall, min_balance, days_to_shortfall. For scoring past forecasts
    against what happened (the nightly report's realised calibration) without building every feature."""
    _daily_balance(con, cutoffs, horizons, series_until, series_days, carry)
    return _labels(con)


def build_panel(con: duckdb.DuckDBPyConnection, cutoffs: Iterable[date], horizons: Iterable[int] = (30, 60, 90),
                with_labels: bool = False, series_until: date | None = None, series_days: int | None = None,
                carry: bool = True) -> Panel:
    """Features (and optionally labels) for every customer registered in `con` at every cut-off.

    The daily cash position is built from `series_days` before the first cut-off (the features look 90 days back;
    a longer series is for engines that fit on it, like Prophet), its start seeded with each account's carry, and
    `series_until` extends it past the last cut-off, so labels can see the outcomes; features only ever read rows on
    or before their own cut-off. `carry`: compute the carry into the series from the registered rows (silver);
    False when the registered account_state already holds it (the store's night)."""
    _daily_balance(con, cutoffs, horizons, series_until, series_days, carry)
    store.compute_streams(con)
    features = customer_features(con)
    streams = con.execute("select * from recurring_streams order by customer_id, cutoff, stream_id").df()
    series = con.execute("""
        select customer_id, cast(ds as timestamp) as ds, round(value, 6) as value from daily_balance
        where ds <= (select max(cutoff) from cutoffs) order by customer_id, ds""").df()
    labels = _labels(con) if with_labels else None
    reconciliation = sql.frame(con, "features_reconciliation", order_by="account_id")
    if "cutoff" in streams:
        streams["cutoff"] = pd.to_datetime(streams["cutoff"])
    return Panel(features=features, streams=streams, series=series, labels=labels, reconciliation=reconciliation)


def customer_features(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """sql/features_customer.sql on a connection whose series and streams are computed: one row per
    customer and cut-off, every feature a float64 rounded to 6 decimals. The income inputs are made first
    (`income_inputs`): the life-event features read the same."""
    income_inputs(con)
    con.execute(sql.text("stream_lifecycle"))   # continued_streams: a replaced income goes on under its new payer
    frame = sql.frame(con, "features_customer", order_by="customer_id, cutoff")
    frame["cutoff"] = pd.to_datetime(frame["cutoff"])
    return numeric(frame)


def income_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """income_payers (sql/features_income_payers.sql: each income payer steady, stopped or replaced by a new payer
    of its kind) and income_history (sql/features_income_history.sql, which reads them: the start of the history
    every income claim is judged on) for the registered cut-offs: what the customer features and the life-event
    features both read."""
    sql.create_table(con, "income_payers", "features_income_payers")
    sql.create_table(con, "income_history", "features_income_history")


def numeric(features: pd.DataFrame, keys: Iterable[str] = ("customer_id", "cutoff")) -> pd.DataFrame:
    """Booleans as 0/1 and every feature as float64, the one dtype the engines take, rounded to 6 decimals: DuckDB
    sums doubles in parallel in no fixed order, and the last bits must not change a model or its data hash."""
    keys = set(keys)
    if features.columns.has_duplicates:  # not a frame of features: one column at a time
        out = features.copy()
        for column in out.columns:
            if column not in keys:
                out[column] = _as_feature(out[column])
        return out
    # built whole from its columns: assigning a hundred columns one by one into a copy costs far more
    return pd.DataFrame({column: features[column].copy() if column in keys else _as_feature(features[column])
                         for column in features.columns}, index=features.index)


def _as_feature(values: pd.Series) -> pd.Series:
    """One feature column as float64 rounded to 6 decimals (`numeric`); a column of NumPy booleans, integers or
    floats is converted directly (what pd.to_numeric would leave as it is)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
        return pd.Series(np.round(values.to_numpy(dtype="float64"), 6), index=values.index, name=values.name)
    return pd.to_numeric(values, errors="coerce").astype("float64").round(6)
