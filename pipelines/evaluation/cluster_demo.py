"""`make cluster-demo`: the project's DAGs on Airflow's CeleryExecutor, compared with a LocalExecutor run.

On this machine, on loopback only: PostgreSQL for Airflow's metadata (initdb into $SEGONE_HOME/cluster/postgres,
a free port), Redis as the Celery broker (no persistence), the scheduler, dag-processor and api-server, and two
Celery workers with their own names. A small simulated bank; each DAG of --dags triggered for D through the
scheduler's REST API (not `dags test`); which worker ran which task; then the same night on a LocalExecutor
deployment of a copy of the same bank, and the gold tables and CRM export of D compared, and, when
`retrain_models` ran, its decisions (gold model_registry but for when each was written) and the model files it
wrote. Everything started is recorded by pid and stopped at the end, also on failure. The last line states the
result.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.deploy import BIN, Deployment, DeployError, free_port, serve, stop_recorded

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
DEFAULT_DAGS = "nightly_personalization,retrain_models"
RETRAIN_DAG = "retrain_models"
# gold tables of decisions about models, not about D's customers: compared by compare_registry, not row for row
REGISTRY_TABLE = "model_registry"
REGISTRY_WHEN = ("decided_at",)  # when a decision was written: differs between any two runs
NO_SCHEDULE = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}  # only the runs this demo triggers


def say(text: str) -> None:
    print(text, flush=True)


def _pg_bin() -> Path:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for path in reversed(found):
        if (path / "initdb").exists() and (path / "postgres").exists():
            return path
    raise DeployError("PostgreSQL's server programs (initdb, postgres) are not installed: "
                      "apt-get install postgresql (version 15 or newer)")


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise DeployError("redis-server is not installed: sudo apt-get install -y redis-server")
    say("installing Debian's redis-server package (not started as a service)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}  # RUNLEVEL=1: no service start
    for attempt in (["apt-get", "install", "-y", "-q", "redis-server"],
                    ["sh", "-c", "apt-get update -q && apt-get install -y -q redis-server"]):
        if subprocess.run(attempt, env=env, capture_output=True).returncode == 0 and shutil.which("redis-server"):
            return str(shutil.which("redis-server"))
    raise DeployError("apt-get install redis-server failed")


def _db_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    return "postgres" if os.geteuid() == 0 else None


def start_postgres(deployment: Deployment, root: Path) -> str:
    """initdb (password auth, loopback only) and start PostgreSQL; the SQLAlchemy URL of the `airflow` database."""
    pg = _pg_bin()
    data, socket_dir = root / "postgres" / "data", root / "postgres" / "run"
    password = (root / "postgres" / "password")
    user = _db_user()
    for folder in (data, socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
    password.write_text(os.urandom(18).hex(), encoding="utf-8")
    if user:
        for path in (root / "postgres", data, socket_dir, password):
            shutil.chown(path, user=user)
        data.chmod(0o700)
        probe = subprocess.run(["test", "-x", str(root)], user=user)
        if probe.returncode != 0:
            raise DeployError(f"the `postgres` user cannot reach {root}: choose a SEGONE_HOME every user can enter")
    done = subprocess.run([str(pg / "initdb"), "-D", str(data), "-U", "airflow", "--auth=scram-sha-256",
                           f"--pwfile={password}", "-E", "UTF8", "--locale=C"], user=user, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise DeployError(f"initdb failed: {done.stderr[-2000:]}")
    port = free_port()
    deployment.start("postgres", [str(pg / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                  "-k", str(socket_dir), "-c", "fsync=off", "-c", "max_connections=200"], user=user)
    secret = password.read_text(encoding="utf-8")
    password.chmod(0o600)
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        try:
            con = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", password=secret, dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise DeployError(f"PostgreSQL did not start: see {deployment.airflow_home}/postgres.log") from None
            time.sleep(1)
    con.autocommit = True
    con.cursor().execute("create database airflow")
    con.close()
    return f"postgresql+psycopg2://airflow:{secret}@127.0.0.1:{port}/airflow"


def start_redis(deployment: Deployment, root: Path) -> str:
    folder = root / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    deployment.start("redis", [_redis_server(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder), "--protected-mode", "yes"])
    return f"redis://127.0.0.1:{port}/0"


def build_bank(home: Path, customers: int, days: int, day: str, seed: int) -> None:
    env = os.environ | {"SEGONE_HOME": str(home)}
    for args in (["simulate", "--customers", str(customers), "--days", str(days), "--end-date", day, "--seed",
                  str(seed)], ["load-history"], ["train"]):
        with open(home.parent / "bank.log", "a") as log:
            done = subprocess.run([str(BIN / "segone"), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise DeployError(f"segone {args[0]} failed: see {home.parent / 'bank.log'}")


def run_dags(deployment: Deployment, dag_ids: list[str], day: str, timeout: float) -> dict[str, dict[str, Any]]:
    """Trigger each DAG for D in turn through the REST API and wait for it; the runs and their task instances."""
    runs: dict[str, dict[str, Any]] = {}
    for dag_id in dag_ids:
        started = time.monotonic()
        run_id = deployment.trigger(dag_id, day)
        say(f"  {dag_id}: run {run_id} triggered")
        state = deployment.wait_for_run(dag_id, run_id, timeout=timeout)
        runs[dag_id] = {"run_id": run_id, "state": state, "seconds": round(time.monotonic() - started),
                        "tis": deployment.task_instances(dag_id, run_id)}
        say(f"  {dag_id}: {state} in {runs[dag_id]['seconds']} s"
            + ("" if state == "success" else f" (failed: {deployment.failed_tasks(dag_id, run_id)})"))
    return runs


def worker_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Which worker ran which task (mapped tasks: which shard)."""
    lines = []
    for dag_id, run in runs.items():
        by_task: dict[tuple[str, str], list[int]] = {}
        for ti in run["tis"]:
            by_task.setdefault((ti["task_id"], ti.get("hostname") or "?"), []).append(ti["map_index"])
        lines.append(f"{dag_id} (run {run['run_id']}):")
        for (task_id, host), shards in sorted(by_task.items()):
            what = f"shards {','.join(str(s) for s in sorted(shards))}" if shards != [-1] else "task"
            lines.append(f"  {task_id:<28} {host:<24} {what}")
        hosts = sorted({ti.get("hostname") for ti in run["tis"] if ti.get("hostname")})
        lines.append(f"  workers used: {', '.join(hosts)}")
    return lines


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_outputs(a: Path, b: Path, day: str) -> tuple[bool, list[str]]:
    """D's gold partitions (as sets of rows) and CRM export (bytes; the manifest but for its run id) of two homes."""
    import duckdb

    con = duckdb.connect()
    lines, same = [], True
    gold = sorted({p.name for home in (a, b) for p in (home / "lake" / "gold").iterdir() if p.is_dir()}
                  - {REGISTRY_TABLE})
    for table in gold:
        parts = [home / "lake" / "gold" / table / (f"load_date={day}" if table == "quarantine" else f"as_of={day}")
                 for home in (a, b)]
        globs = [f"{p}/**/*.parquet" for p in parts]
        counts = []
        for glob, part in zip(globs, parts):
            counts.append(con.execute(f"select count(*) from read_parquet('{glob}', hive_partitioning=false)")
                          .fetchone()[0] if any(part.rglob("*.parquet")) else 0)
        if not any(p.exists() for p in parts):
            continue
        if all(any(p.rglob("*.parquet")) for p in parts):
            differ = con.execute(f"""select count(*) from (
                (select * from read_parquet('{globs[0]}', hive_partitioning=false)
                 except all select * from read_parquet('{globs[1]}', hive_partitioning=false))
                union all
                (select * from read_parquet('{globs[1]}', hive_partitioning=false)
                 except all select * from read_parquet('{globs[0]}', hive_partitioning=false)))""").fetchone()[0]
        else:
            differ = max(counts)
        same &= differ == 0
        lines.append(f"  gold {table:<24} {counts[0]:>8,} rows (Celery) / {counts[1]:>8,} (Local): "
                     + ("identical" if differ == 0 else f"{differ:,} rows differ"))
    exports = [home / "exports" / "crm" / day for home in (a, b)]
    files = sorted({p.name for e in exports if e.is_dir() for p in e.iterdir() if p.name != "manifest.json"})
    for name in files:
        equal = all((e / name).exists() for e in exports) and _sha(exports[0] / name) == _sha(exports[1] / name)
        same &= equal
        lines.append(f"  CRM export {name:<30} " + ("byte-identical" if equal else "DIFFERENT"))
    manifests = [json.loads((e / "manifest.json").read_text()) if (e / "manifest.json").exists() else {}
                 for e in exports]
    differing = sorted(k for k in set(manifests[0]) | set(manifests[1]) if manifests[0].get(k) != manifests[1].get(k))
    unexpected = [k for k in differing if k != "run_id"]
    same &= not unexpected and bool(files)
    lines.append("  CRM manifest: " + ("identical but for run_id (each run names its own)" if not unexpected
                                        else "differs in " + ", ".join(unexpected)))
    return same, lines


def registry_decisions(home: Path):
    """Every retraining decision of a home (gold model_registry, with its as_of and family), without the time it
    was written; None when the table holds nothing."""
    import duckdb

    table = home / "lake" / "gold" / REGISTRY_TABLE
    if not table.is_dir() or not any(table.rglob("*.parquet")):
        return None
    frame = duckdb.connect().execute(
        f"select * exclude ({', '.join(REGISTRY_WHEN)}) from read_parquet('{table}/**/*.parquet', "
        f"hive_partitioning=true, hive_types_autocast=false) order by as_of, family").df()
    return frame.reset_index(drop=True)


def _same_value(x: Any, y: Any) -> bool:
    import pandas as pd

    missing = (x is None or (not isinstance(x, str) and bool(pd.isna(x))),
               y is None or (not isinstance(y, str) and bool(pd.isna(y))))
    return missing[0] and missing[1] or (not any(missing) and x == y)


def _model_files(home: Path, family: str, version: str) -> dict[str, str]:
    folder = home / "models" / family / version
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _promoted(home: Path, family: str) -> str | None:
    pointer = home / "models" / family / "promoted.json"
    return json.loads(pointer.read_text(encoding="utf-8"))["version"] if pointer.exists() else None


def compare_registry(a: Path, b: Path) -> tuple[bool, list[str], str]:
    """retrain_models in two homes: the same decisions (every column of gold model_registry but decided_at), the
    same promoted version per family, and byte-identical files for every model version a decision names. Training
    is deterministic (LightGBM with fixed seeds and threads; versions are hashes of the training data), so a
    difference means a run saw other inputs. Returns (same, report lines, a summary for the last line)."""
    frames = [registry_decisions(home) for home in (a, b)]
    if frames[0] is None or frames[1] is None:
        missing = " and ".join(n for n, f in zip(("Celery", "Local"), frames) if f is None)
        return False, [f"  model_registry: no decision recorded ({missing} run)"], "model_registry EMPTY"
    lines, same = [], True
    keys = [{(str(r["as_of"]), r["family"]): r for r in f.to_dict("records")} for f in frames]
    for key in sorted(set(keys[0]) | set(keys[1])):
        as_of, family = key
        rows = [k.get(key) for k in keys]
        if rows[0] is None or rows[1] is None:
            same = False
            lines.append(f"  model_registry {family:<14} {as_of}: only in the "
                         f"{'Celery' if rows[1] is None else 'Local'} run")
            continue
        differ = sorted(c for c in set(rows[0]) | set(rows[1]) if not _same_value(rows[0].get(c), rows[1].get(c)))
        row = rows[0]
        verdict = "promoted" if row["promoted"] else "kept"
        challenger = row["challenger_version"] if isinstance(row["challenger_version"], str) else None
        what = (f"{verdict} {row['promoted_version'] or 'none'}"
                + (f" (challenger {challenger})" if not row["promoted"] and challenger else ""))
        same &= not differ
        lines.append(f"  model_registry {family:<14} {as_of}: {what}: "
                     + ("the same decision" if not differ else "DIFFERENT in " + ", ".join(differ)))
    summary = []
    for family in sorted({f for _, f in set(keys[0]) | set(keys[1])}):
        pointers = [_promoted(home, family) for home in (a, b)]
        versions = sorted({v for k in keys for (_, f), r in k.items() if f == family
                           for v in (r["challenger_version"], r["promoted_version"]) if isinstance(v, str) and v})
        folders = [v for v in versions if any((home / "models" / family / v).is_dir() for home in (a, b))]
        unequal = [v for v in folders if _model_files(a, family, v) != _model_files(b, family, v)]
        same &= pointers[0] == pointers[1] and not unequal
        lines.append(f"  models/{family:<14} promoted {pointers[0] or 'none'}"
                     + ("" if pointers[0] == pointers[1] else f" (Local: {pointers[1] or 'none'})")
                     + (f"; files of {', '.join(folders)}: " + ("byte-identical" if not unequal else
                                                              "DIFFERENT: " + ", ".join(unequal)) if folders else ""))
        last = keys[0][max(k for k in keys[0] if k[1] == family)] if any(k[1] == family for k in keys[0]) else None
        if last is not None:
            summary.append(f"{family} {'promoted' if last['promoted'] else 'kept'} {last['promoted_version']}")
    return same, lines, "retrain: " + ", ".join(summary)


def cluster_demo(root: Path, customers: int, days: int, day: str, seed: int, dag_ids: list[str],
                 timeout: float) -> bool:
    started = time.monotonic()
    for pids in root.glob("*/airflow/serve.pids.json"):  # a previous demo that was interrupted
        stop_recorded(pids)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    bank, celery_home, local_home = root / "bank", root / "celery", root / "local"
    say(f"1. a simulated bank of {customers:,} customers, {days} days to {day} (seed {seed}), history loaded, "
        f"models trained: {bank}")
    build_bank(bank, customers, days, day, seed)
    for home in (celery_home, local_home):
        shutil.copytree(bank, home, symlinks=True)
    say(f"   ({time.monotonic() - started:.0f} s)")

    cluster = Deployment(celery_home, celery_home / "airflow", free_port(), dict(NO_SCHEDULE))
    try:
        say("2. PostgreSQL (metadata) and Redis (broker) on 127.0.0.1")
        db = start_postgres(cluster, root)
        broker = start_redis(cluster, root)
        cluster.settings.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            # the result backend names its driver: SQLAlchemy 2.1's default for postgresql:// is psycopg 3
            "AIRFLOW__CELERY__BROKER_URL": broker, "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db,
        })
        airflow = str(BIN / "airflow")
        name_callable = "pipelines.deploy.worker_hostname"  # the task instances show which worker ran them
        workers = [{"name": f"worker-{n}", "env": {"SEGONE_WORKER_NAME": f"segone-w{n}",
                                                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": name_callable},
                    "argv": [airflow, "celery", "worker", "--celery-hostname", f"segone-w{n}@%h", "--concurrency",
                             "1", "--skip-serve-logs"]} for n in (1, 2)]
        say("3. Airflow on the CeleryExecutor: api-server, scheduler, dag-processor, workers segone-w1, segone-w2")
        serve(cluster, dag_ids, workers=workers, fresh=False, log=lambda line: say("   " + line))
        say(f"4. {', '.join(dag_ids)} for {day} through the scheduler (CeleryExecutor)")
        celery_runs = run_dags(cluster, dag_ids, day, timeout)
        for line in worker_table(celery_runs):
            say("   " + line)
    finally:
        stopped = cluster.stop()
        say(f"   stopped: {', '.join(stopped) or 'nothing'}")

    local = Deployment(local_home, local_home / "airflow", free_port(), dict(NO_SCHEDULE))
    try:
        say("5. the same on the LocalExecutor (SQLite metadata), on a copy of the same bank")
        serve(local, dag_ids, log=lambda line: say("   " + line))
        local_runs = run_dags(local, dag_ids, day, timeout)
    finally:
        stopped = local.stop()
        say(f"   stopped: {', '.join(stopped) or 'nothing'}")

    ok = all(r["state"] == "success" for r in list(celery_runs.values()) + list(local_runs.values()))
    hosts = {ti.get("hostname") for r in celery_runs.values() for ti in r["tis"]}
    say(f"6. D's outputs, CeleryExecutor ({celery_home}) against LocalExecutor ({local_home}):")
    same, lines = compare_outputs(celery_home, local_home, day) if ok else (False, ["  (not compared: a run failed)"])
    models = ""
    if ok and RETRAIN_DAG in dag_ids:
        same_models, more, models = compare_registry(celery_home, local_home)
        same &= same_models
        lines += more
    for line in lines:
        say(line)
    if ok and same:
        say("   Identical: every stage reads only the lake and its inputs for D, and training is deterministic, so "
            "which executor, worker or order ran a task changes nothing.")
    elapsed = time.monotonic() - started
    left = [r for d in (cluster, local) for r in d.alive()]
    result = ok and same and len(hosts) >= 2 and not left
    say(f"cluster-demo {'PASSED' if result else 'FAILED'}: {', '.join(dag_ids)} for {day} on the CeleryExecutor "
        f"({len(hosts)} workers: {', '.join(sorted(h for h in hosts if h))}) "
        f"{'matches' if same else 'does NOT match'} the LocalExecutor run"
        f"{' (' + models + ')' if models else ''}; "
        f"{'nothing left running' if not left else 'STILL RUNNING: ' + str(left)}; {elapsed / 60:.1f} min")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluation.cluster_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=int(os.environ.get("CLUSTER_CUSTOMERS", "2000")))
    parser.add_argument("--days", type=int, default=int(os.environ.get("CLUSTER_DAYS", "200")))
    parser.add_argument("--date", default=os.environ.get("CLUSTER_DATE", "2026-11-20"), help="business date D")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dags", default=os.environ.get("CLUSTER_DAGS", DEFAULT_DAGS),
                        help="comma-separated DAG ids, run in this order for D")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each run")
    args = parser.parse_args(argv)
    from pipelines.config import segone_home

    root = segone_home() / "cluster"
    try:
        ok = cluster_demo(root, args.customers, args.days, args.date, args.seed,
                          [d.strip() for d in args.dags.split(",") if d.strip()], args.timeout)
    except DeployError as error:
        print(f"cluster-demo FAILED: {error}", flush=True)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
