"""`segone`: the command line. Every stage of the nightly DAG also runs alone from here for a date D."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any, Callable

from pipelines.config import Paths


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from err


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _sizes(text: str) -> str:
    """A comma-separated list of bank sizes, each a whole number of at least 1 (kept as text for the bench)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 10000,100000")
    for part in parts:
        _positive_int(part)
    return ",".join(parts)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segone")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def _call(target: str) -> Callable[..., Any]:
    """Import 'module:function' only when the command runs, so that `segone --help` stays fast."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _print(result: Any) -> None:
    if result is None:
        return
    if isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, indent=2, default=str))


# command -> (help, target, argument adder)
def _add_date(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", dest="day", type=_date, required=True, help="business date D (YYYY-MM-DD)")


def _add_optional_date(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", dest="day", type=_date, default=None,
                   help="train as of this date (default: the last day of data)")


def _add_simulate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customers", type=_positive_int, default=10_000, help="number of customers (default 10000)")
    p.add_argument("--days", type=_positive_int, default=180, help="days of history before D (default 180)")
    p.add_argument("--end-date", dest="end_date", type=_date, default=date(2026, 11, 20),
                   help="business date D of the last day (default 2026-11-20)")
    p.add_argument("--seed", type=_non_negative_int, default=42, help="random seed (default 42)")
    p.add_argument("--format", dest="fmt", choices=["csv", "csv.gz", "parquet"], default="csv",
                   help="format of the transaction and balance files (default csv)")


def _add_berka(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="folder with the Berka .asc files (e.g. ../shared/reference/berka)")
    p.add_argument("--no-night", dest="night", action="store_false",
                   help="write everything into landing/history/ (default: the last complete day becomes the "
                        "nightly folder landing/<day>/ and the history ends the day before)")
    p.add_argument("--consents", default="personalization,life_events",
                   help="consent purposes assumed granted for every customer, comma-separated (Berka has no consent "
                        "data; default personalization,life_events: docs/berka.md)")
    p.add_argument("--accounts", type=int, default=None,
                   help="only the first N current accounts (by id) with postings, and their holders (a small real "
                        "bank for tests)")


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["ingest", "forecast", "life-events", "decide", "messages", "publish",
                                    "publish-nights", "night", "features"],
                   help="which stage to benchmark (night: the whole night, `segone run`, on a tiled lake; features: "
                        "the feature store's night; publish-nights: one night's publish after --nights nights, "
                        "in CPU seconds and folders)")
    p.add_argument("--customers", type=_sizes, default="10000,100000",
                   help="comma-separated bank sizes (default 10000,100000)")
    p.add_argument("--days", type=_positive_int, default=None,
                   help="days of history (default 180; night: 365); for publish: nights published before (180)")
    p.add_argument("--base-customers", dest="base_customers", type=_positive_int, default=None,
                   help="night: customers of the simulated base bank the lake is tiled from (default 10000)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here as well")
    p.add_argument("--nights", type=_sizes, default="5,20,60",
                   help="publish-nights: comma-separated numbers of nights published before (default 5,20,60)")
    p.add_argument("--messages", type=_positive_int, default=1_000_000,
                   help="messages: how many messages go through the stage (default 1000000)")
    p.add_argument("--home", type=Path, default=None,
                   help="features: measure on this home (a COPY: the store is rewritten) instead of simulating")
    p.add_argument("--date", dest="day", type=_date, default=None,
                   help="features: the night D (default 2026-11-20; the home's silver must hold it)")
    p.add_argument("--lake-version", dest="lake_version", default=None,
                   help="night: reuse the cached base bank and tiled lake of this earlier version (the suffix of "
                        "their folders) instead of today's; the row records both versions (see benchmarks/README.md)")


def _add_backtest(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["forecast", "events", "life-events", "messages"], default="forecast",
                   help="what to backtest (default: the cash-shortfall forecast)")
    p.add_argument("--labelled", type=Path, default=None,
                   help="messages: a CSV with columns text,category to score the promoted intent model on")
    p.add_argument("--held-out", dest="held_out", action="store_true",
                   help="messages: measure the intent model's training procedure on repeated stratified held-out "
                        "splits of its training file (selection inside each training part; mean and sd)")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="messages --held-out: number of splits (default from config/messages.yaml, 5)")
    p.add_argument("--test-size", dest="test_size", type=float, default=None,
                   help="messages --held-out: share of the file held out per split (default 0.25)")
    p.add_argument("--dataset", default=None, help="name of the data set in the report (default: $SEGONE_HOME's name)")
    p.add_argument("--engines", default="global,baseline,prophet", help="engines to compare (default: all three)")
    p.add_argument("--output", type=Path, default=None,
                   help="folder of backtest.json and the report (default $SEGONE_HOME/reports/backtest)")
    p.add_argument("--prophet-customers", dest="prophet_customers", type=_positive_int, default=None,
                   help="customers per cut-off that Prophet forecasts (default from config/forecast.yaml)")
    p.add_argument("--cutoffs", type=_positive_int, default=None, help="number of test cut-offs (default from config)")


def _add_features(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["update", "rebuild"],
                   help="update: merge D's silver into the store's previous state; rebuild: compute it from silver")
    _add_date(p)


def _add_doctor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", dest="day", type=_date, default=None, help="also check the landing folder of D")


def _add_closed_loop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customers", type=_positive_int, default=3000, help="number of customers (default 3000)")
    p.add_argument("--nights", type=_positive_int, default=28, help="nights to run (default 28)")
    p.add_argument("--seed", type=_non_negative_int, default=42, help="random seed (default 42)")
    p.add_argument("--learning", choices=["on", "off"], default="on",
                   help="retrain the policy from the customers' answers (on) or keep the catalogue's priors (off)")
    p.add_argument("--days", type=_positive_int, default=240, help="days of history before the first night "
                                                                  "(default 240)")
    p.add_argument("--end-date", dest="end_date", type=_date, default=date(2026, 11, 20),
                   help="the first night (default 2026-11-20)")
    p.add_argument("--compare-with", dest="compare_with", type=Path, default=None,
                   help="another run on the same seed (learning on against off): its home, or its "
                        "reports/closed_loop/closed_loop.json (compared customer by customer when in its home)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes for the night's shards, as the DAG's mapped tasks (default: the cores, at most 2)")
    p.add_argument("--buckets", type=_positive_int, default=None,
                   help="customer buckets of the loop's lake (default: about closed_loop.customers_per_bucket "
                        "customers each, config/learning.yaml)")


def _add_closed_loop_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compare-with", dest="compare_with", type=Path, default=None,
                   help="another run on the same seed (learning on against off): its home, or its "
                        "reports/closed_loop/closed_loop.json (compared customer by customer when in its home)")


def _add_retrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", dest="day", type=_date, default=None,
                   help="retrain as of this date (default: the last day of data)")
    p.add_argument("--family", choices=["cash_forecast", "income_forecast", "expense_forecast", "life_events",
                                        "policy"], default=None,
                   help="one model family (default: all)")


def _add_nothing(p: argparse.ArgumentParser) -> None:
    return None


def _add_unlock(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--date", dest="day", type=_date, default=None, help="the night D whose lock to clear")
    which.add_argument("--history", action="store_true", help="the lock of the history load")
    p.add_argument("--force", action="store_true",
                   help="clear it even though its holder looks alive (only when you know it is gone)")


COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "simulate": ("simulate a bank into $SEGONE_HOME/landing/ (history and day D)",
                 "pipelines.sources.simulate:simulate_command", _add_simulate),
    "import-berka": ("turn the Berka data set into landing files: landing/history/ and its last day's night",
                     "pipelines.sources.berka:import_berka_command", _add_berka),
    "load-history": ("ingest, validate and conform landing/history/ into the lake",
                     "pipelines.stages:load_history_command", _add_nothing),
    "ingest": ("stage 1a: parse landing/D/ into bronze, quarantining bad rows",
               "pipelines.stages:ingest", _add_date),
    "validate": ("stage 1b: Great Expectations suites and gates on D's bronze",
                 "pipelines.stages:validate", _add_date),
    "conform": ("stage 2: bronze into conformed, consent-aware, sharded silver for D",
                "pipelines.stages:conform", _add_date),
    "validate-silver": ("stage 2b: Great Expectations suites on D's silver",
                        "pipelines.stages:validate_silver", _add_date),
    "features": ("stage 3: the feature store (lake/features/) as of D: `features update` (the night's way) or "
                 "`features rebuild` (from silver alone, e.g. after a re-run of an older night)",
                 "pipelines.stages:features_command", _add_features),
    "validate-features": ("stage 3b: the feature store of D complete in every shard, keys and not-null columns",
                          "pipelines.stages:validate_features", _add_date),
    "train": ("train the global cash-shortfall, income-drop and large-expense engines (and the life-event and "
              "message models) on a rolling window; promote each if it is no worse",
              "pipelines.stages:train", _add_optional_date),
    "forecast": ("stage 4: cash-shortfall forecast for D, every shard in turn, with the promoted model",
                 "pipelines.stages:forecast_cash_shortfall", _add_date),
    "validate-forecast": ("stage 4b: Great Expectations suites on D's cash_forecast",
                          "pipelines.stages:validate_forecast", _add_date),
    "classify-life-events": ("stage 5: life events for D, every shard in turn (consented customers only)",
                             "pipelines.stages:classify_life_events", _add_date),
    "validate-life-events": ("stage 5b: Great Expectations suite on D's life_events",
                             "pipelines.stages:validate_life_events", _add_date),
    "profile-customers": ("stage 3c: app usage, push fatigue and income roles for D, every shard in turn "
                          "(personalization-consented customers only)",
                          "pipelines.stages:profile_customers", _add_date),
    "validate-profiles": ("stage 3c': Great Expectations suites on D's app_usage, app_signals and customer_roles",
                          "pipelines.stages:validate_profiles", _add_date),
    "plans": ("stage 4c: plans that can run themselves for D, every shard in turn, held within the forecast's P10 path",
              "pipelines.stages:make_plans", _add_date),
    "validate-plans": ("stage 4c': Great Expectations suite on D's plans and the safety rule on every plan row",
                       "pipelines.stages:validate_plans", _add_date),
    "decide": ("stage 6: next best actions for D, every shard in turn (funnel, bandit, control group)",
               "pipelines.stages:decide_next_best_actions", _add_date),
    "validate-decisions": ("stage 6b: Great Expectations suites on D's decisions",
                           "pipelines.stages:validate_decisions", _add_date),
    "backtest": ("time-based backtest of the forecast engines (or `backtest life-events`): JSON and HTML report",
                 "pipelines.evaluation.backtest:backtest_command", _add_backtest),
    "publish": ("stage 7: warehouse.duckdb views, the CRM export (only if every gate passed) and the report",
                "pipelines.stages:publish", _add_date),
    "export-crm": ("the CRM export of a published night D again, from what was published",
                   "pipelines.stages:export_crm", _add_date),
    "report": ("the nightly HTML report of a published night D again: reports/D/index.html",
               "pipelines.stages:report", _add_date),
    "run": ("the whole night for D, stage after stage (what the DAG does, without Airflow)",
            "pipelines.stages:run_command", _add_date),
    "unlock": ("list the night locks, or clear the lock a dead run left (--date D or --history; see docs)",
               "pipelines.locks:unlock_command", _add_unlock),
    "summary": ("print where D's outputs are, a short summary and an example query",
                "pipelines.stages:summary", _add_date),
    "expectations": ("regenerate expectations/*.json and docs/data_dictionary.md from config/landing.yaml and "
                     "config/tables.yaml",
                     "pipelines.quality:write_suites_command", _add_nothing),
    "measure-value": ("value, not clicks: D's outcomes, the recommendations' realised value, value per customer "
                      "for treated and control", "pipelines.stages:measure_value", _add_date),
    "retrain": ("retrain_models: forecaster, life-event classifiers and policy, each against its champion; "
                "decisions in gold model_registry", "pipelines.retrain:retrain_command", _add_retrain),
    "closed-loop": ("simulate a bank, then night after night: the night, the customers' answers, the next day; "
                    "retrain weekly; reports/closed_loop/", "pipelines.evaluation.closed_loop:closed_loop_command",
                    _add_closed_loop),
    "closed-loop-report": ("rebuild this home's closed-loop JSON and page from the lake, optionally compared with "
                           "another run (learning on against off)", "pipelines.evaluation.closed_loop:report_command",
                           _add_closed_loop_report),
    "doctor": ("pre-flight checks: config, data root and disk, history, promoted models, and D's landing with --date",
               "pipelines.doctor:doctor_command", _add_doctor),
    "bench": ("benchmarks side by side with plain pandas (see benchmarks/)",
              "pipelines.evaluation.bench:bench_command", _add_bench),
}


# Commands that write a night's data or outputs: they run under the lock of that night (pipelines/locks.py), so
# that two runs of one night, or a run and the night's Airflow DAG run, never overlap.
LOCKED = {"ingest", "validate", "conform", "validate-silver", "forecast", "validate-forecast",
          "classify-life-events", "validate-life-events", "profile-customers", "validate-profiles", "decide",
          "validate-decisions", "publish", "export-crm", "report", "run", "load-history"}


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so that locks are released and staging is cleaned


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segone",
        description="Segment of One: nightly per-customer analytics for a retail bank. "
                    "Data root: $SEGONE_HOME (default var/ in the repository).",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at DEBUG level and show the traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=f"segone {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, target, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(target=target)
    return parser


# Commands about a night D that only read: they leave no trace in runs/D/.
QUIET_COMMANDS = {"summary", "doctor"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.logs import night_log_handler, quiet_great_expectations

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_great_expectations()
    kwargs = {k: v for k, v in vars(args).items() if k not in {"command", "target", "verbose"}}
    paths = Paths.from_env()
    day = kwargs.get("day")
    handler = night_log_handler(paths.runs / day.isoformat(), args.command) \
        if day is not None and args.command not in QUIET_COMMANDS else None
    if handler is not None:
        logging.getLogger().addHandler(handler)
    try:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave the handler alone
        pass
    settings_before = os.environ.get("SEGONE_SETTINGS")
    try:
        if args.command != "closed-loop":
            from pipelines.evaluation.closed_loop import adopt_home_settings
            adopt_home_settings(paths)
        if args.command in LOCKED:
            from pipelines import locks

            key = "history" if args.command == "load-history" else args.day.isoformat()
            with locks.Hold(paths, key, locks.cli_holder(args.command), "main"):
                result = _call(args.target)(paths=paths, **kwargs)
        else:
            result = _call(args.target)(paths=paths, **kwargs)
        _print(result)
    except KeyboardInterrupt:
        print(f"segone {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the CLI's last line of defence: a clear message and a non-zero exit
        from pipelines.errors import SegoneError
        if isinstance(err, SegoneError):
            _to_run_log(handler, str(err))
            print(f"segone {args.command}: {err}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        _to_run_log(handler, f"unexpected error {type(err).__name__}: {err}", exc_info=sys.exc_info())
        trace = _save_traceback(paths, args.command)
        where = f"; the traceback is in {trace}" if trace else ""
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"segone {args.command}: unexpected error {type(err).__name__}: {first}{where} "
              f"(run with -v to see it here)", file=sys.stderr)
        return 1
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if settings_before is None:  # a home's adopted settings end with the command (embedded use, tests)
            os.environ.pop("SEGONE_SETTINGS", None)
        else:
            os.environ["SEGONE_SETTINGS"] = settings_before
    return 0


def _to_run_log(handler: logging.Handler | None, message: str, exc_info=None) -> None:
    """An error that ends the command, into the night's structured log only (stderr gets its own one line)."""
    if handler is not None:
        handler.handle(logging.LogRecord("pipelines.cli", logging.ERROR, __file__, 0, message, None, exc_info))


def _save_traceback(paths: Paths, command: str) -> Path | None:
    import time
    import traceback

    try:
        folder = paths.home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"segone-{command}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
        path.write_text(traceback.format_exc(), encoding="utf-8")
        return path
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
