"""End to end through Airflow itself: a small simulated bank, the history load, then `airflow dags test` for D."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines.warehouse import connect as connect_warehouse
from tests.bank_cache import AIRFLOW_BUCKETS, AIRFLOW_CUSTOMERS, AIRFLOW_NIGHT, airflow_bank, airflow_overlay, bank_copy

BIN = Path(sys.executable).parent
D = AIRFLOW_NIGHT
RUN_AFTER = "2026-11-21"  # the run whose one-day data interval is D
# The bank shared with tests/test_scheduler.py (tests/bank_cache.py): 200 customers, two customer buckets instead of
# 16 (a SEGONE_SETTINGS overlay for every command on the bank): the same DAG with 2 mapped tasks per sharded stage,
# each paying its own start-up (reading the shard, loading the models); the light models of the test banks
# (tests/bank_settings.py).
BUCKETS = AIRFLOW_BUCKETS
CUSTOMERS = AIRFLOW_CUSTOMERS


def run(args: list[str], home: Path, check: bool = True) -> subprocess.CompletedProcess:
    overlay = airflow_overlay(home)
    env = os.environ.copy() | {"SEGONE_HOME": str(home), "SEGONE_SETTINGS": str(overlay)}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done

# DuckDB column types that cannot hold a message's text
NOT_TEXT = re.compile(r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL.*|DATE|TIME|TIMESTAMP.*|"
                      r"BOOLEAN|INTERVAL)$")


@pytest.fixture(scope="module")
def bank(tmp_path_factory, airflow_db) -> Path:
    """The simulated bank, loaded (`segone load-history`) and trained (`segone train`): a copy of the cached one."""
    return bank_copy(airflow_bank(), tmp_path_factory.mktemp("e2e") / "bank") / "segone"


@pytest.mark.slow
def test_the_night_runs_through_airflow_and_publishes(bank):
    done = run([str(BIN / "airflow"), "dags", "test", "nightly_personalization", RUN_AFTER], bank, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    for stage in ("ingest", "validate", "conform", "update_features", "validate_features", "forecast_cash_shortfall",
                  "validate_forecast", "life_events", "validate_life_events", "decide", "validate_decisions", "publish"):
        assert (bank / "runs" / D / f"{stage}.json").exists(), stage
    validate = json.loads((bank / "runs" / D / "validate.json").read_text())
    assert all(g["passed"] for g in validate["gates"])
    con = connect_warehouse(bank / "warehouse.duckdb")
    n_night = con.execute(f"select count(*) from transactions where load_date = '{D}'").fetchall()[0][0]
    n_history = con.execute("select count(*) from transactions where is_history").fetchall()[0][0]
    assert n_night > 0 and n_history > 30 * n_night
    assert con.execute(f"select count(*) from customers where as_of = '{D}'").fetchall()[0][0] >= CUSTOMERS
    assert con.execute(f"select count(distinct transaction_id) = count(*) from transactions").fetchall()[0][0]
    forecast = con.execute(f"""
        select count(*), count(distinct customer_id), min(p_shortfall), max(p_shortfall), count(distinct bucket),
            count(distinct model_version)
        from cash_forecast where as_of = '{D}'""").fetchall()[0]
    assert forecast[0] == 3 * forecast[1] and forecast[1] >= CUSTOMERS * 39 // 40  # 390 of a bank of 400
    assert 0 <= forecast[2] <= forecast[3] <= 1 and forecast[4] == BUCKETS and forecast[5] == 1
    actions = con.execute(f"""
        select count(*), count(distinct customer_id), count(distinct recommendation_id),
            count(*) filter (where reasons is null or reasons = '' or explanation is null or explanation = '')
        from next_best_actions where as_of = '{D}'""").fetchall()[0]
    assert actions[0] > 0 and actions[2] == actions[0] and actions[3] == 0
    dropped = con.execute(f"select count(distinct stage) from decision_log where as_of = '{D}'").fetchall()[0][0]
    assert dropped >= 3
    consented = con.execute(f"""
        select count(*) from life_events join consent_state using (customer_id)
        where life_events.as_of = '{D}' and consent_state.as_of = '{D}' and not is_life_events_allowed""").fetchall()
    assert consented[0][0] == 0
    manifest = json.loads((bank / "exports" / "crm" / D / "manifest.json").read_text())
    assert manifest["rows"] == actions[0] and manifest["as_of"] == D
    assert (bank / "reports" / D / "index.html").exists()
    summary = run([str(BIN / "segone"), "summary", "--date", D], bank).stdout
    assert "warehouse.duckdb" in summary and "select" in summary


@pytest.mark.slow
def test_the_retraining_runs_through_airflow_and_is_recorded(bank):
    """retrain_models (docs/closed_loop.md): every family retrained as of the last day of data, each decision a row of
    gold model_registry; the policy has no matured value yet, so its champion (the catalogue) stays."""
    done = run([str(BIN / "airflow"), "dags", "test", "retrain_models", "2026-11-22"], bank, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    con = duckdb.connect()
    rows = con.execute(f"select family, as_of, promoted_version, reason from read_parquet("
                       f"'{bank}/lake/gold/model_registry/**/*.parquet', hive_partitioning = true) "
                       f"order by family").fetchall()
    from pipelines.retrain import FAMILIES

    by_family = {r[0]: r for r in rows}
    assert sorted(by_family) == sorted(FAMILIES) and len(rows) == len(FAMILIES)
    assert {str(r[1]) for r in rows} == {D}
    assert by_family["policy"][2] == "catalogue" and "not enough data" in by_family["policy"][3]
    assert by_family["cash_forecast"][2] and by_family["life_events"][2]
    assert all(r[2] or r[3] for r in rows)  # every family promoted a version or says why not


@pytest.mark.slow
def test_messages_reach_decide_and_their_text_stays_in_silver(bank):
    """After the night above: consented customers' messages were read, and no text left silver."""
    import pandas as pd

    assert (bank / "runs" / D / "validate_messages.json").exists()
    con = connect_warehouse(bank / "warehouse.duckdb")
    views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    assert "messages" not in views
    unconsented = con.execute(f"""
        select count(*) from message_insights join consent_state using (customer_id)
        where message_insights.as_of = '{D}' and consent_state.as_of = '{D}' and not is_message_analysis_allowed
        """).fetchall()[0][0]
    assert unconsented == 0
    assert con.execute(f"select count(*) from message_insights where as_of = '{D}'").fetchall()[0][0] > 0
    # every message's longest line (of more than 25 characters) looked for in every distinct value of every column
    # that can hold text (numbers, dates and flags cannot) of every view, and in every distinct line of every file
    # under runs/, exports/ and reports/: the same search as over a dump of every view and file, at a 13th of the
    # text to search (a CSV dump of the views was 121 MB, and 1,355 messages took three minutes to look for in it)
    texts = {max(t.splitlines(), key=len) for t in pd.read_parquet(bank / "lake" / "silver" / "messages")["text"]}
    texts = sorted(t for t in texts if len(t) > 25)
    values = []
    for view in sorted(views):
        for column, kind, *_ in con.execute(f"describe {view}").fetchall():
            if not NOT_TEXT.match(kind):
                values += [r[0] for r in con.execute(f'select distinct cast("{column}" as varchar) from {view} '
                                                     f'where "{column}" is not null').fetchall()]
    con.close()
    lines = set()
    for folder in ("runs", "exports", "reports"):
        for path in (bank / folder).rglob("*"):
            if path.is_file():
                lines.update(path.read_text(errors="ignore").splitlines())
    blob = "\n".join(values) + "\n" + "\n".join(lines)
    assert texts and not [t for t in texts if t in blob]
    lead = json.loads(run([str(BIN / "segone"), "backtest", "messages"], bank).stdout)
    assert lead["shortfall"]["n_events"] > 0 and lead["n_messages_scored"] > 0


@pytest.mark.slow
def test_the_apps_signals_and_the_roles_reach_the_layout_under_consent(bank):
    """After the night above: the profile stage ran and passed its gate; app usage, signals and roles exist only for
    personalization-consented customers; each role module's reason is the customer's own role evidence; the roles
    match the simulator's truth (freelancers, retirees); pushes moved off push only for push-fatigued customers."""
    import pandas as pd

    assert json.loads((bank / "runs" / D / "validate_profiles.json").read_text())["validation"]["passed"]
    con = connect_warehouse(bank / "warehouse.duckdb")
    for table in ("app_usage", "app_signals", "customer_roles"):
        assert con.execute(f"select count(*) from {table} where as_of = '{D}'").fetchall()[0][0] > 0, table
        unconsented = con.execute(f"""
            select count(*) from {table} join consent_state using (customer_id)
            where {table}.as_of = '{D}' and consent_state.as_of = '{D}' and not is_personalization_allowed
            """).fetchall()[0][0]
        assert unconsented == 0, table
    modules = {"irregular_earner": "tax_provisioning", "retiree": "wealth_preservation"}
    for role, module in modules.items():
        mismatched = con.execute(f"""
            select count(*) from (select * from dashboard_layout where as_of = '{D}' and module = '{module}') as l
            full join (select * from customer_roles where as_of = '{D}' and role = '{role}') as r using (customer_id)
            where l.customer_id is null or r.customer_id is null or not contains(l.reason, r.reason)
            """).fetchall()[0][0]
        assert mismatched == 0, role
    roles = con.execute(f"select customer_id, role from customer_roles where as_of = '{D}'").df()
    truth = pd.read_parquet(bank / "truth" / "customers")[["customer_id", "archetype"]]
    roles = roles.merge(truth, on="customer_id")
    expected = {"irregular_earner": "freelancer", "retiree": "retired"}
    for role, archetype in expected.items():
        mine = roles[roles["role"] == role]
        assert len(mine) and (mine["archetype"] == archetype).mean() >= 0.9, (role, mine["archetype"].value_counts())
    moved = con.execute(f"""
        select count(*), count(*) filter (where not coalesce(s.is_push_fatigued, false))
        from decision_log as l left join app_signals as s on s.customer_id = l.customer_id and s.as_of = l.as_of
        where l.as_of = '{D}' and l.reason like '%instead of push'""").fetchall()[0]
    assert moved[1] == 0
    statuses = {r[0] for r in con.execute(f"select distinct status from dashboard_layout where as_of = '{D}'"
                                          ).fetchall()}
    assert {"needed", "used", "new", "default"} <= statuses
    con.close()


@pytest.mark.slow
def test_a_night_that_breaks_a_gate_stops_before_publishing(bank, tmp_path):
    bad_day = "2026-11-21"
    landing = bank / "landing" / bad_day
    landing.mkdir(parents=True, exist_ok=True)
    rows = ["transaction_id,account_id,booked_at,amount,currency,description,merchant_name,mcc,channel,country,"
            "counterparty_id"]
    rows += [f"BAD{i},ACC,{bad_day}T10:00:00,12.345,GBP,x,,5411,card,GB," for i in range(50)]
    (landing / "transactions.csv").write_text("\n".join(rows) + "\n")
    (landing / "_SUCCESS").touch()  # delivered complete: the night runs, and its gate stops it
    published = bank / "warehouse.duckdb"
    before = published.stat().st_mtime_ns if published.exists() else None
    done = run([str(BIN / "airflow"), "dags", "test", "nightly_personalization", "2026-11-22"], bank, check=False)
    assert done.returncode != 0
    assert not (bank / "runs" / bad_day / "publish.json").exists()
    assert not (bank / "exports" / "crm" / bad_day).exists()
    assert not (bank / "lake" / "silver" / "transactions" / f"load_date={bad_day}").exists()
    assert (published.stat().st_mtime_ns if published.exists() else None) == before
    con = duckdb.connect()
    reasons = con.execute(f"select distinct reason from read_parquet('{bank}/lake/gold/quarantine/"
                          f"load_date={bad_day}/*.parquet')").fetchall()
    assert reasons


@pytest.mark.slow
def test_the_plans_of_the_night_keep_the_safety_rule_on_every_row(bank):
    """After the night above: gold plans were written and passed validate_plans, which checked THE SAFETY RULE on every
    row against the persisted forecast; checked again here from the warehouse: for every customer with a plan and
    every horizon, the P10 minimum balance less what the plan moves by then is never below zero; plans only for
    personalization-consented customers; a published savings_plan or debt_plan action only for a customer with such
    a plan."""
    verdict = json.loads((bank / "runs" / D / "validate_plans.json").read_text())
    assert verdict["validation"]["passed"] and verdict["safety"]["n_violations"] == 0
    con = connect_warehouse(bank / "warehouse.duckdb")
    n_rows, n_customers = con.execute(f"select count(*), count(distinct customer_id) from plans "
                                      f"where as_of = '{D}'").fetchall()[0]
    assert n_rows > 0 and verdict["safety"]["n_rows_checked"] == n_rows
    broken = con.execute(f"""
        with p as (select customer_id, execute_on, amount from plans where as_of = '{D}'),
        f as (select customer_id, horizon_days, min_balance_p10 from cash_forecast where as_of = '{D}'),
        moved as (
            select p.customer_id, f.horizon_days, any_value(f.min_balance_p10) as p10,
                sum(p.amount) filter (where p.execute_on <= date '{D}' + cast(f.horizon_days as integer)) as moved
            from p left join f using (customer_id) group by all)
        select count(*) filter (where p10 is null or p10 - coalesce(moved, 0) < 0), count(*) from moved
        """).fetchall()[0]
    assert broken[0] == 0 and broken[1] == 3 * n_customers
    unconsented = con.execute(f"""
        select count(*) from plans join consent_state using (customer_id)
        where plans.as_of = '{D}' and consent_state.as_of = '{D}' and not is_personalization_allowed""").fetchall()
    assert unconsented[0][0] == 0
    orphans = con.execute(f"""
        select count(*) from next_best_actions as n
        where n.as_of = '{D}' and n.action_id in ('savings_plan', 'debt_plan')
            and not exists (select 1 from plans as p where p.as_of = '{D}' and p.customer_id = n.customer_id
                            and p.kind = replace(n.action_id, '_plan', ''))""").fetchall()[0][0]
    assert orphans == 0
    con.close()
