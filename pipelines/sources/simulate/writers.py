"""Landing files in the contract's exact text form (config/landing.yaml), written by DuckDB from columnar arrays.

Text is built in SQL from integers (amounts from pence, timestamps from day and second), so that no float ever
rounds an amount and a million customers write at DuckDB's speed. Rows are written in a fixed ORDER BY, which
makes the files byte-identical for a seed. CSV: UTF-8, header, RFC 4180 quoting, LF. Parquet: the same text, every
column a string.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from pipelines.contract import landing_contract
from pipelines.sources.simulate.calendar import SimCalendar, _bst
from pipelines.sources.simulate.catalog import COUNTRIES, CURRENCIES, catalog

ID_DIGITS = 7


def customer_ids(numbers: np.ndarray) -> np.ndarray:
    return np.char.add("C", np.char.zfill(numbers.astype(str), ID_DIGITS)).astype(object)


def account_ids(numbers: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """'A' + customer number + two-digit product slot (01 current .. 05 mortgage)."""
    return np.char.add(np.char.add("A", np.char.zfill(numbers.astype(str), ID_DIGITS)),
                       np.char.zfill((slots.astype(np.int64) + 1).astype(str), 2)).astype(object)


def day_text(cal: SimCalendar, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(YYYY-MM-DD, UTC offset) for day indices, any distance from the window."""
    days = np.asarray(days, dtype=np.int64)
    uniq, inverse = np.unique(days, return_inverse=True)
    dates = [cal.start_date + dt.timedelta(days=int(d)) for d in uniq]
    text = np.array([d.isoformat() for d in dates], dtype=object)
    offset = np.array(["+01:00" if _bst(d) else "+00:00" for d in dates], dtype=object)
    return text[inverse], offset[inverse]


def timestamp_text(cal: SimCalendar, days: np.ndarray, secs: np.ndarray) -> np.ndarray:
    """ISO 8601 local time with the Europe/London offset: the written date is the local (booking) date."""
    date, offset = day_text(cal, days)
    secs = np.asarray(secs, dtype=np.int64)
    hh = np.char.zfill((secs // 3600).astype(str), 2)
    mm = np.char.zfill((secs % 3600 // 60).astype(str), 2)
    ss = np.char.zfill((secs % 60).astype(str), 2)
    clock = np.char.add(np.char.add(np.char.add(np.char.add(hh, ":"), mm), ":"), ss)
    return (date.astype(str).astype(object) + "T" + clock.astype(object) + offset).astype(object)


def money_text(pence: np.ndarray) -> np.ndarray:
    """Decimal strings with two decimals from integer minor units, exactly."""
    pence = np.asarray(pence, dtype=np.int64)
    sign = np.where(pence < 0, "-", "")
    whole = (np.abs(pence) // 100).astype(str)
    cents = np.char.zfill((np.abs(pence) % 100).astype(str), 2)
    return np.char.add(np.char.add(np.char.add(sign, whole), "."), cents).astype(object)


class LandingWriter:
    """Writes landing kinds with DuckDB; transactions and balances go through SQL that builds the text."""

    def __init__(self, cal: SimCalendar, fmt: str):
        self.cal = cal
        self.fmt = fmt
        self.con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
        self.con.execute("set preserve_insertion_order = true")
        cat = catalog()
        labels = pa.table({
            "label": pa.array(np.arange(len(cat), dtype=np.int32)),
            "description": cat.description, "merchant_name": cat.merchant, "mcc": cat.mcc,
            "channel": cat.channel, "counterparty_id": cat.counterparty,
            "own_slot": pa.array(np.array(cat.own_slot, dtype=np.int8)),
        })
        self.con.register("labels", labels)
        date, offset = day_text(cal, np.arange(cal.n_days))
        self.con.register("days", pa.table({"day": pa.array(np.arange(cal.n_days, dtype=np.int32)),
                                            "date": date.tolist(), "utc_offset": offset.tolist()}))
        self.con.register("currencies", pa.table({"cur": pa.array(np.arange(len(CURRENCIES), dtype=np.int8)),
                                                  "currency": CURRENCIES}))
        self.con.register("countries", pa.table({"country_idx": pa.array(np.arange(len(COUNTRIES), dtype=np.int8)),
                                                 "country": COUNTRIES}))

    def close(self) -> None:
        self.con.close()

    def _copy(self, query: str, path: Path, fmt: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            options = "format parquet, compression zstd"
        elif fmt == "csv.gz":
            options = "format csv, header true, compression gzip"
        else:
            options = "format csv, header true"
        self.con.execute(f"copy ({query}) to '{path}' ({options})")

    def transactions(self, postings: pa.Table, path: Path) -> None:
        """postings: num, slot, day, sec, fx_minor, cur, label, country, seq."""
        self.con.register("postings", postings)
        cols = landing_contract()["transactions"].column_names
        query = f"""
            select 'T' || lpad(p.num::varchar, {ID_DIGITS}, '0') || replace(d.date, '-', '') ||
                       lpad(p.seq::varchar, 3, '0') as transaction_id,
                   'A' || lpad(p.num::varchar, {ID_DIGITS}, '0') || lpad((p.slot + 1)::varchar, 2, '0') as account_id,
                   d.date || 'T' || lpad((p.sec // 3600)::varchar, 2, '0') || ':' ||
                       lpad((p.sec % 3600 // 60)::varchar, 2, '0') || ':' || lpad((p.sec % 60)::varchar, 2, '0') ||
                       d.utc_offset as booked_at,
                   case when p.fx_minor < 0 then '-' else '' end || (abs(p.fx_minor) // 100)::varchar || '.' ||
                       lpad((abs(p.fx_minor) % 100)::varchar, 2, '0') as amount,
                   c.currency, l.description, l.merchant_name, l.mcc, l.channel, k.country,
                   case when l.own_slot >= 0
                        then 'A' || lpad(p.num::varchar, {ID_DIGITS}, '0') || lpad((l.own_slot + 1)::varchar, 2, '0')
                        else l.counterparty_id end as counterparty_id
            from postings p join labels l using (label) join days d using (day)
                 join currencies c using (cur) join countries k on k.country_idx = p.country
            order by p.day, p.num, p.seq"""
        self._copy(f"select {', '.join(cols)} from ({query})", path, self.fmt)
        self.con.unregister("postings")

    def balances(self, rows: pa.Table, path: Path) -> None:
        """rows: num, slot, day, balance (pence)."""
        self.con.register("balance_rows", rows)
        query = f"""
            select 'A' || lpad(b.num::varchar, {ID_DIGITS}, '0') || lpad((b.slot + 1)::varchar, 2, '0') as account_id,
                   d.date as as_of,
                   case when b.balance < 0 then '-' else '' end || (abs(b.balance) // 100)::varchar || '.' ||
                       lpad((abs(b.balance) % 100)::varchar, 2, '0') as balance
            from balance_rows b join days d using (day)
            order by b.day, b.num, b.slot"""
        self._copy(query, path, self.fmt)
        self.con.unregister("balance_rows")

    def app_events(self, rows: pa.Table, path: Path) -> None:
        """rows: num, day, seq, sec, event_type, target, channel (indices into the simulator's vocabularies)."""
        from pipelines.sources.simulate.app_events import CHANNELS, EVENT_TYPES, TARGETS

        self.con.register("app_rows", rows)
        for name, values in (("event_types", EVENT_TYPES), ("targets", TARGETS), ("app_channels", CHANNELS)):
            self.con.register(name, pa.table({"i": pa.array(np.arange(len(values), dtype=np.int8)), "v": values}))
        query = f"""
            select 'E' || lpad(r.num::varchar, {ID_DIGITS}, '0') || replace(d.date, '-', '') ||
                       lpad(r.seq::varchar, 3, '0') as event_id,
                   'C' || lpad(r.num::varchar, {ID_DIGITS}, '0') as customer_id,
                   d.date || 'T' || lpad((r.sec // 3600)::varchar, 2, '0') || ':' ||
                       lpad((r.sec % 3600 // 60)::varchar, 2, '0') || ':' || lpad((r.sec % 60)::varchar, 2, '0') ||
                       d.utc_offset as occurred_at,
                   e.v as event_type, t.v as target, c.v as channel
            from app_rows r join days d using (day)
                 join event_types e on e.i = r.event_type join targets t on t.i = r.target
                 join app_channels c on c.i = r.channel
            order by r.day, r.num, r.seq"""
        self._copy(query, path, self.fmt)
        for name in ("app_rows", "event_types", "targets", "app_channels"):
            self.con.unregister(name)

    def small(self, kind: str, table: pa.Table, path: Path, order_by: str) -> None:
        """A small kind (always CSV): columns already as text, in contract order."""
        cols = landing_contract()[kind].column_names
        self.con.register("small_rows", table)
        select = ", ".join(f'"{c}"' for c in cols)
        self._copy(f"select {select} from small_rows order by {order_by}", path, "csv")
        self.con.unregister("small_rows")


def text_table(columns: dict[str, np.ndarray | list]) -> pa.Table:
    """A table of nullable strings (None stays null, written as an empty field)."""
    return pa.table({name: pa.array(list(values) if not isinstance(values, list) else values, type=pa.string())
                     for name, values in columns.items()})
