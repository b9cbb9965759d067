#!/usr/bin/env bash
# The lab model at every safety-tuning depth under relative noise at every block's residual
# output, 2 noise draws, on harmful, benign and chain-of-thought prompts; the per-prompt export
# behind docs/lab.md's noise-sweep tables. Run from the repository root; STORE keeps the store.
set -euo pipefail
store=${STORE:-lab-sweep.db}
models=()
for depth in none shallow deep dpo; do models+=(--model "$(safestress lab train --depth "$depth" --no-eval)"); done
sweep=("${models[@]}" --perturb noise --scale relative --sigma 0,0.25,0.5,0.75,1 --sites 'blocks.*.resid_post'
       --seeds 2 --max-new-tokens 24 --batch-size 128 --store "$store" --out "${OUT:-lab-sweep-report}" --no-plot)
safestress run "${sweep[@]}" --dataset lab-harmful --judge lab
safestress run "${sweep[@]}" --dataset lab-benign --judge lab,lab-task
safestress run "${sweep[@]}" --dataset lab-chain --judge lab-cot
safestress export docs/results/lab/per-prompt.parquet --store "$store"
safestress refresh-tables docs/lab.md
