"""Training methods compared at the level of training runs.

Why: a method (DPO, QuadA, freezing the classified units) is a random procedure. Its training
seed changes the model it produces. Two trained models compared on the same prompts measure
those two models. Only several runs per arm measure the method, and then the run is the unit.
A prompt-level p of 1e-12 between one QuadA model and one DPO model says nothing about QuadA.

* :func:`runs_difference`: Welch's t-test and interval on the per-run rates of two arms. The
  prompts are held fixed (every run answers the same prompts), so the variance is the
  between-run variance of the method on this prompt set.
* :func:`runs_permutation_p`: the exact permutation test over the arms' run labels. It assumes
  nothing about the shape of the run rates, but with 3 runs per arm its smallest two-sided p is
  0.1, and it says so.
* :func:`rank_p`: a classified set against random draws of its size (SSAH's control). It gives
  the classified set's rank among all of them, and the one-sided p = rank / (draws + 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


def runs_difference(
    arm: Sequence[float], baseline: Sequence[float], alpha: float = 0.05
) -> tuple[float, tuple[float, float], float]:
    """mean(arm) − mean(baseline) of per-run rates, its Welch interval and two-sided Welch p.
    NaN interval and p with fewer than two runs in either arm, where no run-level test exists."""
    a, b = np.asarray(arm, float), np.asarray(baseline, float)
    diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return diff, (math.nan, math.nan), math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:  # every run of both arms gave the same rate: no spread to test against
        return diff, (diff, diff), (1.0 if diff == 0 else math.nan)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(sps.t.isf(alpha / 2, df) * se)
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    return diff, (diff - half, diff + half), p


def runs_permutation_p(arm: Sequence[float], baseline: Sequence[float]) -> float:
    """Exact two-sided permutation p of the difference of mean run rates over every relabelling
    of the runs (C(k + m, k) of them)."""
    a, b = np.asarray(arm, float), np.asarray(baseline, float)
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    tol = 1e-12 * max(1.0, observed)
    hits = total = 0
    for chosen in itertools.combinations(range(pooled.size), a.size):
        mask = np.zeros(pooled.size, bool)
        mask[list(chosen)] = True
        hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - tol
        total += 1
    return hits / total


def rank_p(classified: float, draws: Sequence[float], higher_is_better: bool = True) -> tuple[int, float]:
    """The classified set's rank among itself and the random draws (1 = best; ties count
    against it) and the one-sided p of "the classified set is no better than a random one"."""
    values = np.asarray(draws, float)
    better = values >= classified if higher_is_better else values <= classified
    rank = int(better.sum()) + 1
    return rank, rank / (values.size + 1)
