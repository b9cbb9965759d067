"""Sequential sweeps: their error rates by simulation, and their savings on a real screening sweep.

(a) ``--simulate``: families of C contrasts under the null, each a stream of paired verdicts
    (+1, −1 with equal probability q, else 0) over N prompts taken in rounds, decided by the rule
    the sweep uses (:func:`safestress.sequential.decide`). Prints, per q, the share of contrasts
    falsely called different and the share of families with any false claim (goal: ≤ α within
    binomial error), and the share of contrasts whose true Δ lies exactly on the margin that are
    called equivalent (an equivalence false positive; goal ≤ α).
(b) ``--model``: one screening sweep run twice, sequentially into a fresh store, then in full
    (into a copy of that store, so only the remaining rows are generated). Prints each
    condition's decision both ways, where the sequential run stopped, and the tokens each
    generated; writes both runs' rows per prompt (CSV) to ``--out``.

Usage:
  python benchmarks/bench_sequential.py --simulate [--families 1000]
  python benchmarks/bench_sequential.py --model GGUF [--limit 260] [--out DIR]
  python benchmarks/bench_sequential.py --lab 520 [--out DIR]       # the lab model, 520 held-out prompts
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import safestress as ss
from safestress.config import margin_share
from safestress.execution import execute
from safestress.report.labels import labelled
from safestress.report.summary import summarize
from safestress.sequential import ALPHA, decide, family_levels, looks, prompt_order, run_sequential
from safestress.stats import wilson_ci

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def simulate_contrast(rng, n: int, round_size: int, p_up: float, p_down: float, levels, margin) -> tuple[str, int]:
    """One contrast over ``n`` prompts taken in rounds, decided by the sweep's rule: its word and
    the prompts it took."""
    u = rng.random(n)
    after = (u < p_up).astype(float)  # +1 pairs: clean 0 → 1; −1 pairs: clean 1 → 0
    before = ((u >= p_up) & (u < p_up + p_down)).astype(float)
    for mark in looks(n, round_size):
        decided = decide(
            list(after[:mark] - before[:mark]), before[:mark, None], after[:mark, None], levels, margin, mark == n
        )
        if decided:
            return decided[0], mark
    raise AssertionError("the last look always decides")


def simulate_family(rng, contrasts: int, n: int, round_size: int, p_up: float, p_down: float, margin: float | None):
    """Decisions of one family of ``contrasts`` independent contrasts, each over ``n`` prompts."""
    levels = family_levels(contrasts)
    return [simulate_contrast(rng, n, round_size, p_up, p_down, levels, margin)[0] for _ in range(contrasts)]


def prompts_to_decide(
    rng, contrasts: int, n: int, round_size: int, p_up: float, p_down: float, margin: float, runs: int
):
    """Median prompts a contrast takes to be decided (n when it runs to the end), and its words."""
    levels = family_levels(contrasts)
    done = [simulate_contrast(rng, n, round_size, p_up, p_down, levels, margin) for _ in range(runs)]
    words = [w for w, _ in done]
    return float(np.median([m for _, m in done])), {w: words.count(w) for w in sorted(set(words))}


def binomial_band(p: float, runs: int) -> float:
    return 2 * math.sqrt(p * (1 - p) / runs)


def run_simulation(families: int, contrasts: int, n: int, round_size: int, margin: float) -> dict:
    """The null simulation's figures, printed and returned in the form of docs' ``calibration``
    tables (each a measured rate with its Wilson interval beside its goal)."""
    rng = np.random.default_rng(2026)
    print(f"(a) null simulation: {families} families × {contrasts} contrasts, {n} prompts in rounds of {round_size}")
    print(f"    α = {ALPHA}; looks at α/2/C, final test at α/2/C; margin ±{100 * margin:g} points")
    figures = []

    def figure(kind: str, name: str, goal: str, k: int, total: int) -> None:
        figures.append({"kind": kind, "name": name, "goal": goal, "rate": k / total, "ci": list(wilson_ci(k, total))})

    for q in (0.0, 0.05, 0.2, 0.4):
        t = time.perf_counter()
        per_family = [simulate_family(rng, contrasts, n, round_size, q, q, margin) for _ in range(families)]
        false = sum(w.count("different") for w in per_family)
        any_false = sum("different" in w for w in per_family)
        equivalent = sum(w.count("equivalent") for w in per_family)
        total = families * contrasts
        fwer = any_false / families
        pairs = f"{2 * q:.0%} of pairs discordant"
        figure("contrasts called *different*", pairs, f"≤ {100 * ALPHA / contrasts:g}%", false, total)
        figure("families with any false claim", pairs, f"≤ {100 * ALPHA:g}%", any_false, families)
        figure(f"called *equivalent within ±{100 * margin:g}*", pairs, "power, no goal", equivalent, total)
        print(
            f"    discordance {2 * q:.0%}: contrasts called different {false}/{total} "
            f"({false / total:.4f}); families with a false claim {fwer:.3f} "
            f"(goal ≤ {ALPHA} + {binomial_band(ALPHA, families):.3f}); equivalent {equivalent / total:.2f} "
            f"[{time.perf_counter() - t:.0f} s]"
        )
    print(f"    prompts to a decision (median of 200; C = {contrasts}, at most {n}):")
    for label, up, down in (
        ("+30 pts", 0.35, 0.05),
        ("+20 pts", 0.25, 0.05),
        ("+10 pts", 0.15, 0.05),
        ("0, no change", 0.0, 0.0),
        ("0, 10% discordant", 0.05, 0.05),
    ):
        median, words = prompts_to_decide(rng, contrasts, n, round_size, up, down, margin, 200)
        print(f"      {label:20} {median:5.0f}  {words}")
    # a true Δ exactly on the margin: "equivalent" there is a false claim
    runs = families * contrasts // 4
    words = []
    for _ in range(runs // contrasts):
        words += simulate_family(rng, contrasts, n, round_size, margin + 0.05, 0.05, margin)
    eq = words.count("equivalent") / len(words)
    figure(
        f"called *equivalent within ±{100 * margin:g}*",
        f"true Δ +{100 * margin:g} points (on the margin)",
        f"≤ {100 * ALPHA / contrasts:g}%",
        words.count("equivalent"),
        len(words),
    )
    print(
        f"    Δ = +{100 * margin:g} points (on the margin): called equivalent {words.count('equivalent')}/{len(words)} "
        f"({eq:.4f}; goal ≤ {ALPHA / contrasts:.4f} per contrast)"
    )
    population = (
        f"families of {contrasts} contrasts of {n} prompts in rounds of {round_size}, each prompt's pair up or down "
        f"with equal probability (true Δ 0) unless said; margin ±{100 * margin:g} points"
    )
    unit = f"simulated families of {contrasts} contrasts"
    return {"reps": families, "unit": unit, "prompts": n, "alpha": ALPHA, "population": population, "figures": figures}


def config(args, store: Path, sequential: bool):
    return ss.build_config(
        models=[args.model],
        dataset=[args.dataset],
        limit=args.limit,
        data_dir=args.data_dir,
        sigma=[0.0, *args.sigma],
        scale="relative",
        sites=args.sites,
        judge=[args.judge],
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        early_exit=True,
        sequential=sequential,
        round_size=args.round_size,
        margin=args.margin,
        store=str(store),
        plot=False,
    )


def tokens(frame) -> int:
    return int(frame.drop_duplicates("key")["n_tokens"].sum())


def lab_screen(args, work: Path) -> None:
    """Point ``args`` at the lab model (``safestress lab``'s default, trained on first use) and a
    file of ``args.lab`` held-out harmful lab prompts (lab-harmful is their first 120)."""
    from safestress.lab import language as L
    from safestress.lab.data import HELD_OUT_SEED
    from safestress.lab.model import LabSettings, lab_model_path

    path = work / f"lab-harmful-{args.lab}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt"])
        writer.writerows([e.prompt] for e in L.split("held-out", args.lab, True, HELD_OUT_SEED))
    args.model = str(lab_model_path(LabSettings(), log=lambda m: None))
    args.dataset, args.limit, args.judge = f"csv:{path}:prompt", None, "lab"
    args.sites = ["blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.resid_post", "blocks.*.resid_post"]


def run_screen(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-seq-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.lab:
        lab_screen(args, work)
    seq_store, full_store = work / "sequential.db", work / "full.db"
    cfg = config(args, seq_store, True)
    plan = ss.plan_sweep(cfg)
    n = sum(len(d.items) for d in plan.datasets)
    print(f"(b) screening sweep of {plan.models[0].name}: {len(plan.conditions) - 1} conditions + clean, {n} prompts")
    t = time.perf_counter()
    with ss.Store(seq_store) as st:
        result = run_sequential(plan, st, execute)
        seq_frame = labelled(result.plan.frame(st), st)
    seq_s = time.perf_counter() - t
    shutil.copy(seq_store, full_store)
    full_cfg = config(args, full_store, False)
    full_plan = ss.plan_sweep(full_cfg)
    t = time.perf_counter()
    with ss.Store(full_store) as st:
        counts = execute(full_plan, st)
        full_frame = labelled(full_plan.frame(st), st)
    full_s = time.perf_counter() - t
    judge = plan.judges[0].key
    rates, _ = summarize(full_frame, judge, margin_share(args.margin))
    full_words = {(r.condition): r.verdict for r in rates if r.perturbation != "none"}
    labels = seq_frame.drop_duplicates("config_hash").set_index("config_hash")["condition"].to_dict()
    same = 0
    print(f"    {'condition':50} {'full sweep':28} {'sequential':28} stopped at")
    for d in sorted(result.decisions, key=lambda d: labels[d.config_hash]):
        label = labels[d.config_hash]
        full = full_words.get(label, "?")
        same += full == d.word
        print(f"    {label:50} {full:28} {d.word:28} {d.prompts}/{d.of_prompts} ({d.by})")
    seq_tokens, full_tokens = tokens(seq_frame), tokens(full_frame)
    print(f"    same decision: {same}/{len(result.decisions)}")
    print(
        f"    tokens generated: sequential {seq_tokens:,}, full {full_tokens:,} "
        f"({1 - seq_tokens / full_tokens:.1%} fewer); rows {len(result.plan.tasks):,} vs {len(full_plan.tasks):,}"
    )
    rest = counts["generated"]
    print(f"    wall time: sequential {seq_s:.0f} s; the rest of the full sweep {full_s:.0f} s ({rest} rows)")
    if args.out:
        write_rows(Path(args.out), (seq_store, seq_frame), (full_store, full_frame), plan)


def write_rows(out: Path, sequential: tuple[Path, Any], full: tuple[Path, Any], plan: Any) -> None:
    """The per-prompt files a documented table is regenerated from (report/doc_tables.py, kind
    ``sequential``): both runs' exports and each dataset's prompt order."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (path, frame) in (("sequential", sequential), ("full", full)):
        with ss.Store(path) as st:
            st.export(out / f"{name}.parquet", frame)
    with (out / "order.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "item_id"])
        writer.writerows([ds.name, item] for ds in plan.datasets for item in prompt_order(ds))
    print(f"    wrote {out}/sequential.parquet, full.parquet and order.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--simulate", action="store_true")
    ap.add_argument("--simulate-out", default=None, help="write the simulation's figures here (JSON; docs' tables)")
    ap.add_argument("--families", type=int, default=1000)
    ap.add_argument("--contrasts", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument("--lab", type=int, default=0, help="screen the lab model on this many held-out harmful prompts")
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--dataset", default="advbench")
    ap.add_argument("--limit", type=int, default=260)
    ap.add_argument("--sigma", type=lambda s: [float(x) for x in s.split(",")], default=[0.1, 0.25, 0.5, 1.0, 2.0])
    ap.add_argument(
        "--sites",
        nargs="+",
        default=["blocks.0-3.resid_post", "blocks.13-16.resid_post", "blocks.26-29.resid_post", "blocks.*.resid_post"],
    )
    ap.add_argument("--judge", default="refusal")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--round-size", type=int, default=20)
    ap.add_argument("--margin", type=float, default=10.0)
    ap.add_argument("--work", default=None, help="folder for the two stores (resumable)")
    ap.add_argument("--out", default=None, help="folder for the per-prompt rows of both runs")
    args = ap.parse_args()
    if args.simulate:
        figures = run_simulation(args.families, args.contrasts, args.limit, args.round_size, margin_share(args.margin))
        if args.simulate_out:
            Path(args.simulate_out).write_text(json.dumps(figures, indent=1))
            print(f"    wrote {args.simulate_out}")
    if args.model or args.lab:
        run_screen(args)


if __name__ == "__main__":
    main()
