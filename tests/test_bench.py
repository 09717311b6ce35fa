"""`segone bench ingest`'s comparison methods on a tiny bank: they count the same rows, and the table says how they
compare. `segone bench night`: the tiled lake is the base bank copied with every id renamed, and the night runs on it."""
from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines import stages
from pipelines.evaluation import bench, bench_night
from pipelines.config import Paths, load_config
from pipelines.lake import bucket_of, connect
from pipelines.schemas import table_schema
from pipelines.sources.simulate import simulate_command
from tests.bank_settings import write_overlay


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bench")
    simulate_command(Paths(home), customers=40, days=20, end_date=bench.END, seed=3, fmt="csv")
    return home


def _csv_rows(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            total += sum(1 for _ in csv.reader(handle)) - 1
    return total


def test_the_duckdb_floor_copies_every_core_row_once(home):
    result = bench._child("duckdb_copy_floor", home, "")
    assert result["rows"] == _csv_rows(home / "landing" / "history") > 0
    assert sorted(p.name for p in (home / "bench-duckdb").iterdir()) == sorted(
        f"{kind}.parquet" for kind in bench._landing_files(home / "landing" / "history"))


def test_the_lake_floor_writes_every_row_pandas_reads_twice(home):
    result = bench._child("duckdb_lake_floor", home, "")
    assert result["rows"] == bench._child("pandas_history", home, "")["rows"] > _csv_rows(home / "landing" / "history")
    con = connect()
    written = {}
    for kind in [*bench._landing_files(home / "landing" / "history"), "openbanking_transactions"]:
        written[kind] = [int(con.execute(f"select count(*) from read_parquet('{home / 'bench-duckdb-lake' / name}')"
                                         ).fetchall()[0][0]) for name in (f"{kind}.parquet", f"{kind}.silver.parquet")]
    assert all(first == second for first, second in written.values())
    assert sum(first for first, _ in written.values()) == result["rows"]


def test_plain_pandas_also_reads_the_open_banking_transactions(home):
    result = bench._child("pandas_history", home, "")
    assert result["rows"] > _csv_rows(home / "landing" / "history")


def test_the_parquet_floor_copies_the_parquet_landing_files(home):
    bench._copy_transactions_only(home)
    ingest = bench._child("segone_parquet_transactions", home, "")
    floor = bench._child("duckdb_parquet_floor", home, "")
    assert floor["rows"] == ingest["rows"] > 0
    assert [p.name for p in (home / "bench-duckdb-parquet").iterdir()] == ["transactions.parquet"]


def test_table_states_both_ratios():
    rows = [{"customers": 10, "method": m, "rows": 10**6, "seconds": s, "rows_per_second": 10**6 / s,
             "peak_rss_mb": 1.0}
            for m, s in (("segone_history", 4.0), ("pandas_history", 2.0), ("duckdb_copy_floor", 0.5),
                         ("duckdb_lake_floor", 1.0), ("segone_parquet_transactions", 0.4),
                         ("duckdb_parquet_floor", 0.1))]
    table = bench.format_table(rows)
    assert "runs at 0.50x the speed of the plain-pandas copy" in table
    assert "(no JSON, no checks, no silver) runs at 4.00x the speed" in table
    assert "(bronze and silver; still no checks) runs at 2.00x the speed" in table
    assert ("Parquet landing files runs at 2.50M rows/s; reading and writing the same files once, with no checks, at "
            "10.00M rows/s") in table


# --- `segone bench night`: the tiled lake and the night on it ------------------------------------------------------

NIGHT_BASE, NIGHT_DAYS, NIGHT_SEED = 60, 220, 5  # 220 days: enough to train both model families; 6 envelopes on D
ID_COLUMNS = tuple(sorted(bench_night.row_ids() | {"transaction_id"}))


@pytest.fixture(scope="module")
def night_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated, loaded and trained base bank, as the bench builds it (its own data root)."""
    root = tmp_path_factory.mktemp("night") / "bench" / "night"
    # Four customer buckets instead of 16 (a SEGONE_SETTINGS overlay for the module, inherited by every command the
    # bench starts): the same stages, tiling and re-bucketing at a quarter of the shards' start-up cost. And the light
    # intent model of the test banks (tests/bank_settings.py).
    overlay = write_overlay(root.parent.parent / "settings.yaml", {"segone": {"lake": {"n_buckets": 4}}})
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_SETTINGS", str(overlay))
    base, info = bench_night.ensure_base(root, NIGHT_BASE, NIGHT_DAYS, seed=NIGHT_SEED)
    assert not info["cached"] and any((base / "landing" / bench_night.END.isoformat() / "openbanking").glob("*.json"))
    yield base
    mp.undo()


def _rows(con, folder: Path, where: str = "true", strip: str | None = None) -> list[tuple]:
    """The rows of a silver partition as a sorted list (bucket left out: it is where a row lives, checked apart);
    with `strip`, the copy suffix removed from every id."""
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        return []
    scan = f"read_parquet({[str(f) for f in files]}, hive_partitioning = false)"
    columns = [r[0] for r in con.execute(f"describe select * from {scan}").fetchall() if r[0] != "bucket"]
    shown = [f"regexp_replace({c}, '{strip}(:|$)', '\\1', 'g') as {c}" if strip and c in ID_COLUMNS else c
             for c in columns]
    return sorted(con.execute(f"select {', '.join(shown)} from {scan} where {where}").fetchall(), key=repr)


def test_a_tiled_lake_is_copies_of_the_base_with_every_id_renamed_and_rebucketed(night_base, tmp_path):
    n = 2 * NIGHT_BASE + NIGHT_BASE // 2  # two whole copies and the first half of a third
    out = tmp_path / "tiled"
    info = bench_night.tile_bank(Paths(night_base), Paths(out), n, bench_night.END)
    assert info["copies"] == 3 and info["base_customers"] == NIGHT_BASE
    con = connect()
    customers = out / "lake" / "silver" / "customers"
    ids = [r[0] for r in con.execute(f"select customer_id from read_parquet('{customers}/*/*.parquet')").fetchall()]
    assert len(ids) == len(set(ids)) == n
    base_ids = sorted(i for i in ids if "." not in i)
    third = sorted(i.removesuffix(".t2") for i in ids if i.endswith(".t2"))
    assert third == base_ids[:NIGHT_BASE // 2]  # the partial copy: the first customers by id
    # Every row lives in the bucket of its new customer id (md5 of the renamed id).
    for table in ("transactions", "balances"):
        pairs = con.execute(f"select distinct customer_id, bucket from read_parquet("
                            f"'{out}/lake/silver/{table}/*/*/*.parquet', hive_partitioning = true, "
                            f"hive_types = {{'bucket': integer}})").fetchall()
        assert [b for _, b in pairs] == list(bucket_of([c for c, _ in pairs])), table
    pairs = con.execute(f"select customer_id, bucket from read_parquet('{customers}/*/*.parquet')").fetchall()
    assert [b for _, b in pairs] == list(bucket_of([c for c, _ in pairs]))
    # Copy 0 is the base itself; copy 1 is the base with `.t1` on every id; copy 2 the first half of it with `.t2`.
    half = f"customer_id in ({', '.join(repr(c + '.t2') for c in base_ids[:NIGHT_BASE // 2])})"
    for partition in sorted(p for p in (night_base / "lake" / "silver").glob("*/*=*")):
        tiled = out / "lake" / "silver" / partition.parent.name / partition.name
        base_rows = _rows(con, partition)
        has_customer = "customer_id" in [r[0] for r in con.execute(
            f"describe select * from read_parquet('{next(partition.rglob('*.parquet'))}')").fetchall()]
        if not has_customer:  # exchange rates: once
            assert _rows(con, tiled) == base_rows
            continue
        # No two copies share a key (e.g. a message_id): the night's gates check that keys are unique.
        key = ", ".join(table_schema("silver", partition.parent.name).key)
        scan = f"read_parquet('{tiled}/**/*.parquet', hive_partitioning = false)"
        assert con.execute(f"select count(*) = count(distinct ({key})) from {scan}").fetchall()[0][0], partition
        assert _rows(con, tiled, "not contains(customer_id, '.t')") == base_rows, partition
        assert _rows(con, tiled, "ends_with(customer_id, '.t1')", strip=r"\.t1") == base_rows, partition
        first_half = _rows(con, partition, f"customer_id in ({', '.join(map(repr, base_ids[:NIGHT_BASE // 2]))})")
        assert _rows(con, tiled, half, strip=r"\.t2") == first_half, partition
    # An open-banking transaction id keeps the shape the ingest gives it: ob:<provider>:<AccountId>:<TransactionId>.
    ob = con.execute(f"select account_id, transaction_id from read_parquet('{out}/lake/silver/transactions/*/*/*.parquet') "
                     f"where source = 'openbanking' and customer_id like '%.t1' limit 1").fetchall()[0]
    assert ob[0].endswith(".t1") and ob[1].startswith(ob[0] + ":") and ob[1].endswith(".t1")
    # D's landing files: every envelope once per copy of its customer, with its customer and accounts renamed.
    landing = out / "landing" / bench_night.END.isoformat()
    marker = load_config("landing")["completion_marker"]  # upstream's "D is complete": the night waits for it
    assert (night_base / "landing" / bench_night.END.isoformat() / marker).is_file() and (landing / marker).is_file()
    for path in (landing / "openbanking").glob("*.t1-*.json"):
        envelope = json.loads(path.read_text())
        assert envelope["customer_id"].endswith(".t1")
        assert all(a["AccountId"].endswith(".t1") for a in envelope["accounts"]["Data"]["Account"])
    con.close()


def test_the_night_on_two_copies_does_twice_what_it_does_on_the_base(night_base, tmp_path, monkeypatch):
    """Ingest, validate and conform of D count exactly twice the base bank's rows: every id the night joins on
    (accounts, consent, open-banking attribution, duplicates against the history) stayed consistent."""
    day = bench_night.END
    reference, tiled = tmp_path / "reference", tmp_path / "tiled"
    bench_night._link_tree(night_base, reference)
    bench_night.tile_bank(Paths(night_base), Paths(tiled), 2 * NIGHT_BASE, day)
    counts = {}
    for name, home in (("reference", reference), ("tiled", tiled)):
        monkeypatch.setenv("SEGONE_HOME", str(home))
        paths = Paths(home)
        ingest = stages.ingest(paths, day)
        stages.validate(paths, day)
        conform = stages.conform(paths, day)
        counts[name] = {
            "ingest": {k: (v["rows_accepted"], v["rows_quarantined"]) for k, v in ingest["kinds"].items()},
            "openbanking": {k: v for k, v in ingest["openbanking"]["stats"].items() if k != "files"},
            "silver": {t: (v["rows"], v.get("rejected"), v.get("skipped")) for t, v in conform["tables"].items()},
        }
    assert counts["reference"]["openbanking"]["ob_transactions_rows"] > 0
    assert any(v[2] for v in counts["reference"]["silver"].values())  # something skipped (e.g. overlapping fetches)

    def doubled(value):
        if isinstance(value, dict):
            return {k: doubled(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(doubled(v) for v in value)
        return None if value is None else 2 * value

    expected = doubled(counts["reference"])
    expected["silver"]["fx_rates"] = counts["reference"]["silver"]["fx_rates"]  # not about a customer
    expected["ingest"]["fx_rates"] = counts["reference"]["ingest"]["fx_rates"]
    assert counts["tiled"] == expected


def test_the_floor_reads_every_postings_amount_and_time(tmp_path):
    """The one-pass floor groups every silver posting by customer with its count, sum and last booking, and really
    reads them: an aggregate whose result nobody uses would be dropped by DuckDB (with the columns it reads)."""
    from tests.night_builder import write_table

    paths = Paths(tmp_path)
    rows = [{"transaction_id": f"{load}-{c}-{k}", "account_id": f"A{c}", "customer_id": c, "source": "core",
             "booked_at": f"{day} 1{k}:00:00+00", "booking_date": day, "amount": amount, "currency": "GBP",
             "channel": "card"}
            for load, day, amount in (("history", "2026-11-01", -2.25), ("2026-11-20", "2026-11-20", 10.0))
            for c in ("C1", "C2", "C3") for k in range(2)]
    for load in ("history", "2026-11-20"):
        write_table(paths, "silver", "transactions", [r for r in rows if r["transaction_id"].startswith(load)],
                    load_date=load)
    floor = bench_night.floor_pass(tmp_path)
    assert (floor["floor_customers"], floor["postings"]) == (3, 12)
    assert floor["floor_amount_total"] == "46.50" and floor["floor_last_booked"].startswith("2026-11-20 11:00:00")
    assert floor["floor_seconds"] > 0 and floor["floor_cpu_seconds"] >= 0


@pytest.mark.slow
def test_bench_night_runs_the_whole_night_on_a_tiled_lake_and_its_floor(night_base, monkeypatch):
    root = night_base.parent
    paths = Paths(root.parent.parent)
    monkeypatch.setenv("SEGONE_HOME", str(paths.home))
    n = 2 * NIGHT_BASE
    rows = bench_night.bench_night(paths, [n], days=NIGHT_DAYS, base_customers=NIGHT_BASE, seed=NIGHT_SEED)
    row = rows[0]
    assert row["customers"] == n and row["models"]["reused"] and row["base"]["cached"]
    assert list(row["stages"]) == [name for name, _ in stages.NIGHT]
    assert 0 < row["floor_seconds"] < row["night_seconds"] <= row["command_seconds"]
    assert row["ratio"] == round(row["night_seconds"] / row["floor_seconds"], 1)
    # CPU seconds beside the wall seconds: every stage's, their sum, the whole command's and the floor's
    assert list(row["stages_cpu"]) == list(row["stages"]) and all(v >= 0 for v in row["stages_cpu"].values())
    assert 0 < row["night_cpu_seconds"] <= row["command_cpu_seconds"] + 1
    assert row["night_cpu_seconds"] == pytest.approx(sum(row["stages_cpu"].values()), abs=0.01)
    assert 0 < row["floor_cpu_seconds"] and row["cpu_ratio"] == round(row["night_cpu_seconds"] / row["floor_cpu_seconds"], 1)
    assert row["peak_rss_mb"] >= row["peak_rss_main_mb"] > 50
    assert len(row["load_average"]["before"]) == 3
    run = root / f"run-n{n}"
    con = connect()
    silver = f"read_parquet('{run}/lake/silver/transactions/*/*/*.parquet')"
    assert row["postings"] == con.execute(f"select count(*) from {silver}").fetchall()[0][0]
    assert row["floor_customers"] == con.execute(f"select count(distinct customer_id) from {silver}").fetchall()[0][0]
    forecast = f"read_parquet('{run}/lake/gold/cash_forecast/*/*/*.parquet')"
    assert con.execute(f"select count(distinct customer_id) from {forecast}").fetchall()[0][0] > NIGHT_BASE
    con.close()
    assert (run / "exports" / "crm" / bench_night.END.isoformat() / "manifest.json").exists()
    # the night merged D into the tiled lake's feature store of D-1, as every night does (no rebuild from silver)
    features = json.loads((run / "runs" / bench_night.END.isoformat() / "update_features.json").read_text())
    assert features["modes"] == ["incremental"] and not features["buckets_rebuilt"], features
    assert row["lake"]["store"]["as_of"] == (bench_night.END - timedelta(days=1)).isoformat()
    # The tiled lake is cached: a second size-n run reuses it, and the table says what was measured.
    again = bench_night.ensure_tiled(root, night_base, n, NIGHT_BASE, NIGHT_DAYS, seed=NIGHT_SEED)
    assert again[1]["cached"] and again[0] == Path(row["lake"]["folder"])
    table = bench_night.format_night_table(rows)
    assert f"{n:>10,}" in table and "models reused from the base bank" in table and "load average" in table


def test_an_earlier_lake_version_is_reused_when_cached_and_never_built(tmp_path):
    old, name = "0123456789", f"base-c{NIGHT_BASE}-d{NIGHT_DAYS}-s{NIGHT_SEED}"
    (tmp_path / f"{name}-{old}").mkdir()
    (tmp_path / f"{name}-{old}" / bench_night.READY).write_text(json.dumps({"customers": NIGHT_BASE}))
    base, info = bench_night.ensure_base(tmp_path, NIGHT_BASE, NIGHT_DAYS, seed=NIGHT_SEED, version=old)
    assert base == tmp_path / f"{name}-{old}" and info["cached"]
    with pytest.raises(SystemExit, match="--lake-version fedcba9876: no complete cached lake"):
        bench_night.ensure_base(tmp_path, NIGHT_BASE, NIGHT_DAYS, seed=NIGHT_SEED, version="fedcba9876")
    with pytest.raises(SystemExit, match="no complete cached lake"):
        bench_night.ensure_tiled(tmp_path, base, 2 * NIGHT_BASE, NIGHT_BASE, NIGHT_DAYS, seed=NIGHT_SEED, version=old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}-{old}"]
