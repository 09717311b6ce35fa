"""Hand-made customers through the real history load, a night's ingest and conform, the profile stage and decide
(issue 16 items 3-4): a freelancer paid by clients gets tax provisioning and a retiree living on pensions wealth
preservation, each with a reason true of them; a salaried customer gets neither; the freelancer dismisses push
notifications in the app and gets a bill reminder in the app instead of by push, the reason logged; a customer
without personalization consent who uses the app and lives on self-employed income gets nothing of it."""
from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
import yaml

from pipelines import decide, lake, profiles
from pipelines.config import Paths
from pipelines.stages import conform, ingest, load_history, update_features, validate_profiles
from tests.landing_builder import LandingBank, _write_csv

D = date(2026, 9, 30)
HISTORY_END = D - timedelta(days=1)
GRANTED = datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc)
APP_COLUMNS = ["event_id", "customer_id", "occurred_at", "event_type", "target", "channel"]


def monthly(day_of_month: int, months=range(1, 10)) -> list[date]:
    return [date(2026, m, day_of_month) for m in months if date(2026, m, day_of_month) <= HISTORY_END]


def person(bank: LandingBank, customer_id: str, birth_year: int, consents=("personalization",)) -> str:
    bank.customer(customer_id, birth_year=birth_year)
    account = f"A_{customer_id}"
    bank.account(account, customer_id, date(2024, 1, 1), opening_balance=3000)
    bank.card_spending(account, date(2026, 1, 1), HISTORY_END)
    for i in range(5):                                        # five regular bills: a bill reminder applies
        bank.monthly(account, monthly(5 + i), "-15.00", "direct_debit", f"BILLER-{i}", f"BILLER {i} DD")
    for purpose in consents:
        bank.consent(customer_id, purpose, True, GRANTED)
    return account


def freelance_income(bank: LandingBank, account: str) -> None:
    clients = [("CLI0001", "UPWORK GLOBAL PAYMENT"), ("CLI0002", "STUDIO NORTH LTD PAYMENT"),
               ("CLI0003", "STRIPE PAYMENTS UK PAYMENT")]
    for k, day in enumerate([date(2026, 4, 11), date(2026, 5, 3), date(2026, 5, 29), date(2026, 7, 14),
                             date(2026, 8, 2), date(2026, 9, 18)]):
        counterparty, text = clients[k % 3]
        bank.post(account, day, f"{1800 + 150 * k}.00", "transfer_in", description=text, counterparty_id=counterparty)


def make_bank() -> LandingBank:
    bank = LandingBank(end=HISTORY_END)
    freelancer = person(bank, "C_FREELANCE", 1988)
    freelance_income(bank, freelancer)
    retiree = person(bank, "C_RETIRED", 1952)
    bank.monthly(retiree, monthly(8), "950.00", "benefit", "DWP", "DWP STATE PENSION")
    bank.monthly(retiree, monthly(1), "640.00", "transfer_in", "PEN0002", "AVIVA PENSION PAYMENT")
    salaried = person(bank, "C_SALARIED", 1980)
    bank.monthly(salaried, monthly(25), "2600.00", "salary", "EMP0001", "ACME LTD SALARY")
    no_consent = person(bank, "C_NOCONSENT", 1985, consents=())
    freelance_income(bank, no_consent)
    for customer in ("C_FREELANCE", "C_RETIRED", "C_SALARIED", "C_NOCONSENT"):
        bank.consent(customer, "marketing_push", True, GRANTED)
        bank.consent(customer, "marketing_inapp", True, GRANTED)
    return bank


def app_events() -> list[dict]:
    """The freelancer and the customer without consent use the app most days and dismiss nearly every push; the
    freelancer searched for tax once."""
    rows = []
    for customer in ("C_FREELANCE", "C_NOCONSENT"):
        for k in range(1, 40):
            day = HISTORY_END - timedelta(days=k)
            stamp = f"{day.isoformat()}T{8 + k % 10:02d}:15:00+00:00"
            rows.append({"event_id": f"E-{customer}-{k}-v", "customer_id": customer, "occurred_at": stamp,
                         "event_type": "screen_viewed", "target": "accounts_overview", "channel": "app"})
            if k % 4 == 0:
                rows.append({"event_id": f"E-{customer}-{k}-p", "customer_id": customer, "occurred_at": stamp,
                             "event_type": "notification_dismissed", "target": "spending_insights",
                             "channel": "push"})
        rows.append({"event_id": f"E-{customer}-s", "customer_id": customer,
                     "occurred_at": f"{(HISTORY_END - timedelta(days=3)).isoformat()}T20:00:00+00:00",
                     "event_type": "searched", "target": "tax_provisioning", "channel": "app"})
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("profiles-e2e") / "segone"
    home.mkdir()
    # Two customer buckets instead of 16 (a SEGONE_SETTINGS overlay): the profile stage runs every shard, and 16
    # shards of a handful of customers are 16 calls of the same fixed cost, most of them on no customer.
    overlay = home.parent / "settings.yaml"
    overlay.write_text(yaml.safe_dump({"segone": {"lake": {"n_buckets": 2}}}), encoding="utf-8")
    saved = {name: os.environ.get(name) for name in ("SEGONE_HOME", "SEGONE_SETTINGS")}
    os.environ["SEGONE_HOME"] = str(home)
    os.environ["SEGONE_SETTINGS"] = str(overlay)
    try:
        paths = Paths(home)
        bank = make_bank()
        bank.write(paths.landing_history)
        _write_csv(paths.landing_history / "app_events.csv", APP_COLUMNS, app_events())
        loaded = load_history(paths)
        assert loaded["conform"]["quarantined"] == 0
        night = paths.landing_day(D.isoformat())
        night.mkdir(parents=True)
        _write_csv(night / "balances.csv", ["account_id", "as_of", "balance"], [
            {"account_id": a.account_id, "as_of": D.isoformat(), "balance": f"{a.reported(D):.2f}"}
            for a in bank.accounts.values()])
        ingest(paths, D)
        conform(paths, D)
        update_features(paths, D)
        for bucket in profiles.shards():
            profiles.profile_shard(paths, D, bucket)
        checked = validate_profiles(paths, D)
        buckets = sorted({int(b) for b in lake.bucket_of(bank.customers)})
        for bucket in buckets:
            decide.decide_next_best_actions(paths, D, bucket)

        def gold(table: str) -> pd.DataFrame:
            return pd.read_parquet(lake.partition_path(paths, "gold", table, as_of=D.isoformat()))

        yield {"paths": paths, "checked": checked, "roles": gold("customer_roles"), "signals": gold("app_signals"),
               "usage": gold("app_usage"), "layout": gold("dashboard_layout"), "nba": gold("next_best_actions"),
               "log": gold("decision_log")}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def layout(world, customer_id: str) -> pd.DataFrame:
    rows = world["layout"]
    return rows[rows["customer_id"] == customer_id].sort_values("position").set_index("module")


def test_roles_are_true_of_each_customer(world):
    roles = {(r.customer_id, r.role): r for r in world["roles"].itertuples()}
    assert set(roles) == {("C_FREELANCE", "irregular_earner"), ("C_RETIRED", "retiree")}
    freelance = roles[("C_FREELANCE", "irregular_earner")]
    assert (freelance.n_payments, freelance.n_payers, freelance.income_share) == (6, 3, 1.0)
    assert freelance.reason == ("most of the income paid into your accounts in the last 180 days came from "
                                "self-employed work (6 payments from 3 payers)")
    retired = roles[("C_RETIRED", "retiree")]
    # the 8th of April to September and the 1st of May to September: 11 in the 180 days up to D
    assert retired.reason == ("most of the income paid into your accounts in the last 180 days was pension payments "
                              "(11 payments)")
    assert world["checked"]["validation"]["passed"]


def test_the_layout_shows_each_role_with_its_reason(world):
    freelancer, retiree, salaried = (layout(world, c) for c in ("C_FREELANCE", "C_RETIRED", "C_SALARIED"))
    assert freelancer.loc["tax_provisioning", "reason"] == (
        "new for you: most of the income paid into your accounts in the last 180 days came from self-employed work "
        "(6 payments from 3 payers): set money aside for the tax on it")                                # an app user who never opened it
    assert freelancer.loc["tax_provisioning", "status"] == "new"
    assert str(freelancer.loc["tax_provisioning", "introduced_on"])[:10] == D.isoformat()
    assert retiree.loc["wealth_preservation", "reason"] == (
        "most of the income paid into your accounts in the last 180 days was pension payments (11 payments): plan how "
        "your savings and pension last")
    assert retiree.loc["wealth_preservation", "status"] == "needed"                  # not an app user: no intro tag
    assert not {"tax_provisioning", "wealth_preservation"} & set(salaried.index)
    assert freelancer.loc["accounts_overview", "status"] == "used"
    # the bank's app events begin 40 days before D: the layout speaks of those 41 days
    assert freelancer.loc["accounts_overview", "reason"] == "you opened it on 39 days in the last 41 days"
    assert list(layout(world, "C_NOCONSENT").index) == ["accounts_overview", "spending_insights"]


def test_push_fatigue_sends_the_bill_reminder_in_the_app(world):
    signals = world["signals"].set_index("customer_id")
    assert set(signals.index) == {"C_FREELANCE"}                                     # consent gate
    assert bool(signals.loc["C_FREELANCE", "is_push_fatigued"])
    assert "C_NOCONSENT" not in set(world["usage"]["customer_id"])
    nba = world["nba"].set_index(["customer_id", "action_id"])
    assert nba.loc[("C_SALARIED", "bill_reminder"), "channel"] == "push"
    assert nba.loc[("C_FREELANCE", "bill_reminder"), "channel"] == "inapp"
    assert ("C_NOCONSENT", "bill_reminder") not in nba.index                        # it needs personalization
    log = world["log"]
    row = log[(log["customer_id"] == "C_FREELANCE") & (log["action_id"] == "bill_reminder")]
    assert row["stage"].tolist() == ["contact_policy"]
    assert row["reason"].tolist() == [
        # the bank's app events begin 40 days before D: the reason speaks of those 41 days
        "the customer dismissed 9 of the 9 push notifications they answered in the last 41 days: sent by inapp "
        "instead of push"]
