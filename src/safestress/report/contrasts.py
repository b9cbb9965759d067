"""Model against model on the same prompts: is one variant's safety more robust than another's?

The rate table compares each condition with the *same model's* clean run. The field's questions
are also across models — does deeper safety training (SFT → DPO, a QuadA-defended copy) refuse
more under the same perturbation, and does the perturbation hurt it *less*? Both are paired
comparisons on the same prompts, so both get the paired tests of :mod:`safestress.stats`:

* **difference in rate**: model − baseline under one condition, per prompt (mean over seeds);
  exact McNemar when both sides have one seed and binary verdicts, else a sign-flip test;
* **difference in effect** (difference in differences): the condition's effect on the model
  (perturbed − clean, per prompt) minus its effect on the baseline, tested by sign flips. "Deeper
  fine-tuning gives no extra protection" is the statement that this difference is zero.

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

_KEY = ["condition", "perturbation", "sites", "strength"]


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


def _per_prompt(rows: Any, metric: str) -> tuple[Any, bool]:
    """Per-prompt mean of the metric over seeds (scored responses only), and whether it is one
    binary verdict per prompt (then the exact McNemar test applies)."""
    scored = rows.dropna(subset=[metric])
    values = scored[metric].astype(float)
    single = bool(scored.groupby("item_id").size().max() == 1) if len(scored) else True
    binary = bool(values.isin([0.0, 1.0]).all())
    return values.groupby(scored["item_id"]).mean(), single and binary


def model_contrasts(frame: Any, judge: str, baseline: str | None = None) -> list[ContrastRow]:
    """Every model of ``frame`` against ``baseline`` (default: the first model name in sorted order)
    under each condition both were run with, for ``judge``'s verdicts. Empty with fewer than two
    models or when the judge has no verdicts on the baseline."""
    df = frame[frame["judge"] == judge]
    models = sorted(df["model"].dropna().unique())
    if len(models) < 2:
        return []
    baseline = baseline or models[0]
    if baseline not in models:  # this judge did not see the baseline: nothing to pair with
        return []
    metric = "harmful" if df["harmful"].notna().any() else "score"
    rows: list[ContrastRow] = []
    for dataset, part in df.groupby("dataset", sort=True):
        base = part[part["model"] == baseline]
        base_conditions = {key: grp for key, grp in base.groupby(_KEY, sort=False)}
        base_clean = _per_prompt(base[base["perturbation"] == "none"], metric)[0]
        for model in models:
            if model == baseline:
                continue
            mine = part[part["model"] == model]
            my_clean = _per_prompt(mine[mine["perturbation"] == "none"], metric)[0]
            groups = sorted(mine.groupby(_KEY, sort=False), key=lambda kv: (kv[0][1] != "none", *kv[0][1:], kv[0][0]))
            for key, grp in groups:
                if key not in base_conditions:
                    continue
                a, a_exact = _per_prompt(grp, metric)
                b, b_exact = _per_prompt(base_conditions[key], metric)
                pair = a.rename("a").to_frame().join(b.rename("b"), how="inner").dropna()
                if pair.empty:
                    continue
                if a_exact and b_exact:
                    p, test = stats.mcnemar_exact(*stats.discordant(pair["b"] > 0.5, pair["a"] > 0.5)), "exact McNemar"
                else:
                    p, test = stats.sign_flip_test((pair["a"] - pair["b"]).to_numpy()), "sign-flip"
                effect, effect_p, n_effect = math.nan, math.nan, 0
                if key[1] != "none":
                    four = pair.join(my_clean.rename("ac"), how="inner").join(base_clean.rename("bc"), how="inner")
                    four = four.dropna()
                    if len(four):
                        d = ((four["a"] - four["ac"]) - (four["b"] - four["bc"])).to_numpy()
                        effect, effect_p, n_effect = float(np.mean(d)), stats.sign_flip_test(d), len(four)
                rows.append(
                    ContrastRow(
                        str(model),
                        str(baseline),
                        str(dataset),
                        judge,
                        str(key[0]),
                        str(key[1]),
                        str(key[2]),
                        float(key[3]),
                        len(pair),
                        float(pair["a"].mean()),
                        float(pair["b"].mean()),
                        float(pair["a"].mean() - pair["b"].mean()),
                        p,
                        test,
                        effect,
                        effect_p,
                        n_effect,
                    )
                )
    for family, target in (("p", "p_holm"), ("effect_p", "effect_p_holm")):
        adjusted = stats.holm([getattr(r, family) for r in rows])
        for r, q in zip(rows, adjusted):
            setattr(r, target, q)
    return rows
