"""Rich progress bars behind the plain callbacks the library accepts (library code never prints)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

STDERR = Console(stderr=True, soft_wrap=True)


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yields callback(done, total) driving one bar on stderr; a no-op when quiet."""
    if quiet:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=STDERR,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
