"""The model registry: trained artefacts under $SEGONE_HOME/models/<family>/<version>/ with their metadata, and the
promoted version of each family in $SEGONE_HOME/models/<family>/promoted.json.

A version directory is written beside the registry and renamed into place whole; promotion rewrites the pointer
atomically. The nightly run loads only the promoted version and refuses a missing or incompatible one with a message
that says what to do.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

from pipelines.config import Paths
from pipelines.errors import SegoneError

METADATA = "metadata.json"
POINTER = "promoted.json"


T = TypeVar("T")


class ModelMissing(SegoneError):
    """No promoted model of a family: train one first."""


def family_dir(paths: Paths, family: str) -> Path:
    return paths.models / family


def save_version(paths: Paths, family: str, version: str, write: Callable[[Path], None],
                 metadata: dict[str, Any]) -> Path:
    """Write a version with `write(directory)` and its metadata; an existing version of the same name (the same
    training data and settings) is replaced whole."""
    root = family_dir(paths, family)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        (tmp / METADATA).write_text(json.dumps({**metadata, "family": family, "version": version},
                                               indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        final = root / version
        if final.exists():
            old = root / f".old-{uuid.uuid4().hex}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / version


def read_metadata(paths: Paths, family: str, version: str) -> dict[str, Any]:
    path = family_dir(paths, family) / version / METADATA
    if not path.exists():
        raise ModelMissing(f"model {family}/{version} has no {METADATA} under {path.parent}")
    return json.loads(path.read_text(encoding="utf-8"))


def promote(paths: Paths, family: str, version: str, reason: str) -> None:
    root = family_dir(paths, family)
    if not (root / version / METADATA).exists():
        raise ModelMissing(f"cannot promote {family}/{version}: it is not in the registry ({root})")
    tmp = root / f".{POINTER}.tmp"
    tmp.write_text(json.dumps({"version": version, "reason": reason}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / POINTER)


def promoted_version(paths: Paths, family: str) -> str | None:
    pointer = family_dir(paths, family) / POINTER
    if not pointer.exists():
        return None
    return json.loads(pointer.read_text(encoding="utf-8"))["version"]


def promoted(paths: Paths, family: str) -> tuple[Path, dict[str, Any]]:
    """The promoted version's directory and metadata, or a ModelMissing that says how to make one."""
    version = promoted_version(paths, family)
    if version is None:
        raise ModelMissing(f"no promoted {family} model in {family_dir(paths, family)}: run `segone train` "
                           f"(after `segone load-history`) to train and promote one")
    return family_dir(paths, family) / version, read_metadata(paths, family, version)


# Loaded models, per process: a worker that runs several shards of a night (`segone run`, `segone closed-loop
# --workers`) reads a version's boosters once instead of once per shard. One entry per (family folder, kind): a newly
# promoted version replaces its predecessor, so a long closed loop holds one model per family, not one per night.
_LOADED: dict[tuple[str, str], tuple[str, tuple, Any]] = {}


def _stamp(directory: Path) -> tuple:
    """What identifies a version directory's contents on disk: every file's name, inode, size and modification time.
    A version re-saved under the same name (save_version renames a new folder into place) or a file rewritten in
    place changes it, so a stale model is never served from the cache."""
    with os.scandir(directory) as entries:
        files = sorted((e.name, e.inode(), e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    return (os.stat(directory).st_ino, tuple(files))


def load_cached(directory: Path, kind: str, load: Callable[[Path], T]) -> T:
    """`load(directory)`, or the object it returned before in this process if the directory's files are unchanged
    (`_stamp`). `kind` names what `load` makes (two loaders of one directory get two entries). Nothing is cached when
    `load` raises. The object is shared: callers must not change it (per-object caches that only depend on the
    model, such as attributors, are fine)."""
    key = (str(Path(directory).parent.resolve()), kind)
    name = str(Path(directory).resolve())
    stamp = _stamp(directory)
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == name and cached[1] == stamp:
        return cached[2]
    value = load(directory)
    _LOADED[key] = (name, stamp, value)
    return value


def clear_loaded() -> None:
    """Forget every model loaded in this process (tests)."""
    _LOADED.clear()
