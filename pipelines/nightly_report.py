"""The nightly report: `$SEGONE_HOME/reports/D/index.html`, one self-contained HTML file with plots (DESIGN section 7).

Sections (SECTION_HEADINGS): the night at a glance; volumes (rows per landing kind, runs/D/ingest.json); data
quality (the gold quarantine of D by stage, file and reason, and the gates of runs/D/validate.json); forecast
calibration (the distribution of p_shortfall per horizon from gold cash_forecast; realised against predicted for
earlier nights' forecasts whose horizon has ended by D, else the latest backtest's calibration from
reports/backtest/); life-event rates (gold life_events); the action mix (gold next_best_actions); staffed channels
(capacity against demand, runs/D/decide.json); the suppression funnel (gold decision_log); fairness across age bands and regions (silver customers with the two gold tables).

Every section works when its input is absent: it says what is missing instead of failing, and a section that
fails on unexpected input says so with the error, so a report is always written. All aggregation happens in DuckDB,
so the report reads a million customers' tables without loading them into pandas.
"""
from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines import lake
from pipelines.config import Paths, settings
from pipelines.html_report import bar_figure, calibration_figure, render_report
from pipelines.runs import read_run_metrics

log = logging.getLogger(__name__)

SECTION_HEADINGS = {
    "summary": "The night at a glance",
    "volumes": "Volumes",
    "quality": "Data quality: quarantine and gates",
    "calibration": "Forecast calibration",
    "life_events": "Life-event rates",
    "action_mix": "Action mix",
    "staffed": "Staffed channels: capacity and demand",
    "funnel": "Suppression funnel",
    "fairness": "Fairness across age bands and regions",
}
FUNNEL_STAGES = ["eligibility", "applicability", "suitability", "consent", "contact_policy", "control_group",
                 "arbitration", "capacity"]
ACTION_CLASSES = ["protective", "service", "commercial"]
AGE_BANDS = [(18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"), (45, 54, "45-54"), (55, 64, "55-64"),
             (65, None, "65+")]
DEFAULT_CREDIT_ACTIONS = ("credit_card", "personal_loan", "overdraft_increase", "mortgage")
DEFAULTS = {"gap_ratio_high": 1.25, "gap_ratio_low": 0.8, "min_group_customers": 30, "realised_calibration": True}


def report_settings() -> dict[str, Any]:
    """DEFAULTS, overridden by `nightly_report:` in config/segone.yaml when it is there."""
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


def _partitions(paths: Paths, layer: str, table: str, key: str = "as_of") -> list[str]:
    root = paths.table(layer, table)
    if not root.exists():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(f"{key}=") and any(p.rglob("*.parquet")))


def _latest_snapshot(paths: Paths, table: str, day: date) -> str | None:
    """The scan of a silver snapshot table at the latest as_of on or before D."""
    dates = [d for d in _partitions(paths, "silver", table) if d <= day.isoformat()]
    return _scan(paths, "silver", table, as_of=dates[-1]) if dates else None


def _df(con, query: str) -> pd.DataFrame:
    return con.execute(query).df()


def _figure(title: str, figsize: tuple[float, float] = (7.0, 4.5)) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _absent(what: str) -> str:
    return f"Not shown: {what}."


# --- sections -------------------------------------------------------------------------------------------------

def _summary(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    d = day.isoformat()
    lines = []
    validate = read_run_metrics(paths, d, "validate")
    if validate is None:
        lines.append("Landing gates: no runs/D/validate.json (the validate stage has not run for this date).")
    else:
        gates = validate.get("gates", [])
        lines.append(f"Landing gates: {'PASSED' if validate.get('passed') else 'FAILED'} "
                     f"({sum(bool(g.get('passed')) for g in gates)} of {len(gates)} gates passed).")
    for stage in ("validate_silver", "validate_forecast", "validate_decisions"):
        metrics = read_run_metrics(paths, d, stage)
        if metrics is not None:
            verdict = metrics.get("passed", (metrics.get("validation") or {}).get("passed"))
            lines.append(f"{stage}: {'passed' if verdict else 'FAILED' if verdict is False else 'ran'}.")
    export = read_run_metrics(paths, d, "crm_export")
    lines.append(f"CRM export: {export['rows']:,} rows in {len(export['files'])} file(s), run {export['run_id']}."
                 if export else "CRM export: not written for this date (yet).")
    counts = []
    for table in ("cash_forecast", "life_events", "next_best_actions", "decision_log", "advisor_queue"):
        scan = _scan(paths, "gold", table, as_of=d)
        if scan is None:
            counts.append({"gold table": table, "rows": None, "customers": None, "status": "absent"})
        else:
            rows, customers = con.execute(f"select count(*), count(distinct customer_id) from {scan}").fetchone()
            counts.append({"gold table": table, "rows": rows, "customers": customers, "status": "present"})
    table = pd.DataFrame(counts).astype({"rows": "Int64", "customers": "Int64"})
    return [{"heading": SECTION_HEADINGS["summary"], "text": f"Business date {d}.\n\n" + "\n\n".join(lines),
             "table": table}]


def _volumes(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    ingest = read_run_metrics(paths, day.isoformat(), "ingest")
    if not ingest or not ingest.get("kinds"):
        return [{"heading": SECTION_HEADINGS["volumes"],
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
        fig = bar_figure(kinds.assign(rows_accepted=kinds["rows_accepted"].astype(float)), "kind", "rows_accepted",
                         None, "Rows accepted per landing kind (log scale)")
        fig.axes[0].set_yscale("symlog")
        figures.append(fig)
    missing = ingest.get("missing_kinds") or []
    text = "Rows per landing kind as the ingest read them." + (
        f"\n\nMissing landing kinds: {', '.join(missing)}." if missing else "")
    return [{"heading": SECTION_HEADINGS["volumes"], "text": text, "table": table, "figures": figures}]


def _quality(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    d = day.isoformat()
    sections = []
    scan = _scan(paths, "gold", "quarantine", load_date=d)
    if scan is None:
        quarantine = {"heading": SECTION_HEADINGS["quality"],
                      "text": "Quarantine: no gold quarantine partition for this date (nothing was quarantined, "
                              "or the ingest has not run)."}
    else:
        by_reason = _df(con, f"""
            select coalesce(stage, '') as stage, coalesce(file, '') as file, coalesce(column_name, '') as column_name,
                   reason, count(*) as rows
            from {scan} group by all order by rows desc, stage, file, column_name, reason limit 30""")
        total = con.execute(f"select count(*) from {scan}").fetchone()[0]
        quarantine = {"heading": SECTION_HEADINGS["quality"],
                      "text": f"Quarantine: {total:,} rows or files quarantined for this date; the 30 most frequent "
                              f"(stage, file, column, reason) below.", "table": by_reason}
        per_reason = _df(con, f"select reason, count(*) as rows from {scan} group by all order by rows desc limit 12")
        if not per_reason.empty:
            per_reason["reason"] = per_reason["reason"].astype(str).str.slice(0, 40)
            per_reason = per_reason.groupby("reason", as_index=False, sort=False)["rows"].sum()
            quarantine["figures"] = [bar_figure(per_reason, "reason", "rows", None, "Quarantined rows by reason")]
    sections.append(quarantine)
    validate = read_run_metrics(paths, d, "validate")
    if validate is None:
        sections.append({"heading": "Gates", "text": _absent("runs/D/validate.json is absent: no gate ran")})
    else:
        gates = pd.DataFrame([{"gate": g.get("name"), "passed": bool(g.get("passed")), "value": g.get("value"),
                               "threshold": json.dumps(g.get("threshold")), "message": g.get("message")}
                              for g in validate.get("gates", [])])
        suites = validate.get("suites") or {}
        failed_suites = [t for t, s in suites.items() if not s.get("success")]
        text = (f"Overall: {'PASSED' if validate.get('passed') else 'FAILED'}. Expectation suites: {len(suites)} "
                f"run, {len(failed_suites)} failed" + (f" ({', '.join(failed_suites)})" if failed_suites else "") + ".")
        sections.append({"heading": "Gates", "text": text, "table": gates if not gates.empty else None})
    return sections


def _histogram(con, scan: str) -> tuple[Figure, pd.DataFrame]:
    bins = _df(con, f"""
        select horizon_days, least(floor(p_shortfall * 20), 19)::integer as b, count(*) as n
        from {scan} where p_shortfall is not null group by all order by all""")
    fig, ax = _figure("Distribution of p_shortfall per horizon")
    edges = np.linspace(0, 1, 21)
    for horizon, part in bins.groupby("horizon_days"):
        counts = np.zeros(20)
        counts[part["b"].to_numpy(int)] = part["n"].to_numpy(float)
        share = counts / max(counts.sum(), 1)
        ax.step(edges, np.r_[share, share[-1]], where="post", label=f"{int(horizon)} days")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p_shortfall (bins of 0.05)")
    ax.set_ylabel("share of customers")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig, bins


def _realised(paths: Paths, day: date, con) -> tuple[dict[str, pd.DataFrame], str] | None:
    """Realised against predicted: for each horizon, the latest earlier forecast night P with P + horizon <= D,
    scored on what the silver balances show happened in (P, P + horizon]. None when no earlier night qualifies."""
    from models.metrics import calibration_table
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
    panel = forecast.build_panel(paths, day, cutoffs, with_labels=True, series_until=day)
    labels = panel.labels
    tables: dict[str, pd.DataFrame] = {}
    notes = []
    for horizon, night in sorted(chosen.items()):
        night_scan = _scan(paths, "gold", "cash_forecast", as_of=night)
        predicted = _df(con, f"select customer_id, p_shortfall from {night_scan} where horizon_days = {horizon}")
        truth = labels[(labels["horizon_days"] == horizon) & (labels["cutoff"] == pd.Timestamp(night))]
        joined = predicted.merge(truth[["customer_id", "is_shortfall"]], on="customer_id").dropna()
        if joined.empty:
            continue
        table = calibration_table(joined["is_shortfall"].astype(int), joined["p_shortfall"])
        tables[f"{horizon} days (forecast of {night})"] = table
        notes.append(f"{horizon} days: forecast of {night}, {len(joined):,} customers, realised shortfall rate "
                     f"{joined['is_shortfall'].mean():.3f} against a mean predicted {joined['p_shortfall'].mean():.3f}")
    if not tables:
        return None
    return tables, ("Realised against predicted, from earlier nights whose horizon has ended by D: "
                    + "; ".join(notes) + ".")


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
    scan = _scan(paths, "gold", "cash_forecast", as_of=day.isoformat())
    sections = []
    if scan is None:
        sections.append({"heading": heading, "text": _absent("gold cash_forecast has no partition for this date")})
    else:
        summary = _df(con, f"""
            select horizon_days, count(*) as customers, avg(p_shortfall) as mean_p_shortfall,
                   quantile_cont(p_shortfall, 0.5) as median_p_shortfall,
                   avg((p_shortfall >= 0.3)::int) as share_p_at_least_0_3,
                   avg((p_shortfall >= 0.5)::int) as share_p_at_least_0_5,
                   count(expected_shortfall_date) as with_expected_date
            from {scan} group by all order by horizon_days""")
        models = [r[0] for r in con.execute(f"select distinct model_version from {scan} order by 1").fetchall()]
        fig, _ = _histogram(con, scan)
        sections.append({"heading": heading,
                         "text": f"Tonight's forecast (model {', '.join(map(str, models))}): the distribution of the "
                                 f"shortfall probability per horizon.", "table": summary, "figures": [fig]})
    realised = None
    if cfg.get("realised_calibration", True):
        try:
            realised = _realised(paths, day, con)
        except Exception as error:  # noqa: BLE001 - the fallback below still says something useful
            log.warning("realised calibration for %s failed: %s", day, error)
            realised = None
    if realised is not None:
        tables, text = realised
        table = pd.concat([t.assign(horizon=label) for label, t in tables.items()], ignore_index=True)
        sections.append({"heading": "Forecast calibration: realised against predicted", "text": text,
                         "table": table, "figures": [calibration_figure(tables, "Realised against predicted")]})
        return sections
    backtest = _backtest(paths)
    if backtest is None:
        sections.append({"heading": "Forecast calibration: realised against predicted",
                         "text": "No earlier night's forecast has a horizon that ended by this date, and no backtest "
                                 "has been run (reports/backtest/backtest.json is absent): realised calibration cannot "
                                 "be shown yet. Run `segone backtest` for one."})
    else:
        sections.append({"heading": "Forecast calibration: realised against predicted",
                         "text": "No earlier night's forecast has a horizon that ended by this date, so this is the "
                                 "latest backtest's calibration instead (reports/backtest/backtest.json): the engines "
                                 "scored on held-out cut-offs.", **backtest})
    return sections


def _life_events(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["life_events"]
    scan = _scan(paths, "gold", "life_events", as_of=day.isoformat())
    if scan is None:
        return [{"heading": heading, "text": _absent("the gold life_events table has no partition for this date "
                                                     "(the life-events stage has not run)")}]
    table = _df(con, f"""
        select event_type, count(distinct customer_id) as customers, count(*) filter (where flagged) as flagged,
               avg(flagged::int) as flagged_rate, avg(probability) as mean_probability,
               string_agg(distinct model_version, ', ' order by model_version) as published_by
        from {scan} group by all order by event_type""")
    figures = [bar_figure(table, "event_type", "flagged_rate", None, "Flagged rate per life event")] \
        if not table.empty else []
    return [{"heading": heading, "text": "Share of scored customers flagged per event type tonight. published_by: "
                                         "the model version, or rule:<event>:v<N> where the event's hand-written "
                                         "rule flags (no model yet, or the model did worse than the rule on held-out "
                                         "cut-offs: no probability, so mean_probability is empty).",
             "table": table, "figures": figures}]


def _action_mix(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["action_mix"]
    scan = _scan(paths, "gold", "next_best_actions", as_of=day.isoformat())
    if scan is None:
        return [{"heading": heading, "text": _absent("gold next_best_actions has no partition for this date")}]
    by_class_channel = _df(con, f"""
        select action_class, channel, count(*) as recommendations from {scan} group by action_class, channel
        order by array_position({ACTION_CLASSES}, action_class), channel""")
    by_action = _df(con, f"""
        select action_class, action_id, count(*) as recommendations, count(distinct customer_id) as customers,
               avg(is_exploration::int) as exploration_share, avg(rank) as mean_rank
        from {scan} group by action_class, action_id
        order by array_position({ACTION_CLASSES}, action_class), recommendations desc, action_id""")
    totals = con.execute(f"""select count(*), count(distinct customer_id),
        count(distinct customer_id) filter (where is_control), avg(is_exploration::int) from {scan}""").fetchone()
    figures = []
    if not by_class_channel.empty:
        figures.append(bar_figure(by_class_channel, "channel", "recommendations", "action_class",
                                  "Recommendations by channel and action class"))
    text = (f"{totals[0]:,} recommendations for {totals[1]:,} customers; control group: {totals[2]:,} customers; "
            f"exploration share: {(totals[3] or 0):.3f}.")
    return [{"heading": heading, "text": text, "table": by_class_channel, "figures": figures},
            {"heading": "Action mix by action", "table": by_action}]


def _staffed(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    """Per staffed channel (and the advisor queue): the night's capacity against the customers who needed it
    (runs/D/decide.json, summed over the shards): served, sent by a digital channel instead, not sent."""
    heading = SECTION_HEADINGS["staffed"]
    metrics = read_run_metrics(paths, day.isoformat(), "decide")
    capacity = (metrics or {}).get("capacity")
    if not capacity:
        return [{"heading": heading, "text": _absent("runs/D/decide.json has no capacity figures (the decide stage "
                                                     "has not run for this date, or ran before capacities existed)")}]
    rows = []
    for name, figures in sorted(capacity.items(), key=lambda item: (item[0] == "advisor_queue", item[0])):
        limit = int(figures.get("night_capacity", figures.get("capacity", 0)))
        demand = int(figures.get("demand", 0))
        served = int(figures.get("served", 0))
        rows.append({"channel": name, "capacity": limit, "demand": demand, "served": served,
                     "over_capacity": int(figures.get("over_capacity", max(demand - served, 0))),
                     "sent_digitally": figures.get("sent_digitally"), "not_sent": figures.get("not_sent"),
                     "demand_to_capacity": round(demand / limit, 2) if limit else None,
                     "utilisation": round(served / limit, 3) if limit else None})
    table = pd.DataFrame(rows)
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
    return [{"heading": heading, "text": text, "table": table, "figures": figures}]


def _funnel(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["funnel"]
    scan = _scan(paths, "gold", "decision_log", as_of=day.isoformat())
    if scan is None:
        return [{"heading": heading, "text": _absent("the gold decision_log table has no partition for this date")}]
    nba = _scan(paths, "gold", "next_best_actions", as_of=day.isoformat())
    moved = 0
    if nba is not None:
        # rows at stage capacity of an action still published (on a digital channel): a channel given up, no drop
        moved = con.execute(f"select count(*) from {scan} as d semi join {nba} as n using (customer_id, action_id)"
                            ).fetchone()[0]
        scan = f"(select * from {scan} as d anti join {nba} as n using (customer_id, action_id))"
    per = _df(con, f"select stage, action_class, count(*) as dropped from {scan} group by all")
    wide = per.pivot_table(index="stage", columns="action_class", values="dropped", aggfunc="sum", fill_value=0)
    order = [s for s in FUNNEL_STAGES if s in wide.index] + sorted(set(wide.index) - set(FUNNEL_STAGES))
    wide = wide.reindex(index=order, columns=[c for c in ACTION_CLASSES if c in wide.columns]
                        + sorted(set(wide.columns) - set(ACTION_CLASSES)), fill_value=0)
    wide["all classes"] = wide.sum(axis=1)
    table = wide.reset_index().rename(columns={"stage": "stage dropping the candidate"})
    published = None
    if nba is not None:
        published = con.execute(f"select count(*) from {nba}").fetchone()[0]
    total = int(wide["all classes"].sum())
    text = (f"{total:,} candidate actions dropped, each counted at the first stage that dropped it"
            + (f"; {published:,} published as next best actions." if published is not None else ".")
            + (f" Not counted here: {moved:,} published actions that gave up a staffed channel to tonight's "
               f"capacity (decision_log stage capacity, see the staffed channels section)." if moved else "")
            + "\n\nTop reasons per stage are below the chart.")
    long = per.copy()
    long["stage"] = pd.Categorical(long["stage"], categories=order, ordered=True)
    long = long.sort_values(["stage", "action_class"])
    long["stage"] = long["stage"].astype(str)
    figures = [bar_figure(long, "stage", "dropped", "action_class", "Candidates dropped per funnel stage")] \
        if not long.empty else []
    reasons = _df(con, f"""
        select stage, reason, dropped from (
            select stage, reason, count(*) as dropped from {scan} group by stage, reason)
        qualify row_number() over (partition by stage order by dropped desc, reason) <= 3
        order by array_position({FUNNEL_STAGES}, stage), dropped desc, reason""")
    return [{"heading": heading, "text": text, "table": table, "figures": figures},
            {"heading": "Suppression funnel: top reasons per stage", "table": reasons}]


def credit_actions() -> list[str]:
    """The catalogue's credit and lending actions (is_credit: true)."""
    try:
        from pipelines.actions import load_catalogue

        found = [a.id for a in load_catalogue() if getattr(a, "is_credit", False)]
        return found or list(DEFAULT_CREDIT_ACTIONS)
    except Exception:  # noqa: BLE001 - the report must not fail on the catalogue
        return list(DEFAULT_CREDIT_ACTIONS)


def age_band_sql(day: date) -> str:
    cases = " ".join(f"when {day.year} - birth_year between {lo} and {hi} then '{label}'" if hi is not None
                     else f"when {day.year} - birth_year >= {lo} then '{label}'" for lo, hi, label in AGE_BANDS)
    return f"case when birth_year is null then 'unknown' {cases} else 'under 18' end"


def fairness_table(paths: Paths, day: date, con=None, high: float | None = None, low: float | None = None,
                   min_customers: int | None = None) -> tuple[pd.DataFrame, list[str]] | None:
    """Offer rate (commercial recommendations per customer) and credit suppression rate (suitability drops of
    credit actions per customer) per age band and region, each against the overall rate, with the gaps flagged.

    A group is flagged when it has at least min_customers customers and its rate is above high x or below low x
    the overall rate. The population is silver customers at the latest snapshot on or before D. Returns (table,
    notes), or None when there are no customers."""
    cfg = report_settings()
    high = float(high if high is not None else cfg["gap_ratio_high"])
    low = float(low if low is not None else cfg["gap_ratio_low"])
    min_customers = int(min_customers if min_customers is not None else cfg["min_group_customers"])
    own = con is None
    con = con or lake.connect()
    try:
        customers = _latest_snapshot(paths, "customers", day)
        if customers is None:
            return None
        d = day.isoformat()
        nba = _scan(paths, "gold", "next_best_actions", as_of=d)
        dlog = _scan(paths, "gold", "decision_log", as_of=d)
        notes = []
        offers = (f"(select customer_id, count(*) filter (where action_class = 'commercial') as n from {nba} "
                  f"group by all)") if nba else None
        credit = ", ".join("'" + a.replace("'", "''") + "'" for a in credit_actions())
        supp = (f"(select customer_id, count(*) as n from {dlog} where stage = 'suitability' and "
                f"action_id in ({credit}) group by all)") if dlog else None
        if offers is None:
            notes.append("Offer rate not shown: gold next_best_actions has no partition for this date.")
        if supp is None:
            notes.append("Credit suppression rate not shown: gold decision_log has no partition for this date.")
        per_customer = f"""
            select c.customer_id, {age_band_sql(day)} as age_band, coalesce(cast(c.region as varchar), 'unknown')
                       as region,
                   {'coalesce(o.n, 0)' if offers else 'null'}::double as offers,
                   {'coalesce(s.n, 0)' if supp else 'null'}::double as credit_suppressions
            from {customers} c
            {f'left join {offers} o using (customer_id)' if offers else ''}
            {f'left join {supp} s using (customer_id)' if supp else ''}"""
        grouped = _df(con, f"""
            with pc as ({per_customer})
            select 'age band' as dimension, age_band as group_name, count(*) as customers,
                   avg(offers) as offer_rate, avg(credit_suppressions) as credit_suppression_rate from pc group by all
            union all
            select 'region', region, count(*), avg(offers), avg(credit_suppressions) from pc group by all
            union all
            select 'overall', 'all customers', count(*), avg(offers), avg(credit_suppressions) from pc""")
    finally:
        if own:
            con.close()
    if grouped.empty or int(grouped.loc[grouped["dimension"] == "overall", "customers"].iloc[0]) == 0:
        return None
    band_order = {label: i for i, (_, _, label) in enumerate(AGE_BANDS)} | {"under 18": -1, "unknown": 99}
    grouped["_order"] = [(0 if dim == "overall" else 1 if dim == "age band" else 2,
                          band_order.get(g, 0) if dim == "age band" else 0, g)
                         for dim, g in zip(grouped["dimension"], grouped["group_name"])]
    grouped = grouped.sort_values("_order").drop(columns="_order").reset_index(drop=True)
    overall = grouped[grouped["dimension"] == "overall"].iloc[0]
    flagged = []
    for metric in ("offer_rate", "credit_suppression_rate"):
        base = overall[metric]
        ratio = grouped[metric] / base if base and not pd.isna(base) and base > 0 else pd.Series(np.nan,
                                                                                                  index=grouped.index)
        grouped[f"{metric}_ratio"] = ratio
        flags = []
        for i, row in grouped.iterrows():
            r = ratio.iloc[i]
            if row["dimension"] == "overall" or pd.isna(row[metric]):
                flags.append("")
            elif row["customers"] < min_customers:
                flags.append(f"too few (<{min_customers})")
            elif pd.isna(r):
                flags.append("")
            elif r > high or r < low:
                flags.append(f"GAP ({'above' if r > high else 'below'})")
                flagged.append(f"{metric.replace('_', ' ')} of {row['dimension']} {row['group_name']} is "
                               f"{row[metric]:.3f}, {r:.2f}x the overall {base:.3f} ({int(row['customers'])} "
                               f"customers)")
            else:
                flags.append("")
        grouped[f"{metric}_flag"] = flags
    notes.insert(0, f"A group is flagged when it has at least {min_customers} customers and its rate is above "
                    f"{high}x or below {low}x the overall rate. Age is the business year minus the birth year.")
    notes.append("Gaps flagged: " + ("; ".join(flagged) + "." if flagged else "none."))
    columns = ["dimension", "group_name", "customers", "offer_rate", "offer_rate_ratio", "offer_rate_flag",
               "credit_suppression_rate", "credit_suppression_rate_ratio", "credit_suppression_rate_flag"]
    return grouped[columns], notes


def _fairness(paths: Paths, day: date, con) -> list[dict[str, Any]]:
    heading = SECTION_HEADINGS["fairness"]
    result = fairness_table(paths, day, con)
    if result is None:
        return [{"heading": heading, "text": _absent("silver customers has no snapshot on or before this date")}]
    table, notes = result
    figures = []
    for dimension in ("age band", "region"):
        part = table[table["dimension"] == dimension]
        pieces = [pd.DataFrame({"group": part["group_name"], "metric": m, "rate": part[m]})
                  for m in ("offer_rate", "credit_suppression_rate") if part[m].notna().any()]
        long = pd.concat(pieces) if pieces else pd.DataFrame()   # no decisions yet (a history load): no plot
        if not long.empty and len(part) <= 40:
            figures.append(bar_figure(long, "group", "rate", "metric", f"Rates per customer by {dimension}"))
    return [{"heading": heading, "text": "Offer rate: commercial recommendations per customer. Credit suppression "
                                         "rate: credit or lending actions dropped by the suitability rules per "
                                         "customer.\n\n" + "\n\n".join(notes), "table": table, "figures": figures}]


SECTIONS: list[tuple[str, Callable[..., list[dict[str, Any]]]]] = [
    ("summary", _summary), ("volumes", _volumes), ("quality", _quality), ("calibration", _calibration),
    ("life_events", _life_events), ("action_mix", _action_mix), ("staffed", _staffed), ("funnel", _funnel),
    ("fairness", _fairness)]


def report_path(paths: Paths, day: date) -> Path:
    return paths.reports / day.isoformat() / "index.html"


def build_nightly_report(paths: Paths, day: date, target: Path | None = None) -> Path:
    """Write reports/D/index.html (self-contained: inline CSS, PNG figures as data URIs) and return its path.

    `paths` may be a published generation (`pipelines.publish.PublishedPaths`: what the night's publish does);
    `target` writes the file elsewhere (publish stages it beside the final one and swaps it in).

    Never fails on a missing input: each section says what it could not show. A section that raises on
    unexpected input is replaced by a note with the error (logged), so the rest of the report is still written."""
    con = lake.connect(threads=2)
    sections: list[dict[str, Any]] = []
    try:
        for key, build in SECTIONS:
            try:
                sections += build(paths, day, con)
            except Exception as error:  # noqa: BLE001 - one broken section must not lose the report
                log.exception("nightly report section %s failed", key)
                sections.append({"heading": SECTION_HEADINGS[key],
                                 "text": f"This section could not be built: {type(error).__name__}: {error}"})
    finally:
        con.close()
    target = target or report_path(paths, day)
    return render_report(f"Segment of One: nightly report for {day.isoformat()}", sections, target)
