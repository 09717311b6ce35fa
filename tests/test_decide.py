"""The next-best-action funnel on hand-made context frames (the pure function), plus one run through decide_shard
on a copied simulated lake."""
from __future__ import annotations

import copy
import hashlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import decide, lake
from pipelines.actions import MARKETING_PURPOSE_OF_CHANNEL, load_catalogue
from pipelines.config import Paths

D = date(2026, 11, 20)
CATALOGUE = load_catalogue()
BY_ID = {a.id: a for a in CATALOGUE}
CREDIT = {a.id for a in CATALOGUE if a.is_credit}
PROTECTIVE = {a.id for a in CATALOGUE if a.action_class == "protective"}


def pol(**changes) -> dict:
    out = copy.deepcopy(decide.policy())
    out["control_share"] = 0.0          # hand-made customers: no control group unless a test asks for it
    # ... and no staffed capacity limit (a share of a handful of customers is no call at all) unless a test asks
    out["capacity"] = copy.deepcopy(out["capacity"])
    out["capacity"]["channels"] = {ch: {"per_night": 10 ** 6} for ch in out["capacity"]["channels"]}
    out["capacity"]["advisor_queue"] = {"per_night": 10 ** 6}
    for key, value in changes.items():
        out[key] = value
    return out


HEALTHY = dict(
    age=40.0, region="London", known_vulnerability=None, tenure_days=2000.0,
    has_current=True, has_savings=False, has_credit_card=False, has_loan=False, has_mortgage=False,
    has_external_current=False, card_over_limit=False,
    balance_now=3000.0, balance_min_30=1500.0, n_days_negative_30=0.0, n_days_negative_90=0.0,
    overdraft_limit=500.0, headroom_now=3500.0, share_gambling_90=0.0, share_travel_90=0.0,
    has_regular_income=True, is_income_stopped=False, income_90=9000.0, monthly_recurring_income=3000.0,
    monthly_recurring_outgoings=1000.0, n_outgoing_streams=2.0, n_fees_90=0.0, savings_balance=0.0,
    income_regularity=0.95, p_shortfall_30=0.01, p_shortfall_60=0.02, p_shortfall_90=0.03,
    min_balance_p10_30=2500.0, expected_shortfall_date=None, safe_to_save=1500.0, confidence="high",
    is_personalization_allowed=True, is_life_events_allowed=True, is_service_alerts_allowed=True,
    is_marketing_email_allowed=True, is_marketing_sms_allowed=True, is_marketing_push_allowed=True,
    is_marketing_inapp_allowed=True, has_life_events=True,
)


def customers(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([HEALTHY | {"customer_id": f"C{i:04d}"} | row for i, row in enumerate(rows)])


def run(context, responses=None, **policy_changes) -> decide.Decisions:
    return decide.decide_frame(context, D, responses, CATALOGUE, pol(**policy_changes))


def log_of(decisions, customer_id, action_id) -> pd.DataFrame:
    log = decisions.decision_log
    return log[(log["customer_id"].astype(str) == customer_id) & (log["action_id"].astype(str) == action_id)]


def published(decisions, customer_id) -> set[str]:
    nba = decisions.next_best_actions
    return set(nba.loc[nba["customer_id"] == customer_id, "action_id"])


def response(customer_id, action_id, channel, event, days_ago, rec="R1") -> dict:
    return {"recommendation_id": rec, "customer_id": customer_id, "action_id": action_id, "channel": channel,
            "event": event, "event_at": pd.Timestamp(D - timedelta(days=days_ago), tz="UTC") + pd.Timedelta(hours=10)}


# ------------------------------------------------------------------------------ a history too short to judge income

def test_a_history_too_short_to_see_a_monthly_income_says_nothing_of_the_income():
    """Bills already seen as streams, the monthly salary not yet (45 days of history: a monthly income needs three
    payments to be a stream): neither "your regular bills are larger than your regular income" nor "your regular
    income is low" is true of what the bank knows, so neither is said nor acted on. The same customers with a long
    history get both."""
    no_income = {"has_regular_income": False, "monthly_recurring_income": 0.0, "monthly_recurring_outgoings": 900.0}
    decisions = run(customers(no_income | {"history_days": 45.0, "p_shortfall_30": 0.1},
                              no_income | {"history_days": 200.0, "p_shortfall_30": 0.1},
                              no_income | {"history_days": 45.0, "p_shortfall_30": 0.4},
                              no_income | {"history_days": 200.0, "p_shortfall_30": 0.4}), top_k=30)
    nba = decisions.next_best_actions
    reasons = lambda c, a: nba.loc[(nba.customer_id == c) & (nba.action_id == a), "reasons"].tolist()  # noqa: E731
    assert "budgeting_tools" not in published(decisions, "C0000")
    assert log_of(decisions, "C0000", "budgeting_tools")["stage"].astype(str).tolist() == ["applicability"]
    assert "your regular bills are larger than your regular income" in reasons("C0001", "budgeting_tools")[0]
    assert "benefits_check" not in published(decisions, "C0002")
    assert not any("bills are larger" in r for r in reasons("C0002", "budgeting_tools"))
    assert reasons("C0003", "benefits_check") == ["your regular income is low and your balance may run short"]
    from pipelines.features import income_known_days

    assert income_known_days() == 102        # 3 monthly payments at the longest monthly gap (34 days)


# ----------------------------------------------------------------------------------------------- suitability

def test_a_healthy_customer_can_be_offered_credit():
    decisions = run(customers({}), top_k=30)
    assert "credit_card" in published(decisions, "C0000")
    assert log_of(decisions, "C0000", "credit_card").empty


SUITABILITY_CASES = {
    "predicted shortfall": ({"p_shortfall_30": 0.45}, "shortfall is predicted"),
    "no forecast": ({"p_shortfall_30": np.nan}, "no cash forecast"),
    "arrears": ({"card_over_limit": True}, "in arrears"),
    "unarranged overdraft": ({"balance_min_30": -800.0, "overdraft_limit": 500.0}, "unarranged overdraft"),
    "gambling harm": ({"share_gambling_90": 0.2}, "gambling harm"),
    "known vulnerability": ({"known_vulnerability": "health"}, "known vulnerability"),
}


@pytest.mark.parametrize("case", list(SUITABILITY_CASES))
def test_no_credit_or_lending_for_a_customer_excluded_by_a_suitability_rule(case):
    change, words = SUITABILITY_CASES[case]
    decisions = run(customers(change | {"is_buying_home": True, "is_moving_home": True, "has_credit_card": False,
                                        "is_buying_home_corroborated": True, "is_moving_home_corroborated": True}),
                    top_k=30)
    assert not published(decisions, "C0000") & CREDIT
    rows = log_of(decisions, "C0000", "credit_card")
    assert rows["stage"].astype(str).tolist() == ["suitability"]
    assert words in rows["reason"].astype(str).iloc[0]
    # mortgage (buying_home) is credit too: dropped at suitability, not before
    assert log_of(decisions, "C0000", "mortgage")["stage"].astype(str).tolist() == ["suitability"]


# ------------------------------------------------------------------------- credit triggered by a life event

def test_a_flag_without_its_corroborating_evidence_never_leads_to_credit():
    """Hand-made customers, finances sound, every consent given, no mortgage with us:
    C0000 the retiree who moved a pension lump sum into savings and was flagged buying a home with p 1.00 (the
    model's inference: no surveyor, no conveyancing, no broker, no deposit saved up month by month);
    C0001 a real buyer: the same flag, corroborated by a surveyor and a conveyancing solicitor;
    C0002 a card holder flagged as moving home without corroboration: a loan may still go to consolidate the card,
    but never "because you may be moving home"."""
    retiree = {"age": 67.0, "is_buying_home": True, "p_buying_home": 1.0, "savings_balance": 40000.0}
    buyer = {"is_buying_home": True, "p_buying_home": 0.8, "is_buying_home_corroborated": True}
    mover = {"is_moving_home": True, "p_moving_home": 0.9, "has_credit_card": True}
    decisions = run(customers(retiree, buyer, mover), top_k=30)
    assert "mortgage" not in published(decisions, "C0000")
    rows = log_of(decisions, "C0000", "mortgage")
    assert rows["stage"].astype(str).tolist() == ["applicability"]
    assert "buying home is inferred but not corroborated" in rows["reason"].astype(str).iloc[0]
    assert "surveyor" in rows["reason"].astype(str).iloc[0]
    # the flag may still drive what is not credit (home insurance), and the buyer may get the mortgage
    assert "home_insurance" in published(decisions, "C0000")
    assert "mortgage" in published(decisions, "C0001") and log_of(decisions, "C0001", "mortgage").empty
    nba = decisions.next_best_actions
    loan = nba[(nba["customer_id"] == "C0002") & (nba["action_id"] == "personal_loan")]
    assert len(loan) == 1 and "moving" not in loan["reasons"].iloc[0] and "moving" not in loan["explanation"].iloc[0]
    # the same customer without the card: the loan rests on the move alone, so it does not go
    alone = run(customers(mover | {"has_credit_card": False}), top_k=30)
    assert "personal_loan" not in published(alone, "C0000")
    assert "moving home is inferred but not corroborated" in \
        log_of(alone, "C0000", "personal_loan")["reason"].astype(str).iloc[0]


def test_corroboration_is_read_from_the_evidence_of_the_gold_rows():
    life = pd.DataFrame({
        "customer_id": ["A", "A", "B", "C"], "event_type": ["buying_home", "moving_home", "buying_home", "marriage"],
        "probability": [1.0, 0.2, 0.9, 0.8], "flagged": [True, False, True, True],
        "evidence": ['{"corroboration": {"met": false, "rule": "x"}}', "{}",
                     '{"corroboration": {"met": true, "rule": "x"}}', "not json"]})
    wide = decide._life_events_wide(life).set_index("customer_id")
    assert wide.loc["A", "is_buying_home"] and not wide.loc["A", "is_buying_home_corroborated"]
    assert wide.loc["B", "is_buying_home"] and wide.loc["B", "is_buying_home_corroborated"]
    assert wide.loc["C", "is_marriage"] and not wide.loc["C", "is_marriage_corroborated"]   # unreadable: not met
    assert not wide.loc["A", "is_moving_home_corroborated"]


# ----------------------------------------------------------------------------------------------- consent

def test_no_marketing_on_a_channel_without_consent():
    decisions = run(customers(
        {"is_marketing_email_allowed": False},                                      # in-app only
        {"is_marketing_email_allowed": False, "is_marketing_inapp_allowed": False,
         "is_marketing_push_allowed": False, "is_marketing_sms_allowed": False},   # no marketing at all
        {"is_service_alerts_allowed": False, "p_shortfall_30": 0.9, "is_marketing_email_allowed": False},
    ), top_k=30)
    nba = decisions.next_best_actions
    first = nba[nba["customer_id"] == "C0000"]
    assert (first.loc[first["action_class"] == "commercial", "channel"] != "email").all()
    assert (first["action_class"] == "commercial").any()
    assert not (nba.loc[nba["customer_id"] == "C0001", "action_class"] == "commercial").any()
    assert log_of(decisions, "C0001", "credit_card")["stage"].astype(str).tolist() == ["consent"]
    third = nba[nba["customer_id"] == "C0002"]
    assert not third["action_class"].isin(["protective", "service"]).any()
    assert log_of(decisions, "C0002", "shortfall_warning")["stage"].astype(str).tolist() == ["consent"]


def test_life_event_actions_need_life_event_consent():
    decisions = run(customers({"is_travel_abroad": True, "is_life_events_allowed": False}), top_k=30)
    assert "travel_insurance" not in published(decisions, "C0000")
    rows = log_of(decisions, "C0000", "travel_insurance")
    assert rows["stage"].astype(str).tolist() == ["consent"] and "life events" in rows["reason"].astype(str).iloc[0]


def test_published_channels_always_have_consent_on_a_synthetic_bank():
    context = decide.synthetic_context(10000, seed=3)
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol())
    nba = decisions.next_best_actions.merge(context, on="customer_id")
    for channel, purpose in MARKETING_PURPOSE_OF_CHANNEL.items():
        rows = nba[(nba["action_class"] == "commercial") & (nba["channel"] == channel)]
        assert rows[f"is_{purpose}_allowed"].all(), channel
    assert nba.loc[nba["action_class"] != "commercial", "is_service_alerts_allowed"].all()
    assert nba.loc[nba["action_class"] == "commercial", "is_personalization_allowed"].all()


# ----------------------------------------------------------------------------------------------- contact policy

def test_no_action_declined_within_its_cool_down():
    cool = BY_ID["credit_card"].cool_down_days
    responses = pd.DataFrame([
        response("C0000", "credit_card", "email", "delivered", 12, "R1"),
        response("C0000", "credit_card", "email", "declined", 10, "R1"),
        response("C0001", "credit_card", "email", "delivered", cool + 5, "R2"),
        response("C0001", "credit_card", "email", "declined", cool + 2, "R2"),
    ])
    decisions = run(customers({}, {}), responses, top_k=30)
    assert "credit_card" not in published(decisions, "C0000")
    rows = log_of(decisions, "C0000", "credit_card")
    assert rows["stage"].astype(str).tolist() == ["contact_policy"]
    assert "cool-down" in rows["reason"].astype(str).iloc[0]
    assert "credit_card" in published(decisions, "C0001")


def test_an_action_ignored_max_ignores_times_is_stopped():
    limit = BY_ID["credit_card"].max_ignores
    rows = [response("C0000", "credit_card", "email", "delivered", 30 + 20 * i, f"A{i}") for i in range(limit)]
    rows += [response("C0001", "credit_card", "email", "delivered", 30 + 20 * i, f"B{i}") for i in range(limit - 1)]
    rows += [response("C0002", "credit_card", "email", "delivered", 30 + 20 * i, f"C{i}") for i in range(limit)]
    rows += [response("C0002", "credit_card", "email", "opened", 29, "C0")]          # one was opened: not ignored
    decisions = run(customers({}, {}, {}), pd.DataFrame(rows), top_k=30)
    assert "credit_card" not in published(decisions, "C0000")
    assert "ignored" in log_of(decisions, "C0000", "credit_card")["reason"].astype(str).iloc[0]
    assert "credit_card" in published(decisions, "C0001")
    assert "credit_card" in published(decisions, "C0002")


def test_weekly_caps_per_channel_hold_and_protective_actions_are_not_capped():
    caps = decide.policy()["contact_policy"]["weekly_caps"]
    only_inapp = {"is_marketing_email_allowed": False, "is_marketing_push_allowed": False,
                  "is_marketing_sms_allowed": False, "has_savings": False, "safe_to_save": 5000.0,
                  "n_outgoing_streams": 8.0, "is_travel_abroad": True, "is_moving_home": True, "is_new_baby": True}
    history = [response("C0000", "isa", "inapp", "delivered", 2, f"H{i}") for i in range(caps["inapp"] - 1)]
    history += [response("C0001", "isa", "email", "delivered", 1, f"E{i}") for i in range(caps["email"])]
    # (delivered 6 days ago: this week, and no longer valid tomorrow, so the warning may go again)
    history += [response("C0002", "shortfall_warning", "push", "delivered", 6, f"P{i}") for i in range(5)]
    decisions = run(customers(only_inapp, {}, {"p_shortfall_30": 0.9, "n_days_negative_30": 4.0}),
                    pd.DataFrame(history), top_k=30)
    nba = decisions.next_best_actions
    first = nba[(nba["customer_id"] == "C0000") & (nba["action_class"] != "protective")]
    assert (first["channel"] == "inapp").sum() <= 1
    second = nba[(nba["customer_id"] == "C0001") & (nba["action_class"] != "protective")]
    assert not (second["channel"] == "email").any() and len(second) > 0
    assert "weekly" in " ".join(log_of(decisions, "C0000", "travel_insurance")["reason"].astype(str))
    # five protective pushes this week do not stop a shortfall warning on push
    third = nba[nba["customer_id"] == "C0002"]
    assert "shortfall_warning" in set(third["action_id"])


def test_a_delivered_action_is_not_repeated_while_it_is_still_valid():
    valid = BY_ID["shortfall_warning"].valid_days
    at_risk = {"p_shortfall_30": 0.9, "n_days_negative_30": 4.0}
    history = pd.DataFrame([
        response("C0000", "shortfall_warning", "push", "delivered", 2, "R0"),
        response("C0001", "shortfall_warning", "push", "delivered", valid - 1, "R1"),   # expires tonight
        response("C0002", "shortfall_warning", "push", "delivered", 0, "R2"),
        response("C0002", "shortfall_warning", "push", "opened", 0, "R2"),
    ])
    decisions = run(customers(at_risk, at_risk, at_risk), history, top_k=30)
    assert "shortfall_warning" not in published(decisions, "C0000")
    rows = log_of(decisions, "C0000", "shortfall_warning")
    assert rows["stage"].astype(str).tolist() == ["contact_policy"]
    assert "still valid" in rows["reason"].astype(str).iloc[0]
    assert "shortfall_warning" in published(decisions, "C0001")
    assert "shortfall_warning" not in published(decisions, "C0002")
    # the same night with repeats allowed: every customer at risk gets the warning again
    cp = dict(decide.policy()["contact_policy"], repeat_while_valid=True)
    again = run(customers(at_risk, at_risk, at_risk), history, top_k=30, contact_policy=cp)
    assert all("shortfall_warning" in published(again, f"C000{i}") for i in range(3))


def test_caps_hold_on_a_synthetic_bank_with_history():
    context = decide.synthetic_context(10000, seed=5)
    responses = decide.synthetic_responses(context, D, share=0.5, seed=5)
    decisions = decide.decide_frame(context, D, responses, CATALOGUE, pol())
    caps = decide.policy()["contact_policy"]["weekly_caps"]
    capped = responses[(responses["event"] == "delivered") & ~responses["action_id"].isin(PROTECTIVE)]
    at = pd.to_datetime(capped["event_at"], utc=True)
    recent = capped[at >= pd.Timestamp(D + timedelta(days=1), tz="UTC") - pd.Timedelta(days=7)]
    sent = recent.groupby(["customer_id", "channel"]).size().rename("sent")
    nba = decisions.next_best_actions
    today = nba[nba["action_class"] != "protective"].groupby(["customer_id", "channel"]).size().rename("today")
    both = pd.concat([sent, today], axis=1).fillna(0).reset_index()
    both["cap"] = both["channel"].map(caps)
    assert ((both["today"] == 0) | (both["sent"] + both["today"] <= both["cap"])).all()


# ----------------------------------------------------------------------------------------------- arbitration

def test_protective_actions_are_never_outranked_by_commercial_ones():
    context = decide.synthetic_context(10000, seed=7)
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol(exploration={"epsilon": 0.9, "pool_size": 6}))
    nba = decisions.next_best_actions
    protective = nba["action_class"] == "protective"
    worst_protective = nba[protective].groupby("customer_id")["rank"].max()
    best_other = nba[~protective].groupby("customer_id")["rank"].min()
    both = pd.concat([worst_protective, best_other], axis=1, join="inner")
    assert len(both) > 100
    assert (both.iloc[:, 0] < both.iloc[:, 1]).all()
    # ranks are 1..k without gaps, at most top_k per customer
    ranks = nba.groupby("customer_id")["rank"].agg(["min", "max", "count"])
    assert (ranks["min"] == 1).all() and (ranks["max"] == ranks["count"]).all()
    assert ranks["count"].max() <= decide.policy()["top_k"]


def test_a_customer_in_trouble_gets_protective_actions_first():
    decisions = run(customers({"p_shortfall_30": 0.8, "n_days_negative_30": 5.0, "safe_to_save": 0.0,
                               "is_travel_abroad": True}))
    nba = decisions.next_best_actions.sort_values("rank")
    assert nba["action_class"].iloc[0] == "protective"
    assert "shortfall_warning" in set(nba["action_id"])
    warning = nba[nba["action_id"] == "shortfall_warning"].iloc[0]
    assert "below zero within 30 days (80% chance)" in warning["reasons"]


def test_the_control_group_gets_only_protective_actions():
    context = customers({"p_shortfall_30": 0.8, "n_days_negative_30": 5.0}, {})
    decisions = run(context, top_k=30, control_share=1.0)
    nba = decisions.next_best_actions
    assert set(nba["action_class"]) == {"protective"} and nba["is_control"].all()
    assert "credit_card" in set(decisions.decision_log.loc[decisions.decision_log["stage"] == "control_group",
                                                           "action_id"].astype(str))
    assert nba["customer_id"].tolist() == ["C0000"] * len(nba)


def test_the_control_share_is_a_stable_hash_of_customer_and_day():
    context = decide.synthetic_context(10000, seed=11)
    policy = pol(control_share=0.05)
    first = decide.decide_frame(context, D, None, CATALOGUE, policy).next_best_actions
    control = first.loc[first["is_control"], "customer_id"].unique()
    assert set(first.loc[first["is_control"], "action_class"]) <= {"protective"}
    _, draw = decide.customer_hashes(context["customer_id"], D, policy.get("control_cohort"))
    expected = context.loc[draw < 0.05, "customer_id"]
    assert set(control) <= set(expected)
    assert 0.04 < (draw < 0.05).mean() < 0.06


def test_every_published_action_has_reasons_and_an_explanation():
    context = decide.synthetic_context(10000, seed=13)
    nba = decide.decide_frame(context, D, None, CATALOGUE, pol()).next_best_actions
    assert len(nba) > 5000
    assert nba["reasons"].str.len().gt(0).all() and nba["explanation"].str.len().gt(0).all()
    assert not nba["reasons"].str.contains(r"\{|nan|None").any()
    assert set(nba["action_id"]) >= {"shortfall_warning", "isa", "credit_card", "bill_reminder"}


def test_logging_probability_is_consistent_with_exploration():
    context = decide.synthetic_context(10000, seed=17)
    eps = 0.3
    nba = decide.decide_frame(context, D, None, CATALOGUE, pol(exploration={"epsilon": eps, "pool_size": 5})) \
        .next_best_actions
    p = nba["logging_probability"]
    assert ((p > 0) & (p <= 1)).all()
    assert nba["is_exploration"].any()
    assert (p[nba["is_exploration"]] <= eps + 1e-9).all()
    assert (p[~nba["is_exploration"]] >= 1 - eps).all()
    assert (p[nba["action_class"] == "protective"] == 1).all()
    assert not nba.loc[nba["action_class"] == "protective", "is_exploration"].any()


def test_same_inputs_give_byte_identical_outputs_and_stable_ids():
    context = decide.synthetic_context(3000, seed=19)
    responses = decide.synthetic_responses(context, D, seed=19)
    first = decide.decide_frame(context, D, responses, CATALOGUE, pol())
    shuffled = context.sample(frac=1.0, random_state=1)
    second = decide.decide_frame(shuffled, D, responses.sample(frac=1.0, random_state=2), CATALOGUE, pol())
    for table in decide.GOLD_TABLES:
        a = getattr(first, table)
        b = getattr(second, table)
        assert a.astype(str).to_csv(index=False).encode() == b.astype(str).to_csv(index=False).encode(), table
    nba = first.next_best_actions
    version = decide.policy()["policy_version"]
    row = nba.iloc[0]
    expected = hashlib.md5(f"{row.customer_id}|{row.action_id}|{D.isoformat()}|{version}".encode()).hexdigest()
    assert row.recommendation_id == expected
    assert nba["recommendation_id"].is_unique


def test_every_dropped_candidate_is_logged_once():
    context = decide.synthetic_context(3000, seed=23)
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol(control_share=0.1),
                                    capacity={"phone": 20, "branch": 0, "advisor_queue": 10})
    log = decisions.decision_log
    nba = decisions.next_best_actions
    keys = log["customer_id"].astype(str) + "|" + log["action_id"].astype(str)
    sent = set(nba["customer_id"] + "|" + nba["action_id"])
    # a capacity row of a published action records the staffed channel it gave up, not a drop
    moved = keys.isin(sent)
    assert (log.loc[moved, "stage"].astype(str) == "capacity").all()
    assert log.loc[moved, "reason"].astype(str).str.contains(r"capacity .* instead").all()
    assert moved.sum() == decisions.metrics["capacity_rerouted_rows"] > 0
    assert (~moved).sum() + len(nba) == len(context) * len(CATALOGUE)
    assert set(log["stage"].astype(str)) <= set(decide.STAGES)
    assert log["reason"].astype(str).str.len().gt(0).all()
    assert keys.is_unique


def test_advisor_queue_and_dashboard():
    decisions = run(customers(
        {"p_shortfall_30": 0.8, "is_income_stopped": True, "has_regular_income": False},
        {"p_shortfall_30": 0.35, "known_vulnerability": "capability"},
        {"is_travel_abroad": True, "n_outgoing_streams": 9.0},
        {"is_personalization_allowed": False, "p_shortfall_30": 0.9},
    ))
    queue = decisions.advisor_queue
    assert set(queue["customer_id"]) == {"C0000", "C0001"}
    assert queue["reason"].str.len().gt(0).all()
    layout = decisions.dashboard_layout
    first = layout[layout["customer_id"] == "C0000"].sort_values("position")["module"].tolist()
    assert first[0] in ("money_help", "cash_flow_view") and "cash_flow_view" in first
    third = layout[layout["customer_id"] == "C0002"].sort_values("position")["module"].tolist()
    assert third.index("travel_money") < third.index("accounts_overview") and "bills_calendar" in third
    fourth = layout[layout["customer_id"] == "C0003"].sort_values("position")["module"].tolist()
    assert fourth == ["accounts_overview", "spending_insights"]          # no personalization consent: default


def test_without_life_events_no_life_event_action_applies():
    context = customers({}).drop(columns=["has_life_events"])
    decisions = run(context, top_k=30)
    assert not published(decisions, "C0000") & {"mortgage", "home_insurance", "travel_insurance", "child_savings"}
    assert log_of(decisions, "C0000", "mortgage")["stage"].astype(str).tolist() == ["applicability"]


# ----------------------------------------------------------------------------------------------- staffed capacity

def test_split_capacity_adds_up_and_follows_bucket_size():
    sizes = {0: 120, 1: 80, 2: 0, 3: 200, 4: 1}
    for total in (0, 1, 5, 17, 250, 401):
        parts = decide.split_capacity(total, sizes)
        assert sum(parts.values()) == total and parts[2] == 0
        assert all(abs(parts[b] - total * sizes[b] / 401) < 1 for b in sizes)
    assert decide.split_capacity(3, {0: 1, 1: 1, 2: 1, 3: 1}) == {0: 1, 1: 1, 2: 1, 3: 0}   # ties: lower bucket
    assert decide.nightly_capacity({"per_night": 250, "share": 0.01}, 2000) == 20
    assert decide.nightly_capacity({"per_night": 250, "share": 0.01}, 1_000_000) == 250
    assert decide.nightly_capacity({"per_night": 7}, 10) == 7


def test_a_night_with_more_customers_in_difficulty_than_phone_capacity():
    """60 hand-made customers in arrears (hardship support is offered by phone first), some vulnerable, some after an
    income drop, spread over the 16 customer buckets and decided shard by shard like the nightly DAG does, with a
    night's phone capacity of 12 calls and an advisor queue of 8: the night never makes more calls than that, within
    every shard the calls go to the neediest, everybody else gets the same help by a digital channel, and each
    capacity drop is logged with its reason."""
    rows = []
    for i in range(60):
        rows.append({"card_over_limit": True, "p_shortfall_30": round(0.5 + (i % 10) * 0.05, 2),
                     "known_vulnerability": "health" if i % 7 == 0 else None,
                     "is_income_stopped": i % 5 == 0, "has_regular_income": i % 5 != 0})
    night = customers(*rows)
    policy_ = pol()
    policy_["capacity"]["channels"] = {"phone": {"per_night": 12}, "branch": {"per_night": 0}}
    policy_["capacity"]["advisor_queue"] = {"per_night": 8}
    night["bucket"] = lake.bucket_of(night["customer_id"])
    sizes = {b: int((night["bucket"] == b).sum()) for b in range(lake.n_buckets())}
    calls, queued, digital, logged = [], [], [], []
    for bucket, part in night.groupby("bucket"):
        capacity = decide.shard_capacity(policy_, sizes, bucket)
        decisions = decide.decide_frame(part.drop(columns="bucket"), D, None, CATALOGUE, policy_, capacity=capacity)
        nba, log = decisions.next_best_actions, decisions.decision_log
        phone = set(nba.loc[nba["channel"] == "phone", "customer_id"])
        assert len(phone) <= capacity["phone"] and len(decisions.advisor_queue) <= capacity["advisor_queue"]
        need = pd.Series(decide.need_score(decide.complete_context(part.drop(columns="bucket"), policy_), policy_),
                         index=sorted(part["customer_id"]))
        # within the shard the calls go to the neediest
        if phone and len(phone) < len(part):
            assert need[sorted(phone)].min() >= need.drop(sorted(phone)).max()
        hardship = nba[nba["action_id"] == "hardship_support"]
        assert set(hardship["customer_id"]) == set(part["customer_id"])          # everybody still gets the help
        moved = hardship[hardship["channel"] != "phone"]
        assert moved["channel"].isin(["email", "sms", "push", "inapp"]).all()    # digitally, never by letter
        drops = log[log["stage"].astype(str) == "capacity"]
        assert set(drops["customer_id"].astype(str)) == set(moved["customer_id"]) == set(part["customer_id"]) - phone
        assert drops["reason"].astype(str).str.fullmatch(
            r"tonight's phone capacity went to customers in greater need: "
            r"sent by (email|sms|push|inapp) instead").all()
        sent = set(nba["customer_id"] + "|" + nba["action_id"] + "|" + nba["channel"])
        for row in drops.itertuples():
            assert f"{row.customer_id}|{row.action_id}|{str(row.reason).split('sent by ')[1].split()[0]}" in sent
        assert decisions.metrics["capacity"]["phone"]["served"] == len(phone)
        calls += sorted(phone)
        queued += decisions.advisor_queue["customer_id"].tolist()
        digital += moved["customer_id"].tolist()
        logged += drops["customer_id"].astype(str).tolist()
    assert len(calls) == 12 and len(set(calls)) == 12 and len(queued) == 8
    assert len(digital) == 60 - 12 and sorted(set(logged)) == sorted(digital)
    # the whole night as one frame (one shard) gives the 12 neediest customers of the night the calls
    whole = decide.decide_frame(night.drop(columns="bucket"), D, None, CATALOGUE, policy_)
    phone = set(whole.next_best_actions.loc[whole.next_best_actions["channel"] == "phone", "customer_id"])
    need = pd.Series(decide.need_score(decide.complete_context(night.drop(columns="bucket"), policy_), policy_),
                     index=sorted(night["customer_id"]))
    assert len(phone) == 12 and need[sorted(phone)].min() >= need.drop(sorted(phone)).max()
    queue = whole.advisor_queue
    assert len(queue) == 8 and queue["priority"].is_monotonic_decreasing
    assert whole.metrics["capacity"]["advisor_queue"] == {"capacity": 8, "demand": 60, "served": 8,
                                                          "over_capacity": 52}


# ----------------------------------------------------------------------------------------------- on a lake

@pytest.fixture(scope="module")
def lake_copy(tmp_path_factory) -> Path:
    """A small simulated bank, loaded, with the forecaster trained and one bucket's cash forecast published."""
    from pipelines import forecast
    from pipelines.sources.simulate import simulate_command
    from pipelines.stages import load_history

    from tests.bank_settings import write_overlay

    home = tmp_path_factory.mktemp("nba") / "segone"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_HOME", str(home))
    # the light models of the test banks (tests/bank_settings.py): decide needs a trained forecaster, not its
    # shipped calibration; and four customer buckets instead of 16: the history load's store and the training's
    # feature builds are a bucket at a time, at a fixed cost each
    mp.setenv("SEGONE_SETTINGS", str(write_overlay(home.parent / "settings.yaml",
                                                   {"segone": {"lake": {"n_buckets": 4}}})))
    paths = Paths(home)
    try:
        simulate_command(paths, customers=300, days=250, end_date=date(2026, 11, 20), seed=3, fmt="csv")
        load_history(paths)
        forecast.train(paths)
        forecast.forecast_cash_shortfall(paths, forecast.data_end(paths), 0)
    finally:
        mp.undo()
    return home


def _lake_bucket(home: Path) -> tuple[date, int]:
    folder = sorted((home / "lake" / "gold" / "cash_forecast").glob("as_of=*/bucket=*"))[0]
    return date.fromisoformat(folder.parent.name.split("=")[1]), int(folder.name.split("=")[1])


def test_decide_shard_on_a_simulated_lake(lake_copy, monkeypatch):
    monkeypatch.setenv("SEGONE_HOME", str(lake_copy))
    monkeypatch.setenv("SEGONE_SETTINGS", str(lake_copy.parent / "settings.yaml"))  # its four buckets
    paths = Paths(lake_copy)
    day, bucket = _lake_bucket(lake_copy)
    metrics = decide.decide_next_best_actions(paths, day, bucket)
    assert metrics["n_published"] > 0 and metrics["has_cash_forecast"] and not metrics["has_life_events"]
    read = {t: pd.read_parquet(paths.table("gold", t) / f"as_of={day}" / f"bucket={bucket}")
            for t in decide.GOLD_TABLES}
    nba = read["next_best_actions"]
    assert nba["recommendation_id"].is_unique and nba["reasons"].str.len().gt(0).all()
    assert set(nba.columns) >= {"recommendation_id", "customer_id", "rank", "action_id", "action_class", "channel",
                                "priority", "propensity", "value", "logging_probability", "is_exploration",
                                "is_control", "reasons", "explanation", "policy_version", "valid_until"}
    log = read["decision_log"]
    moved = (log["customer_id"] + "|" + log["action_id"]).isin(set(nba["customer_id"] + "|" + nba["action_id"]))
    assert (log.loc[moved, "stage"] == "capacity").all() and moved.sum() == metrics["capacity_rerouted_rows"]
    assert (~moved).sum() + len(nba) == metrics["n_customers"] * metrics["n_actions"]
    # the shard's part of the night's phone capacity (1% of the bank's 300 customers, split over the buckets) holds
    sizes = decide.bucket_sizes(paths, day)
    assert sum(sizes.values()) == 300 and sizes[bucket] == metrics["n_customers"]
    night = decide.frame_capacity(decide.policy(), 300)
    assert night["phone"] == 3 and metrics["night_capacity"] == night
    parts = [decide.shard_capacity(decide.policy(), sizes, b)["phone"] for b in sizes]
    assert sum(parts) == 3 and metrics["capacity"]["phone"]["capacity"] == parts[bucket]
    assert nba.loc[nba["channel"] == "phone", "customer_id"].nunique() <= parts[bucket]
    assert len(read["advisor_queue"]) <= metrics["capacity"]["advisor_queue"]["capacity"]
    credit = nba[nba["action_id"].isin(CREDIT)]
    context = decide.build_context(paths, day, bucket).set_index("customer_id")
    blocked = context["is_shortfall_risk"] | context["in_arrears"] | context["is_unarranged_overdraft"] | \
        context["is_gambling_harm"] | context["is_vulnerable"]
    assert not blocked.loc[credit["customer_id"]].any()
    # re-running D on the same inputs rewrites byte-identical Parquet
    def files() -> dict[str, bytes]:
        return {t: b"".join(p.read_bytes() for p in sorted(
            (paths.table("gold", t) / f"as_of={day}" / f"bucket={bucket}").glob("*.parquet")))
            for t in decide.GOLD_TABLES}
    before = files()
    decide.decide_next_best_actions(paths, day, bucket)
    assert files() == before
    # a gold life_events partition, when present, is used
    target, thin = context.index[(context["is_life_events_allowed"]) & (context["is_personalization_allowed"])][:2]
    corroborated = '{"corroboration": {"met": true, "rule": "a surveyor payment"}, "rule": "test"}'
    life = pd.DataFrame({"customer_id": [target, thin], "event_type": ["buying_home", "buying_home"],
                         "probability": [0.8, 1.0], "flagged": [True, True],
                         "evidence": [corroborated, '{"corroboration": {"met": false}}'],
                         "model_version": ["test", "test"]})
    folder = paths.table("gold", "life_events") / f"as_of={day}" / f"bucket={bucket}"
    folder.mkdir(parents=True)
    life.to_parquet(folder / "part-0.parquet", index=False)
    second = decide.decide_next_best_actions(paths, day, bucket)
    mortgage_log = pd.read_parquet(folder.parents[2] / "decision_log" / f"as_of={day}" / f"bucket={bucket}")
    mortgage = mortgage_log[(mortgage_log["customer_id"] == target) & (mortgage_log["action_id"] == "mortgage")]
    assert mortgage.empty or mortgage["stage"].iloc[0] != "applicability"
    assert second["has_life_events"]
    # a flag without its corroborating evidence never leads to a mortgage offer
    uncorroborated = mortgage_log[(mortgage_log["customer_id"] == thin) & (mortgage_log["action_id"] == "mortgage")]
    if context.loc[thin, "has_current"] and context.loc[thin, "age"] >= 18:
        assert uncorroborated["stage"].tolist() == ["applicability"]
        assert "not corroborated" in uncorroborated["reason"].iloc[0] or context.loc[thin, "has_mortgage"]
    others = mortgage_log[(mortgage_log["customer_id"] != target) & (mortgage_log["action_id"] == "mortgage")]
    assert others["stage"].isin(["eligibility", "applicability"]).all()


def test_an_empty_shard_and_a_bare_context_are_handled():
    empty = decide.decide_frame(pd.DataFrame({"customer_id": pd.Series(dtype=str)}), D, None, CATALOGUE, pol())
    assert all(len(getattr(empty, t)) == 0 for t in decide.GOLD_TABLES)
    bare = decide.decide_frame(pd.DataFrame({"customer_id": ["X1"]}), D, None, CATALOGUE, pol())
    assert len(bare.next_best_actions) == 0 and len(bare.decision_log) == len(CATALOGUE)
    assert bare.dashboard_layout["module"].tolist() == ["accounts_overview", "spending_insights"]


def test_a_staffed_action_without_a_digital_channel_is_refused():
    from dataclasses import replace

    from pipelines.errors import SegoneError

    phone_only = replace(BY_ID["advisor_callback"], channels={"phone": "service_alerts", "letter": "service_alerts"})
    catalogue = [phone_only if a.id == "advisor_callback" else a for a in CATALOGUE]
    with pytest.raises(SegoneError, match="advisor_callback use a staffed channel"):
        decide.decide_frame(customers({}), D, None, catalogue, pol())
    bad = pol()
    bad["capacity"]["channels"]["pigeon"] = {"per_night": 3}
    with pytest.raises(SegoneError, match="unknown channel 'pigeon'"):
        decide.decide_frame(customers({}), D, None, CATALOGUE, bad)


def test_decision_flags_say_who_is_at_risk_and_why():
    """gold decision_flags: one row per customer decided, the protective flags the funnel acted on (any of them
    blocks credit), the forecast it had, and the control group as decide drew it."""
    context = customers({}, {"p_shortfall_30": 0.6}, {"known_vulnerability": "health"}, {"card_over_limit": True},
                        {"share_gambling_90": 0.2}, {"p_shortfall_30": None}, {"age": 70.0},
                        {"is_message_distress": True})
    decisions = run(context, control_share=0.5)
    flags = decisions.decision_flags.set_index("customer_id")
    assert list(flags.index) == [f"C{i:04d}" for i in range(8)]
    assert flags["is_at_risk"].tolist() == [False, True, True, True, True, True, False, True]
    assert flags.loc["C0007", "is_message_distress"]
    assert flags.loc["C0001", "is_shortfall_risk"] and flags.loc["C0005", "is_shortfall_risk"]
    assert not flags.loc["C0005", "has_forecast"] and pd.isna(flags.loc["C0005", "p_shortfall_30"])
    assert flags.loc["C0002", "is_vulnerable"] and flags.loc["C0003", "in_arrears"]
    assert flags.loc["C0004", "is_gambling_harm"]
    assert flags["is_control"].sum() == decisions.metrics["n_control"]
    nba = decisions.next_best_actions
    assert set(nba.loc[nba["is_control"], "customer_id"]) <= set(flags.index[flags["is_control"]])
    # no credit for anyone at risk, as the flags say
    at_risk = set(flags.index[flags["is_at_risk"]])
    assert not (nba["customer_id"].isin(at_risk) & nba["action_id"].isin(CREDIT)).any()
    # a known vulnerability blocks credit only while the policy says so
    relaxed = run(context, suitability={**decide.policy()["suitability"], "block_known_vulnerability": False})
    assert not relaxed.decision_flags.set_index("customer_id").loc["C0002", "is_at_risk"]


def test_the_age_bands_are_one_definition():
    ages = pd.Series([16, 17, 18, 24, 25, 34, 35, 49, 50, 64, 65, 90, None])
    assert decide.age_bands(ages).tolist() == ["under 18", "under 18", "18-24", "18-24", "25-34", "25-34", "35-49",
                                               "35-49", "50-64", "50-64", "65+", "65+", "unknown"]


def test_the_context_is_made_of_what_the_earlier_stages_persisted():
    """decide.context_frame (the pure step between read_context_inputs and decide_frame) on hand-made frames: every
    field comes from the frame of the stage that persisted it (the feature store's features and holdings, the gold
    forecast, life events and message signals), nothing is recomputed, and a customer a stage has no row for gets
    that stage's neutral value (no forecast, no life event, no distress)."""
    customers = pd.DataFrame({"customer_id": ["C1", "C2"], "region": ["north", "south"],
                              "known_vulnerability": [None, "health"], "birth_year": [1980, 1950],
                              "customer_since": pd.to_datetime(["2020-01-01", "2010-06-30"])})
    consents = pd.DataFrame({"customer_id": ["C1", "C2"], "is_personalization_allowed": [True, True],
                             "is_open_banking_allowed": [True, False], "is_service_alerts_allowed": [True, None]})
    features = pd.DataFrame({"customer_id": ["C1", "C2"], "balance_now": [120.0, 5000.0],
                             "has_regular_income": [1.0, 0.0], "is_income_stopped": [0.0, 1.0],
                             "share_gambling_90": [0.0, 0.4], "overdraft_limit": [500.0, 0.0]})
    holdings = pd.DataFrame({"customer_id": ["C1", "C2"], "has_current": [True, True], "has_savings": [False, True],
                             "has_external_current": [True, True], "card_over_limit": [False, False]})
    forecast = pd.DataFrame({"customer_id": ["C1"] * 3, "horizon_days": [30, 60, 90],
                             "p_shortfall": [0.7, 0.8, 0.9], "min_balance_p10": [-300.0, -400.0, -500.0],
                             "safe_to_save": [None, None, None], "confidence": ["high"] * 3,
                             "expected_shortfall_date": [D + timedelta(days=12)] * 3})
    life = pd.DataFrame({"customer_id": ["C2"], "event_type": ["retirement"], "probability": [0.93],
                         "flagged": [True], "evidence": ['{"corroboration": {"met": true}}']})
    messages = pd.DataFrame({"customer_id": ["C2"], **{field: [field == "is_message_distress"]
                                                       for field in decide.MESSAGE_FIELDS.values()}})
    messages["message_reasons"] = "sounded distressed in a recent message"
    ctx = decide.context_frame(D, customers, consents, features, holdings, forecast, life, messages).set_index(
        "customer_id")
    assert ctx.loc["C1", "p_shortfall_30"] == 0.7 and ctx.loc["C1", "has_forecast"]
    assert pd.isna(ctx.loc["C2", "p_shortfall_30"]) and not ctx.loc["C2", "has_forecast"]
    assert ctx.loc["C2", "is_retirement"] and ctx.loc["C2", "is_retirement_corroborated"]
    assert not ctx.loc["C1", "is_retirement"] and not ctx.loc["C1", "has_life_events"]
    assert ctx.loc["C2", "is_message_distress"] and not ctx.loc["C1", "is_message_distress"]
    assert ctx.loc["C1", "has_regular_income"] and ctx.loc["C2", "is_income_stopped"]
    assert ctx.loc["C2", "has_savings"] and not ctx.loc["C1", "has_savings"]
    # an external account is only known through open banking: C2's consent does not hold
    assert ctx.loc["C1", "has_external_current"] and not ctx.loc["C2", "has_external_current"]
    assert ctx.loc["C2", "is_gambling_harm"] and ctx.loc["C2", "is_vulnerable"]
    assert ctx.loc["C1", "age"] == D.year - 1980 and ctx.loc["C2", "is_service_alerts_allowed"]


def test_the_crm_responses_are_read_once_while_their_files_stand(tmp_path):
    """Every shard of a night reads every CRM response (propensities learn from all of them): a worker reads them
    once while the table's files stand, each caller gets its own copy, and a load written since is read again."""
    paths = Paths(tmp_path)
    assert decide.read_responses(paths, D) is None

    def load(day: date, rows: int) -> None:
        frame = pd.DataFrame({
            "recommendation_id": [f"r{day.day}-{i}" for i in range(rows)], "customer_id": [f"C{i}" for i in range(rows)],
            "action_id": "savings_nudge", "channel": "email", "event": "delivered",
            "event_at": pd.Timestamp(day, tz="UTC")})
        lake.write_frame(frame, lake.partition_path(paths, "silver", "crm_responses", load_date=day.isoformat(),
                                                    bucket="0"), paths)

    load(D - timedelta(days=1), 3)
    first = decide.read_responses(paths, D)
    again = decide.read_responses(paths, D)
    assert len(first) == 3 and again is not first and again.equals(first)
    again.drop(index=again.index, inplace=True)  # a caller's changes stay its own
    assert len(decide.read_responses(paths, D)) == 3
    load(D, 2)  # D's load arrives: read again
    assert len(decide.read_responses(paths, D)) == 5
    assert len(decide.read_responses(paths, D - timedelta(days=1))) == 3
