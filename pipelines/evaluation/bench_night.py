"""`segone bench night`: the whole night (`segone run --date D`, every stage through publish) on a lake of N
customers with a year of history, against the one-pass floor of the same lake, in the same run.

1. Base bank (set-up, cached): `base` customers (10,000 by default) with `days` of history (365) ending the day
   before D, seed 42, simulated, loaded (`segone load-history`) and trained (`segone train`), each step by the real
   CLI in a fresh process: `$SEGONE_HOME/bench/night/base-c<base>-d<days>-s<seed>-<version>/`.
2. Tiled lake (cached): N customers made of ceil(N / base) copies of the base bank with renamed ids (copy 0 keeps
   the base's ids, copy k appends `.t<k>`; the last copy takes the first customers by id only, so that there are
   exactly N). What is tiled is what a night reads: every silver partition of the history load (postings and
   balances re-bucketed by md5 of the NEW customer_id, the D-1 snapshots, consent, CRM-response and declared
   life-event events) and the landing files of D (CSV and open-banking JSON). Bronze history and the history's
   quarantine are not copied: no stage of a night reads them. Its feature store as of D-1 is built by
   `segone features rebuild` (again when the store's definition changed), so that the night merges D into the
   state of the night before, as every night does. Cached in
   `$SEGONE_HOME/bench/night/lake-n<N>-c<base>-d<days>-s<seed>-<version>/`; `<version>` hashes this tiler's
   format and the code and config that shape the lake (simulator, ingest, conform, silver SQL, landing contract,
   silver schemas, bucket count), so a change there builds a new lake.
3. The night: a run folder hard-links the tiled lake (no stage rewrites a file in place: every write lands in a
   new file that is swapped in) and gets a copy of the base bank's promoted models, reused when they load with
   today's code (the features' schema matches), else the base bank is retrained first. `segone run --date D` runs
   in a fresh process at the bench's own priority; the peak memory is that of the process tree (sampled), its
   wall and CPU seconds per stage come from runs/D/night.json (written by `stages.run_night`).
4. The floor: in a fresh process, one DuckDB pass over every silver posting of the lake (the year of history and
   D), grouping by customer (count, sum of amounts, last booking). night / floor is the ratio of the issue.
The load average of the machine is recorded before and after each night: the machine is shared. CPU seconds (of
the night's process, its threads and children; of the floor's process) are recorded beside the wall seconds: on a
machine whose load exceeds its cores, they are the steadier measure of the work, and `cpu_ratio` compares them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.config import REPO_ROOT, Paths, load_config

END = date(2026, 11, 20)
SEED = 42
DAYS = 365
BASE_CUSTOMERS = 10_000
# Bump when the tiled lake's layout or the renaming rules change (cached lakes of another format are not reused).
FORMAT_VERSION = 2
# Rows of a fact table written per COPY (several copies of the base at once): about 2M rows per bucket file.
FACT_CHUNK_ROWS = 32_000_000
# Inputs whose change changes a simulated, loaded lake.
VERSIONED_FILES = ("pipelines/sources/simulate/*.py", "pipelines/ingest/*.py", "pipelines/conform.py", "sql/silver_*.sql",
                   "config/landing.yaml")
# Keys of the open-banking JSON whose values identify a customer, an account or a transaction: renamed per copy.
JSON_ID = re.compile(r'("(?:customer_id|consent_id|AccountId|TransactionId)"\s*:\s*")((?:[^"\\]|\\.)*)(")')
READY = "READY.json"


# --- ids --------------------------------------------------------------------------------------------------------

def suffix(copy: int) -> str:
    """What copy k appends to every id: nothing for copy 0 (the base bank itself), `.t<k>` after."""
    return "" if copy == 0 else f".t{copy}"


SUFFIX_SQL = "(case when copy = 0 then '' else '.t' || copy end)"


def row_ids() -> set[str]:
    """The id columns renamed per copy (besides transaction_id, which keeps its open-banking shape): the customer,
    account and counterparty ids, and every id that is the first column of a key of a silver table
    (config/tables.yaml) or a landing file (config/landing.yaml), e.g. recommendation_id or message_id, so that no
    two copies share a key. Ids that are unique only within an account (a standing order's) keep their value: the
    renamed account_id beside them in the key tells the copies apart, as in the open-banking JSON, whose standing
    orders keep their ids."""
    from pipelines.contract import landing_contract
    from pipelines.schemas import tables

    keys = [list(t.key) for t in tables("silver")] + [list(c.key) for c in landing_contract().files.values()]
    ids = {"customer_id", "account_id", "counterparty_id"} | {k[0] for k in keys if k and k[0].endswith("_id")}
    return ids - {"transaction_id"}


def renamed_columns(columns: list[str]) -> dict[str, str]:
    """SQL expressions (over the row and its `copy`) that rename the id columns of a silver table or a landing file.

    An open-banking transaction id is `ob:<provider>:<AccountId>:<TransactionId>` and its account
    `ob:<provider>:<AccountId>`: appending the suffix to the account id and to the transaction part gives the ids
    the ingest makes from the renamed AccountId and TransactionId of the copied JSON. Other ids (core postings and
    accounts, customers, counterparties, recommendations) get the suffix at the end. A counterparty that is one of
    the bank's accounts thus stays that account in its copy.
    """
    out = {}
    for column in sorted(row_ids()):
        if column in columns:
            out[column] = f"{column} || {SUFFIX_SQL}"
    if "transaction_id" in columns:
        if "account_id" in columns:
            out["transaction_id"] = (
                f"case when starts_with(transaction_id, 'ob:') and starts_with(transaction_id, account_id || ':') "
                f"then account_id || {SUFFIX_SQL} || ':' || substr(transaction_id, length(account_id) + 2) "
                f"|| {SUFFIX_SQL} else transaction_id || {SUFFIX_SQL} end")
        else:
            out["transaction_id"] = f"transaction_id || {SUFFIX_SQL}"
    return out


def rename_json(text: str, copy: int) -> str:
    """An open-banking envelope with customer_id, consent_id, every AccountId and TransactionId renamed (byte for
    byte the same otherwise)."""
    if copy == 0:
        return text
    tail = suffix(copy)
    return JSON_ID.sub(lambda m: m.group(1) + m.group(2) + tail + m.group(3), text)


# --- versions and caches -----------------------------------------------------------------------------------------

def lake_version() -> str:
    """A short hash of the tiler's format and of what shapes a loaded lake: a cached lake of another version is
    rebuilt, never reused."""
    from pipelines.lake import n_buckets

    digest = hashlib.sha256(f"format {FORMAT_VERSION}; buckets {n_buckets()}".encode())
    for pattern in VERSIONED_FILES:
        for path in sorted(REPO_ROOT.glob(pattern)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(json.dumps(load_config("tables")["silver"], sort_keys=True).encode())
    return digest.hexdigest()[:10]


def bench_root(paths: Paths) -> Path:
    return paths.home / "bench" / "night"


def _cli(home: Path, *args: str, log: Path | None = None) -> float:
    """One `segone` command in a fresh process on data root `home`; its seconds. Raises with the end of its
    output when it fails."""
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env)
    if log is not None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ segone {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"segone {' '.join(args)} failed on {home}:\n{(done.stdout + done.stderr)[-3000:]}")
    return round(time.perf_counter() - started, 1)


def _ready(folder: Path) -> dict[str, Any] | None:
    marker = folder / READY
    return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None


def _building(root: Path, name: str) -> Path:
    """A fresh folder to build a cache entry in; renamed to its final name when complete."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder = root / f".{name}.building-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _finish(folder: Path, final: Path, info: dict[str, Any]) -> None:
    (folder / READY).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.rename(folder, final)


# --- 1. the base bank ----------------------------------------------------------------------------------------------

def _reused(final: Path, version: str | None) -> None:
    """A lake of an earlier version is only ever reused, never built under that version's name."""
    if version is not None and version != lake_version() and _ready(final) is None:
        raise SystemExit(f"error: --lake-version {version}: no complete cached lake at {final}")


def ensure_base(root: Path, customers: int, days: int, seed: int = SEED, end: date = END,
                version: str | None = None) -> tuple[Path, dict]:
    """The simulated, loaded and trained base bank (built once, then reused); `version` names an earlier cached
    one to reuse (default: today's `lake_version()`)."""
    name = f"base-c{customers}-d{days}-s{seed}-{version or lake_version()}"
    final = root / name
    _reused(final, version)
    info = _ready(final)
    if info is not None:
        return final, info | {"cached": True}
    home = _building(root, name)
    log = home / "setup.log"
    info = {"customers": customers, "days": days, "seed": seed, "end_date": end.isoformat(), "seconds": {}}
    info["seconds"]["simulate"] = _cli(home, "simulate", "--customers", str(customers), "--days", str(days),
                                       "--end-date", end.isoformat(), "--seed", str(seed), log=log)
    info["seconds"]["load_history"] = _cli(home, "load-history", log=log)
    info["seconds"]["train"] = _cli(home, "train", log=log)
    _finish(home, final, info)
    return final, info | {"cached": False}


def models_load(home: Path) -> str | None:
    """None when the promoted models of `home` load with today's code (the features' schema matches), else why
    not."""
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    code = ("from pipelines.config import Paths; from pipelines import forecast, life_events; "
            "p = Paths.from_env(); forecast.load_engine(p); life_events.load_model(p)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]


def ensure_models(base: Path) -> dict[str, Any]:
    """Reuse the base bank's models when they load with today's code, else retrain them on the base bank."""
    problem = models_load(base)
    outcome: dict[str, Any] = {"reused": problem is None}
    if problem is not None:
        outcome["retrained_because"] = problem
        outcome["train_seconds"] = _cli(base, "train", log=base / "setup.log")
    for family in ("cash_forecast", "life_events"):
        pointer = base / "models" / family / "promoted.json"
        outcome[family] = json.loads(pointer.read_text())["version"] if pointer.exists() else None
    return outcome


# --- 2. the tiled lake -------------------------------------------------------------------------------------------

def ensure_tiled(root: Path, base: Path, n: int, base_customers: int, days: int, seed: int = SEED,
                 end: date = END, version: str | None = None) -> tuple[Path, dict]:
    """The tiled lake of n customers (built once from the base bank, then reused), with its feature store as of
    D-1 (`ensure_store`); `version` as for `ensure_base`."""
    name = f"lake-n{n}-c{base_customers}-d{days}-s{seed}-{version or lake_version()}"
    final = root / name
    _reused(final, version)
    info = _ready(final)
    if info is not None:
        return final, info | {"cached": True, "store": ensure_store(final, end)}
    home = _building(root, name)
    started = time.perf_counter()
    info = tile_bank(Paths(base), Paths(home), n, end)
    info["seconds"] = round(time.perf_counter() - started, 1)
    _finish(home, final, info)
    return final, info | {"cached": False, "store": ensure_store(final, end)}


STORE_MARKER = "STORE.json"


def ensure_store(tiled: Path, end: date) -> dict[str, Any]:
    """The feature store of the tiled lake as of D-1 (the state a night starts from: docs/feature_store.md), built
    by `segone features rebuild` (set-up, timed apart) and rebuilt when the store's definition changed since, so
    that the measured night merges D into it as every night does, rather than rebuilding from silver."""
    from pipelines.store import definition_fingerprint

    definition = definition_fingerprint()
    marker = tiled / STORE_MARKER
    done = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    if done.get("definition") == definition:
        return done | {"cached": True}
    seconds = _cli(tiled, "features", "rebuild", "--date", (end - timedelta(days=1)).isoformat())
    done = {"definition": definition, "as_of": (end - timedelta(days=1)).isoformat(), "seconds": seconds}
    marker.write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
    return done | {"cached": False}


def _ranks_sql(base: Paths, day: str) -> str:
    """Customers of the base bank numbered 0.. in id order: those of the latest silver snapshot and any new on D."""
    snapshot = _latest_snapshot(base, "customers")
    parts = [f"select customer_id from read_parquet('{snapshot}/*.parquet')"]
    new = base.landing_day(day) / "customers.csv"
    if new.exists():
        parts.append(f"select customer_id from {_csv(new)}")
    return (f"select customer_id, cast(row_number() over (order by customer_id) - 1 as bigint) as rank "
            f"from ({' union '.join(parts)}) where customer_id is not null")


def _latest_snapshot(base: Paths, table: str) -> Path:
    folder = base.table("silver", table)
    snapshots = sorted(p for p in folder.glob("as_of=*") if any(p.glob("*.parquet")))
    if not snapshots:
        raise RuntimeError(f"the base bank has no silver {table} snapshot under {folder}")
    return snapshots[-1]


def _csv(path: Path) -> str:
    return (f"read_csv('{path}', header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
            f"auto_detect = true)")


def tile_bank(base: Paths, out: Paths, n: int, day: date) -> dict[str, Any]:
    """Write the tiled lake of n customers from the base bank into `out` (silver, landing/D)."""
    from pipelines import lake

    d = day.isoformat()
    con = lake.connect()
    con.execute(f"create temp table ranks as {_ranks_sql(base, d)}")
    n_base = int(con.execute("select count(*) from ranks").fetchall()[0][0])
    copies = -(-n // n_base)
    # Which copies of a base customer exist: copy k of the customer ranked r when k * n_base + r < n.
    con.execute(f"create temp table copies as select range as copy from range({copies})")
    accounts = _latest_snapshot(base, "accounts")
    owners = [f"select account_id, customer_id from read_parquet('{accounts}/*.parquet')"]
    if (base.landing_day(d) / "accounts.csv").exists():
        owners.append(f"select account_id, customer_id from {_csv(base.landing_day(d) / 'accounts.csv')}")
    con.execute(f"create temp table owners as select account_id, any_value(customer_id) as customer_id "
                f"from ({' union all '.join(owners)}) group by account_id")
    info: dict[str, Any] = {"customers": n, "base_customers": n_base, "copies": copies, "as_of": d, "silver": {},
                            "landing": {}}
    try:
        for table_dir in sorted(p for p in base.layer("silver").iterdir() if p.is_dir()):
            for partition in sorted(p for p in table_dir.iterdir() if p.is_dir() and "=" in p.name):
                rows = _tile_partition(con, partition, out.table("silver", table_dir.name) / partition.name,
                                       n, n_base, copies)
                info["silver"][f"{table_dir.name}/{partition.name}"] = rows
        info["landing"] = _tile_landing(con, base.landing_day(d), out.landing_day(d), n, n_base, copies)
    finally:
        con.close()
    return info


def _copies_of(table: str, columns: list[str], n: int, n_base: int) -> str:
    """`table` joined with the copies each of its rows has (rows of an unknown customer: every copy)."""
    if "customer_id" in columns:
        owner = f"(select t.*, r.rank from {table} as t left join ranks as r using (customer_id))"
    elif "account_id" in columns:
        owner = (f"(select t.*, r.rank from {table} as t left join owners as o using (account_id) "
                 f"left join ranks as r on r.customer_id = o.customer_id)")
    else:  # not about a customer (exchange rates): once
        return f"(select *, 0 as copy from {table})"
    return f"(select * exclude (rank) from {owner} as t join copies as c on c.copy * {n_base} + coalesce(t.rank, 0) < {n})"


def _renamed_select(source: str, columns: list[str], extra: str = "") -> str:
    renames = renamed_columns(columns)
    replace = f" replace ({', '.join(f'{expr} as {col}' for col, expr in renames.items())})" if renames else ""
    return f"select * exclude (copy){replace}{extra} from {source}"


def _tile_partition(con, partition: Path, target: Path, n: int, n_base: int, copies: int) -> int:
    """One silver partition of the base (load_date=... or as_of=...), tiled into `target`; its rows."""
    from pipelines import lake
    from pipelines.schemas import table_schema

    files = sorted(partition.rglob("*.parquet"))
    if not files:
        return 0
    table = partition.parent.name
    bucketed = any(part.startswith("bucket=") for part in files[0].relative_to(partition).parts)
    scan = f"read_parquet('{partition}/{'*/' if bucketed else ''}*.parquet', hive_partitioning = false)"
    columns = [row[0] for row in con.execute(f"describe select * from {scan}").fetchall()]
    key = ", ".join(c for c in table_schema("silver", table).key if c in columns) or "1"
    target.mkdir(parents=True, exist_ok=True)
    options = lake.parquet_options()
    if not bucketed:
        query = _renamed_select(_copies_of(scan, columns, n, n_base), columns)
        if "bucket" in columns:
            query = f"select * replace ({lake.bucket_sql('customer_id')} as bucket) from ({query})"
        return int(con.execute(f"copy ({query} order by {key}) to '{target}/part-0.parquet' ({options})"
                               ).fetchall()[0][0])
    # Postings and balances: as conform writes them, by bucket and in no particular order, a few copies per COPY.
    base_rows = int(con.execute(f"select count(*) from {scan}").fetchall()[0][0])
    per_chunk = max(1, FACT_CHUNK_ROWS // max(base_rows, 1))
    con.execute(f"create or replace temp view base_part as select * from {scan}")
    rows = 0
    for first in range(0, copies, per_chunk):
        con.execute(f"create or replace temp table copies_chunk as select * from copies "
                    f"where copy >= {first} and copy < {first + per_chunk}")
        source = _copies_of("base_part", columns, n, n_base).replace("copies as c", "copies_chunk as c")
        query = f"select *, {lake.bucket_sql('customer_id')} as bucket from ({_renamed_select(source, columns)})"
        with lake.insertion_order(con, keep=False):
            rows += int(con.execute(
                f"copy ({query}) to '{target}' ({options}, partition_by (bucket), overwrite_or_ignore true, "
                f"filename_pattern 'part-{first}-{{i}}')").fetchall()[0][0])
    return rows


def _tile_landing(con, source: Path, target: Path, n: int, n_base: int, copies: int) -> dict[str, int]:
    """The landing files of D: each CSV as one file of all copies (ids renamed), each open-banking envelope once
    per copy of its customer, and upstream's completion marker (config/landing.yaml) last, as upstream writes it."""
    from pipelines.contract import classify_landing_file

    marker = load_config("landing")["completion_marker"]
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for path in sorted(p for p in source.iterdir() if p.is_file() and p.name != marker):
        kind = classify_landing_file(path)
        if kind is None or not path.name.endswith(".csv"):
            raise RuntimeError(f"the base bank's landing file {path} is not a plain CSV landing file")
        columns = [row[0] for row in con.execute(f"describe select * from {_csv(path)}").fetchall()]
        query = _renamed_select(_copies_of(_csv(path), columns, n, n_base), columns)
        written[path.name] = int(con.execute(
            f"copy ({query}) to '{target / path.name}' (format csv, header true)").fetchall()[0][0])
    envelopes = source / "openbanking"
    if envelopes.is_dir():
        ranks = dict(con.execute("select customer_id, rank from ranks").fetchall())
        out = target / "openbanking"
        out.mkdir(exist_ok=True)
        count = 0
        for path in sorted(envelopes.glob("*.json")):
            text = path.read_text(encoding="utf-8")
            customer = json.loads(text).get("customer_id")
            rank = ranks.get(customer, 0)
            for copy in range(copies):
                if copy * n_base + rank >= n:
                    break
                name = path.name
                if copy and customer and name.startswith(f"{customer}-"):
                    name = f"{customer}{suffix(copy)}{name[len(customer):]}"
                elif copy:
                    name = f"{path.stem}{suffix(copy)}.json"
                (out / name).write_text(rename_json(text, copy), encoding="utf-8")
                count += 1
        written["openbanking"] = count
    if (source / marker).is_file():
        shutil.copyfile(source / marker, target / marker)
    return written


# --- 3. the night, 4. the floor ----------------------------------------------------------------------------------

def _link_tree(source: Path, target: Path) -> None:
    """`target` as a tree of hard links to `source`'s files (no data copied); READY.json left out."""
    for folder, dirs, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if rel == Path(".") and name == READY:
                continue
            os.link(Path(folder) / name, target / rel / name)


class TreeMemory:
    """The peak resident memory of a process and all its descendants (sampled every `interval` seconds), and the
    peak of the process itself (its VmHWM, read at the last sample before it ends)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.peak_tree = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            main = psutil.Process(self.pid)
            processes = [main, *main.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        self.peak_tree = max(self.peak_tree, total)
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_main = max(self.peak_main, int(line.split()[1]) * 1024)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> tuple[float, float]:
        """(peak of the tree, peak of the process itself) in MB."""
        self._stop.set()
        self._thread.join()
        return round(max(self.peak_tree, self.peak_main) / 2**20, 1), round(self.peak_main / 2**20, 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_night(home: Path, day: date) -> dict[str, Any]:
    """`segone run --date D` on `home` in a fresh process: seconds per stage (runs/D/night.json), the command's
    wall seconds and the peak memory of its process tree."""
    import resource

    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    load_before = _load()
    started = time.perf_counter()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(home / "night.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--date", day.isoformat()],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        memory = TreeMemory(process.pid)
        # VmHWM vanishes with the process: the sampler reads it while the process lives; wait() reaps it after.
        returncode = process.wait()
        peak_tree, peak_main = memory.stop()
    command_seconds = round(time.perf_counter() - started, 1)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    command_cpu = (children_after.ru_utime - children_before.ru_utime) + \
        (children_after.ru_stime - children_before.ru_stime)
    if returncode != 0:
        tail = (home / "night.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"segone run --date {day} failed on {home} (exit {returncode}):\n{tail}")
    from pipelines.stages import NIGHT

    night = json.loads((home / "runs" / day.isoformat() / "night.json").read_text(encoding="utf-8"))
    stages = {name: night["stage_seconds"][name] for name, _ in NIGHT if name in night["stage_seconds"]}
    stage_cpu = {name: night["stage_cpu_seconds"][name] for name in stages}
    return {"night_seconds": night["seconds"], "stages": stages, "night_cpu_seconds": night["cpu_seconds"],
            "stages_cpu": stage_cpu, "command_seconds": command_seconds,
            "command_cpu_seconds": round(command_cpu, 1), "peak_rss_mb": peak_tree, "peak_rss_main_mb": peak_main,
            "load_average": {"before": load_before, "after": _load()}}


def floor_pass(home: Path) -> dict[str, Any]:
    """The floor, in this process: one DuckDB pass reading every silver posting of the lake, grouped by customer."""
    from pipelines import lake

    paths = Paths(home)
    scan = lake.scan_sql(paths, "silver", "transactions")
    from pipelines.stages import cpu_seconds

    con = lake.connect()
    try:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        # The outer query uses every aggregate: DuckDB drops an aggregate nobody reads (and then the columns it
        # reads), which would leave a pass over customer_id alone.
        customers, postings, total, last = con.execute(
            f"select count(*), sum(n), sum(total), max(last_booked) from (select customer_id, count(*) as n, "
            f"sum(amount) as total, max(booked_at) as last_booked from {scan} group by customer_id)").fetchall()[0]
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    finally:
        con.close()
    return {"floor_seconds": round(seconds, 3), "floor_cpu_seconds": round(cpu, 3), "floor_customers": int(customers),
            "postings": int(postings), "floor_amount_total": str(total), "floor_last_booked": str(last)}


def _floor_in_child(home: Path) -> dict[str, Any]:
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "pipelines.evaluation.bench_night", "floor", str(home)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the floor pass failed on {home}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _disk_gb(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return round(total / 1e9, 2)


def bench_night(paths: Paths, sizes: list[int], days: int = DAYS, base_customers: int = BASE_CUSTOMERS,
                seed: int = SEED, end: date = END, version: str | None = None) -> list[dict[str, Any]]:
    """One row per size N: the whole night of D on a tiled lake of N customers, and its floor. `version` reuses
    cached lakes of an earlier `lake_version()` (built by earlier ingest code: each row says so)."""
    root = bench_root(paths)
    base, base_info = ensure_base(root, base_customers, days, seed, end, version)
    models = ensure_models(base)
    rows = []
    for n in sizes:
        tiled, tiled_info = ensure_tiled(root, base, n, base_customers, days, seed, end, version)
        run_home = root / f"run-n{n}"
        if run_home.exists():
            shutil.rmtree(run_home)
        _link_tree(tiled, run_home)
        shutil.copytree(base / "models", run_home / "models")
        night = run_night(run_home, end)
        floor = _floor_in_child(run_home)
        rows.append({
            "customers": n, "days": days, "as_of": end.isoformat(), "night_seconds": night["night_seconds"],
            "floor_seconds": floor["floor_seconds"],
            "ratio": round(night["night_seconds"] / floor["floor_seconds"], 1) if floor["floor_seconds"] else None,
            "peak_rss_mb": night["peak_rss_mb"], "stages": night["stages"],
            "night_cpu_seconds": night["night_cpu_seconds"], "floor_cpu_seconds": floor["floor_cpu_seconds"],
            "cpu_ratio": (round(night["night_cpu_seconds"] / floor["floor_cpu_seconds"], 1)
                          if floor["floor_cpu_seconds"] else None),
            "stages_cpu": night["stages_cpu"], "command_cpu_seconds": night["command_cpu_seconds"],
            "command_seconds": night["command_seconds"], "peak_rss_main_mb": night["peak_rss_main_mb"],
            "postings": floor["postings"], "floor_customers": floor["floor_customers"],
            "floor_amount_total": floor["floor_amount_total"], "floor_last_booked": floor["floor_last_booked"],
            "load_average": night["load_average"], "cpus": os.cpu_count(),
            "base": {"customers": base_customers, "seed": seed, "cached": base_info["cached"],
                     "setup_seconds": base_info.get("seconds")},
            "models": models,
            "lake": {"folder": str(tiled), "version": version or lake_version(), "code_version": lake_version(),
                     "copies": tiled_info["copies"],
                     "cached": tiled_info["cached"], "build_seconds": tiled_info.get("seconds"),
                     "store": tiled_info.get("store"),
                     "silver_gb": _disk_gb(tiled / "lake")},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return rows


def format_night_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'customers':>10} {'postings':>12} {'night s':>9} {'floor s':>8} {'night/floor':>11} "
              f"{'night cpu s':>11} {'floor cpu s':>11} {'cpu ratio':>9} {'peak MB':>8} {'ms/cust':>8} "
              f"{'load 1m':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['customers']:>10,} {r['postings']:>12,} {r['night_seconds']:>9.1f} "
                     f"{r['floor_seconds']:>8.2f} {(r['ratio'] or 0):>10.0f}x {r['night_cpu_seconds']:>11.1f} "
                     f"{r['floor_cpu_seconds']:>11.2f} {(r['cpu_ratio'] or 0):>8.0f}x {r['peak_rss_mb']:>8.0f} "
                     f"{1000 * r['night_seconds'] / r['customers']:>8.3f} {r['load_average']['before'][0]:>8.1f}")
    lines.append("")
    for r in rows:
        stages = ", ".join(f"{name} {seconds:.1f} ({r['stages_cpu'][name]:.1f} cpu)"
                           for name, seconds in r["stages"].items())
        lines.append(f"{r['customers']:,} customers, wall (and CPU) seconds by stage: {stages}")
    for r in rows:
        model = "reused from the base bank" if r["models"]["reused"] else \
            f"retrained on the base bank ({r['models'].get('retrained_because')})"
        lines.append(f"{r['customers']:,} customers: {r['lake']['copies']} copies of a {r['base']['customers']:,}-"
                     f"customer base bank ({r['days']} days, seed {r['base']['seed']}); models {model}; "
                     f"load average before/after {r['load_average']['before']} / {r['load_average']['after']} "
                     f"on {r['cpus']} CPUs")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        print(json.dumps(floor_pass(Path(sys.argv[2]))))
    else:
        raise SystemExit(f"unknown method {sys.argv[1]!r}")
