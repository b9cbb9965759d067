"""The progress bar of every long job: what it does, the bar, done / total, elapsed time and ETA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing measured yet
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StepLog:
    """A training loop's log line at regular steps, with elapsed time and an ETA.

    Why not a bar: training logs go to standard error beside the loss, in a log file as often as
    on a terminal, where a redrawn bar leaves noise. Lines come every ``every`` steps (about a
    tenth of the run) and at least every ``interval`` seconds, and always at the last step."""

    def __init__(self, total: int, log: Callable[[str], None], interval: float = 30.0) -> None:
        import time

        self.total, self.log, self.interval = total, log, interval
        self.every = max(1, total // 10)
        self.started = self.last = time.monotonic()

    def step(self, done: int, text: str = "") -> None:
        """Report step ``done`` (1-based) of the total, with ``text`` (the loss) when due."""
        import time

        now = time.monotonic()
        if done % self.every and done != self.total and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.started
        eta = elapsed / done * (self.total - done) if done else float("nan")
        self.log(
            f"  step {done}/{self.total}{' ' + text if text else ''}, elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        )


@contextmanager
def working(label: str, console: Console | None = None) -> Iterator[Progress]:
    """A spinner with the elapsed time for a step of unknown length (a GGUF conversion, scoring
    units), ticked off and left on screen when the step ends, so the log records how long it took.
    A step that fails is not ticked off."""
    from rich.progress import SpinnerColumn

    columns = (SpinnerColumn(finished_text="✓"), TextColumn(f"[bold]{label}"), TimeElapsedColumn())
    bar = Progress(*columns, console=console or Console(stderr=True), transient=False)
    task = bar.add_task(label, total=1)
    with bar:
        yield bar
        bar.update(task, completed=1)
