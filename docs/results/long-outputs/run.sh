#!/usr/bin/env bash
# Judges over real lengths (docs/judges.md, "Degenerate output"): greedy answers of a barely aligned
# and a safety-tuned chat model at 64-512 new tokens, clean and under absolute Gaussian noise
# sigma 0.2 at blocks.0-3.resid_post, judged by refusal, embedding and harm. Every response's
# verdicts go to rows.parquet beside this script, which the docs' `lengths` tables read.
# About 55 min on 2 CPU cores; rerunning resumes from the store.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export SAFESTRESS_DATA_DIR=${SAFESTRESS_DATA_DIR:-../shared/data}
ROWS=docs/results/long-outputs/rows.parquet
DB=${DB:-bench_out/long_outputs.db}
SMOL=../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
QWEN=$(../shared/tools/get-qwen2.5-coder-0.5b-instruct /tmp/models)
J=refusal,embedding,harm
run() { python benchmarks/long_outputs.py --judge $J --out "$DB" --rows $ROWS "$@"; }
run --model $SMOL --dataset jbb --tokens 64,256,512 --sigma 0,0.2 --limit 100
run --model $SMOL --dataset xstest --tokens 64,256,512 --sigma 0 --limit 50
run --model "$QWEN" --dataset jbb --tokens 256,512 --sigma 0,0.2 --limit 30 --batch-size 15
run --model "$QWEN" --dataset xstest --tokens 64,256,512 --sigma 0 --limit 50 --batch-size 25
