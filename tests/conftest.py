"""Shared fixtures: every test gets its own data root, so nothing touches var/ or another test's lake."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipelines.config import Paths

REPO = Path(__file__).resolve().parent.parent
# The shared reference data sits beside the repository (../shared/reference); SEGONE_REFERENCE overrides it, e.g.
# for a git worktree checked out elsewhere.
REFERENCE = Path(os.environ.get("SEGONE_REFERENCE") or REPO.parent / "shared" / "reference")


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    home = tmp_path / "segone"
    home.mkdir()
    monkeypatch.setenv("SEGONE_HOME", str(home))
    return Paths(home)


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.exists():
        pytest.fail(f"the shared reference data is missing: {REFERENCE}")
    return REFERENCE


# Airflow reads its configuration when first imported: point it at the repository's airflow.cfg and a private
# AIRFLOW_HOME (its SQLite metadata database) before any test imports it.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="segone-airflow-"))
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW_CONFIG"] = str(REPO / "airflow.cfg")
os.environ["SEGONE_REPO"] = str(REPO)
os.environ["SEGONE_TASK_RETRIES"] = "0"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) with the project's DAGs serialized."""
    airflow = str(Path(sys.executable).parent / "airflow")
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run([airflow, *args], capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return AIRFLOW_HOME


# The slowest test files first, longest first (measured with --junitxml on 2026-12-07: each takes one to four minutes):
# under `make test`'s pytest-xdist workers (--dist loadfile) a slow file that starts last leaves the other worker idle
# at the end.
SLOW_FILES_FIRST = ("test_e2e.py", "test_forecast.py", "test_scheduler.py", "test_crash.py", "test_e2e_berka.py",
                    "test_feature_store.py", "test_features.py", "test_day_one.py", "test_bench.py",
                    "test_life_events.py", "test_messages_accuracy.py", "test_decide.py", "test_closed_loop.py",
                    "test_publish.py", "test_event_forecast.py", "test_openbanking_fast.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
