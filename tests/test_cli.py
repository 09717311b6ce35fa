"""The CLI lists every command, has --help on each, and turns a user's mistake into a clear message."""
from __future__ import annotations

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
