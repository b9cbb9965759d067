"""Trend of a rate across strengths (σ = 0 being the clean run)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from safestress.stats.paired import sign_flip_test


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


def slope_sign_flip_trend(per_prompt: np.ndarray, scores: Sequence[float], **kw: int) -> tuple[float, float]:
    """Trend test for clustered data: each prompt's least-squares slope of its rate on the scores,
    tested for mean zero by :func:`sign_flip_test`. ``per_prompt`` is [prompts, levels]."""
    y = np.asarray(per_prompt, float)
    s = np.asarray(scores, float)
    sc = s - s.mean()
    slopes = (y - y.mean(axis=1, keepdims=True)) @ sc / np.sum(sc * sc)
    return float(slopes.mean()), sign_flip_test(slopes, **kw)
