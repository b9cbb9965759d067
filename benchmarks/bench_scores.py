"""Cost of unit scoring relative to a plain forward pass over the same calibration set.

The hook-based scores (``ssah``, ``wanda``) accumulate per-channel sums inside the forward pass;
the goal is at most 2× the time of the plain forward. ``snip`` needs a backward pass and is
reported for reference. Medians of ``--repeats`` runs, interleaved, in one process.

Usage: python benchmarks/bench_scores.py [--model ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import safestress as ss
from safestress.attribution.calibration import CalibrationSet, encode_pairs
from safestress.attribution.scores import compute_scores


def plain_forward(lm, calib: CalibrationSet, batch_size: int) -> None:
    with torch.inference_mode():
        for batch in encode_pairs(lm, calib, batch_size):
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lm = ss.load_model(args.model)
    words = [
        "the",
        "model",
        "answers",
        "the",
        "question",
        "with",
        "a",
        "short",
        "and",
        "helpful",
        "explanation",
        "of",
        "each",
        "step",
    ]
    prompts = [f"Question {i}: explain step {i} of the procedure." for i in range(args.pairs)]
    responses = [" ".join(words[(i + k) % len(words)] for k in range(60)) for i in range(args.pairs)]
    calib = CalibrationSet("bench", prompts, responses)
    plain_forward(lm, calib, args.batch_size)  # warm-up
    times: dict[str, list[float]] = {"forward": [], "ssah": [], "wanda": [], "snip": []}
    for _ in range(args.repeats):
        for name in times:
            t0 = time.perf_counter()
            if name == "forward":
                plain_forward(lm, calib, args.batch_size)
            else:
                compute_scores(lm, calib, name, batch_size=args.batch_size, cache=False)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["forward"])
    print(f"{args.pairs} pairs, batch {args.batch_size}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, ts in times.items():
        print(f"{name:8s} {statistics.median(ts):7.2f} s   {statistics.median(ts) / base:5.2f}× forward")


if __name__ == "__main__":
    main()
