"""Vectorised payment schedules: for many (row, rule, active range) at once, the day indices a payment falls on.

Each function takes arrays with one entry per schedule row and returns (row index, day) pairs inside both the
row's active range [lo, hi) and the window [0, n_days). No Python loop runs over rows or days.
"""
from __future__ import annotations

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar


def _clip_range(lo: np.ndarray, hi: np.ndarray, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(np.asarray(lo, dtype=np.int64), 0), np.minimum(np.asarray(hi, dtype=np.int64), n_days)


def monthly(cal: SimCalendar, rule: np.ndarray, lo: np.ndarray, hi: np.ndarray, bills: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """Monthly payments on a rule of calendar.monthly_table (pay, moved earlier) or bill_table (moved later)."""
    table = cal.bill_table if bills else cal.monthly_table
    rule = np.asarray(rule, dtype=np.int64)
    lo, hi = _clip_range(lo, hi, cal.n_days)
    days = table[rule]                                   # (rows, months)
    mask = (days >= lo[:, None]) & (days < hi[:, None])
    rows, months = np.nonzero(mask)
    return rows, days[rows, months].astype(np.int64)


def periodic(cal: SimCalendar, anchor: np.ndarray, period: int | np.ndarray, lo: np.ndarray, hi: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Every `period` days from `anchor` (weekly wages, four-weekly state pension and child benefit)."""
    anchor = np.asarray(anchor, dtype=np.int64)
    period = np.broadcast_to(np.asarray(period, dtype=np.int64), anchor.shape)
    lo, hi = _clip_range(lo, hi, cal.n_days)
    first = anchor - ((anchor - lo) // period) * period   # the first occurrence on or after lo
    steps = int(np.ceil(cal.n_days / max(int(period.min()), 1))) + 1 if len(anchor) else 0
    days = first[:, None] + period[:, None] * np.arange(steps)[None, :]
    mask = (days >= lo[:, None]) & (days < hi[:, None])
    rows, k = np.nonzero(mask)
    return rows, days[rows, k]


def weekly(cal: SimCalendar, weekday: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every week on a weekday (0 Monday .. 6 Sunday)."""
    anchor = (np.asarray(weekday, dtype=np.int64) - int(cal.weekday[0])) % 7
    return periodic(cal, anchor, 7, lo, hi)


def on_dates(cal: SimCalendar, day: np.ndarray) -> np.ndarray:
    """Mask of days inside the window."""
    return (day >= 0) & (day < cal.n_days)


class DaySchedule:
    """(customer, value) pairs sorted by day, so that a loop over days can take each day's slice in O(1)."""

    def __init__(self, cust: np.ndarray, day: np.ndarray, n_days: int, value: np.ndarray | None = None):
        keep = (day >= 0) & (day < n_days)
        order = np.argsort(day[keep], kind="stable")
        self.cust = np.asarray(cust)[keep][order]
        self.value = None if value is None else np.asarray(value)[keep][order]
        self.bounds = np.searchsorted(np.asarray(day)[keep][order], np.arange(n_days + 1))

    def at(self, day: int) -> np.ndarray:
        return self.cust[self.bounds[day]:self.bounds[day + 1]]

    def values_at(self, day: int) -> np.ndarray:
        assert self.value is not None
        return self.value[self.bounds[day]:self.bounds[day + 1]]
