"""The app's signals and the customer's roles in decide, on hand-made context frames: the dashboard's role modules
(a freelancer gets tax provisioning, a retiree wealth preservation, a salaried customer neither, each with a reason
true of them), what an app user opens moves the layout (used modules rise, useful unopened ones are introduced,
then sink), and a customer who dismisses push notifications gets fewer pushes, with the reason logged."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd

from pipelines import decide
from tests.test_decide import CATALOGUE, D, customers, log_of, pol, published, response, run

FREELANCE = ("most of the income paid into your accounts in the last 180 days came from self-employed work "
             "(6 payments from 3 payers)")
PENSION = "most of the income paid into your accounts in the last 180 days was pension payments (13 payments)"


def layout_of(decisions, customer_id: str) -> pd.DataFrame:
    layout = decisions.dashboard_layout
    return layout[layout["customer_id"] == customer_id].sort_values("position").set_index("module")


def test_role_modules_follow_the_customers_income_with_their_reason():
    decisions = run(customers(
        {"is_irregular_earner": True, "irregular_earner_reason": FREELANCE, "has_regular_income": False,
         "income_regularity": 0.3},
        {"is_retiree": True, "retiree_reason": PENSION, "age": 71.0},
        {},                                                                           # salaried: neither
        {"is_irregular_earner": True, "irregular_earner_reason": FREELANCE, "is_personalization_allowed": False},
    ))
    freelancer, retiree = layout_of(decisions, "C0000"), layout_of(decisions, "C0001")
    salaried, no_consent = layout_of(decisions, "C0002"), layout_of(decisions, "C0003")
    assert freelancer.loc["tax_provisioning", "reason"] == FREELANCE + ": set money aside for the tax on it"
    assert freelancer.loc["tax_provisioning", "status"] == "needed"
    assert "wealth_preservation" not in freelancer.index
    # irregular income puts the cash-flow view first, tax provisioning right after it
    assert list(freelancer.index[:2]) == ["cash_flow_view", "tax_provisioning"]
    assert retiree.loc["wealth_preservation", "reason"] == PENSION + ": plan how your savings and pension last"
    assert retiree.index[0] == "wealth_preservation" and "tax_provisioning" not in retiree.index
    assert not {"tax_provisioning", "wealth_preservation"} & set(salaried.index)
    assert list(no_consent.index) == ["accounts_overview", "spending_insights"]       # default layout only
    assert set(decisions.dashboard_layout["status"]) <= set(decide.LAYOUT_STATUSES)


def app_user(**fields) -> dict:
    return {"is_app_user": True, "app_active_days": 40.0, "app_days_accounts_overview": 30.0,
            "app_days_spending_insights": 0.0} | fields


def test_what_an_app_user_opens_moves_the_layout():
    context = customers(
        # saves (savings goals), many bills: uses savings goals a lot, never opened the bills calendar
        app_user(app_days_savings_goals=30.0, n_outgoing_streams=8.0),
        # the same, the bills calendar introduced 20 nights ago and still never opened: it sinks
        app_user(app_days_savings_goals=30.0, n_outgoing_streams=8.0,
                 introduced_on_bills_calendar=pd.Timestamp(D - timedelta(days=20))),
        # introduced 5 nights ago: still new, with its first night kept
        app_user(n_outgoing_streams=8.0, introduced_on_bills_calendar=pd.Timestamp(D - timedelta(days=5))),
        # uses travel money although nothing flags travel; searched for wealth preservation
        app_user(app_days_travel_money=12.0, app_searches_wealth_preservation=2.0, app_days_accounts_overview=1.0),
        # in trouble and never opens money help: protective, it never sinks
        app_user(p_shortfall_30=0.7, card_over_limit=True, safe_to_save=0.0),
        # the same data without app use: the layout of the data alone
        {"n_outgoing_streams": 8.0, "is_app_user": False, "app_days_spending_insights": 0.0},
    )
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol())
    saver = layout_of(decisions, "C0000")
    assert saver.index[0] == "savings_goals" and saver.loc["savings_goals", "status"] == "used"
    assert saver.loc["savings_goals", "reason"] == ("there is money that is safe to save; you opened it on 30 days "
                                                    "in the last 90 days")
    assert saver.loc["bills_calendar", "status"] == "new"
    assert saver.loc["bills_calendar", "reason"] == "new for you: many regular payments go out"
    assert saver.loc["bills_calendar", "introduced_on"] == pd.Timestamp(D)
    assert saver.loc["accounts_overview", "status"] == "used"                        # opened on 30 days: it rises
    # used first, the new one next, a default never opened sinks to the bottom
    assert list(saver.index) == ["savings_goals", "bills_calendar", "accounts_overview", "spending_insights"]
    assert saver.loc["spending_insights", "reason"] == "default module; not opened in the app in the last 90 days"
    stale = layout_of(decisions, "C0001")
    assert list(stale.index) == ["savings_goals", "accounts_overview", "bills_calendar", "spending_insights"]
    assert stale.loc["bills_calendar", "status"] == "not_opened"                     # sunk below what they use
    assert stale.loc["bills_calendar", "reason"] == ("many regular payments go out; not opened in the app in the last "
                                                     "90 days")
    assert stale.loc["bills_calendar", "introduced_on"] == pd.Timestamp(D - timedelta(days=20))
    fresh = layout_of(decisions, "C0002")
    # both useful and never opened: new, the bills calendar since its first night, savings goals from tonight
    assert list(fresh.index[:2]) == ["savings_goals", "bills_calendar"] and set(fresh["status"][:2]) == {"new"}
    assert fresh.loc["bills_calendar", "introduced_on"] == pd.Timestamp(D - timedelta(days=5))
    assert fresh.loc["savings_goals", "introduced_on"] == pd.Timestamp(D)
    traveller = layout_of(decisions, "C0003")
    assert traveller.loc["travel_money", "status"] == "used"
    assert traveller.loc["travel_money", "reason"] == "you opened it on 12 days in the last 90 days"
    assert traveller.loc["accounts_overview", "reason"] == "you opened it on 1 day in the last 90 days"
    assert traveller.loc["wealth_preservation", "status"] == "new"
    assert traveller.loc["wealth_preservation", "reason"] == ("new for you: you searched the app for it in the last "
                                                              "90 days")
    trouble = layout_of(decisions, "C0004")
    assert trouble.index[0] == "money_help" and trouble.loc["money_help", "status"] == "needed"
    plain = layout_of(decisions, "C0005")
    assert plain.loc["bills_calendar", "status"] == "needed" and set(plain["status"]) <= {"needed", "default"}
    assert plain["introduced_on"].isna().all()


def test_the_layout_speaks_only_of_the_days_the_apps_events_cover():
    """The bank's app events begin 20 days before D (delivered for less than the window): the reasons speak of 21
    days, not 90."""
    context = customers(app_user(app_days_savings_goals=5.0, app_searches_travel_money=1.0,
                                 app_data_since=pd.Timestamp(D - timedelta(days=20))))
    layout = layout_of(run(context), "C0000")
    assert layout.loc["savings_goals", "reason"] == ("there is money that is safe to save; you opened it on 5 days in "
                                                     "the last 21 days")
    assert layout.loc["travel_money", "reason"] == "new for you: you searched the app for it in the last 21 days"
    assert layout.loc["spending_insights", "reason"] == "default module; not opened in the app in the last 21 days"


def test_money_help_is_placed_by_need_alone_and_never_reveals_its_use():
    """A visit to money help is restricted data (docs/access.md): the layout, which every analyst reads, shows money
    help where the need puts it, whether or not the customer opened or searched for it."""
    context = customers(
        app_user(app_days_money_help=10.0, app_searches_money_help=3.0),                       # no need: not shown
        app_user(app_days_money_help=10.0, p_shortfall_30=0.7, card_over_limit=True, safe_to_save=0.0),
        app_user(p_shortfall_30=0.7, card_over_limit=True, safe_to_save=0.0))                  # never opened it
    decisions = run(context)
    assert "money_help" not in layout_of(decisions, "C0000").index
    used, unopened = layout_of(decisions, "C0001"), layout_of(decisions, "C0002")
    assert used.loc["money_help", "status"] == unopened.loc["money_help", "status"] == "needed"
    assert used.loc["money_help", "reason"] == unopened.loc["money_help", "reason"] == decide.MODULE_WHY["money_help"]
    assert used.index.get_loc("money_help") == unopened.index.get_loc("money_help") == 0


def test_a_searched_module_never_opened_leaves_after_its_introduction():
    context = customers(app_user(app_searches_wealth_preservation=2.0,
                                 introduced_on_wealth_preservation=pd.Timestamp(D - timedelta(days=30))))
    assert "wealth_preservation" not in layout_of(run(context), "C0000").index


FATIGUE = "dismissed 7 of the 8 push notifications they answered in the last 60 days"


def test_a_customer_who_dismisses_push_gets_fewer_with_the_reason_logged():
    tired = {"is_push_fatigued": True, "push_fatigue_reason": FATIGUE, "push_dismissed": 7.0, "push_answered": 8.0}
    context = customers({"p_shortfall_30": 0.6}, {"p_shortfall_30": 0.6} | tired,
                        {"p_shortfall_30": 0.6, "is_personalization_allowed": False} | tired)
    decisions = run(context)
    nba = decisions.next_best_actions.set_index(["customer_id", "action_id"])
    assert nba.loc[("C0000", "shortfall_warning"), "channel"] == "push"
    assert nba.loc[("C0001", "shortfall_warning"), "channel"] == "inapp"             # push after the others
    row = log_of(decisions, "C0001", "shortfall_warning")
    assert row["stage"].astype(str).tolist() == ["contact_policy"]
    assert row["reason"].astype(str).tolist() == [f"the customer {FATIGUE}: sent by inapp instead of push"]
    # without personalization the app's signals feed nothing: push as usual
    assert nba.loc[("C0002", "shortfall_warning"), "channel"] == "push"
    assert decisions.metrics["n_push_fatigued"] == 1 and decisions.metrics["push_fatigue_rerouted_rows"] == 1
    # every customer x action is published or dropped exactly once; the channel moves are the extra rows
    log = decisions.decision_log
    keys = log["customer_id"].astype(str) + "|" + log["action_id"].astype(str)
    sent = set(decisions.next_best_actions["customer_id"] + "|" + decisions.next_best_actions["action_id"])
    moved = keys.isin(sent)
    assert log.loc[moved, "reason"].astype(str).str.endswith("instead of push").all() and moved.sum() == 1
    assert (~moved).sum() + len(decisions.next_best_actions) == len(context) * len(CATALOGUE)


def test_push_fatigue_lowers_the_weekly_push_cap():
    """In-app and email are full this week and one push went out: a bill reminder may still go by push (cap 2), but
    not to a customer who dismisses most pushes (cap 1)."""
    tired = {"is_push_fatigued": True, "push_fatigue_reason": FATIGUE}
    service_only = {"n_outgoing_streams": 6.0} | {f"is_marketing_{c}_allowed": False
                                                   for c in ("email", "sms", "push", "inapp")}
    context = customers(service_only, service_only | tired)
    responses = pd.DataFrame([
        response(c, "isa", channel, "delivered", 2, rec=f"R-{c}-{channel}-{k}")
        for c in ("C0000", "C0001")
        for channel, k_max in (("inapp", 3), ("email", 2), ("push", 1)) for k in range(k_max)])
    decisions = run(context, responses, top_k=30)
    nba = decisions.next_best_actions.set_index(["customer_id", "action_id"])
    assert nba.loc[("C0000", "bill_reminder"), "channel"] == "push"
    assert "bill_reminder" not in published(decisions, "C0001")
    row = log_of(decisions, "C0001", "bill_reminder")
    assert row["stage"].astype(str).tolist() == ["contact_policy"]
    assert row["reason"].astype(str).iloc[0].endswith(
        "push is capped at 1 a week for this customer, who dismisses most push notifications")
