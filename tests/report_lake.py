"""A tiny hand-made lake for the nightly report: two nights of gold tables, silver customers and consents, and the
run metrics of a night's attempts (tests/test_nightly_report.py, tests/test_report_screenshot.py).

210 customers: 100 aged 30 (North), 40 aged 20 (North), 60 aged 70 and 10 aged 50 (Yorkshire and The Humber).
Every third customer is at risk (a predicted shortfall: p_shortfall_30 = 0.6); customers 1 and 2 also have a known
vulnerability; every 21st customer is in the control group. Decisions follow the rules: a protective shortfall
warning for customers at risk, an ISA by email for customers under 65, a credit card in the app for customers under
65 not at risk, nothing commercial or of service for the control group; every other catalogue action is in the
decision log with the stage that dropped it (commercial actions for customers aged 65+ at eligibility, 'over 65
(test rule)', so the offer rate of 65+ is 0: a fairness gap with its rule).
"""
from __future__ import annotations

import os
import time
from datetime import date, timedelta

import pandas as pd

from pipelines import lake
from pipelines.actions import load_catalogue
from pipelines.config import Paths
from pipelines.night_status import CHAIN
from pipelines.runs import write_run_metrics

DAY = date(2026, 11, 19)
PREVIOUS = DAY - timedelta(days=1)
N = 210
CONTROL = {f"C{i:04d}" for i in range(N) if i % 21 == 0}


def _age(i: int) -> tuple[int, str]:
    return (30, "North") if i < 100 else (20, "North") if i < 140 else (70, "Yorkshire and The Humber") if i < 200 \
        else (50, "Yorkshire and The Humber")


def _bucketed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    return frame


def customers() -> pd.DataFrame:
    rows = []
    for i in range(N):
        age, region = _age(i)
        rows.append({"customer_id": f"C{i:04d}", "birth_year": DAY.year - age, "region": region,
                     "customer_since": date(2020, 1, 1), "known_vulnerability": "resilience" if i in (1, 2) else None,
                     "updated_load_date": "history"})
    return _bucketed(pd.DataFrame(rows))


def consent_state(withdrawn: dict[str, list[str]] | None = None) -> pd.DataFrame:
    purposes = ("personalization", "open_banking", "life_events", "location", "marketing_email", "marketing_sms",
                "marketing_push", "marketing_inapp", "service_alerts")
    frame = pd.DataFrame({"customer_id": [f"C{i:04d}" for i in range(N)]})
    for purpose in purposes:
        frame[f"is_{purpose}_allowed"] = True
    for customer, gone in (withdrawn or {}).items():
        for purpose in gone:
            frame.loc[frame["customer_id"] == customer, f"is_{purpose}_allowed"] = False
    return _bucketed(frame)


def at_risk(i: int) -> bool:
    return i % 3 == 0 or i in (1, 2)


def decisions(day: date, with_credit: bool = True) -> dict[str, pd.DataFrame]:
    """Gold next_best_actions, decision_log, decision_flags, advisor_queue and cash_forecast of one night."""
    catalogue = load_catalogue()
    nba, dlog, flags, queue, forecast, income, expense = [], [], [], [], [], [], []
    for i in range(N):
        customer = f"C{i:04d}"
        age, _ = _age(i)
        risk, control = at_risk(i), customer in CONTROL
        p30 = 0.6 if i % 3 == 0 else 0.05
        chosen = []
        if risk:
            chosen.append(("shortfall_warning", "protective", "push"))
        if not control and age < 65:
            chosen.append(("isa", "commercial", "email"))
            if with_credit and not risk:
                chosen.append(("credit_card", "commercial", "inapp"))
        for rank, (action, cls, channel) in enumerate(chosen, start=1):
            nba.append({"recommendation_id": f"{customer}-{action}-{day}", "customer_id": customer, "rank": rank,
                        "action_id": action, "action_class": cls, "channel": channel, "priority": 1.0 / rank,
                        "propensity": 0.1, "value": 10.0, "logging_probability": 1.0, "is_exploration": False,
                        "is_control": control, "reasons": "r", "explanation": "e", "policy_version": "nba-test",
                        "valid_until": day + timedelta(days=7)})
        published = {a for a, _, _ in chosen}
        for action in catalogue:
            if action.id in published:
                continue
            if age >= 65 and action.action_class == "commercial":
                stage, reason = "eligibility", "over 65 (test rule)"
            elif action.is_credit and risk:
                stage, reason = "suitability", "credit not offered: a shortfall is predicted within 30 days"
            elif control and action.action_class != "protective":
                stage, reason = "control_group", "the customer is in the control group this night"
            else:
                stage, reason = "applicability", "not relevant (test rule)"
            dlog.append({"customer_id": customer, "action_id": action.id, "action_class": action.action_class,
                         "stage": stage, "reason": reason, "policy_version": "nba-test"})
        flags.append({"customer_id": customer, "is_at_risk": risk, "is_shortfall_risk": i % 3 == 0,
                      "in_arrears": False, "is_unarranged_overdraft": False, "is_gambling_harm": False,
                      "is_vulnerable": i in (1, 2), "is_message_distress": False,
                      "is_income_drop_ahead": i % 3 == 0, "has_forecast": True,
                      "p_shortfall_30": p30,
                      "is_income_drop": False, "is_control": control})
        if i % 3 == 0 and i < 30:
            queue.append({"customer_id": customer, "priority": 1.5 - i / 100, "reason": "test",
                          "suggested_action": "advisor_callback", "p_shortfall_30": p30,
                          "expected_shortfall_date": day + timedelta(days=9), "known_vulnerability": None,
                          "is_income_drop": True, "in_arrears": False, "is_service_alerts_allowed": True})
        for k, horizon in enumerate((30, 60, 90)):
            forecast.append({"customer_id": customer, "horizon_days": horizon, "p_shortfall": min(1.0, p30 + 0.05 * k),
                             "min_balance_p10": -100.0, "min_balance_p50": 0.0, "min_balance_p90": 100.0,
                             "expected_shortfall_date": day + timedelta(days=10) if p30 >= 0.5 else None,
                             "safe_to_save": 0.0, "confidence": "high", "drivers": "d",
                             "model_version": "global-test"})
            # income drops ahead only for customers at risk (never offered credit); a large expense for every 5th
            income.append({"customer_id": customer, "horizon_days": horizon,
                           "p_event": (0.2, 0.45, 0.5)[k] if i % 3 == 0 else 0.05, "expected_date": None,
                           "expected_amount": None, "reference_amount": 2000.0, "drivers": "d",
                           "model_version": INCOME_MODEL})
            expense.append({"customer_id": customer, "horizon_days": horizon,
                            "p_event": (0.55, 0.6, 0.7)[k] if i % 5 == 0 else 0.1,
                            "expected_date": day + timedelta(days=20) if i % 5 == 0 else None,
                            "expected_amount": 800.0 if i % 5 == 0 else None, "reference_amount": 500.0,
                            "drivers": "d", "model_version": "event-unregistered"})
    return {"next_best_actions": _bucketed(pd.DataFrame(nba)), "decision_log": _bucketed(pd.DataFrame(dlog)),
            "decision_flags": _bucketed(pd.DataFrame(flags)), "advisor_queue": _bucketed(pd.DataFrame(queue)),
            "cash_forecast": _bucketed(pd.DataFrame(forecast)), "income_forecast": _bucketed(pd.DataFrame(income)),
            "expense_forecast": _bucketed(pd.DataFrame(expense))}


INCOME_MODEL = "event-2026-11-01-test"


def register_income_model(paths: Paths) -> None:
    """The income forecast's model in the registry as event_forecast.train leaves it: engine.json with the base
    rates and metadata.json with the held-out backtest (the expense model's version is not registered)."""
    import json

    folder = paths.models / "income_forecast" / INCOME_MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "engine.json").write_text(json.dumps({"base_rates": {"30": 0.04, "60": 0.07, "90": 0.1}}))
    (folder / "metadata.json").write_text(json.dumps({
        "metrics_held_out": {str(h): {"n_rows": 900, "event_rate": r, "roc_auc": 0.81, "brier": 0.05,
                                      "calibration_error": 0.012} for h, r in ((30, 0.05), (60, 0.08), (90, 0.11))},
        "base_rate_held_out": {str(h): {"brier": 0.07} for h in (30, 60, 90)},
        "held_out_cutoffs": {str(h): "2026-09-01" for h in (30, 60, 90)}}))


def write_gold(paths: Paths, day: date, tables: dict[str, pd.DataFrame]) -> None:
    for table, frame in tables.items():
        lake.write_frame(frame, lake.partition_path(paths, "gold", table, as_of=day.isoformat()), paths,
                         partition_by=["bucket"])


def run_metrics(paths: Paths, day: date, fail_at: str | None = None, start: float | None = None,
                export_rows: int = 400) -> float:
    """The run metrics of one attempt of the night, in the night's order, each file one second after the one before
    (from `start`, default now); stops after the gate `fail_at`, which fails. Returns the last time used."""
    d = day.isoformat()
    clock = start if start is not None else time.time()
    for step, _, patterns, is_gate, _ in CHAIN:
        name = patterns[0].replace("*", "0")
        if step == "crm_export":
            metrics = {"rows": export_rows, "run_id": f"crm-{d}-test", "files": [{"name": "next_best_actions.csv"}]}
        elif step == "validate":
            passed = fail_at != "validate"
            metrics = {"passed": passed, "suites": {"transactions": {"success": True}},
                       "gates": [{"name": "quarantine_share:transactions", "passed": passed, "value": 0.003 if passed
                                  else 0.2, "threshold": 0.05,
                                  "message": f"transactions: {'3' if passed else '200'} of 1,003 rows quarantined"}]}
        elif step == "ingest":
            metrics = {"kinds": {"transactions": {"files": 1, "rows_read": 1003, "rows_accepted": 1000,
                                                  "rows_quarantined": 3, "files_quarantined": 0}},
                       "missing_kinds": ["fx_rates"]}
        elif is_gate and step == fail_at:
            metrics = {"passed": False, "suites": {"x": {"success": False, "suite": f"gold_{step}",
                                                         "failures": [{"message": "p_shortfall out of [0, 1]"}]}}}
            name = patterns[-1].replace("*", "_test")  # a failing gold suite writes validate_gold_<tables>.json only
        elif is_gate:
            metrics = {"validation": {"passed": True, "suites": {}}}
        elif step == "decide":
            metrics = {"capacity": {"phone": {"capacity": 20, "night_capacity": 20, "demand": 467, "served": 20,
                                              "over_capacity": 447, "sent_digitally": 440, "not_sent": 7},
                                    "advisor_queue": {"capacity": 10, "night_capacity": 10, "demand": 104,
                                                      "served": 10, "over_capacity": 94}}}
        else:
            metrics = {"done": True}
        stem = name[:-len(".json")]
        target = write_run_metrics(paths, d, stem, metrics)
        if step == "decide":  # decide.json: the shards' summary
            write_run_metrics(paths, d, "decide", {**metrics, "n_control": len(CONTROL)})
            os.utime(paths.runs / d / "decide.json", (clock, clock))
        os.utime(target, (clock, clock))
        clock += 1
        if step == fail_at:
            break
    return clock


def build(paths: Paths, fail_at: str | None = None, with_previous: bool = True) -> None:
    """Both nights' tables and tonight's run metrics (one attempt; `fail_at` a gate that fails)."""
    lake.write_frame(customers(), lake.partition_path(paths, "silver", "customers", as_of=DAY.isoformat()), paths)
    lake.write_frame(consent_state(), lake.partition_path(paths, "silver", "consent_state", as_of=DAY.isoformat()),
                     paths)
    write_gold(paths, DAY, decisions(DAY))
    register_income_model(paths)
    if with_previous:
        write_gold(paths, PREVIOUS, decisions(PREVIOUS, with_credit=False))
    quarantine = pd.DataFrame({"stage": ["ingest"] * 3, "file": [f"{DAY}/transactions.csv"] * 3, "line": [4, 9, 12],
                               "column_name": ["amount", "amount", "mcc"],
                               "reason": ["not a decimal", "not a decimal", "not 4 digits"],
                               "raw_value": ["1,2", "abc", "12"]})
    lake.write_frame(quarantine, lake.partition_path(paths, "gold", "quarantine", load_date=DAY.isoformat()), paths)
    run_metrics(paths, DAY, fail_at=fail_at, start=time.time() - 1000)
