"""The simulated calendar: days as integer indices, UK working days, paydays, clock offsets and seasonality.

Every flow in the simulator is placed on a day index 0..n_days-1 (day 0 is the first history day, the last index
is the business date D). Paydays and direct-debit dates follow the rules a UK bank applies: weekends and England
and Wales bank holidays move a payment to the previous (pay) or next (bills) working day.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

import numpy as np

LOCAL_DAY_SECONDS = 86_400


def _easter(year: int) -> dt.date:
    """Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    day = nxt - dt.timedelta(days=1)
    return day - dt.timedelta(days=(day.weekday() - weekday) % 7)


def _first_weekday(year: int, month: int, weekday: int) -> dt.date:
    day = dt.date(year, month, 1)
    return day + dt.timedelta(days=(weekday - day.weekday()) % 7)


def bank_holidays(year: int) -> set[dt.date]:
    """England and Wales bank holidays, with substitute days for those falling on a weekend."""
    easter = _easter(year)
    days = {easter - dt.timedelta(days=2), easter + dt.timedelta(days=1),
            _first_weekday(year, 5, 0), _last_weekday(year, 5, 0), _last_weekday(year, 8, 0)}
    new_year = dt.date(year, 1, 1)
    days.add(new_year + dt.timedelta(days={5: 2, 6: 1}.get(new_year.weekday(), 0)))
    christmas, boxing = dt.date(year, 12, 25), dt.date(year, 12, 26)
    if christmas.weekday() == 5:
        days |= {christmas + dt.timedelta(days=2), boxing + dt.timedelta(days=2)}
    elif christmas.weekday() == 6:
        days |= {boxing, christmas + dt.timedelta(days=2)}
    elif boxing.weekday() == 5:
        days |= {christmas, boxing + dt.timedelta(days=2)}
    else:
        days |= {christmas, boxing}
    return days


def _bst(day: dt.date) -> bool:
    """British Summer Time on that date (from the last Sunday of March to the last Sunday of October)."""
    return _last_weekday(day.year, 3, 6) <= day < _last_weekday(day.year, 10, 6)


@dataclass(frozen=True)
class SimCalendar:
    """Days end_date-days .. end_date as indices; a margin of days before and after lets flows start earlier."""

    end_date: dt.date
    days: int

    @property
    def n_days(self) -> int:
        return self.days + 1

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days)

    @property
    def d_index(self) -> int:
        return self.days

    def date_of(self, index: int) -> dt.date:
        return self.start_date + dt.timedelta(days=int(index))

    def index_of(self, day: dt.date) -> int:
        return (day - self.start_date).days

    def day_of_month(self, index: np.ndarray) -> np.ndarray:
        """Day of the month of day indices (vectorised)."""
        dates = np.datetime64(self.start_date, "D") + np.asarray(index, dtype=np.int64)
        return (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1

    @cached_property
    def dates(self) -> list[dt.date]:
        return [self.date_of(i) for i in range(self.n_days)]

    @cached_property
    def date_strings(self) -> np.ndarray:
        return np.array([d.isoformat() for d in self.dates], dtype=object)

    @cached_property
    def weekday(self) -> np.ndarray:
        return np.array([d.weekday() for d in self.dates], dtype=np.int8)

    @cached_property
    def utc_offset(self) -> np.ndarray:
        """The Europe/London offset of each day ('+01:00' in summer time, '+00:00' otherwise)."""
        return np.array(["+01:00" if _bst(d) else "+00:00" for d in self.dates], dtype=object)

    def _working_between(self, lo: int, hi: int) -> np.ndarray:
        years = {self.date_of(lo).year, self.date_of(hi).year}
        holidays = set().union(*(bank_holidays(y) for y in range(min(years) - 1, max(years) + 2)))
        out = []
        for i in range(lo, hi):
            d = self.date_of(i)
            out.append(d.weekday() < 5 and d not in holidays)
        return np.array(out, dtype=bool)

    @cached_property
    def month_starts(self) -> list[tuple[int, int]]:
        """(year, month) of every month touching the window, padded by four months on both sides."""
        first = self.start_date.replace(day=1)
        months = []
        y, m = first.year, first.month
        for _ in range(4):
            y, m = (y - 1, 12) if m == 1 else (y, m - 1)
        while dt.date(y, m, 1) <= self.end_date + dt.timedelta(days=124):
            months.append((y, m))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return months

    def _shift(self, index: int, direction: int, working: np.ndarray, lo: int) -> int:
        while not working[index - lo]:
            index += direction
        return index

    @cached_property
    def monthly_table(self) -> np.ndarray:
        """Day indices of monthly payments, shape (29, n_months): rule 0 is the last working day of the month
        (a common UK payday), rules 1..28 a fixed day of the month moved to the previous working day.
        Indices may fall outside the window (negative, or beyond D)."""
        return self._monthly(previous=True)

    @cached_property
    def bill_table(self) -> np.ndarray:
        """Like monthly_table for bills and standing orders: a fixed day moved to the next working day
        (rule 0: the last working day)."""
        return self._monthly(previous=False)

    def _monthly(self, previous: bool) -> np.ndarray:
        lo, hi = -160, self.n_days + 160
        working = self._working_between(lo, hi)
        table = np.zeros((29, len(self.month_starts)), dtype=np.int32)
        for j, (y, m) in enumerate(self.month_starts):
            last = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1))
            table[0, j] = self._shift(self.index_of(last), -1, working, lo)
            for rule in range(1, 29):
                day = dt.date(y, m, rule)
                table[rule, j] = self._shift(self.index_of(day), -1 if previous else 1, working, lo)
        return table

    @cached_property
    def month_first_working(self) -> np.ndarray:
        """True on the first working day of each month: when interest and overdraft charges are applied."""
        out = np.zeros(self.n_days, dtype=bool)
        for j in range(self.monthly_table.shape[1]):
            first = self.bill_table[1, j]
            if 0 <= first < self.n_days:
                out[first] = True
        return out

    @cached_property
    def season(self) -> np.ndarray:
        """Yearly spending factor: a December peak building from Black Friday, a lean January, a summer lift."""
        by_month = {1: 0.85, 2: 0.9, 3: 0.95, 4: 1.0, 5: 1.0, 6: 1.03, 7: 1.08, 8: 1.08, 9: 0.97, 10: 1.0,
                    11: 1.05, 12: 1.35}
        out = np.array([by_month[d.month] for d in self.dates])
        for i, d in enumerate(self.dates):
            if d.month == 11 and d.day >= 20:
                out[i] = 1.15
            if d.month == 12 and d.day >= 27:
                out[i] = 1.0
        return out
