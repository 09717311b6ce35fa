"""Turn a simulated bank's landing into several nights: the last K days of landing/history become landing/<d>/
folders, as upstream systems would have delivered them night after night.

`split_into_nights` moves every posting, balance, account, consent, message and open-banking fetch dated after the
new history end into the night of its date, and delivers some postings and balances late (a few days after their
date, within `ingest.max_late_days`), so that a night's silver carries postings booked before it. The small kinds
that every night has (fx_rates, crm_responses) are copied. Customers and declared life events stay in the history.
"""
from __future__ import annotations

import csv
import hashlib
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from pipelines.config import Paths


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def _late_days(key: str, share: float, most: int) -> int:
    """0 for most rows; 1..most days late for about `share` of them (stable: md5 of the key)."""
    draw = int(hashlib.md5(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0 if draw >= share else 1 + int(draw / share * most) % most


def split_into_nights(paths: Paths, first_night: date, last_night: date, late_share: float = 0.03,
                      most_late: int = 4) -> list[date]:
    """Rewrite landing/history (which must reach first_night - 1 or later) so that it ends the day before
    `first_night`, and write landing/<d>/ for every night d up to `last_night` (the simulator's own night D =
    last_night keeps its files and gets the moved ones added). Returns the nights."""
    history = paths.landing_history
    nights = [first_night + timedelta(days=i) for i in range((last_night - first_night).days + 1)]
    by_night: dict[date, dict[str, list[pd.DataFrame]]] = {d: {} for d in nights}

    def assign(kind: str, frame: pd.DataFrame, when: pd.Series) -> pd.DataFrame:
        """Rows dated on a night go to it; the rest stay."""
        days = pd.to_datetime(when.str[:10]).dt.date
        for night in nights:
            rows = frame[(days == night).to_numpy()]
            if len(rows):
                by_night[night].setdefault(kind, []).append(rows)
        return frame[(days < first_night).to_numpy()]

    for kind in ("transactions", "balances"):
        for path in sorted(history.glob(f"{kind}-*.csv")):
            frame = _read(path)
            dated = frame["booked_at"] if kind == "transactions" else frame["as_of"]
            key = frame["transaction_id"] if kind == "transactions" else frame["account_id"] + frame["as_of"]
            delay = key.map(lambda k: _late_days(k, late_share, most_late))
            arrives = (pd.to_datetime(dated.str[:10]) + pd.to_timedelta(delay, unit="D")).dt.strftime("%Y-%m-%d")
            late = pd.to_datetime(arrives).dt.date > last_night
            arrives = arrives.where(~late, dated.str[:10])
            kept = assign(kind, frame, arrives.where(pd.to_datetime(dated.str[:10]).dt.date >= first_night,
                                                     dated.str[:10]))
            _write(kept, path)
    accounts = _read(history / "accounts.csv")
    _write(assign("accounts", accounts, accounts["opened_on"].where(accounts["opened_on"] != "", "1900-01-01")),
           history / "accounts.csv")
    consents = _read(history / "consents.csv")
    _write(assign("consents", consents, consents["recorded_at"]), history / "consents.csv")
    if (history / "messages.csv").exists():
        messages = _read(history / "messages.csv")
        _write(assign("messages", messages, messages["received_at"]), history / "messages.csv")
    for path in sorted((history / "openbanking").glob("*.json")):
        fetched = date.fromisoformat(f"{path.stem[-8:-4]}-{path.stem[-4:-2]}-{path.stem[-2:]}")
        if fetched >= first_night:
            target = paths.landing_day(fetched.isoformat()) / "openbanking" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
    for night in nights:
        folder = paths.landing_day(night.isoformat())
        folder.mkdir(parents=True, exist_ok=True)
        for kind, parts in by_night[night].items():
            name = f"{kind}.csv"
            existing = [_read(folder / name)] if (folder / name).exists() else []
            _write(pd.concat([*existing, *parts], ignore_index=True), folder / name)
        for kind in ("fx_rates", "crm_responses"):
            if not (folder / f"{kind}.csv").exists():
                shutil.copy(history / f"{kind}.csv", folder / f"{kind}.csv")
    return nights


def append_rows(paths: Paths, night: date, kind: str, rows: list[dict]) -> None:
    """Add rows to a night's landing file of a kind (created with the rows' columns when missing)."""
    path = paths.landing_day(night.isoformat()) / f"{kind}.csv"
    frame = pd.DataFrame(rows, dtype=str)
    if path.exists():
        frame = pd.concat([_read(path), frame], ignore_index=True).fillna("")
    _write(frame, path)
