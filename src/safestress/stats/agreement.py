"""Agreement of two binary raters: Cohen's κ, undefined where it is 0/0, and its cluster bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


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
