"""A simulated bank that lives on night after night: the closed loop's world (DESIGN section 8).

`start` simulates a bank like `segone simulate` (history up to D-1, day D in landing/D/, the truth), but draws the
world `horizon` days beyond D and saves every chunk's state after D under truth/state/: balances, statements due,
interest accrued, the spending, bills and incomes still to come, open-banking fetches still to make, and each
customer's hidden response model (truth/response_model/).

`step(paths, night)` is called after the bank's night D has run: it reads night D's CRM export
(exports/crm/D/, through `pipelines.crm_export.read_export`, the same check a CRM does), lets every customer answer
the recommendations addressed to them (`responses.respond`: delivered, opened, clicked, accepted, declined,
complained, unsubscribed, with times on D+1), applies what the accepted ones change (`effects.apply`), books day D+1
and writes landing/<D+1>/ (postings, end-of-day balances, customers and accounts opened or changed, consent changes,
life-event declarations, open-banking fetches and crm_responses.csv), carrying every customer's state forward. The
same seed, export and calls give byte-identical files. The pipeline never imports this module: the landing files
and the export are the only interface.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import Paths, load_config
from pipelines.errors import SegoneError
from pipelines.sources.simulate.bank import Chunk, stream
from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.cashflows import Products
from pipelines.sources.simulate.catalog import SLOTS
from pipelines.sources.simulate.consents import Consents, OpenBankingGrants
from pipelines.sources.simulate.daily import DailyRun
from pipelines.sources.simulate.effects import Flows, apply
from pipelines.sources.simulate.lifeevents import Events, Lookalikes
from pipelines.sources.simulate.openbanking import PlannedFetches, write_planned
from pipelines.sources.simulate.population import Population
from pipelines.sources.simulate.responses import (ACTIONS, CHANNELS, FAMILIES, UNKNOWN_ACTION, ResponseModel, answer_draws,
                                          draw_model, respond, situation)
from pipelines.sources.simulate.writers import account_ids, customer_ids, text_table, timestamp_text

log = logging.getLogger(__name__)

STATE, PLANS, MANIFEST = "state", "plans", "world.json"
RING = 14                       # days of contact history kept per customer (fatigue)


@dataclass
class ChunkWorld:
    """One chunk of customers with everything needed to live the next day."""

    number: int
    seed: int
    pop: Population
    events: Events
    products: Products
    lookalikes: Lookalikes
    region_day: np.ndarray
    new_region: np.ndarray
    consents: Consents
    budget: np.ndarray
    run: DailyRun
    flows: Flows
    model: ResponseModel
    current_col: np.ndarray         # column of each customer's current account in run.history
    deliveries: np.ndarray          # (n, RING) recommendations delivered per day (a ring over days)
    marketing: np.ndarray           # (n, RING) commercial ones
    ring_day: np.ndarray            # (RING,) the day each ring column holds
    unsubscribed: np.ndarray        # (n, channels) channels the customer left
    d: int                          # the last day booked

    @property
    def n(self) -> int:
        return self.pop.n


# ---------------------------------------------------------------------------------------------------------------
# Start (called by `pipelines.sources.simulate.simulate` with horizon > 0)
# ---------------------------------------------------------------------------------------------------------------

def start(paths: Paths, customers: int, days: int, end_date: dt.date, seed: int, horizon: int, fmt: str = "csv",
          chunk_size: int | None = None) -> dict[str, Any]:
    """Simulate a bank whose last written day is end_date and keep its world for `horizon` more days."""
    from pipelines.sources.simulate import CHUNK_SIZE, simulate

    if horizon < 1:
        raise SegoneError(f"a world to step on needs a horizon of at least one day, not {horizon}")
    summary = simulate(paths, customers=customers, days=days, end_date=end_date, seed=seed, fmt=fmt,
                       chunk_size=chunk_size or CHUNK_SIZE, horizon=horizon)
    summary["horizon"] = horizon
    return summary


def start_chunk(seed: int, chunk: Chunk, consents: Consents, grants: OpenBankingGrants, cal: SimCalendar,
                d: int) -> ChunkWorld:
    run = chunk.run
    if run is None:
        raise SegoneError("the chunk was simulated to the end of its calendar: there is nothing to step on")
    run.trim_before(d)
    flows = Flows()
    run.hooks.append(flows)
    n = chunk.pop.n
    current_col = np.full(n, -1, dtype=np.int64)
    is_current = run.acc_slot == 0
    current_col[run.acc_cust[is_current]] = np.flatnonzero(is_current)
    model = draw_model(stream(seed, chunk.number, "response_model"), chunk.pop, cal.end_date.year)
    return ChunkWorld(number=chunk.number, seed=seed, pop=chunk.pop, events=chunk.events, products=chunk.products,
                      lookalikes=chunk.lookalikes, region_day=chunk.region_day, new_region=chunk.new_region,
                      consents=consents, budget=np.asarray(chunk.budget), run=run, flows=flows, model=model,
                      current_col=current_col, deliveries=np.zeros((n, RING), dtype=np.int16),
                      marketing=np.zeros((n, RING), dtype=np.int16), ring_day=np.full(RING, -1, dtype=np.int64),
                      unsubscribed=np.zeros((n, len(CHANNELS)), dtype=bool), d=d)


def _state_dir(paths: Paths) -> Path:
    return paths.truth / STATE


def save_chunk(paths: Paths, world: ChunkWorld, folder: Path | None = None) -> None:
    """The chunk's state (pickle, for this simulator only) and, on the first save, its hidden response model."""
    folder = folder or _state_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".chunk-{world.number + 1:04d}.pkl.tmp"
    with open(tmp, "wb") as handle:
        pickle.dump(world, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, folder / f"chunk-{world.number + 1:04d}.pkl")
    model_dir = paths.truth / "response_model"
    part = model_dir / f"part-{world.number + 1:04d}.parquet"
    if not part.exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        m = world.model
        columns = {"customer_id": customer_ids(world.pop.number).tolist(), "engagement": m.engagement,
                   "fatigue": m.fatigue, "complaint": m.complaint, "unsubscribe": m.unsubscribe}
        columns.update({f"channel_{c}": m.channel[:, i] for i, c in enumerate(CHANNELS)})
        columns.update({f"taste_{f}": m.taste[:, i] for i, f in enumerate(FAMILIES)})
        pq.write_table(pa.table(columns), part)


def save_fetches(paths: Paths, chunk_no: int, later: PlannedFetches | None) -> None:
    """The chunk's open-banking fetches after D (fixed by the plan: written once, read by every step)."""
    folder = paths.truth / PLANS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"fetches-{chunk_no + 1:04d}.pkl", "wb") as handle:
        pickle.dump(later, handle, protocol=pickle.HIGHEST_PROTOCOL)


def save_manifest(paths: Paths, seed: int, cal: SimCalendar, d: int, fmt: str, customers: int,
                  chunk_size: int, folder: Path | None = None) -> None:
    folder = folder or _state_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"seed": seed, "calendar_end": cal.end_date.isoformat(), "calendar_days": cal.days, "day": d,
           "date": cal.date_of(d).isoformat(), "format": fmt, "customers": customers, "chunk_size": chunk_size}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def read_manifest(paths: Paths) -> dict[str, Any]:
    _recover(paths)
    path = _state_dir(paths) / MANIFEST
    if not path.exists():
        raise SegoneError(f"no simulated world to step on under {paths.truth}: start one with "
                          f"`segone closed-loop` (or pipelines.sources.simulate.world.start)")
    return json.loads(path.read_text(encoding="utf-8"))


def current_date(paths: Paths) -> dt.date:
    """The last day the world has written."""
    return dt.date.fromisoformat(read_manifest(paths)["date"])


def _recover(paths: Paths) -> None:
    """A step writes the next state beside the current one and swaps it in; finish a swap a crash interrupted."""
    state, nxt, old = _state_dir(paths), paths.truth / f"{STATE}-next", paths.truth / f"{STATE}-old"
    if not state.exists() and nxt.exists() and (nxt / MANIFEST).exists():
        os.rename(nxt, state)
    if old.exists() and state.exists():
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Step
# ---------------------------------------------------------------------------------------------------------------

def _calendar(manifest: dict[str, Any]) -> SimCalendar:
    return SimCalendar(dt.date.fromisoformat(manifest["calendar_end"]), int(manifest["calendar_days"]))


def _export_rows(paths: Paths, night: dt.date) -> tuple[list[dict[str, str]], str]:
    """Night D's CRM export, checked against its manifest; no export (a night that stopped) means no messages."""
    from pipelines.crm_export import read_export

    folder = paths.exports / "crm" / night.isoformat()
    if not (folder / "manifest.json").exists():
        return [], f"no CRM export for {night}: nobody is contacted"
    manifest, rows = read_export(folder)
    if str(manifest.get("as_of")) != night.isoformat():
        raise SegoneError(f"the CRM export in {folder} is for {manifest.get('as_of')}, not {night}")
    return rows, f"{len(rows)} recommendations in the CRM export of {night}"


def step(paths: Paths, night: dt.date) -> dict[str, Any]:
    """After night D (`night`) has run: customers answer its export, day D+1 is booked and written to landing."""
    from pipelines.sources.simulate import BIG_EXT, LandingWriter, ORDER_BY, _fx_rates, _small_tables

    started = time.perf_counter()
    manifest = read_manifest(paths)
    cal = _calendar(manifest)
    d = int(manifest["day"])
    if cal.date_of(d) != night:
        raise SegoneError(f"the simulated world is at {cal.date_of(d)}, not {night}: step the nights in order")
    t = d + 1
    if t > cal.d_index:
        raise SegoneError(f"the simulated world ends on {cal.end_date}: start it with a longer horizon")
    day = cal.date_of(t)
    rows, export_note = _export_rows(paths, night)
    chunk_size = int(manifest["chunk_size"])
    n_chunks = max(1, -(-int(manifest["customers"]) // chunk_size))
    by_chunk: dict[int, list[dict[str, str]]] = {}
    unknown = 0
    for row in rows:
        cid = row.get("customer_id", "")
        number = int(cid[1:]) if cid[:1] == "C" and cid[1:].isdigit() else -1
        chunk_no = (number - 1) // chunk_size if number > 0 else -1
        if not 0 <= chunk_no < n_chunks or number > int(manifest["customers"]):
            unknown += 1
            continue
        by_chunk.setdefault(chunk_no, []).append(row)

    fmt = manifest["format"]
    landing = paths.landing_day(day.isoformat())
    staging = paths.landing / f".{day.isoformat()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    next_state = paths.truth / f"{STATE}-next"
    shutil.rmtree(next_state, ignore_errors=True)
    writer = LandingWriter(cal, fmt)
    big: dict[str, list[pa.Table]] = {"transactions": [], "balances": []}
    small: dict[str, list[pa.Table]] = {}
    responses: list[pa.Table] = []
    counts = {"recommendations": 0, "accepted": 0, "complained": 0, "unsubscribed": 0, "effects": 0,
              "unknown_customers": unknown, "openbanking": 0}
    try:
        for chunk_no in range(n_chunks):
            world = _load_chunk(paths, chunk_no)
            out = _step_chunk(world, cal, t, by_chunk.get(chunk_no, []), counts)
            big["transactions"].append(out["postings"])
            big["balances"].append(out["balances"])
            responses.append(out["responses"])
            for kind, (_, today) in _small_tables(world, cal, world.consents, t, out["changed"]).items():
                small.setdefault(kind, []).append(today)
            _write_truth_day(paths, world, cal, t, out)
            plan = _load_plan(paths, chunk_no)
            if plan is not None:
                counts["openbanking"] += write_planned(plan, cal, [f for f in plan.fetches if f.day == t], staging)
            world.d = t
            save_chunk(paths, world, next_state)
        ext = BIG_EXT[fmt]
        writer.transactions(pa.concat_tables(big["transactions"]), staging / f"transactions.{ext}")
        writer.balances(pa.concat_tables(big["balances"]), staging / f"balances.{ext}")
        tables = {kind: pa.concat_tables(parts) for kind, parts in small.items()}
        tables["fx_rates"] = _fx_rates()
        tables["crm_responses"] = pa.concat_tables(responses)
        order = dict(ORDER_BY, crm_responses="recommendation_id, event_at, event")
        for kind, table in tables.items():
            writer.small(kind, table, staging / f"{kind}.csv", order[kind])
        counts.update({f"rows_{kind}": table.num_rows for kind, table in tables.items()})
        counts["rows_transactions"] = sum(x.num_rows for x in big["transactions"])
        counts["rows_balances"] = sum(x.num_rows for x in big["balances"])
    finally:
        writer.close()
    # like an upstream drop, the completion marker is the last file of the day
    (staging / load_config("landing")["completion_marker"]).touch()
    save_manifest(paths, seed=int(manifest["seed"]), cal=cal, d=t, fmt=fmt, customers=int(manifest["customers"]),
                  chunk_size=chunk_size, folder=next_state)
    # the day's landing folder and the new state become visible together (a crash leaves the old ones)
    if landing.exists():
        shutil.rmtree(landing)
    os.rename(staging, landing)
    state, old = _state_dir(paths), paths.truth / f"{STATE}-old"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(state, old)
    os.rename(next_state, state)
    shutil.rmtree(old, ignore_errors=True)
    return {"night": night.isoformat(), "day": day.isoformat(), "export": export_note, **counts,
            "landing": str(landing), "seconds": round(time.perf_counter() - started, 2)}


def _load_chunk(paths: Paths, chunk_no: int) -> ChunkWorld:
    path = _state_dir(paths) / f"chunk-{chunk_no + 1:04d}.pkl"
    if not path.exists():
        raise SegoneError(f"the simulated world has no state for chunk {chunk_no + 1} ({path})")
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _load_plan(paths: Paths, chunk_no: int) -> PlannedFetches | None:
    path = paths.truth / PLANS / f"fetches-{chunk_no + 1:04d}.pkl"
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _negative_days_30(world: ChunkWorld, t: int) -> np.ndarray:
    hist = world.run.history[max(0, t - 30):t]
    cols = world.current_col
    out = np.zeros(world.n)
    ok = cols >= 0
    if len(hist):
        out[ok] = (hist[:, cols[ok]] < 0).sum(axis=0)
    return out


def _step_chunk(world: ChunkWorld, cal: SimCalendar, t: int, rows: list[dict[str, str]],
                counts: dict[str, int]) -> dict[str, Any]:
    """Answers, effects and the booking of day t for one chunk."""
    run, pop = world.run, world.pop
    first = int(pop.number[0])
    sit = situation(pop, world.events, run.bal, world.budget, _negative_days_30(world, t), t, cal.end_date.year)
    ring = t % RING
    if world.ring_day[ring] != t:
        world.deliveries[:, ring] = 0
        world.marketing[:, ring] = 0
        world.ring_day[ring] = t
    last7 = (world.ring_day >= t - 7) & (world.ring_day < t)
    last14 = (world.ring_day >= t - 14) & (world.ring_day < t)
    contacts_7d = world.deliveries[:, last7].sum(axis=1).astype(float)
    marketing_14d = world.marketing[:, last14].sum(axis=1).astype(float)
    changed = np.zeros((len(SLOTS), world.n), dtype=bool)
    ids = customer_ids(pop.number)
    rec_id = np.array([r["recommendation_id"] for r in rows], dtype=object)
    cust = np.array([int(r["customer_id"][1:]) - first for r in rows], dtype=np.int64)
    action = np.array([r["action_id"] for r in rows], dtype=object)
    channel = np.array([r["channel"] for r in rows], dtype=object)
    rank = np.array([int(r["rank"]) if str(r.get("rank", "")).isdigit() else 1 for r in rows], dtype=np.int64)
    order = np.lexsort((rank, cust)) if len(rows) else np.zeros(0, dtype=np.int64)
    rec_id, cust, action, channel, rank = rec_id[order], cust[order], action[order], channel[order], rank[order]
    # the answers' and the effects' numbers are keyed by customer, night and action (common random numbers)
    night_key = cal.date_of(t).toordinal()
    answers = respond(answer_draws(world.seed, pop.number[cust], night_key, action), world.model, sit, cust, action,
                      channel, rank, contacts_7d, marketing_14d, world.unsubscribed)
    commercial = np.array([ACTIONS.get(str(a), UNKNOWN_ACTION).commercial for a in action], dtype=bool)
    np.add.at(world.deliveries[:, ring], cust, 1)
    np.add.at(world.marketing[:, ring], cust[commercial], 1)
    chan = np.array([CHANNELS.index(c) if c in CHANNELS else 0 for c in channel], dtype=np.int64)
    world.unsubscribed[cust[answers.unsubscribed], chan[answers.unsubscribed]] = True
    accepted = np.flatnonzero(answers.accepted)
    effects = apply(world.seed, night_key, run, world.flows, cal, cust[accepted], action[accepted], sit, t, changed)
    run.step(t)
    led = run.take_day(t)
    postings = pa.table({"num": pop.number[led.cust], "slot": led.slot, "day": led.day.astype(np.int32),
                         "sec": led.sec, "fx_minor": led.fx_minor, "cur": led.cur, "label": led.label,
                         "country": led.country, "seq": led.seq})
    p = world.products
    live = p.held & (p.open_day <= t) & (p.close_day >= t)
    slot, who = np.nonzero(live)
    balances = pa.table({"num": pop.number[who], "slot": slot.astype(np.int8),
                         "day": np.full(len(who), t, dtype=np.int32), "balance": run.bal[slot, who]})
    r = answers.row
    crm = text_table({"recommendation_id": rec_id[r], "customer_id": ids[cust[r]], "action_id": action[r],
                      "channel": channel[r], "event": answers.event,
                      "event_at": timestamp_text(cal, np.full(len(r), t), answers.sec) if len(r) else []})
    counts["recommendations"] += len(rows)
    counts["accepted"] += int(answers.accepted.sum())
    counts["complained"] += int(answers.complained.sum())
    counts["unsubscribed"] += int(answers.unsubscribed.sum())
    counts["effects"] += len(effects)
    truth_responses = pa.table({
        "recommendation_id": pa.array(rec_id.tolist(), type=pa.string()),
        "customer_id": pa.array(ids[cust].tolist(), type=pa.string()),
        "action_id": pa.array(action.tolist(), type=pa.string()),
        "channel": pa.array(channel.tolist(), type=pa.string()),
        "day": pa.array(np.full(len(cust), np.datetime64(cal.date_of(t), "D")), type=pa.date32()),
        "p_open": answers.p_open, "p_accept": answers.p_accept, "opened": answers.opened,
        "accepted": answers.accepted, "complained": answers.complained, "unsubscribed": answers.unsubscribed,
        "at_risk": sit.at_risk[cust], "difficulty": sit.difficulty[cust], "saver": sit.saver[cust]})
    truth_effects = pa.table({
        "customer_id": pa.array([str(ids[e.cust]) for e in effects], type=pa.string()),
        "action_id": pa.array([e.action_id for e in effects], type=pa.string()),
        "day": pa.array([cal.date_of(e.day) for e in effects], type=pa.date32()),
        "effect": pa.array([e.effect for e in effects], type=pa.string()),
        "amount": pa.array([None if e.amount is None else e.amount / 100 for e in effects], type=pa.float64()),
        "until": pa.array([None if e.until is None else cal.date_of(e.until) for e in effects], type=pa.date32())})
    return {"postings": postings, "balances": balances, "responses": crm, "changed": changed,
            "truth_responses": truth_responses, "truth_effects": truth_effects}


def _write_truth_day(paths: Paths, world: ChunkWorld, cal: SimCalendar, t: int, out: dict[str, Any]) -> None:
    """The day's true balances, answers (with their hidden probabilities) and effects, beside the base truth."""
    stamp = cal.date_of(t).isoformat()
    part = f"{stamp}-part-{world.number + 1:04d}.parquet"
    bal = out["balances"]
    num = bal["num"].to_numpy()
    slot = bal["slot"].to_numpy()
    for name, table in (("balances", pa.table({
            "account_id": pa.array(account_ids(num, slot).tolist(), type=pa.string()),
            "customer_id": pa.array(customer_ids(num).tolist(), type=pa.string()),
            "product": np.array(SLOTS)[slot],
            "as_of": pa.array(np.full(len(num), np.datetime64(cal.date_of(t), "D")), type=pa.date32()),
            "balance": bal["balance"].to_numpy() / 100})),
                        ("responses", out["truth_responses"]), ("effects", out["truth_effects"])):
        folder = paths.truth / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / part)
