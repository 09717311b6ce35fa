"""The crash test of issue 12: `segone run` (a real subprocess) stopped at several points of a night and killed with
SIGKILL, on a small simulated bank; no view, report or export ever shows any part of the unfinished night, and the
next run completes and cleans up. Then the same for a re-run of the published night.

The run stops at a named point (`SEGONE_PAUSE_AT`, pipelines/runs.py `checkpoint`): the test looks at everything an
analyst or the CRM can see while the process waits there, then lets it go on or kills it (SIGKILL, no clean-up)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipelines.warehouse import connect as connect_warehouse
from pipelines.config import Paths
from pipelines.crm_export import read_export
from tests.bank_cache import AIRFLOW_BUCKETS, AIRFLOW_NIGHT, airflow_bank, airflow_overlay, bank_copy
from tests.test_publish import fingerprint

REPO = Path(__file__).resolve().parent.parent
D1 = AIRFLOW_NIGHT  # the night the runs write; the published state before it is the history load (as of D1 - 1)
# The bank of the Airflow tests (tests/bank_cache.py: simulated, loaded and trained once for the three modules, each
# working on its own copy): two customer buckets instead of 16 (a SEGONE_SETTINGS overlay for every command on the
# bank), so each sharded stage still stops half way (after bucket HALF - 1: one shard written, one not); and the
# light models of the test banks (tests/bank_settings.py).
BUCKETS = AIRFLOW_BUCKETS
HALF = BUCKETS // 2


def env_for(home: Path, **extra: str) -> dict[str, str]:
    overlay = airflow_overlay(home)
    return os.environ.copy() | {"SEGONE_HOME": str(home), "PYTHONPATH": str(REPO),
                                "SEGONE_SETTINGS": str(overlay)} | extra


def segone(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env_for(home), capture_output=True,
                          text=True, timeout=900)
    if check:
        assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def visible(paths: Paths) -> dict:
    """Everything analysts and the CRM can see: every view of both warehouse files, every (non-hidden) file under
    exports/ and reports/."""
    files = {}
    for root in (paths.exports, paths.reports):
        for file in sorted(root.rglob("*")) if root.exists() else []:
            rel = file.relative_to(paths.home)
            if file.is_file() and not any(part.startswith(".") for part in rel.parts):
                files[str(rel)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"warehouse": fingerprint(paths.warehouse), "restricted": fingerprint(paths.warehouse_restricted),
            "files": files}


class Run:
    """`segone run --date D1` stopping at the given points in turn."""

    def __init__(self, home: Path, points: list[str]) -> None:
        self.marker = home.parent / "paused"
        self.marker.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", "--date", D1],
            env=env_for(home, SEGONE_PAUSE_AT=",".join(points), SEGONE_PAUSE_FILE=str(self.marker)),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def reach(self, point: str) -> None:
        deadline = time.time() + 600
        while not (self.marker.exists() and self.marker.read_text().split()[-1] == point):
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended before {point}: {self.process.stderr.read()[-3000:]}")
            assert time.time() < deadline, f"the run never reached {point}"
            time.sleep(0.05)

    def go_on(self) -> None:
        self.marker.unlink()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        self.process.stderr.close()
        self.marker.unlink(missing_ok=True)


ANALYST = """
import os, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True, config={"file_search_path": os.path.dirname(sys.argv[1])})
for line in sys.stdin:
    print(con.execute("select count(*), max(as_of) from customers").fetchone(), flush=True)
"""


class Analyst:
    """Another process that opened warehouse.duckdb before the runs and keeps it open (DuckDB caches an open
    database per process, so the test's own connections must not be the analyst's)."""

    def __init__(self, paths: Paths) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", ANALYST, str(paths.warehouse)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def sees(self) -> str:
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def buckets(paths: Paths, table: str) -> int:
    folder = paths.lake / "gold" / table / f"as_of={D1}"
    return len(list(folder.glob("bucket=*"))) if folder.exists() else 0


def leftovers(paths: Paths) -> list[str]:
    found = [p for p in (paths.lake / "_staging").glob("*")]
    found += list((paths.exports / "crm").glob(".*")) + list(paths.home.glob(".warehouse*"))
    found += list(paths.reports.glob("*/.*")) + list(paths.published.glob(".*"))
    found += list(paths.published.glob("runs/.*"))
    found += list(paths.locks.glob("night-*"))
    return sorted(str(p.relative_to(paths.home)) for p in found)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """A simulated bank, loaded (`segone load-history`) and trained (`segone train`): a copy of the cached one."""
    return bank_copy(airflow_bank(), tmp_path_factory.mktemp("crash") / "bank") / "segone"


@pytest.mark.slow
def test_a_night_killed_anywhere_shows_nothing_and_the_next_run_completes_and_cleans_up(bank):
    paths = Paths(bank)
    published = visible(paths)
    assert published["warehouse"]["customers"][0] > 0 and published["warehouse"]["cash_forecast"][0] == 0
    analyst = Analyst(paths)  # keeps the published file open throughout
    seen_by_analyst = analyst.sees()

    # the first run of D1: stopped after conform, after half the forecast buckets, after half the decision buckets,
    # then killed during publish (its files staged, not committed)
    run = Run(bank, ["conform", f"forecast_cash_shortfall_bucket_{HALF - 1}", f"decide_bucket_{HALF - 1}",
                     "publish:staged"])
    for point, written in (
            ("conform", lambda: (paths.lake / "silver" / "transactions" / f"load_date={D1}").exists()),
            (f"forecast_cash_shortfall_bucket_{HALF - 1}", lambda: buckets(paths, "cash_forecast") == HALF),
            (f"decide_bucket_{HALF - 1}", lambda: buckets(paths, "next_best_actions") == HALF),
            ("publish:staged", lambda: list(paths.home.glob(".warehouse*.tmp"))
             and list((paths.exports / "crm").glob(f".{D1}.staging-*")))):
        run.reach(point)
        assert written(), f"at {point} the live lake should already hold part of the night"
        assert visible(paths) == published, f"part of the unfinished night is visible at {point}"
        if point == "publish:staged":
            run.kill()
        else:
            run.go_on()
    assert visible(paths) == published
    assert not (paths.exports / "crm" / D1).exists() and not (paths.reports / D1 / "index.html").exists()
    assert leftovers(paths)  # what the killed run left: staged files, its lock
    assert analyst.sees() == seen_by_analyst

    # the next run takes over the dead run's lock, completes, publishes everything at once and cleans up
    segone(bank, "run", "--date", D1)
    now = visible(paths)
    con = connect_warehouse(paths.warehouse)
    for view, column in (("customers", "as_of"), ("transactions", "load_date"), ("cash_forecast", "as_of"),
                         ("life_events", "as_of"), ("next_best_actions", "as_of"), ("decision_log", "as_of")):
        assert con.execute(f"select count(*) from {view} where {column} = '{D1}'").fetchone()[0] > 0, view
    assert con.execute(f"select count(distinct bucket) from cash_forecast where as_of = '{D1}'").fetchone() == (
        BUCKETS,)
    con.close()
    manifest, rows = read_export(paths.exports / "crm" / D1)
    assert manifest["rows"] == len(rows) > 0 and f"reports/{D1}/index.html" in now["files"]
    assert leftovers(paths) == []
    state = json.loads((paths.published / "state.json").read_text())
    assert sorted(p.name for p in paths.published.glob("g*") if p.is_dir()) == sorted(
        [state["generation"], state["previous"]])
    assert analyst.sees() == seen_by_analyst

    # a re-run of the published night D1 on corrected input, killed in the middle of decide: D1 stays as published
    landing = paths.landing_day(D1) / "transactions.csv"
    with open(landing, newline="", encoding="utf-8") as handle:
        header, first = list(csv.reader(handle))[:2]
    with open(landing, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [[f"XRERUN{i}", *first[1:3], "-1.00", *first[4:]] for i in range(3)])
    run = Run(bank, ["conform", f"decide_bucket_{HALF - 1}"])
    run.reach("conform")
    silver = duckdb.connect().execute(
        f"select count(*) from read_parquet('{paths.lake}/silver/transactions/load_date={D1}/*/*.parquet') "
        "where transaction_id like 'XRERUN%'").fetchone()
    assert silver == (3,)  # the live lake has the re-run's silver ...
    assert visible(paths) == now  # ... the views do not
    run.go_on()
    run.reach(f"decide_bucket_{HALF - 1}")
    assert visible(paths) == now
    run.kill()
    assert visible(paths) == now
    # nobody can publish the half re-run by hand: its stages voided the verdicts of the gates after them
    refused = segone(bank, "publish", "--date", D1, check=False)
    assert refused.returncode == 2 and "no verdict" in refused.stderr, refused.stderr[-2000:]
    assert "taking over the stale lock" in refused.stderr
    assert visible(paths) == now
    analyst.close()
