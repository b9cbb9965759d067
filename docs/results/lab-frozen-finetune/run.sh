#!/usr/bin/env bash
# SSAH's frozen-unit fine-tuning on the deep-aligned lab model: units classified on calibration
# prompts, then three fine-tuning settings (a strong attack, a mild one, benign data), each with
# nothing frozen, SCU frozen, SCU+CU frozen (three training runs each) and as many random units of
# each kind frozen (five draws each); the per-prompt export behind docs/finetune.md's lab tables.
# Run from the repository root; WORK keeps the models and the store (a rerun skips what is there).
set -euo pipefail
work=${WORK:-lab-frozen-work}
mkdir -p "$work"
base=$(safestress lab train --depth deep --no-eval)
units() {  # NAME SCU_SHARE: SSAH's classification at that share of SCU and UCU, RU 20%
  [ -f "$work/$1/units.json" ] || safestress attribute units --model "$base" --harmful lab-calib-harmful \
    --benign lab-calib-benign --limit 96 --judge lab --score ssah --scu "$2" --ucu "$2" --ru 0.2 \
    --max-new-tokens 24 --batch-size 96 --out "$work/$1"
}
units units 0.013
units units-scu7.5 0.075
safestress lab attack "$work/attack.csv" --harmful-rows 16 --benign-rows 112
safestress lab attack "$work/benign.csv" --harmful-rows 0 --benign-rows 128
models=(--model "$base")
add_runs() {  # DIR N: the N runs a finetune --runs N wrote into DIR, as --model options
  local seed; for ((seed = 0; seed < $2; seed++)); do models+=(--model "$1/$(basename "$1")-s$seed"); done
}
setting() {  # NAME DATA STEPS LR UNITS…: every arm of one fine-tuning setting
  local name=$1 data=$2 steps=$3 lr=$4; shift 4
  local common=(--model "$base" --data "$work/$data.csv" --steps "$steps" --lr "$lr" --batch-size 16 --seed 0)
  [ -d "$work/$name-nothing" ] || safestress finetune "${common[@]}" --runs 3 --out "$work/$name-nothing"
  add_runs "$work/$name-nothing" 3
  for map in "$@"; do
    for classes in scu scu,cu; do
      local arm="$name-$map-${classes/,/+}"
      [ "$map" = units-scu7.5 ] && [ "$classes" = scu,cu ] && continue  # 7.5% SCU alone, as SSAH
      local with=("${common[@]}" --units "$work/$map/units.json" --freeze "$classes")
      [ -d "$work/$arm" ] || safestress finetune "${with[@]}" --runs 3 --out "$work/$arm"
      [ -d "$work/$arm-random" ] || safestress finetune "${with[@]}" --random-control --runs 5 --out "$work/$arm-random"
      add_runs "$work/$arm" 3
      add_runs "$work/$arm-random" 5
    done
  done
}
setting strong attack 60 1e-3 units
setting mild attack 30 3e-4 units units-scu7.5
setting benign benign 60 1e-3 units
eval=("${models[@]}" --sigma 0 --max-new-tokens 24 --batch-size 120 --store "$work/eval.db" --no-plot --out "$work/report")
safestress run "${eval[@]}" --dataset lab-harmful --judge lab
safestress run "${eval[@]}" --dataset lab-benign --judge lab-task
safestress export docs/results/lab-frozen-finetune/per-prompt.parquet --store "$work/eval.db"
safestress refresh-tables docs/finetune.md
