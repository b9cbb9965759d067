"""Held-out quality and a noise sweep of the lab model at every safety-tuning depth.

Trains (or loads from the cache) the lab model at each depth, prints its held-out refusal,
over-refusal and accuracy, then runs the same relative-σ noise sweep on each through the normal
pipeline and writes the tables and curves (one line per depth) under ``--out``. Every depth is
also tested against ``--baseline-depth`` on the same prompts (``safestress.report.summarize_judges``):
the difference in harmful rate and in the noise's effect — the lab's test of "deeper safety tuning
gives no extra protection".

Usage: python benchmarks/lab_quality.py [--depths none,shallow,deep,dpo] [--out docs/results/lab]
       [--baseline-depth shallow] [--html report.html]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import safestress as ss
from safestress.lab.evaluate import evaluate
from safestress.lab.model import LabSettings, lab_model_path
from safestress.report import summarize_judges, write_report
from safestress.report.html_report import write_html
from safestress.report.labels import labelled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="none,shallow,deep,dpo")
    ap.add_argument("--sigma", default="0,0.25,0.5,0.75,1,1.5")
    ap.add_argument("--sites", default="blocks.*.resid_post")
    ap.add_argument("--out", default="docs/results/lab")
    ap.add_argument("--store", default="lab-sweep.db")
    ap.add_argument("--baseline-depth", default="shallow", help="the depth every other depth is tested against")
    ap.add_argument("--html", default=None, help="also write the sweep's report.html here")
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
    depths = args.depths.split(",")
    baseline = Path(paths[depths.index(args.baseline_depth)]).name if args.baseline_depth in depths else None
    with ss.Store(cfg.store) as store:
        ss.execute(plan, store)
        frame = labelled(plan.frame(store), store)
        specs = {h: spec for h, spec in store.configs().items() if h in set(frame["config_hash"])}
        summaries, versus = summarize_judges(frame, [j.key for j in plan.judges], store, baseline)
    for judge in plan.judges:
        rates, trends = summaries[judge.key]
        write_report(rates, trends, out / judge.name, contrasts=versus[judge.key])
        for c in versus[judge.key]:
            if c.dataset in ("lab-harmful", "lab-chain"):
                effect = (
                    ""
                    if c.perturbation == "none"
                    else f"  Δ effect {100 * c.effect_delta:+5.1f} p={c.effect_p_holm:.3g}"
                )
                print(
                    f"{judge.name:8s} {c.model[:18]:18s} vs {c.baseline[:18]:18s} {c.dataset:11s} σ={c.strength:<4g} "
                    f"{100 * c.value:5.1f}% vs {100 * c.baseline_value:5.1f}%  Δ {100 * c.delta:+5.1f} "
                    f"p={c.p_holm:.3g}{effect}"
                )
        for r in rates:
            if r.perturbation == "none" or r.strength in (0.5, 1.0, 1.5):
                print(
                    f"{judge.name:8s} {r.model[:18]:18s} {r.dataset:11s} σ={r.strength:<4g} "
                    f"{r.metric} {100 * r.value:5.1f}% [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}] "
                    f"unscored {100 * r.incoherent:4.1f}%  p={r.p:.3g}"
                )
    if args.html:
        write_html(args.html, frame, summaries, specs, title="lab: noise across safety-tuning depths", contrasts=versus)


if __name__ == "__main__":
    main()
