"""A classified set of units against random draws of its size, reported as a distribution.

Why: SSAH's control for "safety lives in the SCU" is pruning random sets of the SCU's size.
Each random set is one draw of the control procedure, so the comparison is the classified set's
place among the draws, not a prompt-level test against one draw (which measures prompt sampling
and can give p = 1e-12 where the rank gives 1/6). For every model and dataset the table gives the
clean rate, the classified condition's rate, every draw's rate with their mean and spread, and
the classified set's rank among itself and the draws (1 = the highest rate) with the one-sided
p = rank / (draws + 1) of "no higher than a random set" (:func:`safestress.stats.rank_p`). With
five draws that p is at least 1/6: a verdict of *different* needs 19 draws or more.

Conditions are picked by their display names: ``classified`` and ``draws`` are texts each
condition name is searched for (``unit_class=scu`` and ``unit_class=random``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from safestress import stats
from safestress.errors import SafestressError
from safestress.report.runs import prompt_mean_rate
from safestress.report.summary import OUTCOMES, outcome_values


@dataclass
class DrawRow:
    model: str
    dataset: str
    judge: str
    clean: float  # the rate without the perturbation; NaN where the export lacks it
    classified: float
    draws: list[float]  # one per random draw, in condition-name order
    mean: float
    sd: float
    rank: int  # 1 = the classified set's rate is above every draw's
    p: float  # one-sided: the classified set is no higher than a random one
    p_holm: float = math.nan
    verdict: str = ""
    outcome: str = "rate"


def draw_rows(frame: Any, judge: str, classified: str, draws: str, outcome: str = "rate") -> list[DrawRow]:
    """The classified condition against the draws, per model and dataset; Holm over the table."""
    if not classified or not draws:
        raise SafestressError("a draws table needs classified=TEXT and draws=TEXT (parts of condition names)")
    df = frame[frame["judge"] == judge].copy()
    df["value"] = outcome_values(df, outcome)
    rows: list[DrawRow] = []
    for (model, dataset), part in df.groupby(["model", "dataset"], sort=True):
        names = sorted(part["condition"].unique())
        mine = [c for c in names if classified in c]
        theirs = [c for c in names if draws in c and c not in mine]
        if not mine and not theirs:
            continue
        if len(mine) != 1 or not theirs:
            raise SafestressError(
                f"{model} on {dataset}: '{classified}' must name exactly one condition (found {len(mine)}) and "
                f"'{draws}' at least one (found {len(theirs)})"
            )
        rate = prompt_mean_rate(part[part["condition"] == mine[0]])
        draw_rates = [prompt_mean_rate(part[part["condition"] == c]) for c in theirs]
        clean = part[part["condition"] == "clean"]
        rank, p = stats.rank_p(rate, draw_rates)
        rows.append(
            DrawRow(
                str(model),
                str(dataset),
                judge,
                prompt_mean_rate(clean) if not clean.empty else math.nan,
                rate,
                draw_rates,
                float(np.mean(draw_rates)),
                float(np.std(draw_rates, ddof=1)) if len(draw_rates) > 1 else math.nan,
                rank,
                p,
                outcome=outcome,
            )
        )
    if not rows:
        raise SafestressError(f"no condition name contains '{classified}' or '{draws}' for judge {judge}")
    for r, q in zip(rows, stats.holm([r.p for r in rows])):
        r.p_holm, r.verdict = q, stats.verdict(q)
    return rows


DRAW_COLUMNS = (
    "model",
    "dataset",
    "clean %",
    "classified %",
    "draws: rate %",
    "draws mean % (SD)",
    "rank",
    "p (rank)",
    "p (Holm)",
    "verdict",
)


def draw_cells(r: DrawRow) -> list[str]:
    """One row of the table as text."""
    pct = lambda v: "—" if math.isnan(v) else f"{100 * v:.1f}"  # noqa: E731
    sd = "" if math.isnan(r.sd) else f" ({100 * r.sd:.1f})"
    return [
        r.model,
        r.dataset,
        pct(r.clean),
        pct(r.classified),
        ", ".join(pct(v) for v in r.draws),
        f"{pct(r.mean)}{sd}",
        f"{r.rank} of {len(r.draws) + 1}",
        f"{r.p:.3f}",
        f"{r.p_holm:.3f}",
        r.verdict,
    ]


def draw_notes(rows: list[DrawRow], classified: str = "", draws: str = "") -> list[str]:
    """What the table's columns count and the family its Holm correction runs over."""
    if not rows:
        return []
    chosen = (
        f"classified: the condition whose name has `{classified}`; draws: those with `{draws}`. " if classified else ""
    )
    return [
        f"{chosen}Each rate is {OUTCOMES[rows[0].outcome]}; judge {rows[0].judge}.",
        "rank: the classified set among itself and the draws, 1 = the highest rate (ties count against it); "
        f"p (rank) = rank / (draws + 1), one-sided; with {len(rows[0].draws)} draws it is at least "
        f"{1 / (len(rows[0].draws) + 1):.3g}.",
        f"Holm family: the {len(rows)} rows of this table.",
    ]
