"""Training methods against each other at the run level: several trained models per method ("arm").

The rate table and the model contrasts compare trained *models*. A method comparison needs each
arm's runs (the same recipe, different training seeds) and a test whose unit is the run
(:mod:`safestress.stats.runs`). Each arm's runs are listed by model name (``safestress results
--arm dpo=dpo-s0,dpo-s1,dpo-s2 --arm quada=…``). The first arm is the baseline.

For every condition all arms were run with, the table gives:

* each run's rate and the arm's mean and spread (SD, min–max over runs);
* the difference of mean rates against the baseline arm, with Welch's interval, Welch p and the
  exact permutation p over runs;
* the same for the condition's *effect* (perturbed − clean, per run), the run-level test of
  "does this method lose less to the perturbation".

Rates are over each run's coherent answers to the condition's prompts, as in the rate table
(``outcome="rate"``). A treatment that breaks answers moves the other outcomes instead, so the
same tests run on any of the three shares of *all* responses (``summary.OUTCOMES``): flagged with
incoherent counted as not flagged, safe (coherent and not flagged), incoherent.
Holm runs over the table's Δ tests, and separately over its Δ-effect tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safestress import stats
from safestress.errors import SafestressError
from safestress.report.summary import CONDITION_KEY, outcome_values


@dataclass
class ArmRow:
    arm: str
    baseline: str
    dataset: str
    judge: str
    condition: str
    perturbation: str
    sites: str
    strength: float
    run_rates: list[float]  # one per run, in the order the arm lists its models
    mean: float
    sd: float  # between-run standard deviation (ddof 1); NaN with one run
    delta: float = math.nan  # mean − baseline arm's mean
    delta_ci: tuple[float, float] = (math.nan, math.nan)
    p: float = math.nan  # Welch, runs as the unit
    p_perm: float = math.nan  # exact permutation over runs
    p_holm: float = math.nan
    effect_delta: float = math.nan  # (perturbed − clean) per run, arm mean − baseline mean
    effect_ci: tuple[float, float] = (math.nan, math.nan)
    effect_p: float = math.nan
    effect_p_holm: float = math.nan
    verdict: str = ""
    effect_verdict: str = ""
    run_effects: list[float] = field(default_factory=list)
    outcome: str = "rate"  # what the rates count (summary.OUTCOMES)


def parse_arms(items: list[str] | None) -> dict[str, list[str]]:
    """``NAME=MODEL,MODEL,…`` items as an ordered dict of arm → models."""
    arms: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, models = item.partition("=")
        runs = [m.strip() for m in models.split(",") if m.strip()]
        if not sep or not name.strip() or not runs:
            raise SafestressError(f"--arm expects NAME=MODEL,MODEL,…, got '{item}'")
        if name.strip() in arms:
            raise SafestressError(f"arm '{name.strip()}' is given twice")
        arms[name.strip()] = runs
    return arms


def prompt_mean_rate(rows: Any) -> float:
    """One model's rate under one condition (a training run's, a pruned set's): the mean over
    prompts of per-prompt means of ``value`` (several seeds), scored rows only."""
    scored = rows.dropna(subset=["value"])
    if scored.empty:
        return math.nan
    return float(scored.groupby("item_id")["value"].mean().mean())


def arm_rows(frame: Any, judge: str, arms: dict[str, list[str]], outcome: str = "rate") -> list[ArmRow]:
    """Every arm against the first one, per dataset and condition all runs were evaluated under;
    ``outcome`` (``summary.OUTCOMES``) is what each run's rate counts."""
    if len(arms) < 2:
        raise SafestressError("a run-level comparison needs at least two arms (--arm NAME=MODEL,… twice)")
    df = frame[frame["judge"] == judge].copy()
    stored = set(df["model"].dropna())
    missing = sorted({m for runs in arms.values() for m in runs} - stored)
    if missing:
        known = ", ".join(sorted(stored))
        raise SafestressError(f"no verdicts of {judge} for model(s) {', '.join(missing)}; stored: {known}")
    df["value"] = outcome_values(df, outcome)
    baseline = next(iter(arms))
    rows: list[ArmRow] = []
    for dataset, part in df.groupby("dataset", sort=True):
        rates = {  # (arm, condition key) → per-run rates
            (arm, key): [prompt_mean_rate(grp[grp["model"] == m]) for m in runs]
            for arm, runs in arms.items()
            for key, grp in part[part["model"].isin(runs)].groupby(CONDITION_KEY, sort=False)
        }
        keys = sorted({k for _, k in rates}, key=lambda k: (k[1] != "none", k[1], k[2], k[3]))
        clean = next((k for k in keys if k[1] == "none"), None)
        for key in keys:
            for arm in arms:
                if (arm, key) not in rates or (baseline, key) not in rates:
                    continue
                rows.append(_arm_row(arm, baseline, str(dataset), judge, key, rates, clean))
    for family in ("p", "effect_p"):
        for r, q in zip(rows, stats.holm([getattr(r, family) for r in rows])):
            setattr(r, f"{family}_holm", q)
    for r in rows:
        r.outcome = outcome
        if r.arm != baseline:
            r.verdict = stats.verdict(r.p_holm)
            if not math.isnan(r.effect_p):
                r.effect_verdict = stats.verdict(r.effect_p_holm)
    return rows


def _arm_row(
    arm: str,
    baseline: str,
    dataset: str,
    judge: str,
    key: tuple[str, str, str, float],
    rates: dict[tuple[str, Any], list[float]],
    clean: tuple[str, str, str, float] | None,
) -> ArmRow:
    mine = [r for r in rates[(arm, key)] if not math.isnan(r)]
    row = ArmRow(
        arm,
        baseline,
        dataset,
        judge,
        str(key[0]),
        str(key[1]),
        str(key[2]),
        float(key[3]),
        run_rates=rates[(arm, key)],
        mean=float(np.mean(mine)) if mine else math.nan,
        sd=float(np.std(mine, ddof=1)) if len(mine) > 1 else math.nan,
    )
    if arm == baseline:
        return row
    theirs = [r for r in rates[(baseline, key)] if not math.isnan(r)]
    row.delta, row.delta_ci, row.p = stats.runs_difference(mine, theirs)
    row.p_perm = stats.runs_permutation_p(mine, theirs) if mine and theirs else math.nan
    if key[1] != "none" and clean is not None and (arm, clean) in rates and (baseline, clean) in rates:
        row.run_effects = [a - c for a, c in zip(rates[(arm, key)], rates[(arm, clean)])]
        base_effects = [a - c for a, c in zip(rates[(baseline, key)], rates[(baseline, clean)])]
        ok_mine = [e for e in row.run_effects if not math.isnan(e)]
        ok_base = [e for e in base_effects if not math.isnan(e)]
        row.effect_delta, row.effect_ci, row.effect_p = stats.runs_difference(ok_mine, ok_base)
    return row
