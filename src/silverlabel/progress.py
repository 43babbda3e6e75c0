"""Progress for long work: a rich bar on a terminal or in Jupyter; without one (CI, nohup, a log file) one log
line per finished stage or run, plus a line a minute for long ones, since a bar there would only show when it
ends; nothing when quiet."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Iterator

log = logging.getLogger(__name__)

_QUIET = {"value": os.environ.get("SILVERLABEL_QUIET", "") not in ("", "0")}
EVERY_S = 60.0  # without a terminal, a line at most this often while a stage runs


def set_quiet(quiet: bool) -> None:
    _QUIET["value"] = quiet


def _terminal() -> bool:
    from rich.console import Console

    console = Console()  # rich's own tests (they honour FORCE_TERMINAL); a Jupyter cell draws rich's bar live
    return console.is_terminal or console.is_jupyter


@contextlib.contextmanager
def progress_bar(description: str, *, total: int, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a rich bar unless quiet (CLI --quiet, SILVERLABEL_QUIET=1), or log lines when
    the output is not a terminal. With ``unit`` ("texts"), the rate is shown too (texts/s)."""
    if _QUIET["value"] or total <= 0:
        yield lambda n=1: None
        return
    if not _terminal():
        started = time.perf_counter()
        state = {"done": 0, "said": started}

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.perf_counter()
            if now - state["said"] >= EVERY_S and state["done"] < total:
                state["said"] = now
                rate = f", {state['done'] / (now - started):.1f} {unit}/s" if unit else ""
                log.info("%s: %d/%d after %.0f s%s", description, state["done"], total, now - started, rate)

        yield advance
        log.info("done: %s (%d/%d in %.1f s)", description, state["done"], total, time.perf_counter() - started)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    if unit:
        columns.append(TextColumn(f"{{task.fields[rate]}} {unit}/s"))
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="…")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed  # rich's own moving average over recent advances
            if unit and speed:
                progress.update(task, rate=f"{speed:.1f}")

        yield advance
