"""The simulated world stepped a night at a time: deterministic for a seed, customers who answer the CRM export
(delivered, opened, clicked, accepted, declined, complained, unsubscribed, with times on D+1) according to their
hidden situation, accepted actions that change later cash flows, balances that still follow the postings."""
from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import Paths
from pipelines.crm_export import write_rows_export as write_export
from pipelines.errors import SegoneError
from pipelines.sources.simulate import keyed, world
from pipelines.sources.simulate.responses import CHANNELS, DRAWS, FAMILIES, ResponseModel, Situation, respond

D = dt.date(2026, 11, 20)
CUSTOMERS = 400
ACTIONS = ["shortfall_warning", "safe_to_save_sweep", "easy_access_savings", "credit_card", "budgeting_tools",
           "personal_loan", "overdraft_increase", "travel_insurance", "isa", "regular_saver"]


def export_rows(night: dt.date, customers: int = CUSTOMERS, per_customer: int = 2) -> list[dict]:
    rows = []
    for i in range(1, customers + 1):
        for k in range(per_customer):
            rows.append({"recommendation_id": f"R{night:%m%d}-{i}-{k}", "customer_id": f"C{i:07d}",
                         "as_of": night.isoformat(), "rank": k + 1,
                         "action_id": ACTIONS[(i * 3 + k + night.day) % len(ACTIONS)],
                         "channel": ["inapp", "email", "push"][(i + k) % 3], "is_control": "false"})
    return rows


def _live(paths: Paths, nights: int = 3) -> list[dict]:
    world.start(paths, customers=CUSTOMERS, days=60, end_date=D, seed=21, horizon=5, chunk_size=250)
    out = []
    for k in range(nights):
        night = D + dt.timedelta(days=k)
        write_export(paths, night, export_rows(night))
        out.append(world.step(paths, night))
    return out


@pytest.fixture(scope="module")
def lived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, list[dict]]:
    paths = Paths(tmp_path_factory.mktemp("world"))
    return paths, _live(paths)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "state" not in p.parts}


def test_the_same_seed_and_exports_give_byte_identical_days(lived, tmp_path: Path) -> None:
    paths, _ = lived
    again = Paths(tmp_path / "again")
    _live(again)
    assert _digest(again.landing) == _digest(paths.landing)
    assert _digest(again.truth) == _digest(paths.truth)


def test_every_recommendation_is_answered_on_the_next_day_in_the_crm_vocabulary(lived) -> None:
    paths, summaries = lived
    for k, summary in enumerate(summaries):
        night = D + dt.timedelta(days=k)
        day = night + dt.timedelta(days=1)
        events = pd.read_csv(paths.landing_day(day.isoformat()) / "crm_responses.csv", dtype=str)
        sent = export_rows(night)
        assert summary["recommendations"] == len(sent)
        assert set(events["event"]) <= {"delivered", "opened", "clicked", "accepted", "declined", "complained",
                                        "unsubscribed"}
        delivered = events[events["event"] == "delivered"]
        assert sorted(delivered["recommendation_id"]) == sorted(r["recommendation_id"] for r in sent)
        assert events["event_at"].str.startswith(day.isoformat()).all()
        # the funnel: no answer without an open, nothing both accepted and declined, times in order
        at = events.assign(at=pd.to_datetime(events["event_at"])).pivot_table(
            index="recommendation_id", columns="event", values="at", aggfunc="first")
        for later in ("clicked", "accepted", "declined", "complained", "unsubscribed"):
            if later in at:
                happened = at[later].notna()
                assert at.loc[happened, "opened"].notna().all(), later
                assert (at.loc[happened, later] >= at.loc[happened, "opened"]).all(), later
        if "accepted" in at and "declined" in at:
            assert not (at["accepted"].notna() & at["declined"].notna()).any()
        assert (at["opened"].dropna() >= at.loc[at["opened"].notna(), "delivered"]).all()
        # the same customers, actions and channels as the export
        merged = events.merge(pd.DataFrame(sent), on="recommendation_id", suffixes=("", "_sent"))
        assert (merged["customer_id"] == merged["customer_id_sent"]).all()
        assert (merged["action_id"] == merged["action_id_sent"]).all()
        assert (merged["channel"] == merged["channel_sent"]).all()


def test_stepped_days_follow_the_landing_contract(lived) -> None:
    from pipelines.ingest.landing import ingest_landing

    paths, _ = lived
    day = D + dt.timedelta(days=2)
    metrics = ingest_landing(paths, day.isoformat(), paths.landing_day(day.isoformat()), business_date=day)
    kinds = metrics["kinds"]
    assert all(k["rows_quarantined"] == 0 and not k.get("files_quarantined") for k in kinds.values())
    assert kinds["crm_responses"]["rows_accepted"] > 0 and kinds["transactions"]["rows_accepted"] > 0


def test_balances_follow_the_postings_across_the_steps(lived) -> None:
    paths, _ = lived
    frames = []
    for k in range(0, 4):
        day = (D + dt.timedelta(days=k)).isoformat()
        frames.append(pd.read_csv(paths.landing_day(day) / "balances.csv", dtype={"balance": str}))
    bal = pd.concat(frames)
    bal["pence"] = (bal["balance"].astype(float) * 100).round().astype(int)
    for k in range(1, 4):
        day = (D + dt.timedelta(days=k)).isoformat()
        prev = (D + dt.timedelta(days=k - 1)).isoformat()
        tx = pd.read_csv(paths.landing_day(day) / "transactions.csv", dtype={"amount": str})
        fx = {"GBP": 1.0, "EUR": 0.8643, "USD": 0.7589}
        tx["pence"] = [int(np.sign(float(a)) * np.floor(abs(float(a)) * fx[c] * 100 + 0.5))
                       for a, c in zip(tx["amount"], tx["currency"])]
        moved = tx.groupby("account_id")["pence"].sum()
        now = bal[bal["as_of"] == day].set_index("account_id")["pence"]
        before = bal[bal["as_of"] == prev].set_index("account_id")["pence"].reindex(now.index).fillna(0)
        change = (now - before).astype(int)
        assert (change == moved.reindex(now.index).fillna(0).astype(int)).all(), day


def test_answers_follow_the_hidden_situation(lived) -> None:
    paths, _ = lived
    truth = pq.read_table(paths.truth / "responses").to_pandas()
    assert len(truth) == sum(len(export_rows(D + dt.timedelta(days=k))) for k in range(3))
    credit = truth[truth["action_id"].isin(["credit_card", "personal_loan", "overdraft_increase"])]
    assert not (credit["accepted"] & credit["difficulty"]).any()        # nobody in difficulty takes credit
    sweeps = truth[truth["action_id"] == "safe_to_save_sweep"]
    assert sweeps.loc[sweeps["saver"], "p_accept"].mean() > 5 * sweeps.loc[sweeps["at_risk"], "p_accept"].mean()
    warnings = truth[truth["action_id"] == "shortfall_warning"]
    assert warnings.loc[warnings["at_risk"], "p_accept"].mean() > 3 * warnings.loc[~warnings["at_risk"],
                                                                                   "p_accept"].mean()
    assert truth["accepted"].sum() > 0 and truth["opened"].mean() > 0.1


def test_accepted_actions_change_later_cash_flows(lived) -> None:
    paths, _ = lived
    effects = pq.read_table(paths.truth / "effects").to_pandas()
    assert len(effects) > 0
    days = [(D + dt.timedelta(days=k)).isoformat() for k in range(1, 4)]
    tx = pd.concat([pd.read_csv(paths.landing_day(d) / "transactions.csv", dtype=str).assign(day=d) for d in days])
    accounts = pd.concat([pd.read_csv(paths.landing_day(d) / "accounts.csv", dtype=str) for d in days])
    loans = effects[effects["action_id"] == "personal_loan"]
    for cid in loans["customer_id"]:
        mine = tx[tx["account_id"].str.startswith("A" + cid[1:])]
        assert (mine["description"] == "SEGBANK PERSONAL LOAN ADVANCE").any()
        # a loan account opened that day, or the customer's loan from before (the advance tops it up)
        before = pd.concat([pd.read_csv(paths.landing_history / "accounts.csv", dtype=str),
                            pd.read_csv(paths.landing_day(D.isoformat()) / "accounts.csv", dtype=str)])
        assert ((accounts["customer_id"] == cid) & (accounts["product"] == "loan")).any() or \
            ((before["customer_id"] == cid) & (before["product"] == "loan")).any()
    raised = effects[effects["action_id"] == "overdraft_increase"]
    for cid in raised["customer_id"]:
        assert ((accounts["customer_id"] == cid) & (accounts["product"] == "current")).any()
    deposits = effects[effects["action_id"].isin(["easy_access_savings", "isa", "regular_saver"]) &
                       (effects["amount"] > 0)]
    for cid in deposits["customer_id"]:
        mine = tx[tx["account_id"] == f"A{cid[1:]}02"]
        assert (mine["description"] == "TRANSFER FROM CURRENT ACCOUNT").any()
    assert len(loans) + len(raised) + len(deposits) > 0


def test_fatigue_and_unsuitable_contact(tmp_path: Path) -> None:
    n = 2000
    model = ResponseModel(engagement=np.full(n, 0.5), channel=np.ones((n, len(CHANNELS))),
                          taste=np.ones((n, len(FAMILIES))), fatigue=np.full(n, 0.2), complaint=np.ones(n),
                          unsubscribe=np.ones(n))
    zeros, ones = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    sit = Situation(at_risk=ones, difficulty=ones, saver=zeros, surplus=np.zeros(n), travelling_soon=zeros,
                    moving_soon=zeros, buying_soon=zeros, low_income=zeros, job_loss_recent=zeros, gambler=zeros,
                    has_children=zeros, age=np.full(n, 40.0), savings=np.zeros(n), heavy_spender=zeros)
    cust = np.arange(n)
    action = np.array(["credit_card"] * n, dtype=object)
    channel = np.array(["email"] * n, dtype=object)
    rank = np.ones(n, dtype=np.int64)
    unsub = np.zeros((n, len(CHANNELS)), dtype=bool)
    draws = np.random.default_rng(0).random((n, len(DRAWS)))
    rested = respond(draws, model, sit, cust, action, channel, rank, np.zeros(n), np.zeros(n), unsub)
    tired = respond(draws, model, sit, cust, action, channel, rank, np.full(n, 8.0), np.full(n, 8.0), unsub)
    assert tired.p_open.mean() < 0.5 * rested.p_open.mean()
    assert tired.opened.mean() < rested.opened.mean()
    assert not rested.accepted.any()                                # credit to people in difficulty: never taken
    assert rested.complained.mean() > 0.005                         # and it brings complaints
    assert tired.unsubscribed.sum() / max(tired.opened.sum(), 1) > rested.unsubscribed.sum() / rested.opened.sum()


def test_steps_go_in_order_and_an_absent_export_contacts_nobody(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "w")
    world.start(paths, customers=50, days=40, end_date=D, seed=2, horizon=2)
    with pytest.raises(SegoneError, match="step the nights in order"):
        world.step(paths, D + dt.timedelta(days=1))
    summary = world.step(paths, D)                                    # no export for D: nobody is contacted
    assert summary["recommendations"] == 0 and "no CRM export" in summary["export"]
    day = paths.landing_day((D + dt.timedelta(days=1)).isoformat())
    assert (day / "crm_responses.csv").read_text().strip() == \
        "recommendation_id,customer_id,action_id,channel,event,event_at"
    assert world.current_date(paths) == D + dt.timedelta(days=1)
    world.step(paths, D + dt.timedelta(days=1))
    with pytest.raises(SegoneError, match="ends on"):
        world.step(paths, D + dt.timedelta(days=2))


def test_runs_whose_exports_differ_answer_the_same_offers_alike(tmp_path: Path) -> None:
    """Common random numbers: one world, two exports that differ for a few customers (another action, a
    recommendation withheld, one added); every other customer gets the same answers, times and effects in both."""
    base = Paths(tmp_path / "base")
    world.start(base, customers=CUSTOMERS, days=40, end_date=D, seed=5, horizon=2, chunk_size=250)
    champion = [dict(r, action_id=["shortfall_warning", "safe_to_save_sweep", "budgeting_tools", "isa",
                                   "easy_access_savings"][i % 5])
                for i, r in enumerate(export_rows(D))]
    challenger = [dict(r) for r in champion]
    changed = {"C0000001", "C0000003", "C0000260"}
    challenger[0]["action_id"] = "credit_card"                            # another action for C0000001 (rank 1)
    challenger = [r for r in challenger if r["recommendation_id"] != "R1120-3-0"]    # C0000003: one withheld
    challenger.append(dict(champion[-1], recommendation_id="R1120-260-9", rank=3))    # C0000260: one more
    challenger[-1]["customer_id"] = "C0000260"
    runs = {}
    for name, rows in (("champion", champion), ("challenger", challenger)):
        paths = Paths(tmp_path / name)
        shutil.copytree(base.home, paths.home)
        write_export(paths, D, rows)
        world.step(paths, D)
        day = paths.landing_day((D + dt.timedelta(days=1)).isoformat())
        events = pd.read_csv(day / "crm_responses.csv", dtype=str)
        truth = pq.read_table(paths.truth / "responses").to_pandas()
        effects = pq.read_table(paths.truth / "effects").to_pandas()
        balances = pd.read_csv(day / "balances.csv", dtype=str)
        balances["customer_id"] = "C" + balances["account_id"].str[1:8]          # A + customer number + slot
        runs[name] = [frame[~frame["customer_id"].isin(changed)].sort_values(list(frame.columns)).reset_index(drop=True)
                      for frame in (events, truth, effects, balances)]
    for mine, theirs in zip(runs["champion"], runs["challenger"]):
        pd.testing.assert_frame_equal(mine, theirs)
    truth = runs["champion"][1]
    assert truth["accepted"].sum() > 0 and len(runs["champion"][2]) > 0      # answers and effects were compared


def test_keyed_draws_are_a_function_of_their_keys_and_uniform() -> None:
    numbers = np.arange(1, 6001)
    actions = keyed.text_words(np.array(ACTIONS * 600, dtype=object))
    u = keyed.uniforms(12, 9, "responses", numbers, 740_000, actions, 0)
    perm = np.random.default_rng(1).permutation(len(numbers))
    assert np.array_equal(keyed.uniforms(12, 9, "responses", numbers[perm], 740_000, actions[perm], 0), u[perm])
    assert (keyed.uniforms(12, 10, "responses", numbers, 740_000, actions, 0) != u).all()       # another seed
    assert (keyed.uniforms(12, 9, "responses", numbers, 740_001, actions, 0) != u).all()       # another night
    assert (keyed.uniforms(12, 9, "responses", numbers, 740_000, actions, 1) != u).all()       # a second offer
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003 and 0 <= u.min() and u.max() < 1
    assert np.abs(np.corrcoef(u.T)[np.triu_indices(12, 1)]).max() < 0.05
    assert keyed.occurrence(np.array([3, 1, 3, 3, 1]), np.array(list("aaaba"), dtype=object)).tolist() == \
        [0, 0, 1, 0, 1]
    first = keyed.generator(9, "effects", 5, 740_000, "isa", 0).integers(0, 10**9, 4)
    assert first.tolist() == keyed.generator(9, "effects", 5, 740_000, "isa", 0).integers(0, 10**9, 4).tolist()
    assert first.tolist() != keyed.generator(9, "effects", 5, 740_000, "isa", 1).integers(0, 10**9, 4).tolist()
