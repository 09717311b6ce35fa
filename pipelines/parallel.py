"""Process pools that work inside an Airflow task as well as in a shell.

A pool started with multiprocessing's "spawn" (or "forkserver") method re-runs the parent's `__main__` module in
every child before it runs any job. Inside an Airflow task that module is Airflow's own command line (the
`airflow` script of the scheduler, of a LocalExecutor worker or of a Celery worker): re-running it imports
`airflow`, which initialises its settings from the environment, and Airflow has just replaced the metadata
database's URL there with a blocked one (`airflow-db-not-allowed:///`), so every child dies on "Could not parse
SQLAlchemy URL" and the pool raises BrokenProcessPool. An initializer cannot help: it runs after that import.

`process_pool` starts fresh interpreters (spawn: safe beside DuckDB's and Airflow's threads) that do not re-run the
parent's `__main__`: a child imports only the module of the function it is given (which must therefore live in an
importable module, never in a script's `__main__`), with the parent's `sys.path` and working directory. The
children never import Airflow, and keep its blocked database URL: they cannot reach the metadata database either.
"""
from __future__ import annotations

import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import context

_LAUNCH = threading.Lock()


class _CleanSpawnProcess(context.SpawnProcess):
    """A spawned process whose preparation data does not name the parent's `__main__` module."""

    @staticmethod
    def _Popen(process_obj):  # noqa: N802 (multiprocessing's name)
        # multiprocessing.spawn.get_preparation_data reads sys.modules["__main__"] while the child is launched: for
        # that moment it sees a module without a file or spec, so the child has nothing to re-run. The lock keeps
        # two launches from restoring each other's view.
        with _LAUNCH:
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                return context.SpawnProcess._Popen(process_obj)
            finally:
                sys.modules["__main__"] = main


class _CleanSpawnContext(context.SpawnContext):
    Process = _CleanSpawnProcess


CLEAN_SPAWN = _CleanSpawnContext()


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `max_workers` fresh interpreters that never re-run the parent's `__main__`."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=CLEAN_SPAWN)
