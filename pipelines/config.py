"""Where things are and how they are set: $SEGONE_HOME, the repository, and the YAML files in config/."""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"


def segone_home() -> Path:
    """The data root: $SEGONE_HOME, or var/ in the repository."""
    return Path(os.environ.get("SEGONE_HOME") or REPO_ROOT / "var").resolve()


@functools.lru_cache(maxsize=None)
def _load_yaml(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_config(name: str) -> dict[str, Any]:
    """One YAML file of config/ by its stem, e.g. load_config("segone")."""
    return _load_yaml(str(CONFIG_DIR / f"{name}.yaml"))


def settings() -> dict[str, Any]:
    return load_config("segone")


def base_currency() -> str:
    """The currency amounts are reported in (config/segone.yaml `bank.base_currency`, an ISO 4217 code)."""
    code = str(settings()["bank"]["base_currency"])
    if re.fullmatch(r"[A-Z]{3}", code) is None:
        raise ValueError(f"config/segone.yaml: bank.base_currency must be an ISO 4217 code, not {code!r}")
    return code


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
