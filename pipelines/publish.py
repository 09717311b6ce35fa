"""Publish: the one moment a night (or the history load) becomes visible, every table, the export and the report
at once. docs/architecture.md ("Only finished nights are visible") explains the model; in short:

- The stages write the live lake (`lake/`), which analysts never read: a crashed or gated night leaves its
  partitions there, unseen.
- Publish snapshots the published tables into a new immutable *generation*, `published/g<seq>-<id>/`: one link
  per table and partition (`<tree>/<layer>/<table>/<key>=<value>`) to a published partition folder under
  `published/parts/<g>/<tree>/...`, which the publish of generation g wrote once and nothing changes afterwards.
  The partitions of the loads being published (`as_of=D`, `load_date=D`; for the history load
  `load_date=history` and its `as_of`) are hard-linked from the live lake into the new generation's
  `parts/<generation>/`; every other link is the previous generation's. Lake writes never modify a file in place
  (they write new files and swap folders with a rename), so a hard link keeps the version that was published
  however the live lake changes afterwards, and a publish creates folders and links files only for what it
  publishes, not for every night published before. `general/` holds what every analyst may read (restricted
  columns of `config/tables.yaml` rewritten out of the Parquet files), `restricted/` the full files of the tables
  that have restricted columns (docs/access.md).
- The two warehouse files (views over the generation), the CRM export and the nightly report are built beside
  their final paths from the generation, then one atomic write of `published/state.json` commits the publish (it
  names the new generation and lists the staged files); each staged file is then swapped in (rename). A process
  killed after the commit leaves a record that the next publish, run or `segone` night command completes
  (`recover`: every swap is idempotent, checked by content hash); killed before it, nothing is visible and the
  leftovers are removed by the next run (`housekeeping`).
- Generations older than the previous one are removed after each publish, then the partition folders no
  generation left links to: an analyst who opened the warehouse before the publish keeps reading the previous
  generation.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pipelines import lake
from pipelines.config import Paths, settings
from pipelines.errors import GateFailed, SegoneError
from pipelines.locks import owner_tag, publish_mutex, tag_in_use, this_host
from pipelines.runs import checkpoint, read_run_metrics, write_run_metrics
from pipelines.schemas import TableSchema, tables

log = logging.getLogger(__name__)

HISTORY = "history"
PARTS = "parts"  # published/parts/: the published partitions (parts_dir)
# The gates whose verdicts must be present and passed before the history load is published (a night's are
# pipelines.stages.GATES).
HISTORY_GATES = ("validate", "validate_silver")
DEFAULTS = {"keep_generations": 2, "restricted_group": None}


def publish_settings() -> dict[str, Any]:
    return {**DEFAULTS, **(settings().get("publish") or {})}


def _tables() -> list[TableSchema]:
    """The published tables: every silver and gold table but those config/tables.yaml keeps out of the warehouse
    (`warehouse: false`: they stay in the live lake, read only by their stages)."""
    return [t for t in (*tables("silver"), *tables("gold")) if t.warehouse]


# --- the published state ----------------------------------------------------------------------------------------

def state_path(paths: Paths) -> Path:
    return paths.published / "state.json"


def read_state(paths: Paths) -> dict[str, Any] | None:
    path = state_path(paths)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _write_state(paths: Paths, state: dict[str, Any]) -> None:
    """Replace published/state.json atomically (written, flushed to disk, renamed)."""
    path = state_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".state.json.{owner_tag()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(state, indent=2, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def published_loads(paths: Paths) -> list[str]:
    """The loads (nights as YYYY-MM-DD, and 'history') visible in the current generation."""
    state = read_state(paths)
    return list(state["loads"]) if state else []


@dataclass(frozen=True)
class PublishedPaths(Paths):
    """Paths whose lake tables are those of a published generation (read-only: never write through it).

    `full`: restricted tables from `restricted/` (every column), the others from `general/`; otherwise every table
    from `general/` (what warehouse.duckdb shows). `runs_dir`: the run metrics to read (the published snapshots,
    `published/runs/<load>/`, or the home's while the load is being published). Reports and exports are the
    home's."""

    generation: Path = Path("/nonexistent")
    full: bool = True
    restricted_tables: frozenset = frozenset()
    runs_dir: Path | None = None

    def table(self, layer: str, table: str) -> Path:
        which = "restricted" if self.full and (layer, table) in self.restricted_tables else "general"
        return self.generation / which / layer / table

    @property
    def runs(self) -> Path:
        return self.runs_dir if self.runs_dir is not None else self.home / "runs"


def generation_paths(paths: Paths, generation: str, full: bool = True,
                     restricted_tables: frozenset | None = None, runs_dir: Path | None = None) -> PublishedPaths:
    if restricted_tables is None:
        state = read_state(paths) or {}
        restricted_tables = frozenset(tuple(k.split(".", 1)) for k in (state.get("restricted") or {}))
    return PublishedPaths(home=paths.home, generation=paths.published / generation, full=full,
                          restricted_tables=restricted_tables, runs_dir=runs_dir)


def published_runs(paths: Paths) -> Path:
    """Where the run metrics of each published load are kept as they were when it was published
    (`published/runs/<load>/`): a later attempt at the night that did not publish rewrites runs/<load>/, not these."""
    return paths.published / "runs"


def current_paths(paths: Paths, full: bool = True) -> PublishedPaths | None:
    """The current published generation (and the published run metrics) as Paths, or None before the first
    publish."""
    state = read_state(paths)
    return generation_paths(paths, state["generation"], full, runs_dir=published_runs(paths)) if state else None


# --- building a generation ----------------------------------------------------------------------------------------

def _restriction(schema: TableSchema) -> dict[str, Any] | None:
    if not schema.is_restricted:
        return None
    return {"columns": list(schema.restricted_columns), "rows": schema.restricted_rows}


def _partitions(root: Path, key: str | None) -> dict[str, Path]:
    """The top-level partition folders of a table (`key=value` -> folder), or the table itself when unpartitioned.
    A published generation's partitions are links into `published/parts/`: one whose folder is gone is an error."""
    if not root.is_dir():
        return {}
    if key is None:
        return {"": root} if lake.parquet_files(root) else {}
    found = {}
    for p in root.iterdir():
        if not p.name.startswith(f"{key}="):
            continue
        if p.is_symlink() and not p.exists():
            raise SegoneError(f"the published partition {p} links to {os.readlink(p)}, which is gone; to rebuild the "
                              f"published state from the live lake as it is, remove the published/state.json of its "
                              f"home and publish again")
        if p.is_dir():
            found[p.name.split("=", 1)[1]] = p
    return found


def _link_tree(src: Path, dst: Path) -> int:
    """Hard-link every file under `src` into the same place under `dst` (copy when a link is not possible, e.g.
    another file system); returns the number of files."""
    n = 0
    for folder, _, files in os.walk(src):
        target = dst / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith("."):
                continue
            try:
                os.link(os.path.join(folder, name), target / name)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(os.path.join(folder, name), target / name)
            n += 1
    return n


def _redact_tree(con, schema: TableSchema, src: Path, dst: Path) -> int:
    """Rewrite every Parquet file under `src` into `dst` as warehouse.duckdb may show it: restricted columns left
    out, or withheld (null) on the restricted rows. Returns the number of files."""
    n = 0
    for file in sorted(lake.parquet_files(src)):
        target = dst / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        quoted = str(file).replace("'", "''")
        scan = f"read_parquet('{quoted}', hive_partitioning = false)"
        present = [row[0] for row in con.execute(f"describe select * from {scan}").fetchall()]
        kept = [c for c in present if c not in schema.restricted_columns or schema.restricted_rows]
        columns = ", ".join(schema.general_expression(c) if c in schema.column_names else c for c in kept)
        out = str(target).replace("'", "''")
        con.execute(f"copy (select {columns} from {scan}) to '{out}' ({lake.parquet_options()})")
        n += 1
    return n


def _owned(value: str, loads: set[str], bootstrap_until: str | None) -> bool:
    if value in loads or value == "":
        return True
    if bootstrap_until is not None:  # the first generation of a home: adopt what was there up to D
        return value == HISTORY or value <= bootstrap_until
    return False


def parts_dir(paths: Paths) -> Path:
    """The published partitions: `parts/<g>/<general|restricted>/<layer>/<table>/<key>=<value>/`, written once by
    the publish that made generation g, never changed, removed when no generation links to them any more."""
    return paths.published / PARTS


def _file_ids(folder: Path) -> set[tuple[str, int, int]]:
    """Each file under `folder` (through a link): its path inside, device and inode. A partition of the live lake
    and a published one hold the same files exactly when these are equal (published files are hard links)."""
    ids = set()
    for where, _, files in os.walk(folder):
        for name in files:
            status = os.stat(os.path.join(where, name))
            ids.add((os.path.relpath(os.path.join(where, name), folder), status.st_dev, status.st_ino))
    return ids


class _Generation:
    """A generation being built: `folder` (its staging folder) holds `<tree>/<layer>/<table>/<key>=<value>` links;
    the partitions it publishes for the first time go to `store` (staged), which becomes `parts/<name>/`."""

    def __init__(self, paths: Paths, name: str):
        self.name = name
        self.folder = paths.published / f".staging-{name}.{owner_tag()}"
        self.store = parts_dir(paths) / f".staging-{name}.{owner_tag()}"
        self.new_partitions = 0

    def share(self, published: Path, rel: Path) -> None:
        """Link to the folder a previous generation's link `published` links to (the same relative target: every
        generation's links are at the same depth under published/)."""
        link = self.folder / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.readlink(published), link)

    def new(self, rel: Path) -> Path:
        """Link to a new partition folder of this generation's store; returns the (staged) folder to fill."""
        link = self.folder / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "restricted" and not (self.store / "restricted").is_dir():
            (self.store / "restricted").mkdir(parents=True)
            _restrict_folder(self.store / "restricted", 0o750, 0o700)  # before any file is in it
        os.symlink(os.path.join(*[".."] * len(rel.parts), PARTS, self.name, *rel.parts), link)  # up to published/
        self.new_partitions += 1
        return self.store / rel


def build_generation(paths: Paths, loads: set[str], day: date, state: dict[str, Any] | None
                     ) -> tuple[str, dict[str, Any]]:
    """Make a new generation (not yet committed); returns its name and counts. A generation is a folder of links,
    one per table and partition (`<tree>/<layer>/<table>/<key>=<value>`), to immutable partition folders under
    `published/parts/`: the partitions of `loads` come from the live lake (hard links into a new
    `parts/<generation>/`); every other one is the previous generation's link, unchanged. So a publish creates
    folders and links files only for what it publishes, whatever the number of nights published before."""
    started = time.perf_counter()
    seq = int(state["seq"]) + 1 if state else 1
    name = f"g{seq:06d}-{uuid.uuid4().hex[:8]}"
    build = _Generation(paths, name)
    previous = paths.published / state["generation"] if state else None
    if previous is not None and not previous.is_dir():
        raise SegoneError(f"the published generation {previous} is missing, so the nights published before cannot "
                          f"be carried over; to rebuild the published state from the live lake as it is, remove "
                          f"{state_path(paths)} and publish again")
    previous_restricted = (state or {}).get("restricted") or {}
    bootstrap_until = None if state else day.isoformat()
    counts = {"linked": 0, "rewritten": 0, "partitions_from_night": 0, "partitions_kept": 0, "partitions_new": 0}
    con = lake.connect(threads=2)
    try:
        for schema in _tables():
            qualified = f"{schema.layer}.{schema.name}"
            key = schema.partition[0] if schema.partition else None
            restriction = _restriction(schema)
            full_tree = "restricted" if restriction is not None else "general"
            was = "restricted" if qualified in previous_restricted else "general"
            same_rule = previous_restricted.get(qualified) == restriction
            live = _partitions(paths.table(schema.layer, schema.name), key)
            published = _partitions(previous / was / schema.layer / schema.name, key) if previous else {}
            sources: dict[str, Path] = {}  # partition value -> its full files (live, or the previous generation's)
            for value, folder in published.items():
                if not (_owned(value, loads, None) or (schema.publish_live and value in live)):
                    sources[value] = folder
            for value, folder in live.items():
                if not (schema.publish_live or _owned(value, loads, bootstrap_until)):
                    continue
                if (schema.publish_live and value in published and published[value].is_symlink()
                        and _file_ids(folder) == _file_ids(published[value])):
                    sources[value] = published[value]  # rewritten by no night since it was published
                else:
                    sources[value] = folder
            for value, folder in sorted(sources.items()):
                carried = published.get(value) == folder
                counts["partitions_kept" if carried else "partitions_from_night"] += 1
                rel = Path(schema.layer) / schema.name / (folder.name if key else "")
                if carried and was == full_tree and folder.is_symlink():
                    build.share(folder, Path(full_tree) / rel)
                else:
                    counts["linked"] += _link_tree(folder, build.new(Path(full_tree) / rel))
                if restriction is None:
                    continue
                general = previous / "general" / rel if previous is not None else None
                if carried and same_rule and general is not None and general.is_symlink():
                    build.share(general, Path("general") / rel)
                elif carried and same_rule and general is not None and general.is_dir():
                    counts["linked"] += _link_tree(general, build.new(Path("general") / rel))
                else:
                    counts["rewritten"] += _redact_tree(con, schema, folder, build.new(Path("general") / rel))
        counts["partitions_new"] = build.new_partitions
        for folder in (build.folder, build.store) if build.new_partitions else (build.folder,):
            (folder / "restricted").mkdir(parents=True, exist_ok=True)
            (folder / "general").mkdir(parents=True, exist_ok=True)
            _restrict_folder(folder / "restricted", 0o750, 0o700)
        if build.new_partitions:  # the store first: the generation's links point into it
            os.rename(build.store, parts_dir(paths) / name)
        os.rename(build.folder, paths.published / name)
    except BaseException:
        shutil.rmtree(build.folder, ignore_errors=True)
        shutil.rmtree(build.store, ignore_errors=True)
        raise
    finally:
        con.close()
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return name, counts


def _restrict_folder(path: Path, with_group: int, alone: int) -> None:
    """Only the pipeline's account (and `publish.restricted_group`, when set) may open `path`."""
    group = publish_settings().get("restricted_group")
    if group:
        import grp

        os.chown(path, -1, grp.getgrnam(str(group)).gr_gid)
        os.chmod(path, with_group)
    else:
        os.chmod(path, alone)


# --- the commit -------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _artefact(staged: Path, final: Path, identity: str = "") -> dict[str, str]:
    """A staged file or folder to swap in, with the hash that tells whether the swap already happened."""
    digest = _sha256(staged / identity if identity else staged)
    if digest is None:
        raise SegoneError(f"publish: the staged {staged} has no {identity or 'content'}")
    return {"staged": str(staged), "final": str(final), "identity": identity, "sha256": digest}


def _apply(paths: Paths, state: dict[str, Any]) -> None:
    """Swap in every staged file of a committed publish; idempotent (a swap already done is recognised by the
    final path's content hash), so a publish killed half way through is completed by the next one."""
    for item in state.get("pending") or []:
        staged, final, identity = Path(item["staged"]), Path(item["final"]), item["identity"]
        if _sha256(final / identity if identity else final) == item["sha256"]:
            lake._remove(staged)  # after an exchange it holds the previous version (or it is gone already)
            continue
        if _sha256(staged / identity if identity else staged) == item["sha256"]:
            if identity:
                lake.swap_in(staged, final)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
            continue
        raise SegoneError(f"the publish of {state.get('day')} cannot be completed: {staged} is gone and {final} is "
                          f"not the published version (published/state.json); run the night again")
    if state.get("pending"):
        state["pending"] = []
        state["applied_at"] = _now()
        _write_state(paths, state)


def recover(paths: Paths) -> bool:
    """Complete a publish that was committed but killed before every file was swapped in (call under the publish
    mutex). True when there was one."""
    state = read_state(paths)
    if not state or not state.get("pending"):
        return False
    log.warning("completing the publish of %s, committed at %s and interrupted", state.get("day"),
                state.get("published_at"))
    _apply(paths, state)
    return True


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _verdict_problems(paths: Paths, load: str, gates: tuple[str, ...]) -> list[str]:
    """Every gate of the load must have run after the data it judged was written, and passed."""
    problems = []
    for gate in gates:
        metrics = read_run_metrics(paths, load, gate)
        if metrics is None:
            problems.append(f"{gate} has no verdict for {load} (not run, or voided by a later rewrite of the data)")
            continue
        verdicts = [metrics.get("passed")] if "passed" in metrics else []
        verdicts += [v.get("passed") for v in metrics.values() if isinstance(v, dict) and "passed" in v]
        if not verdicts or any(v is not True for v in verdicts):
            problems.append(f"{gate} did not pass")
    return problems


def publish_load(paths: Paths, day: date, loads: set[str], gate_load: str, gates: tuple[str, ...],
                 export: bool, run_id: str | None = None) -> dict[str, Any]:
    """Publish `loads` (partition values) as of `day`: the generation, both warehouse files, the CRM export (when
    `export`) and the nightly report of `day`, all made visible by one commit. Refused (GateFailed, nothing
    published) unless every gate of `gate_load` passed."""
    from pipelines import data_docs
    from pipelines.crm_export import export_folder, record_export, stage_export, summarise
    from pipelines.nightly_report import build_nightly_report, report_path
    from pipelines.warehouse import history_last_day, stage_warehouses

    started = time.perf_counter()
    problems = _verdict_problems(paths, gate_load, gates)
    if problems:
        raise GateFailed(f"publish of {day} refused, nothing published: " + "; ".join(problems))
    with publish_mutex(paths):
        recover(paths)
        state = read_state(paths)
        generation, counts = build_generation(paths, loads, day, state)
        checkpoint("publish:generation")
        restricted = {f"{s.layer}.{s.name}": _restriction(s) for s in _tables() if s.is_restricted}
        restricted_tables = frozenset(tuple(k.split(".", 1)) for k in restricted)
        full = generation_paths(paths, generation, True, restricted_tables)
        general = generation_paths(paths, generation, False, restricted_tables)
        pending: list[dict[str, str]] = []
        manifest = None
        steps = {"generation": counts["seconds"]}
        # the last day the history covers: load_date of the history load's rows in the views
        history_as_of = day.isoformat() if HISTORY in loads else (state or {}).get("history_as_of")
        try:
            clock = time.perf_counter()
            history_day = date.fromisoformat(history_as_of) if history_as_of else history_last_day(paths)
            history_as_of = history_day.isoformat() if history_day else None
            for tmp, final in stage_warehouses(paths, general, full, history_day):
                pending.append(_artefact(tmp, final))
            steps["warehouses"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
            if export:
                tmp, manifest = stage_export(full, day, run_id=run_id)
                pending.append(_artefact(tmp, export_folder(paths, day), "manifest.json"))
                steps["crm_export"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
            # the run metrics of what is published, as they are now (with the staged export's manifest): the report
            # reads these, and `segone report`/`export-crm` later read the published copy, not a later attempt's
            runs_staging = published_runs(paths) / f".staging-{owner_tag()}"
            lake._remove(runs_staging)
            for load in sorted(loads | {gate_load}):
                staged_runs = runs_staging / load
                staged_runs.mkdir(parents=True)
                if (paths.runs / load).is_dir():
                    _link_tree(paths.runs / load, staged_runs)
                for name in ("crm_export.json", "published.json"):  # links to the home's files: never write into them
                    (staged_runs / name).unlink(missing_ok=True)
                if manifest is not None and load == day.isoformat():
                    (staged_runs / "crm_export.json").write_text(json.dumps(
                        summarise(manifest, export_folder(paths, day)), indent=2), encoding="utf-8")
                (staged_runs / "published.json").write_text(json.dumps(
                    {"load": load, "generation": generation, "staged_at": _now()}), encoding="utf-8")
                pending.append(_artefact(staged_runs, published_runs(paths) / load, "published.json"))
            # the Great Expectations data docs of the gates that let the load be published, beside the report
            docs_final = data_docs.folder(paths, day)
            docs_staged = docs_final.with_name(f".{data_docs.FOLDER}.{owner_tag()}")
            docs_final.parent.mkdir(parents=True, exist_ok=True)
            built = data_docs.stage(paths, runs_staging / gate_load, day, docs_staged)
            if built is not None:
                pending.append(_artefact(docs_staged, docs_final, "index.html"))
            steps["data_docs"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
            final_report = report_path(paths, day)
            staged_report = final_report.with_name(f".index.{owner_tag()}.html")
            build_nightly_report(dataclasses.replace(full, runs_dir=runs_staging), day, target=staged_report)
            pending.append(_artefact(staged_report, final_report))
            steps["report"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
            checkpoint("publish:staged")
        except BaseException:
            for item in pending:
                lake._remove(Path(item["staged"]))
            lake._remove(published_runs(paths) / f".staging-{owner_tag()}")
            shutil.rmtree(paths.published / generation, ignore_errors=True)
            shutil.rmtree(parts_dir(paths) / generation, ignore_errors=True)
            raise
        new_state = {
            "seq": int(state["seq"]) + 1 if state else 1,
            "generation": generation,
            "previous": state["generation"] if state else None,
            "day": day.isoformat(),
            "loads": sorted(set(state["loads"] if state else []) | loads),
            "restricted": restricted,
            "history_as_of": history_as_of,
            "published_at": _now(),
            "pending": pending,
        }
        _write_state(paths, new_state)  # the commit: from here on the night is published
        checkpoint("publish:committed")
        _apply(paths, new_state)
        lake._remove(published_runs(paths) / f".staging-{owner_tag()}")
        steps["commit_and_swaps"] = round(time.perf_counter() - clock, 3)
        checkpoint("publish:applied")
        metrics: dict[str, Any] = {
            "as_of": day.isoformat(), "loads": sorted(loads), "generation": generation,
            "warehouse": str(paths.warehouse), "warehouse_restricted": str(paths.warehouse_restricted),
            "views": [s.name for s in _tables()], "generation_files": counts,
            "report": str(report_path(paths, day)), "step_seconds": steps,
        }
        if manifest is not None:
            metrics["crm_export"] = record_export(paths, day, manifest)
        dropped = drop_old_generations(paths, new_state)
    metrics["generations_dropped"] = dropped
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    write_run_metrics(paths, day.isoformat(), "publish", metrics)
    housekeeping(paths)
    return metrics


def publish_night(paths: Paths, day: date, run_id: str | None = None) -> dict[str, Any]:
    """Publish night D (every gate of D must have passed)."""
    from pipelines.stages import GATES

    return publish_load(paths, day, {day.isoformat()}, day.isoformat(), GATES, export=True, run_id=run_id)


def publish_history(paths: Paths, as_of: date) -> dict[str, Any]:
    """Publish the history load (its facts under load_date=history, its snapshots as of its last day)."""
    return publish_load(paths, as_of, {HISTORY, as_of.isoformat()}, HISTORY, HISTORY_GATES, export=False)


def _require_published(paths: Paths, day: date) -> PublishedPaths:
    source = current_paths(paths)
    if source is None or day.isoformat() not in published_loads(paths):
        raise SegoneError(f"{day} is not published: run the night (`segone run --date {day}`) or its "
                          f"`segone publish --date {day}` first")
    if not (published_runs(paths) / day.isoformat()).is_dir():  # adopted by a home's first generation
        source = dataclasses.replace(source, runs_dir=None)
    return source


def export_published(paths: Paths, day: date, run_id: str | None = None) -> dict[str, Any]:
    """`segone export-crm`: write the CRM export of a published night again, from its published generation."""
    from pipelines.crm_export import export_folder, record_export, stage_export

    with publish_mutex(paths):
        recover(paths)
        tmp, manifest = stage_export(_require_published(paths, day), day, run_id=run_id)
        try:
            lake.swap_in(tmp, export_folder(paths, day))
        finally:
            lake._remove(tmp)
        return record_export(paths, day, manifest)


def report_published(paths: Paths, day: date) -> str:
    """`segone report`: the nightly report of a published night again, from its published generation."""
    from pipelines.nightly_report import build_nightly_report

    with publish_mutex(paths):
        recover(paths)
        source = _require_published(paths, day)
        _rebuild_data_docs(paths, source, day)
        return str(build_nightly_report(source, day))


def _rebuild_data_docs(paths: Paths, source: PublishedPaths, day: date) -> None:
    """The data docs of a published load again, from its published run metrics, swapped in whole."""
    from pipelines import data_docs

    staged = data_docs.folder(paths, day).with_name(f".{data_docs.FOLDER}.{owner_tag()}")
    try:
        if data_docs.stage(paths, data_docs.runs_of_load(source, day), day, staged) is not None:
            lake.swap_in(staged, data_docs.folder(paths, day))
    finally:
        lake._remove(staged)


# --- clean-up ---------------------------------------------------------------------------------------------------

def _links(generation: Path) -> set[str]:
    """The partition folders a generation links to, relative to published/ (`parts/<g>/<tree>/<layer>/<table>/
    <key>=<value>`). Reads the links only (a generation made before published/parts/ existed has none)."""
    published = generation.parent
    found = set()

    def scan(folder: Path, depth: int) -> None:  # <tree> (0), <layer> (1), <table> (2), then its partitions
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    found.add(os.path.normpath(os.path.join(os.path.relpath(folder, published),
                                                            os.readlink(entry.path))))
                elif depth < 3 and entry.is_dir(follow_symlinks=False):
                    scan(Path(entry.path), depth + 1)

    for tree in ("general", "restricted"):
        if (generation / tree).is_dir():
            scan(generation / tree, 1)
    return found


def drop_old_generations(paths: Paths, state: dict[str, Any]) -> list[str]:
    """Remove every generation but the newest `publish.keep_generations` (at least the current and the previous
    one: an analyst who opened the warehouse before this publish keeps reading the previous generation), and
    generations that were never committed (a publish killed before its commit), then the partition folders of
    `published/parts/` that no generation left links to. Call under the publish mutex."""
    keep_n = max(2, int(publish_settings()["keep_generations"]))
    names = sorted(p.name for p in paths.published.iterdir() if p.is_dir() and p.name.startswith("g"))
    committed_seq = int(state["seq"])
    keep = {state["generation"], state.get("previous")}
    older = [n for n in names if n not in keep and int(n[1:7]) < committed_seq]
    keep |= set(older[-(keep_n - 2):]) if keep_n > 2 else set()
    dropped = [name for name in names if name not in keep]
    linked = set().union(*(_links(paths.published / name) for name in names if name in keep))
    unlinked = set().union(*(_links(paths.published / name) for name in dropped)) - linked
    for name in dropped:
        _discard(paths, paths.published / name)
    # a store folder no generation links to is garbage: a whole parts/<g>/ (its generation and every later one
    # dropped, or never committed), else the partitions of one that later publishes replaced (a re-run, `live`)
    stores = parts_dir(paths)
    owners = {Path(target).parts[1] for target in linked}
    gone = [p for p in stores.iterdir() if not p.name.startswith(".") and p.name not in owners] \
        if stores.is_dir() else []
    for folder in gone:
        _discard(paths, folder)
    partitions = [paths.published / target for target in sorted(unlinked) if Path(target).parts[1] in owners]
    for folder in partitions:
        _discard(paths, folder)
    if dropped or gone or partitions:
        log.info("publish: dropped %d generation(s), %d store folder(s) and %d partition(s) no generation links to",
                 len(dropped), len(gone), len(partitions))
        empty_trash(paths, wait=False)
    return dropped


def trash_dir(paths: Paths) -> Path:
    """Where dropped generations wait to be removed: beside the home's other scratch space, on the same disk."""
    return paths.home / "tmp" / "trash"


def _discard(paths: Paths, folder: Path) -> None:
    """Takes a dropped generation or published partition out of published/ at once (one rename, into a folder only
    the pipeline's account may open: a partition may hold restricted files); its files are removed by
    `empty_trash`. Removing folders is slow on some disks (about 3 ms a folder here): that is no reason to hold the
    publish. Where a rename is impossible (another disk), the folder is removed here."""
    trash = trash_dir(paths)
    trash.mkdir(parents=True, exist_ok=True)
    os.chmod(trash, 0o700)
    try:
        folder.rename(trash / f"{folder.name}.{uuid.uuid4().hex[:8]}")
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def empty_trash(paths: Paths, wait: bool = True) -> None:
    """Remove what `_discard` set aside (and what a killed process left there). wait=False: in a thread of this
    process, which the interpreter waits for before it exits (a non-daemon thread), so the night goes on meanwhile
    and nothing is left behind by a process that ends normally; a killed one's leftovers go with the next call."""
    trash = trash_dir(paths)
    if not trash.is_dir():
        return

    def work() -> None:
        for item in list(trash.iterdir()):
            shutil.rmtree(item, ignore_errors=True)

    if wait:
        work()
    else:
        import threading

        threading.Thread(target=work, name="segone-empty-trash", daemon=False).start()


def _tag_after(name: str, marker: str, until_last_dash: bool = False) -> str | None:
    if marker not in name:
        return None
    tag = name.split(marker, 1)[1]
    return tag.rsplit("-", 1)[0] if until_last_dash else tag


def housekeeping(paths: Paths) -> list[str]:
    """Remove what killed runs left behind and no live process uses: lake/_staging/*, exports/crm/.D.staging-*,
    .warehouse*.duckdb.*.tmp, reports/D/.index.*, half-written lock records, and (when no publish is running)
    uncommitted generations; a committed publish's unfinished swaps are completed. Returns what was removed."""
    removed: list[str] = []

    def drop(path: Path, tag: str | None) -> None:
        if not tag_in_use(tag, path):
            lake._remove(path)
            removed.append(str(path))

    staging = paths.lake / "_staging"
    for path in staging.iterdir() if staging.is_dir() else []:
        drop(path, _tag_after(path.name, "."))
    crm = paths.exports / "crm"
    for path in crm.glob(".*.staging-*") if crm.is_dir() else []:
        drop(path, _tag_after(path.name, ".staging-", until_last_dash=True))
    for path in paths.home.glob(".warehouse*.duckdb.*.tmp*"):
        tag = path.name.split(".duckdb.", 1)[1].split(".tmp", 1)[0]
        drop(path, tag if "@" in tag else f"{tag}@{this_host()}")
    for path in paths.reports.glob("*/.index.*") if paths.reports.is_dir() else []:
        drop(path, path.name[len(".index."):].rsplit(".", 1)[0])
    for path in paths.reports.glob("*/.data_docs.*") if paths.reports.is_dir() else []:
        drop(path, path.name[len(".data_docs."):])
    for path in paths.locks.glob(".night-*.json.*.tmp") if paths.locks.is_dir() else []:
        drop(path, path.name.split(".json.", 1)[1][: -len(".tmp")])
    if paths.published.is_dir():
        with publish_mutex(paths, wait=False) as held:
            if held:
                recover(paths)
                state = read_state(paths)
                for path in [*paths.published.glob(".staging-*"), *parts_dir(paths).glob(".staging-*")]:
                    drop(path, _tag_after(path.name[len(".staging-"):], "."))
                for path in paths.published.glob(".state.json.*.tmp"):
                    drop(path, path.name[len(".state.json."):-len(".tmp")])
                for path in published_runs(paths).glob(".staging-*"):
                    drop(path, path.name[len(".staging-"):])
                if state:
                    removed += drop_old_generations(paths, state)
    if removed:
        log.info("removed %d leftovers of killed runs: %s", len(removed), ", ".join(removed[:10]))
    return removed
