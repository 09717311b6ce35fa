"""Great Expectations suites generated from the contract, the runner, the gates and the validate stage."""
from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.schemas import tables
from pipelines.errors import GateFailed
from pipelines.ingest.landing import ingest_landing
from pipelines.runs import write_run_metrics
from pipelines.quality import EXPECTATIONS_DIR, evaluate_gates, run_suite, validate_day, write_suites_command

GOOD = Path(__file__).parent / "fixtures" / "landing" / "good"
D = "2026-11-20"


@pytest.fixture(scope="module")
def good_bronze(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The bronze tables of the hand-made landing folder, as the validate stage reads them."""
    paths = Paths(tmp_path_factory.mktemp("segone"))
    shutil.copytree(GOOD, paths.landing_day(D))
    ingest_landing(paths, D, paths.landing_day(D), business_date=date(2026, 11, 20))
    con = lake.connect()
    frames = {}
    for kind in ("transactions", "consents", "accounts", "customers"):
        folder = lake.partition_path(paths, "bronze", kind, load_date=D)
        frames[kind] = con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").df()
    con.close()
    return frames


def test_checked_in_suites_are_what_the_contract_generates(tmp_path):
    result = write_suites_command(Paths(tmp_path), directory=tmp_path / "expectations")
    generated = sorted(p.name for p in (tmp_path / "expectations").glob("*.json"))
    assert generated == sorted(p.name for p in EXPECTATIONS_DIR.glob("*.json"))
    checked_gold = [t for t in tables("gold") if t.checks]
    assert len(checked_gold) >= 6  # cash_forecast, recurring_streams and the four decision tables at least
    # one suite per landing kind (10 with app_events), per silver table (14) and per checked gold table
    assert len(result["suites"]) == len(generated) == 10 + 14 + len(checked_gold)
    for name in generated:
        assert (tmp_path / "expectations" / name).read_text() == (EXPECTATIONS_DIR / name).read_text(), (
            f"{name} is stale: run `segone expectations`")


def test_transactions_suite_covers_the_contract_rules():
    suite = json.loads((EXPECTATIONS_DIR / "landing_transactions.json").read_text())
    kinds = {(e["type"], e["kwargs"].get("column") or tuple(e["kwargs"].get("column_list", ()))) for e in
             suite["expectations"]}
    assert ("expect_column_values_to_not_be_null", "amount") in kinds
    assert ("expect_column_values_to_match_regex", "mcc") in kinds
    assert ("expect_column_values_to_be_in_set", "channel") in kinds
    assert ("expect_column_value_lengths_to_be_between", "description") in kinds
    assert ("expect_compound_columns_to_be_unique", ("transaction_id", "source_file")) in kinds
    assert suite["expectations"][0]["type"] == "expect_table_columns_to_match_set"


@pytest.mark.parametrize("kind", ["transactions", "consents", "accounts", "customers"])
def test_generated_suites_pass_on_good_bronze(good_bronze, kind):
    result = run_suite(good_bronze[kind], f"landing_{kind}")
    assert result.success, result.summary()
    assert result.rows == len(good_bronze[kind]) > 0
    assert result.statistics["unsuccessful_expectations"] == 0


def test_suite_fails_on_bad_data_and_says_why(good_bronze):
    bad = good_bronze["transactions"].copy()
    bad.loc[0, "amount"] = None
    bad.loc[1, "channel"] = "teleport"
    bad.loc[2, "transaction_id"] = bad.loc[3, "transaction_id"]
    bad["extra"] = 1
    result = run_suite(bad, "landing_transactions")
    assert not result.success
    failed = {(f["expectation"], f["column"]) for f in result.failures}
    assert failed == {
        ("expect_table_columns_to_match_set", "table"),
        ("expect_column_values_to_not_be_null", "amount"),
        ("expect_column_values_to_be_in_set", "channel"),
        ("expect_compound_columns_to_be_unique", "transaction_id, source_file"),
    }
    messages = " | ".join(f["message"] for f in result.failures)
    assert "amount: column values to not be null: 1 of 5 rows do not" in messages
    assert "teleport" in messages
    assert result.statistics["unsuccessful_expectations"] == 4


def test_run_suite_reads_any_suite_file(tmp_path):
    (tmp_path / "silver_example.json").write_text(json.dumps({"name": "silver_example", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "p", "min_value": 0, "max_value": 1},
         "meta": {}}]}))
    assert run_suite(pd.DataFrame({"p": [0.1, 0.9]}), "silver_example", directory=tmp_path).success
    failed = run_suite(pd.DataFrame({"p": [0.1, 1.5]}), "silver_example", directory=tmp_path)
    assert not failed.success and failed.failures[0]["unexpected_count"] == 1


# --- gates ---------------------------------------------------------------------------------------------------

def metrics(transactions: tuple[int, int, int] = (1000, 1000, 0), balances: tuple[int, int, int] = (100, 100, 0),
            files: int = 1, whole: int = 0) -> dict:
    """Ingest metrics with (rows_read, rows_accepted, rows_quarantined) per gated kind."""
    def kind(numbers: tuple[int, int, int], n_files: int = 1, n_whole: int = 0) -> dict:
        read, accepted, bad = numbers
        return {"files": n_files, "rows_read": read, "rows_accepted": accepted, "rows_quarantined": bad,
                "files_quarantined": n_whole, "files_quarantined_names": ["x.csv"] * n_whole}
    return {"kinds": {"transactions": kind(transactions, files, whole), "balances": kind(balances),
                      "customers": kind((10, 10, 0))}}


def gate(report, name: str):
    return next(g for g in report.gates if g.name == name)


def test_quarantine_share_gate(paths):
    at_limit = evaluate_gates(paths, D, metrics(transactions=(1000, 950, 50)))
    assert at_limit.passed and gate(at_limit, "quarantine_share:transactions").value == 0.05
    over = evaluate_gates(paths, D, metrics(transactions=(1000, 949, 51)))
    assert not over.passed
    assert [g.name for g in over.failed] == ["quarantine_share:transactions"]
    assert over.failed[0].message == "transactions: 51 of 1,000 rows quarantined (5.10%; at most 5.00% allowed)"


def test_required_kind_missing_or_unreadable_fails(paths):
    missing = evaluate_gates(paths, D, metrics(transactions=(0, 0, 0), files=0))
    assert [g.name for g in missing.failed] == ["required_file:transactions"]
    unreadable = evaluate_gates(paths, D, metrics(transactions=(0, 0, 0), files=1, whole=1))
    assert [g.name for g in unreadable.failed] == ["required_file:transactions"]
    assert "could not be read: x.csv" in unreadable.failed[0].message


def _previous_loads(paths: Paths, volumes: list[int]) -> None:
    for i, volume in enumerate(volumes, start=1):
        write_run_metrics(paths, f"2026-11-{20 - i:02d}", "ingest", metrics(transactions=(volume, volume, 0)))


def test_volume_gate_against_the_median_of_earlier_nights(paths):
    _previous_loads(paths, [1000, 900, 1100, 1000])
    write_run_metrics(paths, "history", "ingest", metrics(transactions=(10 ** 7, 10 ** 7, 0)))
    write_run_metrics(paths, "2026-11-21", "ingest", metrics(transactions=(10 ** 7, 10 ** 7, 0)))  # a later day
    normal = evaluate_gates(paths, D, metrics(transactions=(1100, 1100, 0)))
    assert normal.passed and gate(normal, "volume:transactions").value == 1.1
    triple = evaluate_gates(paths, D, metrics(transactions=(3000, 3000, 0)))
    assert [g.name for g in triple.failed] == ["volume:transactions"]
    assert triple.failed[0].value == 3.0 and "median 1,000 of the last 4 nightly loads" in triple.failed[0].message
    low = evaluate_gates(paths, D, metrics(transactions=(400, 400, 0)))
    assert [g.name for g in low.failed] == ["volume:transactions"]


def test_volume_gate_needs_three_earlier_nights_and_skips_history(paths):
    _previous_loads(paths, [1000, 1000])
    few = evaluate_gates(paths, D, metrics(transactions=(9000, 9000, 0)))
    assert few.passed and gate(few, "volume:transactions").value is None
    history = evaluate_gates(paths, "history", metrics(transactions=(9000, 9000, 0)))
    assert not [g for g in history.gates if g.name.startswith("volume:")]


def test_volume_window_uses_only_the_latest_nights(paths, monkeypatch):
    from pipelines import quality

    config = {**quality.settings()}
    config["gates"] = {**config["gates"], "volume_window": 3}
    monkeypatch.setattr(quality, "settings", lambda: config)
    _previous_loads(paths, [1000, 1000, 1000, 10, 10, 10])  # the three oldest are tiny
    assert evaluate_gates(paths, D, metrics(transactions=(1000, 1000, 0))).passed


# --- the validate stage ------------------------------------------------------------------------------------------

def test_validate_day_passes_on_a_good_load(paths):
    shutil.copytree(GOOD, paths.landing_day(D))
    ingest_landing(paths, D, paths.landing_day(D), business_date=date(2026, 11, 20))
    result = validate_day(paths, D)
    assert result["passed"]
    assert set(result["suites"]) == {"customers", "accounts", "transactions", "balances", "consents",
                                     "crm_responses", "life_events", "fx_rates", "messages", "app_events"}
    assert json.loads((paths.runs / D / "validate.json").read_text())["passed"] is True


def test_validate_day_stops_the_run_and_says_why(paths):
    folder = paths.landing_day(D)
    shutil.copytree(GOOD, folder)
    (folder / "balances.csv").unlink()
    with open(folder / "transactions.csv", "a", encoding="utf-8") as handle:
        handle.write("T0000009,A000001,2026-11-20T10:00:00Z,1.005,GBP,,,,fee,GB,\n")
    ingest_landing(paths, D, folder, business_date=date(2026, 11, 20))
    with pytest.raises(GateFailed) as failure:
        validate_day(paths, D)
    message = str(failure.value)
    assert "gate quarantine_share:transactions: transactions: 1 of 6 rows quarantined" in message
    assert "gate required_file:balances: balances: required, but no file was delivered" in message
    written = json.loads((paths.runs / D / "validate.json").read_text())
    assert written["passed"] is False
    assert {g["name"] for g in written["gates"] if not g["passed"]} == {"quarantine_share:transactions",
                                                                       "required_file:balances"}


def test_large_partitions_are_checked_on_a_repeatable_sample_spread_over_every_file(tmp_path, monkeypatch):
    from pipelines import quality
    from pipelines.config import settings

    paths = Paths(tmp_path)
    folder = lake.partition_path(paths, "bronze", "balances", load_date=D)
    folder.mkdir(parents=True)
    for part in range(2):
        frame = pd.DataFrame({"n": range(part * 5_000, (part + 1) * 5_000)})
        frame.to_parquet(folder / f"part-{part}.parquet", index=False)
    config = settings() | {"quality": settings()["quality"] | {"gx_max_rows": 1_000}}
    monkeypatch.setattr(quality, "settings", lambda: config)

    first = quality._read_partition(paths, "bronze", "balances", load_date=D)
    second = quality._read_partition(paths, "bronze", "balances", load_date=D)

    assert 900 <= len(first) <= 1_100
    assert first["n"].tolist() == second["n"].tolist()
    assert first["n"].min() < 100 and first["n"].max() > 9_900  # from the start of the first file to the end of the last
    assert ((first["n"] >= 5_000).mean()) == pytest.approx(0.5, abs=0.05)
    assert list(first.columns) == ["n"]


def test_the_sample_is_the_same_rows_whatever_their_order_and_files(tmp_path, monkeypatch):
    """Bronze and silver are written without preserving insertion order: the sample is chosen by a hash of the key
    (here account_id, as_of of the balances contract), so shuffled rows in other files give the same frame."""
    from pipelines import quality
    from pipelines.config import settings

    config = settings() | {"quality": settings()["quality"] | {"gx_max_rows": 500}}
    monkeypatch.setattr(quality, "settings", lambda: config)
    rows = pd.DataFrame({"account_id": [f"A{i % 300:04d}" for i in range(6_000)],
                         "as_of": pd.to_datetime("2026-01-01") + pd.to_timedelta(np.arange(6_000) // 300, "D"),
                         "balance": np.arange(6_000) / 100})
    frames = []
    for home, order, n_files in ((tmp_path / "a", np.arange(6_000), 1),
                                 (tmp_path / "b", np.random.default_rng(3).permutation(6_000), 4)):
        paths = Paths(home)
        folder = lake.partition_path(paths, "bronze", "balances", load_date=D)
        folder.mkdir(parents=True)
        for k, part in enumerate(np.array_split(order, n_files)):
            rows.iloc[part].to_parquet(folder / f"part-{k}.parquet", index=False)
        frames.append(quality._read_partition(paths, "bronze", "balances", load_date=D))
    assert 400 <= len(frames[0]) <= 600
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_small_partitions_are_checked_whole(tmp_path):
    from pipelines import quality

    paths = Paths(tmp_path)
    folder = lake.partition_path(paths, "bronze", "balances", load_date=D)
    folder.mkdir(parents=True)
    pd.DataFrame({"n": range(500)}).to_parquet(folder / "part-0.parquet", index=False)

    assert quality._read_partition(paths, "bronze", "balances", load_date=D)["n"].tolist() == list(range(500))


def test_suites_check_free_text_for_control_characters_too(good_bronze):
    """The second, independent check of the ingest's rule that a text holds no NUL or other control character."""
    bad = good_bronze["transactions"].copy()
    bad.loc[0, "description"] = "cof\x00fee"
    bad.loc[1, "merchant_name"] = "Caf\x1be"
    bad.loc[2, "description"] = "two\nlines\tand a tab"  # line breaks and tabs are text
    result = run_suite(bad, "landing_transactions")
    failed = {(f["expectation"], f["column"]) for f in result.failures}
    assert failed == {("expect_column_values_to_not_match_regex", "description"),
                      ("expect_column_values_to_not_match_regex", "merchant_name")}


def test_suites_check_free_text_for_bidirectional_controls_too(good_bronze):
    bad = good_bronze["transactions"].copy()
    bad.loc[0, "description"] = "Coffee \u202eevil"
    result = run_suite(bad, "landing_transactions")
    assert {(f["expectation"], f["column"]) for f in result.failures} == {
        ("expect_column_values_to_not_match_regex", "description")}


def test_suites_check_labels_for_invisible_characters_and_let_free_text_keep_them(good_bronze):
    bad = good_bronze["transactions"].copy()
    bad.loc[0, "merchant_name"] = "NETFLIX\u200b"
    bad.loc[1, "description"] = "thanks \U0001F468\u200d\U0001F469 \u200b"
    result = run_suite(bad, "landing_transactions")
    assert {(f["expectation"], f["column"]) for f in result.failures} == {
        ("expect_column_values_to_not_match_regex", "merchant_name")}


def test_suites_check_labels_for_look_alikes_the_ingest_refuses(good_bronze):
    """A Cyrillic 'о' in a Latin word and Zalgo marks fail the label's suite; a whole Cyrillic word, a Latin word
    beside a Cyrillic one, Vietnamese accents and Zalgo in free text pass."""
    zalgo = "a" + "\u0301\u0302\u0303\u0304\u0305"
    bad = good_bronze["transactions"].copy()
    bad.loc[0, "merchant_name"] = "L\u043endon Cafe"
    bad.loc[1, "merchant_name"] = f"Shop {zalgo}"
    bad.loc[2, "description"] = f"coffee {zalgo}"
    result = run_suite(bad, "landing_transactions")
    failures = [f for f in result.failures]
    assert {(f["expectation"], f["column"]) for f in failures} == {
        ("expect_column_values_to_not_match_regex_list", "merchant_name")}
    assert failures[0]["unexpected_count"] == 2
    good = good_bronze["transactions"].copy()
    good.loc[0, "merchant_name"] = "\u041c\u043e\u0441\u043a\u0432\u0430"
    good.loc[1, "merchant_name"] = "Caf\u00e9 \u041c\u043e\u0441\u043a\u0432\u0430"
    good.loc[2, "merchant_name"] = "H\u00e0 N\u1ed9i Ph\u1edf"
    assert run_suite(good, "landing_transactions").failures == []
