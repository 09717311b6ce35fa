"""Start and stop Airflow's own components the way an operator would, on 127.0.0.1 (docs/operations.md).

`make serve` / `make stop`: the scheduler (LocalExecutor), the dag-processor and the api-server of one home,
the project's DAGs unpaused. `make cluster-demo` (pipelines/evaluation/cluster_demo.py): the same with the CeleryExecutor,
PostgreSQL and Redis. This module only launches Airflow's, PostgreSQL's and Redis's own programs and talks to
Airflow's REST API; it schedules nothing itself.

- Every process it starts is recorded in `$AIRFLOW_HOME/serve.pids.json` (name, pid, process start time) and runs
  in a session of its own; `stop` signals exactly those process groups (after checking that each pid is still
  the process it started), waits, and kills what is left.
- The components share one JWT secret and one API secret key, generated once per `$AIRFLOW_HOME` into
  `$AIRFLOW_HOME/secrets/` (mode 0600, never in git) and handed over in the environment. Without them every
  component makes up its own and each task fails with "Invalid auth token".
- No component listens beyond 127.0.0.1: the api-server binds it, and the scheduler's and workers' log servers
  (which bind every interface) are not started: the api-server reads the task logs from `$AIRFLOW_HOME/logs`.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAG_IDS = ("nightly_personalization",)
PIDS_FILE = "serve.pids.json"


class DeployError(RuntimeError):
    """A component did not start, or a run did not finish as asked."""


def worker_hostname() -> str:
    """`[core] hostname_callable` of the demo's Celery workers: their own name, so that the task instances show
    which worker ran them even with several workers on one machine."""
    return os.environ.get("SEGONE_WORKER_NAME") or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _secret(folder: Path, name: str) -> str:
    """A random secret kept in folder/name (0600), created on first use; safe when two starts race."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
        time.sleep(0.5)  # another start is writing it
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip()


@dataclass
class Deployment:
    """One Airflow installation: its homes, its API port and the settings that differ from airflow.cfg."""

    segone_home: Path
    airflow_home: Path
    port: int = 8080
    settings: dict[str, str] = field(default_factory=dict)  # AIRFLOW__SECTION__KEY overrides (executor, DB, ...)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids_file(self) -> Path:
        return self.airflow_home / PIDS_FILE

    @property
    def logs(self) -> Path:
        return self.airflow_home / "logs"

    def env(self, **extra: str) -> dict[str, str]:
        folder = self.airflow_home / "secrets"
        env = os.environ.copy()
        env.update({
            "SEGONE_HOME": str(self.segone_home), "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"), "SEGONE_REPO": str(REPO), "PYTHONHASHSEED": "0",
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(folder, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(folder, "api_secret_key"),
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"{self.url}/",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
        })
        # the project's code first, whichever checkout runs it (the venv may point at another one)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p and Path(p).resolve() != REPO])
        env.update(self.settings)
        env.update(extra)
        return env

    # --- processes -------------------------------------------------------------------------------------------

    def airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """An `airflow` command against this deployment; raises with its output when it fails."""
        done = subprocess.run([str(BIN / "airflow"), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        if done.returncode != 0:
            raise DeployError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, user: str | None = None) -> int:
        """Start one long-running program in a session of its own, its output in $AIRFLOW_HOME/<name>.log."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        log = open(self.airflow_home / f"{name}.log", "ab")
        process = subprocess.Popen(argv, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True, user=user)
        log.close()
        records = self.processes()
        records.append({"name": name, "pid": process.pid, "started": _start_time(process.pid), "argv": argv})
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2), encoding="utf-8")
        tmp.replace(self.pids_file)
        return process.pid

    def processes(self) -> list[dict[str, Any]]:
        return json.loads(self.pids_file.read_text(encoding="utf-8")) if self.pids_file.exists() else []

    def alive(self) -> list[dict[str, Any]]:
        return [r for r in self.processes() if _is_same_process(r)]

    def stop(self, timeout: float = 60) -> list[str]:
        """Stop what this deployment started (last started first), by the process groups recorded in the pid file."""
        return stop_recorded(self.pids_file, timeout)

    # --- the API ------------------------------------------------------------------------------------------------

    def wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_components()
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(2)
        raise DeployError(f"the api-server did not answer on {self.url} within {timeout:.0f} s "
                          f"(see {self.airflow_home}/api-server.log)")

    def _check_components(self) -> None:
        dead = [r["name"] for r in self.processes() if not _is_same_process(r)]
        if dead:
            logs = ", ".join(f"{self.airflow_home}/{n}.log" for n in dead)
            raise DeployError(f"{', '.join(dead)} stopped: see {logs}")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """Airflow's REST API (the simple auth manager gives every user admin rights on this loopback server)."""
        if self._token is None:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=timeout) as response:
                self._token = json.loads(response.read())["access_token"]
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise DeployError(f"{method} {path}: HTTP {error.code}: {error.read()[:2000]!r}") from None
        content = raw.decode("utf-8")
        try:
            return json.loads(content) if content else None
        except json.JSONDecodeError:
            return content

    def unpause(self, dag_ids: tuple[str, ...] | list[str] = DAG_IDS, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        for dag_id in dag_ids:
            while True:
                try:
                    self.api("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})
                    break
                except DeployError as error:  # not parsed yet by the dag-processor
                    if "HTTP 404" not in str(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(3)

    def trigger(self, dag_id: str, day: str | None = None, run_id: str | None = None) -> str:
        """A run of dag_id for business date `day` (the `business_date` param), named after it."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        run_id = run_id or (f"night_{day}__manual_{stamp}" if day else f"manual__{stamp}")
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None,
                                "conf": {"business_date": day} if day else {}}
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 3600, poll: float = 5) -> str:
        """Wait until the run has finished; its final state ('success' or 'failed')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_components()
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(poll)
        raise DeployError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
                                   f"?limit=100&offset={len(found)}")
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """A task's log as the UI shows it."""
        content = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                                  f"{try_number}?map_index={map_index}&full_content=true")
        if isinstance(content, dict):
            lines = []
            for part in content.get("content") or []:
                if not isinstance(part, dict):
                    lines.append(str(part))
                    continue
                lines.append(str(part.get("event", "")))
                lines += [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in part.get("error_detail") or []]
            return "\n".join(lines)
        return str(content)

    def failed_tasks(self, dag_id: str, run_id: str) -> str:
        tis = self.task_instances(dag_id, run_id)
        failed = [f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]
                  for ti in tis if ti["state"] == "failed"]
        skipped = sum(ti["state"] == "upstream_failed" for ti in tis)
        return (", ".join(failed) or "none") + (f" ({skipped} tasks after them did not run)" if skipped else "")


# --- pid records ------------------------------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _is_same_process(record: dict[str, Any]) -> bool:
    started = _start_time(int(record["pid"]))
    if started is None or started != record.get("started"):
        return False
    state = Path(f"/proc/{record['pid']}/stat").read_text()
    return state[state.rindex(")") + 2] != "Z"  # a zombie has ended


def stop_recorded(pids_file: Path, timeout: float = 60) -> list[str]:
    """SIGTERM the recorded process groups (last started first), wait, SIGKILL what is left; forget the file."""
    if not pids_file.exists():
        return []
    records = json.loads(pids_file.read_text(encoding="utf-8"))
    stopped: list[str] = []
    for record in reversed(records):
        if not _is_same_process(record):
            continue
        pid = int(record["pid"])
        sig = signal.SIGINT if record["name"] == "postgres" else signal.SIGTERM  # postgres: fast shutdown
        # the leader first, so that it shuts its own children down; then its whole group; then SIGKILL
        for send, wait in ((lambda: os.kill(pid, sig), timeout / 2), (lambda: os.killpg(pid, signal.SIGTERM),
                                                                      timeout / 2)):
            if not _is_same_process(record):
                break
            try:
                send()
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _is_same_process(record) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.5)
        if _is_same_process(record):
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        # the group's leader has ended; members it left behind (a task process, a uvicorn worker) go with it
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _reap(pid)
        deadline = time.monotonic() + 10
        while _group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped.append(f"{record['name']} (pid {record['pid']})")
    pids_file.unlink()
    return stopped


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- one machine: make serve / make stop ------------------------------------------------------------------------

def serve(deployment: Deployment, dag_ids: tuple[str, ...] | list[str] = DAG_IDS, workers: list[dict] | None = None,
          fresh: bool = True, log=print) -> None:
    """Migrate the metadata database, start the api-server, scheduler and dag-processor (and `workers`: dicts of
    name, argv, env), unpause the DAGs. fresh=False: processes this deployment already runs (its database, its
    broker) are kept."""
    if fresh:
        if deployment.alive():
            raise DeployError(f"already running ({', '.join(r['name'] for r in deployment.alive())}): "
                              f"`make stop` first (pid file {deployment.pids_file})")
        deployment.pids_file.unlink(missing_ok=True)
    deployment.airflow_home.mkdir(parents=True, exist_ok=True)
    deployment.segone_home.mkdir(parents=True, exist_ok=True)
    log(f"airflow db migrate ({deployment.airflow_home})")
    deployment.airflow("db", "migrate")
    deployment.airflow("dags", "reserialize")
    airflow = str(BIN / "airflow")
    try:
        deployment.start("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(deployment.port),
                                        "--workers", "1"])
        deployment.start("scheduler", [airflow, "scheduler", "--skip-serve-logs"])
        deployment.start("dag-processor", [airflow, "dag-processor"])
        for worker in workers or []:
            deployment.start(worker["name"], worker["argv"], env=deployment.env(**worker.get("env", {})))
        deployment.wait_for_api()
        deployment.unpause(dag_ids)
    except BaseException:
        deployment.stop()
        raise
    log(f"Airflow is up: {deployment.url} (task logs under {deployment.logs}); DAGs unpaused: {', '.join(dag_ids)}")


def run_once(deployment: Deployment, day: str, dag_id: str = DAG_IDS[0], timeout: float = 6 * 3600,
             log=print) -> str:
    """Serve Airflow (only triggered runs), run dag_id for D through the scheduler, stop everything; the final state."""
    deployment.settings.setdefault("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
    serve(deployment, (dag_id,), log=log)
    try:
        run_id = deployment.trigger(dag_id, day)
        log(f"{dag_id} for {day}: run {run_id}")
        state = deployment.wait_for_run(dag_id, run_id, timeout=timeout)
        log(f"run {run_id}: {state}" + ("" if state == "success" else
                                          f" (failed: {deployment.failed_tasks(dag_id, run_id)})"))
        return state
    finally:
        log("stopped: " + ", ".join(deployment.stop()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.deploy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "stop", "status", "trigger", "run"):
        command = sub.add_parser(name)
        command.add_argument("--port", type=int, default=int(os.environ.get("SERVE_PORT", "8080")))
        if name in ("trigger", "run"):
            command.add_argument("--date", required=True, help="business date D (YYYY-MM-DD)")
            command.add_argument("--dag", default=DAG_IDS[0])
            command.add_argument("--wait", action="store_true", help="wait for the run and fail if it failed")
            command.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the run")
        if name == "run":
            command.set_defaults(port=0)  # a free port: this Airflow lives only for the run
    args = parser.parse_args(argv)
    from pipelines.config import segone_home

    home = segone_home()
    deployment = Deployment(home, Path(os.environ.get("AIRFLOW_HOME") or home / "airflow").resolve(), args.port)
    try:
        if args.command == "serve":
            serve(deployment)
            print(f"Open {deployment.url} (no login: every user is an admin on this loopback server). "
                  f"Stop with `make stop`.")
        elif args.command == "stop":
            stopped = deployment.stop()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "status":
            alive = deployment.alive()
            print("\n".join(f"{r['name']:<14} pid {r['pid']}" for r in alive) or "nothing running")
        elif args.command == "run":
            from pipelines.orchestration import parse_business_date

            day = parse_business_date(args.date).isoformat()
            deployment.port = args.port or free_port()
            state = run_once(deployment, day, args.dag, timeout=args.timeout)
            if state != "success":
                print(f"the night of {day} failed: see {home / 'runs' / day / 'alert.json'} and the task logs "
                      f"under {deployment.logs}")
                return 1
        elif args.command == "trigger":
            from pipelines.orchestration import parse_business_date

            day = parse_business_date(args.date).isoformat()
            run_id = deployment.trigger(args.dag, day)
            print(f"triggered {args.dag} for {day}: run {run_id} ({deployment.url}/dags/{args.dag}/runs/{run_id})")
            if args.wait:
                state = deployment.wait_for_run(args.dag, run_id, timeout=args.timeout)
                print(f"run {run_id}: {state}")
                if state != "success":
                    print(f"failed tasks: {deployment.failed_tasks(args.dag, run_id)}; alert: "
                          f"{home / 'runs' / day / 'alert.json'}")
                    return 1
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - one line, never a traceback, for the operator
        from pipelines.errors import SegoneError

        if isinstance(error, SegoneError):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
