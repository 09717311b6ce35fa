"""Decide reads the persisted message features (gold message_signals): distress or difficulty -> advisor queue and no
commercial actions; a complaint -> contact cool-down; a lost card -> the card replacement service action; a plainer
register for customers in distress. Hand-made context frames, as in tests/test_decide.py."""
from __future__ import annotations

from datetime import date

import pandas as pd

from pipelines import decide, lake
from pipelines.config import Paths
from tests.test_decide import BY_ID, customers, log_of, published, run

COMMERCIAL = {a for a, x in BY_ID.items() if x.action_class == "commercial"}
SERVICE = {a for a, x in BY_ID.items() if x.action_class == "service"}


def test_distress_suppresses_commercial_and_queues_for_an_advisor():
    context = customers({}, {"is_message_distress": True, "message_reasons": "sounded distressed in a recent message"},
                        {"is_message_difficulty": True,
                         "message_reasons": "wrote to us about difficulty paying"})
    decisions = run(context, top_k=30)
    assert published(decisions, "C0000") & COMMERCIAL  # the calm customer still gets offers
    for customer in ("C0001", "C0002"):
        assert not published(decisions, customer) & COMMERCIAL
        logged = log_of(decisions, customer, "credit_card")
        assert list(logged["stage"].astype(str)) == ["suitability"]
        assert "distress or difficulty paying" in str(logged["reason"].iloc[0])
    queue = decisions.advisor_queue.set_index("customer_id")
    assert "C0000" not in queue.index
    assert "sounded distressed" in queue.loc["C0001", "reason"]
    assert queue.loc["C0001", "suggested_action"] == "advisor_callback"
    assert "difficulty paying" in queue.loc["C0002", "reason"]
    assert queue.loc["C0002", "suggested_action"] == "hardship_support"


def test_a_complaint_starts_a_contact_cooldown():
    context = customers({"is_message_complaint": True, "n_outgoing_streams": 6.0, "p_shortfall_30": 0.6,
                         "expected_shortfall_date": date(2026, 12, 1)})
    decisions = run(context, top_k=30)
    got = published(decisions, "C0000")
    assert not got & (COMMERCIAL | (SERVICE - {"card_replacement"}))
    assert "shortfall_warning" in got  # protective help still goes out
    logged = log_of(decisions, "C0000", "bill_reminder")
    assert list(logged["stage"].astype(str)) == ["contact_policy"]
    assert "complained in a recent message" in str(logged["reason"].iloc[0])


def test_a_lost_card_raises_the_replacement_even_after_a_complaint():
    context = customers({}, {"is_message_lost_card": True}, {"is_message_lost_card": True,
                                                             "is_message_complaint": True})
    decisions = run(context)
    assert "card_replacement" not in published(decisions, "C0000")
    assert str(log_of(decisions, "C0000", "card_replacement")["stage"].iloc[0]) == "applicability"
    for customer in ("C0001", "C0002"):
        nba = decisions.next_best_actions
        mine = nba[nba["customer_id"] == customer].set_index("action_id")
        assert "card_replacement" in mine.index
        # the highest-ranked action that is not protective
        assert mine.loc["card_replacement", "rank"] == mine["rank"][mine["action_class"] != "protective"].min()
        assert "card was lost, stolen or used without your permission" in mine.loc["card_replacement", "reasons"]


def test_plainer_register_for_customers_in_distress():
    risky = {"p_shortfall_30": 0.6, "expected_shortfall_date": date(2026, 12, 1)}
    context = customers(risky, risky | {"is_message_distress": True})
    decisions = run(context)
    nba = decisions.next_best_actions.set_index(["customer_id", "action_id"])
    calm = nba.loc[("C0000", "shortfall_warning"), "explanation"]
    plain = nba.loc[("C0001", "shortfall_warning"), "explanation"]
    assert calm.startswith("Shortfall warning: A heads-up")
    assert plain.startswith("Shortfall warning. Your money may run short soon.")
    assert "We are getting in touch because your balance may go below zero within 30 days (60% chance)" in plain
    assert "offers" not in plain and "Suggested because" not in plain


def test_decide_reads_the_persisted_message_signals(tmp_path, monkeypatch):
    """build_context's message fields come from gold message_signals as written, not from messages."""
    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    day = date(2026, 11, 20)
    frame = pd.DataFrame({"customer_id": ["C1"], "n_messages": [2], "last_message_at": [pd.Timestamp(day, tz="UTC")],
                          "max_distress": [0.8], "is_distressed": [True], "has_financial_difficulty": [False],
                          "has_recent_complaint": [True], "has_fraud_or_lost_card": [False],
                          "has_wish_to_leave": [False], "has_personal_details_change": [False],
                          "last_complaint_at": [pd.Timestamp(day, tz="UTC")],
                          "reasons": ["sounded distressed in a recent message"], "model_version": ["v"]})
    lake.write_frame(frame, lake.partition_path(paths, "gold", "message_signals", as_of=day.isoformat(),
                                                bucket="3"), paths)
    got = decide._message_context(paths, day, 3).set_index("customer_id")
    assert got.loc["C1", "is_message_distress"] and got.loc["C1", "is_message_complaint"]
    assert not got.loc["C1", "is_message_lost_card"]
    assert got.loc["C1", "message_reasons"] == "sounded distressed in a recent message"
    assert decide._message_context(paths, day, 4).empty  # no partition: no message context, nothing recomputed


def test_no_card_replacement_without_a_card():
    context = customers({"is_message_lost_card": True, "has_current": False, "has_credit_card": False,
                         "has_savings": True})
    decisions = run(context)
    assert "card_replacement" not in published(decisions, "C0000")
    assert str(log_of(decisions, "C0000", "card_replacement")["stage"].iloc[0]) == "eligibility"
