"""The nightly report: `$SEGONE_HOME/reports/D/index.html`, one self-contained HTML file with plots (DESIGN section 7),
written for a risk and compliance reviewer first, then for the data team.

Sections (SECTIONS, in order; SECTION_HEADINGS names them): tonight against last night (the headline); customers at
risk; the advisor queue; compliance checks computed from the gold tables; decision traces; fairness across age bands
and regions (rates with bootstrap intervals, and the funnel rule behind a gap); the action mix; staffed channels;
the app's signals and the dashboard roles; the plans (and the safety rule checked again); the suppression funnel;
forecast calibration (realised against predicted once outcomes exist); life-event rates; data quality; the link to
the night's Great Expectations data docs; volumes; the night's run (every step of the current attempt). Above them,
a banner: the night failed, has not finished, wrote no export, or passed (pipelines/night_status.py reads the
current attempt's run metrics only, never a verdict left by an earlier attempt of the same night).

Inputs: the lake tables of `paths` (the published generation when publish builds the report) and the run metrics
of runs/D/. Each section is a function (paths, day, con) -> list of section dicts (pipelines/html_report.py renders
them with pipelines/templates/: `sections/<key>.html.j2` when the section has a template of its own, the generic one
otherwise), so adding a section is one function and one entry in SECTIONS. Every section works when its input is
absent: it says what is missing instead of failing, and a section that fails on unexpected input says so with the
error, so a report is always written. Aggregation happens in DuckDB, so the report reads a million customers'
tables without loading them into pandas. Customers appear only by their pseudonymous customer_id, with flags and
probabilities: never a name, a message, a transaction or an amount.
"""
from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipelines import lake
from pipelines.config import Paths, load_config, min_published_group_customers, settings
from pipelines.html_report import (
    bar_figure,
    calibration_figure,
    colours_for,
    format_number,
    format_pct,
    outside_legend,
    render_report,
    share_axis,
    _new_figure,
)
from pipelines.night_status import NightStatus, night_status
from pipelines.runs import read_run_metrics

log = logging.getLogger(__name__)

SECTION_HEADINGS = {
    "headline": "Tonight against last night",
    "at_risk": "Customers at risk",
    "advisor_queue": "Advisor queue",
    "checks": "Compliance checks",
    "traces": "Decision traces",
    "fairness": "Fairness across age bands and regions",
    "action_mix": "Action mix",
    "staffed": "Staffed channels: capacity and demand",
    "app_signals": "App signals and dashboard roles",
    "plans": "Plans that can run themselves",
    "event_forecasts": "Income drops and large expenses ahead",
    "funnel": "Suppression funnel",
    "value": "Value against the control group",
    "calibration": "Forecast calibration",
    "life_events": "Life-event rates",
    "quality": "Data quality: quarantine and gates",
    "data_docs": "Data docs: every expectation of the night's gates",
    "volumes": "Volumes",
    "summary": "The night's run",
}
FUNNEL_STAGES = ["eligibility", "applicability", "suitability", "consent", "contact_policy", "control_group",
                 "arbitration", "capacity"]
ACTION_CLASSES = ["protective", "service", "commercial"]
DEFAULTS = {"gap_ratio_high": 1.25, "gap_ratio_low": 0.8, "min_group_customers": 30, "n_boot": 1000,
            "interval": 0.95, "seed": 20261120, "realised_calibration": True, "sample_customers": 10, "traces": 3,
            "min_published_group_customers": 10}
FLAG_WORDS = {"is_shortfall_risk": "shortfall risk", "in_arrears": "arrears",
              "is_unarranged_overdraft": "unarranged overdraft", "is_gambling_harm": "gambling harm",
              "is_vulnerable": "known vulnerability", "is_message_distress": "distress in messages",
              "is_income_drop_ahead": "income drop ahead (income forecast)"}


def report_settings() -> dict[str, Any]:
    """DEFAULTS, overridden by `nightly_report:` in config/segone.yaml."""
    return {**DEFAULTS, **(settings().get("nightly_report") or {})}


# --- reading the lake -----------------------------------------------------------------------------------------

def _scan(paths: Paths, layer: str, table: str, **keys: str) -> str | None:
    """read_parquet over one partition's files (hive columns not read); None when the partition has no file."""
    folder = lake.partition_path(paths, layer, table, **keys)
    files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if not files:
        return None
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"


def _gold(paths: Paths, table: str, day: date | str) -> str | None:
    return _scan(paths, "gold", table, as_of=str(day))


def _partitions(paths: Paths, layer: str, table: str, key: str = "as_of") -> list[str]:
    root = paths.table(layer, table)
    if not root.exists():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(f"{key}=") and any(p.rglob("*.parquet")))


def _latest_snapshot(paths: Paths, table: str, day: date) -> str | None:
    """The scan of a silver snapshot table at the latest as_of on or before D."""
    value = lake.latest_partition(paths, "silver", table, day)
    return _scan(paths, "silver", table, as_of=value) if value else None


def _df(con, query: str) -> pd.DataFrame:
    return con.execute(query).df()


def _row(con, query: str) -> tuple | None:
    """The first row of a query, or None (fetching every row: DuckDB keeps a half-read result open otherwise)."""
    rows = con.execute(query).fetchall()
    return rows[0] if rows else None


def _one(con, query: str) -> Any:
    return _row(con, query)[0]


def _figure(title: str, figsize: tuple[float, float] = (7.5, 4.2)):
    """A figure and its axes for a section's own chart (html_report's style: constrained layout, no top/right
    spines); put a legend outside with html_report.outside_legend."""
    return _new_figure(title, figsize)


def _absent(what: str) -> str:
    return f"Not shown: {what}."


def _quote(values: list[str]) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) or "NULL"


def previous_night(paths: Paths, day: date) -> str | None:
    """The latest earlier night with next best actions in the lake read (the published nights, at publish)."""
    earlier = [d for d in _partitions(paths, "gold", "next_best_actions") if d < day.isoformat()]
    return earlier[-1] if earlier else None


def catalogue() -> list[Any]:
    """The action catalogue (config/actions.yaml), parsed once per version of the file."""
    from pipelines.config import CONFIG_DIR

    path = CONFIG_DIR / "actions.yaml"
    return _catalogue(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _catalogue(path: str, _mtime_ns: int) -> list[Any]:
    from pipelines.actions import load_catalogue

    return load_catalogue(path)


def credit_actions() -> list[str]:
    """The catalogue's credit and lending actions (is_credit: true)."""
    return [a.id for a in catalogue() if a.is_credit]


def decisioning() -> dict[str, Any]:
    return load_config("decisioning")


def age_band_sql(day: date, column: str = "birth_year") -> str:
    """decide's age bands (pipelines.decide.AGE_BAND_UPPER / AGE_BAND_LABELS) as a SQL expression: one source."""
    from pipelines.decide import AGE_BAND_LABELS, AGE_BAND_UPPER, AGE_UNKNOWN

    age = f"({day.year} - {column})"
    cases = " ".join(f"when {age} <= {upper} then '{label}'" for upper, label in zip(AGE_BAND_UPPER, AGE_BAND_LABELS))
    return f"case when {column} is null then '{AGE_UNKNOWN}' {cases} else '{AGE_BAND_LABELS[-1]}' end"


def age_band_order() -> list[str]:
    from pipelines.decide import AGE_BAND_LABELS, AGE_UNKNOWN

    return [*AGE_BAND_LABELS, AGE_UNKNOWN]


def control_group(paths: Paths, day: date, con) -> tuple[int | None, str]:
    """The night's control group size and where it comes from: gold decision_flags (every customer decided),
    else the decide run metrics of the night. The one number every section shows."""
    flags = _gold(paths, "decision_flags", day)
    if flags is not None:
        return int(_one(con, f"select count(*) filter (where is_control) from {flags}")), "decision_flags"
    metrics = read_run_metrics(paths, str(day), "decide")
    if metrics and metrics.get("n_control") is not None:
        return int(metrics["n_control"]), "runs/D/decide.json"
    return None, "unknown (no decision_flags nor decide metrics for this night)"


def _sample_order(day: date | str) -> str:
    """A deterministic pseudo-random order of customers for samples: not the worst cases, not the first ids."""
    return f"md5(customer_id || '|report|{day}')"


# --- the headline ----------------------------------------------------------------------------------------------

def night_figures(paths: Paths, day: date | str, con, status: NightStatus | None = None) -> dict[str, Any]:
    """The headline figures of one night (None where the input is absent)."""
    d = str(day)
    out: dict[str, Any] = {}
    flags = _gold(paths, "decision_flags", d)
    if flags is not None:
        out["customers"], out["at_risk"], out["control"] = _row(
            con, f"select count(*), count(*) filter (where is_at_risk), count(*) filter (where is_control) "
                 f"from {flags}")
    else:
        metrics = read_run_metrics(paths, d, "decide") or {}
        out["customers"], out["at_risk"], out["control"] = metrics.get("n_customers"), None, metrics.get("n_control")
    queue = _gold(paths, "advisor_queue", d)
    out["advisor_queue"] = _one(con, f"select count(*) from {queue}") if queue else None
    nba = _gold(paths, "next_best_actions", d)
    credit = _quote(credit_actions())
    if nba is not None:
        row = _row(con, f"""select count(*) filter (where action_class = 'protective'),
            count(*) filter (where action_class = 'service'), count(*) filter (where action_class = 'commercial'),
            count(*) filter (where action_id in ({credit})) from {nba}""")
        out.update(dict(zip(("protective", "service", "commercial", "credit_offers"), row)))
    else:
        out.update({k: None for k in ("protective", "service", "commercial", "credit_offers")})
    quarantine = _scan(paths, "gold", "quarantine", load_date=d)
    out["quarantined"] = _one(con, f"select count(*) from {quarantine}") if quarantine else 0
    status = status or night_status(paths, d)
    out["gates"] = f"{status.gates_passed} of {len(status.gates)}" if status.started else None
    out["gates_passed"] = status.gates_passed if status.started else None
    return out


HEADLINE = [("customers", "Customers decided"), ("at_risk", "Customers at risk"),
            ("advisor_queue", "Advisor queue"), ("protective", "Protective actions"), ("service", "Service actions"),
            ("commercial", "Commercial actions"), ("credit_offers", "Credit offers"),
            ("control", "Control group"), ("quarantined", "Rows quarantined"), ("gates_passed", "Gates passed")]


def _change(now: Any, before: Any) -> str:
    if now is None or before is None:
        return ""
    delta = int(now) - int(before)
    rel = f" ({delta / before:+.1%})" if before else ""
    return f"{delta:+,}{rel}" if delta else "no change"


def _headline(paths: Paths, day: date, con, status: NightStatus | None = None) -> list[dict[str, Any]]:
    status = status or night_status(paths, day.isoformat())
    tonight = night_figures(paths, day, con, status)
    prev = previous_night(paths, day)
    before = night_figures(paths, prev, con) if prev else {}
    cards = []
    for key, label in HEADLINE:
        now = tonight.get(key)
        was = before.get(key) if prev else None
        value = tonight["gates"] if key == "gates_passed" else now
        earlier = before.get("gates") if key == "gates_passed" and prev else was
        cards.append({"label": label, "value": value if isinstance(value, str) else format_number(value),
                      "before": earlier if isinstance(earlier, str) else format_number(earlier) if prev else None,
                      "change": _change(now, was) if prev and key != "gates_passed" else ""})
    share = (f" ({format_pct(tonight['at_risk'] / tonight['customers'])} of customers)"
             if tonight.get("at_risk") is not None and tonight.get("customers") else "")
    text = (f"Night of {day.isoformat()} against " + (f"the night before it in the lake, {prev}." if prev else
                                                     "no earlier night: this is the first night in the lake.")
            + f" Customers at risk{share}: any flag that blocks credit (predicted shortfall, arrears, unarranged "
              "overdraft, gambling harm, known vulnerability, distress in messages). Gates: those of the current "
              "attempt of each night.")
    return [{"key": "headline", "heading": SECTION_HEADINGS["headline"], "text": text, "cards": cards,
             "previous": prev}]


# --- who is at risk, and the advisor queue ----------------------------------------------------------------------

RESTRICTED_NOTE = "restricted: see warehouse_restricted.duckdb"


def _blocked_by_sql(alias: str = "f", income_drop: bool = False) -> str:
    """Why credit is blocked for one customer, in the words every analyst may read (docs/access.md): a predicted
    shortfall or no forecast, an income drop ahead (`income_drop`: the flags hold is_income_drop_ahead, nights
    decided since it exists); any other flag (arrears, unarranged overdraft, gambling harm, a vulnerability,
    distress) is restricted and only said to be there."""
    suit, rules = decisioning()["suitability"], decisioning().get("message_rules", {})
    restricted = ["in_arrears", "is_unarranged_overdraft", "is_gambling_harm"]
    restricted += ["is_vulnerable"] if suit.get("block_known_vulnerability", True) else []
    restricted += ["is_message_distress"] if rules.get("distress_suppresses_commercial", True) else []
    drop = (f"case when {alias}.is_income_drop_ahead and {alias}.is_at_risk then 'income drop ahead' end, "
            if income_drop else "")
    other = (" or ".join(f"{alias}.{c}" for c in restricted) if income_drop
             else f"not {alias}.is_shortfall_risk")
    return (f"concat_ws(', ', case when {alias}.is_shortfall_risk and {alias}.has_forecast then 'predicted shortfall' "
            f"end, case when not {alias}.has_forecast then 'no forecast' end, {drop}case when {alias}.is_at_risk and "
            f"({other}) then 'another flag ({RESTRICTED_NOTE})' end)")


def _has_column(con, scan: str, column: str) -> bool:
    return column in {r[0] for r in con.execute(f"describe select * from {scan}").fetchall()}


def _at_risk(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["at_risk"]
    flags = _gold(paths, "decision_flags", day)
    if flags is None:
        return [{"key": "at_risk", "heading": heading,
                 "text": _absent("gold decision_flags has no partition for this date (decide has not run)")}]
    nba = _gold(paths, "next_best_actions", day)
    queue = _gold(paths, "advisor_queue", day)
    total, at_risk = _row(con, f"select count(*), count(*) filter (where is_at_risk) from {flags}")
    selects = [f"select 'any of them (at risk)' as reason, count(*) filter (where is_at_risk) as customers "
               f"from {flags}"]
    present = {r[0] for r in con.execute(f"describe select * from {flags}").fetchall()}
    for column, words in FLAG_WORDS.items():
        if column in present:
            selects.append(f"select '{words}', count(*) filter (where {column}) from {flags}")
    selects.insert(2, f"select 'shortfall risk: no forecast (credit needs one)', count(*) filter (where "
                      f"is_shortfall_risk and not has_forecast) from {flags}")
    reasons = _df(con, " union all ".join(selects))
    reasons["share_of_customers"] = reasons["customers"] / total if total else np.nan
    k = min_published_group_customers()
    small = reasons["customers"].between(1, k - 1)
    reasons["share_of_customers"] = reasons["share_of_customers"].mask(small)
    reasons["customers"] = published_counts(reasons["customers"], k)
    got = pd.DataFrame()
    if nba is not None:
        credit = _quote(credit_actions())
        got = _df(con, f"""
            with per as (
                select customer_id, bool_or(action_class = 'protective') as protective,
                       bool_or(action_class = 'service') as service, bool_or(action_class = 'commercial') as commercial,
                       bool_or(action_id in ({credit})) as credit
                from {nba} group by all)
            select count(*) as "customers at risk",
                   count(*) filter (where p.protective) as "with a protective action",
                   count(*) filter (where p.service) as "with a service action",
                   count(*) filter (where p.commercial) as "with a commercial action",
                   count(*) filter (where p.credit) as "with a credit offer (must be 0)",
                   count(*) filter (where p.customer_id is null) as "with no action tonight"
            from {flags} f left join per p using (customer_id) where f.is_at_risk""")
        for column in got.columns:
            if column != "with a credit offer (must be 0)":  # a breach is shown whatever its count
                got[column] = published_counts(got[column], k)
    n = int(report_settings()["sample_customers"])
    actions = (f"(select string_agg(action_id, ', ' order by rank) from {nba} n where n.customer_id = f.customer_id)"
               if nba else "null")
    queued = f"f.customer_id in (select customer_id from {queue})" if queue else "false"
    sample = _df(con, f"""
        select f.customer_id, f.p_shortfall_30,
            {_blocked_by_sql(income_drop=_has_column(con, flags, "is_income_drop_ahead"))} as credit_blocked_by, {actions} as actions_tonight,
               {queued} as in_advisor_queue, f.is_control as control_group
        from {flags} f where f.is_at_risk order by {_sample_order(day)} limit {n}""")
    share = format_pct(at_risk / total) if total else "0%"
    text = (f"{at_risk:,} of {total:,} customers decided tonight are at risk ({share}): "
            "at least one flag that, by DESIGN principle 1, blocks every credit or lending offer. The flags are the "
            "ones decide acted on (gold decision_flags); a customer may hold several. A count of 1 to "
            f"{k - 1} customers is shown as '<{k}' without its share, here and in what customers at risk were "
            f"given (nightly_report.min_published_group_customers: a flag a few customers hold would single them "
            f"out); 0 is shown, and so is any count of credit offers to customers at risk, which must be 0.\n\n"
            f"A sample of {len(sample)} customers at risk (a fixed pseudo-random draw for the night, not the worst "
            "cases), by pseudonymous id: their 30-day shortfall probability, why credit is blocked and tonight's "
            "actions. The flags other than a predicted shortfall are restricted data (docs/access.md): they are "
            "counted above, and per customer only in warehouse_restricted.duckdb (gold decision_flags).")
    tables = [{"frame": reasons, "caption": "Customers per flag", "formats": {"share_of_customers": "pct"}}]
    if not got.empty:
        tables.append({"frame": got, "caption": "What customers at risk were given tonight"})
    tables.append({"frame": sample, "caption": "Sample of customers at risk", "formats": {"p_shortfall_30": "pct"}})
    return [{"key": "at_risk", "heading": SECTION_HEADINGS["at_risk"], "text": text, "tables": tables}]


def published_counts(counts: pd.Series, k: int) -> pd.Series:
    """Counts of customers as a table publishes them: '<k' for 1 to k-1 (config/segone.yaml
    nightly_report.min_published_group_customers), else the count with thousands separators (0 included)."""
    return pd.Series([f"<{k}" if 0 < int(n) < k else f"{int(n):,}" for n in counts], index=counts.index,
                     dtype=object)


def _advisor_queue(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["advisor_queue"]
    queue = _gold(paths, "advisor_queue", day)
    if queue is None:
        return [{"key": "advisor_queue", "heading": heading,
                 "text": _absent("gold advisor_queue has no partition for this date (decide has not run)")}]
    capacity = None
    if night_status(paths, day.isoformat()).step("decide").current:  # figures of this attempt's decisions only
        capacity = ((read_run_metrics(paths, day.isoformat(), "decide") or {}).get("capacity") or {}).get(
            "advisor_queue")
    rules = decisioning().get("advisor_queue") or {}
    size = _one(con, f"select count(*) from {queue}")
    flags = _gold(paths, "decision_flags", day)
    with_messages = flags is not None and "is_message_distress" in {
        r[0] for r in con.execute(f"describe select * from {flags}").fetchall()}
    distress = (f"""union all select 'distress or difficulty paying in recent messages', count(*) from {queue} q
                    semi join (select customer_id from {flags} where is_message_distress) m using (customer_id)"""
                if with_messages and rules.get("messages", True) else "")
    by_condition = _df(con, f"""
        select 'an income drop with a high shortfall risk' as condition, count(*) filter (where is_income_drop and
               p_shortfall_30 >= {float(rules.get('high_p_shortfall_30', 0.5))}) as customers from {queue}
        union all select 'a known vulnerability with a shortfall risk', count(*) filter (where known_vulnerability
               is not null and p_shortfall_30 >= {float(rules.get('vulnerable_p_shortfall_30', 0.3))}) from {queue}
        union all select 'arrears with a likely shortfall', count(*) filter (where in_arrears and p_shortfall_30 >=
               {float(rules.get('arrears_p_shortfall_30', 0.5))}) from {queue}
        {distress}
        union all select 'of whom service contact is withdrawn', count(*) filter (where not is_service_alerts_allowed)
               from {queue}""")
    k = min_published_group_customers()
    by_condition["customers"] = published_counts(by_condition["customers"], k)
    by_action = _df(con, f"select suggested_action, count(*) as customers from {queue} group by all order by 2 desc")
    n = int(report_settings()["sample_customers"])
    sample = _df(con, f"""
        select customer_id, priority, p_shortfall_30, expected_shortfall_date, suggested_action
        from {queue} order by priority desc, customer_id limit {n}""")
    text = f"{size:,} customers in tonight's advisor queue, for a person to call (the neediest first)."
    if capacity:
        demand, limit = int(capacity.get("demand", 0)), int(capacity.get("night_capacity", capacity.get("capacity", 0)))
        text += (f" {demand:,} met a condition of the queue against a nightly capacity of {limit:,}"
                 + (f": {demand - size:,} were left out for capacity and get help by a digital channel instead "
                    f"(see the staffed channels section)." if demand > size else "."))
    text += ("\n\nConditions (config/decisioning.yaml advisor_queue) counted from the queue's own columns; a customer "
             f"may meet several; a count of 1 to {k - 1} shows as '<{k}' (nightly_report.min_published_group_customers: "
             "a condition a few customers meet would single them out). The sample shows the top of the queue by "
             "priority; why each customer is there (a "
             "vulnerability, distress, arrears) is restricted data: warehouse_restricted.duckdb, gold advisor_queue.")
    return [{"key": "advisor_queue", "heading": heading, "text": text,
             "tables": [{"frame": by_condition, "caption": "Customers per condition"},
                        {"frame": by_action, "caption": "Suggested action"},
                        {"frame": sample, "caption": "Top of the queue",
                         "formats": {"p_shortfall_30": "pct"}}]}]


# --- compliance checks ------------------------------------------------------------------------------------------

def _consent_pairs(kind: str) -> pd.DataFrame:
    """(action_id, channel, purpose) for every catalogue channel (kind 'channel'), or (action_id, purpose) for each
    data purpose an action's decision needs (kind 'data')."""
    rows = []
    for action in catalogue():
        if kind == "channel":
            rows += [{"action_id": action.id, "channel": ch, "purpose": p} for ch, p in action.channels.items()]
        else:
            rows += [{"action_id": action.id, "purpose": p} for p in action.data_purposes]
    return pd.DataFrame(rows, columns=["action_id", "channel", "purpose"] if kind == "channel"
                        else ["action_id", "purpose"])


def _consent_column(purpose: str) -> str:
    return f"is_{purpose}_allowed"


def compliance_checks(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """Each check: name, rule (in words), checked (what it ran over), violations, result (pass, FAIL, not checked)
    and up to five example customer ids. Computed from the gold (and silver) tables of D."""
    d = day.isoformat()
    nba = _gold(paths, "next_best_actions", d)
    dlog = _gold(paths, "decision_log", d)
    flags = _gold(paths, "decision_flags", d)
    forecast = _gold(paths, "cash_forecast", d)
    customers = _latest_snapshot(paths, "customers", day)
    consent = _latest_snapshot(paths, "consent_state", day)
    pol = decisioning()
    suit = pol.get("suitability") or {}
    credit = _quote(credit_actions())
    checks: list[dict[str, Any]] = []

    def check(name: str, rule: str, needs: list[tuple[str, str | None]], checked_sql: str | None = None,
              violations_sql: str | None = None, restricted: bool = False) -> None:
        """`restricted`: a violation would tell a restricted fact about the customer (a vulnerability, distress),
        so the example ids are left to warehouse_restricted.duckdb."""
        missing = [what for what, scan in needs if scan is None]
        if missing:
            checks.append({"check": name, "rule": rule, "checked": None, "violations": None,
                           "result": "not checked", "examples": "missing: " + ", ".join(missing)})
            return
        checked = int(_one(con, checked_sql)) if checked_sql else None
        count, examples = _row(con, f"""select count(*), (list(distinct customer_id order by customer_id))[1:5]
                                       from ({violations_sql})""")
        checks.append({"check": name, "rule": rule, "checked": checked, "violations": int(count),
                       "result": "pass" if count == 0 else "FAIL",
                       "examples": (RESTRICTED_NOTE if restricted and count else
                                    ", ".join(str(c) for c in examples or []))})

    credit_rows = f"select * from {nba} where action_id in ({credit})" if nba else None
    check("No credit offer to a customer at risk",
          "No credit or lending action (is_credit in config/actions.yaml) is published for a customer with any "
          "protective flag (gold decision_flags.is_at_risk).",
          [("next_best_actions", nba), ("decision_flags", flags)],
          f"select count(*) from ({credit_rows})" if nba else None,
          f"select n.customer_id from ({credit_rows}) n join {flags} f using (customer_id) where f.is_at_risk"
          if nba and flags else None)
    threshold = float(suit.get("max_p_shortfall_30_for_credit", 0.2))
    check("No credit offer to a customer with a predicted shortfall",
          f"Recomputed from gold cash_forecast: no credit action for a customer whose 30-day shortfall probability "
          f"is above {threshold:g} (suitability) or who has no forecast.",
          [("next_best_actions", nba), ("cash_forecast", forecast)],
          f"select count(*) from ({credit_rows})" if nba else None,
          f"""select n.customer_id from ({credit_rows}) n left join (select customer_id, p_shortfall from {forecast}
              where horizon_days = 30) c using (customer_id)
              where c.p_shortfall is null or c.p_shortfall > {threshold}""" if nba and forecast else None)
    if suit.get("block_known_vulnerability", True):
        check("Vulnerable customers are offered only what is allowed",
              "Recomputed from silver customers: no credit or lending action for a customer with a recorded known "
              "vulnerability (protective, service and other commercial actions are allowed).",
              [("next_best_actions", nba), ("customers", customers)],
              f"select count(*) from {nba} where customer_id in (select customer_id from {customers} where "
              f"coalesce(known_vulnerability, '') <> '')" if nba and customers else None,
              f"""select n.customer_id from ({credit_rows}) n join {customers} c using (customer_id)
                  where coalesce(c.known_vulnerability, '') <> ''""" if nba and customers else None, restricted=True)
    if suit.get("block_income_drop_ahead", True):
        income = _gold(paths, "income_forecast", d)
        level = pol["event_forecasts"]["income_drop"]
        horizons = ", ".join(str(int(h)) for h in level["horizons"])
        check("No credit offer to a customer whose income is expected to drop",
              f"Recomputed from gold income_forecast: no credit action for a customer whose income-drop probability "
              f"at {horizons} days is at least {float(level['min_probability']):g} (event_forecasts). Without an "
              f"income forecast tonight there is nothing to check.",
              [("next_best_actions", nba)],
              f"select count(*) from ({credit_rows})" if nba else None,
              (f"""select n.customer_id from ({credit_rows}) n join {income} i using (customer_id)
                   where i.horizon_days in ({horizons}) and i.p_event >= {float(level['min_probability'])}"""
               if income else "select null as customer_id where false") if nba else None)
    signals = _gold(paths, "message_signals", d)
    if (pol.get("message_rules") or {}).get("distress_suppresses_commercial", True):
        check("No commercial action to a customer in distress",
              "Recomputed from gold message_signals: no commercial action for a customer whose recent messages show "
              "distress or difficulty paying (message_rules). Without messages tonight there is nothing to check.",
              [("next_best_actions", nba)],
              f"select count(*) from {nba} where action_class = 'commercial'" if nba else None,
              (f"""select n.customer_id from {nba} n join {signals} m using (customer_id)
                   where n.action_class = 'commercial' and (m.is_distressed or m.has_financial_difficulty)"""
               if signals else "select null::varchar as customer_id where false") if nba else None, restricted=True)
    check("No commercial or service action to a control-group customer",
          "Customers in tonight's control group (gold decision_flags) receive protective actions only.",
          [("next_best_actions", nba), ("decision_flags", flags)],
          f"select count(*) from {nba} where customer_id in (select customer_id from {flags} where is_control)"
          if nba and flags else None,
          f"""select n.customer_id from {nba} n join {flags} f using (customer_id)
              where f.is_control and n.action_class <> 'protective'""" if nba and flags else None)
    check("The control group is the same in every table",
          "next_best_actions.is_control agrees with decision_flags.is_control for every recommendation.",
          [("next_best_actions", nba), ("decision_flags", flags)],
          f"select count(*) from {nba}" if nba else None,
          f"""select n.customer_id from {nba} n left join {flags} f using (customer_id)
              where f.customer_id is null or n.is_control <> f.is_control""" if nba and flags else None)
    if nba and consent:
        con.register("report_channel_purposes", _consent_pairs("channel"))
        con.register("report_data_purposes", _consent_pairs("data"))
        purposes = sorted(set(_consent_pairs("channel")["purpose"]) | set(_consent_pairs("data")["purpose"]))
        present = {r[0] for r in con.execute(f"describe select * from {consent}").fetchall()}
        allowed = " ".join(f"when '{p}' then s.{_consent_column(p)}" for p in purposes
                           if _consent_column(p) in present)
        allowed_sql = f"coalesce(case p.purpose {allowed} end, false)" if allowed else "false"
        channel_violations = f"""
            select n.customer_id from {nba} n
            left join report_channel_purposes p using (action_id, channel)
            left join {consent} s using (customer_id)
            where p.purpose is null or s.customer_id is null or not {allowed_sql}"""
        data_violations = f"""
            select n.customer_id from {nba} n
            join report_data_purposes p using (action_id)
            left join {consent} s using (customer_id)
            where s.customer_id is null or not {allowed_sql}"""
    else:
        channel_violations = data_violations = None
    check("No action on a channel without its consent",
          "Every recommendation's channel is one of the action's channels and the consent that channel needs "
          "(service_alerts, or marketing_<channel> for commercial actions) holds on D in silver consent_state.",
          [("next_best_actions", nba), ("consent_state", consent)],
          f"select count(*) from {nba}" if nba else None, channel_violations)
    check("No action built on data without its consent",
          "An action whose decision uses personal data (data_purposes: personalization, life_events) goes only to "
          "customers whose consent for that purpose holds on D.",
          [("next_best_actions", nba), ("consent_state", consent)],
          f"select count(*) from {nba}" if nba else None, data_violations)
    check("Protective actions come first",
          "For every customer, each protective action ranks above every other action.",
          [("next_best_actions", nba)],
          f"select count(distinct customer_id) from {nba}" if nba else None,
          f"""select customer_id from {nba} group by customer_id
              having max(rank) filter (where action_class = 'protective')
                     > min(rank) filter (where action_class <> 'protective')""" if nba else None)
    top_k = int(pol.get("top_k", 3))
    check(f"At most {top_k} actions per customer",
          f"No customer gets more than top_k = {top_k} recommendations in a night, ranked 1 to n without gaps.",
          [("next_best_actions", nba)],
          f"select count(distinct customer_id) from {nba}" if nba else None,
          f"""select customer_id from {nba} group by customer_id
              having count(*) > {top_k} or max(rank) <> count(*) or count(distinct rank) <> count(*)"""
          if nba else None)
    check("Every recommendation is explained",
          "Every recommendation carries plain-language reasons and an explanation (not empty).",
          [("next_best_actions", nba)], f"select count(*) from {nba}" if nba else None,
          f"select customer_id from {nba} where coalesce(trim(reasons), '') = '' "
          f"or coalesce(trim(explanation), '') = ''"
          if nba else None)
    n_actions = len(catalogue())
    check("Every candidate is published or logged with its reason",
          f"For every customer decided, each of the {n_actions} catalogue actions is either published or in "
          f"decision_log with the stage and reason that dropped it, exactly once.",
          [("next_best_actions", nba), ("decision_log", dlog), ("decision_flags", flags)],
          f"select count(*) from {flags}" if flags else None,
          _coverage_sql(nba, dlog, flags, [a.id for a in catalogue()]))
    return checks


# decision_log stages whose rows of a PUBLISHED action are a channel move, not a drop: a staffed channel given up to
# tonight's capacity (stage capacity), push given up for a customer who dismisses most pushes (stage contact_policy)
MOVE_STAGES = ("capacity", "contact_policy")


def _drops_sql(dlog: str, nba: str | None) -> str:
    """decision_log without the channel moves of published actions: the candidates dropped."""
    if nba is None:
        return dlog
    moves = ", ".join(f"'{s}'" for s in MOVE_STAGES)
    return f"""(select * from {dlog} where stage not in ({moves}) union all
                select d.* from {dlog} d anti join {nba} n using (customer_id, action_id)
                where d.stage in ({moves}))"""


def _coverage_sql(nba: str | None, dlog: str | None, flags: str | None, actions: list[str]) -> str | None:
    """Customers decided whose catalogue actions are not each seen exactly once in next_best_actions plus
    decision_log (a channel move of an action published on another channel aside, MOVE_STAGES): a count per
    customer and a bit mask of the actions seen (one pass, no count distinct; a count distinct beyond 127 actions)."""
    if not (nba and dlog and flags):
        return None
    seen = f"""select customer_id, action_id from {nba}
               union all select customer_id, action_id from {_drops_sql(dlog, nba)}"""
    n = len(actions)
    if n > 127:
        per = (f"select customer_id, count(*) as n, count(distinct action_id) = {n} as complete from ({seen}) "
               f"group by all")
    else:
        index = ", ".join(f"('{a}', {i})" for i, a in enumerate(actions))
        per = f"""select customer_id, count(*) as n,
                         bit_or(1::hugeint << i) = {(1 << n) - 1}::hugeint as complete
                  from ({seen}) s left join (values {index}) as catalogue(action_id, i) using (action_id)
                  group by all"""
    return f"""select f.customer_id from {flags} f left join ({per}) per using (customer_id)
               where coalesce(per.n, 0) <> {n} or not coalesce(per.complete, false)"""


def _checks(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    checks = compliance_checks(paths, day, con)
    failed = [c for c in checks if c["result"] == "FAIL"]
    skipped = [c for c in checks if c["result"] == "not checked"]
    passed = len(checks) - len(failed) - len(skipped)
    text = (f"{passed} of {len(checks)} checks passed" + (f", {len(failed)} FAILED" if failed else "")
            + (f", {len(skipped)} not checked (input absent)" if skipped else "") + ". Each check is computed "
            "from tonight's tables, not read from configuration: the count is of recommendations (or customers) "
            "that break the rule, with up to five customer ids to look at.")
    rows = [{**c, "checked": format_number(c["checked"]), "violations": format_number(c["violations"])}
            for c in checks]
    return [{"key": "checks", "heading": SECTION_HEADINGS["checks"], "text": text, "checks": rows}]


# --- decision traces ---------------------------------------------------------------------------------------------

def _trace(con, nba: str, dlog: str, customer: str) -> pd.DataFrame:
    order = ", ".join(f"'{s}'" for s in FUNNEL_STAGES)
    quoted = customer.replace("'", "''")
    return _df(con, f"""
        with published as (
            select action_id, action_class, 'published: rank ' || rank || ' on ' || channel
                       || case when is_exploration then ' (exploration)' else '' end as outcome,
                   '' as reason, 0 as step, rank
            from {nba} where customer_id = '{quoted}'),
        dropped as (
            select action_id, action_class, 'dropped at ' || stage as outcome,
                   case when stage = 'suitability' then '{RESTRICTED_NOTE}' else reason end as reason,
                   array_position([{order}], stage) as step, null as rank
            from {dlog} d where customer_id = '{quoted}'
              and not exists (select 1 from published p where p.action_id = d.action_id))
        select action_id, action_class, outcome, reason from (select * from published union all select * from dropped)
        order by step, rank, action_id""")


def _traces(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["traces"]
    nba, dlog, flags = (_gold(paths, t, day) for t in ("next_best_actions", "decision_log", "decision_flags"))
    if nba is None or dlog is None:
        return [{"key": "traces", "heading": heading,
                 "text": _absent("gold next_best_actions or decision_log has no partition for this date")}]
    credit = _quote(credit_actions())
    order = _sample_order(day)
    kinds = [
        ("A customer at risk whose credit offer was suppressed",
         f"select customer_id from {dlog} where stage = 'suitability' and action_id in ({credit})"),
        ("A customer in the control group",
         f"select customer_id from {dlog} where stage = 'control_group'"),
        ("A customer given a commercial offer",
         f"select customer_id from {nba} where action_class = 'commercial'"),
        ("A customer given a protective action",
         f"select customer_id from {nba} where action_class = 'protective'"),
    ]
    out = []
    chosen: list[str] = []
    limit = int(report_settings()["traces"])
    for title, candidates in kinds:
        if len(out) >= limit:
            break
        others = f"where customer_id not in ({_quote(chosen)})" if chosen else ""
        row = _row(con, f"select customer_id from ({candidates}) {others} order by {order} limit 1")
        if row is None:
            continue
        customer = str(row[0])
        chosen.append(customer)
        words = ""
        if flags is not None:
            blocked = _blocked_by_sql(income_drop=_has_column(con, flags, "is_income_drop_ahead"))
            found = _row(con, f"""select {blocked}, f.is_control, f.p_shortfall_30 from {flags} f
                                   where customer_id = '{customer.replace("'", "''")}'""")
            if found is not None:
                words = (f"Credit blocked by: {found[0] or 'nothing'}; 30-day shortfall probability "
                         f"{format_pct(found[2])}" + ("; in the control group." if found[1] else "."))
        out.append({"key": "traces", "heading": f"{title}: {customer}", "level": 3, "text": words,
                    "table": _trace(con, nba, dlog, customer)})
    intro = {"key": "traces", "heading": heading,
             "text": "One customer's path through the funnel per case (customers picked by a fixed pseudo-random "
                     "draw for the night): every catalogue action, published (rank and channel) or dropped at the "
                     "first stage that dropped it, with the reason decision_log recorded. A suitability reason says "
                     "why credit does not suit this customer: restricted data, shown only in "
                     "warehouse_restricted.duckdb (docs/access.md)."}
    return [intro, *out] if out else [{**intro, "text": intro["text"] + "\n\nNo customer to trace tonight."}]


# --- fairness ----------------------------------------------------------------------------------------------------

def _fairness_population(paths: Paths, day: date, con) -> tuple[str, int | None] | None:
    """SQL of the fairness population (one row per customer decided on D outside the control group: customer_id,
    age_band, region, the four outcomes) and the control group left out; None without silver customers."""
    customers = _latest_snapshot(paths, "customers", day)
    flags = _gold(paths, "decision_flags", day)
    nba = _gold(paths, "next_best_actions", day)
    dlog = _gold(paths, "decision_log", day)
    if customers is None or flags is None:
        return None
    credit = _quote(credit_actions())
    offers = (f"(select customer_id, bool_or(action_class = 'commercial') as offered, "
              f"bool_or(action_class = 'protective') as protected from {nba} group by all)") if nba else \
        "(select null::varchar as customer_id, false as offered, false as protected where false)"
    supp = (f"(select distinct customer_id from {dlog} where stage = 'suitability' and action_id in ({credit}))"
            if dlog else "(select null::varchar as customer_id where false)")
    sql = f"""
        select f.customer_id, {age_band_sql(day)} as age_band, coalesce(cast(c.region as varchar), 'unknown') as region,
               coalesce(o.offered, false)::int as offered, (s.customer_id is not null)::int as credit_suppressed,
               f.is_at_risk::int as at_risk, coalesce(o.protected, false)::int as protected
        from {flags} f left join {customers} c using (customer_id)
        left join {offers} o using (customer_id) left join {supp} s using (customer_id)
        where not f.is_control"""
    control, _ = control_group(paths, day, con)
    return sql, control


def fairness_table(paths: Paths, day: date, con=None, cfg: dict[str, Any] | None = None
                   ) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The fairness table (pipelines.fairness.fairness_frame) for D: per dimension (age band, region) and group,
    each metric with its bootstrap interval, ratio to the overall rate and flag; and the context (population SQL,
    control group size, settings). None without silver customers or gold decision_flags."""
    cfg = {**report_settings(), **(cfg or {})}
    own = con is None
    con = con or lake.connect()
    try:
        found = _fairness_population(paths, day, con)
        if found is None:
            return None
        sql, control = found
        from pipelines.fairness import OUTCOMES, fairness_frame

        con.execute(f"create or replace temp table report_population as {sql}")  # read again by the drill-downs
        _display_groups(con, "report_population", "region")
        _publish_groups(con, "report_population", ("age_band", "region"),
                        int(cfg["min_published_group_customers"]))
        sql = "select * from report_population"
        cells = _df(con, f"select age_band, region, {', '.join(OUTCOMES)}, count(*) as customers from ({sql}) "
                         f"group by all")
        if cells.empty:
            return None
        table = fairness_frame(cells, {"age band": "age_band", "region": "region"}, cfg)
    finally:
        if own:
            con.close()
    band_rank = {b: i for i, b in enumerate(age_band_order())}
    table["_order"] = [(0 if dim == "overall" else 1 if dim == "age band" else 2,
                        band_rank.get(g, 99) if dim == "age band" else 0, g)
                       for dim, g in zip(table["dimension"], table["group"])]
    table = table.sort_values(["metric", "_order"], key=lambda s: s.map(
        {m: i for i, m in enumerate(["offer_rate", "credit_suppression_rate", "protective_reach"])})
        if s.name == "metric" else s, kind="stable").drop(columns="_order").reset_index(drop=True)
    return table, {"population": sql, "control": control, "cfg": cfg}


def _display_groups(con, table: str, column: str) -> None:
    """Rename, in `table`, each group of `column` to what a person is shown (pipelines.display.display_label: no
    invisible character, at most text.label_max_combining_marks marks on a character, at most
    text.display_max_chars characters; 'unknown' when nothing visible is left), before groups are counted: a region
    in silver from before the ingest's label rules, or from another source, is never printed unbounded, and two that
    show the same are one group."""
    from pipelines.display import display_label

    groups = _df(con, f"select distinct cast({column} as varchar) as g from {table} where {column} is not null")
    shown = [(g, display_label(g) or "unknown") for g in groups["g"]]
    _rename_groups(con, table, column, [(g, d) for g, d in shown if g != d])


def _rename_groups(con, table: str, column: str, renamed: list[tuple[str, str]]) -> None:
    """Set `column` of `table` to p wherever it reads g, for each (g, p) of `renamed`."""
    if not renamed:
        return
    con.register("report_renamed_groups", pd.DataFrame(renamed, columns=["g", "p"], dtype=object))
    con.execute(f"update {table} set {column} = r.p from report_renamed_groups r "
                f"where cast({table}.{column} as varchar) = r.g")
    con.unregister("report_renamed_groups")


def _publish_groups(con, table: str, columns: tuple[str, ...], k: int) -> None:
    """Rename, in `table`, the groups of fewer than k customers to what they are published as
    (pipelines.fairness.published_groups): the table, its drill-downs and its figures then show no group of fewer
    than k people by name."""
    from pipelines.fairness import published_groups

    for column in columns:
        sizes = _df(con, f"select cast({column} as varchar) as g, count(*) as n from {table} group by all")
        mapping = published_groups(sizes.set_index("g")["n"], k)
        _rename_groups(con, table, column, [(g, p) for g, p in mapping.items() if g != p])


DRILL = {  # metric -> which drops explain it (decision_log filter) and the population column it is measured on
    "offer_rate": ("action_class = 'commercial'", None),
    "credit_suppression_rate": ("stage = 'suitability' and action_id in ({credit})", None),
    "protective_reach": ("action_class = 'protective'", "at_risk"),
}


def _drill_downs(paths: Paths, day: date, con, table: pd.DataFrame, population: str) -> list[dict[str, Any]]:
    """For each flagged gap (or, without one, the largest difference of each metric among big-enough groups), the
    funnel stage and reason that drop the group more than everyone else."""
    from pipelines.fairness import METRIC_WORDS, drill_down

    dlog = _gold(paths, "decision_log", day)
    if dlog is None:
        return []
    gaps = table[table["flag"].str.startswith("GAP")]
    label = "flagged gap"
    if gaps.empty:
        sized = table[(table["dimension"] != "overall") & (table["flag"] == "") & table["ratio"].notna()]
        sized = sized.assign(distance=(np.log(sized["ratio"].clip(lower=1e-9))).abs())
        gaps = sized.sort_values("distance", ascending=False).groupby("metric").head(1)
        gaps = gaps[gaps["distance"] > 0]
        label = "largest difference, not a flagged gap"
    credit = _quote(credit_actions())
    nba = _gold(paths, "next_best_actions", day)
    dlog = _drops_sql(dlog, nba)  # a channel move of an action published on another channel is no drop
    out = []
    cached: dict[tuple[str, str], pd.DataFrame] = {}
    counted: dict[tuple[str | None, str], pd.Series] = {}
    for row in gaps.head(6).itertuples():
        where, base = DRILL[row.metric]
        column = "age_band" if row.dimension == "age band" else "region"
        keep = f"where p.{base} = 1" if base else ""
        if (row.metric, column) not in cached:
            cached[(row.metric, column)] = _df(con, f"""
                select p.{column} as "group", d.stage, d.reason, count(distinct d.customer_id) as customers
                from ({population}) p join {dlog} d using (customer_id)
                {keep} {'and' if keep else 'where'} {where.format(credit=credit)}
                group by all""")
        drops = cached[(row.metric, column)]
        if (base, column) not in counted:   # from the population: the table does not show an at-risk count under k
            counted[(base, column)] = _df(con, f"""
                select cast(p.{column} as varchar) as "group", count(*) as customers from ({population}) p {keep}
                group by all""").set_index("group")["customers"]
        sizes = counted[(base, column)]
        more = (row.ratio < 1) if row.metric != "credit_suppression_rate" else (row.ratio > 1)
        found = drill_down(drops, sizes, str(row.group), more=more)
        if found.empty:
            continue
        top = found.iloc[0]
        text = (f"{METRIC_WORDS[row.metric].capitalize()} of {row.dimension} {row.group}: {format_pct(row.rate)} "
                f"against {format_pct(row.rate / row.ratio) if row.ratio else '?'} overall ({row.ratio:.2f}x; "
                f"{label}). The rule that drops this group {'more' if more else 'less'} than the others: "
                f"{top['stage']}, \"{top['reason']}\" ({format_pct(top['share_of_group'])} of the group against "
                f"{format_pct(top['share_of_others'])} of the others).")
        found = found.rename(columns={"share_of_group": f"share of {row.group}", "share_of_others": "share of others",
                                      "excess": "difference"})
        out.append({"key": "fairness", "heading": f"Behind the {row.metric.replace('_', ' ')} of {row.dimension} "
                                                  f"{row.group}", "level": 3, "text": text,
                    "table": found, "formats": {f"share of {row.group}": "pct", "share of others": "pct",
                                                "difference": "pts"}})
    return out


def fairness_view(table: pd.DataFrame, dimension: str, k: int) -> pd.DataFrame:
    """One dimension of the fairness table as people read it: one row per group (the overall first), per metric the
    rate with its interval and the ratio to the overall rate with its interval, and the flags in one column. A count
    of customers at risk the table does not publish (under k) shows as '<k'."""
    def interval(low: float, high: float, pct: bool) -> str:
        if pd.isna(low) or pd.isna(high):
            return ""
        return f" ({low * 100:.1f}\u2013{high * 100:.1f})" if pct else f" ({low:.2f}\u2013{high:.2f})"

    part = table[table["dimension"].isin(["overall", dimension])]
    rows: dict[str, dict[str, Any]] = {}
    for r in part.itertuples():
        at_risk = f"<{k}" if pd.isna(r.customers_at_risk) else f"{int(r.customers_at_risk):,}"
        row = rows.setdefault(r.group, {dimension: r.group, "customers": r.customers, "at risk": at_risk,
                                        "flags": []})
        name = r.metric.replace("_", " ").replace(" rate", "")
        row[f"{name} %"] = "" if pd.isna(r.rate) else f"{r.rate * 100:.1f}" + interval(r.low, r.high, True)
        row[f"{name} ratio"] = "" if pd.isna(r.ratio) else f"{r.ratio:.2f}" + interval(r.ratio_low, r.ratio_high,
                                                                                       False)
        if r.flag:
            row["flags"].append(f"{name}: {r.flag}")
    out = pd.DataFrame(list(rows.values()))
    out["flags"] = out["flags"].map("; ".join)
    return out[[c for c in out.columns if c != "flags"] + ["flags"]]


def _small_groups_words(table: pd.DataFrame, k: int) -> str:
    """What the table did with groups of fewer than k customers tonight (config/segone.yaml
    nightly_report.min_published_group_customers)."""
    from pipelines.fairness import hidden_label, pooled_label

    words = (f"No group of fewer than {k} customers is shown by name (a region of one customer, a typo or a "
             f"malformed value would single a person out, and its rate means nothing): such groups are pooled into "
             f"'{pooled_label(k)}', or, when even pooled they are fewer than {k}, counted in one row without rates; "
             f"a rate over fewer than {k} customers (customers at risk, for protective reach) is not shown, and "
             f"neither is a group's count of customers at risk under {k} ('<{k}' in the at-risk column; 0 is shown).")
    once = table[table["metric"] == table["metric"].iloc[0]] if len(table) else table
    done = [f"{r.dimension} {'pooled' if r.group == pooled_label(k) else 'not shown'}: {r.customers:,} customers"
            for r in once.itertuples() if r.group in (pooled_label(k), hidden_label(k))]
    return words + (" Tonight: " + "; ".join(done) + "." if done else " Tonight: none.")


def _fairness(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    from pipelines.fairness import METRIC_WORDS

    heading = SECTION_HEADINGS["fairness"]
    result = fairness_table(paths, day, con)
    if result is None:
        return [{"key": "fairness", "heading": heading,
                 "text": _absent("silver customers has no snapshot on or before this date, or gold decision_flags "
                                 "has no partition for it (decide has not run)")}]
    table, context = result
    cfg = context["cfg"]
    control = context["control"]
    flagged = table[table["flag"].str.startswith("GAP")]
    text = ("Rates per age band (decide's own bands) and region, each with its "
            f"{cfg['interval']:.0%} bootstrap interval ({int(cfg['n_boot']):,} resamples of customers) and its "
            f"ratio to the overall rate. Population: the customers decided tonight outside the control group "
            f"({format_number(control)} customers, who get protective actions only by design). "
            + "Metrics: " + "; ".join(METRIC_WORDS.values()) + ".\n\n"
            f"A group is flagged GAP when it has at least {cfg['min_group_customers']} customers (customers at "
            f"risk for protective reach), its ratio is above {cfg['gap_ratio_high']} or below "
            f"{cfg['gap_ratio_low']}, and the ratio's interval excludes 1; 'unclear' when the ratio is outside the "
            f"band but its interval includes 1. Gaps flagged tonight: "
            + ("; ".join(f"{r.metric.replace('_', ' ')} of {r.dimension} {r.group} ({r.ratio:.2f}x)"
                         for r in flagged.itertuples()) if len(flagged) else "none") + ".\n\n"
            + _small_groups_words(table, int(cfg["min_published_group_customers"])))
    figures = []
    for dimension in ("age band", "region"):
        part = table[(table["dimension"] == dimension) & table["rate"].notna()]
        if part.empty or part["group"].nunique() > 30:
            continue
        long = part.assign(metric=part["metric"].str.replace("_", " "))
        figures.append(bar_figure(long, "group", "rate", "metric", f"Rates by {dimension} ({cfg['interval']:.0%} "
                                  f"intervals)", share=True, errors=("low", "high"), ylabel="share of customers"))
    tables = [{"frame": fairness_view(table, dimension, int(cfg["min_published_group_customers"])), "css": "compact",
               "caption": f"By {dimension}: rate % (interval), ratio to overall (interval)"}
              for dimension in ("age band", "region") if (table["dimension"] == dimension).any()]
    sections = [{"key": "fairness", "heading": heading, "text": text, "tables": tables, "figures": figures}]
    return sections + _drill_downs(paths, day, con, table, context["population"])


# --- the data team's sections ------------------------------------------------------------------------------------

def _action_mix(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["action_mix"]
    scan = _gold(paths, "next_best_actions", day)
    if scan is None:
        return [{"key": "action_mix", "heading": heading,
                 "text": _absent("gold next_best_actions has no partition for this date")}]
    order = ", ".join(f"'{c}'" for c in ACTION_CLASSES)
    by_class_channel = _df(con, f"""
        select action_class, channel, count(*) as recommendations from {scan} group by action_class, channel
        order by array_position([{order}], action_class), channel""")
    by_action = _df(con, f"""
        select action_class, action_id, count(*) as recommendations, count(distinct customer_id) as customers,
               avg(is_exploration::int) as exploration_share, avg(rank) as mean_rank
        from {scan} group by action_class, action_id
        order by array_position([{order}], action_class), recommendations desc, action_id""")
    totals = _row(con, f"select count(*), count(distinct customer_id), avg(is_exploration::int) from {scan}")
    control, source = control_group(paths, day, con)
    figures = []
    if not by_class_channel.empty:
        figures.append(bar_figure(by_class_channel, "channel", "recommendations", "action_class",
                                  "Recommendations by channel and action class"))
    text = (f"{totals[0]:,} recommendations for {totals[1]:,} customers; control group: {format_number(control)} "
            f"customers ({source}), who receive protective actions only; exploration share: "
            f"{format_pct(totals[2] or 0)}.")
    return [{"key": "action_mix", "heading": heading, "text": text, "table": by_class_channel, "figures": figures},
            {"key": "action_mix", "heading": "Action mix by action", "level": 3, "table": by_action,
             "formats": {"exploration_share": "pct"}}]


def _staffed(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """Per staffed channel (and the advisor queue): the night's capacity against the customers who needed it
    (runs/D/decide.json, summed over the shards): served, sent by a digital channel instead, not sent."""
    heading = SECTION_HEADINGS["staffed"]
    metrics = read_run_metrics(paths, day.isoformat(), "decide")
    capacity = (metrics or {}).get("capacity")
    if not capacity:
        return [{"key": "staffed", "heading": heading,
                 "text": _absent("runs/D/decide.json has no capacity figures (the decide stage has not run for this "
                                 "date, or ran before capacities existed)")}]
    rows = []
    for name, figures in sorted(capacity.items(), key=lambda item: (item[0] == "advisor_queue", item[0])):
        limit = int(figures.get("night_capacity", figures.get("capacity", 0)))
        demand = int(figures.get("demand", 0))
        served = int(figures.get("served", 0))
        rows.append({"channel": name, "capacity": limit, "demand": demand, "served": served,
                     "over_capacity": int(figures.get("over_capacity", max(demand - served, 0))),
                     "sent_digitally": figures.get("sent_digitally"), "not_sent": figures.get("not_sent"),
                     "demand_to_capacity": round(demand / limit, 2) if limit else None,
                     "utilisation": served / limit if limit else None})
    table = pd.DataFrame(rows).astype({"sent_digitally": "Int64", "not_sent": "Int64"})
    long = pd.concat([pd.DataFrame({"channel": table["channel"], "what": what, "customers": table[what]})
                      for what in ("capacity", "demand", "served")], ignore_index=True)
    figures = [bar_figure(long, "channel", "customers", "what", "Staffed channels: capacity, demand, served")]
    over = table[table["demand"] > table["capacity"]]
    text = ("Channels with people behind them have a nightly capacity (config/decisioning.yaml `capacity`), split "
            "across the customer buckets in proportion to their size. Demand: customers the funnel would have "
            "contacted on the channel (the advisor queue: customers meeting its conditions); served: within "
            "capacity, the neediest first; the others got the same action on a digital channel (sent_digitally) "
            "or none (not_sent), each logged in decision_log at stage capacity. "
            + ("Over capacity tonight: " + "; ".join(f"{r.channel} {r.demand:,} for {r.capacity:,}"
                                                     for r in over.itertuples()) + "."
               if len(over) else "No channel was over capacity tonight."))
    return [{"key": "staffed", "heading": heading, "text": text, "table": table, "figures": figures,
             "formats": {"utilisation": "pct"}}]


def _app_signals(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """What the app's events and the customers' income did tonight (personalization-consented customers only):
    app users and push-fatigued customers (gold app_signals), roles (gold customer_roles), the dashboard modules by
    status (gold dashboard_layout) and the published actions moved off push (decision_log)."""
    heading = SECTION_HEADINGS["app_signals"]
    signals = _gold(paths, "app_signals", day)
    roles = _gold(paths, "customer_roles", day)
    layout = _gold(paths, "dashboard_layout", day)
    if signals is None and roles is None and layout is None:
        return [{"key": "app_signals", "heading": heading,
                 "text": _absent("gold app_signals, customer_roles and dashboard_layout have no partition for this "
                                 "date (the profile and decide stages have not run, or no customer has app events "
                                 "or a role)")}]
    lines = []
    if signals is not None:
        n, users, tired = _row(con, f"select count(*), count(*) filter (where is_app_user), "
                                    f"count(*) filter (where is_push_fatigued) from {signals}")
        lines.append(f"{n:,} customers with app events in the window (personalization consent), {users:,} app users "
                     f"(the layout follows what they open), {tired:,} push-fatigued (fewer pushes).")
    if roles is not None:
        per = con.execute(f"select role, count(*) from {roles} group by role order by role").fetchall()
        lines.append("Roles: " + (", ".join(f"{role} {count:,}" for role, count in per) or "none") + ".")
    dlog, nba = _gold(paths, "decision_log", day), _gold(paths, "next_best_actions", day)
    if dlog is not None and nba is not None:
        moved = _one(con, f"select count(*) from {dlog} as l semi join {nba} as n using (customer_id, action_id) "
                          f"where l.stage = 'contact_policy'")
        lines.append(f"{moved:,} published actions sent by another channel instead of push (push fatigue).")
    section: dict[str, Any] = {"key": "app_signals", "heading": heading}
    if layout is not None:
        statuses = ("needed", "used", "new", "not_opened", "default")
        counts = ", ".join(f"count(*) filter (where status = '{s}') as {s}" for s in statuses)
        section["table"] = _df(con, f"select module, {counts} from {layout} group by module order by module")
        long = _df(con, f"select module, status, count(*) as customers from {layout} "
                        f"where status in ('needed', 'used', 'new', 'not_opened') group by all order by all")
        if not long.empty:
            section["figures"] = [bar_figure(long, "module", "customers", "status",
                                             "Dashboard modules by status (customers)")]
    section["text"] = ("Statuses of the home-screen modules: needed (the customer's data puts it there), used "
                       "(opened in the app: it rises), new (useful, never opened: introduced), not_opened (still "
                       "unopened after its introduction: it sinks), default. Money help is placed by need alone "
                       "(a visit to it is restricted data). " + " ".join(lines))
    return [section]


def _plans(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """Gold plans of D (docs/plans.md): rows, customers and amounts per action, and the safety rule checked again
    here on every row against the night's cash_forecast (the P10 minimum balance per horizon less everything the
    customer's plan moves by then)."""
    heading = SECTION_HEADINGS["plans"]
    plans, forecast = _gold(paths, "plans", day), _gold(paths, "cash_forecast", day)
    if plans is None:
        return [{"key": "plans", "heading": heading,
                 "text": _absent("the gold plans table has no partition for this date (the plans stage has not run)")}]
    table = _df(con, f"""
        select action, count(*) as instructions, count(distinct customer_id) as customers,
            round(sum(amount), 2) as amount, round(median(amount), 2) as median_amount,
            min(execute_on) as first_day, max(execute_on) as last_day
        from {plans} group by action order by action""")
    n, customers, lowest = _row(con, f"select count(*), count(distinct customer_id), min(p10_after) from {plans}")
    checked = broken = 0
    if forecast is not None and n:
        checked, broken = _row(con, f"""
            with p as (select customer_id, execute_on, amount from {plans}),
            f as (select customer_id, horizon_days, min_balance_p10 from {forecast}),
            moved as (
                select f.customer_id, f.horizon_days, any_value(f.min_balance_p10) as p10,
                    sum(p.amount) filter (
                        where cast(p.execute_on as date) <= date '{day}' + cast(f.horizon_days as integer)) as moved
                from f join p using (customer_id) group by all)
            select count(*), count(*) filter (where p10 is null or p10 - coalesce(moved, 0) < -0.005) from moved""")
    text = (f"{n:,} plan instructions for {customers:,} customers, each a proposal that runs only under the "
            f"customer's mandate, explained, versioned and reversible (docs/plans.md). The safety rule, checked "
            f"again here from the published forecast: {checked:,} customer-horizons checked, {broken:,} where the "
            f"plan would take the projected P10 balance below zero"
            + (f"; the lowest projected P10 balance after a plan is £{lowest:,.2f}." if lowest is not None else "."))
    return [{"key": "plans", "heading": heading, "text": text, "table": table}]


EVENT_FORECASTS = {"income_forecast": ("income_drop", "income drop", "income_drop_ahead"),
                   "expense_forecast": ("large_expense", "large one-off expense", "large_bill_ahead")}


def event_model_figures(paths: Paths, family: str, version: str) -> dict[str, Any]:
    """What the model registry holds about one version of an event forecast: the base rate per horizon the engine
    was trained on (engine.json base_rates) and the held-out backtest per horizon against the base rate
    (metadata.json metrics_held_out, base_rate_held_out, held_out_cutoffs); {} for a version the registry does not
    hold (a rule or a deleted version)."""
    from pipelines import registry

    folder = registry.family_dir(paths, family) / str(version)
    out: dict[str, Any] = {}
    engine = folder / "engine.json"
    if engine.is_file():
        out["base_rates"] = {int(h): float(r) for h, r in
                             json.loads(engine.read_text(encoding="utf-8")).get("base_rates", {}).items()}
    if (folder / registry.METADATA).is_file():
        meta = registry.read_metadata(paths, family, str(version))
        out["held_out"] = meta.get("metrics_held_out") or {}
        out["base_rate_held_out"] = meta.get("base_rate_held_out") or {}
        out["held_out_cutoffs"] = meta.get("held_out_cutoffs") or {}
    return out


def _event_forecasts(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """Gold income_forecast and expense_forecast of D (docs/forecasting.md, docs/decisioning.md): per horizon the
    customers scored, the mean probability against the base rate the model was trained on, the customers at or
    above the action level of config/decisioning.yaml event_forecasts (the horizons decide acts on), those with an
    expected date; the model version and its held-out backtest from the model registry; and what decide made of it
    tonight (income_drop_ahead, large_bill_ahead: published, and withheld for a plan's bill provision)."""
    heading = SECTION_HEADINGS["event_forecasts"]
    levels = decisioning()["event_forecasts"]
    out: list[dict[str, Any]] = []
    texts, tables = [], []
    for table, (event, words, action) in EVENT_FORECASTS.items():
        scan = _gold(paths, table, day)
        if scan is None:
            texts.append(f"{words.capitalize()}: gold {table} has no partition for this date (the forecast_events "
                         f"stage has not run, or no model has been trained yet).")
            continue
        level = float(levels[event]["min_probability"])
        acted = sorted(int(h) for h in levels[event]["horizons"])
        frame = _df(con, f"""
            select horizon_days, count(distinct customer_id) as customers, avg(p_event) as mean_probability,
                count(distinct customer_id) filter (where p_event >= {level}) as at_action_level,
                count(*) filter (where expected_date is not null) as with_expected_date,
                string_agg(distinct model_version, ', ' order by model_version) as model_version
            from {scan} group by horizon_days order by horizon_days""")
        versions = sorted({v for cell in frame["model_version"].dropna() for v in str(cell).split(", ")})
        figures = {v: event_model_figures(paths, table, v) for v in versions}
        rates, backtest = [], []
        for h in frame["horizon_days"].astype(int):
            known = [f["base_rates"][h] for f in figures.values() if h in f.get("base_rates", {})]
            rates.append(known[0] if len(known) == 1 else np.nan)
        frame.insert(3, "base_rate", rates)
        frame.insert(5, "acted_on", frame["horizon_days"].astype(int).isin(acted))
        for version, fig in figures.items():
            for h, m in sorted((fig.get("held_out") or {}).items(), key=lambda kv: int(kv[0])):
                base = (fig.get("base_rate_held_out") or {}).get(h, {})
                backtest.append({"model_version": version, "horizon_days": int(h),
                                 "held_out_cutoff": (fig.get("held_out_cutoffs") or {}).get(h),
                                 "rows": m.get("n_rows"), "event_rate": m.get("event_rate"),
                                 "roc_auc": m.get("roc_auc"), "brier": m.get("brier"),
                                 "base_rate_brier": base.get("brier"),
                                 "calibration_error": m.get("calibration_error")})
        n = _one(con, f"select count(distinct customer_id) from {scan}")
        ahead = _one(con, f"""select count(distinct customer_id) from {scan}
                              where horizon_days in ({", ".join(map(str, acted))}) and p_event >= {level}""")
        texts.append(f"{words.capitalize()} (gold {table}, model {', '.join(versions) or 'none'}): {n:,} customers "
                     f"scored; {ahead:,} at or above the action level {level:g} at {' or '.join(map(str, acted))} "
                     f"days, for whom decide considers {action} (config/decisioning.yaml event_forecasts).")
        tables.append({"frame": frame, "caption": f"{words.capitalize()}: tonight per horizon",
                       "formats": {"mean_probability": "pct", "base_rate": "pct"}})
        if backtest:
            tables.append({"frame": pd.DataFrame(backtest),
                           "caption": f"{words.capitalize()}: the model's held-out backtest (model registry)",
                           "formats": {"event_rate": "pct"}})
        else:
            texts.append(f"The model registry holds no backtest for {', '.join(versions) or 'this forecast'}.")
    nba, dlog = _gold(paths, "next_best_actions", day), _gold(paths, "decision_log", day)
    ids = _quote([a for _, _, a in EVENT_FORECASTS.values()])
    if nba is not None:
        got = _df(con, f"""select action_id, count(*) as published, count(distinct customer_id) as customers
                           from {nba} where action_id in ({ids}) group by all order by action_id""")
        if dlog is not None:
            withheld = _df(con, f"""select action_id, stage, reason, count(*) as candidates_dropped from {dlog}
                                    where action_id in ({ids}) group by all
                                    order by action_id, candidates_dropped desc""")
            if not withheld.empty:
                tables.append({"frame": withheld, "caption": "Their actions dropped, by stage and reason (gold "
                                                             "decision_log: below the level, a plan's bill "
                                                             "provision, consent, contact policy, arbitration)"})
        tables.append({"frame": got, "caption": "Their actions published tonight"})
    out.append({"key": "event_forecasts", "heading": heading, "text": "\n\n".join(texts), "tables": tables})
    return out


def _funnel(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["funnel"]
    scan = _gold(paths, "decision_log", day)
    if scan is None:
        return [{"key": "funnel", "heading": heading,
                 "text": _absent("the gold decision_log table has no partition for this date")}]
    nba = _gold(paths, "next_best_actions", day)
    moved = pushed = 0
    if nba is not None:
        # rows of an action still published: a channel given up, no drop (stage capacity: a staffed channel for a
        # digital one; stage contact_policy: push for another channel, push fatigue)
        moved, pushed = _row(con, f"""
            select count(*) filter (where stage = 'capacity'), count(*) filter (where stage = 'contact_policy')
            from {scan} as d semi join {nba} as n using (customer_id, action_id)""")
        scan = _drops_sql(scan, nba)
    per = _df(con, f"select stage, action_class, count(*) as dropped from {scan} group by all")
    wide = per.pivot_table(index="stage", columns="action_class", values="dropped", aggfunc="sum", fill_value=0)
    order = [s for s in FUNNEL_STAGES if s in wide.index] + sorted(set(wide.index) - set(FUNNEL_STAGES))
    wide = wide.reindex(index=order, columns=[c for c in ACTION_CLASSES if c in wide.columns]
                        + sorted(set(wide.columns) - set(ACTION_CLASSES)), fill_value=0)
    wide["all classes"] = wide.sum(axis=1)
    table = wide.reset_index().rename(columns={"stage": "stage dropping the candidate"})
    table.columns.name = None
    published = _one(con, f"select count(*) from {nba}") if nba is not None else None
    total = int(wide["all classes"].sum())
    text = (f"{total:,} candidate actions dropped, each counted at the first stage that dropped it"
            + (f"; {published:,} published as next best actions." if published is not None else ".")
            + (f" Not counted here: {moved:,} published actions that gave up a staffed channel to tonight's "
               f"capacity (decision_log stage capacity, see the staffed channels section)." if moved else "")
            + (f" Not counted here either: {pushed:,} published actions sent by another channel instead of push "
               f"(decision_log stage contact_policy, see the app signals section)." if pushed else ""))
    long = per.copy()
    long["stage"] = pd.Categorical(long["stage"], categories=order, ordered=True)
    long["action_class"] = pd.Categorical(long["action_class"], categories=ACTION_CLASSES
                                          + sorted(set(long["action_class"]) - set(ACTION_CLASSES)), ordered=True)
    long = long.sort_values(["action_class", "stage"])
    long["stage"] = long["stage"].astype(str)
    long["action_class"] = long["action_class"].astype(str)
    long = long.set_index(["stage", "action_class"]).reindex(
        pd.MultiIndex.from_product([order, pd.unique(long["action_class"])], names=["stage", "action_class"]),
        fill_value=0).reset_index()
    figures = [bar_figure(long, "stage", "dropped", "action_class", "Candidates dropped per funnel stage (log scale)",
                          log=True)] if not per.empty else []
    stage_order = ", ".join(f"'{s}'" for s in FUNNEL_STAGES)
    reasons = _df(con, f"""
        select stage, reason, dropped from (
            select stage, reason, count(*) as dropped from {scan} group by stage, reason)
        qualify row_number() over (partition by stage order by dropped desc, reason) <= 3
        order by array_position([{stage_order}], stage), dropped desc, reason""")
    return [{"key": "funnel", "heading": heading, "text": text, "table": table, "figures": figures},
            {"key": "funnel", "heading": "Suppression funnel: top reasons per stage", "level": 3, "table": reasons}]


def _histogram(con, scan: str):
    bins = _df(con, f"""
        select horizon_days, least(floor(p_shortfall * 20), 19)::integer as b, count(*) as n
        from {scan} where p_shortfall is not null group by all order by all""")
    fig, ax = _new_figure("Distribution of p_shortfall per horizon")
    edges = np.linspace(0, 1, 21)
    colours = colours_for(sorted(int(h) for h in bins["horizon_days"].unique()))
    for horizon, part in bins.groupby("horizon_days"):
        counts = np.zeros(20)
        counts[part["b"].to_numpy(int)] = part["n"].to_numpy(float)
        share = counts / max(counts.sum(), 1)
        ax.step(edges, np.r_[share, share[-1]], where="post", label=f"{int(horizon)} days",
                color=colours[int(horizon)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("p_shortfall (bins of 0.05)")
    ax.set_ylabel("share of customers")
    share_axis(ax.yaxis)
    outside_legend(fig, ax, title="horizon")
    return fig


def realised_calibration(paths: Paths, day: date, con) -> tuple[dict[str, pd.DataFrame], pd.DataFrame] | None:
    """Realised against predicted: for each horizon, the latest earlier forecast night P with P + horizon <= D (the
    forecast of 30 days ago for the 30-day horizon, when nights run daily), scored on what the silver balances show
    happened in (P, P + horizon] (forecast.build_labels: the labels training uses). Returns the calibration tables
    per horizon and a summary (customers, realised rate, mean predicted, Brier score); None when no earlier night
    qualifies."""
    from models.metrics import brier, calibration_table
    from pipelines import forecast

    nights = [d for d in _partitions(paths, "gold", "cash_forecast") if d < day.isoformat()]
    chosen: dict[int, str] = {}
    for horizon in forecast.horizons():
        ready = [n for n in nights if date.fromisoformat(n) + timedelta(days=int(horizon)) <= day]
        if ready:
            chosen[int(horizon)] = ready[-1]
    if not chosen:
        return None
    cutoffs = sorted({date.fromisoformat(n) for n in chosen.values()})
    labels = forecast.build_labels(paths, day, cutoffs, series_until=day)
    tables: dict[str, pd.DataFrame] = {}
    rows = []
    for horizon, night in sorted(chosen.items()):
        predicted = _df(con, f"select customer_id, p_shortfall from {_gold(paths, 'cash_forecast', night)} "
                             f"where horizon_days = {horizon}")
        truth = labels[(labels["horizon_days"] == horizon) & (labels["cutoff"] == pd.Timestamp(night))]
        joined = predicted.merge(truth[["customer_id", "is_shortfall"]], on="customer_id").dropna()
        if joined.empty:
            continue
        y = joined["is_shortfall"].astype(int)
        tables[f"{horizon} days"] = calibration_table(y, joined["p_shortfall"])
        rows.append({"horizon_days": horizon, "forecast_of": night, "customers": len(joined),
                     "forecast_customers": len(predicted), "realised_rate": float(y.mean()),
                     "mean_predicted": float(joined["p_shortfall"].mean()),
                     "brier": float(brier(y, joined["p_shortfall"]))})
    return (tables, pd.DataFrame(rows)) if tables else None


def _backtest(paths: Paths) -> dict[str, Any] | None:
    from models.metrics import calibration_table

    folder = paths.reports / "backtest"
    target = folder / "backtest.json"
    if not target.exists():
        return None
    rows = pd.DataFrame(json.loads(target.read_text(encoding="utf-8")))
    if rows.empty:
        return None
    keep = [c for c in ("dataset", "engine", "horizon_days", "population", "n_rows", "n_positive", "brier",
                        "calibration_error", "roc_auc") if c in rows]
    section: dict[str, Any] = {"table": rows[keep].sort_values([c for c in ("dataset", "population", "horizon_days",
                                                                            "engine") if c in keep]),
                               "figures": []}
    for dataset in sorted(rows["dataset"].unique()) if "dataset" in rows else []:
        scored_file = folder / "scored" / f"{dataset}.parquet"
        if not scored_file.exists():
            continue
        scored = pd.read_parquet(scored_file, columns=["engine", "horizon_days", "p_shortfall", "is_shortfall"])
        scored = scored.dropna(subset=["p_shortfall", "is_shortfall"])
        tables = {f"{e}, {int(h)} days": calibration_table(g["is_shortfall"].astype(int), g["p_shortfall"])
                  for (e, h), g in scored.groupby(["engine", "horizon_days"])}
        if tables:
            section["figures"].append(calibration_figure(tables, f"Backtest calibration: {dataset}"))
    return section


def _calibration(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    cfg = report_settings()
    heading = SECTION_HEADINGS["calibration"]
    scan = _gold(paths, "cash_forecast", day)
    sections = []
    if scan is None:
        sections.append({"key": "calibration", "heading": heading,
                         "text": _absent("gold cash_forecast has no partition for this date")})
    else:
        summary = _df(con, f"""
            select horizon_days, count(*) as customers, avg(p_shortfall) as mean_p_shortfall,
                   quantile_cont(p_shortfall, 0.5) as median_p_shortfall,
                   avg((p_shortfall >= 0.3)::int) as "share with p >= 0.3",
                   avg((p_shortfall >= 0.5)::int) as "share with p >= 0.5",
                   count(expected_shortfall_date) as with_expected_date
            from {scan} group by all order by horizon_days""")
        models = [r[0] for r in con.execute(f"select distinct model_version from {scan} order by 1").fetchall()]
        sections.append({"key": "calibration", "heading": heading,
                         "text": f"Tonight's forecast (model {', '.join(map(str, models))}): the distribution of the "
                                 f"shortfall probability per horizon.", "table": summary,
                         "formats": {"mean_p_shortfall": "pct", "median_p_shortfall": "pct",
                                     "share with p >= 0.3": "pct", "share with p >= 0.5": "pct"},
                         "figures": [_histogram(con, scan)]})
    sub = "Forecast calibration: realised against predicted"
    realised = None
    if cfg.get("realised_calibration", True):
        try:
            realised = realised_calibration(paths, day, con)
        except Exception as error:  # noqa: BLE001 - the fallback below still says something useful
            log.warning("realised calibration for %s failed: %s", day, error)
            realised = None
    if realised is not None:
        tables, summary = realised
        colours = colours_for([int(label.split()[0]) for label in tables])
        figure = calibration_figure(tables, "Realised against predicted",
                                    {label: colours[int(label.split()[0])] for label in tables})
        text = ("Earlier nights' forecasts scored on what happened since (silver balances: the cash position below "
                "zero on some day of the horizon, the label training uses): for each horizon, the latest night "
                "whose horizon has ended by tonight. Customers without a full window (an account closed) are left "
                "out. " + "; ".join(f"{int(r.horizon_days)} days (forecast of {r.forecast_of}): realised "
                                   f"{format_pct(r.realised_rate)} against a mean predicted "
                                   f"{format_pct(r.mean_predicted)} over {r.customers:,} customers"
                                   for r in summary.itertuples()) + ".")
        bins = pd.concat([t.assign(horizon=label) for label, t in tables.items()], ignore_index=True)
        sections.append({"key": "calibration", "heading": sub, "level": 3, "text": text,
                         "tables": [{"frame": summary, "caption": "Per horizon",
                                     "formats": {"realised_rate": "pct", "mean_predicted": "pct"}},
                                    {"frame": bins[["horizon", "bin", "n", "mean_predicted", "observed_rate"]],
                                     "caption": "Reliability table (equal-frequency bins)",
                                     "formats": {"mean_predicted": "pct", "observed_rate": "pct"}}],
                         "figures": [figure]})
        return sections
    backtest = _backtest(paths)
    if backtest is None:
        sections.append({"key": "calibration", "heading": sub, "level": 3,
                         "text": "No earlier night's forecast has a horizon that ended by this date, and no backtest "
                                 "has been run (reports/backtest/backtest.json is absent): realised calibration cannot "
                                 "be shown yet. It appears once the lake holds the forecast of 30 days ago."})
    else:
        sections.append({"key": "calibration", "heading": sub, "level": 3,
                         "text": "No earlier night's forecast has a horizon that ended by this date, so this is the "
                                 "latest backtest's calibration instead (reports/backtest/backtest.json): the engines "
                                 "scored on held-out cut-offs.", **backtest})
    return sections


def _life_events(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["life_events"]
    scan = _gold(paths, "life_events", day)
    if scan is None:
        return [{"key": "life_events", "heading": heading,
                 "text": _absent("the gold life_events table has no partition for this date (the life-events stage "
                                 "has not run)")}]
    table = _df(con, f"""
        select event_type, count(distinct customer_id) as customers, count(*) filter (where flagged) as flagged,
               avg(flagged::int) as flagged_rate, avg(probability) as mean_probability,
               string_agg(distinct model_version, ', ' order by model_version) as published_by
        from {scan} group by all order by event_type""")
    figures = [bar_figure(table, "event_type", "flagged_rate", None, "Flagged rate per life event", share=True,
                          ylabel="share of scored customers")] if not table.empty else []
    return [{"key": "life_events", "heading": heading,
             "text": "Share of scored customers (those with the life_events consent) flagged per event type tonight. "
                     "published_by: the model version, or rule:<event>:v<N> where the event's hand-written rule flags "
                     "(no model yet, or the model did worse than the rule on held-out cut-offs: no probability, so "
                     "mean_probability is empty).",
             "table": table, "formats": {"flagged_rate": "pct"}, "figures": figures}]


def _threshold(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{format_number(value[0])} to {format_number(value[1])}"
    return "" if value is None else value if isinstance(value, str) else format_number(value) \
        if isinstance(value, int | float) else json.dumps(value)


def _quality(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    d = day.isoformat()
    sections = []
    scan = _scan(paths, "gold", "quarantine", load_date=d)
    heading = SECTION_HEADINGS["quality"]
    if scan is None:
        quarantine = {"key": "quality", "heading": heading,
                      "text": "Quarantine: no gold quarantine partition for this date (nothing was quarantined, "
                              "or the ingest has not run)."}
    else:
        by_reason = _df(con, f"""
            select coalesce(stage, '') as stage, coalesce(file, '') as file, coalesce(column_name, '') as column_name,
                   reason, count(*) as rows
            from {scan} group by all order by rows desc, stage, file, column_name, reason limit 30""")
        total = _one(con, f"select count(*) from {scan}")
        quarantine = {"key": "quality", "heading": heading,
                      "text": f"Quarantine: {total:,} rows or files quarantined for this date; the 30 most frequent "
                              f"(stage, file, column, reason) below.", "table": by_reason} if total else \
            {"key": "quality", "heading": heading, "text": "Quarantine: nothing was quarantined for this date."}
        per_reason = _df(con, f"select reason, count(*) as rows from {scan} group by all order by rows desc limit 12")
        if not per_reason.empty:
            per_reason["reason"] = per_reason["reason"].astype(str).str.slice(0, 40)
            per_reason = per_reason.groupby("reason", as_index=False, sort=False)["rows"].sum()
            quarantine["figures"] = [bar_figure(per_reason, "reason", "rows", None, "Quarantined rows by reason")]
    sections.append(quarantine)
    status = night_status(paths, d)
    validate = status.step("validate")
    if validate.file is None:
        sections.append({"key": "quality", "heading": "Landing gates", "level": 3,
                         "text": _absent("runs/D/validate.json is absent: no gate ran")})
    elif not validate.current:
        sections.append({"key": "quality", "heading": "Landing gates", "level": 3,
                         "text": "runs/D/validate.json is from an earlier attempt of this night (older than this "
                                 "attempt's ingest): its verdicts are not shown."})
    else:
        metrics = validate.metrics or {}
        gates = pd.DataFrame([{"gate": g.get("name"), "passed": bool(g.get("passed")), "value": g.get("value"),
                               "threshold": _threshold(g.get("threshold")), "message": g.get("message")}
                              for g in metrics.get("gates", [])])
        suites = metrics.get("suites") or {}
        failed_suites = [t for t, s in suites.items() if not s.get("success")]
        text = (f"Overall: {'PASSED' if metrics.get('passed') else 'FAILED'}. Expectation suites: {len(suites)} "
                f"run, {len(failed_suites)} failed" + (f" ({', '.join(failed_suites)})" if failed_suites else "") + ".")
        sections.append({"key": "quality", "heading": "Landing gates", "level": 3, "text": text,
                         "table": gates if not gates.empty else None})
    return sections


def _data_docs(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """The link to the night's Great Expectations data docs (reports/D/data_docs/, assembled at publish from the
    results the gates kept: pipelines/data_docs.py), with how many suites they hold and which failed."""
    from pipelines.data_docs import report_link

    heading = SECTION_HEADINGS["data_docs"]
    link = report_link(paths, day)
    if link is None:
        return [{"key": "data_docs", "heading": heading, "text": _absent(
            "no gate of this night kept its suites' results (runs/D/gx/ is absent), so there are no data docs")}]
    failed = link["failed"]
    text = (f"{link['suites']:,} expectation suites ran at the night's gates (landing, silver, gold): "
            + (f"{len(failed)} failed ({', '.join(failed)})." if failed else "all passed.")
            + " The data docs show each expectation with its result, rendered by Great Expectations (values of "
              "restricted or personal columns withheld).")
    return [{"key": "data_docs", "heading": heading, "text": text,
             "links": [{"text": "Open the data docs of this night", "href": link["href"]}]}]


def _volumes(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["volumes"]
    ingest = read_run_metrics(paths, day.isoformat(), "ingest")
    if not ingest or not ingest.get("kinds"):
        return [{"key": "volumes", "heading": heading,
                 "text": _absent("no ingest metrics for this date (runs/D/ingest.json is absent)")}]
    rows = [{"kind": kind, "files": m.get("files", 0), "rows_read": m.get("rows_read", 0),
             "rows_accepted": m.get("rows_accepted", 0), "rows_quarantined": m.get("rows_quarantined", 0),
             "files_quarantined": m.get("files_quarantined", 0)}
            for kind, m in sorted(ingest["kinds"].items())]
    ob = ingest.get("openbanking") or {}
    if ob:
        rows.append({"kind": "openbanking (JSON files)", "files": ob.get("files", 0),
                     "rows_read": (ob.get("stats") or {}).get("records_read", 0),
                     "rows_accepted": None, "rows_quarantined": ob.get("rows_quarantined", 0),
                     "files_quarantined": (ob.get("stats") or {}).get("files_rejected", 0)})
    table = pd.DataFrame(rows).astype({c: "Int64" for c in ("files", "rows_read", "rows_accepted",
                                                           "rows_quarantined", "files_quarantined")})
    kinds = table[table["rows_accepted"].notna()]
    figures = []
    if not kinds.empty:
        figures.append(bar_figure(kinds.assign(rows_accepted=kinds["rows_accepted"].astype(float)), "kind",
                                  "rows_accepted", None, "Rows accepted per landing kind (log scale)", log=True))
    missing = ingest.get("missing_kinds") or []
    text = "Rows per landing kind as the ingest read them." + (
        f"\n\nMissing landing kinds: {', '.join(missing)}." if missing else "")
    return [{"key": "volumes", "heading": heading, "text": text, "table": table, "figures": figures}]


def _summary(paths: Paths, day: date, con, status: NightStatus | None = None) -> list[dict[str, Any]]:
    d = day.isoformat()
    status = status or night_status(paths, d)
    steps = pd.DataFrame([{"step": s.step, "what": s.label, "verdict": s.verdict,
                           "written at (UTC)": s.written_at.strftime("%Y-%m-%d %H:%M:%S") if s.written_at else None,
                           "problems": "; ".join(s.problems[:3]) if s.current and s.is_gate else ""}
                          for s in status.steps])
    counts = []
    for table in ("cash_forecast", "life_events", "next_best_actions", "decision_log", "advisor_queue",
                  "decision_flags"):
        scan = _gold(paths, table, d)
        if scan is None:
            counts.append({"gold table": table, "rows": None, "customers": None, "status": "absent"})
        else:
            rows, customers = _row(con, f"select count(*), count(distinct customer_id) from {scan}")
            counts.append({"gold table": table, "rows": rows, "customers": customers, "status": "present"})
    text = (f"Business date {d}. Every step of the night as its latest attempt left it (runs/{d}/): a step's file "
            "counts only when it was written after the steps before it; an older one belongs to an earlier attempt "
            "and its verdict is ignored.")
    return [{"key": "summary", "heading": SECTION_HEADINGS["summary"], "text": text,
             "tables": [{"frame": steps, "caption": "Steps of the current attempt"},
                        {"frame": pd.DataFrame(counts).astype({"rows": "Int64", "customers": "Int64"}),
                         "caption": "Gold tables of the night"}]}]


def _value(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """gold value_summary (pipelines/value.py): value per customer of treated and control customers, the day's and
    cumulative, by action class, with 95% intervals, and the uplift over the nights."""
    heading = SECTION_HEADINGS["value"]
    scan = _scan(paths, "gold", "value_summary", as_of=day.isoformat())
    if scan is None:
        return [{"key": "value", "heading": heading, "text": _absent("gold value_summary has no partition for this "
                                                                     "date (measure_value did not run)")}]
    table = _df(con, f"""
        select arm, action_class, n_customers, value_per_customer, ci_low, ci_high, cumulative_value_per_customer,
            cumulative_ci_low, cumulative_ci_high, n_recommendations, n_accepted, acceptance_rate, n_complaints,
            n_unsubscribes, since
        from {scan} order by array_position(['treated', 'control', 'uplift'], arm),
            array_position(['all', 'protective', 'service', 'commercial'], action_class)""")
    uplift = table[(table["arm"] == "uplift") & (table["action_class"] == "all")]
    text = "Realised value in pounds (config/rewards.yaml; docs/closed_loop.md)."
    if len(uplift) and pd.notna(uplift["cumulative_value_per_customer"].iloc[0]):
        u = uplift.iloc[0]
        text += (f" Since {str(u['since'])[:10]}: uplift per customer {u['cumulative_value_per_customer']:.2f} (95% interval "
                 f"{u['cumulative_ci_low']:.2f} to {u['cumulative_ci_high']:.2f}), treated minus control.")
    figures = []
    history = []
    for night in [d for d in _partitions(paths, "gold", "value_summary") if d <= day.isoformat()]:
        part = _scan(paths, "gold", "value_summary", as_of=night)
        row = _df(con, f"select cumulative_value_per_customer as v, cumulative_ci_low as lo, cumulative_ci_high as hi "
                       f"from {part} where arm = 'uplift' and action_class = 'all'")
        if len(row) and pd.notna(row["v"].iloc[0]):
            history.append((pd.Timestamp(night), row["v"].iloc[0], row["lo"].iloc[0], row["hi"].iloc[0]))
    if len(history) > 1:
        fig, ax = _figure("Cumulative uplift per customer (treated minus control, 95% interval)")
        x = [h[0] for h in history]
        ax.plot(x, [h[1] for h in history], marker="o")
        ax.fill_between(x, [h[2] for h in history], [h[3] for h in history], alpha=0.25)
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_ylabel("pounds per customer")
        fig.autofmt_xdate()
        figures.append(fig)
    return [{"key": "value", "heading": heading, "text": text, "table": table, "figures": figures}]


SECTIONS: list[tuple[str, Callable[..., list[dict[str, Any]]]]] = [
    ("headline", _headline), ("at_risk", _at_risk), ("advisor_queue", _advisor_queue), ("checks", _checks),
    ("traces", _traces), ("fairness", _fairness), ("action_mix", _action_mix), ("staffed", _staffed),
    ("app_signals", _app_signals), ("plans", _plans), ("event_forecasts", _event_forecasts), ("funnel", _funnel), ("value", _value), ("calibration", _calibration),
    ("life_events", _life_events), ("quality", _quality), ("data_docs", _data_docs), ("volumes", _volumes),
    ("summary", _summary)]


def report_path(paths: Paths, day: date) -> Path:
    return paths.reports / day.isoformat() / "index.html"


def build_sections(paths: Paths, day: date, status: NightStatus) -> list[dict[str, Any]]:
    con = lake.connect(threads=2)
    sections: list[dict[str, Any]] = []
    try:
        for key, build in SECTIONS:
            try:
                if key in ("headline", "summary"):
                    sections += build(paths, day, con, status=status)
                else:
                    sections += build(paths, day, con)
            except Exception as error:  # noqa: BLE001 - one broken section must not lose the report
                log.exception("nightly report section %s failed", key)
                sections.append({"key": key, "template": "_generic", "heading": SECTION_HEADINGS.get(key, key),
                                 "text": f"This section could not be built: {type(error).__name__}: {error}"})
    finally:
        con.close()
    return sections


def later_attempt(paths: Paths, day: date, status: NightStatus) -> str | None:
    """When the report reads the run metrics of a published night (a snapshot taken at publish) and the night has
    been run again since: what that later attempt is doing, in one sentence. None otherwise."""
    home = Paths(paths.home)
    if Path(paths.runs) == Path(home.runs):
        return None
    live = night_status(home, day.isoformat())
    published = status.step("ingest").written_at
    started = live.step("ingest").written_at
    if started is None or (published is not None and started <= published):
        return None
    what = {"failed": "FAILED (" + ", ".join(g.label for g in live.failed) + " did not pass)",
            "incomplete": "not finished (running, or stopped before its gates)",
            "passed": "passed its gates but is not published"}.get(live.state, live.state)
    return (f"A later attempt of this night, started {started:%Y-%m-%d %H:%M} UTC, {what}: this report and the "
            f"published data are those of the attempt published before it.")


def build_nightly_report(paths: Paths, day: date, target: Path | None = None,
                         export: dict[str, Any] | None = None) -> Path:
    """Write reports/D/index.html (self-contained: inline CSS, PNG figures as data URIs) and return its path.

    `paths` may be a published generation (`pipelines.publish.PublishedPaths`: what the night's publish does): the
    lake tables are then the published ones, the run metrics the home's. `export`: the manifest of the CRM export
    published together with this report (publish passes it; otherwise the current attempt's runs/D/crm_export.json
    is read). `target` writes the file elsewhere (publish stages it beside the final one and swaps it in).
    Never fails on a missing input: each section says what it could not show. A section that raises on
    unexpected input is replaced by a note with the error (logged), so the rest of the report is still written."""
    status = night_status(paths, day.isoformat(), export=export)
    sections = build_sections(paths, day, status)
    banner = status.banner()
    later = later_attempt(paths, day, status)
    if later:
        banner = {**banner, "level": "warn" if banner["level"] == "ok" else banner["level"],
                  "lines": [later, *(banner.get("lines") or [])]}
    history = read_run_metrics(paths, "history", "conform") or {}
    if status.state == "not run" and history.get("as_of") == day.isoformat():
        banner = {"level": "warn", "title": f"The history load, as of {day.isoformat()}: no night has run for this "
                  f"date, so there are no forecasts or decisions to review yet.", "lines": []}
    failed = next((s for s in sections if s.get("key") == "checks" and s.get("checks")), None)
    bad = [c for c in (failed or {}).get("checks", []) if c["result"] == "FAIL"]
    if bad:
        lines = [f"Compliance check failed: {c['check']} ({c['violations']} violations; e.g. {c['examples']})"
                 for c in bad]
        banner = {"level": "fail", "title": banner["title"] if banner["level"] == "fail" else
                  f"{len(bad)} compliance check(s) FAILED on the night of {day.isoformat()}.",
                  "lines": lines + list(banner.get("lines") or [])}
    return render_report(f"Segment of One: nightly report for {day.isoformat()}", sections,
                         target or report_path(paths, day), banner=banner, contents=True,
                         subtitle="For risk and compliance review first, then for the data team. Customers appear "
                                  "only by pseudonymous id.")
