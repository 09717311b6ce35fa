"""How noisy is "the same customers under two policies"? The simulator's paired difference (docs/closed_loop.md
section 15)

    PYTHONPATH=$PWD nice -n 19 .venv/bin/python benchmarks/closed_loop_crn.py --customers 2000 --nights 14 \
        --tail 14 --seed 42 --out benchmarks/closed_loop_crn.json [--label after]

One simulated bank (`world.start`) is copied into two homes and stepped night after night with two CRM exports
that differ only in the actions: every night the same customers are contacted (`--contact` of them, one
or two recommendations, chosen by a hash of the customer and the night), and on `--differ` of those decisions the
challenger does otherwise (another action in the first slot, no contact, or one recommendation more; also by a
hash, so both exports are fixed before any answer is drawn). After `--nights` nights, `--tail` days with no contact let the accepted actions play out. Each
customer's value over the run is read from the simulator's truth with the worths of config/rewards.yaml: overdraft
interest accrued on a negative current balance (-1 a pound), days below zero (-4 a day), savings added (+0.05 a
pound), the bank's margin on savings, card, loan and mortgage balances (+1 a pound), complaints (-25) and
unsubscribes (-5). The paired difference challenger minus champion per customer has no baseline or trend to remove
(they are the same customer's in both homes).

Printed (and written to --out, one object per --label): the spread of one decision's paired difference, sigma =
sd(per-customer difference) x sqrt(customers / decisions) (clustered by customer, as the 95% interval of the mean
difference a decision would be), separately for the customers whose recommendations were the same every night in
both runs (the policies did nothing different to them: any spread there is noise of the experiment) and for the
others; the CPU seconds of the steps. Not timed: the start. Runs on any revision that has `world.start`/`world.step`
(it reads only the truth files), so the same command measures the code before and after a change.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import resource
import shutil
import tempfile
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import yaml

from pipelines.config import Paths
from pipelines.crm_export import write_rows_export as write_export
from pipelines.sources.simulate import world

# actions the simulator answers and whose effects show in the balances, a mix of protective and commercial ones
ACTIONS = ["shortfall_warning", "overdraft_buffer", "budgeting_tools", "bill_reminder", "benefits_check",
           "safe_to_save_sweep", "easy_access_savings", "isa", "regular_saver", "credit_card", "personal_loan",
           "overdraft_increase", "travel_insurance", "subscription_review", "hardship_support"]
CHANNELS = ["inapp", "email", "push"]
Z = NormalDist().inv_cdf(0.975)


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def export_rows(night: dt.date, customers: int, policy: str, contact: float, differ: float) -> list[dict]:
    """One night's export. The champion contacts a share `contact` of the customers with one or two
    recommendations (actions and channels by a hash of the customer and the night); on a share `differ` of those
    decisions the challenger does otherwise: another action in the first slot, no contact at all (the no-contact
    arm), or one recommendation more, a third each."""
    rows = []
    for i in range(1, customers + 1):
        if _hash("contact", i, night) % 10_000 >= contact * 10_000:
            continue
        first = _hash("action", i, night) % len(ACTIONS)
        picks = [first] + ([(first + 1 + _hash("second", i, night) % (len(ACTIONS) - 1)) % len(ACTIONS)]
                           if _hash("two", i, night) % 2 else [])
        if policy == "challenger" and _hash("differ", i, night) % 10_000 < differ * 10_000:
            how = _hash("how", i, night) % 3
            other = [a for a in range(len(ACTIONS)) if a not in picks]
            if how == 0:
                picks[0] = other[_hash("other", i, night) % len(other)]
            elif how == 1:
                picks = []
            else:
                picks.append(other[_hash("more", i, night) % len(other)])
        for k, a in enumerate(picks):
            rows.append({"recommendation_id": f"R{night:%m%d}-{i}-{k}", "customer_id": f"C{i:07d}",
                         "as_of": night.isoformat(), "rank": k + 1, "action_id": ACTIONS[a],
                         "channel": CHANNELS[_hash("channel", i, night, k) % len(CHANNELS)], "is_control": "false"})
    return rows


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def live(paths: Paths, first: dt.date, customers: int, nights: int, tail: int, policy: str, contact: float,
         differ: float) -> tuple[float, dict[str, list[dict]]]:
    """Step the world through the nights and the tail; CPU seconds of the steps and the exports."""
    seconds, sent = 0.0, {}
    for k in range(nights + tail):
        night = first + dt.timedelta(days=k)
        if k < nights:
            sent[night.isoformat()] = export_rows(night, customers, policy, contact, differ)
            write_export(paths, night, sent[night.isoformat()])
        before = cpu()
        world.step(paths, night)
        seconds += cpu() - before
    return seconds, sent


def customer_value(paths: Paths, first: dt.date, rewards: dict) -> pd.Series:
    """Each customer's value over the stepped days, from the truth, with the worths of config/rewards.yaml."""
    worth = rewards["outcomes"]
    daily_od = (1 + float(rewards["overdraft_ear"])) ** (1 / 365) - 1
    margin = {"savings": "savings", "credit_card": "card", "loan": "loan", "mortgage": "mortgage"}
    bal = pd.concat(pd.read_parquet(p) for p in sorted((paths.truth / "balances").glob("*.parquet"))
                    if p.name[:10] > first.isoformat() and p.name[:4].isdigit())
    value = pd.Series(0.0, index=pd.Index(sorted(set(bal["customer_id"])), name="customer_id"))
    cur = bal[bal["product"] == "current"]
    day_cur = cur.groupby(["customer_id", "as_of"])["balance"].sum()
    interest = (-day_cur.clip(upper=0) * daily_od).groupby(level=0).sum()
    short = (day_cur < 0).groupby(level=0).sum()
    value = value.add(worth["fees_and_interest"] * interest, fill_value=0)
    value = value.add(worth["shortfall_days"] * short, fill_value=0)
    sav = bal[bal["product"] == "savings"].sort_values("as_of")
    if len(sav):
        per_day = sav.groupby(["customer_id", "as_of"])["balance"].sum().reset_index()
        first_last = per_day.groupby("customer_id")["balance"].agg(["first", "last"])
        value = value.add(worth["savings_added"] * (first_last["last"] - first_last["first"]), fill_value=0)
    for rate_name, product in margin.items():
        rows = bal[bal["product"] == product]
        if not len(rows):
            continue
        rate = float(rewards["product_margin_per_year"][rate_name]) / 365
        value = value.add(worth["product_margin"] * (rows["balance"].abs() * rate).groupby(rows["customer_id"]).sum(),
                          fill_value=0)
    resp = pd.concat(pd.read_parquet(p) for p in sorted((paths.truth / "responses").glob("*.parquet")))
    events = rewards["events"]
    penalty = (resp["complained"].astype(float) * events["complained"]
               + resp["unsubscribed"].astype(float) * events["unsubscribed"]).groupby(resp["customer_id"]).sum()
    return value.add(penalty, fill_value=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--nights", type=int, default=14)
    parser.add_argument("--tail", type=int, default=14)
    parser.add_argument("--days", type=int, default=120, help="history before the first night")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--contact", type=float, default=0.15, help="share of customers contacted a night")
    parser.add_argument("--differ", type=float, default=0.5, help="share of decisions where the policies differ")
    parser.add_argument("--gain", type=float, default=0.10)
    parser.add_argument("--champion-value", type=float, default=0.074,
                        help="the catalogue's value a decision that --gain is a share of (section 14: 0.074)")
    parser.add_argument("--label", default="run")
    parser.add_argument("--out", help="a JSON file to add this run to (under --label)")
    parser.add_argument("--work", help="the folder for the bank and its two homes (default: the system's temp)")
    parser.add_argument("--keep", action="store_true", help="keep the bank and the two homes")
    args = parser.parse_args()

    rewards = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "rewards.yaml").read_text())
    first = dt.date(2026, 11, 20)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="crn-", dir=args.work))
    base = Paths(root / "base")
    world.start(base, customers=args.customers, days=args.days, end_date=first, seed=args.seed,
                horizon=args.nights + args.tail)
    out: dict[str, object] = {"customers": args.customers, "nights": args.nights, "tail": args.tail,
                              "days": args.days, "seed": args.seed, "contact": args.contact, "differ": args.differ}
    values, sent, cpu_s = {}, {}, {}
    for policy in ("champion", "challenger"):
        home = Paths(root / policy)
        shutil.copytree(base.home, home.home)
        cpu_s[policy], sent[policy] = live(home, first, args.customers, args.nights, args.tail, policy,
                                           args.contact, args.differ)
        values[policy] = customer_value(home, first, rewards)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    ids = values["champion"].index.union(values["challenger"].index)
    diff = values["challenger"].reindex(ids, fill_value=0) - values["champion"].reindex(ids, fill_value=0)
    decisions = sum(len(r) for r in sent["champion"].values())
    offers = {policy: {(night, r["customer_id"], r["rank"], r["action_id"]) for night, rows in sent[policy].items()
                       for r in rows} for policy in sent}
    touched = {key[1] for key in offers["champion"] ^ offers["challenger"]}
    same = pd.Series(~ids.isin(sorted(touched)), index=ids)
    differing = len({(key[0], key[1]) for key in offers["champion"] ^ offers["challenger"]})
    n = len(ids)

    def spread(d: pd.Series) -> dict[str, float]:
        return {"customers": int(len(d)), "mean_difference_per_customer": round(float(d.mean()), 4),
                "sd_per_customer": round(float(d.std(ddof=1)), 4) if len(d) > 1 else None,
                "share_nonzero": round(float((d.abs() > 1e-9).mean()), 4)}

    sigma = float(diff.std(ddof=1)) * math.sqrt(n / decisions)
    effect = args.gain * args.champion_value
    needed = {f"decisions_for_{int(p * 100)}pct": math.ceil(((Z + NormalDist().inv_cdf(p)) * sigma / effect) ** 2)
              for p in (0.5, 0.8)}
    result = {**out, "decisions": decisions, "customer_nights_that_differ": differing,
              "difference_per_decision": round(float(diff.sum()) / decisions, 4),
              "sigma_per_decision": round(sigma, 4),
              "power_at_these_decisions": round(NormalDist().cdf(effect * math.sqrt(decisions) / sigma - Z), 3),
              **needed, "all": spread(diff), "same_offers": spread(diff[same]), "different_offers": spread(diff[~same]),
              "step_cpu_seconds": {k: round(v, 2) for k, v in cpu_s.items()},
              "step_cpu_seconds_per_night": round(sum(cpu_s.values()) / (2 * (args.nights + args.tail)), 3)}
    print(json.dumps({args.label: result}, indent=2))
    if args.out:
        path = Path(args.out)
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[args.label] = result
        path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
