"""Paired comparisons of two conditions (or two models) on the same prompts: tests and intervals.

Tests: the exact McNemar test for one binary verdict per prompt, sign flips of per-prompt
differences otherwise (with one seed it *is* the exact McNemar test). Intervals: Newcombe's
square-and-add interval for paired proportions (one seed), and the same square-and-add rule
(MOVER, Zou & Donner 2008) on cluster-Wilson intervals for several seeds and for a difference of
differences. None of them is zero-width, and each has a correct answer at 0% and 100%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from safestress.stats.rates import as_matrix, cluster_wilson_ci, wilson_ci


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (0→1) and c (1→0)."""
    m = b + c
    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), m, 0.5)))


def discordant(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int]:
    """(b, c): pairs that went False→True and True→False."""
    x = np.asarray(before, bool)
    y = np.asarray(after, bool)
    return int(np.sum(~x & y)), int(np.sum(x & ~y))


def sign_flip_test(diffs: Sequence[float], *, n_resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0 by flipping the sign of each difference.

    Exact (full enumeration) for up to 20 non-zero differences, Monte Carlo otherwise. With
    diffs in {-1, 0, 1} it equals the exact McNemar test.
    """
    d = np.asarray(diffs, float)
    d = d[d != 0]
    m = d.size
    if m == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, observed)
    if m <= 20:
        # every sign pattern, as the bits of 0 … 2^m − 1, in chunks that stay small in memory
        hits, bits = 0, np.arange(m)
        for start in range(0, 2**m, 1 << 16):
            codes = np.arange(start, min(2**m, start + (1 << 16)))
            signs = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)
            hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        return hits / 2**m
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < n_resamples:
        size = min(10_000, n_resamples - done)
        signs = rng.choice((-1.0, 1.0), size=(size, m))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        done += size
    return float((hits + 1) / (n_resamples + 1))


def mover_difference(
    est_a: float, ci_a: tuple[float, float], est_b: float, ci_b: tuple[float, float], corr: float = 0.0
) -> tuple[float, float]:
    """Interval of ``est_a − est_b`` recovered from each estimate's own interval and the correlation
    of the two estimates (MOVER, Zou & Donner 2008; with Wilson intervals and φ it is Newcombe's
    square-and-add interval). Why: it inherits the component intervals' behaviour at 0% and 100%,
    where a normal interval of the difference collapses."""
    (la, ua), (lb, ub) = ci_a, ci_b
    d = est_a - est_b
    down_a, up_b = est_a - la, ub - est_b
    up_a, down_b = ua - est_a, est_b - lb
    lo = d - math.sqrt(max(0.0, down_a**2 + up_b**2 - 2 * corr * down_a * up_b))
    hi = d + math.sqrt(max(0.0, up_a**2 + down_b**2 - 2 * corr * up_a * down_b))
    return lo, hi


def newcombe_paired_ci(before: Sequence[bool], after: Sequence[bool], alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's (1998) square-and-add interval for mean(after) − mean(before) of paired binary
    verdicts (his method 10): Wilson intervals of the two rates combined with φ, the correlation
    of the pairs, continuity-corrected towards 0 when positive, and 0 when a margin is empty."""
    x = np.asarray(before, bool)
    y = np.asarray(after, bool)
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    a, b = int(np.sum(x & y)), int(np.sum(x & ~y))
    c, d = int(np.sum(~x & y)), int(np.sum(~x & ~y))
    margins = float(a + b) * float(c + d) * float(a + c) * float(b + d)
    cross = a * d - b * c
    phi = 0.0  # no evidence of correlation, or too little to survive the continuity correction
    if margins > 0 and not 0 <= cross <= n / 2:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    p_after, p_before = (a + c) / n, (a + b) / n
    lo, hi = mover_difference(p_after, wilson_ci(a + c, n, alpha), p_before, wilson_ci(a + b, n, alpha), phi)
    return max(-1.0, lo), min(1.0, hi)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, 0 when either side does not vary (then it carries no information)."""
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _paired_rows(before: Any, after: Any) -> tuple[np.ndarray, np.ndarray]:
    """The prompts (rows) both sides scored at least once."""
    x, y = as_matrix(before), as_matrix(after)
    if x.shape[0] != y.shape[0]:
        raise ValueError("before and after must have one row per prompt, the same prompts")
    keep = ~np.all(np.isnan(x), axis=1) & ~np.all(np.isnan(y), axis=1)
    return x[keep], y[keep]


def _one_binary_verdict_each(x: np.ndarray, y: np.ndarray) -> bool:
    """One verdict per prompt on both sides, each 0 or 1: the exact binary methods apply."""
    values = np.concatenate([x[~np.isnan(x)], y[~np.isnan(y)]])
    return x.shape[1] == 1 and y.shape[1] == 1 and bool(np.isin(values, (0.0, 1.0)).all())


def paired_test(before: Any, after: Any, n_resamples: int = 100_000) -> tuple[float, str]:
    """Two-sided p of "after and before have the same mean" for verdicts [prompts, seeds] of the same
    prompts, and the test's name: exact McNemar for one binary verdict per prompt on each side,
    else sign flips of the per-prompt mean differences. Prompts either side did not score are
    left out."""
    x, y = _paired_rows(before, after)
    if x.shape[0] == 0:
        return math.nan, ""
    mx, my = np.nanmean(x, axis=1), np.nanmean(y, axis=1)
    if _one_binary_verdict_each(x, y):
        return mcnemar_exact(*discordant(mx > 0.5, my > 0.5)), "exact McNemar"
    return sign_flip_test(my - mx, n_resamples=n_resamples), "sign-flip"


def paired_difference(before: Any, after: Any, alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """Δ = mean over prompts of (after − before) per-prompt means, and its interval, for verdicts
    [prompts, seeds] (NaN where unscored) of the same prompts under two conditions.

    One binary verdict per prompt on each side: Newcombe's interval. Otherwise MOVER on the two
    sides' cluster-Wilson intervals, with the correlation of the per-prompt means; its coverage
    is measured in ``benchmarks/stat_calibration.py``.
    """
    x, y = _paired_rows(before, after)
    if x.shape[0] == 0:
        return math.nan, (math.nan, math.nan)
    mx, my = np.nanmean(x, axis=1), np.nanmean(y, axis=1)
    delta = float(np.mean(my - mx))
    if _one_binary_verdict_each(x, y):
        return delta, newcombe_paired_ci(mx > 0.5, my > 0.5, alpha)
    lo, hi = mover_difference(
        float(np.mean(my)), cluster_wilson_ci(y, alpha), float(np.mean(mx)), cluster_wilson_ci(x, alpha), _corr(mx, my)
    )
    return delta, (max(-1.0, lo), min(1.0, hi))


def difference_in_differences(
    before_a: Any, after_a: Any, before_b: Any, after_b: Any, alpha: float = 0.05
) -> tuple[float, tuple[float, float]]:
    """Δ effect = (after_a − before_a) − (after_b − before_b), per prompt, averaged over the prompts
    all four sides scored, with its interval: MOVER on the two paired intervals of
    :func:`paired_difference`, with the correlation of the per-prompt effects. Why: "model A loses
    no more safety to noise than model B" is a statement about this quantity, and its interval
    bounds how much more A can lose."""
    sides = [as_matrix(v) for v in (before_a, after_a, before_b, after_b)]
    keep = np.logical_and.reduce([~np.all(np.isnan(s), axis=1) for s in sides])
    sides = [s[keep] for s in sides]
    if not keep.any():
        return math.nan, (math.nan, math.nan)
    da, ci_a = paired_difference(sides[0], sides[1], alpha)
    db, ci_b = paired_difference(sides[2], sides[3], alpha)
    means = [np.nanmean(s, axis=1) for s in sides]
    corr = _corr(means[1] - means[0], means[3] - means[2])
    lo, hi = mover_difference(da, ci_a, db, ci_b, corr)
    return da - db, (max(-2.0, lo), min(2.0, hi))
