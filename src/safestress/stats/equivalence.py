"""Equivalence (TOST) and the three words a contrast may be reported with.

A non-significant difference is not evidence of no difference: "no extra protection" is a claim
that the difference lies within a margin, and it needs its own test. The TOST p-value here is
read off the contrast's own interval (the smallest α at which the 1 − 2α interval lies inside
±margin), so an equivalence claim uses the same interval as the table prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable

WORDS = ("different", "equivalent", "inconclusive")


def tost_p(interval_at: Callable[[float], tuple[float, float]], margin: float, tol: float = 1e-6) -> float:
    """TOST p-value for |effect| < ``margin`` by inverting an interval: ``interval_at(alpha)`` is
    the two-sided 1 − alpha interval of the effect. Equivalence at level α holds when the 1 − 2α
    interval lies inside (−margin, margin); the p-value is the smallest such α (1.0 when even the
    point estimate is outside, NaN when the interval is undefined)."""

    def inside(a: float) -> bool | None:
        lo, hi = interval_at(2 * a)
        if math.isnan(lo) or math.isnan(hi):
            return None
        return -margin < lo and hi < margin

    at_point = inside(0.5)
    if at_point is None:
        return math.nan
    if not at_point:
        return 1.0
    low, high = tol, 0.5
    if inside(low):
        return low
    while high - low > tol:
        mid = (low + high) / 2
        if inside(mid):
            high = mid
        else:
            low = mid
    return high


def rejects(p: float, alpha: float = 0.05) -> bool:
    """Whether a (Holm-adjusted) p-value rejects at ``alpha``; an undefined p never does."""
    return not math.isnan(p) and p < alpha


def verdict(p_holm: float, p_tost_holm: float = math.nan, margin: float | None = None, alpha: float = 0.05) -> str:
    """The word a contrast is reported with: "different" when the difference test rejects within
    its Holm family, "equivalent within ±m pts" when the equivalence test does, else
    "inconclusive" (also when no margin was declared: a non-significant difference alone does not
    say "same")."""
    if rejects(p_holm, alpha):
        return "different"
    if margin is not None and rejects(p_tost_holm, alpha):
        return equivalent_within(margin)
    return "inconclusive"


def equivalent_within(margin: float) -> str:
    """How an equivalence claim is written: with its margin (a share), in points."""
    return f"equivalent within ±{100 * margin:g} pts"
