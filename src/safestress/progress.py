"""The progress bar of every long job: what it does, the bar, done / total, elapsed time and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def job_bar(label: str, console: Console, *extra: str | ProgressColumn) -> Progress:
    """A bar that stays on screen when done (the run's record), with ``extra`` columns after the ETA."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *extra,
    )
    return Progress(*columns, console=console, transient=False)
