"""Anytime-valid decisions for sequential sweeps: a betting confidence sequence for a mean difference.

A sequential sweep looks at a contrast after every round of prompts and stops once it is decided.
A fixed-sample test read at every look would reject a true null far more often than α, so the
interim looks use a *confidence sequence*: a sequence of intervals that holds the true mean at
every sample size at once with probability ≥ 1 − α, so that any data-dependent stopping time keeps
its coverage (Ville's inequality).

The one here is the hedged betting process of Waudby-Smith & Ramdas (2024, JRSS-B): for values
in [−1, 1] (a per-prompt paired difference of verdicts or of mean scores) and a candidate mean
μ, two bettors wager on "above μ" and "below μ" with predictable bets sized by the running
variance; their averaged capital is a nonnegative martingale when the mean is μ, so μ is
rejected once the capital reaches 1/α. It needs no normal approximation and no planned sample
size, it adapts to the variance (a paired difference is mostly zeros), and it is exact at any
sample size, which the simulation in ``benchmarks/bench_sequential.py --simulate`` checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

TRUNCATION = 0.5  # the largest share of capital a bettor stakes (their recommended 1/2)
PRIOR_MEAN, PRIOR_VARIANCE = 0.5, 0.25  # one pseudo-observation on [0, 1], so the first bet is defined


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """The predictable plug-in bet before each observation of ``x`` (on [0, 1]): it grows like
    1/sqrt(t log t) and shrinks with the running variance, and uses only earlier observations."""
    t = np.arange(1, x.size + 1, dtype=float)
    mean = (PRIOR_MEAN + np.cumsum(x)) / (t + 1)
    mean_before = np.concatenate(([PRIOR_MEAN], mean[:-1]))
    variance = (PRIOR_VARIANCE + np.cumsum((x - mean_before) ** 2)) / (t + 1)
    variance_before = np.concatenate(([PRIOR_VARIANCE], variance[:-1]))
    return np.sqrt(2 * math.log(2 / alpha) / (variance_before * t * np.log1p(t)))


def log_capital(values: Sequence[float], means: Sequence[float], alpha: float) -> np.ndarray:
    """log of the hedged capital after each observation, for each candidate mean: an array
    [observations, means]. ``values`` and ``means`` are on [−1, 1]."""
    x = (np.asarray(values, float) + 1) / 2
    m = (np.asarray(means, float) + 1) / 2
    if x.size == 0:
        return np.zeros((0, m.size))
    if np.any((x < 0) | (x > 1)) or np.any((m < 0) | (m > 1)):
        raise ValueError("values and means must lie in [-1, 1]")
    bet = _bets(x, alpha)[:, None]
    with np.errstate(divide="ignore"):
        up = np.minimum(bet, TRUNCATION / m)  # staked on "above m": never more than loses everything at x = 0
        down = np.minimum(bet, TRUNCATION / (1 - m))
    step = x[:, None] - m[None, :]
    # each factor is at least 1 − TRUNCATION > 0, so the logs are finite
    log_up = np.cumsum(np.log1p(up * step), axis=0)
    log_down = np.cumsum(np.log1p(-down * step), axis=0)
    return np.logaddexp(log_up, log_down) - math.log(2)


def rejected(values: Sequence[float], means: Sequence[float], alpha: float) -> np.ndarray:
    """For each candidate mean, whether the confidence sequence has excluded it at some point
    within ``values`` (once excluded, always: the running intersection)."""
    logs = log_capital(values, means, alpha)
    if logs.shape[0] == 0:
        return np.zeros(len(means), bool)
    return logs.max(axis=0) >= math.log(1 / alpha)


GRID = np.linspace(-1.0, 1.0, 801)  # candidate means, 0.0025 apart


def confidence_sequence(values: Sequence[float], alpha: float) -> tuple[float, float]:
    """The confidence sequence's interval after ``values`` (its running intersection), on the grid
    of candidate means widened by one grid step, so the reported interval never undercovers."""
    out = rejected(values, GRID, alpha)
    keep = GRID[~out]
    if keep.size == 0:  # every mean excluded: data this extreme have probability < α under any mean
        mean = float(np.mean(values))
        return mean, mean
    step = GRID[1] - GRID[0]
    return max(-1.0, float(keep.min()) - step), min(1.0, float(keep.max()) + step)


def interim_decision(values: Sequence[float], alpha: float, margin: float | None = None) -> str | None:
    """ "different" when the confidence sequence has excluded a zero mean; "equivalent" when it has
    excluded every mean at or beyond ±``margin``; else None (not decided yet). Both claims keep
    their error rate ≤ α at any stopping time."""
    if len(values) == 0:
        return None
    if rejected(values, [0.0], alpha)[0]:
        return "different"
    if margin is None:
        return None
    edges = [-margin, margin]  # the margins themselves, wherever the grid falls
    if not rejected(values, edges, alpha).all():
        return None
    if rejected(values, GRID[np.abs(GRID) >= margin], alpha).all():  # and everything beyond them
        return "equivalent"
    return None
