"""Judges against labels, as blocks for the terminal and Markdown and as flat records for CSV:
``judge eval`` (agreement with human labels) and ``judge audit`` (rates corrected for judge
error). The cells are formatted here once; report/console.py decides the form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from safestress import stats
from safestress.judges.agreement import AccuracyDifference, Agreement, KappaDifference
from safestress.judges.audit import JudgeAudit
from safestress.report.fit import Block
from safestress.report.tables import fmt_kappa, fmt_p, level_label


def agreement_block(title: str, results: list[Agreement], diffs: list[KappaDifference], level: float) -> Block:
    """One row per judge: accuracy, κ with its interval, the confusion counts and, for every
    judge after the first, its κ difference to the first on the same items, Holm over those
    comparisons (the table's family) and the word the adjusted p allows."""
    pct = level_label(level)
    head = ["judge", "n", "unscored", "accuracy", f"Cohen's κ [{pct} CI]", "TP/FP/FN/TN"]
    head += [f"κ − first's [{pct} CI]", "p", "p (Holm)", "verdict"] if diffs else []
    adjusted = table_holm(diffs)
    cells = []
    for i, a in enumerate(results):
        c = a.confusion
        row = [a.judge, str(a.n), str(a.unscored), f"{a.accuracy:.3f}", fmt_kappa(a.kappa, a.kappa_ci)]
        row.append("/".join(str(c[k]) for k in ("tp", "fp", "fn", "tn")))
        if diffs:
            d = diffs[i - 1] if i else None
            if d is None:
                row += ["—"] * 4
            else:
                q = adjusted[i - 1]
                row += [f"{d.difference:+.3f} [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]", fmt_p(d.p_value), fmt_p(q)]
                row.append(stats.verdict(q))
        cells.append(row)
    notes = ["κ is undefined where judge and labels each use one class only (0/0), never 1."]
    if diffs:
        notes.append(
            f"Holm family: the {len(diffs)} comparison(s) with the first judge's κ in this table (paired bootstrap "
            "over items)."
        )
    return Block(title, head, cells, notes, text=("judge", "verdict"), optional=("unscored", "TP/FP/FN/TN"))


def accuracy_block(results: list[Agreement], diffs: list[AccuracyDifference], level: float) -> Block:
    """One row per judge: accuracy with its Wilson interval, κ, the confusion counts and, for every
    judge after the first, its accuracy minus the first's on the items both scored (Newcombe's
    paired interval, exact McNemar), Holm over those comparisons and the word the adjusted p allows."""
    pct = level_label(level)
    head = ["judge", "n", "unscored", f"accuracy [{pct} CI]", "Cohen's κ", "TP/FP/FN/TN"]
    head += ["items", f"accuracy − first's [{pct} CI]", "right only first / only this", "p", "p (Holm)", "verdict"]
    adjusted = table_holm(diffs)
    cells = []
    for i, a in enumerate(results):
        c = a.confusion
        right = c["tp"] + c["tn"]
        lo, hi = stats.wilson_ci(right, a.n, 1 - level) if a.n else (float("nan"), float("nan"))
        row = [a.judge, str(a.n), str(a.unscored), f"{a.accuracy:.3f} [{lo:.3f}, {hi:.3f}]", f"{a.kappa:.3f}"]
        row.append("/".join(str(c[k]) for k in ("tp", "fp", "fn", "tn")))
        if not i:
            row += ["—"] * 6
        else:
            d, q = diffs[i - 1], adjusted[i - 1]
            row += [str(d.n), f"{100 * d.difference:+.1f} pts [{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}]"]
            row += [f"{d.only_first} / {d.only_second}", fmt_p(d.p_value), fmt_p(q), stats.verdict(q)]
        cells.append(row)
    notes = [
        f"Holm family: the {len(diffs)} comparison(s) with the first judge's accuracy in this table (exact "
        "McNemar on the items exactly one of the two gets right; Newcombe's paired interval)."
    ]
    return Block("", head, cells, notes, text=("judge", "verdict"), optional=("unscored", "TP/FP/FN/TN"))


def table_holm(diffs: Sequence[KappaDifference | AccuracyDifference]) -> list[float]:
    """Holm-adjusted p of each later judge's comparison with the first (κ or accuracy): the family
    is one table's comparisons."""
    return stats.holm([d.p_value for d in diffs]) if diffs else []


def _preview(text: str, chars: int) -> str:
    """The first ``chars`` characters of a text, marked when there is more."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def disagreement_block(first: Agreement, shown: int = 10) -> Block:
    """The first judge's first disagreements with the labels, shortened to read in a table."""
    cells = [
        [
            _preview(row["prompt"], 80),
            _preview(row["response"], 160),
            "positive" if row["human_positive"] else "negative",
            row["judge_label"],
        ]
        for row in first.disagreements[:shown]
    ]
    return Block(
        f"{first.judge}: first {len(cells)} of {len(first.disagreements)} disagreements",
        ["prompt", "response", "human", "judge"],
        cells,
        text=("prompt", "response", "human", "judge"),
    )


def agreement_records(results: list[Agreement], diffs: list[KappaDifference]) -> list[dict[str, Any]]:
    """One flat record per judge, for CSV."""
    holm_p = table_holm(diffs)
    records = []
    for i, a in enumerate(results):
        record = {"judge": a.judge, "n": a.n, "unscored": a.unscored, "accuracy": a.accuracy, "kappa": a.kappa}
        record |= {"kappa_ci_low": a.kappa_ci[0], "kappa_ci_high": a.kappa_ci[1], **a.confusion}
        d = diffs[i - 1] if i and diffs else None
        record |= {
            "kappa_minus_first": d.difference if d else None,
            "kappa_minus_first_ci_low": d.ci[0] if d else None,
            "kappa_minus_first_ci_high": d.ci[1] if d else None,
            "p": d.p_value if d else None,
        }
        if diffs:
            record["p_holm"] = holm_p[i - 1] if i else None
        records.append(record)
    return records


def audit_records(audits: list[JudgeAudit]) -> list[dict[str, Any]]:
    """One flat record per judge and condition, intervals as low/high columns, for CSV."""
    records = []
    for a in audits:
        for r in a.rows:
            record = {}
            for key, value in asdict(r).items():
                if isinstance(value, tuple | list):
                    record[f"{key}_low"], record[f"{key}_high"] = value
                else:
                    record[key] = value
            records.append(record)
    return records
