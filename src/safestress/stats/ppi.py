"""A rate from a person's labels of a sample plus a judge's verdicts on the rest (PPI++)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps


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
