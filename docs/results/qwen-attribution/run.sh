#!/usr/bin/env bash
# Where safety lives on Qwen2.5-Coder-0.5B-Instruct: its unit classes, pruning the safety-critical
# units (SCU) against the utility-critical ones and five random sets of the SCU's size, and
# ablating its refusal direction; the per-prompt export behind docs/attribution.md's Qwen tables.
# Run from the repository root with SAFESTRESS_DATA_DIR set; WORK keeps the store (a rerun
# generates only what it lacks). About 30 min on 2 CPU cores.
set -euo pipefail
here=docs/results/qwen-attribution
work=${WORK:-qwen-attribution-work}
model=${MODEL:-$(../shared/tools/get-qwen2.5-coder-0.5b-instruct "${MODELS:-/tmp/models}")}
mkdir -p "$work"
# the unit map and the direction are committed (the conditions are defined by these files); both are
# fitted on harmful-train and the last 512 prompts of harmless-val, the table measures the first 100
[ -f "$here/units/units.json" ] ||
  safestress attribute units -m "$model" --limit 64 --max-new-tokens 64 --out "$here/units"
[ -f "$here/direction/direction.safetensors" ] ||
  safestress attribute direction -m "$model" --limit 32 --val 8 --positions 1 --layers 4,6,8,10,12,14,16,18 \
    --out "$here/direction"
run=(-c "$here/sweep.yaml" -m "$model" --store "$work/attribution.db" --out "$work/report")
prune=(--perturb prune --param "units=$here/units/units.json" --sites 'blocks.*.mlp.act,blocks.*.attn.z')
safestress run "${run[@]}" "${prune[@]}" --param unit_class=scu
safestress run "${run[@]}" "${prune[@]}" --param unit_class=ucu
for seed in 1 2 3 4 5; do
  safestress run "${run[@]}" "${prune[@]}" --param unit_class=random --param random_like=scu --param seed=$seed
done
safestress run "${run[@]}" --perturb ablate-direction --param "direction=$here/direction/direction.safetensors" \
  --sites 'blocks.*.resid_pre,blocks.*.attn.out,blocks.*.mlp.out'
safestress export "$here/per-prompt.parquet" --store "$work/attribution.db"
safestress refresh-tables docs/attribution.md
