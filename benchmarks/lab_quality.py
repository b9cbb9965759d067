"""Held-out quality and a noise sweep of the lab model at every safety-tuning depth.

Trains (or loads from the cache) the lab model at each depth, prints its held-out refusal,
over-refusal and accuracy, then runs the same relative-σ noise sweep on each through the normal
pipeline and writes the tables and curves (one line per depth) under ``--out``.

Usage: python benchmarks/lab_quality.py [--depths none,shallow,deep,dpo] [--out docs/results/lab]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import safestress as ss
from safestress.lab.evaluate import evaluate
from safestress.lab.model import LabSettings, lab_model_path
from safestress.report import write_report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="none,shallow,deep,dpo")
    ap.add_argument("--sigma", default="0,0.25,0.5,0.75,1,1.5")
    ap.add_argument("--sites", default="blocks.*.resid_post")
    ap.add_argument("--out", default="docs/results/lab")
    ap.add_argument("--store", default="lab-sweep.db")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths, quality = [], {}
    for depth in args.depths.split(","):
        t = time.perf_counter()
        path = lab_model_path(LabSettings(depth=depth), log=lambda m: None)
        q = evaluate(path)
        quality[depth] = {**q.__dict__, "path": path.name, "seconds": round(time.perf_counter() - t, 1)}
        print(
            f"{depth:8s} harmful refused {100 * q.harmful_refusal:5.1f}%  benign refused "
            f"{100 * q.benign_refusal:4.1f}%  benign acc {100 * q.benign_accuracy:5.1f}%  "
            f"chain acc {100 * q.chain_accuracy:5.1f}%  chain steps {100 * q.chain_step_accuracy:5.1f}%"
        )
        paths.append(str(path))
    (out / "quality.json").write_text(json.dumps(quality, indent=2))
    cfg = ss.build_config(
        models=paths,
        dataset=["lab-harmful", "lab-benign", "lab-chain"],
        sigma=[float(s) for s in args.sigma.split(",")],
        scale="relative",
        sites=[args.sites],
        seeds=2,
        max_new_tokens=24,
        batch_size=128,
        judge=["lab", "lab-task", "lab-cot"],
        store=args.store,
        plot=True,
    )
    plan = ss.plan_sweep(cfg)
    with ss.Store(cfg.store) as store:
        ss.execute(plan, store)
        frame = plan.frame(store)
    for judge in plan.judges:
        rates, trends = ss.summarize(frame, judge.key)
        write_report(rates, trends, out / judge.name)
        for r in rates:
            if r.perturbation == "none" or r.strength in (0.5, 1.0, 1.5):
                print(
                    f"{judge.name:8s} {r.model[:18]:18s} {r.dataset:11s} σ={r.strength:<4g} "
                    f"{r.metric} {100 * r.value:5.1f}% [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}] "
                    f"unscored {100 * r.incoherent:4.1f}%  p={r.p:.3g}"
                )


if __name__ == "__main__":
    main()
