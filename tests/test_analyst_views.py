"""The analysts' warehouse files (issue 15, item 8): dates as DATE, the history load's rows dated and flagged,
latest_* views of the latest published night, the action catalogue and the published loads as small tables, both
files consistent, and views that still work when the home is moved or opened from another working directory."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta

import duckdb
import pytest

from pipelines import publish, stages
from pipelines.actions import load_catalogue
from pipelines.config import Paths
from pipelines.schemas import table_schema, tables
from pipelines.warehouse import LATEST_PREFIX, connect as connect_warehouse, has_latest_view, warehouse_tables
from tests.night_builder import CUSTOMERS, pass_gates, write_night, write_table

H = date(2026, 11, 18)  # the last day the hand-made history covers
D0, D1 = H + timedelta(days=1), H + timedelta(days=2)
LATEST = [t for t in warehouse_tables() if has_latest_view(t)]


def write_history(paths: Paths) -> None:
    """A history load: postings and the quarantine under load_date=history, snapshots as of its last day."""
    write_night(paths, H, "h", tables=("customers", "standing_orders", "direct_debits"))
    write_table(paths, "silver", "transactions", [
        {"transaction_id": f"h-{c}", "account_id": f"A{c}", "customer_id": c, "source": "core",
         "booked_at": "2026-10-01 10:00:00+00", "booking_date": date(2026, 10, 1), "amount": -3.5, "currency": "GBP",
         "channel": "card"} for c in CUSTOMERS], load_date="history")
    write_table(paths, "gold", "quarantine", [
        {"load_date": "history", "stage": "ingest", "file": "history/transactions.csv", "line": 7,
         "column_name": "amount", "reason": "not a decimal", "raw_value": "x"}], load_date="history")
    pass_gates(paths, "history", publish.HISTORY_GATES)
    publish.publish_history(paths, H)


def night(paths: Paths, day: date, version: str, **kwargs) -> None:
    write_night(paths, day, version, **kwargs)
    pass_gates(paths, day)
    stages.publish(paths, day)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One home for the module (the tests only read it): the history, D0, and D1 without silver standing orders or
    direct debits."""
    paths = Paths(tmp_path_factory.mktemp("views") / "segone")
    paths.home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGONE_HOME", str(paths.home))
        write_history(paths)
        night(paths, D0, "v1")
        night(paths, D1, "v2", tables=("customers", "transactions", "next_best_actions", "decision_log",
                                       "advisor_queue", "quarantine", "message_insights", "message_signals"))
    return paths


def view_types(con, view: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in con.execute(f"describe {view}").fetchall()}


def test_every_date_is_a_date_and_the_history_is_dated_and_flagged(published):
    paths = published
    for database in (paths.warehouse, paths.warehouse_restricted):
        con = connect_warehouse(database)
        for schema in warehouse_tables():
            types = view_types(con, schema.name)
            for column in schema.view_columns:
                if column.name not in types:
                    continue  # a restricted column left out of warehouse.duckdb
                if column.type == "date" or column.name in ("as_of", "load_date", "updated_load_date"):
                    assert types[column.name] == "DATE", (database.name, schema.name, column.name)
            if "load_date" in schema.partition:
                assert types["is_history"] == "BOOLEAN", schema.name
        # the history's rows carry its last day, flagged; the nights' rows their own date
        assert con.execute("select load_date, is_history, count(*) from transactions group by all order by 1"
                           ).fetchall() == [(H, True, len(CUSTOMERS)), (D0, False, len(CUSTOMERS)),
                                            (D1, False, len(CUSTOMERS))]
        assert con.execute("select load_date, is_history from quarantine order by 1").fetchall() == [
            (H, True), (D0, False), (D1, False)]
        assert con.execute("select distinct updated_load_date from customers order by 1").fetchall() == [
            (H,), (D0,), (D1,)]
        assert con.execute("select distinct as_of from customers order by 1").fetchall() == [(H,), (D0,), (D1,)]
        # a date filter prunes partitions and compares as a date
        assert con.execute("select count(*) from transactions where load_date between date '2026-11-19' "
                           "and date '2026-11-20'").fetchone() == (2 * len(CUSTOMERS),)
        assert con.execute("select * from published_loads order by load_date").fetchall() == [
            (H, True, False), (D0, False, False), (D1, False, True)]
        con.close()
    assert publish.read_state(paths)["history_as_of"] == H.isoformat()


def test_latest_views_show_the_latest_published_night_of_every_gold_table_and_snapshot(published):
    paths = published
    assert {t.name for t in LATEST} >= {t.name for t in warehouse_tables() if t.layer == "gold"}
    assert {t.name for t in LATEST if t.layer == "silver"} == {
        t.name for t in warehouse_tables() if t.layer == "silver" and t.partition[0] == "as_of"}
    con = connect_warehouse(paths.warehouse)
    views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    assert {LATEST_PREFIX + t.name for t in LATEST} <= views
    assert not {LATEST_PREFIX + t.name for t in warehouse_tables() if t not in LATEST} & views
    for schema in LATEST:
        latest = LATEST_PREFIX + schema.name
        assert view_types(con, latest) == view_types(con, schema.name), schema.name
        key = schema.partition[0]
        assert con.execute(f"select count(*) from {latest} where {key} <> date '{D1}'").fetchone() == (0,)
        expected = con.execute(f"select count(*) from {schema.name} where {key} = date '{D1}'").fetchone()
        assert con.execute(f"select count(*) from {latest}").fetchone() == expected, schema.name
        comment = con.execute(f"select comment from duckdb_views() where view_name = '{latest}'").fetchone()[0]
        assert f"{key} = {D1}" in comment
    assert con.execute("select count(*), min(region) from latest_customers").fetchone() == (len(CUSTOMERS),
                                                                                          "region v2")
    # D1 wrote no standing orders: its latest view is empty, not D0's rows (every latest_* view is the same night)
    assert con.execute("select count(*) from standing_orders").fetchone()[0] > 0
    assert con.execute("select count(*) from latest_standing_orders").fetchone() == (0,)
    con.close()


def test_latest_views_of_a_home_with_only_the_history_show_the_history(paths):
    write_history(paths)
    con = connect_warehouse(paths.warehouse)
    assert con.execute("select distinct as_of from latest_customers").fetchall() == [(H,)]
    assert con.execute("select load_date, is_history from latest_quarantine").fetchall() == [(H, True)]
    assert con.execute("select count(*) from latest_next_best_actions").fetchone() == (0,)
    assert con.execute("select * from published_loads").fetchall() == [(H, True, True)]


def test_the_action_catalogue_is_a_documented_table_in_both_files(published):
    paths = published
    catalogue = {a.id: a for a in load_catalogue()}
    schema = table_schema("dimensions", "action_catalogue")
    tables = []
    for database in (paths.warehouse, paths.warehouse_restricted):
        con = connect_warehouse(database)
        assert [r[0] for r in con.execute("describe action_catalogue").fetchall()] == schema.column_names
        rows = con.execute("select action_id, action_class, is_credit, channels, channel_consents, data_purposes, "
                           "valid_days from action_catalogue order by action_id").fetchall()
        assert len(rows) == len(catalogue)
        for action_id, action_class, is_credit, channels, consents, purposes, valid_days in rows:
            action = catalogue[action_id]
            assert (action_class, is_credit, valid_days) == (action.action_class, action.is_credit,
                                                              action.valid_days)
            assert channels == list(action.channels) and dict(consents) == action.channels
            assert purposes == list(action.data_purposes)
        credit = {r[0] for r in con.execute("select action_id from action_catalogue where is_credit").fetchall()}
        assert credit == {a.id for a in catalogue.values() if a.is_credit} and "credit_card" in credit
        assert con.execute("select consents['sms'] from (select channel_consents as consents from action_catalogue "
                           "where action_id = 'shortfall_warning')").fetchone() == ("service_alerts",)
        # joins with the decisions: every recommended action is in the catalogue
        assert con.execute("select count(*) from next_best_actions left join action_catalogue using (action_id) "
                           "where action_catalogue.action_id is null").fetchone() == (0,)
        undocumented = con.execute("select column_name from duckdb_columns() where table_name = 'action_catalogue' "
                                   "and comment is null").fetchall()
        assert undocumented == []
        assert con.execute("select comment from duckdb_tables() where table_name = 'action_catalogue'").fetchone()[0]
        tables.append(con.execute("select * from action_catalogue order by action_id").fetchall())
        con.close()
    assert tables[0] == tables[1]


def test_both_files_show_the_same_views_and_rows_but_the_restricted_columns(published):
    paths = published
    general, full = connect_warehouse(paths.warehouse), connect_warehouse(paths.warehouse_restricted)
    names = [t.name for t in warehouse_tables()] + [LATEST_PREFIX + t.name for t in LATEST]
    for schema_name in names:
        schema = table_schema(next(t.layer for t in warehouse_tables()
                                   if t.name == schema_name.removeprefix(LATEST_PREFIX)),
                              schema_name.removeprefix(LATEST_PREFIX))
        shown, every = view_types(general, schema_name), view_types(full, schema_name)
        hidden = set() if schema.restricted_rows else set(schema.restricted_columns)
        assert set(every) - set(shown) == hidden, schema_name
        assert {k: v for k, v in every.items() if k in shown} == shown, schema_name
        assert general.execute(f"select count(*) from {schema_name}").fetchone() == \
            full.execute(f"select count(*) from {schema_name}").fetchone(), schema_name


def fingerprint(con) -> dict[str, tuple]:
    names = [t.name for t in warehouse_tables()] + [LATEST_PREFIX + t.name for t in LATEST]
    names += ["action_catalogue", "published_loads"]
    return {n: con.execute(f"select count(*), coalesce(sum(hash(t)), 0) from {n} as t").fetchone() for n in names}


ANALYST = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True, config=dict(a.split("=", 1) for a in sys.argv[2:]))
print(con.execute("select count(*) from latest_customers").fetchone()[0])
"""


def test_the_views_still_work_when_the_home_moves(published, tmp_path):
    paths = published
    before = {}
    for name, database in (("general", paths.warehouse), ("restricted", paths.warehouse_restricted)):
        con = connect_warehouse(database)
        before[name] = fingerprint(con)
        con.close()
    moved = tmp_path / "elsewhere" / "segone-copy"
    moved.parent.mkdir()
    aside = paths.home.with_name("segone-aside")
    os.rename(paths.home, aside)  # the original is gone while the copy is read: nothing may point at it
    try:
        shutil.copytree(aside, moved, symlinks=True)
        for name, database in (("general", moved / "warehouse.duckdb"),
                               ("restricted", moved / "warehouse_restricted.duckdb")):
            con = connect_warehouse(database)
            assert fingerprint(con) == before[name], name
            con.close()
        # an analyst's own session, in another process: from the home itself, or from anywhere with
        # file_search_path; from elsewhere without it, DuckDB cannot find the files (docs/access.md says how)
        database = str(moved / "warehouse.duckdb")
        elsewhere = tmp_path / "notebooks"
        elsewhere.mkdir()
        for cwd, config in ((moved, []), (elsewhere, [f"file_search_path={moved}"])):
            done = subprocess.run([sys.executable, "-c", ANALYST, database, *config], cwd=cwd, capture_output=True,
                                  text=True)
            assert done.returncode == 0 and done.stdout.strip() == str(len(CUSTOMERS)), done.stderr[-2000:]
        done = subprocess.run([sys.executable, "-c", ANALYST, database], cwd=elsewhere, capture_output=True,
                              text=True)
        assert done.returncode != 0 and "No files found" in done.stderr
    finally:
        os.rename(aside, paths.home)


def files_read(con, query: str) -> int:
    plan = con.execute("explain analyze " + query).fetchall()[0][1]
    return sum(int(n) for n in re.findall(r"Total Files Read: (\d+)", plan))


def test_a_filter_on_a_date_reads_only_that_load(published):
    """The history's CASE over load_date keeps DuckDB's partition pruning: a filter on the DATE reads the files of
    that load only."""
    paths = published
    generation = paths.published / publish.read_state(paths)["generation"] / "general" / "silver" / "transactions"
    per_load = {folder.name: len(list(folder.rglob("*.parquet"))) for folder in generation.iterdir()}
    con = connect_warehouse(paths.warehouse)
    assert files_read(con, "select count(*) from transactions") == sum(per_load.values())
    assert files_read(con, f"select count(*) from transactions where load_date = date '{D1}'") == \
        per_load[f"load_date={D1}"]
    assert files_read(con, "select count(*) from transactions where is_history") == per_load["load_date=history"]
    assert files_read(con, f"select count(*) from customers where as_of = date '{D0}'") == 1


def test_the_view_definitions_hold_no_absolute_path(published):
    paths = published
    con = duckdb.connect(str(paths.warehouse), read_only=True)  # reading the definitions needs no file
    sql = "\n".join(r[0] for r in con.execute("select sql from duckdb_views() where not internal").fetchall())
    assert str(paths.home) not in sql and "'published/g" in sql


def test_the_data_dictionary_is_generated_and_up_to_date():
    from pipelines.config import REPO_ROOT
    from pipelines.data_dictionary import FILE, render

    text = render()
    stale = "docs/data_dictionary.md is stale: run `segone expectations`"
    assert (REPO_ROOT / FILE).read_text(encoding="utf-8") == text, stale
    for layer in ("silver", "gold", "dimensions", "exports"):
        for schema in tables(layer):
            section = text.split(f"### `{schema.name}`\n", 1)[1].split("\n### ", 1)[0]
            columns = schema.view_columns if layer in ("silver", "gold") and schema.warehouse else schema.columns
            for column in columns:
                assert f"| `{column.name}` | {column.type.upper()} |" in section, (schema.name, column.name)
            for column in schema.restricted_columns:
                assert "**Restricted**" in section.split(f"| `{column}` |", 1)[1].split("\n", 1)[0]
    assert "| `as_of` | DATE |" in text.split("### `customers`", 1)[1].split("###", 1)[0]
