"""Terminal tables that fit the terminal they are drawn for.

A rich table wider than its console is cut at the right edge or squeezes its columns until
numbers break mid-digit; in a log or at 80 columns the table no longer reads. ``fitted_table``
decides the layout once for every wide table (contrasts, training methods, audits, judge
agreement): what every row shares moves to the title, numbers never break, columns the caller
marks optional are left out (and the caption says so) until the table fits, and if it still
does not, each row is written as a block of ``column  value`` lines, which fits any width.
The files (Markdown, CSV, JSON) always keep every column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.table import Table
from rich.text import Text


@dataclass
class Block:
    """One titled table of formatted cells, for :func:`print_blocks` (``text``, ``shareable`` and
    ``optional`` name columns as :func:`fitted_table` reads them)."""

    title: str
    head: list[str]
    cells: list[list[str]]
    notes: list[str] = field(default_factory=list)
    text: tuple[str, ...] = ()
    shareable: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


# a text column is folded to this many characters at least, never narrower
_TEXT_MIN = 12


def _widths(head: Sequence[str], rows: Sequence[Sequence[str]], text: set[str]) -> list[int]:
    widths = []
    for i, col in enumerate(head):
        longest = max((len(r[i]) for r in rows), default=1)
        word = max((len(w) for w in col.split()), default=1)
        # a number column never wraps, its header included; a text column folds, its header at spaces
        widths.append(max(min(longest, _TEXT_MIN), word) if col in text else max(longest, len(col)))
    return widths


def _drawn_width(widths: list[int], narrow: bool) -> int:
    """Characters the table takes: cells plus padding and rules (narrow: two spaces between
    columns and one at each edge, where the box has no rules)."""
    return sum(widths) + (2 * len(widths) if narrow else 3 * len(widths) + 1)


def fitted_table(
    title: str,
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str],
    width: int,
    *,
    text: Sequence[str] = (),
    shareable: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> Table:
    """A table of ``rows`` (cells already formatted, one per ``head`` column) for ``width``
    columns. ``text`` columns may fold; every other column is a number and never breaks.
    A ``shareable`` column whose cells are all equal moves into the title; ``optional`` columns
    are left out, in that order, while the table is too wide."""
    head, rows, notes = list(head), [list(r) for r in rows], list(notes)
    shared = [i for i, col in enumerate(head) if col in shareable and rows and len({r[i] for r in rows}) == 1]
    if shared:
        title += "; " + ", ".join(f"{head[i]} {rows[0][i]}" for i in shared)
    keep = [i for i in range(len(head)) if i not in shared]
    narrow = width < 100
    left_out: list[str] = []
    for col in optional:
        widths = _widths([head[i] for i in keep], [[r[i] for i in keep] for r in rows], set(text))
        if _drawn_width(widths, narrow) <= width:
            break
        if col in head and head.index(col) in keep:
            keep.remove(head.index(col))
            left_out.append(col)
    widths = _widths([head[i] for i in keep], [[r[i] for i in keep] for r in rows], set(text))
    if _drawn_width(widths, narrow) > width:  # too wide even without them: every column, a row per block
        keep = [i for i in range(len(head)) if i not in shared]
        return _record_table(title, [head[i] for i in keep], [[r[i] for i in keep] for r in rows], notes)
    if left_out:
        notes.append(f"At {width} columns the terminal leaves out: {', '.join(left_out)}; --format markdown has them.")
    style = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True} if narrow else {}
    t = Table(title=Text(title), caption=Text("\n".join(notes)), caption_justify="left", **style)
    texts = [j for j, i in enumerate(keep) if head[i] in text]
    longest = [max((len(r[keep[j]]) for r in rows), default=1) for j in range(len(keep))]
    spare = width - _drawn_width(widths, narrow)
    # spare room is shared among the text columns, each up to its longest cell, the smallest need first
    for k, j in enumerate(sorted(texts, key=lambda j: longest[j] - widths[j])):
        grow = min(spare // (len(texts) - k), max(0, longest[j] - widths[j]))
        widths[j] += grow
        spare -= grow
    for j, i in enumerate(keep):
        if head[i] in text:
            t.add_column(head[i], justify="left", overflow="fold", width=widths[j])
        else:
            t.add_column(head[i], justify="right", no_wrap=True, min_width=widths[j])
    for r in rows:  # cells are text, never rich markup: "[granularity=per_token]" must show as written
        t.add_row(*[Text(r[i]) for i in keep])
    return t


def fitted_block(block: Block, width: int) -> Table:
    """:func:`fitted_table` of one :class:`Block`."""
    fit = {"text": block.text, "shareable": block.shareable, "optional": block.optional}
    return fitted_table(block.title, block.head, block.cells, block.notes, width, **fit)


def _record_table(title: str, head: list[str], rows: list[list[str]], notes: list[str]) -> Table:
    """Each row as a block: its first cell as a heading, then one ``column  value`` line per cell."""
    t = Table(
        title=Text(title), caption=Text("\n".join(notes)), caption_justify="left", show_header=False, box=box.SIMPLE
    )
    t.add_column("column", style="dim", overflow="fold")
    t.add_column("value", overflow="fold")
    for r in rows:
        t.add_row(Text(f"{head[0]}: {r[0]}", style="bold"), "")
        for col, cell in zip(head[1:], r[1:]):
            t.add_row(Text(col), Text(cell))
        t.add_section()
    return t
