"""One way out for a summarised store: the tables on standard output, the report files in a
folder per judge, and the page. ``run``, ``results`` and ``demo`` all end here, so the three
write the same layout and cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safestress.judges.audit import JudgeAudit
from safestress.report.console import print_summary
from safestress.report.contrasts import ContrastRow
from safestress.report.summary import RateRow, TrendRow


def emit(
    out: Any,
    fmt: str,
    summaries: dict[str, tuple[list[RateRow], list[TrendRow]]],
    contrasts: dict[str, list[ContrastRow]],
    *,
    shown: list[str],
    methods: list[Any] | None = None,
    audits: dict[str, JudgeAudit] | None = None,
) -> None:
    """Print the summaries of the judge keys in ``shown`` on ``out`` in ``fmt``; the run-level
    table (``methods``) and an audit belong to the first of them."""
    for i, key in enumerate(shown):
        rates, trends = summaries[key]
        audit = (audits or {}).get(key)
        print_summary(out, fmt, rates, trends, contrasts.get(key), methods if i == 0 else None, audit)


def write_outputs(
    folder: Path,
    summaries: dict[str, tuple[list[RateRow], list[TrendRow]]],
    contrasts: dict[str, list[ContrastRow]],
    frame: Any,
    specs: dict[str, dict[str, Any]],
    *,
    plot: bool = True,
    methods: list[Any] | None = None,
    audits: dict[str, JudgeAudit] | None = None,
    title: str = "safestress report",
    examples: int = 3,
    wrote: Callable[[Path], None] = lambda path: None,
) -> None:
    """Write every judge's files into ``folder/<judge>/`` (report.judge_folder), the run-level
    table beside the first judge's, and ``folder/report.html``; ``wrote`` hears of each path."""
    from safestress.report import judge_folder, write_arms, write_report
    from safestress.report.html_report import write_html

    keys = list(summaries)
    if methods:
        for path in write_arms(methods, folder / judge_folder(keys[0], keys)):
            wrote(path)
    for key in keys:
        rates, trends = summaries[key]
        for path in write_report(rates, trends, folder / judge_folder(key, keys), plot=plot, contrasts=contrasts[key]):
            wrote(path)
    if keys and not frame.empty:
        wrote(
            write_html(
                folder / "report.html",
                frame,
                summaries,
                specs,
                title=title,
                examples=examples,
                plots=plot,
                contrasts=contrasts,
                audits=audits,
            )
        )
