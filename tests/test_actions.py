"""The action catalogue: the shipped one is valid and complete; broken ones fail with clear messages; rules evaluate
column-wise with missing values failing safe."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import actions
from pipelines.actions import CatalogueError, load_catalogue, validate_catalogue
from pipelines.config import CONFIG_DIR


def shipped() -> dict:
    return yaml.safe_load((CONFIG_DIR / "actions.yaml").read_text(encoding="utf-8"))


def test_the_shipped_catalogue_is_valid_and_covers_the_issue():
    catalogue = load_catalogue()
    ids = {a.id for a in catalogue}
    assert len(catalogue) >= 20
    assert {"shortfall_warning", "overdraft_buffer", "hardship_support", "budgeting_tools", "benefits_check",
            "advisor_callback", "bill_reminder", "salary_switch_help", "subscription_review", "easy_access_savings",
            "isa", "safe_to_save_sweep", "credit_card", "personal_loan", "mortgage", "home_insurance",
            "travel_insurance", "child_savings", "pension_consolidation"} <= ids
    by_id = {a.id: a for a in catalogue}
    assert {a.id for a in catalogue if a.is_credit} == {"credit_card", "personal_loan", "overdraft_increase",
                                                         "mortgage"}
    assert all(a.action_class == "commercial" for a in catalogue if a.is_credit)
    for a in catalogue:
        if a.action_class in ("protective", "service"):
            assert set(a.channels.values()) == {"service_alerts"}, a.id
        else:
            assert all(p.startswith("marketing_") for p in a.channels.values()), a.id
    assert by_id["mortgage"].data_purposes == ("personalization", "life_events")


def broken(mutate) -> dict:
    data = copy.deepcopy(shipped())
    mutate(data)
    return data


def error_of(data) -> str:
    with pytest.raises(CatalogueError) as info:
        validate_catalogue(data)
    return str(info.value)


def action(data, action_id):
    return next(a for a in data["actions"] if a["id"] == action_id)


def test_an_unknown_class_is_named_with_the_action():
    msg = error_of(broken(lambda d: action(d, "isa").update({"class": "upsell"})))
    assert "action 'isa'" in msg and "'class'" in msg and "upsell" in msg


def test_an_unknown_consent_purpose_is_named_with_the_action_and_channel():
    msg = error_of(broken(lambda d: action(d, "credit_card")["channels"].update({"email": "marketing_fax"})))
    assert "action 'credit_card'" in msg and "consent purpose 'marketing_fax'" in msg and "email" in msg


def test_a_commercial_action_on_service_consent_is_refused():
    msg = error_of(broken(lambda d: action(d, "isa")["channels"].update({"email": "service_alerts"})))
    assert "action 'isa'" in msg and "marketing_email" in msg


def test_a_duplicate_id_is_refused():
    msg = error_of(broken(lambda d: d["actions"].append(copy.deepcopy(action(d, "isa")))))
    assert "action 'isa': duplicate id" in msg


def test_missing_fields_unknown_channels_and_bad_numbers_are_all_listed():
    def mutate(d):
        del action(d, "isa")["value"]
        action(d, "credit_card")["channels"]["fax"] = "marketing_email"
        action(d, "mortgage")["prior_propensity"] = 1.5
        action(d, "bill_reminder")["lever"] = -1
        action(d, "child_savings")["valid_days"] = 0
        action(d, "joint_account")["contact"]["max_ignores"] = "two"
    msg = error_of(broken(mutate))
    assert "action 'isa': missing field 'value'" in msg
    assert "action 'credit_card'" in msg and "unknown channel 'fax'" in msg
    assert "action 'mortgage': field 'prior_propensity'" in msg
    assert "action 'bill_reminder': field 'lever'" in msg
    assert "action 'child_savings': field 'valid_days'" in msg
    assert "action 'joint_account': field 'contact.max_ignores'" in msg


def test_bad_rules_are_named():
    def mutate(d):
        action(d, "isa")["applicability"].append({"field": "net_worth", "op": ">=", "value": 1})
        action(d, "credit_card")["eligibility"].append({"field": "age", "op": "~", "value": 1})
        action(d, "mortgage")["eligibility"].append({"field": "age", "op": ">=", "value": "eighteen"})
    msg = error_of(broken(mutate))
    assert "action 'isa': field 'applicability'" in msg and "unknown context field 'net_worth'" in msg
    assert "action 'credit_card': field 'eligibility'" in msg and "unknown operator '~'" in msg
    assert "action 'mortgage'" in msg and "needs a number" in msg


def test_credit_must_be_commercial():
    msg = error_of(broken(lambda d: action(d, "budgeting_tools").update({"is_credit": True})))
    assert "action 'budgeting_tools'" in msg and "is_credit" in msg


def test_rules_evaluate_column_wise_and_missing_values_fail():
    frame = pd.DataFrame({"age": [17, 18, np.nan, 40], "has_current": [True, True, True, False],
                          "p_shortfall_30": [0.1, 0.5, np.nan, 0.9], "confidence": ["low", "high", None, "medium"],
                          "monthly_recurring_income": [1, 2, 3, 4], "monthly_recurring_outgoings": [2, 1, 3, np.nan]})
    ev = actions.evaluate_rule
    assert ev(frame, {"field": "age", "op": ">=", "value": 18}).tolist() == [False, True, False, True]
    assert ev(frame, {"field": "p_shortfall_30", "op": "<", "value": 0.6}).tolist() == [True, True, False, False]
    assert ev(frame, {"field": "p_shortfall_30", "op": "is_null"}).tolist() == [False, False, True, False]
    assert ev(frame, {"field": "confidence", "op": "in", "value": ["medium", "high"]}).tolist() == \
        [False, True, False, True]
    assert ev(frame, {"field": "monthly_recurring_outgoings", "op": ">",
                      "value_field": "monthly_recurring_income"}).tolist() == [True, False, False, False]
    assert ev(frame, {"any": [{"field": "has_current", "op": "==", "value": False},
                              {"field": "age", "op": "<", "value": 18}]}).tolist() == [True, False, False, True]
    failed, texts = actions.first_failure(frame, [{"field": "age", "op": ">=", "value": 18, "why": "under 18"},
                                                  {"field": "has_current", "op": "==", "value": True}])
    assert failed.tolist() == [0, -1, 0, 1] and texts[0] == "under 18" and "has_current" in texts[1]


def test_templates_fill_placeholders():
    frame = pd.DataFrame({"p_shortfall_30": [0.456], "safe_to_save": [1234.4], "n_outgoing_streams": [7.0],
                          "expected_shortfall_date": [pd.Timestamp("2026-12-03")]})
    text = actions.render_template("{p_shortfall_30:pct} / {safe_to_save:money} / {n_outgoing_streams:int} / "
                                   "{expected_shortfall_date:date}", frame)
    assert text.iloc[0] == "46% / £1234 / 7 / 03 December 2026"


def test_a_probability_is_never_said_as_a_certainty():
    """A baseline forecast of 0.996 on a young bank read "(100% chance)" to the customer: a forecast is not a fact."""
    frame = pd.DataFrame({"p_shortfall_30": [0.996, 0.001, 0.5], "share_gambling_90": [1.0, 0.0, 0.5]})
    assert actions.render_template("{p_shortfall_30:pct}", frame).tolist() == ["99%", "1%", "50%"]
    assert actions.render_template("{share_gambling_90:pct}", frame).tolist() == ["100%", "0%", "50%"]   # a share
