"""Calibration of safestress's tests and intervals, measured by simulation (issue 22, item 6).

For each test: the false-positive rate under a null it must hold at α = 0.05 (goal: within
binomial error of α, or below it for exact tests, which are conservative by construction). For
each interval: its coverage of the true value (goal: 95% ± 2). The data imitate sweeps: prompts
with their own rates (a Beta mixture: some prompts are always refused, some always complied with,
some in between), one greedy verdict or five sampled seeds per prompt, and paired conditions.

Nulls:
* **resampled seeds**: the same condition twice, with verdicts drawn afresh (what a second run
  under other sampling seeds would give);
* **permuted labels**: real human harm labels (``jailbreak_eval_manual.csv``) paired at random
  into 150 "prompts" under two "conditions", each pair's order chosen by a coin, so no
  difference exists by construction;
* **equivalence at the margin**: a true Δ of exactly the margin, where a TOST must reject at most
  α of the time;
* **one method twice**: two arms of three training runs of the same method, each run shifting
  every prompt's rate by its own random amount, compared by Welch's test over runs.

Run: ``python benchmarks/stat_calibration.py [--reps 2000] [--out docs/results/stat-calibration.json]``.
Prints a Markdown table; with ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from safestress import stats

ALPHA = 0.05
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def prompt_rates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-prompt compliance probabilities: 40% near 0, 20% near 1, 40% spread (a real sweep's shape)."""
    kind = rng.random(n)
    return np.where(kind < 0.4, rng.beta(0.3, 8, n), np.where(kind < 0.6, rng.beta(8, 0.3, n), rng.beta(1.5, 1.5, n)))


# the population mean of prompt_rates (a Beta's mean is a / (a + b))
POPULATION_RATE = 0.4 * 0.3 / 8.3 + 0.2 * 8 / 8.3 + 0.4 * 0.5


def shifted(rates: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Rates before and after a shift of exactly ``shift`` on every prompt (before squeezed into
    [0, 1 − shift]), so the population Δ is known exactly."""
    before = rates * (1 - shift)
    return before, before + shift


def draw(rng: np.random.Generator, rates: np.ndarray, seeds: int) -> np.ndarray:
    return (rng.random((rates.size, seeds)) < rates[:, None]).astype(float)


def paired_p(before: np.ndarray, after: np.ndarray) -> float:
    """The paired test the rate table uses (stats.paired_test), its Monte Carlo sign flips kept cheap."""
    return stats.paired_test(before, after, n_resamples=1999)[0]


def rate(hits: int, reps: int) -> tuple[float, float, float]:
    lo, hi = stats.wilson_ci(hits, reps)
    return hits / reps, lo, hi


def false_positives(reps: int, n: int, seeds: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Null 1: the same condition twice, verdicts resampled (clean greedy: one seed; perturbed: ``seeds``)."""
    hits = 0
    for _ in range(reps):
        r = prompt_rates(rng, n)
        hits += paired_p(draw(rng, r, 1 if seeds == 1 else seeds), draw(rng, r, seeds)) < ALPHA
    return rate(hits, reps)


def human_labels() -> np.ndarray | None:
    path = SHARED / "jailbreak_eval_manual.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["manual_safeguard_violation_label"].strip() == "True") for r in rows])


def permuted_labels(reps: int, rng: np.random.Generator) -> tuple[float, float, float] | None:
    """Null 2: real labels, each pair's two members swapped at random between the conditions."""
    labels = human_labels()
    if labels is None:
        return None
    hits = 0
    half = labels.size // 2
    for _ in range(reps):
        perm = rng.permutation(labels)
        a, b = perm[:half], perm[half : 2 * half]
        swap = rng.random(half) < 0.5
        before, after = np.where(swap, b, a), np.where(swap, a, b)
        hits += paired_p(before[:, None], after[:, None]) < ALPHA
    return rate(hits, reps)


Figure = tuple[float, float, float]  # rate and its Wilson interval over the simulated sweeps
Maker = Callable[[np.random.Generator], tuple[float, tuple[float, float]]]  # (true value, interval)


def tost_at_margin(reps: int, n: int, seeds: int, margin: float, rng: np.random.Generator) -> Figure:
    """Null 3: the true Δ is exactly +margin; equivalence within ±margin must be claimed ≤ α of the time."""
    hits = 0
    for _ in range(reps):
        r0, r1 = shifted(prompt_rates(rng, n), margin)
        before, after = draw(rng, r0, 1 if seeds == 1 else seeds), draw(rng, r1, seeds)
        hits += stats.tost_p(lambda a, x=before, y=after: stats.paired_difference(x, y, a)[1], margin) < ALPHA
    return rate(hits, reps)


def runs_null(reps: int, n: int, runs: int, rng: np.random.Generator) -> Figure:
    """Null 4: two arms that are the same training method. Each run shifts every prompt's rate by
    its own normal amount (SD 5 points: the method's run-to-run spread), answers the same prompts
    once, and Welch's test compares the arms' per-run rates (stats.runs_difference)."""
    hits = 0
    for _ in range(reps):
        base = prompt_rates(rng, n)
        rates = []
        for _arm in range(2):
            arm = []
            for _run in range(runs):
                shift = rng.normal(0, 0.05)
                arm.append(float(draw(rng, np.clip(base + shift, 0, 1), 1).mean()))
            rates.append(arm)
        hits += stats.runs_difference(rates[0], rates[1])[2] < ALPHA
    return rate(hits, reps)


def coverage(
    reps: int, rng: np.random.Generator, make: Callable[[np.random.Generator], tuple[float, tuple[float, float]]]
) -> tuple[float, float, float]:
    hits = 0
    for _ in range(reps):
        true, (lo, hi) = make(rng)
        hits += lo <= true <= hi
    return rate(hits, reps)


def rate_interval(n: int, seeds: int) -> Callable[[np.random.Generator], tuple[float, tuple[float, float]]]:
    def make(rng: np.random.Generator) -> tuple[float, tuple[float, float]]:
        # prompts drawn from a population: the interval is for the population's rate
        return POPULATION_RATE, stats.cluster_wilson_ci(draw(rng, prompt_rates(rng, n), seeds))

    return make


def delta_interval(n: int, seeds: int, shift: float) -> Maker:
    def make(rng: np.random.Generator) -> tuple[float, tuple[float, float]]:
        r0, r1 = shifted(prompt_rates(rng, n), shift)
        before, after = draw(rng, r0, 1 if seeds == 1 else seeds), draw(rng, r1, seeds)
        return shift, stats.paired_difference(before, after)[1]

    return make


def did_interval(n: int, seeds: int) -> Callable[[np.random.Generator], tuple[float, tuple[float, float]]]:
    """Two models on the same prompts, B refusing a little more; noise raises A by exactly 15
    points and B by exactly 5 on every prompt: Δ effect 10 points."""

    def make(rng: np.random.Generator) -> tuple[float, tuple[float, float]]:
        r = prompt_rates(rng, n)
        ra, pa = shifted(r, 0.15)
        rb, pb = shifted(r * 0.8, 0.05)
        one = 1 if seeds == 1 else seeds
        sides = [draw(rng, ra, one), draw(rng, pa, seeds), draw(rng, rb, one), draw(rng, pb, seeds)]
        return 0.10, stats.difference_in_differences(*sides)[1]

    return make


def fmt(r: tuple[float, float, float]) -> str:
    return f"{100 * r[0]:.1f}% [{100 * r[1]:.1f}, {100 * r[2]:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="simulated sweeps per figure")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n, reps = args.prompts, args.reps
    started = time.perf_counter()
    rows: list[tuple[str, str, str, tuple[float, float, float] | None]] = [
        ("false positives", "exact McNemar, resampled greedy verdicts", "≤ 5%", false_positives(reps, n, 1, rng)),
        ("false positives", "sign flips, 5 seeds resampled", "5%", false_positives(reps, n, 5, rng)),
        ("false positives", "exact McNemar, permuted human labels", "≤ 5%", permuted_labels(reps, rng)),
        ("false positives", "TOST ±10 pts at Δ = 10 pts, 1 seed", "≤ 5%", tost_at_margin(reps, n, 1, 0.10, rng)),
        ("false positives", "TOST ±10 pts at Δ = 10 pts, 5 seeds", "≤ 5%", tost_at_margin(reps, n, 5, 0.10, rng)),
        ("false positives", "Welch over runs, 3 vs 3 runs of one method", "≤ 5%", runs_null(reps, n, 3, rng)),
        ("coverage", "Wilson, 1 seed", "95 ± 2%", coverage(reps, rng, rate_interval(n, 1))),
        ("coverage", "Wilson on effective size, 5 seeds", "95 ± 2%", coverage(reps, rng, rate_interval(n, 5))),
        ("coverage", "Newcombe paired Δ, 1 seed, Δ = 0", "95 ± 2%", coverage(reps, rng, delta_interval(n, 1, 0.0))),
        ("coverage", "Newcombe paired Δ, 1 seed, Δ = +20", "95 ± 2%", coverage(reps, rng, delta_interval(n, 1, 0.2))),
        ("coverage", "MOVER paired Δ, 5 seeds, Δ = 0", "95 ± 2%", coverage(reps, rng, delta_interval(n, 5, 0.0))),
        ("coverage", "MOVER paired Δ, 5 seeds, Δ = +20", "95 ± 2%", coverage(reps, rng, delta_interval(n, 5, 0.2))),
        ("coverage", "MOVER Δ effect (two models), 1 seed", "95 ± 2%", coverage(reps, rng, did_interval(n, 1))),
        ("coverage", "MOVER Δ effect (two models), 5 seeds", "95 ± 2%", coverage(reps, rng, did_interval(n, 5))),
    ]
    elapsed = time.perf_counter() - started
    print(f"{reps} simulated sweeps of {n} prompts per row, α = {ALPHA}; {elapsed:.0f} s\n")
    print_figures(rows)
    if args.out:
        write_figures(args.out, rows, {"reps": reps, "prompts": n, "seed": args.seed, "alpha": ALPHA})


Row = tuple[str, str, str, "Figure | None"]  # kind, test or interval, goal, measured (None: not run)


def print_figures(rows: list[Row]) -> None:
    """The figures as the Markdown table docs/statistics.md shows (regenerated there from the JSON)."""
    print("| kind | test or interval | goal | measured [95% CI] |\n|---|---|---|---|")
    for kind, name, goal, r in rows:
        print(f"| {kind} | {name} | {goal} | {'not run (no labels file)' if r is None else fmt(r)} |")


def write_figures(path: Path, rows: list[Row], meta: dict) -> None:
    """The figures and what they were measured on, as the JSON a ``calibration`` doc table reads."""
    figures = [
        {"kind": k, "name": m, "goal": g, "rate": r[0], "ci": [r[1], r[2]]} for k, m, g, r in rows if r is not None
    ]
    path.write_text(json.dumps({**meta, "figures": figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
