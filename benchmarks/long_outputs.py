"""Judges on real lengths: how much of a real chat model's long, unperturbed output is called
incoherent, how many loops are cut, and how each judge's rate moves with the token budget.

Runs a sweep per model and token budget through the normal pipeline (one store, resumable), then
reads the verdicts back:

    python benchmarks/long_outputs.py --model ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --dataset jbb --tokens 64,256 --sigma 0 --out bench_out/long.db

Prints, per model, dataset, σ and token budget: responses, the share `incoherent` under today's
criterion, the share whose loop was cut, the share criterion 4 would have called a loop (the whole
answer: ≥ 16 words, < 25% distinct), and each judge's rate among scored responses. Figures:
docs/judges.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import safestress as ss
from safestress.judges.coherence import MIN_DISTINCT, MIN_REPEAT_TOKENS
from safestress.report.labels import labelled
from safestress.report.summary import judge_outcome


def criterion4_loop(text: str) -> bool:
    """What criterion 4 called a loop: the whole answer, however coherent its opening."""
    words = text.split()
    return len(words) >= MIN_REPEAT_TOKENS and len(set(words)) < MIN_DISTINCT * len(words)


def run(
    model: str,
    dataset: str,
    tokens: int,
    sigma: list[float],
    judges: list[str],
    store: str,
    limit: int | None,
    sites: str,
    batch: int,
) -> Any:
    cfg = ss.build_config(
        models=[model],
        dataset=dataset,
        sigma=sigma,
        sites=[sites],
        max_new_tokens=tokens,
        batch_size=batch,
        judge=judges,
        store=store,
        limit=limit,
    )
    plan = ss.plan_sweep(cfg)
    with ss.Store(store) as st:
        counts = ss.execute(plan, st)
        frame = labelled(plan.frame(st), st)
    frame = frame[frame["judge"].isin({j.key for j in plan.judges})].copy()  # today's judges, not older versions
    frame["max_new_tokens"] = tokens
    frame["criterion4_loop"] = frame["response"].map(criterion4_loop)
    print(f"# {Path(model).name} {dataset} {tokens} tokens: {counts['generated']} generated", file=sys.stderr)
    for strength, part in frame.groupby("strength"):
        first = part[part["judge"] == part["judge"].iloc[0]]
        n = len(first)
        rates = []
        for judge, rows in part.groupby("judge"):
            scored = rows["harmful"].dropna()
            # each judge's rate named for what it measures: "complied" is not "harmful"
            rates.append(f"{judge.split('@')[0]} {judge_outcome(judge)} {100 * scored.mean():.1f}% of {len(scored)}")
        print(
            f"| {Path(model).stem} | {dataset} | {strength:g} | {tokens} | {n} | "
            f"{100 * (first['label'] == 'incoherent').mean():.1f} | {100 * first['loop_cut'].notna().mean():.1f} | "
            f"{100 * first['criterion4_loop'].mean():.1f} | {'; '.join(rates)} |"
        )
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--dataset", action="append", default=None, help="default: jbb and xstest")
    parser.add_argument("--tokens", default="64,256,512")
    parser.add_argument("--sigma", default="0")
    parser.add_argument("--sites", default="blocks.0-3.resid_post")
    parser.add_argument("--judge", default="refusal,embedding")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="bench_out/long_outputs.db")
    parser.add_argument("--rows", help="also write every response's verdicts here (Parquet; docs' lengths tables)")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sigma = [float(s) for s in args.sigma.split(",")]
    print("| model | dataset | σ | tokens | n | incoherent % | loop cut % | criterion-4 loop % | rate per judge |")
    print("|---|---|---|---|---|---|---|---|---|")
    frames = []
    for model in args.model:
        for dataset in args.dataset or ["jbb", "xstest"]:
            for tokens in (int(t) for t in args.tokens.split(",")):
                frame = run(
                    model,
                    dataset,
                    tokens,
                    sigma,
                    args.judge.split(","),
                    args.out,
                    args.limit,
                    args.sites,
                    args.batch_size,
                )
                frames.append(frame)
    if args.rows:
        write_rows_file(frames, Path(args.rows))
    return 0


ROW_COLUMNS = ["model", "dataset", "strength", "max_new_tokens", "item_id", "judge", "label", "harmful", "loop_cut"]


def write_rows_file(frames: list[Any], path: Path) -> None:
    """Every response's verdicts, beside the rows already in ``path`` (a run per model adds its
    rows; a condition run again replaces its own): what docs/judges.md's ``lengths`` tables read."""
    import pandas as pd

    new = pd.concat(frames, ignore_index=True)[[*ROW_COLUMNS, "criterion4_loop"]]
    if path.exists():
        old = pd.read_parquet(path)
        keys = ["model", "dataset", "strength", "max_new_tokens"]
        done = set(map(tuple, new[keys].drop_duplicates().itertuples(index=False)))
        old = old[[tuple(r) not in done for r in old[keys].itertuples(index=False)]]
        new = pd.concat([old, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_parquet(path, index=False)
    print(f"wrote {len(new)} rows to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
