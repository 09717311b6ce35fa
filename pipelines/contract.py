"""The landing contract of DESIGN.md section 4, loaded from config/landing.yaml."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import load_config

TYPES = {"id", "text", "int", "decimal2", "decimal6", "date", "timestamptz", "bool", "enum", "currency", "country", "mcc"}
FORMATS = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    values: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    not_after_d: bool = False
    personal: bool = False
    label: bool = False


@dataclass(frozen=True)
class FileContract:
    name: str
    kind: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    optional: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def has_personal_data(self) -> bool:
        """Whether a column may hold personal free text: then no raw record of the kind is ever copied anywhere."""
        return any(c.personal for c in self.columns)


@dataclass(frozen=True)
class LandingContract:
    files: dict[str, FileContract] = field(default_factory=dict)

    def __getitem__(self, name: str) -> FileContract:
        return self.files[name]


@functools.lru_cache(maxsize=1)
def landing_contract() -> LandingContract:
    raw = load_config("landing")["files"]
    files = {}
    for name, spec in raw.items():
        columns = []
        for col in spec["columns"]:
            if col["type"] not in TYPES:
                raise ValueError(f"config/landing.yaml: {name}.{col['name']}: unknown type {col['type']!r}")
            columns.append(Column(
                name=col["name"], type=col["type"], required=bool(col.get("required", False)),
                values=tuple(col.get("values", ())), min=col.get("min"), max=col.get("max"),
                max_length=col.get("max_length"), not_after_d=bool(col.get("not_after_d", False)),
                personal=bool(col.get("personal", False)), label=bool(col.get("label", False)),
            ))
        files[name] = FileContract(name=name, kind=spec["kind"], key=tuple(spec["key"]),
                                   columns=tuple(columns), optional=bool(spec.get("optional", False)))
    return LandingContract(files)


@dataclass(frozen=True)
class OpenBankingLengths:
    """The most characters each text of an open-banking envelope may hold (config/landing.yaml `openbanking`)."""
    max_length: dict[str, int]
    ids: frozenset[str]
    labels: frozenset[str] = frozenset()

    def limit(self, name: str) -> int:
        return self.max_length.get(name, self.max_length["other"])


@functools.lru_cache(maxsize=1)
def openbanking_lengths() -> OpenBankingLengths:
    raw = load_config("landing")["openbanking"]
    lengths = {str(k): int(v) for k, v in raw["max_length"].items()}
    if "other" not in lengths or any(v < 1 for v in lengths.values()):
        raise ValueError("config/landing.yaml: openbanking.max_length needs `other` and positive lengths")
    return OpenBankingLengths(max_length=lengths, ids=frozenset(raw.get("ids", ())),
                              labels=frozenset(raw.get("labels", ())))


_FILE_NAME = re.compile(r"^(?P<kind>[a-z_]+)(?:-[A-Za-z0-9_.-]+?)?(?P<format>\.csv|\.csv\.gz|\.parquet)$")


def classify_landing_file(path: Path) -> tuple[str, str] | None:
    """(file kind, format) for a landing file name such as `transactions-2026-06.csv.gz`; None if not one.

    A kind may be split over several files: `transactions.csv`, `transactions-0001.parquet`, ...
    """
    match = _FILE_NAME.match(path.name)
    if not match:
        return None
    return match["kind"], match["format"].lstrip(".")


@dataclass(frozen=True)
class TextLimits:
    """Hostile but visible text (config/landing.yaml `text`): the most combining marks a label may stack on one
    character, and the most characters of a label or free text shown to a person."""

    label_max_combining_marks: int
    display_max_chars: int


@functools.lru_cache(maxsize=1)
def text_limits() -> TextLimits:
    raw = load_config("landing").get("text") or {}
    values = {name: raw.get(name) for name in ("label_max_combining_marks", "display_max_chars")}
    for name, value in values.items():
        if type(value) is not int or value < 1:
            raise ValueError(f"config/landing.yaml: text.{name} must be a whole number >= 1, not {value!r}")
    return TextLimits(**values)
