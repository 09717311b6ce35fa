"""The whole ingest path on a real bank's history: Berka -> landing -> bronze -> silver -> warehouse."""
from __future__ import annotations

from datetime import date

import pytest

from pipelines.berka import import_berka_command
from pipelines.stages import load_history
from pipelines.warehouse import connect as connect_warehouse


@pytest.fixture(scope="module")
def berka_lake(tmp_path_factory, reference):
    from pipelines.config import Paths

    paths = Paths(tmp_path_factory.mktemp("berka") / "segone")
    import_berka_command(paths, reference / "berka")
    metrics = load_history(paths)
    return paths, metrics


def test_every_berka_posting_reaches_silver(berka_lake):
    paths, metrics = berka_lake
    assert metrics["conform"]["as_of"] == "1994-10-30"
    ingest = metrics["ingest"]["kinds"]
    assert ingest["transactions"]["rows_read"] == ingest["transactions"]["rows_accepted"] == 98_845
    assert metrics["conform"]["tables"]["transactions"]["rows"] == 98_845
    assert metrics["conform"]["quarantined"] == 0
    assert all(g["passed"] for g in metrics["validate"]["gates"])


def test_real_shortfalls_survive_with_their_sign(berka_lake):
    paths, _ = berka_lake
    con = connect_warehouse(paths.warehouse)
    negative = con.execute("select count(*), count(distinct account_id) from balances where balance < 0").fetchall()
    assert negative == [(93, 44)]  # the negative end-of-day balances of the import (docs/berka.md)
    signs = con.execute("select channel, max(amount) > 0, min(amount) < 0 from transactions "
                        "where channel in ('atm', 'interest', 'fee') group by 1 order by 1").fetchall()
    assert signs == [("atm", False, True), ("fee", False, True), ("interest", True, False)]
    currencies = con.execute("select distinct currency from transactions").fetchall()
    assert currencies == [("CZK",)]
    assert con.execute("select min(booking_date), max(booking_date) from transactions").fetchall() == [
        (date(1993, 1, 1), date(1994, 10, 30))]
