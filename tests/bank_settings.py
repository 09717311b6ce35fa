"""The SEGONE_SETTINGS overlay of the test banks that train (`segone train`): each test's own changes (fewer customer
buckets, ...) on top of lighter models: the intent model and the calibration of the forecasts (below).

The intent model of a bank depends only on BANKING77 and the messages settings, and the shipped settings choose it
by 5-fold cross-validation among three candidates (one of them an ensemble of networks): a few hundred CPU-seconds,
paid by the first bank of the suite to train (the others take it from the model cache). The banks' tests need a
trained intent model, not that choice: theirs is the first shipped candidate (the single linear SVM), its
temperature fitted on 2-fold out-of-fold scores (the folds fitted at once, `cv_jobs`, as shipped), about 12
CPU-seconds. Every bank of the suite has the same messages settings, so they still share one model through the cache. The choice among the shipped candidates and the
accuracy it gives are tests/test_messages_accuracy.py's, with the shipped candidates.

The cash-shortfall and the income-drop/large-expense engines calibrate with one customer group instead of the
shipped four (`forecast.calibration_groups`: each calibration cut-off fits one classifier per group and horizon):
measured on a 400-customer, 250-day test bank, `segone train`'s cash forecast 29 -> 16 CPU-seconds and its event
forecasts 31 -> 13. The banks' tests need trained engines, not that calibration; the groups are tested where they
are the subject: tests/test_global_engine.py (four groups on hand-made frames), tests/test_forecast.py and
tests/test_event_forecast.py (their banks train with the shipped settings)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def light_models() -> dict[str, Any]:
    shipped = yaml.safe_load((REPO / "config" / "messages.yaml").read_text(encoding="utf-8"))
    return {"messages": {"cv_folds": 2, "candidates": shipped["candidates"][:1]},
            "forecast": {"calibration_groups": 1}}


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def write_overlay(path: Path, changes: dict[str, Any] | None = None) -> Path:
    """Write the overlay (the light models, then `changes` on top) to `path`; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_merged(light_models(), changes or {}), sort_keys=False), encoding="utf-8")
    return path
