"""`segone simulate`: a synthetic retail bank that knows the truth (DESIGN.md section 8).

Writes landing/history/ (days D-days .. D-1), landing/<D>/ (day D only) and the ground truth under truth/.
Customers are generated in chunks of CHUNK_SIZE with their own random streams: memory stays bounded and the
output depends only on the seed and the arguments.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import shutil
import time
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config import Paths, load_config
from pipelines.contract import landing_contract
from pipelines.sources.simulate.bank import Chunk, simulate_chunk, stream
from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import CARD, CURRENT, FX_RATE_MICROS, REGIONS, SLOTS
from pipelines.sources.simulate.cashflows import NEVER
from pipelines.sources.simulate.consents import NO_EXPIRY, PURPOSES, Consents, OpenBankingGrants, draw_consents
from pipelines.sources.simulate.lifeevents import EVENT_TYPES, LOOKALIKE_NAMES, SOURCES
from pipelines.sources.simulate.openbanking import write_fetches
from pipelines.sources.simulate.population import ARCHETYPES, TENURES, VULNERABILITIES, Population
from pipelines.sources.simulate.writers import (LandingWriter, account_ids, customer_ids, day_text, money_text, text_table,
                                        timestamp_text)

CHUNK_SIZE = 25_000
BIG_EXT = {"csv": "csv", "csv.gz": "csv.gz", "parquet": "parquet"}


def simulate_command(paths: Paths, customers: int, days: int, end_date: dt.date, seed: int, fmt: str) -> dict:
    """The CLI entry point: simulate and return a summary (rows per file, seconds)."""
    return simulate(paths, customers=customers, days=days, end_date=end_date, seed=seed, fmt=fmt)


def simulate(paths: Paths, customers: int = 10_000, days: int = 180, end_date: dt.date = dt.date(2026, 11, 20),
             seed: int = 42, fmt: str = "csv", chunk_size: int = CHUNK_SIZE, horizon: int = 0) -> dict:
    """Replace landing/history, landing/<D> and truth/ with a freshly simulated bank.

    horizon > 0 makes a world to step on (`pipelines.sources.simulate.world`): the bank is drawn through D + horizon days
    (incomes, bills, life events and spending plans of the days ahead), the files written are those up to D, and each
    chunk's state after D is saved under truth/state/ for `world.step` to carry forward one day at a time."""
    if fmt not in BIG_EXT:
        raise ValueError(f"format must be one of {sorted(BIG_EXT)}, not {fmt!r}")
    if horizon < 0:
        raise ValueError(f"horizon must be 0 or more days, not {horizon}")
    started = time.perf_counter()
    cal = SimCalendar(end_date + dt.timedelta(days=horizon), days + horizon)
    d_text = end_date.isoformat()
    history, nightly, truth = paths.landing_history, paths.landing_day(d_text), paths.truth
    for folder in (history, nightly, truth):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    counts = _run(paths, cal, seed, fmt, customers, chunk_size, d=days)
    # Like an upstream drop: the completion marker goes last, once every file of D is written.
    (nightly / load_config("landing")["completion_marker"]).touch()
    return {"customers": customers, "days": days, "end_date": d_text, "seed": seed, "format": fmt,
            "landing": str(paths.landing), "truth": str(truth), "rows": counts,
            "seconds": round(time.perf_counter() - started, 2)}


def _run(paths: Paths, cal: SimCalendar, seed: int, fmt: str, customers: int, chunk_size: int,
         d: int) -> dict[str, int]:
    """Generate chunk after chunk; open-banking JSON is written by a helper process meanwhile. Day d (the index of D)
    is the last day written; a later calendar end is a world to step on (its state is saved)."""
    d_text = cal.date_of(d).isoformat()
    history, nightly, truth = paths.landing_history, paths.landing_day(d_text), paths.truth
    stepping = d < cal.d_index
    n_chunks = max(1, -(-customers // chunk_size))
    with _helper() as ob_pool:
        writer = LandingWriter(cal, fmt)
        counts: dict[str, int] = {}
        small: dict[str, dict[str, list[pa.Table]]] = {"history": {}, d_text: {}}
        nightly_big: dict[str, list[pa.Table]] = {"transactions": [], "balances": [], "app_events": []}
        ext = BIG_EXT[fmt]
        fetch_jobs: list[Future] = []
        for chunk_no in range(n_chunks):
            first = chunk_no * chunk_size + 1
            size = min(chunk_size, customers - chunk_no * chunk_size)
            chunk = simulate_chunk(seed, chunk_no, first, size, cal, through=d)
            postings, balances = _big_tables(chunk, cal, d)
            in_history = pc.less(postings["day"], d)
            writer.transactions(postings.filter(in_history), history / f"transactions-{chunk_no + 1:04d}.{ext}")
            nightly_big["transactions"].append(postings.filter(pc.invert(in_history)))
            in_history = pc.less(balances["day"], d)
            writer.balances(balances.filter(in_history), history / f"balances-{chunk_no + 1:04d}.{ext}")
            nightly_big["balances"].append(balances.filter(pc.invert(in_history)))
            _count(counts, "history/transactions", postings.num_rows - nightly_big["transactions"][-1].num_rows)
            _count(counts, "history/balances", balances.num_rows - nightly_big["balances"][-1].num_rows)
            consents, grants = draw_consents(stream(seed, chunk_no, "consents"), chunk.pop, cal)
            # JSON writing is pure Python: a second process does it while this one builds the next chunk
            fetch_jobs.append(ob_pool.submit(_write_fetches, seed, chunk_no, chunk.pop, cal, grants, history, nightly,
                                             d))
            tables = _small_tables(chunk, cal, consents, d)
            tables.update(_message_tables(seed, chunk, cal, consents, tables.pop("consents"), truth, d))
            app_history, app_today = _app_event_tables(seed, chunk, cal, truth, d)
            writer.app_events(app_history, history / f"app_events-{chunk_no + 1:04d}.{ext}")
            nightly_big["app_events"].append(app_today)
            _count(counts, "history/app_events", app_history.num_rows)
            for kind, (hist_rows, d_rows) in tables.items():
                small["history"].setdefault(kind, []).append(hist_rows)
                small[d_text].setdefault(kind, []).append(d_rows)
            _write_truth(chunk, cal, truth, d)
            if stepping:
                from pipelines.sources.simulate import world
                world.save_chunk(paths, world.start_chunk(seed, chunk, consents, grants, cal, d))
            del chunk, postings, balances
        writer.transactions(pa.concat_tables(nightly_big["transactions"]), nightly / f"transactions.{ext}")
        writer.balances(pa.concat_tables(nightly_big["balances"]), nightly / f"balances.{ext}")
        writer.app_events(pa.concat_tables(nightly_big["app_events"]), nightly / f"app_events.{ext}")
        counts[f"{d_text}/app_events"] = sum(t.num_rows for t in nightly_big["app_events"])
        counts[f"{d_text}/transactions"] = sum(t.num_rows for t in nightly_big["transactions"])
        counts[f"{d_text}/balances"] = sum(t.num_rows for t in nightly_big["balances"])
        for where, folder in (("history", history), (d_text, nightly)):
            written = _write_small(writer, small[where], folder)
            counts.update({f"{where}/{kind}": rows for kind, rows in written.items()})
        writer.close()
        for chunk_no, job in enumerate(fetch_jobs):
            fetched = job.result()
            _count(counts, "history/openbanking", fetched["history"])
            _count(counts, f"{d_text}/openbanking", fetched["nightly"])
            if stepping:
                from pipelines.sources.simulate import world
                world.save_fetches(paths, chunk_no, fetched.get("later"))
        if stepping:
            from pipelines.sources.simulate import world
            world.save_manifest(paths, seed=seed, cal=cal, d=d, fmt=fmt, customers=customers, chunk_size=chunk_size)
    return counts


ORDER_BY = {"customers": "customer_id", "accounts": "account_id", "consents": "customer_id, purpose, recorded_at",
            "life_events": "customer_id, event_date, event_type", "fx_rates": "currency",
            "crm_responses": "recommendation_id", "messages": "customer_id, received_at, message_id"}


def _write_small(writer: LandingWriter, parts: dict[str, list[pa.Table]], folder: Path) -> dict[str, int]:
    """The small kinds of one folder (always CSV); crm_responses has its header only until responses exist."""
    tables = {kind: pa.concat_tables(tables) for kind, tables in parts.items()}
    tables["fx_rates"] = _fx_rates()
    tables["crm_responses"] = text_table({c: [] for c in landing_contract()["crm_responses"].column_names})
    for kind, table in tables.items():
        writer.small(kind, table, folder / f"{kind}.csv", ORDER_BY[kind])
    return {kind: table.num_rows for kind, table in tables.items()}


class _Inline(Executor):
    """Runs jobs at once in this process: inside daemonic processes (e.g. a task runner), which may not start
    children."""

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _helper() -> Executor:
    if multiprocessing.current_process().daemon:
        return _Inline()
    from pipelines.parallel import process_pool

    return process_pool(1)


def _write_fetches(seed: int, chunk_no: int, pop: Population, cal: SimCalendar, grants: OpenBankingGrants,
                   history: Path, nightly: Path, d: int) -> dict:
    """Open-banking files of one chunk (run in the helper process, with the chunk's own random stream)."""
    return write_fetches(stream(seed, chunk_no, "openbanking"), pop, cal, grants, history, nightly, d=d)


def _count(counts: dict[str, int], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + value


def _big_tables(chunk: Chunk, cal: SimCalendar, d: int) -> tuple[pa.Table, pa.Table]:
    """Postings and balance rows of a chunk up to day d as integer columns; the writer turns them into text."""
    led, acc = chunk.ledger, chunk.accounts
    postings = pa.table({
        "num": chunk.pop.number[led.cust], "slot": led.slot, "day": led.day.astype(np.int32), "sec": led.sec,
        "fx_minor": led.fx_minor, "cur": led.cur, "label": led.label, "country": led.country, "seq": led.seq,
    })
    days = np.arange(d + 1)[:, None]
    live = (days >= acc.first_day[None, :]) & (days <= acc.last_day[None, :])
    day_idx, acc_idx = np.nonzero(live)
    balances = pa.table({"num": chunk.pop.number[acc.cust[acc_idx]], "slot": acc.slot[acc_idx],
                         "day": day_idx.astype(np.int32), "balance": acc.history[day_idx, acc_idx]})
    return postings, balances


def _split(day: np.ndarray, d_index: int) -> tuple[np.ndarray, np.ndarray]:
    return day <= d_index - 1, day == d_index


def _small_tables(chunk: Chunk, cal: SimCalendar, cons: Consents, d: int,
                  changed_accounts: np.ndarray | None = None) -> dict[str, tuple[pa.Table, pa.Table]]:
    """customers, accounts, consents and declared life events: history (state or events up to D-1) and D (day
    index d). changed_accounts: (5, n) accounts whose terms changed on d (an overdraft limit), upserted on d too."""
    pop, prod, ev = chunk.pop, chunk.products, chunk.events
    out: dict[str, tuple[pa.Table, pa.Table]] = {}
    ids = customer_ids(pop.number)
    since_text, _ = day_text(cal, pop.since_day)
    vuln = np.array([v or None for v in VULNERABILITIES], dtype=object)[pop.vulnerability]
    regions = np.array(REGIONS, dtype=object)

    def customers(mask: np.ndarray, region: np.ndarray) -> pa.Table:
        return text_table({"customer_id": ids[mask], "birth_year": pop.birth_year[mask].astype(str),
                           "region": region[mask], "customer_since": since_text[mask],
                           "known_vulnerability": vuln[mask]})

    region_before_d = np.where(chunk.region_day <= d - 1, chunk.new_region, pop.region)
    region_on_d = np.where(chunk.region_day <= d, chunk.new_region, pop.region)
    out["customers"] = (customers(pop.since_day <= d - 1, regions[region_before_d]),
                        customers((pop.since_day == d) | (chunk.region_day == d), regions[region_on_d]))

    cust, slot = np.nonzero(prod.held.T)
    open_day, close_day = prod.open_day[slot, cust], prod.close_day[slot, cust]
    acc_ids = account_ids(pop.number[cust], slot)
    open_text, _ = day_text(cal, np.minimum(open_day, d))
    close_text, _ = day_text(cal, np.minimum(close_day, d))
    products = np.array(SLOTS, dtype=object)[slot]
    overdraft = np.where(slot == CURRENT, money_text(pop.overdraft_limit[cust]), None)
    credit = np.where(slot == CARD, money_text(pop.card_limit[cust]), None)

    def accounts(mask: np.ndarray, as_of: int) -> pa.Table:
        closed = np.where(close_day <= as_of, close_text, None)
        return text_table({"account_id": acc_ids[mask], "customer_id": ids[cust][mask], "product": products[mask],
                           "currency": np.full(int(mask.sum()), "GBP", dtype=object), "opened_on": open_text[mask],
                           "closed_on": closed[mask], "overdraft_limit": overdraft[mask],
                           "credit_limit": credit[mask]})

    changed = np.zeros(len(cust), dtype=bool) if changed_accounts is None else changed_accounts[slot, cust]
    out["accounts"] = (accounts(open_day <= d - 1, d - 1),
                       accounts((open_day == d) | (close_day == d) | (changed & (open_day < d)), d))

    recorded = timestamp_text(cal, cons.day, cons.sec)
    expiring = cons.expires_day != NO_EXPIRY
    expires = np.where(expiring, timestamp_text(cal, np.where(expiring, cons.expires_day, 0), cons.sec), None)
    hist, today = _split(cons.day, d)

    def consents(mask: np.ndarray) -> pa.Table:
        return text_table({"customer_id": ids[cons.cust][mask],
                           "purpose": np.array(PURPOSES, dtype=object)[cons.purpose][mask],
                           "granted": np.where(cons.granted, "true", "false").astype(object)[mask],
                           "recorded_at": recorded[mask], "expires_at": expires[mask]})

    out["consents"] = (consents(hist), consents(today))

    declared = ev.declared_day <= d
    event_text, _ = day_text(cal, ev.day)

    def life_events(mask: np.ndarray) -> pa.Table:
        return text_table({"customer_id": ids[ev.cust][mask],
                           "event_type": np.array(EVENT_TYPES, dtype=object)[ev.kind][mask],
                           "event_date": event_text[mask],
                           "source": np.array(SOURCES, dtype=object)[ev.kind][mask]})

    hist, today = _split(np.where(declared, ev.declared_day, NEVER), d)
    out["life_events"] = (life_events(hist), life_events(today))
    return out


def _message_tables(seed: int, chunk: Chunk, cal: SimCalendar, cons: Consents,
                    consents: tuple[pa.Table, pa.Table], truth: Path,
                    d: int | None = None) -> dict[str, tuple[pa.Table, pa.Table]]:
    """The message_analysis consent (added to the consent events) and the customers' messages, history and D, from
    their own random stream (the other files do not change); the truth of each message to truth/messages."""
    from pipelines.sources.simulate.messages import draw_message_consent, draw_messages

    pop = chunk.pop
    d = cal.d_index if d is None else d
    rng = stream(seed, chunk.number, "messages")
    granted = draw_message_consent(rng, pop)
    onboarding = np.maximum(pop.since_day, -720)
    sec = rng.integers(8 * 3600, 22 * 3600, pop.n)
    ids = customer_ids(pop.number)
    marketing_purposes = [PURPOSES.index(p) for p in PURPOSES if p.startswith("marketing_")]
    marketing = np.zeros(pop.n, dtype=bool)
    np.logical_or.at(marketing, cons.cust[np.isin(cons.purpose, marketing_purposes) & cons.granted], True)
    msgs = draw_messages(rng, chunk, cal, marketing)

    def consent_rows(mask: np.ndarray) -> pa.Table:
        return text_table({"customer_id": ids[mask], "purpose": np.full(int(mask.sum()), "message_analysis", object),
                           "granted": np.where(granted, "true", "false").astype(object)[mask],
                           "recorded_at": timestamp_text(cal, onboarding, sec)[mask],
                           "expires_at": np.full(int(mask.sum()), None, dtype=object)})

    hist_c, today_c = onboarding <= d - 1, onboarding == d
    message_ids = np.array([f"MSG{n:08d}-{k:05d}" for k, n in enumerate(pop.number[msgs.cust])], dtype=object)

    def message_rows(mask: np.ndarray) -> pa.Table:
        return text_table({"message_id": message_ids[mask], "customer_id": ids[msgs.cust][mask],
                           "received_at": timestamp_text(cal, msgs.day, msgs.sec)[mask],
                           "channel": msgs.channel[mask], "text": msgs.text[mask]})

    (truth / "messages").mkdir(parents=True, exist_ok=True)
    dates = np.datetime64(cal.start_date, "D")
    written = msgs.day <= d                    # a world stepped beyond D: the later days' messages are not written
    pq.write_table(pa.table({
        "message_id": pa.array(message_ids[written].tolist(), type=pa.string()),
        "customer_id": pa.array(ids[msgs.cust][written].tolist(), type=pa.string()),
        "day": pa.array(dates + msgs.day[written].astype(np.int64), type=pa.date32()),
        "situation": pa.array(msgs.situation[written].tolist(), type=pa.string()),
        "message_analysis": granted[msgs.cust][written],
    }), truth / "messages" / f"part-{chunk.number + 1:04d}.parquet")
    return {"consents": (pa.concat_tables([consents[0], consent_rows(hist_c)]),
                         pa.concat_tables([consents[1], consent_rows(today_c)])),
            "messages": (message_rows(msgs.day <= d - 1), message_rows(msgs.day == d))}


def _app_event_tables(seed: int, chunk: Chunk, cal: SimCalendar, truth: Path,
                      d: int | None = None) -> tuple[pa.Table, pa.Table]:
    """The chunk's app events (history, D) as integer columns for the writer, from their own random stream (the
    other files do not change); the truth of who uses the app and who dismisses pushes to truth/app_users. A world
    drawn beyond D (the closed loop) keeps the app events up to D only: the stepped days have none."""
    from pipelines.sources.simulate.app_events import draw_app_events

    pop = chunk.pop
    d = cal.d_index if d is None else d
    events, users = draw_app_events(stream(seed, chunk.number, "app_events"), chunk, cal)
    # the event id's sequence within the customer's day (events come sorted by customer, day, second)
    key = events.cust.astype(np.int64) * cal.n_days + events.day
    first = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
    seq = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
    keep = seq < 1000
    table = pa.table({"num": pop.number[events.cust[keep]], "day": events.day[keep].astype(np.int32),
                      "seq": seq[keep].astype(np.int32), "sec": events.sec[keep].astype(np.int64),
                      "event_type": events.event_type[keep], "target": events.target[keep],
                      "channel": events.channel[keep]})
    (truth / "app_users").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "customer_id": pa.array(customer_ids(pop.number).tolist(), type=pa.string()),
        "app_user": users.app_user, "sessions_per_day": users.sessions_per_day, "web_share": users.web_share,
        "push_user": users.push_user, "push_dismisser": users.push_dismisser,
    }), truth / "app_users" / f"part-{chunk.number + 1:04d}.parquet")
    return table.filter(pc.less(table["day"], d)), table.filter(pc.equal(table["day"], d))


def _fx_rates() -> pa.Table:
    others = [c for c in FX_RATE_MICROS if c != "GBP"]
    rates = [f"{FX_RATE_MICROS[c] // 1_000_000}.{FX_RATE_MICROS[c] % 1_000_000:06d}" for c in others]
    return text_table({"currency": others, "rate_to_base": rates})


def _write_truth(chunk: Chunk, cal: SimCalendar, truth: Path, d: int) -> None:
    """Ground truth for evaluation, apart from the landing files: never read by the pipeline (up to day d)."""
    pop, ev, acc = chunk.pop, chunk.events, chunk.accounts
    part = f"part-{chunk.number + 1:04d}.parquet"
    ids = customer_ids(pop.number)
    dates = np.datetime64(cal.start_date, "D")
    for name in ("customers", "life_events", "lookalikes", "balances", "shortfalls"):
        (truth / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "customer_id": ids.tolist(), "archetype": np.array(ARCHETYPES)[pop.archetype],
        "birth_year": pop.birth_year, "region_at_start": np.array(REGIONS)[pop.region],
        "region_at_end": np.array(REGIONS)[chunk.new_region],
        "region_changed_on": pa.array(np.where(chunk.region_day < NEVER, dates + np.minimum(chunk.region_day, 10**5),
                                               np.datetime64("NaT")), type=pa.date32()),
        "tenure": np.array(TENURES)[pop.tenure], "income_monthly": pop.income / 100, "spend_ratio": pop.spend_ratio,
        "discipline": pop.discipline, "overdraft_limit": pop.overdraft_limit / 100, "gambler": pop.gambler,
        "has_children": pop.has_children, "known_vulnerability": np.array(VULNERABILITIES)[pop.vulnerability],
    }), truth / "customers" / part)
    pq.write_table(pa.table({
        "customer_id": ids[ev.cust].tolist(), "event_type": np.array(EVENT_TYPES)[ev.kind],
        "event_date": pa.array(dates + ev.day, type=pa.date32()),
        "declared": ev.declared_day <= d,
        "declared_date": pa.array(np.where(ev.declared_day <= d, dates + np.minimum(ev.declared_day, 10**5),
                                           np.datetime64("NaT")), type=pa.date32()),
        "source": np.where(ev.declared_day <= d, np.array(SOURCES)[ev.kind], None),
        "trip_days": ev.duration,
    }), truth / "life_events" / part)
    # look-alikes: customers without an event who did something that resembles one of its signals (up to D)
    look = chunk.lookalikes
    seen = look.day <= d
    pq.write_table(pa.table({
        "customer_id": pa.array(ids[look.cust[seen]].tolist(), type=pa.string()),
        "lookalike_of": pa.array(np.array(EVENT_TYPES)[look.mimics()[seen]].tolist(), type=pa.string()),
        "day": pa.array(dates + look.day[seen], type=pa.date32()),
        "kind": pa.array(np.array(LOOKALIKE_NAMES)[look.kind[seen]].tolist(), type=pa.string()),
    }), truth / "lookalikes" / part)
    days = np.arange(d + 1)[:, None]
    live = (days >= acc.first_day[None, :]) & (days <= acc.last_day[None, :])
    day_idx, acc_idx = np.nonzero(live)
    account_text = pa.array(account_ids(pop.number[acc.cust], acc.slot).tolist(), type=pa.string())
    pq.write_table(pa.table({
        "account_id": account_text.take(pa.array(acc_idx)),
        "customer_id": pa.array(ids.tolist(), type=pa.string()).take(pa.array(acc.cust[acc_idx])),
        "product": np.array(SLOTS)[acc.slot[acc_idx]],
        "as_of": pa.array(dates + day_idx, type=pa.date32()),
        "balance": acc.history[day_idx, acc_idx] / 100,
    }), truth / "balances" / part)
    current = np.flatnonzero(acc.slot == CURRENT)
    hist = acc.history[:d + 1, current]
    alive = live[:, current]
    limit = pop.overdraft_limit[acc.cust[current]]
    below_zero = (hist < 0) & alive
    below_limit = (hist < -limit[None, :]) & alive

    def first(mask: np.ndarray) -> pa.Array:
        any_ = mask.any(axis=0)
        return pa.array(np.where(any_, dates + mask.argmax(axis=0), np.datetime64("NaT")), type=pa.date32())

    pq.write_table(pa.table({
        "customer_id": ids[acc.cust[current]].tolist(),
        "account_id": account_ids(pop.number[acc.cust[current]], acc.slot[current]).tolist(),
        "overdraft_limit": limit / 100,
        "min_balance": np.where(alive, hist, np.iinfo(np.int64).max).min(axis=0) / 100,
        "first_below_zero": first(below_zero), "days_below_zero": below_zero.sum(axis=0),
        "first_below_limit": first(below_limit), "days_below_limit": below_limit.sum(axis=0),
        "crossings_below_zero": (below_zero[1:] & ~below_zero[:-1]).sum(axis=0) + below_zero[0],
    }), truth / "shortfalls" / part)
