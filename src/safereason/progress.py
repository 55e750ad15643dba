"""The progress bars every long stage shows (on stderr, so piped output stays clean)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress]:
    """A Rich progress display (a no-op when ``enabled`` is false, e.g. ``--no-progress`` or in tests)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )
    with progress:
        yield progress
