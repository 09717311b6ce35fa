"""The CLI lists every command, has --help on each, and turns a user's mistake into a clear message."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.cli import COMMANDS, build_parser, main


def test_help_lists_the_readme_commands():
    text = build_parser().format_help()
    for command in ("simulate", "load-history", "run", "bench", "ingest", "validate", "conform", "publish",
                    "import-berka", "summary"):
        assert command in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: segone" in capsys.readouterr().out


def test_a_bad_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--date", "20-11-2026"])
    assert exit_info.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_a_missing_landing_folder_is_a_clear_error(paths, capsys):
    assert main(["ingest", "--date", "2026-11-20"]) == 2
    assert "no landing folder for 2026-11-20" in capsys.readouterr().err


def test_help_is_fast_and_imports_no_stage():
    code = "import sys; from pipelines.cli import build_parser; build_parser(); print('duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("segone ")


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--customers", "0"], "must be at least 1, not 0"),
    (["simulate", "--days", "-5"], "must be at least 1, not -5"),
    (["simulate", "--customers", "many"], "not a whole number: 'many'"),
    (["bench", "ingest", "--customers", "abc"], "not a whole number: 'abc'"),
    (["bench", "ingest", "--customers", "1000,0"], "must be at least 1, not 0"),
    (["bench", "ingest", "--customers", ","], "give at least one size"),
])
def test_bad_arguments_are_usage_errors_that_write_nothing(paths, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not paths.landing.exists()


def test_summary_of_a_night_that_never_ran_says_which_nights_exist(paths, capsys):
    assert main(["summary", "--date", "2026-11-20"]) == 2
    assert "has not run" in capsys.readouterr().err
    for night, published in (("2026-11-18", True), ("2026-11-19", False)):
        folder = paths.runs / night
        folder.mkdir(parents=True)
        (folder / "ingest.json").write_text("{}")
        if published:
            (folder / "publish.json").write_text("{}")
    assert main(["summary", "--date", "2026-11-20"]) == 2
    err = capsys.readouterr().err
    assert "the night of 2026-11-20 has not run" in err
    assert "nights run: 2026-11-18, 2026-11-19 (not published)" in err
    assert not (paths.runs / "2026-11-20").exists()


def test_doctor_fails_clearly_on_an_empty_home_and_run_stops_before_ingesting(paths, capsys):
    assert main(["doctor", "--date", "2026-11-20"]) == 2
    captured = capsys.readouterr()
    assert "FAIL  history" in captured.out and "FAIL  landing" in captured.out
    assert "checks failed" in captured.err
    assert main(["run", "--date", "2026-11-20"]) == 2
    err = capsys.readouterr().err
    assert "pre-flight checks failed" in err and "no promoted model" in err
    assert not paths.lake.exists()


def test_an_unexpected_error_is_one_line_with_the_traceback_saved(paths, capsys, monkeypatch):
    import pipelines.stages

    def broken(paths, day):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(pipelines.stages, "conform", broken)
    assert main(["conform", "--date", "2026-11-20"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unexpected error ZeroDivisionError: division by zero" in err
    saved = list((paths.home / "logs").glob("segone-conform-*.txt"))
    assert len(saved) == 1 and "Traceback" in saved[0].read_text()
    # the night's structured log has the error as a JSON line
    lines = [json.loads(line) for line in (paths.runs / "2026-11-20" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["level"] == "ERROR" and lines[-1]["command"] == "conform"
    assert "ZeroDivisionError" in lines[-1]["message"]


def test_great_expectations_is_quiet_once_imported(caplog, monkeypatch):
    import logging

    from pipelines import quality

    monkeypatch.setattr(quality, "_GX_CACHE", {})   # build a new context, as a fresh process does
    caplog.set_level(logging.INFO)
    quality._gx_batch_definition()
    assert not [r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]
