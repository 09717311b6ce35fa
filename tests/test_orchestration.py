"""Which night a run is for, the wait for D's landing and its deadline, the failure records and the alert hooks."""
from __future__ import annotations

import http.server
import json
import logging
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines import orchestration
from pipelines.config import Paths
from pipelines.errors import SegoneError
from pipelines.ingest.landing import find_landing_files

UTC = timezone.utc
D = date(2026, 11, 20)
TODAY = date(2026, 12, 6)
DAGS = Path(__file__).resolve().parent.parent / "dags"


# --- D of a run -----------------------------------------------------------------------------------------------

def test_a_scheduled_run_is_for_the_day_its_interval_starts():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    assert orchestration.night_of({}, start, TODAY) == D
    assert orchestration.night_of({"business_date": None}, start, TODAY) == D
    assert orchestration.night_of({"business_date": "  "}, start, TODAY) == D


def test_the_business_date_param_overrides_the_interval():
    start = datetime(2026, 12, 5, tzinfo=UTC)
    assert orchestration.night_of({"business_date": "2026-11-20"}, start, TODAY) == D
    assert orchestration.night_of({"business_date": "2026-11-20"}, None, TODAY) == D


@pytest.mark.parametrize("value, message", [
    ("20/11/2026", "YYYY-MM-DD"), ("2026-11-31", "not a calendar date"), ("2026-12-06", "not over yet"),
    ("2027-01-01", "not over yet"), ("2026-11-20; drop table", "YYYY-MM-DD"), (20261120, "YYYY-MM-DD")])
def test_a_bad_business_date_is_refused_in_one_line(value, message):
    with pytest.raises(SegoneError, match=message) as caught:
        orchestration.night_of({"business_date": value}, datetime(2026, 12, 5, tzinfo=UTC), TODAY)
    assert "\n" not in str(caught.value)


def test_the_dag_param_is_validated_by_airflow_too(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=str(DAGS)).get_dag("nightly_personalization")
    param = dag.params.get_param("business_date")
    assert param.resolve("2026-11-20") == "2026-11-20"
    assert param.resolve(None) is None
    for bad in ("20/11/2026", "2026-02-30", 20261120):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)


# --- the wait for D's landing -------------------------------------------------------------------------------------

def test_the_deadline_is_hours_after_the_end_of_d():
    assert orchestration.landing_deadline(D) == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def test_the_wait_ends_with_the_marker_and_fails_past_the_deadline(paths: Paths):
    folder = paths.landing_day(D.isoformat())
    before = datetime(2026, 11, 21, 5, 59, tzinfo=UTC)
    after = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    assert orchestration.landing_complete(paths, D, now=before) is False  # no folder yet: keep waiting
    folder.mkdir(parents=True)
    (folder / "transactions.csv").write_text("transaction_id\n")
    assert orchestration.landing_complete(paths, D, now=before) is False  # files, but not complete yet
    with pytest.raises(orchestration.LandingLate, match="not complete at its deadline 2026-11-21 06:00 UTC"):
        orchestration.landing_complete(paths, D, now=after)
    (folder / "_SUCCESS").touch()
    assert orchestration.landing_complete(paths, D, now=after) is True  # a late drop still runs when re-run


def test_the_ingest_does_not_take_the_marker_for_a_landing_file(tmp_path: Path):
    (tmp_path / "transactions.csv").write_text("x\n")
    (tmp_path / "_SUCCESS").touch()
    (tmp_path / "notes.txt").write_text("?")
    by_kind, openbanking, unknown, refused = find_landing_files(tmp_path, {"transactions"})
    assert [p.name for p in by_kind["transactions"]] == ["transactions.csv"]
    assert [p.name for p in unknown] == ["notes.txt"] and refused == []


# --- failures and the alert ---------------------------------------------------------------------------------------

def _ti(task_id: str, map_index: int = -1) -> SimpleNamespace:
    return SimpleNamespace(task_id=task_id, map_index=map_index, try_number=1, hostname="host-a",
                           log_url=f"http://127.0.0.1:8080/dags/nightly_personalization/runs/r1/tasks/{task_id}")


def _context(ti, **extra) -> dict:
    return {"dag": SimpleNamespace(dag_id="nightly_personalization"), "run_id": "r1", "ti": ti,
            "params": {"business_date": None}, "data_interval_start": datetime(2026, 11, 20, tzinfo=UTC),
            "reason": "task_failure"} | extra


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_night_writes_the_alert_logs_it_and_calls_the_hooks(paths: Paths, tmp_path: Path, caplog,
                                                                     monkeypatch):
    orchestration.record_task_failure(_context(_ti("validate"), exception=SegoneError("gate volume failed")),
                                      paths)
    orchestration.record_task_failure(_context(_ti("decide_next_best_actions", 3),
                                               exception=ValueError("bad shard")), paths)
    stale = _context(_ti("ingest"), run_id="r0", exception=SegoneError("an earlier run"))
    orchestration.record_task_failure(stale, paths)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received = tmp_path / "command.json"
    monkeypatch.setenv("SEGONE_TEST_HOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    hooks = [{"kind": "webhook", "url_env": "SEGONE_TEST_HOOK_URL"},
             {"kind": "command", "argv": [sys.executable, "-c",
                                          f"import sys; open({str(received)!r}, 'w').write(sys.stdin.read())"]},
             {"kind": "webhook", "url": "http://127.0.0.1:9/refused", "timeout_seconds": 2},
             {"kind": "pager"}]
    try:
        with caplog.at_level(logging.ERROR, logger="segone.alert"):
            target = orchestration.on_night_failed(_context(_ti("validate")), paths, hooks=hooks)
    finally:
        server.shutdown()
    assert target == paths.runs / "2026-11-20" / "alert.json"
    alert = json.loads(target.read_text())
    assert alert["business_date"] == "2026-11-20" and alert["run_id"] == "r1"
    assert [(f["task_id"], f["map_index"], f["error"]) for f in alert["failed_tasks"]] == [
        ("decide_next_best_actions", 3, "ValueError: bad shard"), ("validate", -1, "SegoneError: gate volume failed")]
    assert alert["failed_tasks"][1]["log_url"].endswith("/tasks/validate")
    assert "docs/operations.md" in alert["what_to_do"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("ALERT the night of 2026-11-20 failed (run r1): ") and "gate volume failed" in m
               for m in lines)
    # every hook was tried; the broken ones are logged and did not stop the others
    assert _Hook.received and _Hook.received[-1]["alert"]["run_id"] == "r1"
    assert "validate: SegoneError: gate volume failed" in _Hook.received[-1]["text"]
    assert json.loads(received.read_text())["business_date"] == "2026-11-20"
    assert any("alert hook webhook failed" in m for m in lines)
    assert any("alert hook pager failed" in m and "unknown alert hook kind" in m for m in lines)


def test_a_night_that_succeeds_later_resolves_its_alert(paths: Paths):
    orchestration.on_night_failed(_context(_ti("ingest")), paths, hooks=[])
    orchestration.on_night_succeeded(_context(None, run_id="r2"), paths)
    folder = paths.runs / "2026-11-20"
    assert not (folder / "alert.json").exists()
    assert json.loads((folder / "alert.resolved.json").read_text())["resolved_by_run"] == "r2"


def test_a_manual_run_alerts_under_its_business_date(paths: Paths):
    context = _context(_ti("wait_for_landing"), params={"business_date": "2026-11-19"})
    assert orchestration.on_night_failed(context, paths, hooks=[]) == paths.runs / "2026-11-19" / "alert.json"


def test_an_alert_without_a_night_still_lands(paths: Paths):
    target = orchestration.on_night_failed({"run_id": "manual__x:y", "reason": "timed_out"}, paths, hooks=[])
    assert target.parent == paths.runs / "_alerts" and json.loads(target.read_text())["reason"] == "timed_out"
