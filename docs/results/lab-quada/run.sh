#!/usr/bin/env bash
# QuadA on the shallow lab model against plain DPO, and each of QuadA's two parts alone (training
# noise; the cluster term), three training runs per arm on the same exact preference rows; the
# per-prompt export behind docs/defence.md's lab table. Run from the repository root; WORK keeps
# the trained models and the store (a rerun skips the arms already trained there).
set -euo pipefail
work=${WORK:-lab-quada-work}
mkdir -p "$work"
base=$(safestress lab train --depth shallow --no-eval)
safestress lab prefs "$work/prefs.csv" --pairs 960
train=(--model "$base" --data "$work/prefs.csv" --steps 60 --batch-size 16 --max-length 64 --lr 5e-5 --beta 0.1
       --seed 0 --runs 3 --sites blocks.0.resid_post --cluster-site blocks.0.resid_post)
noise=(--perturb noise --sigma 0.5 --scale relative)
arm() {  # NAME CLUSTER_WEIGHT PERTURBATION…
  local name=$1 weight=$2; shift 2
  [ -d "$work/$name" ] || safestress defend quada "${train[@]}" "$@" --cluster-weight "$weight" --out "$work/$name"
}
arm dpo 0 --perturb none
arm noise 0 "${noise[@]}"
arm cluster 0.5 --perturb none
arm quada 0.5 "${noise[@]}"
models=(--model "$base")
for name in dpo noise cluster quada; do
  for seed in 0 1 2; do models+=(--model "$work/$name/$name-s$seed"); done
done
eval=("${models[@]}" --max-new-tokens 24 --batch-size 120 --store "$work/eval.db" --no-plot --out "$work/report")
harmful=("${eval[@]}" --dataset lab-harmful --judge lab)
safestress run "${harmful[@]}" --perturb noise --scale relative --sigma 0,0.75,1 --sites blocks.0.resid_post --seeds 3
safestress run "${harmful[@]}" --perturb noise --scale relative --sigma 0.75 --sites 'blocks.*.resid_post' --seeds 3
safestress run "${harmful[@]}" --perturb quant --strength 4 --param granularity=per-token \
  --sites 'blocks.*.ln1.out,blocks.*.attn.z,blocks.*.ln2.out,blocks.*.mlp.act'
safestress run "${eval[@]}" --dataset lab-benign --sigma 0 --judge lab-task
safestress export docs/results/lab-quada/per-prompt.parquet --store "$work/eval.db"
safestress refresh-tables docs/defence.md
