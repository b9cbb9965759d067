"""The two consoles every command writes to: results on standard output, everything else
(progress, notes, paths written, errors) on standard error, so that ``safestress … > file`` or
``| jq`` receives the results alone.

On a terminal, tables follow its width. Elsewhere (a log, ``--format table | less``) they are
drawn $COLUMNS wide, or 120 columns when it is unset: a log has no width of its own.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console


def stdout_is_terminal() -> bool:
    """Whether a person is reading standard output: tables for a terminal, Markdown for a pipe."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _piped_width() -> int | None:
    if stdout_is_terminal():
        return None  # rich follows the terminal, resizes included
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else 120


out = Console(width=_piped_width())
err = Console(stderr=True)


def wrote(path: object) -> None:
    """Say on standard error that a file was written, its path on one unbroken line (a wrapped
    path cannot be copied)."""
    err.print(f"wrote {path}", soft_wrap=True, highlight=False)
