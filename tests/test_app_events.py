"""app_events in the landing contract: bad rows are quarantined with a reason, with one verdict in CSV, CSV.gz and
Parquet; conform buckets the events like the other per-customer facts and quarantines what does not fit (an unknown
customer, a channel that does not fit the event, an event delivered twice); the suites pass on what is kept."""
from __future__ import annotations

import gzip
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines import lake
from pipelines.config import Paths
from pipelines.contract import landing_contract
from pipelines.ingest.core import read_landing_file
from pipelines.stages import conform, ingest, validate, validate_silver

GOOD = Path(__file__).parent / "fixtures" / "landing" / "good"
D = date(2026, 11, 20)
COLUMNS = ["event_id", "customer_id", "occurred_at", "event_type", "target", "channel"]
FORMATS = ["csv", "csv.gz", "parquet"]


def event(event_id: str, **values) -> dict:
    base = {"event_id": event_id, "customer_id": "C000001", "occurred_at": "2026-11-20T08:15:00+00:00",
            "event_type": "screen_viewed", "target": "cash_flow_view", "channel": "app"}
    return base | values


def write_events(folder: Path, fmt: str, rows: list[dict], name: str = "app_events") -> Path:
    """The rows as a CSV (empty string = empty field), a CSV.gz or a Parquet file of VARCHAR columns."""
    frame = pd.DataFrame(rows, columns=COLUMNS, dtype="object")
    path = folder / f"{name}.{fmt}"
    if fmt == "parquet":
        con = duckdb.connect()
        con.register("rows_frame", frame)
        casts = ", ".join(f"cast({c} as varchar) as {c}" for c in COLUMNS)
        con.execute(f"copy (select {casts} from rows_frame) to '{path}' (format parquet)")
        con.close()
    else:
        text = frame.to_csv(index=False, lineterminator="\n")
        path.write_bytes(gzip.compress(text.encode()) if fmt == "csv.gz" else text.encode())
    return path


CASES = [
    event("OK1"),                                                                     # good
    event("OK2", event_type="searched", target="tax_provisioning"),                  # good: a search category
    event("OK3", event_type="notification_dismissed", target="savings_goals", channel="push"),   # good
    event("NOTYPE", event_type="clicked"),                                            # not in the enum
    event("NOTARGET", target="mortgage_calculator"),                                  # not in the vocabulary
    event("NOCHANNEL", channel="sms"),
    event("FUTURE", occurred_at="2026-11-21T00:30:00+00:00"),                         # after D
    event("NOZONE", occurred_at="2026-11-20 08:15"),
    event("NOCUST", customer_id=""),
    event("BAD ID"),                                                                  # space: not an id
    event("OK1", target="savings_goals"),                                             # duplicate key in the file
]
EXPECTED = {
    "NOTYPE": ("event_type", "event_type: not one of"),
    "NOTARGET": ("target", "target: not one of"),
    "NOCHANNEL": ("channel", "channel: not one of"),
    "FUTURE": ("occurred_at", "occurred_at: in the future"),
    "NOZONE": ("occurred_at", "occurred_at: not an ISO 8601 timestamp"),
    "NOCUST": ("customer_id", "customer_id: required value is missing"),
    "BAD ID": ("event_id", "event_id: "),
}


@pytest.fixture
def con():
    connection = lake.connect()
    yield connection
    connection.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_app_events_are_quarantined_with_one_verdict_in_every_format(con, tmp_path, fmt):
    path = write_events(tmp_path, fmt, CASES)
    result = read_landing_file(con, path, landing_contract()["app_events"], D, f"{D}/{path.name}")
    first = 2 if fmt != "parquet" else 1
    got = {}
    for q in result.quarantine.itertuples():
        got.setdefault(CASES[int(q.line) - first]["event_id"] + f"@{int(q.line)}", []).append((q.column_name,
                                                                                               q.reason))
    by_id = {key.split("@")[0]: value for key, value in got.items() if not key.startswith("OK1@")}
    assert set(by_id) == set(EXPECTED)
    for key, (column, prefix) in EXPECTED.items():
        assert any(c == column and r.startswith(prefix) for c, r in by_id[key]), (key, by_id[key])
    duplicate = [v for key, v in got.items() if key.startswith("OK1@")]
    assert duplicate == [[("event_id", f"duplicate key (event_id): first seen on line {first}")]]
    kept = result.accepted.df()
    assert sorted(kept["event_id"]) == ["OK1", "OK2", "OK3"]
    assert kept.set_index("event_id").loc["OK1", "target"] == "cash_flow_view"     # the first delivery wins
    assert result.rows_read == len(CASES) and result.rows_quarantined == len(CASES) - 3


def silver_events(paths: Paths, load_date: str) -> pd.DataFrame:
    root = paths.table("silver", "app_events") / f"load_date={load_date}"
    con = lake.connect()
    try:
        return con.execute(f"select * from read_parquet('{root}/*/*.parquet', hive_partitioning = true)").df()
    finally:
        con.close()


def quarantine(paths: Paths, load_date: str) -> pd.DataFrame:
    folder = lake.partition_path(paths, "gold", "quarantine", load_date=load_date)
    return pd.read_parquet(folder)


def test_conform_buckets_the_events_and_quarantines_what_does_not_fit(paths):
    folder = paths.landing_day(D.isoformat())
    shutil.copytree(GOOD, folder)
    write_events(folder, "csv", [
        event("E1"),
        event("E2", customer_id="C000002", event_type="feature_used", target="savings_goals", channel="web"),
        event("E3", customer_id="C999999"),                                           # unknown customer
        event("E4", event_type="notification_opened", channel="app"),                 # a notification in the app?
        event("E5", event_type="screen_viewed", channel="push"),                      # a screen on push?
        event("E6", customer_id="C000003", event_type="notification_dismissed", target="money_help",
              channel="push"),
    ])
    write_events(folder, "parquet", [event("E1", target="home"), event("E7", customer_id="C000003")],
                 name="app_events-0002")                                               # E1 again, in another file
    ingest(paths, D)
    validate(paths, D)
    metrics = conform(paths, D)
    kept = silver_events(paths, D.isoformat())
    assert sorted(kept["event_id"]) == ["E1", "E2", "E6", "E7"]
    # a repeated id: the delivery of the first file in name order is kept (app_events-0002 sorts before app_events.)
    assert kept.set_index("event_id").loc["E1", "target"] == "home"
    assert (kept["bucket"].astype(int) == lake.bucket_of(kept["customer_id"])).all()
    folders = {p.name for p in (paths.table("silver", "app_events") / f"load_date={D}").iterdir()}
    assert folders == {f"bucket={b}" for b in sorted(set(lake.bucket_of(kept["customer_id"])))}
    rejected = quarantine(paths, D.isoformat())
    rejected = rejected[rejected["stage"] == "conform"].set_index("raw_value")
    assert rejected.loc["C999999", "reason"] == "unknown customer_id"
    assert rejected.loc["app", "reason"] == "a notification is opened or dismissed on push or inapp, not on app"
    assert rejected.loc["push", "reason"] == "screen_viewed happens in the app or on the web, not on push"
    assert rejected.loc["E1", "reason"] == "duplicate event_id within this load"
    assert rejected.loc["E1", "file"] == f"{D}/app_events.csv" and rejected.loc["E1", "line"] == 2
    assert metrics["tables"]["app_events"]["rows"] == 4
    assert sum(metrics["tables"]["app_events"]["rejected"].values()) == 4
    assert validate_silver(paths, D)["suites"]["app_events"]["success"]

    # the next night: a batch delivered again is quarantined, not counted twice; a re-run replaces the night
    nxt = D + timedelta(days=1)
    folder = paths.landing_day(nxt.isoformat())
    shutil.copytree(GOOD, folder)
    write_events(folder, "csv", [event("E2", customer_id="C000002", event_type="feature_used", target="savings_goals",
                                       channel="web"),
                                 event("E8", occurred_at="2026-11-21T09:00:00+00:00")])
    ingest(paths, nxt)
    conform(paths, nxt)
    assert silver_events(paths, nxt.isoformat())["event_id"].tolist() == ["E8"]
    rejected = quarantine(paths, nxt.isoformat())
    mine = rejected[(rejected["stage"] == "conform") & (rejected["column_name"] == "event_id")]
    assert mine[["raw_value", "reason"]].values.tolist() == [["E2", f"duplicate event_id, already loaded on {D}"]]
    (folder / "app_events.csv").unlink()
    ingest(paths, nxt)
    conform(paths, nxt)
    assert not (paths.table("silver", "app_events") / f"load_date={nxt}").exists()   # no stale partition


def test_a_night_without_app_events_is_fine(paths):
    """The kind is optional: no file, no silver partition, no gate failed."""
    shutil.copytree(GOOD, paths.landing_day(D.isoformat()))
    (paths.landing_day(D.isoformat()) / "app_events.csv").unlink()
    ingest(paths, D)
    assert validate(paths, D)["passed"]
    metrics = conform(paths, D)
    assert metrics["tables"]["app_events"]["rows"] == 0
    assert not (paths.table("silver", "app_events") / f"load_date={D}").exists()
