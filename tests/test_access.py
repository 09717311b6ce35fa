"""Restricted columns (issue 12, item 10): what config/tables.yaml marks `restricted` is only in
warehouse_restricted.duckdb; warehouse.duckdb leaves it out (or withholds it on the marked rows), and so do the
Parquet files its views read, so that opening the files directly does not reveal it either."""
from __future__ import annotations

import stat
from datetime import date

import duckdb
import pytest

from pipelines.warehouse import connect as connect_warehouse
from pipelines import lake, publish, stages
from pipelines.schemas import TableSchema, table_schema, tables
from tests.night_builder import DEFAULT_TABLES, SECRET, pass_gates, write_night

D0, D1 = date(2026, 11, 19), date(2026, 11, 20)
RESTRICTED = [t for layer in ("silver", "gold") for t in tables(layer) if t.is_restricted and t.warehouse]


def columns(con, view: str) -> set[str]:
    return {row[0] for row in con.execute(f"describe {view}").fetchall()}


def test_the_sensitive_columns_are_marked_restricted():
    marked = {(t.name, c) for t in RESTRICTED for c in t.restricted_columns}
    assert {("customers", "known_vulnerability"), ("customers", "birth_year"), ("quarantine", "raw_value"),
            ("advisor_queue", "known_vulnerability"), ("advisor_queue", "reason"),
            ("decision_log", "reason")} <= marked
    assert all(t.restricted_why for t in RESTRICTED)


@pytest.fixture
def published(paths):
    write_night(paths, D0, "v1", tables=DEFAULT_TABLES + ("decision_flags",))
    pass_gates(paths, D0)
    stages.publish(paths, D0)
    return paths


def test_analysts_views_leave_out_restricted_columns_and_the_restricted_file_has_them(published):
    paths = published
    general = connect_warehouse(paths.warehouse)
    full = connect_warehouse(paths.warehouse_restricted)
    for schema in RESTRICTED:
        shown = columns(general, schema.name)
        assert set(schema.column_names) <= columns(full, schema.name), schema.name
        if schema.restricted_rows:
            withheld = general.execute(
                f"select count(*) filter (where ({schema.restricted_rows}) and "
                + " or ".join(f"{c} is not null" for c in schema.restricted_columns)
                + f") from {schema.name}").fetchone()[0]
            assert withheld == 0, schema.name
        else:
            assert not shown & set(schema.restricted_columns), schema.name
        comment = general.execute(f"select comment from duckdb_views() where view_name = '{schema.name}'").fetchone()
        assert "warehouse_restricted.duckdb" in comment[0]
    # the values themselves
    assert full.execute("select count(known_vulnerability), count(birth_year) from customers").fetchone() == (1, 12)
    assert full.execute("select count(*) from quarantine where raw_value like 'SECRET%'").fetchone() == (1,)
    assert general.execute("select count(*) from decision_log where stage = 'suitability'").fetchone() == (12,)
    assert general.execute("select count(reason) from decision_log where stage <> 'suitability'").fetchone() == (12,)
    assert full.execute("select count(reason) from decision_log where stage = 'suitability'").fetchone() == (12,)
    assert general.execute("select count(*) from advisor_queue").fetchone() == (1,)


def test_the_files_behind_the_analysts_views_hold_no_restricted_value(published):
    """Views are no access control (DuckDB reads the files as the analyst): the Parquet files under the generation's
    general/ folder, which warehouse.duckdb's views read, must not contain the restricted values at all."""
    paths = published
    state = publish.read_state(paths)
    general = paths.published / state["generation"] / "general"
    con = duckdb.connect()
    for schema in RESTRICTED:
        files = sorted(lake.parquet_files(general / schema.layer / schema.name))  # partitions are links
        assert files, schema.name
        for file in files:
            present = {r[0] for r in con.execute(f"describe select * from read_parquet('{file}')").fetchall()}
            if schema.restricted_rows:
                leaked = con.execute(
                    f"select count(*) from read_parquet('{file}') where ({schema.restricted_rows}) and "
                    + " or ".join(f"{c} is not null" for c in schema.restricted_columns)).fetchone()[0]
                assert leaked == 0, file
            else:
                assert not present & set(schema.restricted_columns), file
    everything = b"".join(f.read_bytes() for f in lake.parquet_files(general))
    assert SECRET.encode() not in everything and b"health" not in everything
    # the restricted files and file are for the pipeline's account (or publish.restricted_group) only: the
    # generation's restricted/ links, and the published partitions they link to, under parts/<g>/restricted/
    restricted = paths.published / state["generation"] / "restricted"
    assert stat.S_IMODE(restricted.stat().st_mode) & 0o007 == 0
    assert stat.S_IMODE(paths.warehouse_restricted.stat().st_mode) & 0o077 == 0
    files = lake.parquet_files(restricted)
    assert SECRET.encode() in b"".join(f.read_bytes() for f in files)
    stores = {f.resolve().relative_to(publish.parts_dir(paths)).parts[:2] for f in files}
    assert stores == {(state["generation"], "restricted")}
    for store, tree in stores:
        assert stat.S_IMODE((publish.parts_dir(paths) / store / tree).stat().st_mode) & 0o007 == 0
    assert SECRET.encode() not in b"".join(f.read_bytes() for f in lake.parquet_files(publish.parts_dir(paths)
                                                                                       / state["generation"]
                                                                                       / "general"))


def test_a_column_marked_later_is_removed_from_the_nights_published_before(published, monkeypatch):
    paths = published
    customers = table_schema("silver", "customers")
    stricter = TableSchema(**{**customers.__dict__, "restricted_columns": (*customers.restricted_columns, "region")})
    everything = [stricter if (t.layer, t.name) == ("silver", "customers") else t
                  for layer in ("silver", "gold") for t in tables(layer)]
    monkeypatch.setattr(publish, "_tables", lambda: everything)
    monkeypatch.setattr("pipelines.warehouse.tables",
                        lambda layer: [t for t in everything if t.layer == layer])
    write_night(paths, D1, "v2")
    pass_gates(paths, D1)
    stages.publish(paths, D1)
    general = connect_warehouse(paths.warehouse)
    assert "region" not in columns(general, "customers")
    assert general.execute("select count(distinct as_of) from customers").fetchone() == (2,)
    state = publish.read_state(paths)
    table = paths.published / state["generation"] / "general" / "silver" / "customers"
    files = lake.parquet_files(table)
    assert {f.relative_to(table).parts[0] for f in files} == {f"as_of={D0}", f"as_of={D1}"}
    con = duckdb.connect()
    for file in files:  # D0's partition was published before the rule: rewritten without the column
        assert "region" not in {r[0] for r in con.execute(f"describe select * from read_parquet('{file}')").fetchall()}
