"""The simulator's text forms and ledger numbering: exact amounts, local timestamps, stable ids."""
from __future__ import annotations

import datetime as dt

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.ledger import FIELDS, to_ledger
from pipelines.sources.simulate.spending import to_gbp_pence
from pipelines.sources.simulate.writers import account_ids, customer_ids, money_text, timestamp_text

CAL = SimCalendar(dt.date(2026, 11, 20), 180)


def test_money_text_is_exact() -> None:
    assert money_text(np.array([0, 5, -5, 1234, -100000, 123456789012])).tolist() == [
        "0.00", "0.05", "-0.05", "12.34", "-1000.00", "1234567890.12"]


def test_timestamps_carry_the_london_offset_and_the_local_date() -> None:
    days = np.array([CAL.index_of(dt.date(2026, 7, 1)), CAL.index_of(dt.date(2026, 11, 20)), -400])
    text = timestamp_text(CAL, days, np.array([3 * 3600 + 61, 23 * 3600 + 59 * 60 + 59, 0]))
    assert text.tolist() == ["2026-07-01T03:01:01+01:00", "2026-11-20T23:59:59+00:00", "2025-04-19T00:00:00+01:00"]


def test_ids() -> None:
    assert customer_ids(np.array([42])).tolist() == ["C0000042"]
    assert account_ids(np.array([42, 42]), np.array([0, 4])).tolist() == ["A000004201", "A000004205"]


def test_foreign_amounts_round_half_away_from_zero() -> None:
    assert to_gbp_pence(np.array([-1000, 1000, -50]), np.array([864_300, 864_300, 1_000_000])).tolist() == [
        -864, 864, -50]
    assert to_gbp_pence(np.array([5]), np.array([500_000])).tolist() == [3]


def test_ledger_is_sorted_and_numbered_per_customer_and_day() -> None:
    cols = {name: np.zeros(5, dtype=dtype) for name, dtype in FIELDS.items()}
    cols["cust"] = np.array([1, 0, 1, 1, 0])
    cols["day"] = np.array([2, 2, 2, 1, 2], dtype=np.int32)
    cols["sec"] = np.array([50, 10, 40, 99, 5], dtype=np.int32)
    ledger = to_ledger(cols)
    assert list(zip(ledger.day.tolist(), ledger.cust.tolist(), ledger.seq.tolist())) == [
        (1, 1, 1), (2, 0, 1), (2, 0, 2), (2, 1, 1), (2, 1, 2)]
