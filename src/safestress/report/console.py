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
from safestress.report.summary import RateRow, TrendRow, to_records

FORMATS = ("table", "markdown", "csv", "json")


def resolve_format(fmt: str | None, is_terminal: bool) -> str:
    """``fmt``, checked, or the default: a table on a terminal, Markdown when the output is piped."""
    if fmt is None:
        return "table" if is_terminal else "markdown"
    if fmt not in FORMATS:
        raise SafestressError(f"unknown format '{fmt}'; known: {', '.join(FORMATS)}")
    return fmt


def summary_text(
    fmt: str,
    rates: list[RateRow],
    trends: list[TrendRow],
    contrasts: list[ContrastRow] | None = None,
    methods: list[Any] | None = None,
) -> str:
    """The summary of one judge as Markdown, CSV (the rate rows) or JSON (everything)."""
    from safestress.report import markdown_arms, markdown_contrasts, markdown_table
    from safestress.report.jsonfile import dumps

    contrasts, methods = contrasts or [], methods or []
    if fmt == "markdown":
        parts = [markdown_table(rates)]
        parts += [markdown_contrasts(contrasts)] if contrasts else []
        parts += [markdown_arms(methods)] if methods else []
        return "\n".join(parts)
    if fmt == "csv":
        records = to_records(rates)
        buffer = io.StringIO()
        if records:
            writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        return buffer.getvalue()
    if fmt == "json":
        data = {
            "rates": to_records(rates),
            "trends": to_records(trends),
            "contrasts": to_records(contrasts),
            "methods": to_records(methods),
        }
        return dumps(data) + "\n"
    raise SafestressError(f"no text form for format '{fmt}'")


def print_summary(
    out: Any,
    fmt: str,
    rates: list[RateRow],
    trends: list[TrendRow],
    contrasts: list[ContrastRow] | None = None,
    methods: list[Any] | None = None,
) -> None:
    """Print one judge's summary on ``out`` (a rich Console) in ``fmt``."""
    if fmt != "table":
        out.file.write(summary_text(fmt, rates, trends, contrasts, methods))
        out.file.flush()
        return
    from safestress.report.tables import arm_table, contrast_table, rate_table, trend_table

    out.print(rate_table(rates, out.width))
    if trends:
        out.print(trend_table(trends))
    if contrasts:
        out.print(contrast_table(contrasts))
    if methods:
        out.print(arm_table(methods))
