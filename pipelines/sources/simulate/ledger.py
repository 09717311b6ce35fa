"""Postings as columnar arrays: a buffer that flows append to, and the sorted, numbered ledger of a chunk."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIXED, DISCRETIONARY, ESSENTIAL = 0, 1, 2
FIELDS = {"cust": np.int64, "slot": np.int8, "day": np.int32, "sec": np.int32, "pence": np.int64,
          "fx_minor": np.int64, "cur": np.int8, "label": np.int32, "country": np.int8, "kind": np.int8}


@dataclass
class Ledger:
    """All postings of a chunk, sorted by (day, customer, time); `seq` numbers them per customer and day."""

    cust: np.ndarray
    slot: np.ndarray
    day: np.ndarray
    sec: np.ndarray
    pence: np.ndarray      # signed, in the account currency (GBP)
    fx_minor: np.ndarray   # signed, in the transaction currency (equal to pence for GBP)
    cur: np.ndarray        # index into catalog.CURRENCIES
    label: np.ndarray
    country: np.ndarray    # index into catalog.COUNTRIES
    kind: np.ndarray
    seq: np.ndarray

    def __len__(self) -> int:
        return len(self.cust)

    def select(self, mask: np.ndarray) -> "Ledger":
        return Ledger(**{name: getattr(self, name)[mask] for name in (*FIELDS, "seq")})


class PostingBuffer:
    """Collects postings from many flows; `add` broadcasts scalars and drops days outside the window or before
    the account was opened."""

    def __init__(self, n_days: int, open_day: np.ndarray):
        self.n_days = n_days
        self.open_day = open_day            # (5, n) day index each account opens (large: never)
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}

    def add(self, cust: np.ndarray, day: np.ndarray, pence: np.ndarray | int, label: np.ndarray | int,
            sec: np.ndarray | int, slot: np.ndarray | int = 0, kind: int = FIXED,
            fx_minor: np.ndarray | None = None, cur: np.ndarray | int = 0, country: np.ndarray | int = 0) -> None:
        cust = np.asarray(cust, dtype=np.int64)
        n = len(cust)
        if n == 0:
            return
        cols = {"cust": cust, "day": np.broadcast_to(day, n), "pence": np.broadcast_to(pence, n),
                "label": np.broadcast_to(label, n), "sec": np.broadcast_to(sec, n),
                "slot": np.broadcast_to(slot, n), "kind": np.broadcast_to(kind, n),
                "cur": np.broadcast_to(cur, n), "country": np.broadcast_to(country, n)}
        cols["fx_minor"] = cols["pence"] if fx_minor is None else np.broadcast_to(fx_minor, n)
        day_arr = np.asarray(cols["day"])
        keep = (day_arr >= 0) & (day_arr < self.n_days) & (day_arr >= self.open_day[cols["slot"], cust])
        keep &= np.asarray(cols["pence"]) != 0
        for name, dtype in FIELDS.items():
            self.parts[name].append(np.asarray(cols[name])[keep].astype(dtype))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: (np.concatenate(parts) if parts else np.zeros(0, dtype=FIELDS[name]))
                for name, parts in self.parts.items()}


def to_ledger(cols: dict[str, np.ndarray]) -> Ledger:
    """Sort by (day, customer, time, account, label) and number postings per customer and day."""
    # one int64 key (day, customer, second, account, label) sorts much faster than a lexsort over six columns;
    # the stable sort keeps the (deterministic) insertion order between equal keys
    n_cust = int(cols["cust"].max()) + 1 if len(cols["cust"]) else 1
    max_day = int(cols["day"].max()) + 1 if len(cols["day"]) else 1
    if max_day * n_cust * 86_400 * 8 * 4096 >= 2**63 or (len(cols["label"]) and cols["label"].max() >= 4096):
        raise ValueError("chunk too large for the posting sort key: use a smaller chunk_size")
    key = (cols["day"].astype(np.int64) * n_cust + cols["cust"]) * 86_400 + cols["sec"]
    key = (key * 8 + cols["slot"]) * 4096 + cols["label"]
    order = np.argsort(key, kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    n = len(order)
    group_start = np.ones(n, dtype=bool)
    if n:
        group_start[1:] = (cols["day"][1:] != cols["day"][:-1]) | (cols["cust"][1:] != cols["cust"][:-1])
    idx = np.arange(n)
    starts = np.maximum.accumulate(np.where(group_start, idx, 0))
    return Ledger(**cols, seq=(idx - starts + 1).astype(np.int32))
