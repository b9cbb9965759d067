"""Model against model on the same prompts: is one variant's safety more robust than another's?

The rate table compares each condition with the *same model's* clean run. The field's questions
are also across models — does deeper safety training (SFT → DPO, a QuadA-defended copy) refuse
more under the same perturbation, and does the perturbation hurt it *less*? Both are paired
comparisons on the same prompts, so both get the paired tests of :mod:`safestress.stats`:

* **difference in rate**: model − baseline under one condition, per prompt (mean over seeds);
  exact McNemar when both sides have one seed and binary verdicts, else a sign-flip test;
  Newcombe's paired interval (MOVER on cluster-Wilson intervals with several seeds);
* **difference in effect** (difference in differences): the condition's effect on the model
  (perturbed − clean, per prompt) minus its effect on the baseline, tested by sign flips, with a
  MOVER interval. "Deeper fine-tuning gives no extra protection" is the statement that this
  difference lies within a declared margin: ``margin`` adds the TOST.

A condition is matched across models by its label, perturbation, sites and strength; noise is drawn
per model (its hidden size differs), so the pairing is by prompt, not by noise draw. Each family
of p-values is Holm-corrected across the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from safestress import stats
from safestress.report.summary import CONDITION_KEY, verdict_values


@dataclass
class ContrastRow:
    model: str
    baseline: str
    dataset: str
    judge: str
    condition: str
    perturbation: str
    sites: str
    strength: float
    n_prompts: int  # prompts both models have a scored response to under this condition
    value: float  # the model's rate on those prompts
    baseline_value: float
    delta: float  # value − baseline_value
    p: float
    test: str
    effect_delta: float  # (model perturbed − clean) − (baseline perturbed − clean), per prompt, averaged
    effect_p: float
    n_effect: int  # prompts with all four per-prompt rates
    p_holm: float = math.nan
    effect_p_holm: float = math.nan
    delta_ci_low: float = math.nan  # Newcombe (one binary verdict per prompt each) or MOVER, never zero-width
    delta_ci_high: float = math.nan
    effect_ci_low: float = math.nan  # MOVER on the two models' paired intervals
    effect_ci_high: float = math.nan
    p_tost: float = math.nan  # equivalence within ±margin of Δ, and of Δ effect, when a margin is given
    effect_p_tost: float = math.nan
    p_tost_holm: float = math.nan
    effect_p_tost_holm: float = math.nan
    verdict: str = ""  # stats.verdict of Δ
    # stats.verdict of Δ effect: "deeper training gives no extra protection" needs "equivalent"
    effect_verdict: str = ""


def _matrix(rows: Any, metric: str) -> Any:
    """prompts × seeds table of the metric (NaN where unscored)."""
    return rows.pivot_table(index="item_id", columns="seed", values=metric, aggfunc="first", dropna=False)


def _aligned(items: Any, *tables: Any) -> list[np.ndarray]:
    return [t.reindex(items).to_numpy(dtype=float) for t in tables]


def model_contrasts(
    frame: Any, judge: str, baseline: str | None = None, margin: float | None = None
) -> list[ContrastRow]:
    """Every model of ``frame`` against ``baseline`` (default: the first model name in sorted order)
    under each condition both were run with, for ``judge``'s verdicts. Empty with fewer than two
    models or when the judge has no verdicts on the baseline. ``margin`` (a share) adds
    equivalence tests of Δ and Δ effect."""
    df = frame[frame["judge"] == judge]
    models = sorted(df["model"].dropna().unique())
    if len(models) < 2:
        return []
    baseline = baseline or models[0]
    if baseline not in models:  # this judge did not see the baseline: nothing to pair with
        return []
    df = df.assign(verdict_value=verdict_values(df))
    metric = "verdict_value"
    rows: list[ContrastRow] = []
    for dataset, part in df.groupby("dataset", sort=True):
        base = part[part["model"] == baseline]
        base_conditions = {key: grp for key, grp in base.groupby(CONDITION_KEY, sort=False)}
        base_clean = _matrix(base[base["perturbation"] == "none"], metric)
        for model in models:
            if model == baseline:
                continue
            mine = part[part["model"] == model]
            my_clean = _matrix(mine[mine["perturbation"] == "none"], metric)
            groups = sorted(
                mine.groupby(CONDITION_KEY, sort=False), key=lambda kv: (kv[0][1] != "none", *kv[0][1:], kv[0][0])
            )
            for key, grp in groups:
                if key not in base_conditions:
                    continue
                row = _contrast(
                    (str(model), str(baseline), str(dataset), judge),
                    key,
                    _matrix(grp, metric),
                    _matrix(base_conditions[key], metric),
                    my_clean,
                    base_clean,
                    margin,
                )
                if row is not None:
                    rows.append(row)
    for family in ("p", "effect_p", "p_tost", "effect_p_tost"):
        for r, q in zip(rows, stats.holm([getattr(r, family) for r in rows])):
            setattr(r, f"{family}_holm", q)
    for r in rows:
        r.verdict = stats.verdict(r.p_holm, r.p_tost_holm, margin)
        if r.n_effect:
            r.effect_verdict = stats.verdict(r.effect_p_holm, r.effect_p_tost_holm, margin)
    return rows


def _contrast(
    names: tuple[str, str, str, str],
    key: tuple[str, str, str, float],
    mine: Any,
    base: Any,
    my_clean: Any,
    base_clean: Any,
    margin: float | None,
) -> ContrastRow | None:
    """One model against the baseline under one condition: Δ and, for a perturbation, Δ effect."""
    items = mine.index.union(base.index)
    a, b = _aligned(items, mine, base)
    keep = ~np.all(np.isnan(a), axis=1) & ~np.all(np.isnan(b), axis=1)
    if not keep.any():
        return None
    a, b = a[keep], b[keep]
    delta, delta_ci = stats.paired_difference(b, a)
    p, test = stats.paired_test(b, a)
    row = ContrastRow(
        *names,
        condition=str(key[0]),
        perturbation=str(key[1]),
        sites=str(key[2]),
        strength=float(key[3]),
        n_prompts=int(keep.sum()),
        value=float(np.mean(np.nanmean(a, axis=1))),
        baseline_value=float(np.mean(np.nanmean(b, axis=1))),
        delta=delta,
        p=p,
        test=test,
        effect_delta=math.nan,
        effect_p=math.nan,
        n_effect=0,
        delta_ci_low=delta_ci[0],
        delta_ci_high=delta_ci[1],
    )
    if margin is not None:
        row.p_tost = stats.tost_p(lambda al: stats.paired_difference(b, a, al)[1], margin)
    if key[1] == "none":
        return row
    four = _aligned(items[keep], my_clean, mine, base_clean, base)
    full = np.logical_and.reduce([~np.all(np.isnan(m), axis=1) for m in four])
    if not full.any():
        return row
    four = [m[full] for m in four]
    means = [np.nanmean(m, axis=1) for m in four]
    d = (means[1] - means[0]) - (means[3] - means[2])
    row.effect_delta, (row.effect_ci_low, row.effect_ci_high) = stats.difference_in_differences(*four)
    row.effect_p, row.n_effect = stats.sign_flip_test(d), int(full.sum())
    if margin is not None:
        row.effect_p_tost = stats.tost_p(lambda al: stats.difference_in_differences(*four, alpha=al)[1], margin)
    return row
