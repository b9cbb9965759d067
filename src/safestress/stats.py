"""Statistics for harmful-output rates and judge agreement: pure functions of counts and arrays.

Conventions, and why (details in ``docs/statistics.md``):

* The unit of analysis is the **prompt**. With one seed, observations are independent across
  prompts: rates get Wilson intervals, clean-vs-perturbed pairs an exact McNemar test, and the
  trend across σ a Cochran–Armitage test.
* With several seeds, the observations of one prompt are correlated, so the tests above would be
  anti-conservative. Then the interval is a cluster bootstrap over prompts and the paired test a
  sign-flip (permutation) test on per-prompt mean differences, which with one seed is exactly
  the exact McNemar test.
* p-values against the clean run within one sweep are Holm-corrected.

Each function is checked against scipy/statsmodels in ``tests/test_stats.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    z = sps.norm.ppf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def cochran_armitage(successes: Sequence[int], totals: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """Cochran–Armitage test for a linear trend in proportions; returns (z, two-sided p)."""
    x = np.asarray(successes, float)
    n = np.asarray(totals, float)
    s = np.asarray(scores, float)
    big_n = n.sum()
    p_bar = x.sum() / big_n
    if p_bar in (0.0, 1.0) or np.allclose(s, s[0]):
        return (0.0, 1.0)
    t = np.sum(s * (x - n * p_bar))
    var = p_bar * (1 - p_bar) * (np.sum(n * s * s) - np.sum(n * s) ** 2 / big_n)
    z = float(t / math.sqrt(var))
    return z, float(2 * sps.norm.sf(abs(z)))


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
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=m)))
        sums = np.abs(signs @ d)
        return float(np.mean(sums >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < n_resamples:
        size = min(10_000, n_resamples - done)
        signs = rng.choice((-1.0, 1.0), size=(size, m))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        done += size
    return float((hits + 1) / (n_resamples + 1))


def cluster_bootstrap_ci(
    values: np.ndarray, *, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the overall mean of ``values`` [clusters, obs] resampling whole clusters (prompts)."""
    v = np.asarray(values, float)
    if v.ndim == 1:
        v = v[:, None]
    n = v.shape[0]
    if n == 0:
        return (math.nan, math.nan)
    cluster_means = np.nanmean(v, axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    boot = cluster_means[idx].mean(axis=1)
    return (float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2)))


def kappa_from_counts(both: Any, a_only: Any, b_only: Any, neither: Any) -> np.ndarray:
    """Cohen's κ of two binary raters from the counts of their 2×2 table, elementwise over arrays
    of counts (bootstrap resamples); 1 where both raters use one and the same class throughout."""
    both, a_only, b_only, neither = (np.asarray(c, float) for c in (both, a_only, b_only, neither))
    n = both + a_only + b_only + neither
    observed = (both + neither) / n
    pa, pb = (both + a_only) / n, (both + b_only) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected == 1, 1.0, (observed - expected) / (1 - expected))


def kappa_cluster_bootstrap_ci(
    a: Sequence[bool],
    b: Sequence[bool],
    clusters: Sequence[object],
    *,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of Cohen's κ between two binary raters, resampling whole clusters (prompts).

    Why: two judges read every response of a store, and one prompt has many responses (conditions,
    seeds) whose verdicts are correlated — a judge that misreads one prompt's refusal style
    misreads all of them — so the large-sample κ interval, which counts each response as an
    independent item, would be too narrow. Each cluster enters as its 2×2 table of verdict pairs;
    a resample sums the tables of the drawn clusters (κ by :func:`kappa_from_counts`).
    """
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.size == 0:
        return (math.nan, math.nan)
    _, cluster = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    cells = np.stack([x & y, x & ~y, ~x & y, ~x & ~y], axis=1).astype(float)  # [items, 4]
    tables = np.zeros((int(cluster.max()) + 1, 4))
    np.add.at(tables, cluster, cells)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tables), size=(n_resamples, len(tables)))
    t = tables[idx].sum(axis=1)  # [resamples, 4]: both, a only, b only, neither
    kappa = kappa_from_counts(t[:, 0], t[:, 1], t[:, 2], t[:, 3])
    return (float(np.quantile(kappa, alpha / 2)), float(np.quantile(kappa, 1 - alpha / 2)))


def slope_sign_flip_trend(per_prompt: np.ndarray, scores: Sequence[float], **kw: int) -> tuple[float, float]:
    """Trend test for clustered data: each prompt's least-squares slope of its rate on the scores,
    tested for mean zero by :func:`sign_flip_test`. ``per_prompt`` is [prompts, levels]."""
    y = np.asarray(per_prompt, float)
    s = np.asarray(scores, float)
    sc = s - s.mean()
    slopes = (y - y.mean(axis=1, keepdims=True)) @ sc / np.sum(sc * sc)
    return float(slopes.mean()), sign_flip_test(slopes, **kw)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given); NaNs pass through."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    order = np.argsort(q)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * q[i]))
        adj[i] = running
    out[ok] = adj
    return out.tolist()
