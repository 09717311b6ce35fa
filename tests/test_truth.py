"""Every sentence said to a customer is true of that customer (docs/outputs.md, "Every sentence true of the
customer"): hand-made customers just below and at each threshold, and with missing data, through the pure
functions that write the words (forecast and event-forecast drivers, the action reasons, the plans)."""
from __future__ import annotations

import copy
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipelines import decide, forecast, plans, wording
from pipelines import event_forecast as ef
from pipelines.errors import SegoneError
from tests.test_decide import BY_ID, HEALTHY, customers, run
from tests.test_plans import account, bill, consent, current
from tests.test_plans import forecast as plan_forecast
from tests.test_plans import run as run_plans

D = date(2026, 11, 20)


def income_words(name: str, value: float) -> str:
    """What the income forecast says of a customer whose top feature is `name` with this value."""
    phrases = ef.driver_phrases("income")
    return ef.driver_texts([[name]], pd.DataFrame({name: [value]}), phrases)[0]


# ------------------------------------------------------------------------------------------ event-forecast drivers

@pytest.mark.parametrize("days,said", [(19.0, False), (20.0, True), (45.0, True), (np.nan, False)])
def test_last_income_days_ago_is_said_from_the_rule_s_own_bound(days, said):
    text = income_words("days_since_income", days)
    assert ("arrived 20 or more days ago" in text) is said, text
    if not said:
        assert text == ef.driver_phrases("income")["default"]      # missing or below: no claim


def test_the_bound_in_the_words_follows_the_config():
    cfg = copy.deepcopy(ef.settings())
    cfg["drivers"]["income"]["days_since_income"][2] = 25
    phrases = ef.driver_phrases("income", cfg)
    values = pd.DataFrame({"days_since_income": [24.0, 25.0]})
    texts = ef.driver_texts([["days_since_income"]] * 2, values, phrases)
    assert texts[0] == phrases["default"] and "25 or more days ago" in texts[1]


@pytest.mark.parametrize("streams,said", [(0.0, False), (1.0, True), (2.0, False), (np.nan, False)])
def test_single_source_only_for_exactly_one_income_stream(streams, said):
    # an income of one-off payments (no regular stream) does not come "from a single source"
    assert ("single source" in income_words("n_income_streams", streams)) is said


@pytest.mark.parametrize("age,said", [(59.0, False), (60.0, True), (65.0, True), (66.0, False), (75.0, False),
                                      (np.nan, False)])
def test_close_to_state_pension_age_only_below_it(age, said):
    assert ("close to state pension age" in income_words("age", age)) is said


def test_income_words_speak_of_the_income_the_bank_sees():
    for name, spec in ef.driver_phrases("income").items():
        text = spec[0] if isinstance(spec, list) else spec
        assert "your income" not in text, name     # a salary paid elsewhere is not seen: never "your income"


@pytest.mark.parametrize("share,said", [(0.19, False), (0.2, True), (np.nan, False)])
def test_travel_share_names_its_bound_and_window(share, said):
    phrases = ef.driver_phrases("expense")
    text = ef.driver_texts([["share_travel_90"]], pd.DataFrame({"share_travel_90": [share]}), phrases)[0]
    assert (text == "20% or more of your card spending in the last 90 days went on travel") is said, text


def test_large_bill_driver_is_expected_not_certain_and_names_its_horizon():
    phrases = ef.driver_phrases("expense")
    values = pd.DataFrame({"known_large_due_60": [900.0, 0.0]})
    texts = ef.driver_texts([["known_large_due_60"]] * 2, values, phrases)
    assert texts[0] == "a large bill you pay every few months or yearly is expected within 60 days"
    assert texts[1] == phrases["default"]


def test_words_that_type_a_number_of_their_own_are_refused():
    with pytest.raises(SegoneError, match="state a number of their own"):
        wording.check_phrases({"days_since_income": ["your last income arrived 20 or more days ago", ">=", 20],
                               "default": "x"}, "test")
    with pytest.raises(SegoneError, match="unknown operator"):
        wording.check_phrases({"age": ["you are close to state pension age", "=>", 60], "default": "x"}, "test")
    with pytest.raises(SegoneError, match="window"):
        wording.check_phrases({"age": ["in the last {window} days", ">", 0], "default": "x"}, "test")
    # every phrase the product ships passes
    forecast.driver_phrases()
    for kind in ef.KINDS:
        ef.driver_phrases(kind)


# ------------------------------------------------------------------------------------------ cash-forecast drivers

class _TopFeatures:
    """A stand-in attributor: every row's top features are the given names (the attribution is the model's; what
    is tested is which of them the words may name)."""

    def __init__(self, names):
        self.names = names

    def top_features(self, X, feature_names, k=3):
        return [list(self.names) for _ in range(len(X))]


def cash_drivers(inputs: pd.DataFrame, names: list[str]) -> list[str]:
    features = [c for c in inputs.columns if c not in ("customer_id", "cutoff")]
    engine = SimpleNamespace(feature_names=features, attributors={(30, 0): _TopFeatures(names)},
                             classifier_rows=lambda h, ids: [(None, np.ones(len(ids), dtype=bool))])
    rows = inputs[["customer_id", "cutoff"]].assign(horizon_days=30, p_shortfall=0.6)
    return list(forecast.drivers(engine, inputs, rows, 0.2))


def test_cash_forecast_drivers_name_only_facts_true_of_the_customer():
    inputs = pd.DataFrame({"customer_id": ["LOW", "HIGH", "NONE"], "cutoff": pd.Timestamp(D),
                           "balance_now": [-40.0, 2500.0, np.nan], "n_days_negative_90": [3.0, 0.0, np.nan],
                           "income_90": [900.0, 9000.0, np.nan]})
    low, high, none = cash_drivers(inputs, ["balance_now", "n_days_negative_90", "income_90"])
    assert low == "your balance is below zero today; your balance went below zero in the last 90 days"
    # the same top features for a customer whose balance is high and never went negative: no claim about them
    default = forecast.driver_phrases()["default"]
    assert high == default and none == default
    assert "income has been lower" not in low      # "lower" than nothing: not said


# ------------------------------------------------------------------------------------------------ action reasons

def reasons_of(decisions, customer: str, action: str) -> str:
    nba = decisions.next_best_actions
    row = nba[(nba["customer_id"] == customer) & (nba["action_id"].astype(str) == action)]
    assert len(row) == 1, f"{action} not published for {customer}"
    return str(row["reasons"].iloc[0])


def test_a_near_certain_shortfall_is_never_said_to_be_certain():
    ctx = customers({"p_shortfall_30": 0.996, "p_shortfall_60": 0.997, "p_shortfall_90": 0.998,
                     "balance_now": 20.0, "safe_to_save": 0.0})
    text = reasons_of(run(ctx), "C0000", "shortfall_warning")
    assert "(99% chance)" in text and "100%" not in text
    assert "around soon" not in text        # no expected date: the date sentence is not said


def test_a_reason_whose_fact_is_unknown_is_not_said():
    sub = pd.DataFrame({"safe_to_save": [np.nan, 320.4], "has_savings": [False, False]})
    text = decide._reason_text(BY_ID["easy_access_savings"], sub)
    assert "£0" not in text.iloc[0] and text.iloc[0] == BY_ID["easy_access_savings"].title.lower()
    assert text.iloc[1] == "you could put aside about £320 today without risking a shortfall"


def test_salary_switch_help_does_not_claim_an_income_elsewhere():
    # an account at another bank and no regular income here: nothing says the income is paid there
    ctx = customers({"has_regular_income": False, "has_external_current": True, "monthly_recurring_income": 0.0})
    text = reasons_of(run(ctx, top_k=30), "C0000", "salary_switch_help")
    assert "income is paid into an account at another bank" not in text
    assert text == "you have a current account at another bank and no regular income arrives in your account here"


ELSEWHERE = "you have a current account at another bank and no regular income arrives in your account here"


@pytest.mark.parametrize("case,said", [
    # a regular income arrives here: never, whatever else holds
    ({"has_regular_income": True, "has_external_current": True, "is_new_job": True}, None),
    # no income here in the last 90 days (unknown) or for 40 days or more, an account elsewhere: the first variant
    ({"has_external_current": True, "days_since_income": np.nan}, ELSEWHERE),
    ({"has_external_current": True, "days_since_income": 40.0}, ELSEWHERE),
    # a new job flagged, no account elsewhere: the new job alone ("no regular income arrives here" is not said)
    ({"is_new_job": True, "days_since_income": np.nan}, "you may be starting a new job"),
    # an income arrived here 39 days ago, or a new salary paid here twice (no stream yet): there is nothing to
    # switch, and "no regular income arrives in your account here" would not be true
    ({"has_external_current": True, "days_since_income": 39.0}, None),
    ({"has_external_current": True, "is_new_job": True, "days_since_income": 11.0}, None),
    # a stopped salary whose new payer has paid once (a new job or a one-off): the income is not known
    ({"has_external_current": True, "days_since_income": 70.0, "is_income_pending": 1.0}, None),
    # no account elsewhere and no new job: nothing to move
    ({"days_since_income": np.nan}, None),
])
def test_salary_switch_help_is_said_only_when_no_income_arrives_here(case, said):
    """salary_switch_help's reasons ("... no regular income arrives in your account here") only for a customer whose
    current account here has had no income for 40 days, whose income is known, with an account elsewhere or a new
    job; never to a customer whose salary arrives here (docs/decisioning.md, "The catalogue")."""
    ctx = customers({"has_regular_income": False, "monthly_recurring_income": 0.0} | case)
    decisions = run(ctx, top_k=30)
    if said is None:
        assert "salary_switch_help" not in set(decisions.next_best_actions["action_id"].astype(str))
    else:
        assert reasons_of(decisions, "C0000", "salary_switch_help") == said


def test_large_bill_threshold_is_said_to_the_penny():
    sub = pd.DataFrame({"p_large_expense": [0.62], "large_expense_threshold": [612.6],
                        "large_expense_horizon": [30.0], "large_expense_date": [None],
                        "large_expense_amount": [np.nan], "large_expense_drivers": [None]})
    text = decide._reason_text(BY_ID["large_bill_ahead"], sub).iloc[0]
    assert text == "our forecast gives a 62% chance of a single payment of £612.60 or more within 30 days"


def test_income_drop_reason_speaks_of_the_income_the_bank_sees():
    sub = pd.DataFrame({"p_income_drop": [0.42], "income_drop_share": [0.3], "income_reference": [2400.0],
                        "income_drop_horizon": [60.0], "income_drop_date": [None], "income_drop_drivers": [None]})
    text = decide._reason_text(BY_ID["income_drop_ahead"], sub).iloc[0]
    assert text == ("our forecast gives a 42% chance that the income paid into your accounts falls more than 30% "
                    "below its recent £2400 a month within 60 days")


# ---------------------------------------------------------------------------------------------------------- plans

def test_a_provision_states_the_amount_actually_set_aside():
    # £600 bill in 50 days: two instalments of £300 asked, the P10 path leaves room for £350: the second is £50
    out = run_plans(plan_forecast("C_BILL", (400.0, 400.0, 400.0)), [current("C_BILL")],
                    [bill("C_BILL", 50, 600.0)], cons=consent("C_BILL", open_banking=("C_BILL",)))
    provision = out[out["action"] == "bill_provision"].sort_values("execute_on")
    assert list(provision["amount"]) == [300.0, 50.0]
    assert "setting aside £300.00 on 1 Dec 2026 (instalment 1 of 2) towards it" in provision["reason"].iloc[0]
    assert "setting aside £50.00 on 1 Jan 2027 (instalment 2 of 2) towards it" in provision["reason"].iloc[1]
    assert not provision["reason"].str.contains("covers it").any()


def test_a_tax_pot_states_the_amount_granted_not_the_share_asked():
    roles = pd.DataFrame([{"customer_id": "C_FREE", "role": "irregular_earner", "amount": 9000.0,
                           "window_days": 180, "reason": "most of the income paid into your accounts came from "
                                                          "self-employed work"}])
    # room for £130 in the first 30 days (P10 180 less the £50 buffer): £300 a month is asked
    out = run_plans(plan_forecast("C_FREE", (180.0, 2000.0, 2000.0)), [current("C_FREE")], roles=roles)
    first = out[out["action"] == "tax_pot"].sort_values("execute_on").iloc[0]
    assert first["amount"] == 130.0
    assert "setting aside £130.00 on 1 Dec 2026 towards the tax on it" in first["reason"]
    assert "20% of that income would be £300.00 a month" in first["reason"]
    assert "each month" not in first["headline"]


# ----------------------------------------------------------------------------------------------------- CRM export

def test_crm_explanation_stays_true_once_its_money_figures_are_put_into_words():
    from pipelines.crm_export import redact_money

    sub = pd.DataFrame({"p_large_expense": [0.62], "large_expense_threshold": [612.6], "large_expense_horizon": [30.0],
                        "large_expense_date": ["2026-12-15"], "large_expense_amount": [820.0],
                        "large_expense_drivers": [None]})
    text = redact_money(decide._reason_text(BY_ID["large_bill_ahead"], sub).iloc[0])
    # not "a 62% chance of a single payment": any payment at all is near certain
    assert text == ("our forecast gives a 62% chance of a large single payment within 30 days; "
                    "most likely around 15 December 2026")
    sub = pd.DataFrame({"p_income_drop": [0.42], "income_drop_share": [0.3], "income_reference": [2400.0],
                        "income_drop_horizon": [60.0], "income_drop_date": [None], "income_drop_drivers": [None]})
    text = redact_money(decide._reason_text(BY_ID["income_drop_ahead"], sub).iloc[0])
    assert text.endswith("falls more than 30% below its recent monthly level within 60 days"), text



def test_a_known_payment_the_balance_cannot_meet_is_a_projection_not_a_certainty():
    rows = pd.DataFrame({"cutoff": [pd.Timestamp(D)] * 2, "unmet_day": [11.0, np.nan],
                         "unmet_amount": [1050.0, np.nan], "unmet_payments": [1, 0]})
    said, none = forecast.known_payment_driver(rows)
    assert said == ("a regular payment of £1,050.00 due around 01 December 2026 is more than your balance is "
                    "projected to be by then")
    assert none is None


def test_the_plan_action_names_the_days_the_plans_reach(monkeypatch):
    """'in the next 90 days' is config/plans.yaml horizons, not a number typed in the catalogue."""
    from pipelines import config as config_module

    ctx = decide.complete_context(customers({"has_savings_plan": True, "plan_savings_amount": 400.0,
                                             "plan_savings_reason": "what is safe to save moved to savings tomorrow"}))
    text = decide._reason_text(BY_ID["savings_plan"], ctx[decide._fields_of(BY_ID["savings_plan"])]).iloc[0]
    assert text == "a plan to set aside £400 in the next 90 days: what is safe to save moved to savings tomorrow"
    real = config_module.load_config

    def shorter(name, *args, **kwargs):
        out = real(name, *args, **kwargs)
        return {**out, "horizons": [30, 60]} if name == "plans" else out
    monkeypatch.setattr(decide, "load_config", shorter)
    ctx = decide.complete_context(customers({"has_savings_plan": True, "plan_savings_amount": 400.0,
                                             "plan_savings_reason": "x"}))
    assert "in the next 60 days" in decide._reason_text(BY_ID["savings_plan"],
                                                       ctx[decide._fields_of(BY_ID["savings_plan"])]).iloc[0]
