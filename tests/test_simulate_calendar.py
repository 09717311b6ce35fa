"""The simulator's calendar and payment schedules: UK bank holidays, paydays moved off weekends, clock offsets."""
from __future__ import annotations

import datetime as dt

import numpy as np

from pipelines.sources.simulate import schedules
from pipelines.sources.simulate.calendar import SimCalendar, bank_holidays

CAL = SimCalendar(dt.date(2026, 11, 20), 180)


def test_england_and_wales_bank_holidays() -> None:
    assert bank_holidays(2026) == {dt.date(2026, 1, 1), dt.date(2026, 4, 3), dt.date(2026, 4, 6),
                                   dt.date(2026, 5, 4), dt.date(2026, 5, 25), dt.date(2026, 8, 31),
                                   dt.date(2026, 12, 25), dt.date(2026, 12, 28)}
    assert dt.date(2027, 12, 27) in bank_holidays(2027) and dt.date(2027, 12, 28) in bank_holidays(2027)


def test_paydays_fall_on_working_days_before_the_rule_and_bills_after() -> None:
    months = CAL.monthly_table.shape[1]
    for j in range(months):
        pay, bill = CAL.monthly_table[15, j], CAL.bill_table[15, j]
        y, m = CAL.month_starts[j]
        target = CAL.index_of(dt.date(y, m, 15))
        assert pay <= target <= bill
        for day in (pay, bill):
            date = CAL.date_of(int(day))
            assert date.weekday() < 5 and date not in bank_holidays(date.year)
    # the last working day of August 2026 is Friday the 28th (Monday the 31st is a bank holiday)
    aug = CAL.month_starts.index((2026, 8))
    assert CAL.date_of(int(CAL.monthly_table[0, aug])) == dt.date(2026, 8, 28)


def test_offsets_follow_british_summer_time() -> None:
    assert CAL.utc_offset[CAL.index_of(dt.date(2026, 10, 24))] == "+01:00"
    assert CAL.utc_offset[CAL.index_of(dt.date(2026, 10, 25))] == "+00:00"
    assert CAL.season[CAL.index_of(dt.date(2026, 11, 20))] > CAL.season[CAL.index_of(dt.date(2026, 9, 20))]


def test_schedules_stay_inside_their_ranges() -> None:
    rows, days = schedules.weekly(CAL, np.array([4, 4]), np.array([0, 50]), np.array([10**9, 80]))
    assert all(CAL.date_of(int(d)).weekday() == 4 for d in days)
    assert days[rows == 1].min() >= 50 and days[rows == 1].max() < 80
    rows, days = schedules.periodic(CAL, np.array([-30]), 28, np.array([0]), np.array([10**9]))
    assert np.all(np.diff(days) == 28) and days.min() == 26
    rows, days = schedules.monthly(CAL, np.array([0, 1]), np.array([-10**9, 100]), np.array([10**9, 10**9]))
    assert len(days[rows == 0]) == 6 and (days[rows == 1] >= 100).all()
    sched = schedules.DaySchedule(np.array([7, 8, 9]), np.array([5, 5, 400]), CAL.n_days)
    assert sched.at(5).tolist() == [7, 8] and sched.at(6).tolist() == []
