"""Stage 2, conform: one load's bronze into conformed, deduplicated, consent-aware silver tables.

Each silver table is one SQL file in sql/ reading fixed view names (bronze_<kind>, prev_<table>, customers_d,
accounts_d, consent_state_d, ...). A SQL result may carry `reject_reason` (the row goes to the quarantine with
its file, line, column and value) and `skip_reason` (the row is left out on purpose, e.g. no consent or an
overlapping open-banking fetch, and counted in the metrics). Nothing leaves silently.
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from pipelines import lake
from pipelines.config import Paths, REPO_ROOT, base_currency, settings
from pipelines.contract import landing_contract
from pipelines.ingest.limits import raw_value_cap
from pipelines.schemas import TableSchema, bronze_schema, table_schema

log = logging.getLogger(__name__)

SQL_DIR = REPO_ROOT / "sql"
OB_RESOURCES = ("accounts", "balances", "transactions", "standing_orders", "direct_debits", "scheduled_payments")
SNAPSHOTS = ("customers", "fx_rates", "consent_state", "accounts", "standing_orders", "direct_debits",
             "scheduled_payments")
EVENTS = {"consents": "consents", "crm_responses": "crm_responses", "life_events_declared": "life_events",
          "messages": "messages"}
# events written like the facts, by load and customer bucket (a per-shard stage reads only its own files)
BUCKETED_EVENTS = ("app_events",)
FACTS = ("transactions", "balances")
FACT_BRONZE = {"transactions": ("bronze_transactions", "bronze_ob_transactions"),
               "balances": ("bronze_balances", "bronze_ob_balances")}
HISTORY = "history"
# The columns of a rejected or skipped row that the quarantine (`_write_quarantine`) and the metrics (`_outcomes`) read.
OUTCOME_COLUMNS = ("source_file", "source_line", "reject_column", "reject_reason", "reject_value", "skip_reason")


def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def _register_bronze(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str) -> None:
    """bronze_<kind> views over this load's bronze (empty, with the right types, when a kind did not come)."""
    for kind in landing_contract().files:
        _register_partition(con, f"bronze_{kind}", lake.partition_path(paths, "bronze", kind, load_date=load_date),
                            bronze_schema(kind).empty_select())
    empty_ob = _empty_openbanking()
    for resource in OB_RESOURCES:
        table = f"ob_{resource}"
        path = lake.partition_path(paths, "bronze", table, load_date=load_date)
        if any(path.glob("*.parquet")):
            con.execute(f"create or replace view bronze_{table} as select * from read_parquet('{path}/*.parquet')")
        else:
            con.register(f"_empty_{table}", empty_ob[table])
            con.execute(f"create or replace view bronze_{table} as select * from _empty_{table}")


def _empty_openbanking() -> dict:
    from pipelines.ingest.openbanking import parse_openbanking_files

    return parse_openbanking_files([], Path(".")).tables


def _register_partition(con: duckdb.DuckDBPyConnection, view: str, path: Path, empty_sql: str) -> None:
    if any(path.glob("*.parquet")):
        con.execute(f"create or replace view {view} as select * from read_parquet('{path}/*.parquet')")
    else:
        con.execute(f"create or replace view {view} as {empty_sql}")


def _register_previous(con: duckdb.DuckDBPyConnection, paths: Paths, table: str, as_of: str) -> str | None:
    schema = table_schema("silver", table)
    previous = lake.latest_partition(paths, "silver", table, as_of, strictly_before=True)
    columns = ", ".join(c for c in schema.column_names if c not in schema.partition)
    if previous is None:
        con.execute(f"create or replace view prev_{table} as {schema.empty_select()}")
    else:
        path = lake.partition_path(paths, "silver", table, as_of=previous)
        con.execute(f"create or replace view prev_{table} as select {columns} from read_parquet('{path}/*.parquet')")
    return previous


def _run(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Materialise sql/<name>.sql as a table of the same name (with any reject/skip columns) in the compressed
    in-memory catalog `work`."""
    con.execute(f"create or replace table work.{name} as {sql_text(name)}")


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return any(row[0] == column for row in con.execute(f"describe {table}").fetchall())


def _accepted(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """Rows of a materialised result that are neither rejected nor skipped."""
    filters = [f"{c} is null" for c in ("reject_reason", "skip_reason") if _has_column(con, name, c)]
    return f"select * from {name}" + (f" where {' and '.join(filters)}" if filters else "")


def _project(schema: TableSchema, source: str, drop_partitions: bool = True, ordered: bool = True) -> str:
    """The schema's columns of `source`, ordered by the key (ordered=False: in no particular order)."""
    columns = [c for c in schema.column_names if not (drop_partitions and c in schema.partition)]
    order = ", ".join(schema.key) if schema.key else "1"
    return f"select {', '.join(columns)} from ({source})" + (f" order by {order}" if ordered else "")


def conform(paths: Paths, load_date: str, as_of: date) -> dict:
    """Conform the bronze of one load (`load_date` is D, or 'history' with `as_of` its last day) into silver.

    Facts (postings, balances) land in `load_date=<load_date>/bucket=N/`; snapshots in `as_of=<as_of>/`.
    """
    started = time.perf_counter()
    cfg = settings()["ingest"]
    con = lake.connect()
    # The snapshot and event tables are materialised compressed; a fact table's bucket groups are temporary tables
    # of their own (`_conform_fact`).
    con.execute("attach ':memory:' as work (compress)")
    con.execute("use work")
    con.execute(f"create macro customer_bucket(id) as {lake.bucket_sql('id')}")
    con.execute(f"set variable load_date = '{load_date}'")
    con.execute(f"set variable as_of = date '{as_of.isoformat()}'")
    con.execute(f"set variable day_end = timestamptz '{(as_of + timedelta(days=1)).isoformat()} 00:00:00+00'")
    con.execute(f"set variable base_currency = '{base_currency()}'")
    _register_bronze(con, paths, load_date)
    as_of_text = as_of.isoformat()
    previous = {t: _register_previous(con, paths, t, as_of_text) for t in SNAPSHOTS if t != "consent_state"}

    _run(con, "silver_customers")
    con.execute("create or replace temp view customers_d as select * from silver_customers")
    _run(con, "silver_fx_rates")
    con.execute("create or replace temp view fx_rates_d as select * from silver_fx_rates")

    _run(con, "silver_consents")
    _register_consent_events(con, paths, load_date)
    _run(con, "silver_consent_state")
    con.execute("create or replace temp view consent_state_d as select * from silver_consent_state")

    _run(con, "silver_accounts")
    con.execute(f"create or replace temp view accounts_d as {_accepted(con, 'silver_accounts')}")

    _register_loaded_transactions(con, paths, load_date, as_of, int(cfg["dedup_lookback_days"]),
                                  int(cfg.get("openbanking_dedup_lookback_days", 45)))
    _register_loaded_app_events(con, paths, load_date, as_of, int(cfg["dedup_lookback_days"]))
    for name in ("silver_standing_orders", "silver_direct_debits", "silver_scheduled_payments",
                 "silver_crm_responses", "silver_life_events_declared", "silver_messages", "silver_app_events"):
        _run(con, name)

    metrics: dict = {"load_date": load_date, "as_of": as_of_text, "previous_snapshots": previous, "tables": {}}
    for table in SNAPSHOTS:
        schema = table_schema("silver", table)
        final = lake.partition_path(paths, "silver", table, as_of=as_of_text)
        rows = lake.write_relation(con, _project(schema, _accepted(con, f"silver_{table}")), final, paths)
        metrics["tables"][table] = {"rows": rows} | _outcomes(con, f"silver_{table}")
    for table in EVENTS:
        schema = table_schema("silver", table)
        final = lake.partition_path(paths, "silver", table, load_date=load_date)
        rows = lake.write_relation(con, _project(schema, _accepted(con, f"silver_{table}")), final, paths)
        metrics["tables"][table] = {"rows": rows} | _outcomes(con, f"silver_{table}")
    for table in BUCKETED_EVENTS:
        schema = table_schema("silver", table)
        rows = lake.write_partitions(con, _project(schema, _accepted(con, f"silver_{table}"), drop_partitions=False),
                                     paths.table("silver", table), paths, ["load_date", "bucket"],
                                     replace=[f"load_date={load_date}"])
        metrics["tables"][table] = {"rows": rows} | _outcomes(con, f"silver_{table}")
    rows_per_group = int(cfg["conform_rows_per_bucket_group"])
    for table in FACTS:
        rows, n_groups = _conform_fact(con, paths, table, load_date, rows_per_group)
        metrics["tables"][table] = {"rows": rows, "bucket_groups": n_groups} | _outcomes(con, f"silver_{table}")

    metrics["quarantined"] = _write_quarantine(con, paths, load_date)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    con.close()
    return metrics


def bucket_groups(n_rows: int, rows_per_group: int, buckets: int | None = None) -> list[list[int]]:
    """The customer buckets dealt into as few groups as keep each under about `rows_per_group` rows (a night is one
    group, a history several), so that a fact table is conformed group by group in flat memory."""
    buckets = buckets or lake.n_buckets()
    n_groups = min(buckets, max(1, -(-n_rows // max(rows_per_group, 1))))
    return [list(range(g, buckets, n_groups)) for g in range(n_groups)]


def _conform_fact(con: duckdb.DuckDBPyConnection, paths: Paths, table: str, load_date: str, rows_per_group: int
                  ) -> tuple[int, int]:
    """sql/silver_<table>.sql over this load's bronze, written partitioned by bucket; (rows written, groups).

    A large load is conformed one group of buckets at a time: the bronze views are narrowed to the accounts of the
    group (the last group also takes the accounts nobody holds, which the SQL rejects or skips), so that each pass
    materialises and sorts only its share. A posting's duplicates are ranked within its group, which is exact
    because every delivery of an id is on one account; if some id is delivered on accounts of two groups, the load
    is conformed in one pass instead. The rejected and skipped rows of all groups end up in silver_<table>.
    """
    name = f"silver_{table}"
    schema = table_schema("silver", table)
    views = FACT_BRONZE[table]
    n_rows = sum(int(con.execute(f"select count(*) from {view}").fetchall()[0][0]) for view in views)
    groups = bucket_groups(n_rows, rows_per_group)
    if len(groups) > 1 and table == "transactions" and _ids_across_groups(con, views, groups):
        groups = bucket_groups(0, rows_per_group)
    # What the quarantine and the metrics need of the rejected and skipped rows: only these columns are kept.
    con.execute(f"create or replace table work.{name} as select {', '.join(OUTCOME_COLUMNS)} "
                f"from ({sql_text(name)}) where false")
    narrowed = len(groups) > 1
    if narrowed:
        for view in views:
            con.execute(f"alter view {view} rename to {view}_all")
    rows = 0
    try:
        # Postings and balances are written as they come (no sort, all threads): readers group them by customer
        # and date themselves. The small snapshot and event tables stay ordered by their key.
        with lake.PartitionedWrite(paths, paths.table("silver", table), ["load_date", "bucket"],
                                   replace=[f"load_date={load_date}"], keep_order=False) as write:
            for k, group in enumerate(groups):
                if narrowed:
                    held = f"select account_id from accounts_d where bucket in ({', '.join(map(str, group))})"
                    accounts = f"account_id in ({held})"
                    if k == len(groups) - 1:
                        accounts += " or account_id not in (select account_id from accounts_d)"
                    for view in views:
                        con.execute(f"create or replace view {view} as select * from {view}_all where {accounts}")
                # An uncompressed temporary table: compressing millions of postings (when the catalog `work` is
                # checkpointed) cost more CPU than writing them; a group stays well under the memory limit.
                con.execute(f"create or replace temp table {name}_group as {sql_text(name)}")
                con.execute(f"insert into work.{name} select {', '.join(OUTCOME_COLUMNS)} from {name}_group "
                            f"where reject_reason is not null or skip_reason is not null")
                rows += write.add(con, _project(schema, _accepted(con, f"{name}_group"), drop_partitions=False,
                                                ordered=False))
    finally:
        con.execute(f"drop table if exists temp.{name}_group")
        if narrowed:
            for view in views:
                con.execute(f"drop view if exists {view}")
                con.execute(f"alter view {view}_all rename to {view}")
    return rows, len(groups)


def _ids_across_groups(con: duckdb.DuckDBPyConnection, views: tuple[str, ...], groups: list[list[int]]) -> bool:
    """Whether some transaction_id is delivered on accounts of two bucket groups (or on a held and an unknown
    account): its deliveries could then not be ranked within one group."""
    last = len(groups) - 1  # accounts nobody holds are conformed with the last group
    group_of = " ".join(f"when a.bucket in ({', '.join(map(str, g))}) then {k}" for k, g in enumerate(groups))
    deliveries = " union all ".join(f"select transaction_id, account_id from {view}" for view in views)
    found = con.execute(
        f"select count(*) from (select d.transaction_id from ({deliveries}) as d "
        f"left join accounts_d as a on a.account_id = d.account_id "
        f"group by d.transaction_id having count(*) > 1 "
        f"and min(case {group_of} else {last} end) <> max(case {group_of} else {last} end))"
    ).fetchall()[0][0]
    return int(found) > 0


def _register_consent_events(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str) -> None:
    """All consent events known at this load: earlier loads from silver plus this load's accepted ones."""
    this_load = f"select customer_id, purpose, granted, recorded_at, expires_at from ({_accepted(con, 'silver_consents')})"
    scan = lake.scan_sql(paths, "silver", "consents")
    if scan is None:
        con.execute(f"create or replace temp view consent_events as {this_load}")
    else:
        con.execute(
            "create or replace temp view consent_events as "
            f"select customer_id, purpose, granted, recorded_at, expires_at from {scan} "
            f"where load_date <> '{load_date}' union all {this_load}"
        )


def _register_loaded_transactions(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str, as_of: date,
                                  core_days: int, openbanking_days: int) -> None:
    """Transaction ids already in silver from recent loads (the dedup window), other than this load.

    Nightly loads are pruned by their partition; the history load (one partition) is filtered on booking_date.
    """
    scan = lake.scan_sql(paths, "silver", "transactions")
    if scan is None or load_date == HISTORY:
        con.execute("create or replace temp view loaded_transactions as "
                    "select cast(null as varchar) as transaction_id, cast(null as varchar) as load_date where false")
        return
    core_from = (as_of - timedelta(days=core_days)).isoformat()
    ob_from = (as_of - timedelta(days=openbanking_days)).isoformat()
    con.execute(
        "create or replace temp view loaded_transactions as "
        f"select transaction_id, max(load_date) as load_date from {scan} "
        f"where load_date <> '{load_date}' and ("
        f"(load_date = '{HISTORY}' and booking_date >= date '{ob_from}' "
        f"and (source = 'openbanking' or booking_date >= date '{core_from}')) "
        f"or (load_date <> '{HISTORY}' and load_date >= '{ob_from}' "
        f"and (source = 'openbanking' or load_date >= '{core_from}'))) group by transaction_id"
    )


def _register_loaded_app_events(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str, as_of: date,
                                days: int) -> None:
    """App event ids already in silver from the loads of the last `days` days before this one (a batch delivered
    twice); the history partition is filtered on the event's date."""
    scan = lake.scan_sql(paths, "silver", "app_events")
    if scan is None or load_date == HISTORY:
        con.execute("create or replace temp view loaded_app_events as "
                    "select cast(null as varchar) as event_id, cast(null as varchar) as load_date where false")
        return
    since = (as_of - timedelta(days=days)).isoformat()
    con.execute(
        "create or replace temp view loaded_app_events as "
        f"select event_id, max(load_date) as load_date from {scan} "
        f"where load_date <> '{load_date}' and ((load_date = '{HISTORY}' "
        f"and occurred_at >= timestamptz '{since} 00:00:00+00') "
        f"or (load_date <> '{HISTORY}' and load_date >= '{since}')) group by event_id"
    )


def _outcomes(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    """Counts of rejected and skipped rows by reason, for the run metrics."""
    out: dict = {}
    for column, label in (("reject_reason", "rejected"), ("skip_reason", "skipped")):
        if _has_column(con, name, column):
            rows = con.execute(f"select {column}, count(*) from {name} where {column} is not null "
                               f"group by 1 order by 1").fetchall()
            out[label] = {reason: int(n) for reason, n in rows}
    return out


def _write_quarantine(con: duckdb.DuckDBPyConnection, paths: Paths, load_date: str) -> int:
    """Add this stage's rejects to the load's quarantine partition (the ingest's rows are kept as they are)."""
    parts = []
    cap = raw_value_cap()
    for name in ("silver_consents", "silver_accounts", "silver_transactions", "silver_balances",
                 "silver_standing_orders", "silver_direct_debits", "silver_scheduled_payments",
                 "silver_crm_responses", "silver_life_events_declared", "silver_messages", "silver_app_events"):
        parts.append(
            f"select source_file as file, source_line as line, reject_column as column_name, "
            f"reject_reason as reason, left(cast(reject_value as varchar), {cap}) as raw_value "
            f"from {name} where reject_reason is not null"
        )
    con.execute("create or replace temp table conform_rejects as " + " union all ".join(parts))
    final = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    existing = f"select stage, file, line, column_name, reason, raw_value from read_parquet('{final}/*.parquet') " \
               "where stage <> 'conform'" if any(final.glob("*.parquet")) else None
    query = "select 'conform' as stage, file, line, column_name, reason, raw_value from conform_rejects"
    if existing:
        query = f"{existing} union all {query}"
    lake.write_relation(con, f"select * from ({query}) order by stage, file, line, column_name, reason", final, paths)
    return int(con.execute("select count(*) from conform_rejects").fetchall()[0][0])
