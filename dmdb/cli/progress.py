"""Rich progress bars behind the plain callbacks the library accepts (library code never prints)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .consoles import STDERR


def _bars() -> Progress:
    """The one bar layout of the CLI, on stderr so results on stdout stay clean."""
    return Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=STDERR,
        transient=False,
    )


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yields callback(done, total) driving one bar; a no-op when quiet. The bar shows from the first
    report, as stage_progress's do (the library reports 0 once its input is checked)."""
    with stage_progress(quiet) as update:
        yield lambda done, total: update(description, done, total)


@contextmanager
def stage_progress(quiet: bool = False) -> Iterator[Callable[[str, int, int | None], None]]:
    """Yields callback(stage, done, total): one bar per stage (statistics, lasso path, ...)."""
    if quiet:
        yield lambda stage, done, total: None
        return
    # started by the first report: a command that fails before one (a bad --targets) prints its error
    # line alone, not after the empty line an empty display leaves on stderr
    bar = _bars()
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()
