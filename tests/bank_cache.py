"""Test banks built once and shared between test modules: an on-disk cache keyed by the builder's name and parameters
and a hash of what builds a bank (pipelines/, models/, sql/, config/, expectations/, dags/, the test helpers the
builders use, requirements.lock and the BANKING77 file the simulator's messages and the intent model read), so a
changed stage never reuses a stale bank.

`make test` runs two pytest-xdist workers: the first worker to ask for a bank builds it under a file lock while the
other waits for it; a bank is built in a temporary folder and renamed into place whole, so a killed build leaves
nothing that looks finished. A test never gets the cached bank itself: `bank_copy` copies it (`shutil.copytree`,
real copies, not hard links: the tests append to landing files and rewrite DuckDB files in place) into the test's
own folder. The cache lives in `$SEGONE_TEST_BANKS` (default: `segone-test-banks` in the system's temporary folder);
a new key of a bank removes the older keys of the same bank."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CODE = ("pipelines", "models", "sql", "config", "expectations", "dags")
HELPERS = ("tests/bank_cache.py", "tests/bank_settings.py", "requirements.lock")


def code_hash() -> str:
    """sha256 of every file (path and bytes) under CODE, of HELPERS and of the BANKING77 training file, compiled
    files left out."""
    from pipelines.messages import training_file

    digest = hashlib.sha256()
    files = [p for top in CODE for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and p.suffix != ".pyc"] + [REPO / h for h in HELPERS]
    for path in sorted(files):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    banking77 = training_file()
    digest.update(str(banking77).encode() + b"\0" + (banking77.read_bytes() if banking77.is_file() else b"") + b"\0")
    return digest.hexdigest()


def cache_root() -> Path:
    import tempfile

    return Path(os.environ.get("SEGONE_TEST_BANKS") or Path(tempfile.gettempdir()) / "segone-test-banks")


def cached_bank(name: str, params: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """The folder of bank `name` built with `params` by `build(folder)` (which must create everything the bank is
    inside `folder`), from the cache, or built now. Read it, never write it: copy it with `bank_copy`."""
    key = hashlib.sha256(json.dumps([name, params, code_hash()], sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    done = root / f"{name}-{key}"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here while one builds
        if not done.is_dir():
            for old in root.glob(f"{name}-*"):
                shutil.rmtree(old, ignore_errors=True)
            tmp = root / f".{name}-{key}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                build(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            tmp.rename(done)
    return done


def bank_copy(cached: Path, target: Path) -> Path:
    """A private copy of a cached bank at `target` (which must not exist)."""
    shutil.copytree(cached, target, symlinks=True)
    return target


# The bank of the two Airflow test modules (tests/test_e2e.py: `airflow dags test`; tests/test_scheduler.py: the
# scheduler): 200 simulated customers with 200 days of history ending on AIRFLOW_NIGHT, in two customer buckets
# instead of 16 (two mapped tasks per sharded stage: still more than one task per stage, each its own shard, each a
# fresh process under the scheduler), the light models of the test banks; with enough open-banking files on the
# night for the ingest to parse them in a process pool (2 workers): overlapping fetches of the same accounts, as
# aggregators deliver them (deduplicated by the ingest); loaded (`segone load-history`) and trained (`segone train`).
AIRFLOW_NIGHT = "2026-11-20"
AIRFLOW_BUCKETS = 2
AIRFLOW_CUSTOMERS = 200


def airflow_overlay(home: Path) -> Path:
    from tests.bank_settings import write_overlay

    return write_overlay(home.parent / "settings.yaml", {"segone": {"lake": {"n_buckets": AIRFLOW_BUCKETS}}})


def airflow_bank() -> Path:
    """The cached folder of the Airflow modules' bank: its home is `segone/` inside it."""
    import subprocess
    import sys

    from pipelines.ingest.openbanking import MIN_FILES_PER_WORKER

    def segone(home: Path, *args: str) -> None:
        env = os.environ.copy() | {"SEGONE_HOME": str(home), "SEGONE_SETTINGS": str(airflow_overlay(home)),
                                   "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                              env=env, timeout=900)
        assert done.returncode == 0, f"segone {args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def build(folder: Path) -> None:
        home = folder / "segone"
        segone(home, "simulate", "--customers", str(AIRFLOW_CUSTOMERS), "--days", "200", "--end-date", AIRFLOW_NIGHT,
               "--seed", "7")
        night = home / "landing" / AIRFLOW_NIGHT / "openbanking"
        originals = sorted(night.glob("*.json"))
        copy = 0
        while len(list(night.glob("*.json"))) < 2 * MIN_FILES_PER_WORKER + 8:
            source = originals[copy % len(originals)]
            shutil.copy(source, source.with_name(f"{source.stem}-again{copy}.json"))
            copy += 1
        segone(home, "load-history")
        segone(home, "train")

    return cached_bank("airflow", {"customers": AIRFLOW_CUSTOMERS, "days": 200, "end": AIRFLOW_NIGHT, "seed": 7,
                                   "buckets": AIRFLOW_BUCKETS, "ob_files": 2 * MIN_FILES_PER_WORKER + 8}, build)
