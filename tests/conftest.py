"""Shared fixtures: every test gets its own data root, so nothing touches var/ or another test's lake."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.config import Paths

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference"


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


os.environ.setdefault("SEGONE_TASK_RETRIES", "0")
