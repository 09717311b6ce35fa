"""Logging: structured run logs (JSON lines) and quiet third-party loggers."""
from __future__ import annotations

import json
import logging
import time

# great_expectations.data_context.types.base sets its own level to INFO when imported: quiet it again after.
NOISY_LOGGERS = ("great_expectations", "great_expectations._docs_decorators", "great_expectations.data_context",
                 "great_expectations.data_context.types.base", "great_expectations.core", "cmdstanpy", "prophet")


def quiet_great_expectations() -> None:
    """Great Expectations logs hundreds of INFO lines while it is imported (its docs decorators, its data context),
    cmdstanpy and Prophet one per fit: keep them at WARNING, set before the import so nothing leaks into the CLI or
    the task logs. Call it before importing Great Expectations and again after (some of its modules set a level of
    their own when imported)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the command and the process."""

    converter = time.gmtime

    def __init__(self, command: str | None = None) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                 "command": self.command, "pid": record.process}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def night_log_handler(runs_folder, command: str) -> logging.Handler | None:
    """Structured logs of a command or task about night D: JSON lines appended to runs/D/log.jsonl (one file per
    night for every command and Airflow task that worked on it, each line with its command and process). None when
    the folder cannot be written (the command still runs; its terminal or task log has the lines)."""
    try:
        runs_folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(runs_folder / "log.jsonl", encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(JsonLinesFormatter(command))
    return handler
