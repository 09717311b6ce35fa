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
