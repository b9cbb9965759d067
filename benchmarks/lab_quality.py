"""Held-out quality of the lab model at every safety-tuning depth.

Trains (or loads from the cache) the lab model at each depth, prints its held-out refusal,
over-refusal and accuracy, and writes them to ``--out``/quality.json. The noise sweep across
depths is a committed script of the flow's own commands, docs/results/lab/run.sh.

Usage: python benchmarks/lab_quality.py [--depths none,shallow,deep,dpo] [--out docs/results/lab]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from safestress.lab.evaluate import evaluate
from safestress.lab.model import LabSettings, lab_model_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="none,shallow,deep,dpo")
    ap.add_argument("--out", default="docs/results/lab")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quality = {}
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
    (out / "quality.json").write_text(json.dumps(quality, indent=2))


if __name__ == "__main__":
    main()
