#!/usr/bin/env bash
# Three safety-tuning methods of the lab, three training runs each, evaluated under noise; the
# per-prompt export behind docs/lab.md's run-level table. Run from the repository root.
set -euo pipefail
store=${STORE:-lab-runs.db}
models=()
for depth in shallow deep dpo; do
  # three runs of the safety stage (seeds 0, 1, 2) on one capability model; one path per line
  while read -r path; do models+=(--model "$path"); done < <(safestress lab train --depth "$depth" --runs 3 --no-eval)
done
safestress run "${models[@]}" --dataset lab-harmful --perturb noise --scale relative \
  --sigma 0,0.5,0.75 --sites 'blocks.*.resid_post' --seeds 1 --max-new-tokens 24 --batch-size 120 \
  --judge lab --store "$store" --out "${OUT:-lab-runs-report}" --no-plot
safestress export docs/results/lab-runs/per-prompt.parquet --store "$store"
safestress refresh-tables docs/lab.md
