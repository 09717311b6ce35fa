"""warehouse.duckdb: a documented view per silver and gold table, readable while it is rebuilt."""
from __future__ import annotations

from datetime import date


from pipelines.schemas import tables
from pipelines.warehouse import build_warehouse, connect as connect_warehouse, example_query
from tests.test_conform import history  # noqa: F401  (fixture: a conformed hand-made bank)


def test_every_table_has_a_documented_view(paths, history):  # noqa: F811
    build_warehouse(paths)
    con = connect_warehouse(paths.warehouse)
    views = dict(con.execute("select view_name, comment from duckdb_views() where not internal").fetchall())
    expected = {t.name for layer in ("silver", "gold") for t in tables(layer) if t.warehouse}
    hidden = {t.name for layer in ("silver", "gold") for t in tables(layer) if not t.warehouse}
    assert expected <= set(views)
    assert "messages" in hidden and not hidden & set(views)   # customers' free text has no view
    assert all(views[name] for name in expected)
    undocumented = con.execute(
        "select table_name, column_name from duckdb_columns() where comment is null "
        f"and table_name in ({', '.join(repr(n) for n in expected)})").fetchall()
    assert undocumented == []
    assert con.execute("select count(*) from transactions").fetchall()[0][0] == 6
    assert con.execute(example_query()).fetchall() == []  # A1 is in credit on the latest balance date
    # a table with no files yet is an empty view with its documented columns, not an error
    assert con.execute("select count(*) from crm_responses").fetchall() == [(0,)]


def test_an_open_reader_is_not_disturbed_by_a_rebuild(paths, history):  # noqa: F811
    build_warehouse(paths)
    reader = connect_warehouse(paths.warehouse)
    before = reader.execute("select count(*) from customers").fetchall()
    build_warehouse(paths)  # the publish step of the next night
    assert reader.execute("select count(*) from customers").fetchall() == before
    fresh = connect_warehouse(paths.warehouse)
    assert fresh.execute("select count(*) from customers").fetchall() == before


def test_the_event_forecasts_are_documented_views_that_match_their_tables(paths, history):  # noqa: F811
    """gold income_forecast and expense_forecast (issue 16): a documented view and a latest_ view each, in both
    warehouse files, showing exactly the published rows (dates as DATE)."""
    import pandas as pd

    from pipelines import lake

    day = date(2026, 11, 19)
    rows = []
    for h, p in ((30, 0.1), (60, 0.4), (90, 0.5)):
        rows.append({"customer_id": "C1", "horizon_days": h, "p_event": p,
                     "expected_date": date(2026, 12, 30) if p >= 0.5 else None,
                     "expected_amount": 820.0 if p >= 0.5 else None, "reference_amount": 600.0,
                     "drivers": "a large bill you pay every few months or yearly is due within 90 days",
                     "model_version": "event-test"})
    frame = pd.DataFrame(rows).assign(bucket=lake.bucket_of(pd.Series(["C1"] * 3)).astype("int32"))
    for table in ("income_forecast", "expense_forecast"):
        lake.write_frame(frame, lake.partition_path(paths, "gold", table, as_of=day.isoformat()), paths,
                         partition_by=["bucket"])
    build_warehouse(paths)
    for database in (paths.warehouse, paths.warehouse_restricted):
        con = connect_warehouse(database)
        for table in ("income_forecast", "expense_forecast"):
            comment = con.execute(f"select comment from duckdb_views() where view_name = '{table}'").fetchone()[0]
            assert comment and "forecast" in comment
            for view in (table, f"latest_{table}"):
                got = con.execute(f"select customer_id, horizon_days, p_event, expected_date, expected_amount, "
                                  f"reference_amount, drivers, model_version, as_of from {view} "
                                  f"order by horizon_days").df()
                assert got["as_of"].astype(str).unique().tolist() == [day.isoformat()]
                assert got["p_event"].tolist() == [0.1, 0.4, 0.5] and got["horizon_days"].tolist() == [30, 60, 90]
                assert pd.Timestamp(got["expected_date"].iloc[2]) == pd.Timestamp("2026-12-30") and pd.isna(got["expected_date"].iloc[0])
                assert got["expected_amount"].iloc[2] == 820.0 and (got["reference_amount"] == 600.0).all()
                types = dict(con.execute(f"select column_name, data_type from duckdb_columns() "
                                         f"where table_name = '{view}'").fetchall())
                assert types["expected_date"] == "DATE" and types["as_of"] == "DATE"
                undocumented = con.execute(f"select column_name from duckdb_columns() where table_name = '{view}' "
                                           f"and comment is null").fetchall()
                assert undocumented == []
        con.close()


def test_a_column_added_to_the_schema_after_the_files_were_written_reads_as_null(paths):
    """A lake written by an earlier version lacks the columns config/tables.yaml gained since (decision_context's
    response history, 2026-12-07): the view shows them as null instead of failing to bind."""
    import pandas as pd

    from pipelines import lake
    from pipelines.schemas import table_schema
    from pipelines.warehouse import TableFiles, view_sql

    schema = table_schema("gold", "decision_context")
    old = [c for c in schema.data_column_names if c not in ("engaged_share", "contacts_7d")]
    frame = pd.DataFrame({c: (["C1", "C2"] if c == "customer_id" else [1.0, 2.0]) for c in old})
    folder = lake.partition_path(paths, "gold", "decision_context", as_of="2026-11-20", bucket="0")
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "part-0.parquet", index=False)
    files = TableFiles(paths, schema)
    assert files.absent_columns(schema) == {"engaged_share", "contacts_7d"}
    con = lake.connect()
    con.execute(f"set file_search_path = '{paths.home}'")      # the view's paths are relative to the home
    try:
        out = con.execute(view_sql(paths, schema, files=files)).df()
    finally:
        con.close()
    assert len(out) == 2 and out["engaged_share"].isna().all() and out["contacts_7d"].isna().all()
    assert out["age"].tolist() == [1.0, 2.0] and list(out.columns[:2]) == ["customer_id", "age"]
    # a newer file with the columns: they are read from it, null only in the old rows
    frame2 = frame.assign(engaged_share=0.5, contacts_7d=3.0)
    folder2 = lake.partition_path(paths, "gold", "decision_context", as_of="2026-11-21", bucket="0")
    folder2.mkdir(parents=True)
    frame2.to_parquet(folder2 / "part-0.parquet", index=False)
    files = TableFiles(paths, schema)
    assert files.absent_columns(schema) == set()
    con = lake.connect()
    con.execute(f"set file_search_path = '{paths.home}'")      # the view's paths are relative to the home
    try:
        out = con.execute(view_sql(paths, schema, files=files)).df()
    finally:
        con.close()
    assert out["engaged_share"].notna().sum() == 2 and len(out) == 4


def test_the_example_query_names_no_region_under_the_minimum_group_size(tmp_path, monkeypatch):
    """The example query (printed by `segone summary`) counts overdrawn customers by region: before, a region of
    one or two overdrawn customers was named with its count, a figure that singles people out. It names only regions
    of at least nightly_report.min_published_group_customers (10) overdrawn customers, the report's minimum."""
    import duckdb

    from pipelines.config import min_published_group_customers

    con = duckdb.connect()
    con.execute("create table latest_customers (customer_id varchar, region varchar)")
    con.execute("create table latest_accounts (account_id varchar, customer_id varchar, product varchar)")
    con.execute("create table balances (account_id varchar, customer_id varchar, as_of date, balance decimal(18, 2))")
    overdrawn = {"North": 12, "South": 10, "Nrth": 1, "Sheffield Rd 12": 2, "East": 9}
    n = 0
    for region, count in overdrawn.items():
        for i in range(count + 5):   # five more customers in credit in every region
            n += 1
            con.execute("insert into latest_customers values (?, ?)", [f"C{n}", region])
            con.execute("insert into latest_accounts values (?, ?, 'current')", [f"A{n}", f"C{n}"])
            con.execute("insert into balances values (?, ?, date '2026-11-19', ?)",
                        [f"A{n}", f"C{n}", -50 if i < count else 100])
    assert min_published_group_customers() == 10
    assert con.execute(example_query()).fetchall() == [("North", 12), ("South", 10)]
    assert con.execute(example_query(2)).fetchall() == [("North", 12), ("South", 10), ("East", 9),
                                                        ("Sheffield Rd 12", 2)]
    # one source: the report's setting, changed for a home by the settings overlay, changes the query with it
    overlay = tmp_path / "settings.yaml"
    overlay.write_text("segone: {nightly_report: {min_published_group_customers: 9}}\n", encoding="utf-8")
    monkeypatch.setenv("SEGONE_SETTINGS", str(overlay))
    assert con.execute(example_query()).fetchall() == [("North", 12), ("South", 10), ("East", 9)]
