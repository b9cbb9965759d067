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
from dataclasses import dataclass
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
    of counts (bootstrap resamples); NaN where both raters use one and the same class throughout:
    chance agreement is then 1 and κ = 0/0, undefined — perfect agreement on a single class says
    nothing about telling the classes apart, so it must not print as κ = 1."""
    both, a_only, b_only, neither = (np.asarray(c, float) for c in (both, a_only, b_only, neither))
    n = both + a_only + b_only + neither
    observed = (both + neither) / n
    pa, pb = (both + a_only) / n, (both + b_only) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected == 1, np.nan, (observed - expected) / (1 - expected))


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
    kappa = kappa[~np.isnan(kappa)]  # resamples where κ is undefined (one class only) carry no information
    if kappa.size == 0:
        return (math.nan, math.nan)
    return (float(np.quantile(kappa, alpha / 2)), float(np.quantile(kappa, 1 - alpha / 2)))


@dataclass(frozen=True)
class CorrectedRate:
    """A rate estimated from a person's labels of a sample plus a judge's verdicts on everything."""

    estimate: float
    ci: tuple[float, float]
    lam: float  # weight of the judge's verdicts: 0 = the labels alone, 1 = plain PPI
    n_labelled: int
    n_unlabelled: int
    centre: float = math.nan  # the interval's centre (before clipping) and its standard error
    se: float = math.nan
    rectifier_var: float = math.nan  # per-label variance of label − λ·judge (pseudo-counts included)
    judge_var: float = math.nan  # variance of the judge term, λ²·var(mean of the unlabelled verdicts)

    def labels_for(self, half_width: float, level: float = 0.95) -> float:
        """Labels this condition would need for an interval of ± ``half_width``, if the judge
        agreed with them as it does with the labels so far (a planning figure: the variances are
        this sample's); ``inf`` when the judge term alone is wider, ``nan`` without labels."""
        if not (math.isfinite(self.rectifier_var) and math.isfinite(self.judge_var)):
            return math.nan
        room = (half_width / sps.norm.isf((1 - level) / 2)) ** 2 - self.judge_var
        return math.inf if room <= 0 else float(math.ceil(self.rectifier_var / room))


def ppi_power(labels: Any, predictions: Any, unlabelled_predictions: Any) -> float:
    """PPI++'s variance-minimising weight of the judge (Angelopoulos, Duchi & Zrnic 2023) for a
    mean: Cov(label, verdict) on the labelled items over (1 + n/N) Var(verdict) on all items,
    clipped to [0, 1]; 0 when the judge's verdicts do not vary (they then carry no information)."""
    y, f, fu = (np.asarray(a, float) for a in (labels, predictions, unlabelled_predictions))
    n, big_n = y.size, fu.size
    if n < 2 or big_n == 0:
        return 0.0
    var = float(np.var(np.concatenate([f, fu]), ddof=1))
    if var == 0.0:
        return 0.0
    cov = float(np.mean((y - y.mean()) * (f - f.mean())))
    return float(np.clip(cov / ((1 + n / big_n) * var), 0.0, 1.0))


def prediction_powered_rate(
    labels: Sequence[float],
    predictions: Sequence[float],
    unlabelled_predictions: Sequence[float],
    level: float = 0.95,
    pseudo_count: float = 0.5,
    unlabelled_clusters: Sequence[object] | None = None,
) -> CorrectedRate:
    """A rate with a confidence interval from ``n`` labelled items and ``N`` judged ones.

    Why: a judge's rate is biased by its errors, and the errors change with the condition (a
    phrase judge misses lectures; gibberish under strong noise is another failure again), so a
    curve of judge rates can move for the judge's sake. A person labelling a random sample of each
    condition fixes the bias; prediction-powered inference (Angelopoulos et al. 2023, PPI++) uses
    the judge's verdicts on the rest to narrow the interval by as much as the judge agrees with
    the labels. The estimate is ``λ·mean(judge on unlabelled) + mean(label − λ·judge on
    labelled)``, unbiased for any λ, with λ chosen by :func:`ppi_power`; it equals ``ppi_py``'s
    (maintained by the method's authors; a test checks), clipped to [0, 1].

    The interval is PPI's normal interval with one change for small samples: the rectifier
    ``label − λ·judge`` is a difference of matched proportions, and with a good judge a few dozen
    labels often hold no disagreement at all, which makes its estimated variance zero and the
    interval far too narrow (XSTest, 30 labels, a judge at κ 0.88: 88.5% coverage at a nominal
    95%). As Agresti & Min (2005) do for matched proportions, the rectifier's mean and variance
    are taken from its 2×2 table (label × verdict) with ``pseudo_count`` added to each cell;
    ``pseudo_count=0`` gives ``ppi_py``'s interval exactly. Clipped to [0, 1].

    ``unlabelled_clusters`` (e.g. the prompt of each unlabelled response, when a prompt has
    responses under several seeds) makes the judge term's variance cluster-robust: five seeds'
    identical verdicts on one prompt are one observation, not five. The labelled sample should
    then hold one response per prompt (``safestress judge sample`` draws so).
    """
    from ppi_py import ppi_mean_pointestimate

    y, f, fu = (np.asarray(a, float) for a in (labels, predictions, unlabelled_predictions))
    if y.shape != f.shape:
        raise ValueError("labels and predictions must have the same length")
    if not (np.isin(y, (0.0, 1.0)).all() and np.isin(f, (0.0, 1.0)).all() and np.isin(fu, (0.0, 1.0)).all()):
        raise ValueError("labels and predictions must be 0/1")
    n, big_n = y.size, fu.size
    if n == 0:
        return CorrectedRate(math.nan, (math.nan, math.nan), math.nan, 0, big_n)
    lam = ppi_power(y, f, fu)
    with_judge = big_n > 0 and lam > 0.0
    est = float(np.squeeze(ppi_mean_pointestimate(y, f, fu, lam=lam))) if with_judge else float(y.mean())
    # the rectifier y − λ·f over its 2×2 table, pseudo_count added to each cell
    cells = np.array([[a, b] for a in (0.0, 1.0) for b in (0.0, 1.0)])
    counts = np.array([np.sum((y == a) & (f == b)) for a, b in cells], float) + pseudo_count
    values = cells[:, 0] - lam * cells[:, 1]
    total = counts.sum()
    rect_mean = float(counts @ values / total)
    rect_var = float(counts @ (values - rect_mean) ** 2 / total)
    imputed = lam * float(fu.mean()) if with_judge else 0.0
    judge_var = lam**2 * _mean_variance(fu, unlabelled_clusters) if with_judge else 0.0
    var = rect_var / total + judge_var
    se = math.sqrt(var) if n > 1 else math.nan
    half = float(sps.norm.isf((1 - level) / 2) * se)
    centre = imputed + rect_mean
    # a rate outside [0, 1] (few labels, all negative, and a judge false alarm among them) is shown
    # at the bound: clipping can only bring the estimate closer to the true rate
    est = min(1.0, max(0.0, est))
    ci = (max(0.0, centre - half), min(1.0, centre + half))
    return CorrectedRate(est, ci, lam, n, big_n, centre, se, rect_var, judge_var)


def _mean_variance(values: np.ndarray, clusters: Sequence[object] | None) -> float:
    """Variance of the mean of ``values``: var/N for independent values, else the cluster-robust
    sum of squared within-cluster residual totals over N² (equal to var/N with singleton clusters)."""
    big_n = values.size
    if clusters is None:
        return float(values.var()) / big_n
    if len(clusters) != big_n:
        raise ValueError("one cluster per unlabelled prediction")
    _, cluster = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    totals = np.zeros(int(cluster.max()) + 1)
    np.add.at(totals, cluster, values - values.mean())
    return float(np.sum(totals**2)) / big_n**2


def corrected_difference(
    treated: CorrectedRate, control: CorrectedRate, level: float = 0.95
) -> tuple[float, tuple[float, float], float]:
    """Difference of two corrected rates (a perturbed condition minus the clean one): estimate,
    normal interval, two-sided p.

    The two conditions' labels are separate random samples, so their rectifiers are independent;
    the judge's verdicts on the rest come from the same prompts, whose verdicts are positively
    correlated across conditions, and adding the two variances ignores that covariance — the
    interval is conservative there, never too narrow on its account.
    """
    diff = treated.estimate - control.estimate
    se = math.hypot(treated.se, control.se)
    if not math.isfinite(se):
        return diff, (math.nan, math.nan), math.nan
    centre = treated.centre - control.centre
    half = float(sps.norm.isf((1 - level) / 2) * se)
    p = float(2 * sps.norm.sf(abs(centre) / se)) if se > 0 else (1.0 if centre == 0 else 0.0)
    return diff, (centre - half, centre + half), p


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
