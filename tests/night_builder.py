"""Hand-made silver and gold partitions of a night, for the publish, access and lock tests: every column of each
table's schema (config/tables.yaml), typed as the schema says, with a `version` string in the text columns so that a
test can tell which run of a night a view shows."""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from pipelines import lake
from pipelines.config import Paths
from pipelines.runs import write_run_metrics
from pipelines.schemas import table_schema
from pipelines.stages import GATES

CUSTOMERS = [f"C{i:04d}" for i in range(12)]
SECRET = "SECRET-RAW-VALUE"


def write_table(paths: Paths, layer: str, table: str, rows: list[dict], **partition: str) -> None:
    """Rows of one partition (bucketed tables split by bucket), cast to the schema; absent columns are null."""
    schema = table_schema(layer, table)
    frame = pd.DataFrame(rows)
    bucketed = "bucket" in schema.partition
    if bucketed:
        frame["bucket"] = lake.bucket_of(frame["customer_id"]).astype("int32")
    columns = []
    for column in schema.columns:
        if column.name in partition or (column.name == "bucket" and bucketed):
            continue
        source = f'"{column.name}"' if column.name in frame.columns else "null"
        columns.append(f"cast({source} as {column.type}) as {column.name}")
    if bucketed:
        columns.append("bucket")
    con = lake.connect()
    con.register("frame", frame)
    try:
        lake.write_relation(con, f"select {', '.join(columns)} from frame",
                            lake.partition_path(paths, layer, table, **partition), paths,
                            partition_by=["bucket"] if bucketed else None)
    finally:
        con.close()


DEFAULT_TABLES = ("customers", "transactions", "next_best_actions", "decision_log", "advisor_queue", "quarantine",
                  "standing_orders", "direct_debits", "message_insights", "message_signals", "app_events", "app_usage")


def write_night(paths: Paths, day: date, version: str, customers: list[str] = CUSTOMERS,
                tables: tuple[str, ...] = DEFAULT_TABLES) -> None:
    d = day.isoformat()
    if "customers" in tables:
        write_table(paths, "silver", "customers", [
            {"customer_id": c, "birth_year": 1950 + i, "region": f"region {version}", "customer_since": date(2020, 1, 1),
             "known_vulnerability": "health" if i == 0 else None, "bucket": int(lake.bucket_of([c])[0]),
             "updated_load_date": d} for i, c in enumerate(customers)], as_of=d)
    if "transactions" in tables:
        write_table(paths, "silver", "transactions", [
            {"transaction_id": f"{version}-{c}", "account_id": f"A{c}", "customer_id": c, "source": "core",
             "booked_at": f"{d} 10:00:00+00", "booking_date": d, "amount": -12.5, "currency": "GBP",
             "description": f"coffee {version}", "channel": "card"} for c in customers], load_date=d)
    if "next_best_actions" in tables:
        write_table(paths, "gold", "next_best_actions", [
            {"recommendation_id": f"{c}-{d}-{version}", "customer_id": c, "rank": 1, "action_id": "shortfall_warning",
             "action_class": "protective", "channel": "push", "priority": 1.0, "propensity": 0.1, "value": 1.0,
             "logging_probability": 1.0, "is_exploration": False, "is_control": False, "reasons": "r",
             "explanation": f"explained {version}", "policy_version": "nba-v1",
             "valid_until": day + timedelta(days=7)} for c in customers], as_of=d)
    if "decision_log" in tables:
        write_table(paths, "gold", "decision_log", [
            row for i, c in enumerate(customers) for row in (
                {"customer_id": c, "action_id": "mortgage", "action_class": "commercial", "stage": "applicability",
                 "reason": f"no home purchase flagged {version}", "policy_version": "nba-v1"},
                {"customer_id": c, "action_id": "credit_card", "action_class": "commercial", "stage": "suitability",
                 "reason": "credit not offered: a known vulnerability is recorded", "policy_version": "nba-v1"})],
            as_of=d)
    if "advisor_queue" in tables:
        write_table(paths, "gold", "advisor_queue", [
            {"customer_id": customers[0], "priority": 1.2, "suggested_action": "advisor_callback",
             "reason": "known vulnerability (health) with a risk of a shortfall within 30 days (70%)",
             "p_shortfall_30": 0.7, "known_vulnerability": "health", "is_income_drop": False, "in_arrears": False,
             "is_service_alerts_allowed": True}], as_of=d)
    if "standing_orders" in tables:
        write_table(paths, "silver", "standing_orders", [
            {"account_id": f"ob:bank:{c}", "customer_id": c, "provider": "bank", "standing_order_id": "so1",
             "creditor_name": f"health clinic {version}", "bucket": int(lake.bucket_of([c])[0])}
            for c in customers[:2]], as_of=d)
    if "direct_debits" in tables:
        write_table(paths, "silver", "direct_debits", [
            {"account_id": f"ob:bank:{c}", "customer_id": c, "provider": "bank", "direct_debit_id": "dd1",
             "name": f"health insurer {version}", "status": "active", "bucket": int(lake.bucket_of([c])[0])}
            for c in customers[:2]], as_of=d)
    if "message_insights" in tables:
        write_table(paths, "gold", "message_insights", [
            {"message_id": f"M{c}", "customer_id": c, "received_at": f"{d} 09:00:00+00", "channel": "chat",
             "intent": "card_arrival", "intent_probability": 0.9, "sentiment": -0.8, "distress": 0.95,
             "signals": "financial_difficulty", "model_version": f"m-{version}"} for c in customers[:2]], as_of=d)
    if "message_signals" in tables:
        write_table(paths, "gold", "message_signals", [
            {"customer_id": c, "n_messages": 1, "last_message_at": f"{d} 09:00:00+00", "max_distress": 0.95,
             "is_distressed": True, "has_financial_difficulty": True, "has_recent_complaint": False,
             "reasons": "wrote about difficulty paying (health bills)", "model_version": f"m-{version}"}
            for c in customers[:2]], as_of=d)
    if "app_events" in tables:
        write_table(paths, "silver", "app_events", [
            {"event_id": f"E{c}-{target}", "customer_id": c, "occurred_at": f"{d} 09:00:00+00",
             "event_type": "searched", "target": target, "channel": "app"}
            for c in customers[:2] for target in ("money_help", "savings_goals")], load_date=d)
    if "app_usage" in tables:
        write_table(paths, "gold", "app_usage", [
            {"customer_id": c, "target": target, "n_views": 3, "n_feature_uses": 0, "n_searches": 1,
             "n_notifications_opened": 0, "n_notifications_dismissed": 0, "n_days_used": 2}
            for c in customers[:2] for target in ("money_help", "savings_goals")], as_of=d)
    if "decision_flags" in tables:  # not by default: the report's compliance checks then expect a full decision log
        write_table(paths, "gold", "decision_flags", [
            {"customer_id": c, "is_at_risk": i == 0, "is_shortfall_risk": False, "in_arrears": False,
             "is_unarranged_overdraft": False, "is_gambling_harm": False, "is_vulnerable": i == 0,
             "is_message_distress": False, "is_income_drop_ahead": False, "has_forecast": True,
             "p_shortfall_30": 0.1, "is_income_drop": False,
             "is_control": False, "bucket": int(lake.bucket_of([c])[0])} for i, c in enumerate(customers)], as_of=d)
    if "quarantine" in tables:
        write_table(paths, "gold", "quarantine", [
            {"load_date": d, "stage": "ingest", "file": f"{d}/transactions.csv", "line": 3, "column_name": "amount",
             "reason": "not a decimal", "raw_value": f"{SECRET} {version}"}], load_date=d)


def pass_gates(paths: Paths, day: date | str, gates: tuple[str, ...] = GATES) -> None:
    """The night ran (runs/D/ingest.json) and the given gates passed."""
    load = day if isinstance(day, str) else day.isoformat()
    write_run_metrics(paths, load, "ingest", {"kinds": {}})
    for gate in gates:
        write_run_metrics(paths, load, gate, {"passed": True, "suites": {}, "gates": []})
