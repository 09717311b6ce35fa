"""The profile stage's pure function on hand-made frames: app usage and push fatigue from the app's events, roles
from the customer's own income (a freelancer, a retiree, a salaried customer who is neither), and the consent gate
(without personalization the events and the postings feed nothing)."""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from pipelines import profiles

D = date(2026, 11, 20)


def days_ago(k: int) -> date:
    return D - timedelta(days=k)


def ev(customer: str, k: int, event_type: str, target: str, channel: str = "app", n: int = 1) -> dict:
    return {"customer_id": customer, "day": days_ago(k), "event_type": event_type, "target": target,
            "channel": channel, "n": n}


def consents(*allowed: str, open_banking: tuple[str, ...] = (), refused: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = [{"customer_id": c, "is_personalization_allowed": True, "is_open_banking_allowed": c in open_banking}
            for c in allowed]
    rows += [{"customer_id": c, "is_personalization_allowed": False, "is_open_banking_allowed": True}
             for c in refused]
    return pd.DataFrame(rows)


NO_CREDITS = pd.DataFrame(columns=profiles.CREDIT_COLUMNS)
NO_EVENTS = pd.DataFrame(columns=profiles.EVENT_COLUMNS)
NOBODY = pd.DataFrame({"customer_id": pd.Series(dtype=object), "birth_year": pd.Series(dtype=float)})


def test_app_usage_and_push_fatigue():
    events = pd.DataFrame(
        [ev("C_USER", k, "screen_viewed", "cash_flow_view", n=2) for k in (1, 3, 5, 8, 13)]
        + [ev("C_USER", 2, "feature_used", "savings_goals"), ev("C_USER", 2, "screen_viewed", "savings_goals"),
           ev("C_USER", 4, "searched", "tax_provisioning"), ev("C_USER", 120, "screen_viewed", "travel_money")]
        + [ev("C_USER", k, "notification_dismissed", "spending_insights", "push") for k in (1, 6, 9, 12, 20, 30, 40)]
        + [ev("C_USER", 7, "notification_opened", "cash_flow_view", "push"),
           ev("C_USER", 70, "notification_opened", "cash_flow_view", "push", n=9),  # outside the push window
           ev("C_USER", 3, "notification_opened", "savings_goals", "inapp")]
        + [ev("C_LIGHT", 10, "screen_viewed", "accounts_overview")]
        + [ev("C_LIGHT", 5, "notification_opened", "accounts_overview", "push"),
           ev("C_LIGHT", 6, "notification_dismissed", "accounts_overview", "push")]
        + [ev("C_NOCONSENT", k, "screen_viewed", "money_help") for k in range(1, 20)]
        + [ev("C_FUTURE", -1, "screen_viewed", "home")])
    out = profiles.profile_frames(events, NO_CREDITS, NOBODY,
                                  consents("C_USER", "C_LIGHT", "C_FUTURE", refused=("C_NOCONSENT",)), D)
    usage = out.app_usage.set_index(["customer_id", "target"])
    assert "C_NOCONSENT" not in set(out.app_usage["customer_id"]) | set(out.app_signals["customer_id"])
    assert "C_FUTURE" not in set(out.app_signals["customer_id"])                         # after D: not counted
    flow = usage.loc[("C_USER", "cash_flow_view")]
    # opened on 7 days: 5 with views, 2 by opening a notification about it (a notification opens its area)
    assert (flow.n_views, flow.n_days_used, flow.last_used_on) == (10, 7, days_ago(1))
    assert flow.n_notifications_opened == 10          # within the 90-day app window (not the 60-day push window)
    goals = usage.loc[("C_USER", "savings_goals")]
    assert (goals.n_views, goals.n_feature_uses, goals.n_days_used, goals.n_notifications_opened) == (1, 1, 2, 1)
    tax = usage.loc[("C_USER", "tax_provisioning")]
    assert (tax.n_searches, tax.n_days_used) == (1, 0) and pd.isna(tax.last_used_on)  # searched, never opened
    assert ("C_USER", "travel_money") not in usage.index                                # 120 days ago
    signals = out.app_signals.set_index("customer_id")
    user = signals.loc["C_USER"]
    assert user.is_app_user and user.n_active_days == 9   # dismissal-only days do not count
    assert (user.n_push_dismissed, user.n_push_opened, user.n_inapp_opened) == (7, 1, 1)
    assert user.is_push_fatigued and user.push_dismiss_share == 0.875
    assert user.push_fatigue_reason == "dismissed 7 of the 8 push notifications they answered in the last 60 days"
    # the shard's first app event in the 90-day window is 70 days ago: the 60-day push window is covered
    assert set(out.app_signals["app_data_since"]) == {days_ago(70)}
    # a bank that started delivering the app's events 20 days ago: the reason speaks of those 21 days
    recent = events[pd.to_datetime(events["day"]).dt.date >= days_ago(20)]
    out = profiles.profile_frames(recent, NO_CREDITS, NOBODY, consents("C_USER", "C_LIGHT"), D)
    user = out.app_signals.set_index("customer_id").loc["C_USER"]
    assert user.push_fatigue_reason == "dismissed 5 of the 6 push notifications they answered in the last 21 days"
    light = signals.loc["C_LIGHT"]
    assert light.n_active_days == 2 and not light.is_app_user          # a view and an opened push: 2 days
    assert not light.is_push_fatigued and pd.isna(light.push_fatigue_reason)
    assert light.push_dismiss_share == 0.5


def credit(customer: str, text: str, channel: str, amount: float, payer: str, n: int = 1,
           source: str = "core") -> dict:
    return {"customer_id": customer, "source": source, "text": text, "channel": channel, "payer": payer, "n": n,
            "amount": amount}


PEOPLE = pd.DataFrame({"customer_id": ["C_FREELANCE", "C_RETIRED", "C_SALARIED", "C_OLD_WORKER", "C_SIDE_GIG",
                                       "C_YOUNG_PENSION", "C_OB_FREELANCE", "C_NOCONSENT"],
                       "birth_year": [1988, 1955, 1980, 1957, 1990, 1986, 1985, 1970]})


def test_roles_from_the_customers_own_income():
    credits = pd.DataFrame([
        # a freelancer: client payments from three payers, a little child benefit
        credit("C_FREELANCE", "UPWORK GLOBAL PAYMENT", "transfer_in", 4200.0, "CLI0001", n=3),
        credit("C_FREELANCE", "STUDIO NORTH LTD PAYMENT", "transfer_in", 2600.0, "CLI0003", n=2),
        credit("C_FREELANCE", "STRIPE PAYMENTS UK PAYMENT", "transfer_in", 900.0, "CLI0006"),
        credit("C_FREELANCE", "HMRC CHILD BENEFIT", "benefit", 600.0, "HMRC", n=6),
        credit("C_FREELANCE", "FROM PARTNER VIA MONZO", "transfer_in", 3000.0, "PTN0001", n=6),  # not income
        # a retiree: state and private pensions
        credit("C_RETIRED", "DWP STATE PENSION", "benefit", 4800.0, "DWP", n=7),
        credit("C_RETIRED", "AVIVA PENSION PAYMENT", "transfer_in", 3000.0, "PEN0000", n=6),
        # salaried: neither
        credit("C_SALARIED", "ACME LTD SALARY", "salary", 15000.0, "EMP0001", n=6),
        # past pension age but still salaried: not a retiree
        credit("C_OLD_WORKER", "ACME LTD SALARY", "salary", 12000.0, "EMP0001", n=6),
        credit("C_OLD_WORKER", "NEST PENSION PAYMENT", "transfer_in", 600.0, "PEN0004", n=6),
        # a salary and a side gig: the gig is not most of the income
        credit("C_SIDE_GIG", "ACME LTD SALARY", "salary", 12000.0, "EMP0001", n=6),
        credit("C_SIDE_GIG", "PAYPAL TRANSFER PAYMENT", "transfer_in", 800.0, "CLI0005", n=4),
        # a pension under 55 (e.g. a survivor's pension): not a retiree
        credit("C_YOUNG_PENSION", "LEGAL & GENERAL PENSION PAYMENT", "transfer_in", 6000.0, "PEN0001", n=6),
        # self-employed income seen only at another bank, whose open_banking consent is withdrawn on D
        credit("C_OB_FREELANCE", "FIVERR INTL PAYMENT", "transfer_in", 5000.0, "CLI0002", n=5, source="openbanking"),
        credit("C_OB_FREELANCE", "DWP UC", "benefit", 1000.0, "DWP", n=6),
        # without personalization nothing is inferred
        credit("C_NOCONSENT", "UPWORK GLOBAL PAYMENT", "transfer_in", 9000.0, "CLI0001", n=6),
    ])
    allowed = ("C_FREELANCE", "C_RETIRED", "C_SALARIED", "C_OLD_WORKER", "C_SIDE_GIG", "C_YOUNG_PENSION",
               "C_OB_FREELANCE")
    roles = profiles.profile_frames(NO_EVENTS, credits, PEOPLE, consents(*allowed, refused=("C_NOCONSENT",)),
                                    D).customer_roles
    got = {(r.customer_id, r.role): r for r in roles.itertuples()}
    assert set(got) == {("C_FREELANCE", "irregular_earner"), ("C_RETIRED", "retiree")}
    freelance = got[("C_FREELANCE", "irregular_earner")]
    assert (freelance.n_payments, freelance.n_payers, freelance.amount) == (6, 3, 7700.0)
    assert freelance.income_share == round(7700 / 8300, 4)
    assert freelance.reason == ("most of the income paid into your accounts in the last 180 days came from "
                                "self-employed work (6 payments from 3 payers)")
    retired = got[("C_RETIRED", "retiree")]
    assert (retired.n_payments, retired.n_payers, retired.income_share) == (13, 2, 1.0)
    assert retired.reason == ("most of the income paid into your accounts in the last 180 days was pension payments "
                              "(13 payments)")
    # with the open_banking consent the same credits make an irregular earner
    roles = profiles.profile_frames(NO_EVENTS, credits, PEOPLE,
                                    consents(*allowed, open_banking=("C_OB_FREELANCE",)), D).customer_roles
    assert ("C_OB_FREELANCE", "irregular_earner") in {(r.customer_id, r.role) for r in roles.itertuples()}


def test_role_reasons_speak_only_of_what_the_data_shows():
    """A bank whose history in the shard begins 44 days before D: the reasons speak of 45 days, not the 180 of the
    window. Income at another bank counts only from its first fetched posting. Payers are counted only when every
    payment names one. Exactly half of the income is not "most" of it."""
    credits = pd.DataFrame([
        credit("C_NEW", "SUMUP PAYOUT", "other", 900.0, None, n=2),              # no counterparty id
        credit("C_NEW", "INVOICE 7 BLUE DOOR MEDIA", "transfer_in", 700.0, "CLI0009"),
        credit("C_HALF", "UPWORK GLOBAL PAYMENT", "transfer_in", 3000.0, "CLI0001", n=3),
        credit("C_HALF", "ACME LTD SALARY", "salary", 3000.0, "EMP0001", n=3),
        credit("C_ONE", "NEST PENSION PAYMENT", "transfer_in", 5000.0, "PEN0004", n=1),
        credit("C_ONE", "DWP STATE PENSION", "benefit", 900.0, "DWP", n=1),
        credit("C_ONE", "ACME LTD SALARY", "salary", 100.0, "EMP0001", n=1),
        credit("C_OB", "FIVERR INTL PAYMENT", "transfer_in", 4000.0, "CLI0002", n=4, source="openbanking"),
    ])
    coverage = pd.DataFrame([
        {"customer_id": "C_NEW", "source": "core", "first_day": pd.Timestamp(days_ago(30))},
        {"customer_id": "C_HALF", "source": "core", "first_day": pd.Timestamp(days_ago(44))},   # the shard's first
        {"customer_id": "C_ONE", "source": "core", "first_day": pd.Timestamp(days_ago(40))},
        # the aggregator's postings of C_OB begin 20 days ago; those of C_NEW (no open_banking consent) never count
        {"customer_id": "C_OB", "source": "openbanking", "first_day": pd.Timestamp(days_ago(20))},
        {"customer_id": "C_NEW", "source": "openbanking", "first_day": pd.Timestamp(days_ago(10))},
    ])
    people = pd.DataFrame({"customer_id": ["C_NEW", "C_HALF", "C_ONE", "C_OB"],
                           "birth_year": [1990, 1980, 1950, 1985]})
    roles = profiles.profile_frames(NO_EVENTS, credits, people,
                                    consents("C_NEW", "C_HALF", "C_ONE", "C_OB", open_banking=("C_OB",)), D,
                                    coverage=coverage).customer_roles
    got = {(r.customer_id, r.role): r.reason for r in roles.itertuples()}
    assert got == {
        ("C_NEW", "irregular_earner"): "most of the income paid into your accounts in the last 45 days came from "
                                       "self-employed work (3 payments)",
        ("C_ONE", "retiree"): "most of the income paid into your accounts in the last 45 days was pension payments "
                              "(2 payments)",
        ("C_OB", "irregular_earner"): "most of the income paid into your accounts in the last 21 days came from "
                                      "self-employed work (4 payments from 1 payer)"}
    # with the whole window covered, the window
    full = coverage.assign(first_day=pd.Timestamp(days_ago(400)))
    roles = profiles.profile_frames(NO_EVENTS, credits, people, consents("C_NEW", "C_HALF", "C_ONE"), D,
                                    coverage=full[full["source"] == "core"]).customer_roles
    assert set(roles["reason"].str.extract(r"in the last (\d+) days")[0]) == {"180"}


def test_income_kinds_match_whole_words_only():
    credits = pd.DataFrame([
        credit("C", "REPAYMENT RECEIVED", "transfer_in", 10.0, "X"),        # REPAYMENT is not PAYMENT
        credit("C", "INVOICE 2231 BLUE DOOR MEDIA", "transfer_in", 10.0, "X"),
        credit("C", "SUMUP PAYOUT", "other", 10.0, "X"),
        credit("C", "CLIENT PAYMENT", "card", 10.0, "X"),                   # a card refund channel: not income
        credit("C", "ROYAL LONDON PENSION", "transfer_in", 10.0, "X"),
        credit("C", "DWP UC", "benefit", 10.0, "X"),
        credit("C", "ACME SALARY", "salary", 10.0, "X"),
    ])
    kinds = profiles.income_kinds(credits, profiles.settings()["roles"]).tolist()
    assert kinds == [None, "self_employed", "self_employed", None, "pension", "benefit", "salary"]


def test_profile_context_is_one_row_per_customer_with_every_area():
    events = pd.DataFrame([ev("C1", k, "screen_viewed", "savings_goals") for k in (1, 2, 3)]
                          + [ev("C1", 1, "searched", "wealth_preservation")]
                          + [ev("C2", 1, "notification_dismissed", "home", "push", n=5)])
    credits = pd.DataFrame([credit("C3", "DWP STATE PENSION", "benefit", 5000.0, "DWP", n=6)])
    people = pd.DataFrame({"customer_id": ["C1", "C2", "C3"], "birth_year": [1980, 1980, 1950]})
    out = profiles.profile_frames(events, credits, people, consents("C1", "C2", "C3"), D)
    ctx = profiles.profile_context(out.app_usage, out.app_signals, out.customer_roles).set_index("customer_id")
    assert sorted(ctx.index) == ["C1", "C2", "C3"]
    assert ctx.loc["C1", "app_days_savings_goals"] == 3 and ctx.loc["C1", "app_searches_wealth_preservation"] == 1
    assert ctx.loc["C1", "app_days_tax_provisioning"] == 0 and bool(ctx.loc["C1", "is_app_user"])
    assert bool(ctx.loc["C2", "is_push_fatigued"]) and ctx.loc["C2", "push_answered"] == 5
    assert ctx.loc["C3", "is_retiree"] is True and pd.isna(ctx.loc["C1", "is_retiree"])
    assert all(f"app_days_{t}" in ctx.columns for t in profiles.app_targets())
