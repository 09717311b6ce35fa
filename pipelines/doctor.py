"""`segone doctor`: a pre-flight check of a data root before a night runs, and what `segone run` calls first.

Each check says ok, warn or fail with one line of detail. A failed check stops `segone run` before it ingests
anything; warnings are printed and the night goes on. Checks: the configuration (every YAML file parses, the action
catalogue, the table schemas and the landing contract validate), the data root (writable, free disk), the history
(silver snapshots exist), the promoted models (present, loadable by today's code), and, for a date D, the landing
folder (present, the required files there).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from typing import Callable

from pipelines.config import CONFIG_DIR, Paths, parse_yaml, settings
from pipelines.errors import SegoneError

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


class PreflightFailed(SegoneError):
    """At least one pre-flight check failed: the night would not get far."""


def _config_checks() -> list[Check]:
    import yaml

    out = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        try:
            parse_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            out.append(Check(f"config {path.name}", FAIL, f"does not parse: {str(error).splitlines()[0]}"))
    loaders: list[tuple[str, Callable[[], object]]] = [
        ("config actions.yaml (catalogue)", lambda: __import__("pipelines.actions", fromlist=["x"]).load_catalogue()),
        ("config tables.yaml (schemas)", lambda: __import__("pipelines.schemas", fromlist=["x"]).tables("gold")),
        ("config landing.yaml (contract)",
         lambda: __import__("pipelines.contract", fromlist=["x"]).landing_contract()),
    ]
    for name, load in loaders:
        try:
            load()
            out.append(Check(name, OK, "valid"))
        except Exception as error:  # any error here is a broken config file, reported as such
            out.append(Check(name, FAIL, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"))
    return out


def _home_checks(paths: Paths) -> list[Check]:
    cfg = settings()["doctor"]
    min_free, warn_free = float(cfg["min_free_gb"]), float(cfg["warn_free_gb"])
    home = paths.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".doctor-probe"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
        out = [Check("data root", OK, f"{home} is writable")]
    except OSError as error:
        return [Check("data root", FAIL, f"{home} is not writable: {error}")]
    free_gb = shutil.disk_usage(home).free / 1e9
    status = FAIL if free_gb < min_free else WARN if free_gb < warn_free else OK
    out.append(Check("free disk", status, f"{free_gb:,.1f} GB free under {home} (stops below {min_free:g} GB, "
                                          f"warns below {warn_free:g} GB)"))
    return out


def _history_check(paths: Paths) -> Check:
    missing = [t for t in ("customers", "accounts", "consent_state")
               if not any(paths.table("silver", t).glob("as_of=*/**/*.parquet"))]
    if missing:
        return Check("history", FAIL, f"silver {', '.join(missing)} has no snapshot: run `segone load-history` first")
    return Check("history", OK, "silver snapshots present")


def _model_checks(paths: Paths) -> list[Check]:
    from pipelines import registry

    out = []
    for family, module, loader in (("cash_forecast", "pipelines.forecast", "load_engine"),
                                   ("life_events", "pipelines.life_events", "load_model")):
        version = registry.promoted_version(paths, family)
        if version is None:
            out.append(Check(f"model {family}", FAIL, "no promoted model: run `segone train`"))
            continue
        try:
            getattr(__import__(module, fromlist=[loader]), loader)(paths)
            out.append(Check(f"model {family}", OK, f"promoted {version} loads"))
        except SegoneError as error:
            out.append(Check(f"model {family}", FAIL, str(error)))
    from pipelines import event_forecast

    for kind, family in event_forecast.FAMILY.items():   # optional: without one the night writes empty tables
        version = registry.promoted_version(paths, family)
        if version is None:
            out.append(Check(f"model {family}", WARN, "no promoted model (a history too short to train on, or "
                                                      "`segone train` not run): the night writes no rows for it"))
            continue
        try:
            event_forecast.load_engine(paths, kind)
            out.append(Check(f"model {family}", OK, f"promoted {version} loads"))
        except SegoneError as error:
            out.append(Check(f"model {family}", FAIL, str(error)))
    return out


def _landing_checks(paths: Paths, day: date) -> list[Check]:
    from pipelines.contract import classify_landing_file

    folder = paths.landing_day(day.isoformat())
    if not folder.is_dir():
        return [Check("landing", FAIL, f"no landing folder for {day}: {folder}")]
    kinds: dict[str, int] = {}
    for path in folder.iterdir():
        found = classify_landing_file(path) if path.is_file() else None
        if found:
            kinds[found[0]] = kinds.get(found[0], 0) + 1
    required = list(settings()["gates"]["required_files"])
    missing = [k for k in required if k not in kinds]
    if missing:
        return [Check("landing", FAIL, f"{folder}: required files missing: {', '.join(missing)}")]
    return [Check("landing", OK, f"{folder}: {sum(kinds.values())} files ({', '.join(sorted(kinds))})")]


def checks(paths: Paths, day: date | None = None) -> list[Check]:
    """Every check, in order; none raises."""
    out = _config_checks() + _home_checks(paths)
    out.append(_history_check(paths))
    out += _model_checks(paths)
    if day is not None:
        out += _landing_checks(paths, day)
    return out


def format_checks(found: list[Check]) -> str:
    width = max(len(c.name) for c in found)
    lines = [f"  {c.status.upper():<4}  {c.name:<{width}}  {c.detail}" for c in found]
    failed = sum(c.status == FAIL for c in found)
    warned = sum(c.status == WARN for c in found)
    lines.append(f"{len(found)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)


def preflight(paths: Paths, day: date | None = None) -> list[Check]:
    """The checks, raising PreflightFailed (one line per failed check) when any fails."""
    found = checks(paths, day)
    failed = [c for c in found if c.status == FAIL]
    if failed:
        raise PreflightFailed("pre-flight checks failed (`segone doctor` shows them all): "
                              + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return found


def doctor_command(paths: Paths, day: date | None = None) -> str:
    found = checks(paths, day)
    text = format_checks(found)
    if any(c.status == FAIL for c in found):
        print(text)
        raise PreflightFailed(f"{sum(c.status == FAIL for c in found)} of {len(found)} checks failed")
    return text
