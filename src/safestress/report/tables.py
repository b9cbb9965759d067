"""Rich tables for the terminal."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from safestress.judges.audit import AuditRow, JudgeAudit
from safestress.report.contrasts import ContrastRow
from safestress.report.fit import Block, fitted_block
from safestress.report.runs import ArmRow
from safestress.report.summary import OUTCOMES, RateRow, TrendRow, complement_text, holm_family, metric_text


def fmt_pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}"


def fmt_pts(x: float) -> str:
    """A difference of rates in points, signed; a difference that rounds to zero prints as 0.0
    (a mean of paired differences leaves float residue such as -1.1e-16, which read as "-0.0")."""
    if math.isnan(x):
        return "—"
    points = round(100 * x, 1)
    return "0.0" if points == 0 else f"{points:+.1f}"


def level_label(level: float) -> str:
    """A confidence level as table headers write it: 0.95 → "95%"."""
    return f"{level:.0%}"


def fmt_p(x: float) -> str:
    if math.isnan(x):
        return "—"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


_EMPTY_PARAM = re.compile(r" [\w-]+=(?= |$)")


def condition_name(r: RateRow | ContrastRow | AuditRow | ArmRow) -> str:
    """The condition as shown: the stored label names the perturbation's parameters (preset, units
    file, …), which tell apart conditions of one perturbation at the same sites; empty ones are dropped."""
    if r.perturbation == "none":
        return "clean"
    return _EMPTY_PARAM.sub("", r.condition) if r.condition else f"{r.perturbation} @ {r.sites}"


def shared_family(rows: Sequence[RateRow | ContrastRow | AuditRow | ArmRow]) -> str:
    """ "perturbation @ sites" when every perturbed row is one perturbation at one site selection
    and its conditions differ by strength alone (a condition is then named by its strength and the
    family goes to the title); "" otherwise."""
    perturbed = {(r.perturbation, r.sites) for r in rows if r.perturbation != "none"}
    if len(perturbed) != 1 or len({r.condition for r in rows}) != len({r.strength for r in rows}):
        return ""
    pert, sites = next(iter(perturbed))
    return f"{pert} @ {sites}"


def family_names(rows: Sequence[ContrastRow | AuditRow | ArmRow]) -> tuple[list[str], str]:
    """Each row's condition as shown, and the family all share (:func:`shared_family`)."""
    family = shared_family(rows)
    if not family:
        return [condition_name(r) for r in rows], ""
    return ["clean" if r.perturbation == "none" else f"{r.strength:g}" for r in rows], family


def fmt_interval(interval: tuple[float, float], signed: bool = False) -> str:
    """An interval in percent or, ``signed``, in points."""
    f = fmt_pts if signed else fmt_pct
    return "—" if any(math.isnan(v) for v in interval) else f"{f(interval[0])}–{f(interval[1])}"


def rate_columns(rows: list[RateRow]) -> list[str]:
    """The columns every rendering of the rate table shares (after its model/dataset columns)."""
    metrics = {r.metric for r in rows} or {"harmful"}
    _, column, _ = metric_text(metrics)
    flagged = column.removesuffix(" %")
    head = ["condition", "strength", "n", f"{column} [95% CI]", "paired % clean → this", "Δ pts [95% CI]"]
    head += ["p (Holm)", "verdict", f"of all %: {flagged}/{complement_text(metrics)}/incoh."]
    return head + (["ppl"] if any(not math.isnan(r.ppl) for r in rows) else [])


SENSITIVE = "‡"


def _with_interval(value: str, interval: str) -> str:
    return value if interval == "—" else f"{value} [{interval}]"


def rate_cells(r: RateRow, with_ppl: bool = False) -> list[str]:
    """The cells of :func:`rate_columns` for one condition, formatted once for every rendering."""
    clean = r.perturbation == "none"
    paired = "—" if clean or not r.n_paired else f"{fmt_pct(r.paired_clean)} → {fmt_pct(r.paired_value)}"
    shares = "—"
    if not math.isnan(r.share_flagged):
        rest = 1.0 - r.share_flagged - r.share_safe  # incoherent + unscored: every response counted once
        shares = f"{fmt_pct(r.share_flagged)}/{fmt_pct(r.share_safe)}/{fmt_pct(max(0.0, rest))}"
    delta = "—" if clean else _with_interval(fmt_pts(r.delta), fmt_interval((r.delta_ci_low, r.delta_ci_high), True))
    cells = [
        condition_name(r),
        "0" if clean else f"{r.strength:g}",
        str(r.n),
        _with_interval(fmt_pct(r.value), fmt_interval((r.ci_low, r.ci_high))),
        paired,
        delta,
        fmt_p(r.p_holm),
        (r.verdict + (SENSITIVE if r.incoherent_sensitive else "") + _stop(r)) or "—",
        shares,
    ]
    return cells + (["—" if math.isnan(r.ppl) else f"{r.ppl:.2f}"] if with_ppl else [])


def stop_text(prompts: int, of_prompts: int, decided_by: str) -> str:
    """Where a condition of a sequential sweep stopped: "140/520", and ", final test" when the
    final fixed-sample test decided it (the rate table and the documented sequential table)."""
    return f"{prompts}/{of_prompts}" + (", final test" if decided_by == "final test" else "")


def _stop(r: RateRow) -> str:
    """Where a condition of a sequential sweep stopped, after its verdict."""
    return f" (stopped at {stop_text(r.stopped_after, r.of_prompts, r.decided_by)})" if r.decided_by else ""


def rate_notes(rows: list[RateRow]) -> list[str]:
    """What a reader needs beside the rate table: the Holm family, how Δ relates to the rates, and
    the mark of a verdict that depends on how incoherent answers are counted."""
    notes = [
        holm_family(rows) + ".",
        "Δ = this − clean per prompt, on the prompts both scored: the difference of the two rates in "
        "'paired %'. Each rate in the rate column is over its own condition's coherent answers.",
    ]
    if any(r.decided_by for r in rows):
        notes.append(
            "Sequential sweep: each verdict is where its condition stopped, decided by an anytime-valid "
            "confidence sequence after a round, or by the fixed-sample test on every prompt at the end, "
            "each at α/2 divided by the contrasts of the family stated above (docs/statistics.md). Holm p-values "
            "and trend tests are not shown: read after optional stopping they are not valid. Δ's interval is the "
            "95% confidence sequence at the stop where the sequence decided (wider than a fixed-sample interval, "
            "and valid however the stop fell), and the fixed-sample interval where the final test decided."
        )
    if any(r.incoherent_sensitive for r in rows):
        notes.append(f"{SENSITIVE} counting incoherent answers as not flagged, the test decides otherwise.")
    return notes


# columns the terminal leaves out below these widths (summary.md, CSV and JSON keep every column)
_NARROW = {130: ("of all %",), 100: ("of all %", "paired %")}


def rate_title(rows: list[RateRow]) -> str:
    """The rate table's title: what is measured, on which data, by which judge, and what every
    row shares (the model when there is one; the perturbation and sites of one family)."""
    datasets = sorted({r.dataset for r in rows})
    models = sorted({r.model for r in rows})
    what, _, _ = metric_text({r.metric for r in rows} or {"harmful"})
    shared = [f"model {models[0]}"] if len(models) == 1 else []
    shared += [family] if (family := shared_family(rows)) else []
    title = f"{what} on {', '.join(datasets)}" + "".join(f", {x}" for x in shared)
    return title + f" (judge {rows[0].judge if rows else '-'})"


def rate_table(rows: list[RateRow], width: int | None = None) -> Table:
    """The rate table for a terminal of ``width`` columns (default: this terminal's).

    What all rows share moves to the title, so the rows stay short: the model when there is one,
    and the perturbation and sites when the perturbed rows share them (the condition is then its
    strength). Numbers never break across lines; below 130 and 100 columns the terminal leaves
    out the all-response shares and then the paired rates, which the files keep."""
    from rich.console import Console

    width = width or Console().width
    datasets = sorted({r.dataset for r in rows})
    models = sorted({r.model for r in rows})
    one_family = bool(shared_family(rows))
    title = rate_title(rows)
    # below 100 columns: no vertical rules, and one space between columns
    narrow = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True} if width < 100 else {}
    drop = next((cut for limit, cut in sorted(_NARROW.items()) if width < limit), ())
    notes = rate_notes(rows)
    short = model_legend(models, width)
    if short:
        notes.append("Models: " + "; ".join(f"{code} = {name}" for name, code in short.items()) + ".")
    if drop:
        left_out = ", ".join(drop)
        notes.append(f"At {width} columns the terminal leaves out: {left_out}; summary.md and summary.csv have them.")
    t = Table(title=Text(title), show_lines=False, caption=Text("\n".join(notes)), caption_justify="left", **narrow)
    with_ppl = any(not math.isnan(r.ppl) for r in rows)
    columns = rate_columns(rows)
    keep = [i for i, col in enumerate(columns) if not col.startswith(drop) and not (one_family and col == "condition")]
    cells = [rate_cells(r, with_ppl) for r in rows]
    name_parts = [part for part, many in (("model", len(models) > 1), ("dataset", len(datasets) > 1)) if many]
    if name_parts:
        t.add_column(" / ".join(name_parts), overflow="fold")
    for i in keep:
        col, text = columns[i], columns[i] in ("condition", "verdict")
        longest = max((len(c[i]) for c in cells), default=1)
        t.add_column(
            col,
            overflow="fold",
            justify="left" if text else "right",
            min_width=None if col == "condition" else longest,
        )
    for r, row_cells in zip(rows, cells):
        parts = [short.get(r.model, r.model) if part == "model" else r.dataset for part in name_parts]
        # cells are text, never rich markup: a condition's "[granularity=per_token]" must show as written
        cells_text = [" / ".join(parts)] if parts else []
        t.add_row(*[Text(c) for c in [*cells_text, *[row_cells[i] for i in keep]]])
    return t


def model_legend(models: list[str], width: int, longest: int = 16) -> dict[str, str]:
    """Short labels (M1, M2, …) for several long model names on a terminal under 130 columns,
    so that a row's name stays on one or two lines; the caption carries the legend. Empty when
    the names fit as they are."""
    if len(models) < 2 or width >= 130 or max(len(m) for m in models) <= longest:
        return {}
    return {name: f"M{i}" for i, name in enumerate(models, 1)}


TREND_TITLE = "Trend across strength (σ = 0 is the clean run)"
TREND_COLUMNS = ("model", "dataset", "perturbation @ sites", "levels", "statistic", "p", "test")


def trend_cells(r: TrendRow) -> list[str]:
    """The :data:`TREND_COLUMNS` of one trend row, for the terminal and Markdown."""
    levels = ", ".join(f"{x:g}" for x in r.levels)
    return [r.model, r.dataset, f"{r.perturbation} @ {r.sites}", levels, f"{r.statistic:+.3f}", fmt_p(r.p), r.test]


def trend_table(rows: list[TrendRow]) -> Table:
    t = Table(title=TREND_TITLE)
    for col in TREND_COLUMNS:
        t.add_column(col)
    for r in rows:
        t.add_row(*[Text(c) for c in trend_cells(r)])
    return t


# the columns every rendering of the model-against-baseline table shares, after its row names
CONTRAST_COLUMNS = (
    "condition",
    "n",
    "rate %",
    "baseline %",
    "Δ pts",
    "Δ 95% CI",
    "p (Holm)",
    "verdict",
    "Δ effect pts",
    "Δ effect 95% CI",
    "n (effect)",
    "p (Holm) effect",
    "verdict (effect)",
)


def contrast_cells(r: ContrastRow) -> list[str]:
    """The :data:`CONTRAST_COLUMNS` of one row, formatted once for the terminal, Markdown and HTML."""
    return [
        condition_name(r),
        str(r.n_prompts),
        fmt_pct(r.value),
        fmt_pct(r.baseline_value),
        fmt_pts(r.delta),
        fmt_interval((r.delta_ci_low, r.delta_ci_high), signed=True),
        fmt_p(r.p_holm),
        r.verdict or "—",
        fmt_pts(r.effect_delta),
        fmt_interval((r.effect_ci_low, r.effect_ci_high), signed=True),
        str(r.n_effect) if r.n_effect else "—",
        fmt_p(r.effect_p_holm),
        r.effect_verdict or "—",
    ]


def contrast_notes(rows: list[ContrastRow]) -> list[str]:
    """The Holm families of the model-against-baseline table, said with it."""
    tested = sum(not math.isnan(r.p) for r in rows)
    effects = sum(not math.isnan(r.effect_p) for r in rows)
    judge = rows[0].judge if rows else "-"
    notes = [
        f"Holm families (judge {judge}): the {tested} Δ tests of this table, and separately its {effects} Δ-effect "
        "tests; an equivalence test, where a margin was given, is corrected within the same family.",
        'Without a margin, a difference that is not significant is inconclusive, never "same".',
    ]
    return notes


def contrast_title(rows: list[ContrastRow]) -> str:
    return f"Models against {rows[0].baseline} on the same prompts (judge {rows[0].judge})"


def contrast_block(rows: list[ContrastRow]) -> Block:
    """Model against baseline on the same prompts: the difference in rate and in the condition's effect."""
    datasets = {r.dataset for r in rows}
    names, family = family_names(rows)
    cells = [
        [r.model if len(datasets) == 1 else f"{r.model} / {r.dataset}", name, *contrast_cells(r)[1:]]
        for r, name in zip(rows, names)
    ]
    return Block(
        contrast_title(rows) + (f", {family}" if family else ""),
        ["model", *CONTRAST_COLUMNS],
        cells,
        contrast_notes(rows),
        text=("model", "condition", "verdict", "verdict (effect)"),
        shareable=("model",),
        optional=("n (effect)", "p (Holm) effect", "baseline %", "rate %", "Δ effect 95% CI", "Δ 95% CI"),
    )


def contrast_table(rows: list[ContrastRow], width: int = 200) -> Table:
    """:func:`contrast_block` fitted to ``width`` columns (report/fit.py)."""
    return fitted_block(contrast_block(rows), width)


def _with_ci(x: float, interval: tuple[float, float], signed: bool = False) -> str:
    """A share (or, ``signed``, a change in points) with its interval, written as in the rate table."""
    if math.isnan(x):
        return "—"
    return _with_interval(fmt_pts(x) if signed else fmt_pct(x), fmt_interval(interval, signed))


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
    """The judge's agreement with all its labels, for a table's title, marked when a condition
    has fewer labels than an audit needs (safestress/guards.py)."""
    mark = f"; INSUFFICIENT DATA: {audit.shortfall}" if audit.shortfall else ""
    return f"accuracy {fmt_pct(audit.accuracy)}%, κ {fmt_kappa(audit.kappa, audit.kappa_ci)}{mark}"


def audit_block(audit: JudgeAudit, level: float = 0.95) -> Block:
    """A judge's audit: per condition the judge's harmful share, the corrected one with its interval
    and the corrected change against the clean run (the labels-alone share and λ are in the JSON)."""
    pct = level_label(level)
    tested = sum(not math.isnan(r.p) for r in audit.rows)
    datasets = {r.dataset for r in audit.rows}
    names, family = family_names(audit.rows)
    cells = [
        [r.model if len(datasets) == 1 else f"{r.model} / {r.dataset}", name, *audit_cells(r)]
        for r, name in zip(audit.rows, names)
    ]
    return Block(
        f"Harmful share, judge {audit.judge} audited by {audit.n} labels: {audit_summary(audit)} ({pct} CIs)"
        + (f", {family}" if family else ""),
        ["model", "condition", *(header for _, header in AUDIT_COLUMNS)],
        cells,
        [f"Holm family: the {tested} audited conditions' corrected changes against clean."],
        text=("model", "condition", "labelled"),
        shareable=("model",),
        optional=("agree %", "judge %"),
    )


def audit_table(audit: JudgeAudit, level: float = 0.95, width: int = 200) -> Table:
    """:func:`audit_block` fitted to ``width`` columns."""
    return fitted_block(audit_block(audit, level), width)


# the run-level table of training methods (report/runs.py), shared by the terminal and Markdown
ARM_COLUMNS = (
    "arm",
    "dataset",
    "condition",
    "runs: rate %",
    "mean %",
    "SD pts",
    "Δ pts",
    "Δ 95% CI (Welch)",
    "p (Holm)",
    "p (permutation)",
    "verdict",
    "Δ effect pts",
    "Δ effect 95% CI",
    "p (Holm) effect",
    "verdict (effect)",
)


def arm_cells(r: ArmRow) -> list[str]:
    """The :data:`ARM_COLUMNS` of one arm under one condition."""
    base = r.arm == r.baseline
    return [
        r.arm + (" (baseline)" if base else ""),
        r.dataset,
        condition_name(r),
        ", ".join(fmt_pct(x) for x in r.run_rates),
        fmt_pct(r.mean),
        "—" if math.isnan(r.sd) else f"{100 * r.sd:.1f}",
        "—" if base else fmt_pts(r.delta),
        "—" if base else fmt_interval(r.delta_ci, signed=True),
        "—" if base else fmt_p(r.p_holm),
        "—" if base else fmt_p(r.p_perm),
        r.verdict or "—",
        fmt_pts(r.effect_delta),
        fmt_interval(r.effect_ci, signed=True),
        fmt_p(r.effect_p_holm),
        r.effect_verdict or "—",
    ]


def arm_notes(rows: list[ArmRow]) -> list[str]:
    """How to read the run-level table: the unit, the families, the permutation test's floor."""
    from safestress.stats import runs_permutation_p

    runs = sorted({len(r.run_rates) for r in rows})
    sizes = {r.arm: len(r.run_rates) for r in rows}
    pairs = sorted({(sizes[r.arm], sizes[r.baseline]) for r in rows if r.arm != r.baseline and r.baseline in sizes})
    # the smallest p each pair of run counts allows: every run of one arm above every run of the other
    floors = ", ".join(f"{runs_permutation_p([1.0] * a, [0.0] * b):.3g} ({a} vs {b} runs)" for a, b in pairs)
    what = [f"Each run's rate is {OUTCOMES[rows[0].outcome]}; judge {rows[0].judge}."] if rows else []
    return [
        *what,
        f"The unit is the training run ({'/'.join(map(str, runs))} per arm): Welch's test on the runs' rates, "
        "prompts held fixed. Holm families: the Δ tests, and separately the Δ-effect tests.",
        "The exact permutation p over runs assumes nothing about the runs' spread; its smallest possible "
        f"value is {floors or 'set by the run counts'}.",
    ]


def arm_title(rows: list[ArmRow]) -> str:
    return f"Methods against {rows[0].baseline} at the run level (judge {rows[0].judge})"


def arm_block(rows: list[ArmRow]) -> Block:
    """Training methods against the baseline arm, runs as the unit."""
    names, family = family_names(rows)
    cells = [[*arm_cells(r)[:2], name, *arm_cells(r)[3:]] for r, name in zip(rows, names)]
    return Block(
        arm_title(rows) + (f", {family}" if family else ""),
        list(ARM_COLUMNS),
        cells,
        arm_notes(rows),
        text=("arm", "dataset", "condition", "runs: rate %", "verdict", "verdict (effect)"),
        shareable=("dataset",),
        optional=("p (permutation)", "SD pts", "p (Holm) effect", "Δ effect 95% CI", "Δ 95% CI (Welch)"),
    )


def arm_table(rows: list[ArmRow], width: int = 200) -> Table:
    """:func:`arm_block` fitted to ``width`` columns."""
    return fitted_block(arm_block(rows), width)
