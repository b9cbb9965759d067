"""Rich tables for the terminal."""

from __future__ import annotations

import math
import re

from rich.table import Table

from safestress.judges.audit import AuditRow, JudgeAudit
from safestress.report.contrasts import ContrastRow
from safestress.report.summary import RateRow, TrendRow, metric_text


def fmt_pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}"


def fmt_pts(x: float) -> str:
    """A difference of rates in points, signed; a difference that rounds to zero prints as 0.0
    (a mean of paired differences leaves float residue such as -1.1e-16, which read as "-0.0")."""
    if math.isnan(x):
        return "—"
    points = round(100 * x, 1)
    return "0.0" if points == 0 else f"{points:+.1f}"


def fmt_p(x: float) -> str:
    if math.isnan(x):
        return "—"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


_EMPTY_PARAM = re.compile(r" [\w-]+=(?= |$)")


def condition_name(r: RateRow | ContrastRow | AuditRow) -> str:
    """The condition as shown: the stored label names the perturbation's parameters (preset, units
    file, …), which tell apart conditions of one perturbation at the same sites; empty ones are dropped."""
    if r.perturbation == "none":
        return "clean"
    return _EMPTY_PARAM.sub("", r.condition) if r.condition else f"{r.perturbation} @ {r.sites}"


def rate_table(rows: list[RateRow]) -> Table:
    datasets = sorted({r.dataset for r in rows})
    what, column, _ = metric_text({r.metric for r in rows} or {"harmful"})
    title = f"{what} on {', '.join(datasets)} (judge {rows[0].judge if rows else '-'})"
    t = Table(title=title, show_lines=False)
    for col, kw in [
        ("model", {"overflow": "fold"}),
        ("condition", {"overflow": "fold"}),
        ("strength", {"justify": "right"}),
        ("n", {"justify": "right"}),
        (column, {"justify": "right"}),
        ("95% CI", {"justify": "right"}),
        ("Δ pts", {"justify": "right"}),
        ("p vs clean", {"justify": "right"}),
        ("p (Holm)", {"justify": "right"}),
        ("incoherent %", {"justify": "right"}),
    ]:
        t.add_column(col, **kw)
    with_ppl = any(not math.isnan(r.ppl) for r in rows)
    if with_ppl:
        t.add_column("ppl", justify="right")
    for r in rows:
        delta = fmt_pts(r.delta)
        t.add_row(
            r.model if len(datasets) == 1 else f"{r.model} / {r.dataset}",
            condition_name(r),
            "0" if r.perturbation == "none" else f"{r.strength:g}",
            str(r.n),
            fmt_pct(r.value),
            f"{fmt_pct(r.ci_low)}–{fmt_pct(r.ci_high)}",
            delta,
            fmt_p(r.p),
            fmt_p(r.p_holm),
            fmt_pct(r.incoherent) + (f" (+{fmt_pct(r.unscored)} unscored)" if r.unscored > 0 else ""),
            *([("—" if math.isnan(r.ppl) else f"{r.ppl:.2f}")] if with_ppl else []),
        )
    return t


def trend_table(rows: list[TrendRow]) -> Table:
    t = Table(title="Trend across strength (σ = 0 is the clean run)")
    for col in ("model", "dataset", "perturbation @ sites", "levels", "statistic", "p", "test"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.model,
            r.dataset,
            f"{r.perturbation} @ {r.sites}",
            ", ".join(f"{x:g}" for x in r.levels),
            f"{r.statistic:+.3f}",
            fmt_p(r.p),
            r.test,
        )
    return t


# the columns every rendering of the model-against-baseline table shares, after its row names
CONTRAST_COLUMNS = (
    "condition",
    "n",
    "rate %",
    "baseline %",
    "Δ pts",
    "p (Holm)",
    "Δ effect pts",
    "n (effect)",
    "p (Holm)",
)


def contrast_cells(r: ContrastRow) -> list[str]:
    """The :data:`CONTRAST_COLUMNS` of one row, formatted once for the terminal, Markdown and HTML."""
    return [
        condition_name(r),
        str(r.n_prompts),
        fmt_pct(r.value),
        fmt_pct(r.baseline_value),
        fmt_pts(r.delta),
        fmt_p(r.p_holm),
        fmt_pts(r.effect_delta),
        str(r.n_effect) if r.n_effect else "—",
        fmt_p(r.effect_p_holm),
    ]


def contrast_table(rows: list[ContrastRow]) -> Table:
    """Model against baseline on the same prompts: the difference in rate and in the condition's effect."""
    t = Table(title=f"Models against {rows[0].baseline} on the same prompts (judge {rows[0].judge})")
    for col in ("model", *CONTRAST_COLUMNS):
        t.add_column(col, justify="left" if col in ("model", "condition") else "right", overflow="fold")
    datasets = {r.dataset for r in rows}
    for r in rows:
        t.add_row(r.model if len(datasets) == 1 else f"{r.model} / {r.dataset}", *contrast_cells(r))
    return t


def _with_ci(x: float, interval: tuple[float, float], signed: bool = False) -> str:
    if math.isnan(x):
        return "—"
    f = (lambda v: f"{100 * v:+.1f}") if signed else fmt_pct
    return f"{f(x)} [{f(interval[0])}, {f(interval[1])}]" if not math.isnan(interval[0]) else f(x)


# a condition's audit cells, (id, header): the terminal shows the short set, report.html the full one
AUDIT_COLUMNS = (
    ("labelled", "labelled"),
    ("judge", "judge %"),
    ("corrected", "corrected %"),
    ("delta", "Δ pts"),
    ("p", "p (Holm)"),
    ("agrees", "agree %"),
)
AUDIT_COLUMNS_FULL = (
    ("labelled", "labelled"),
    ("judge", "judge %"),
    ("labels", "labels % [CI]"),
    ("corrected", "corrected % [CI]"),
    ("delta", "Δ pts corrected [CI]"),
    ("p", "p (Holm)"),
    ("lam", "λ"),
    ("agrees", "judge agrees %"),
)


def audit_cells(r: AuditRow, full: bool = False) -> list[str]:
    """The cells of :data:`AUDIT_COLUMNS` (``full``: :data:`AUDIT_COLUMNS_FULL`) for one condition."""
    cells = {
        "labelled": f"{r.labelled}/{r.responses}" + (f" (+{r.unscored} unscored)" if r.unscored else ""),
        "judge": fmt_pct(r.judge_rate),
        "labels": _with_ci(r.label_rate, r.label_ci),
        "corrected": _with_ci(r.corrected, r.corrected_ci),
        "delta": _with_ci(r.delta, r.delta_ci, signed=True),
        "p": fmt_p(r.p_holm),
        "lam": "—" if math.isnan(r.lam) else f"{r.lam:.2f}",
        "agrees": fmt_pct(r.accuracy),
    }
    return [cells[key] for key, _ in (AUDIT_COLUMNS_FULL if full else AUDIT_COLUMNS)]


def fmt_kappa(kappa: float, ci: tuple[float, float] = (math.nan, math.nan)) -> str:
    """κ with its interval, or "undefined": when both raters use one class throughout, chance
    agreement is 1 and κ is 0/0 (stats.kappa_from_counts), which must not read as κ = 1."""
    if math.isnan(kappa):
        return "undefined (one class only)"
    lo, hi = ci
    return f"{kappa:.3f}" + ("" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]")


def audit_summary(audit: JudgeAudit) -> str:
    """The judge's agreement with all its labels, for a table's title."""
    return f"accuracy {fmt_pct(audit.accuracy)}%, κ {fmt_kappa(audit.kappa, audit.kappa_ci)}"


def audit_table(audit: JudgeAudit, level: float = 0.95) -> Table:
    """A judge's audit: per condition the judge's harmful share, the corrected one with its interval
    and the corrected change against the clean run (the labels-alone share and λ are in the JSON)."""
    pct = f"{level:.0%}".replace(".0%", "%")
    t = Table(
        title=f"Harmful share, judge {audit.judge} audited by {audit.n} labels: {audit_summary(audit)} ({pct} CIs)"
    )
    datasets = {r.dataset for r in audit.rows}
    t.add_column("model", overflow="fold", min_width=5)
    t.add_column("condition", overflow="fold", min_width=14)
    for _, header in AUDIT_COLUMNS:
        t.add_column(header, justify="right", no_wrap=True)
    for r in audit.rows:
        t.add_row(r.model if len(datasets) == 1 else f"{r.model} / {r.dataset}", condition_name(r), *audit_cells(r))
    return t
