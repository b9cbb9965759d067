"""Analyses built from ordinary sweeps: layer sensitivity, the ASR–perplexity trade-off, MVA search.

Each analysis is a set of sweep configurations run through the core flow (plan → execute →
store → summarize), so every generation is stored, resumable and shared with later runs; the
analysis only chooses the conditions and reads the summary rows back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from safestress.config import SweepConfig
from safestress.errors import SafestressError
from safestress.execution import execute
from safestress.report.labels import labelled
from safestress.report.summary import RateRow, attach_perplexity, summarize
from safestress.store import Store
from safestress.sweep import plan_sweep

Progress = Callable[[int, int], None]


def run_rows(cfg: SweepConfig, progress: Progress | None = None) -> list[RateRow]:
    """Execute ``cfg`` (resuming from its store) and return the first judge's summary rows."""
    plan = plan_sweep(cfg)
    with Store(cfg.store) as store:
        execute(plan, store, progress)
        frame = labelled(plan.frame(store), store)
        rows, _ = summarize(frame, plan.judges[0].key)
        attach_perplexity(rows, frame, store, plan.ppl_metric)
    return rows


def layer_windows(n_layers: int, window: int, site: str) -> list[str]:
    """``blocks.A-B.<site>`` patterns covering every layer in consecutive windows."""
    if window < 1:
        raise SafestressError("--window must be at least 1")
    return [f"blocks.{a}-{min(a + window, n_layers) - 1}.{site}" for a in range(0, n_layers, window)]


@dataclass
class WindowResult:
    sites: str
    first_layer: int
    rate: float  # the judge's rate: its outcome (complied, harmful …), named in every table
    ci_low: float
    ci_high: float
    n: int
    p: float
    incoherent: float


def layer_sensitivity(rows: list[RateRow]) -> tuple[RateRow, list[WindowResult]]:
    """The clean row and one result per layer window (in layer order)."""
    clean = next((r for r in rows if r.perturbation == "none"), None)
    if clean is None:
        raise SafestressError("the sweep has no clean condition")
    out = []
    for r in rows:
        if r.perturbation == "none":
            continue
        first = int(r.sites.split(".")[1].split("-")[0])
        out.append(WindowResult(r.sites, first, r.value, r.ci_low, r.ci_high, r.n, r.p, r.incoherent))
    return clean, sorted(out, key=lambda w: w.first_layer)


@dataclass
class MvaPoint:
    strength: float
    rate: float  # the judge's rate: its outcome (complied, harmful …), named in every table
    ci_low: float
    ci_high: float
    n: int
    ppl: float
    p: float
    admissible: bool


def mva_points(rows: list[RateRow], max_ppl: float | None) -> list[MvaPoint]:
    """Every perturbed strength with its ASR, perplexity and whether it meets the perplexity bound."""
    out = []
    for r in rows:
        if r.perturbation == "none":
            continue
        ok = max_ppl is None or (not math.isnan(r.ppl) and r.ppl <= max_ppl)
        out.append(MvaPoint(r.strength, r.value, r.ci_low, r.ci_high, r.n, r.ppl, r.p, ok))
    return sorted(out, key=lambda p: p.strength)


def refine_grid(points: list[MvaPoint], k: int = 3) -> list[float]:
    """``k`` strengths evenly inside each interval next to the best admissible point."""
    admissible = [p for p in points if p.admissible and not math.isnan(p.rate)]
    if not admissible:
        return []
    best = max(admissible, key=lambda p: (p.rate, -p.strength))
    strengths = [p.strength for p in points]
    i = strengths.index(best.strength)
    lo = strengths[i - 1] if i > 0 else 0.0
    hi = strengths[i + 1] if i + 1 < len(strengths) else best.strength
    grid = [lo + (best.strength - lo) * (j + 1) / (k + 1) for j in range(k)]
    grid += [best.strength + (hi - best.strength) * (j + 1) / (k + 1) for j in range(k)]
    return sorted({round(g, 6) for g in grid if g > 0 and g not in strengths})


def mva(points: list[MvaPoint]) -> MvaPoint | None:
    """The admissible strength with the highest ASR (ties: the weakest perturbation)."""
    admissible = [p for p in points if p.admissible and not math.isnan(p.rate)]
    return max(admissible, key=lambda p: (p.rate, -p.strength)) if admissible else None


def mva_search(
    sweep: Callable[[list[float]], list[RateRow]],
    coarse: list[float],
    refine: int,
    max_ppl: float | None,
    max_ppl_ratio: float | None,
) -> tuple[RateRow, float | None, list[MvaPoint], list[float]]:
    """Sweep the coarse grid (``sweep`` runs the clean condition and the strengths it is given),
    then ``refine`` strengths on each side of its maximum: the clean row, the perplexity bound
    (absolute, or a multiple of the clean perplexity), the points and the strengths added."""
    rows = sweep(coarse)
    clean = next(r for r in rows if r.perturbation == "none")
    bound = max_ppl if max_ppl is not None else (clean.ppl * max_ppl_ratio if max_ppl_ratio else None)
    points = mva_points(rows, bound)
    extra = refine_grid(points, refine) if refine > 0 else []
    if extra:
        points = mva_points(sweep(sorted({*coarse, *extra})), bound)
    return clean, bound, points, extra


def records(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]
