"""Process pools work when the parent's __main__ must not be re-run (as inside an Airflow task)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A script standing in for Airflow's command line inside a task: re-running it in a child fails the way `import
# airflow` fails there (the environment holds a database URL that cannot be parsed).
SCRIPT = textwrap.dedent("""
    import os, sys
    if __name__ != "__main__":
        raise RuntimeError("Could not parse SQLAlchemy URL from string " + os.environ["FAKE_DB_URL"])
    sys.path.insert(0, sys.argv[1])
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pipelines.parallel import process_pool

    def pool(kind):
        return process_pool(2) if kind == "clean" else ProcessPoolExecutor(2, mp_context=get_context("spawn"))

    with pool(sys.argv[2]) as executor:
        print(sorted(executor.map(abs, [-1, -2, -3, -4])))
        child_pids = {executor.submit(os.getpid).result() for _ in range(4)}
        print(os.getpid() not in child_pids)
""")


def run_script(tmp_path: Path, kind: str) -> subprocess.CompletedProcess:
    script = tmp_path / "fake_airflow"
    script.write_text(SCRIPT)
    env = os.environ.copy() | {"FAKE_DB_URL": "airflow-db-not-allowed:///"}
    return subprocess.run([sys.executable, str(script), str(REPO), kind], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_plain_spawn_pool_breaks_when_main_cannot_be_rerun(tmp_path):
    done = run_script(tmp_path, "spawn")
    assert done.returncode != 0
    assert "BrokenProcessPool" in done.stderr or "Could not parse SQLAlchemy URL" in done.stderr


def test_process_pool_children_do_not_rerun_main(tmp_path):
    done = run_script(tmp_path, "clean")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == ["[1, 2, 3, 4]", "True"]
