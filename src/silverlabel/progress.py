"""Progress bars for long work: rich on a terminal, silent when quiet or when output is not a terminal."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

_QUIET = {"value": os.environ.get("SILVERLABEL_QUIET", "") not in ("", "0")}


def set_quiet(quiet: bool) -> None:
    _QUIET["value"] = quiet


@contextlib.contextmanager
def progress_bar(description: str, *, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a rich bar unless quiet (CLI --quiet, SILVERLABEL_QUIET=1)."""
    if _QUIET["value"] or total <= 0:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
