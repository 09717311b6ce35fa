"""Progress of a long command (issue 15, item 9): stage after stage, shard after shard.

The stages never talk to the terminal. Every stage and every shard already writes its run metrics in one place
(`pipelines.runs.write_run_metrics`), so a written metrics file *is* the progress: while a command runs, a `Progress`
listens to those writes.

- On a terminal (stderr is a TTY): a `rich` display, the night's stages (n of N) and the current stage's shards
  (n of its shard count), with the elapsed time; the command's INFO logs are not printed on the terminal meanwhile
  (they still go to runs/D/log.jsonl), warnings and errors are printed above the bars.
- Elsewhere (a pipe, a file, CI, Airflow's task log): one INFO line per finished stage with its time, nothing else,
  so that logs stay readable. `SEGONE_PROGRESS=plain|rich|off` forces a mode.

Airflow tasks never install a `Progress`: the task log and the grid view are their progress.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger(__name__)

_listeners: list[Callable[[str], None]] = []


def notify(name: str) -> None:
    """Called by write_run_metrics with the name of the metrics it wrote (a stage, or a shard: `<family><bucket>`)."""
    for listener in list(_listeners):
        listener(name)


@dataclass(frozen=True)
class Step:
    name: str                      # the stage, as run_night names it
    shard_prefix: str | None = None  # run metrics written per shard start with this (e.g. "decide_bucket_")
    shards: int = 0                # how many shards the stage maps over


def mode(stream: TextIO | None = None) -> str:
    forced = os.environ.get("SEGONE_PROGRESS", "").strip().lower()
    if forced in {"plain", "rich", "off"}:
        return forced
    stream = stream or sys.stderr
    return "rich" if getattr(stream, "isatty", lambda: False)() else "plain"


class Progress:
    """Follows `steps` in order: `start(step)` before a step runs, `finish(step)` after; shard metrics written in
    between advance the step's shard count."""

    def __init__(self, title: str, steps: list[Step], display: Any | None = None) -> None:
        self.title, self.steps = title, steps
        self.current: Step | None = None
        self.done_shards: set[str] = set()
        self.started = self.step_started = time.monotonic()
        self.finished: list[tuple[str, float]] = []
        self.display = display  # a rich.progress.Progress, or None for plain lines

    # -- listening --------------------------------------------------------------------------------------------
    def written(self, name: str) -> None:
        step = self.current
        if step is None or not step.shard_prefix or not name.startswith(step.shard_prefix):
            return
        suffix = name[len(step.shard_prefix):]
        if not suffix.isdigit() or suffix in self.done_shards:
            return
        self.done_shards.add(suffix)
        if self.display is not None:
            self.display.update(self._shard_task, completed=len(self.done_shards))
        else:
            log.debug("%s: %s shard %d of %d done", self.title, step.name, len(self.done_shards), step.shards)

    # -- steps ------------------------------------------------------------------------------------------------
    def start(self, step: Step) -> None:
        self.current, self.done_shards, self.step_started = step, set(), time.monotonic()
        if self.display is not None:
            index = self.steps.index(step) + 1
            self.display.update(self._night_task, description=f"{self.title}: {step.name} ({index}/{len(self.steps)})")
            self.display.update(self._shard_task, completed=0, total=max(step.shards, 1),
                                visible=step.shards > 0, description=f"  {step.name} shards")

    def finish(self, step: Step) -> None:
        seconds = time.monotonic() - self.step_started
        self.finished.append((step.name, seconds))
        index = self.steps.index(step) + 1
        shards = f", {len(self.done_shards)} of {step.shards} shards" if step.shards else ""
        if self.display is not None:
            self.display.update(self._night_task, completed=index)
            self.display.console.print(f"[{index}/{len(self.steps)}] {step.name} done in {seconds:,.1f} s{shards}",
                                       highlight=False)
        else:
            log.info("%s: [%d/%d] %s done in %.1f s%s", self.title, index, len(self.steps), step.name, seconds,
                     shards)
        self.current = None

    # -- display ----------------------------------------------------------------------------------------------
    def attach(self, display: Any) -> None:
        self.display = display
        self._night_task = display.add_task(self.title, total=len(self.steps))
        self._shard_task = display.add_task("shards", total=1, visible=False)


@contextmanager
def following(title: str, steps: list[Step], stream: TextIO | None = None) -> Iterator[Progress | None]:
    """A `Progress` for the duration of the block (None with SEGONE_PROGRESS=off)."""
    chosen = mode(stream)
    if chosen == "off":
        yield None
        return
    progress = Progress(title, steps)
    _listeners.append(progress.written)
    try:
        if chosen == "plain":
            yield progress
        else:
            with _rich_display(stream or sys.stderr) as display:
                progress.attach(display)
                yield progress
    finally:
        _listeners.remove(progress.written)


@contextmanager
def _rich_display(stream: TextIO) -> Iterator[Any]:
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    console = Console(file=stream)
    display = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=console, transient=False, redirect_stderr=False, redirect_stdout=False)
    # the terminal's log handlers are swapped for one that prints warnings above the bars
    root = logging.getLogger()
    terminal = [h for h in root.handlers
                if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout, stream)]
    rich_handler = RichHandler(console=console, level=logging.WARNING, show_path=False, markup=False)
    for handler in terminal:
        root.removeHandler(handler)
    root.addHandler(rich_handler)
    try:
        with display:
            yield display
    finally:
        root.removeHandler(rich_handler)
        for handler in terminal:
            root.addHandler(handler)
