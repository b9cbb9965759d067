"""Reports: summary statistics, terminal tables and plots from the store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safestress.report.contrasts import ContrastRow, model_contrasts
from safestress.report.jsonfile import write_json
from safestress.report.summary import RateRow, TrendRow, summarize, to_records

__all__ = [
    "ContrastRow",
    "RateRow",
    "TrendRow",
    "judge_folder",
    "model_contrasts",
    "summarize",
    "summarize_judges",
    "write_report",
]


def judge_folder(key: str, keys: list[str]) -> str:
    """The report folder of one judge among ``keys``: its name (``refusal``), or, when two keys
    share the name (an old version beside the new, two heads of ``embedding``), the whole key
    made safe for a file name. ``run`` and ``results --out`` both lay reports out this way."""
    from safestress.judges.base import key_name

    name = key_name(key)
    if sum(key_name(k) == name for k in keys) == 1:
        return name
    return re.sub(r"[^A-Za-z0-9._+-]", "_", key)


def write_report(
    rates: list[RateRow],
    trends: list[TrendRow],
    out_dir: Path,
    plot: bool = True,
    contrasts: list[ContrastRow] | None = None,
) -> list[Path]:
    """Write ``summary.json``, ``summary.csv``, ``summary.md``, the plots and, for a sweep of several
    models, ``contrasts.csv`` into ``out_dir``; return the paths."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    contrasts = contrasts or []
    judges = dict.fromkeys(r.judge for r in rates)
    data: dict[str, Any] = {
        # what each judge's rate measures (judges.base.OUTCOMES), so a reader of the file alone
        # never takes a refusal judge's "complied" for harm
        "metrics": {j: sorted({r.metric for r in rates if r.judge == j}) for j in judges},
        "rates": to_records(rates),
        "trends": to_records(trends),
        "contrasts": to_records(contrasts),
    }
    write_json(out_dir / "summary.json", data)
    pd.DataFrame(to_records(rates)).to_csv(out_dir / "summary.csv", index=False)
    md = markdown_table(rates) + (("\n" + markdown_contrasts(contrasts)) if contrasts else "")
    (out_dir / "summary.md").write_text(md)
    paths = [out_dir / "summary.json", out_dir / "summary.csv", out_dir / "summary.md"]
    if contrasts:
        pd.DataFrame(to_records(contrasts)).to_csv(out_dir / "contrasts.csv", index=False)
        paths.append(out_dir / "contrasts.csv")
    if plot:
        from safestress.report.plots import rate_vs_strength

        paths += rate_vs_strength(rates, out_dir)
    return paths


# Markdown's emphasis, code, link and column characters, and the two HTML openings a renderer
# would act on: "<" before a tag name ("<img", "</", "<!") and "&" before an entity ("&lt;")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|]|<(?=[A-Za-z/!?])|&(?=#?\w+;))")


def md_cell(text: str) -> str:
    """A table cell's text as literal Markdown: model, dataset and condition names come from the
    user (or a hub) and may hold ``|`` (a site union), ``*`` (a site glob) or HTML, which a
    Markdown renderer would otherwise draw as a column break, emphasis or live markup. Each is
    backslash-escaped (CommonMark), and so is a ``<`` that would open a tag or an ``&`` that would
    start an entity; other text is left as it is, so it reads raw (``safestress results | cat``
    shows "<0.001", not "&lt;0.001")."""
    text = " ".join(str(text).split())  # a line break would end the table row
    return _MD_SPECIAL.sub(r"\\\1", text)


def markdown_rows(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose cells are escaped by :func:`md_cell`."""
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def markdown_notes(lines: list[str]) -> str:
    """A table's notes as Markdown paragraphs after it."""
    return "".join(f"\n{md_cell(line)}\n" for line in lines)


def markdown_table(rates: list[RateRow]) -> str:
    """The rate table as Markdown (for papers and docs): one row per model, dataset and condition,
    followed by its notes (the Holm family, what Δ is)."""
    import math

    from safestress.report.tables import rate_cells, rate_columns, rate_notes

    with_ppl = any(not math.isnan(r.ppl) for r in rates)
    rows = [[r.model, r.dataset, *rate_cells(r, with_ppl)] for r in rates]
    notes = markdown_notes(rate_notes(rates)) if rates else ""
    return markdown_rows(["model", "dataset", *rate_columns(rates)], rows) + notes


def markdown_trends(rows: list[TrendRow]) -> str:
    """The trend-across-strength table as Markdown."""
    from safestress.report.tables import TREND_COLUMNS, trend_cells

    return markdown_rows(list(TREND_COLUMNS), [trend_cells(r) for r in rows])


def markdown_contrasts(rows: list[ContrastRow]) -> str:
    """The model-against-baseline table as Markdown."""
    from safestress.report.tables import CONTRAST_COLUMNS, contrast_cells, contrast_notes

    head = ["model", "baseline", "dataset", *CONTRAST_COLUMNS]
    notes = markdown_notes(contrast_notes(rows)) if rows else ""
    return markdown_rows(head, [[r.model, r.baseline, r.dataset, *contrast_cells(r)] for r in rows]) + notes


def markdown_arms(rows: list[Any]) -> str:
    """The run-level table of training methods (report/runs.py) as Markdown, with its notes."""
    from safestress.report.tables import ARM_COLUMNS, arm_cells, arm_notes

    notes = markdown_notes(arm_notes(rows)) if rows else ""
    return markdown_rows(list(ARM_COLUMNS), [arm_cells(r) for r in rows]) + notes


def markdown_draws(rows: list[Any], classified: str = "", draws: str = "") -> str:
    """A classified set against random draws (report/draws.py) as Markdown, with its notes."""
    from safestress.report.draws import DRAW_COLUMNS, draw_cells, draw_notes

    notes = markdown_notes(draw_notes(rows, classified, draws))
    return markdown_rows(list(DRAW_COLUMNS), [draw_cells(r) for r in rows]) + notes


def write_arms(rows: list[Any], folder: Path) -> list[Path]:
    """The run-level table of training methods as runs.md and runs.csv (one row per arm and condition)."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    md, table = folder / "runs.md", folder / "runs.csv"
    md.write_text(markdown_arms(rows))
    records = to_records(rows)
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return [md, table]


def summarize_judges(
    frame: Any,
    keys: list[str],
    store: Any,
    baseline: str | None = None,
    ppl_metric: str | None = None,
    margin: float | None = None,
) -> tuple[dict[str, tuple[list[RateRow], list[TrendRow]]], dict[str, list[ContrastRow]]]:
    """Per judge key, in the order given: its rate and trend rows (perplexity attached from
    ``store``) and its models-against-``baseline`` rows — what the tables, files and page show."""
    from safestress.report.summary import attach_perplexity

    summaries, contrasts = {}, {}
    for key in keys:
        summaries[key] = summarize(frame, key, margin)
        attach_perplexity(summaries[key][0], frame, store, ppl_metric)
        contrasts[key] = model_contrasts(frame, key, baseline, margin)
    return summaries, contrasts
