"""One lock per home and night, so that two runs of the same night never write it at once.

The lock of night D is a small JSON record, `$SEGONE_HOME/locks/night-D.json` (`night-history.json` for the
history load), read and written only under a home-wide `flock` on `locks/.mutex` (held for microseconds). It names
its owner and the processes working for it ("members"):

- `segone <command> --date D` owns it alone (owner `cli:<host>:<pid>`) and removes it on every way out: normal
  end, an error, Ctrl-C, SIGTERM (the CLI turns SIGTERM into an exception so that `finally` blocks run).
- An Airflow DAG run owns it as a whole (owner `airflow:<dag_id>:<run_id>`): every task of that run joins it, so
  mapped shard tasks of the same run, in parallel processes or on other hosts, never block each other, while a
  `segone run` of the same night, or another DAG run of it, is refused. The run keeps the lock between its tasks;
  the `publish` task releases it when it succeeds; a task that fails for good (no retry left) marks the run
  finished, and the lock is free as soon as none of its tasks is still running.

A holder is alive while one of its members is: on this host, its process exists (pid and start time, so a
recycled pid does not count); on another host, it has refreshed its heartbeat (every `locks.heartbeat_seconds`)
within `locks.stale_seconds`. An Airflow run between two tasks has no running member: it counts as alive for
`locks.airflow_idle_seconds` after its last task (retry delays included). A lock whose holder is not alive is
stale and is taken over, with a warning. `segone unlock --date D` clears a stale lock by hand; with `--force` it
clears a lock whose holder still looks alive (a host that died, for example): the operator's call.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pipelines.config import Paths, settings
from pipelines.errors import SegoneError

log = logging.getLogger(__name__)

DEFAULTS = {"heartbeat_seconds": 30, "stale_seconds": 180, "airflow_idle_seconds": 3600}


class LockHeld(SegoneError):
    """Another live run holds the lock of this night."""


def lock_settings() -> dict[str, float]:
    return {**DEFAULTS, **(settings().get("locks") or {})}


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), to tell a recycled pid apart; None if the
    process does not exist (or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()[19]


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start is None:
        return True
    now = process_start(int(pid))
    return now is None or now == start


@dataclass(frozen=True)
class Holder:
    """Who asks for the lock: `owner` is what makes two requests the same holder; `label` is how it is named."""

    kind: str  # "cli" or "airflow"
    owner: str
    label: str


def cli_holder(command: str) -> Holder:
    pid = os.getpid()
    return Holder("cli", f"cli:{this_host()}:{pid}:{process_start(pid)}", f"`segone {command}`")


def airflow_holder(dag_id: str, run_id: str) -> Holder:
    return Holder("airflow", f"airflow:{dag_id}:{run_id}", f"Airflow run {run_id} of {dag_id}")


def lock_path(paths: Paths, key: str) -> Path:
    return paths.locks / f"night-{key}.json"


@contextmanager
def _mutex(paths: Paths) -> Iterator[None]:
    paths.locks.mkdir(parents=True, exist_ok=True)
    with open(paths.locks / ".mutex", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("lock record %s is unreadable: treated as stale", path)
        return {"owner": "?", "label": "an unreadable lock record", "members": {}, "seen": 0, "kind": "cli"}


def _write(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{owner_tag()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _member_alive(member: dict[str, Any], now: float, cfg: dict[str, float]) -> bool:
    if member.get("host") == this_host():
        return pid_alive(member.get("pid"), member.get("start"))
    return now - float(member.get("seen", 0)) < float(cfg["stale_seconds"])


def is_alive(record: dict[str, Any], now: float | None = None) -> bool:
    """Whether the holder of a lock record is still at work (see the module's docstring)."""
    now = time.time() if now is None else now
    cfg = lock_settings()
    if any(_member_alive(m, now, cfg) for m in (record.get("members") or {}).values()):
        return True
    if record.get("kind") == "airflow" and not record.get("finished"):
        return now - float(record.get("seen", 0)) < float(cfg["airflow_idle_seconds"])
    return False


def describe(record: dict[str, Any], now: float | None = None) -> str:
    """The holder in one line: who, where, since when, last seen."""
    now = time.time() if now is None else now
    members = record.get("members") or {}
    running = ", ".join(f"{name} (pid {m.get('pid')} on {m.get('host')})" for name, m in sorted(members.items()))
    seen = now - float(record.get("seen", now))
    text = (f"{record.get('label', record.get('owner'))} since {_iso(float(record.get('since', now)))}, "
            f"last seen {seen:.0f} s ago")
    if running:
        text += f", running: {running}"
    elif record.get("kind") == "airflow":
        text += ", between tasks"
    if record.get("finished"):
        text += f", finished: {record['finished']}"
    return text


# -- holding ---------------------------------------------------------------------------------------------------

_held: dict[tuple[str, str], "Hold"] = {}
_held_lock = threading.Lock()


class Hold:
    """The lock of one night, held by this process for `holder` as `member` (a context manager).

    On exit `outcome` says what happens to the record: "release" (removed; the default of a CLI holder), "keep"
    (the holder keeps it; an Airflow task that is not the last), or "finished" (an Airflow run that failed for good:
    the lock is free once none of its tasks is running)."""

    def __init__(self, paths: Paths, key: str, holder: Holder, member: str, outcome: str = "release") -> None:
        self.paths, self.key, self.holder, self.member, self.outcome = paths, key, holder, member, outcome
        self.finished_reason = ""
        self.depth = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outer: Hold | None = None
        self.lost = False

    @property
    def _index(self) -> tuple[str, str]:
        return (str(self.paths.home), self.key)

    def __enter__(self) -> "Hold":
        with _held_lock:
            outer = _held.get(self._index)
            if outer is not None and outer.holder.owner == self.holder.owner:
                outer.depth += 1  # the same holder again in this process: the outer hold decides
                self._outer = outer
                return self
            self._outer = None
        acquire(self.paths, self.key, self.holder, self.member)
        self.depth = 1
        with _held_lock:
            _held[self._index] = self
        self._thread = threading.Thread(target=self._beat, name=f"segone-lock-{self.key}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self._outer is not None:
            self._outer.depth -= 1
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with _held_lock:
            _held.pop(self._index, None)
        leave(self.paths, self.key, self.holder, self.member, self.outcome, self.finished_reason)

    def _beat(self) -> None:
        every = float(lock_settings()["heartbeat_seconds"])
        while not self._stop.wait(every):
            try:
                if not heartbeat(self.paths, self.key, self.holder, self.member):
                    self.lost = True
                    log.error("the lock of %s was taken from %s (cleared by hand or judged stale)", self.key,
                              self.holder.label)
                    return
            except OSError as error:  # a heartbeat that cannot be written is retried at the next beat
                log.warning("lock heartbeat of %s failed: %s", self.key, error)


def _member_entry() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": process_start(pid), "host": this_host(), "seen": time.time()}


def acquire(paths: Paths, key: str, holder: Holder, member: str) -> dict[str, Any]:
    """Join or take the lock of night `key` for `holder`; raises LockHeld naming the live holder otherwise."""
    path = lock_path(paths, key)
    now = time.time()
    with _mutex(paths):
        record = _read(path)
        if record is not None and record.get("owner") != holder.owner:
            if is_alive(record, now):
                what = "the history load" if key == "history" else f"night {key}"
                raise LockHeld(f"{what} of {paths.home} is locked by {describe(record, now)}; wait for it to finish, "
                               f"or if it is gone run `segone unlock {_unlock_args(key)}`")
            log.warning("taking over the stale lock of %s from %s", key, describe(record, now))
            record = None
        if record is None:
            record = {"key": key, "owner": holder.owner, "kind": holder.kind, "label": holder.label, "since": now,
                      "members": {}}
        record["members"] = {name: m for name, m in (record.get("members") or {}).items()
                             if _member_alive(m, now, lock_settings())}
        record["members"][member] = _member_entry()
        record["seen"] = now
        record.pop("finished", None)  # a task of a run that had failed is being run again
        _write(path, record)
    return record


def heartbeat(paths: Paths, key: str, holder: Holder, member: str) -> bool:
    """Refresh this member's `seen`; False when the lock is no longer this holder's."""
    path = lock_path(paths, key)
    with _mutex(paths):
        record = _read(path)
        if record is None or record.get("owner") != holder.owner:
            return False
        now = time.time()
        record.setdefault("members", {}).setdefault(member, _member_entry())["seen"] = now
        record["seen"] = now
        _write(path, record)
    return True


def leave(paths: Paths, key: str, holder: Holder, member: str, outcome: str = "release", reason: str = "") -> None:
    """This member is done: remove the record ("release"), keep it for the holder ("keep"), or mark the holder
    finished ("finished": free once no member runs)."""
    path = lock_path(paths, key)
    with _mutex(paths):
        record = _read(path)
        if record is None or record.get("owner") != holder.owner:
            return
        if outcome == "release":
            path.unlink(missing_ok=True)
            return
        (record.get("members") or {}).pop(member, None)
        record["seen"] = time.time()
        if outcome == "finished":
            record["finished"] = reason or "failed"
        _write(path, record)


def _unlock_args(key: str) -> str:
    return "--history" if key == "history" else f"--date {key}"


def unlock(paths: Paths, key: str, force: bool = False) -> str:
    """`segone unlock`: clear the lock of a night whose holder is gone (any holder with force)."""
    path = lock_path(paths, key)
    with _mutex(paths):
        record = _read(path)
        if record is None:
            return f"{key}: not locked"
        if is_alive(record) and not force:
            raise LockHeld(f"{key} is locked by {describe(record)}, which looks alive; if you know it is gone "
                           f"(a host that died), run `segone unlock {_unlock_args(key)} --force`")
        path.unlink(missing_ok=True)
    return f"{key}: lock of {describe(record)} cleared"


def status(paths: Paths) -> list[str]:
    """Every lock of the home in one line each (for `segone unlock` without arguments)."""
    lines = []
    for path in sorted(paths.locks.glob("night-*.json")) if paths.locks.exists() else []:
        record = _read(path)
        if record is not None:
            state = "alive" if is_alive(record) else "stale"
            lines.append(f"{record.get('key', path.stem)}: {state}: {describe(record)}")
    return lines or ["no night is locked"]


def unlock_command(paths: Paths, day=None, history: bool = False, force: bool = False) -> str:
    if day is None and not history:
        return "\n".join(status(paths))
    return unlock(paths, "history" if history else day.isoformat(), force=force)


# -- owner tags of temporary files and folders ----------------------------------------------------------------

FOREIGN_AFTER_SECONDS = 86_400  # a temporary folder of another host older than this is left over (runs last < 6 h)


def owner_tag() -> str:
    """`<pid>@<host>`: put in the name of every staging folder and temporary file, so that the next run can tell
    the leftovers of a killed process from the work of a live one."""
    return f"{os.getpid()}@{this_host()}"


def tag_in_use(tag: str | None, path: Path) -> bool:
    """Whether the process that made `path` (its owner tag) may still be using it: on this host, its pid exists; on
    another host, or without a readable tag, the folder is younger than FOREIGN_AFTER_SECONDS."""
    pid, _, host = (tag or "").partition("@")
    if pid.isdigit() and host == this_host():
        return int(pid) == os.getpid() or pid_alive(int(pid))
    try:
        return time.time() - path.lstat().st_mtime < FOREIGN_AFTER_SECONDS
    except FileNotFoundError:
        return False


@contextmanager
def publish_mutex(paths: Paths, wait: bool = True) -> Iterator[bool]:
    """Publishing is one at a time per home (two nights may run at once, their publishes may not). Yields whether
    the mutex is held (always with wait; False when it is busy and wait is False)."""
    paths.locks.mkdir(parents=True, exist_ok=True)
    with open(paths.locks / ".publish", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
