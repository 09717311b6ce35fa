"""The income-drop and large-expense forecasts as decide inputs (config/decisioning.yaml event_forecasts): the
actions income_drop_ahead and large_bill_ahead on hand-made customers (tests/test_decide.py's HEALTHY): each reason
true of the customer and absent when its condition is not met, withheld without consent, within the contact rules,
not duplicated with a plan's bill provision; the gold rows reach the context as the chosen horizon's facts; a likely
income drop blocks credit."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from pipelines import decide
from tests.test_decide import BY_ID, D, customers, run

INCOME = dict(p_income_drop_30=0.1, p_income_drop_60=0.42, p_income_drop_90=0.55, income_reference=2400.0,
              income_drop_date=None,
              income_drop_drivers="the regular income paid into your accounts comes from a single source")
BILL = dict(p_large_expense_30=0.62, p_large_expense_60=0.7, p_large_expense_90=0.8, large_expense_threshold=600.0,
            large_expense_date=pd.Timestamp("2026-12-15"), large_expense_amount=820.0,
            large_expense_drivers="a large bill you pay every few months or yearly is expected within 30 days")


def published(decisions: decide.Decisions, customer: str, action: str) -> pd.DataFrame:
    nba = decisions.next_best_actions
    return nba[(nba["customer_id"] == customer) & (nba["action_id"].astype(str) == action)]


def dropped(decisions: decide.Decisions, customer: str, action: str) -> pd.DataFrame:
    log = decisions.decision_log
    return log[(log["customer_id"] == customer) & (log["action_id"].astype(str) == action)]


def test_income_drop_ahead_states_the_forecast_true_of_the_customer() -> None:
    out = run(customers(INCOME, INCOME | {"income_drop_date": pd.Timestamp("2027-01-09"), "p_income_drop_30": 0.51,
                                          "income_drop_drivers": None}), top_k=30)
    first = published(out, "C0000", "income_drop_ahead")
    assert len(first) == 1 and first["action_class"].iloc[0] == "protective" and first["rank"].iloc[0] == 1
    # 30 days is below the level (0.1 < 0.3): the shortest horizon at the level is 60 days, and its probability
    assert first["reasons"].iloc[0] == ("our forecast gives a 42% chance that the income paid into your accounts falls "
                                        "more than 30% below its recent £2400 a month within 60 days; the regular "
                                        "income paid into your accounts comes from a single source")
    second = published(out, "C0001", "income_drop_ahead")["reasons"].iloc[0]
    assert second.startswith("our forecast gives a 51% chance that the income paid into your accounts falls more "
                             "than 30% below its recent £2400 a month within 30 days; if it does, it would most "
                             "likely show around 09 January 2027")
    assert "single source" not in second  # no drivers for this customer: none stated


def test_income_drop_ahead_is_absent_below_the_level_or_when_the_income_already_stopped() -> None:
    out = run(customers(INCOME | {"p_income_drop_30": 0.29, "p_income_drop_60": 0.29},  # below 0.3 at 30 and 60
                        INCOME | {"p_income_drop_30": 0.1, "p_income_drop_60": 0.2, "p_income_drop_90": 0.9},
                        INCOME | {"is_income_stopped": True},
                        {}), top_k=30)   # no income forecast at all (no row: no regular income, or no consent)
    for customer in ("C0000", "C0001", "C0002", "C0003"):
        assert published(out, customer, "income_drop_ahead").empty
        assert dropped(out, customer, "income_drop_ahead")["stage"].tolist() == ["applicability"]
    assert "already stopped" in dropped(out, "C0002", "income_drop_ahead")["reason"].iloc[0]
    assert "does not expect a drop" in dropped(out, "C0001", "income_drop_ahead")["reason"].iloc[0]  # 90 days: not acted on


def test_the_new_actions_are_withheld_without_personalization_or_service_alerts() -> None:
    both = INCOME | BILL
    out = run(customers(both | {"is_personalization_allowed": False}, both | {"is_service_alerts_allowed": False},
                        both), top_k=30)
    for action in ("income_drop_ahead", "large_bill_ahead"):
        for customer in ("C0000", "C0001"):
            assert published(out, customer, action).empty
            assert dropped(out, customer, action)["stage"].tolist() == ["consent"]
        assert len(published(out, "C0002", action)) == 1
    # no sentence drawn from the forecasts reaches a customer whose consent is missing
    nba = out.next_best_actions
    assert not nba[nba["customer_id"].isin(["C0000", "C0001"])]["explanation"].str.contains("forecast gives").any()


def test_contact_policy_applies_to_the_new_actions() -> None:
    """A decline within the cool-down days withholds the action, as for every other action."""
    ctx = customers(INCOME | BILL)
    responses = pd.DataFrame([
        {"recommendation_id": f"r{i}", "customer_id": "C0000", "action_id": action, "channel": "inapp",
         "event": "declined", "event_at": pd.Timestamp(D - timedelta(days=3), tz="UTC")}
        for i, action in enumerate(("income_drop_ahead", "large_bill_ahead"))])
    out = run(ctx, responses, top_k=30)
    for action in ("income_drop_ahead", "large_bill_ahead"):
        assert BY_ID[action].cool_down_days > 3
        assert published(out, "C0000", action).empty
        assert dropped(out, "C0000", action)["stage"].tolist() == ["contact_policy"]


def test_large_bill_ahead_states_the_forecast_and_only_what_it_gives() -> None:
    out = run(customers(BILL, BILL | {"large_expense_date": None, "large_expense_amount": np.nan,
                                      "large_expense_drivers": None}), top_k=30)
    first = published(out, "C0000", "large_bill_ahead")
    assert len(first) == 1 and first["action_class"].iloc[0] == "service"
    assert first["reasons"].iloc[0] == ("our forecast gives a 62% chance of a single payment of £600 or more within "
                                        "30 days; most likely around 15 December 2026, of about £820; a large bill "
                                        "you pay every few months or yearly is expected within 30 days")
    second = published(out, "C0001", "large_bill_ahead")["reasons"].iloc[0]
    assert second == "our forecast gives a 62% chance of a single payment of £600 or more within 30 days"
    assert "£0" not in second and "soon" not in second  # no date or amount the forecast did not give


def test_large_bill_ahead_is_absent_below_the_level_and_when_money_is_tight() -> None:
    out = run(customers(BILL | {"p_large_expense_30": 0.3, "p_large_expense_60": 0.45},
                        BILL | {"p_shortfall_30": 0.6, "p_shortfall_60": 0.7, "p_shortfall_90": 0.8}), top_k=30)
    assert published(out, "C0000", "large_bill_ahead").empty
    assert "does not expect a large payment" in dropped(out, "C0000", "large_bill_ahead")["reason"].iloc[0]
    assert published(out, "C0001", "large_bill_ahead").empty
    assert "money looks tight" in dropped(out, "C0001", "large_bill_ahead")["reason"].iloc[0]
    assert len(published(out, "C0001", "shortfall_warning")) == 1  # the protective help instead


def test_a_plans_bill_provision_and_large_bill_ahead_are_one_message_for_the_same_money() -> None:
    """A customer whose savings plan sets money aside for a known bill gets the savings_plan (which says so) and not
    large_bill_ahead; a savings plan that only sweeps does not withhold it."""
    from tests.test_plans import bill, current, forecast, run as plan_run

    rows = plan_run(forecast("C_BILL", (3000.0, 3000.0, 3000.0)) + forecast("C_SWEEP", (3000.0, 3000.0, 3000.0)),
                    [current("C_BILL"), current("C_SWEEP")],
                    [bill("C_BILL", 40, 700.0, source="last_year", ob=False)])
    assert "bill_provision" in set(rows[rows["customer_id"] == "C_BILL"]["action"])
    assert set(rows[rows["customer_id"] == "C_SWEEP"]["action"]) == {"savings_sweep"}
    context = decide.plan_context(rows)
    by = context.set_index("customer_id")
    assert by.loc["C_BILL", "has_bill_provision"] and not by.loc["C_SWEEP", "has_bill_provision"]
    assert "a bill like one you paid a year ago" in by.loc["C_BILL", "plan_bill_reason"]
    ctx = pd.DataFrame([
        {**customers(BILL).iloc[0].to_dict(), "customer_id": c} for c in ("C_BILL", "C_SWEEP")]).merge(
        context, on="customer_id", how="left")
    out = run(ctx, top_k=30)
    assert published(out, "C_BILL", "large_bill_ahead").empty
    assert "already sets money aside for a known bill" in dropped(out, "C_BILL", "large_bill_ahead")["reason"].iloc[0]
    assert len(published(out, "C_BILL", "savings_plan")) == 1
    assert len(published(out, "C_SWEEP", "large_bill_ahead")) == 1


def test_gold_rows_reach_the_context_as_the_chosen_horizons_facts() -> None:
    """_event_wide + complete_context: the probability per horizon, the reference amount, and the date, amount and
    drivers of the shortest horizon at the level; drivers that are only the forecast's default words are dropped."""
    def rows(customer, ps, dates, amounts, drivers, reference):
        return [{"customer_id": customer, "horizon_days": h, "p_event": p, "expected_date": d,
                 "expected_amount": a, "reference_amount": reference, "drivers": w, "model_version": "event-t"}
                for h, p, d, a, w in zip((30, 60, 90), ps, dates, amounts, drivers)]

    day = date(2026, 12, 20)
    expense = pd.DataFrame(
        rows("C0000", (0.2, 0.6, 0.7), (None, day, day), (np.nan, 900.0, 950.0),
             ("x", "a large bill you pay every few months or yearly is due within 60 days", "y"), 400.0)
        + rows("C0001", (0.55, 0.6, 0.7), (day, day, day), (500.0, 900.0, 950.0),
               ("your recent pattern of spending",) * 3, 450.0))
    income = pd.DataFrame(rows("C0000", (0.05, 0.1, 0.2), (None,) * 3, (np.nan,) * 3,
                               ("no elevated chance of an income drop",) * 3, 2000.0))
    pol = decide.policy()
    ctx = customers({}, {})
    for event, frame in (("large_expense", expense), ("income_drop", income)):
        ctx = ctx.merge(decide._event_wide(frame, event, pol), on="customer_id", how="left")
    ctx = decide.complete_context(ctx, pol).set_index("customer_id")
    a, b = ctx.loc["C0000"], ctx.loc["C0001"]
    assert a["is_large_expense_ahead"] and a["large_expense_horizon"] == 60 and a["p_large_expense"] == 0.6
    assert a["large_expense_amount"] == 900.0 and pd.Timestamp(a["large_expense_date"]) == pd.Timestamp(day)
    assert a["large_expense_drivers"].endswith("due within 60 days") and a["large_expense_threshold"] == 400.0
    assert b["large_expense_horizon"] == 30 and b["large_expense_amount"] == 500.0
    assert pd.isna(b["large_expense_drivers"])  # the default words: nothing specific to say
    assert not a["is_income_drop_ahead"] and a["income_reference"] == 2000.0 and a["p_income_drop_90"] == 0.2
    assert np.isnan(a["income_drop_horizon"]) and pd.isna(a["income_drop_drivers"])


def test_a_likely_income_drop_blocks_credit_and_is_flagged() -> None:
    out = run(customers(INCOME, {}), top_k=30)
    blocked = dropped(out, "C0000", "credit_card")
    assert blocked["stage"].tolist() == ["suitability"]
    assert "income forecast expects" in blocked["reason"].iloc[0]
    assert len(published(out, "C0001", "credit_card")) == 1
    flags = out.decision_flags.set_index("customer_id")
    assert flags.loc["C0000", "is_income_drop_ahead"] and flags.loc["C0000", "is_at_risk"]
    assert not flags.loc["C0001", "is_income_drop_ahead"] and not flags.loc["C0001", "is_at_risk"]


def test_the_gold_suites_know_every_catalogue_action() -> None:
    """The validate_decisions gate checks action_id against config/tables.yaml: a catalogue action missing there
    (as the two new ones were) would fail the night at the gate."""
    from pipelines.schemas import table_schema

    ids = {a.id for a in BY_ID.values()}
    assert {"income_drop_ahead", "large_bill_ahead"} <= ids
    for table in ("next_best_actions", "decision_log"):
        assert set(table_schema("gold", table).checks["values"]["action_id"]) == ids, table
