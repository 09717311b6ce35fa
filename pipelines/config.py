"""Where things are and how they are set: $SEGONE_HOME, the repository, and the YAML files in config/."""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import SegoneError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"


def segone_home() -> Path:
    """The data root: $SEGONE_HOME, or var/ in the repository."""
    return Path(os.environ.get("SEGONE_HOME") or REPO_ROOT / "var").resolve()


# libyaml's safe loader when PyYAML was built with it (the wheels are): the same documents, 8 times less CPU (the
# action catalogue is read several times a night, 0.07 CPU-s each in pure Python)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """A YAML document, read safely (plain data only): the one YAML reader of the project."""
    return yaml.load(text, Loader=_SAFE_LOADER)


@functools.lru_cache(maxsize=None)
def _load_yaml(path: str) -> dict[str, Any]:
    return parse_yaml(Path(path).read_text(encoding="utf-8"))


class SettingsOverlayError(SegoneError):
    """SEGONE_SETTINGS names a file that cannot be read or a setting that does not exist."""


def load_config(name: str) -> dict[str, Any]:
    """One YAML file of config/ by its stem, e.g. load_config("segone"), with the overlay of $SEGONE_SETTINGS.

    `SEGONE_SETTINGS` may name a YAML file that changes existing settings for one deployment or test home without
    editing config/ (e.g. `segone: {lake: {n_buckets: 4}}`): its top-level keys are config stems, and each value is
    merged key by key over that file. It can only change settings that exist (a misspelt key is refused), so
    config/ stays the one place where every setting is defined and documented. Every process of a home must see
    the same overlay (n_buckets shapes the lake): set it in the environment of the CLI, the scheduler and the
    workers alike."""
    return _with_overlay(str(CONFIG_DIR / f"{name}.yaml"), name, os.environ.get("SEGONE_SETTINGS") or "")


@functools.lru_cache(maxsize=None)
def _with_overlay(path: str, name: str, overlay: str) -> dict[str, Any]:
    base = _load_yaml(path)
    if not overlay:
        return base
    try:
        changes = _load_yaml(str(Path(overlay).resolve()))
    except (OSError, yaml.YAMLError) as error:
        raise SettingsOverlayError(f"SEGONE_SETTINGS={overlay}: cannot be read ({error})") from error
    if not isinstance(changes, dict):
        raise SettingsOverlayError(f"SEGONE_SETTINGS={overlay}: expected a mapping of config names")
    unknown = [stem for stem in changes if not (CONFIG_DIR / f"{stem}.yaml").is_file()]
    if unknown:
        raise SettingsOverlayError(f"SEGONE_SETTINGS={overlay}: no config/{unknown[0]}.yaml")
    return _merge(base, changes.get(name), f"{name}") if changes.get(name) is not None else base


def _merge(base: Any, change: Any, where: str) -> Any:
    if not isinstance(base, dict):
        return change  # a setting's value (a list, a mapping of thresholds read as one value, ...) is replaced whole
    if not isinstance(change, dict):
        raise SettingsOverlayError(f"SEGONE_SETTINGS: {where} is a group of settings, not one value")
    merged = dict(base)
    for key, value in change.items():
        if key not in base:
            raise SettingsOverlayError(
                f"SEGONE_SETTINGS: {where}.{key} is not a setting (see config/{where.split('.')[0]}.yaml)")
        merged[key] = _merge(base[key], value, f"{where}.{key}")
    return merged


def settings() -> dict[str, Any]:
    return load_config("segone")


def base_currency() -> str:
    """The currency amounts are reported in (config/segone.yaml `bank.base_currency`, an ISO 4217 code)."""
    code = str(settings()["bank"]["base_currency"])
    if re.fullmatch(r"[A-Z]{3}", code) is None:
        raise ValueError(f"config/segone.yaml: bank.base_currency must be an ISO 4217 code, not {code!r}")
    return code


def min_published_group_customers() -> int:
    """The fewest customers a group published by name may hold (config/segone.yaml
    `nightly_report.min_published_group_customers`): the nightly report's fairness table and the warehouse's example
    query name no smaller group, and show no count under it."""
    value = (settings().get("nightly_report") or {}).get("min_published_group_customers")
    if type(value) is not int or value < 1:
        raise SegoneError(f"config/segone.yaml: nightly_report.min_published_group_customers must be a whole number "
                          f">= 1, not {value!r}")
    return value


@dataclass(frozen=True)
class Paths:
    """Every location under one data root, so that tests can point a whole pipeline at a temporary folder."""

    home: Path

    @classmethod
    def from_env(cls) -> "Paths":
        return cls(segone_home())

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    def landing_day(self, day: str) -> Path:
        return self.landing / day

    @property
    def landing_history(self) -> Path:
        return self.landing / "history"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    def layer(self, layer: str) -> Path:
        return self.lake / layer

    def table(self, layer: str, table: str) -> Path:
        return self.lake / layer / table

    @property
    def runs(self) -> Path:
        """Per-run stage metrics (JSON), read by the gates and the summary."""
        return self.home / "runs"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def exports(self) -> Path:
        return self.home / "exports"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def truth(self) -> Path:
        """The simulator's ground truth: for evaluation only, never read by the pipeline."""
        return self.home / "truth"

    @property
    def warehouse(self) -> Path:
        """The analysts' views (every published table, without the restricted columns: docs/access.md)."""
        return self.home / "warehouse.duckdb"

    @property
    def warehouse_restricted(self) -> Path:
        """The same views with the restricted columns, for the few who need them (docs/access.md)."""
        return self.home / "warehouse_restricted.duckdb"

    @property
    def published(self) -> Path:
        """Published generations of the lake (hard-linked, immutable) that the warehouse views read."""
        return self.home / "published"

    @property
    def locks(self) -> Path:
        """Night locks (one per home and night) and the publish mutex."""
        return self.home / "locks"
