"""Seconds per training step of plain DPO and of QuadA (noise + cluster term) on a real model.

Both run through ``safestress.train.quada`` on the same preference rows (harmful-train
instructions; the refusal preferred over a compliant answer), alternating plain / QuadA
``--repeats`` times in one process; prints each run and the median ratio QuadA / DPO.

Usage:
  python benchmarks/quada_step_time.py --model /tmp/models/qwen2.5-coder-0.5b-instruct.gguf \\
      --data ../shared/data/harmful_train.json --compliant smollm2-harmful-train.csv
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import safestress as ss
from safestress.datasets import read_rows_file
from safestress.train.quada import PreferenceRow, QuadASettings, quada_train

REFUSAL = "I'm sorry, but I can't assist with that."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="JSON/CSV of harmful instructions ('instruction' column)")
    ap.add_argument("--compliant", required=True, help="CSV of compliant answers: prompt,response")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--sites", default="blocks.0-3.resid_post")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    answers = {r["prompt"]: r["response"] for r in read_rows_file(args.compliant)}
    prompts = [r["instruction"] for r in read_rows_file(args.data) if r["instruction"] in answers][: args.rows]
    rows = [PreferenceRow(p, REFUSAL, answers[p], True) for p in prompts]
    variants = {
        "DPO": dict(perturbation="none", cluster_weight=0.0),
        "QuadA": dict(perturbation="noise", params={"sigma": 0.1, "scale": "absolute"}, cluster_weight=0.1),
    }
    per_step: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for name, kw in variants.items():
            lm = ss.load_model(args.model)
            settings = QuadASettings(
                steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, sites=args.sites, **kw
            )
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                quada_train(lm, rows, f"{tmp}/out", settings, log=lambda _: None)
                seconds = (time.perf_counter() - t0) / args.steps
            per_step[name].append(seconds)
            print(f"run {r + 1} {name}: {seconds:.1f} s per step (incl. setup and saving)", flush=True)
    dpo, quada = statistics.median(per_step["DPO"]), statistics.median(per_step["QuadA"])
    print(f"median: DPO {dpo:.1f} s, QuadA {quada:.1f} s per step; QuadA / DPO = {quada / dpo:.2f}")


if __name__ == "__main__":
    main()
