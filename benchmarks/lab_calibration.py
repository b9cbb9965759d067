"""Calibration on real answers with a known effect (issue 22, item 6: "data from the lab with a
known effect").

`stat_calibration.py` draws verdicts from a model of prompts. Here the verdicts are real: the
lab model (``safestress lab``'s default, trained by the project) answers held-out harmful lab
prompts under two conditions, clean and Gaussian noise, with many sampled seeds per prompt, and
the lab judge scores every answer. That pool, committed as a per-answer file, *is* the
population: each simulated sweep draws prompts from it (with replacement) and seeds per prompt
(with replacement, the same seed indices on both sides, as a sweep pairs them), so the true rate
of each condition and the true Δ between them are known exactly (the pool's own), while the
prompts' heterogeneity, the seeds' correlation across conditions and the judge's incoherent
verdicts are those of real generation.

Measured on that population:

* false positives of the paired test between two disjoint seed sets of *one* condition (1 seed
  each: exact McNemar; 5 each: sign flips);
* false positives of the TOST with the margin set to the true |Δ| (equivalence must be claimed
  at most α of the time exactly at the edge);
* coverage of the rate interval (Wilson / cluster Wilson) and of the paired Δ interval
  (Newcombe / MOVER) of the known values.

Two steps, so that the figures are regenerated from a committed file:

  python benchmarks/lab_calibration.py pool --out docs/results/stat-calibration/lab-pool.csv
  python benchmarks/lab_calibration.py simulate docs/results/stat-calibration/lab-pool.csv \\
      --reps 4000 --out docs/results/stat-calibration/lab.json
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from stat_calibration import ALPHA, Figure, Maker, coverage, print_figures, rate, write_figures  # benchmarks/

from safestress import stats


def make_pool(args: argparse.Namespace) -> None:
    """Generate the pool: every held-out prompt × seed under clean and noise, judged by `lab`."""
    import safestress as ss
    from safestress.execution import execute
    from safestress.lab import language as L
    from safestress.lab.data import HELD_OUT_SEED
    from safestress.lab.model import LabSettings, lab_model_path
    from safestress.report.summary import verdict_values

    work = Path(tempfile.mkdtemp(prefix="lab-calibration-"))
    prompts = work / "prompts.csv"
    with prompts.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt"])
        writer.writerows([e.prompt] for e in L.split("held-out", args.prompts, True, HELD_OUT_SEED))
    cfg = ss.build_config(
        models=[str(lab_model_path(LabSettings(depth=args.depth), log=lambda m: None))],
        dataset=[f"csv:{prompts}:prompt"],
        sigma=[0.0, args.sigma],
        scale="relative",
        sites=[args.sites],
        judge=["lab"],
        seeds=args.seeds,
        do_sample=args.sample,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        store=str(work / "pool.db"),
        plot=False,
    )
    plan = ss.plan_sweep(cfg)
    started = time.perf_counter()
    with ss.Store(work / "pool.db") as st:
        execute(plan, st)
        frame = plan.frame(st)
    frame = frame.assign(value=verdict_values(frame))
    strength = {c.config_hash: c.strength for c in plan.conditions}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "seed", "sigma", "flagged"])
        for r in frame.sort_values(["item_id", "config_hash", "seed"]).itertuples():
            writer.writerow(
                [r.item_id, r.seed, f"{strength[r.config_hash]:g}", "" if np.isnan(r.value) else int(r.value)]
            )
    print(f"{len(frame)} answers in {time.perf_counter() - started:.0f} s → {args.out}")


def load_pool(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The pool as two [prompts, seeds] arrays (clean, noise; NaN where the judge did not score)."""
    cells: dict[tuple[str, int, str], float] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            cells[(r["item_id"], int(r["seed"]), r["sigma"])] = float(r["flagged"]) if r["flagged"] else np.nan
    items = sorted({k[0] for k in cells})
    seeds = sorted({k[1] for k in cells})
    sigmas = sorted({k[2] for k in cells}, key=float)
    if len(sigmas) != 2 or sigmas[0] != "0":
        raise SystemExit(f"{path}: expected the clean run and one noise level, found σ {sigmas}")
    arrays = []
    for sig in sigmas:
        # a greedy clean run does not depend on the seed: the sweep stores it once (seed 0), and
        # the rate table compares that one answer with every seed of the condition
        once = not any((i, s, sig) in cells for i in items for s in seeds[1:])
        kept = seeds[:1] if once else seeds
        arrays.append(np.array([[cells.get((i, s, sig), np.nan) for s in kept] for i in items]))
    return arrays[0], arrays[1], sigmas


def prompt_means(v: np.ndarray) -> np.ndarray:
    """Each prompt's mean over its scored seeds (NaN for a prompt with none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=1)


def true_delta(clean: np.ndarray, noise: np.ndarray) -> float:
    """Δ of the population, as the paired estimator defines it: per-prompt means over scored seeds,
    averaged over the prompts both sides scored."""
    d = prompt_means(noise) - prompt_means(clean)
    return float(np.nanmean(d))


def draw(rng: np.random.Generator, pools: tuple[np.ndarray, ...], n: int, seeds: int) -> list[np.ndarray]:
    """One simulated sweep: ``n`` prompts and ``seeds`` seed indices per prompt, both drawn with
    replacement, the same indices for every pool (a sweep pairs condition and clean by seed); a
    pool of one column (a greedy clean run) gives its one answer per prompt."""
    width = max(pool.shape[1] for pool in pools)
    p = rng.integers(0, pools[0].shape[0], n)
    s = rng.integers(0, width, (n, seeds))
    return [pool[p][:, :1] if pool.shape[1] == 1 else pool[p[:, None], s] for pool in pools]


def same_condition(pool: np.ndarray, reps: int, n: int, seeds: int, rng: np.random.Generator) -> Figure:
    """Null: two disjoint seed sets of one condition, compared by the rate table's paired test."""
    hits = 0
    for _ in range(reps):
        p = rng.integers(0, pool.shape[0], n)
        s = np.array([rng.choice(pool.shape[1], 2 * seeds, replace=False) for _ in range(n)])
        a, b = pool[p[:, None], s[:, :seeds]], pool[p[:, None], s[:, seeds:]]
        hits += stats.paired_test(a, b, n_resamples=1999)[0] < ALPHA
    return rate(hits, reps)


def tost_at_truth(
    pools: tuple[np.ndarray, np.ndarray], reps: int, n: int, seeds: int, rng: np.random.Generator
) -> Figure:
    """Null: the TOST with its margin set to the true |Δ| must claim equivalence ≤ α of the time."""
    margin = abs(true_delta(*pools))
    hits = 0
    for _ in range(reps):
        before, after = draw(rng, pools, n, seeds)
        hits += stats.tost_p(lambda a, x=before, y=after: stats.paired_difference(x, y, a)[1], margin) < ALPHA
    return rate(hits, reps)


def simulate(args: argparse.Namespace) -> None:
    clean, noise, sigmas = load_pool(args.pool)
    rng = np.random.default_rng(args.seed)
    n, reps = args.prompts, args.reps
    among = (clean, noise)  # the rate table's main reading: among coherent answers
    over_all = tuple(np.nan_to_num(v, nan=0.0) for v in among)  # its second: incoherent as not harmful
    delta, delta_all = true_delta(*among), true_delta(*over_all)
    rates = [float(np.nanmean(prompt_means(v))) for v in among]
    share = float(over_all[1].mean())
    incoherent = [float(np.isnan(v).mean()) for v in among]
    started = time.perf_counter()

    def rate_ci(seeds: int) -> Maker:  # (the truth, one simulated sweep's interval)
        return lambda g: (share, stats.cluster_wilson_ci(draw(g, over_all[1:], n, seeds)[0]))

    def delta_ci(pools: tuple[np.ndarray, ...], seeds: int, truth: float) -> Maker:
        return lambda g: (truth, stats.paired_difference(*draw(g, pools, n, seeds))[1])

    edge = f"±{100 * abs(delta_all):.1f} pts at the true Δ"
    fp, cov = "false positives", "coverage"
    rows: list[tuple[str, str, str, Figure]] = [
        (fp, "exact McNemar, one seed vs another, same condition", "≤ 5%", same_condition(noise, reps, n, 1, rng)),
        (fp, "sign flips, 5 seeds vs 5 others, same condition", "5%", same_condition(noise, reps, n, 5, rng)),
        (fp, f"TOST {edge} over all answers, 1 seed", "≤ 5%", tost_at_truth(over_all, reps, n, 1, rng)),
        (fp, f"TOST {edge} over all answers, 5 seeds", "≤ 5%", tost_at_truth(over_all, reps, n, 5, rng)),
        (cov, "Wilson, share over all answers, 1 seed", "95 ± 2%", coverage(reps, rng, rate_ci(1))),
        (cov, "Wilson on effective size, over all answers, 5 seeds", "95 ± 2%", coverage(reps, rng, rate_ci(5))),
    ]
    for pools, truth, where in ((over_all, delta_all, "over all answers"), (among, delta, "among coherent")):
        for seeds, method in ((1, "Newcombe"), (5, "MOVER")):
            name = f"{method} paired Δ {where}, {seeds} seed{'s' * (seeds > 1)}, Δ = {100 * truth:+.1f}"
            rows.append((cov, name, "95 ± 2%", coverage(reps, rng, delta_ci(pools, seeds, truth))))
    elapsed = time.perf_counter() - started
    about = (
        f"{args.pool.name}: {clean.shape[0]} held-out harmful lab prompts × {noise.shape[1]} seeds, "
        "judge lab (harmful): "
        f"clean {100 * rates[0]:.1f}% and σ {sigmas[1]} {100 * rates[1]:.1f}% harmful among coherent "
        f"(incoherent {100 * incoherent[0]:.1f}% and {100 * incoherent[1]:.1f}%), true Δ {100 * delta:+.1f} pts "
        f"among coherent and {100 * delta_all:+.1f} over all answers"
    )
    print(f"{about}\n{reps} simulated sweeps of {n} prompts per row, α = {ALPHA}; {elapsed:.0f} s\n")
    print_figures(rows)
    if args.out:
        write_figures(
            args.out, rows, {"reps": reps, "prompts": n, "seed": args.seed, "alpha": ALPHA, "population": about}
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    pool = sub.add_parser("pool", help="generate the pool of real answers (the lab model, trained on first use)")
    pool.add_argument("--out", type=Path, required=True, help="per-answer CSV: item_id, seed, sigma, flagged")
    pool.add_argument("--prompts", type=int, default=300, help="held-out harmful lab prompts")
    pool.add_argument("--seeds", type=int, default=30, help="sampled answers per prompt and condition")
    pool.add_argument("--depth", default="shallow", choices=["shallow", "deep"], help="the lab model's safety tuning")
    pool.add_argument("--sigma", type=float, default=0.5, help="relative σ of the noise condition")
    pool.add_argument(
        "--sample", action="store_true", help="sample answers (default: greedy, the noise draws differ by seed)"
    )
    pool.add_argument("--temperature", type=float, default=1.0)
    pool.add_argument("--sites", default="blocks.*.resid_post")
    pool.add_argument("--max-new-tokens", type=int, default=24)
    pool.add_argument("--batch-size", type=int, default=256)
    sim = sub.add_parser("simulate", help="simulate sweeps drawn from a pool and measure the tests on it")
    sim.add_argument("pool", type=Path)
    sim.add_argument("--reps", type=int, default=2000, help="simulated sweeps per figure")
    sim.add_argument("--prompts", type=int, default=100, help="prompts per simulated sweep")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    make_pool(args) if args.step == "pool" else simulate(args)


if __name__ == "__main__":
    main()
