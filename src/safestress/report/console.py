"""The summary on standard output in the format asked for: a table for a person at a terminal,
Markdown when piped (a log, ``| cat``), CSV or JSON for a program.

Why a choice: a rich table drawn for a terminal of one width reads badly in a log of another,
and a program should not parse box-drawing characters. The JSON is the ``summary.json`` layout
(strict JSON, NaN as null), so ``safestress results --format json | jq`` and the report files agree.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from safestress.errors import SafestressError
from safestress.report.contrasts import ContrastRow
from safestress.report.fit import Block, fitted_block
from safestress.report.summary import RateRow, TrendRow, to_records

FORMATS = ("table", "markdown", "csv", "json")


def resolve_format(fmt: str | None, is_terminal: bool) -> str:
    """``fmt``, checked, or the default: a table on a terminal, Markdown when the output is piped."""
    if fmt is None:
        return "table" if is_terminal else "markdown"
    if fmt not in FORMATS:
        raise SafestressError(f"unknown format '{fmt}'; known: {', '.join(FORMATS)}")
    return fmt


def csv_text(records: list[dict[str, Any]]) -> str:
    """Flat records as CSV with a header row (empty when there are none)."""
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return buffer.getvalue()


def summary_text(
    fmt: str,
    rates: list[RateRow],
    trends: list[TrendRow],
    contrasts: list[ContrastRow] | None = None,
    methods: list[Any] | None = None,
    audit: Any = None,
) -> str:
    """The summary of one judge as Markdown, CSV (the rate rows) or JSON (everything), with its
    audit (judges.audit.JudgeAudit) when one was made."""
    from safestress.report import markdown_arms, markdown_contrasts, markdown_table, md_cell
    from safestress.report.jsonfile import dumps

    contrasts, methods = contrasts or [], methods or []
    if fmt == "markdown":
        from safestress.report import markdown_trends
        from safestress.report.tables import TREND_TITLE, arm_title, contrast_title, rate_title

        parts = [f"### {md_cell(rate_title(rates))}\n", markdown_table(rates)]
        if trends:
            parts += [f"### {TREND_TITLE}\n", markdown_trends(trends)]
        if contrasts:
            parts += [f"### {md_cell(contrast_title(contrasts))}\n", markdown_contrasts(contrasts)]
        if methods:
            parts += [f"### {md_cell(arm_title(methods))}\n", markdown_arms(methods)]
        if audit is not None:
            from safestress.report.tables import audit_block

            parts.append(blocks_text("markdown", [audit_block(audit)], [], None))
        return "\n".join(parts)
    if fmt == "csv":
        return csv_text(to_records(rates))
    if fmt == "json":
        data = {
            "rates": to_records(rates),
            "trends": to_records(trends),
            "contrasts": to_records(contrasts),
            "methods": to_records(methods),
        }
        if audit is not None:
            data["audit"] = audit.as_dict()
        return dumps(data) + "\n"
    raise SafestressError(f"no text form for format '{fmt}'")


def print_summary(
    out: Any,
    fmt: str,
    rates: list[RateRow],
    trends: list[TrendRow],
    contrasts: list[ContrastRow] | None = None,
    methods: list[Any] | None = None,
    audit: Any = None,
) -> None:
    """Print one judge's summary (and its audit, if any) on ``out`` (a rich Console) in ``fmt``."""
    if fmt != "table":
        out.file.write(summary_text(fmt, rates, trends, contrasts, methods, audit))
        out.file.flush()
        return
    from safestress.report.tables import arm_table, contrast_table, rate_table, trend_table

    out.print(rate_table(rates, out.width))
    if trends:
        out.print(trend_table(trends))
    if contrasts:
        out.print(contrast_table(contrasts, out.width))
    if methods:
        out.print(arm_table(methods, out.width))
    if audit is not None:
        from safestress.report.tables import audit_table

        out.print(audit_table(audit, width=out.width))


def blocks_text(fmt: str, blocks: list[Block], records: list[dict[str, Any]], data: Any) -> str:
    """Blocks as Markdown, ``records`` as CSV (flat, one row per thing measured) or ``data`` as JSON."""
    from safestress.report import markdown_notes, markdown_rows, md_cell
    from safestress.report.jsonfile import dumps

    if fmt == "markdown":
        parts = []
        for b in blocks:
            parts.append(f"### {md_cell(b.title)}\n\n" + markdown_rows(b.head, b.cells) + markdown_notes(b.notes))
        return "\n".join(parts)
    if fmt == "csv":
        return csv_text(records)
    if fmt == "json":
        return dumps(data) + "\n"
    raise SafestressError(f"no text form for format '{fmt}'")


def print_blocks(out: Any, fmt: str, blocks: list[Block], records: list[dict[str, Any]], data: Any) -> None:
    """Print ``blocks`` on ``out`` (a rich Console) as tables fitted to its width, or in ``fmt``."""
    if fmt != "table":
        out.file.write(blocks_text(fmt, blocks, records, data))
        out.file.flush()
        return
    for b in blocks:
        out.print(fitted_block(b, out.width))
