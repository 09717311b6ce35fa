"""Words said to a customer about a feature of their data, each only when it is true of them (docs/outputs.md,
"Every sentence true of the customer").

A phrase of config (config/forecast.yaml and config/event_forecast.yaml `drivers`) is
`[words, op, bound]` or `[words, op, bound, op2, bound2]`: the words are said of a customer only when the feature's
value meets every condition (a missing value meets none: missing data never makes a claim). The numbers in the words
come from the conditions themselves, never typed twice: `{bound}` (the bound as written: 20, 0.75), `{bound:pct}`
(0.2 -> 20%), `{bound:money}` (£100), `{bound2...}` the same for the second condition, and `{window}`, the days of the
feature's window from its name (`share_travel_90` -> 90). `check_phrases` refuses words that state a number of their
own, an unknown operator or placeholder, so a threshold changed in config changes the sentence with it.
"""
from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import SegoneError

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}
_PLACEHOLDER = re.compile(r"\{(bound2?|window)(?::(pct|money|int))?\}")
_WINDOW = re.compile(r"_(\d+)$")


def _number(value: float, fmt: str | None) -> str:
    if fmt == "pct":
        return f"{round(value * 100):.0f}%"
    if fmt == "money":
        return f"£{value:,.0f}" if float(value).is_integer() else f"£{value:,.2f}"
    if fmt == "int" or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:g}"


def window_days(name: str) -> int | None:
    """The days of a feature's window, from the end of its name (`n_days_negative_90` -> 90), or None."""
    found = _WINDOW.search(name)
    return int(found.group(1)) if found else None


def conditions(spec: list[Any]) -> list[tuple[str, float]]:
    """The (op, bound) pairs of a phrase spec."""
    return [(str(spec[i]), float(spec[i + 1])) for i in range(1, len(spec), 2)]


def words(name: str, spec: list[Any]) -> str:
    """The phrase's words with its numbers rendered from its own conditions."""
    conds = conditions(spec)
    values = {"bound": conds[0][1], "bound2": conds[1][1] if len(conds) > 1 else None,
              "window": window_days(name)}

    def fill(match: re.Match) -> str:
        return _number(float(values[match.group(1)]), match.group(2))
    return _PLACEHOLDER.sub(fill, str(spec[0]))


def holds(spec: list[Any], values: np.ndarray | pd.Series) -> np.ndarray:
    """Per value, whether every condition of the phrase holds (NaN: never)."""
    v = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce").to_numpy(float)
    ok = ~np.isnan(v)
    for op, bound in conditions(spec):
        ok &= OPS[op](np.nan_to_num(v, nan=0.0), bound)
    return ok


def check_phrases(phrases: dict[str, Any], where: str, plain: tuple[str, ...] = ("default",)) -> None:
    """Refuse a phrase that could say something untrue or that types a number twice: a spec other than
    [words, op, bound(, op, bound)], an unknown operator or placeholder, a placeholder the spec has no value for, or a
    digit in the words outside a placeholder. `plain` names the keys that are fixed words (no condition)."""
    problems = []
    for name, spec in phrases.items():
        text = spec if name in plain else (spec[0] if isinstance(spec, list) and spec else None)
        if name not in plain:
            if not (isinstance(spec, list) and len(spec) in (3, 5) and isinstance(spec[0], str)):
                problems.append(f"{name}: not [words, op, bound] or [words, op, bound, op, bound]")
                continue
            for op, bound in zip(spec[1::2], spec[2::2]):
                if op not in OPS:
                    problems.append(f"{name}: unknown operator {op!r}")
                if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                    problems.append(f"{name}: bound {bound!r} is not a number")
        text = str(text)
        for found in re.finditer(r"\{([^}]*)\}", text):
            m = _PLACEHOLDER.fullmatch(found.group(0))
            if not m or name in plain:
                problems.append(f"{name}: unknown placeholder {found.group(0)}")
            elif m.group(1) == "bound2" and len(spec) != 5:
                problems.append(f"{name}: {{bound2}} without a second condition")
            elif m.group(1) == "window" and window_days(name) is None:
                problems.append(f"{name}: {{window}} but the feature's name ends in no number of days")
        if re.search(r"\d", _PLACEHOLDER.sub("", text)):
            problems.append(f"{name}: the words state a number of their own (render it from the condition: "
                            f"{{bound}}, {{bound:pct}}, {{window}})")
    if problems:
        raise SegoneError(f"{where}: " + "; ".join(problems))
