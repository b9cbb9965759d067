"""How often the reference LM's salad check (judges.fluency) calls text salad — docs/judges.md.

On fluent answers every flag is a false alarm (an answer that would go uncounted); on answers
written under heavy noise that the coherence criterion passes, every flag is salad it missed.
The check's thresholds were set on the first two sets only (other people's fluent answers); the
rest are measured with them as they are:

* XSTest: the 1,350 human-labelled completions of Llama-2, Mistral-Instruct and GPT-4;
* jailbreak_eval_manual.csv: 300 answers of several models to jailbreaks;
* ``--export FILE`` (repeatable): a committed ``per-prompt.parquet``; its unperturbed answers
  (strength 0) form the set "FILE clean", and its perturbed answers that the coherence criterion
  passes the set "FILE noisy".

Usage: SAFESTRESS_DATA_DIR=../shared/data python benchmarks/fluency.py \\
    --ref ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
    --export docs/results/family-noise/gemma-3-270m/all/per-prompt.parquet [--rows FILE.csv] [--show 3]
    [--condition smoothquant --label compliance --no-fluent]
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import pandas as pd

from safestress.judges.coherence import incoherence
from safestress.judges.fluency import Fluency


def fluent_sets(data: Path) -> dict[str, list[str]]:
    """Other people's answers, fluent by construction (the check's thresholds were set on these)."""
    sets = {}
    for model in ("llama2orig", "mistralinstruct", "gpt4"):
        frame = pd.read_csv(data / "xstest_labelled" / f"xstest_completions_{model}.csv")
        sets[f"xstest {model}"] = frame["completion"].fillna("").astype(str).tolist()
    answers = pd.read_csv(data / "jailbreak_eval_manual.csv")["response"]
    sets["jailbreak_eval_manual"] = answers.fillna("").astype(str).tolist()
    return sets


def export_sets(path: Path, condition: str | None = None, label: str | None = None) -> dict[str, list[str]]:
    """One export's distinct answers: unperturbed, and perturbed ones the criterion passes; with
    ``condition`` only conditions whose name contains it, with ``label`` only the answers some
    judge gave that label (e.g. ``compliance``)."""
    frame = pd.read_parquet(path, columns=["response", "strength", "condition", "label"])
    if condition:
        frame = frame[frame["condition"].str.contains(condition, regex=False) | (frame["strength"].fillna(0) == 0)]
    clean = frame[frame["strength"].fillna(0) == 0].drop_duplicates("response")["response"].tolist()
    perturbed = frame[frame["strength"].fillna(0) != 0]
    if label:
        perturbed = perturbed[perturbed["label"] == label]
    noisy = [t for t in perturbed.drop_duplicates("response")["response"] if incoherence(t) is None]
    tag = "".join(f" [{k}={v}]" for k, v in (("condition", condition), ("label", label)) if v)
    return {f"{path} clean": clean, f"{path} noisy{tag}": noisy}


def measure(check: Fluency, sets: dict[str, list[str]]) -> list[dict[str, object]]:
    """Per text: its set, row, scored tokens, mean NLL and the check's call."""
    rows = []
    for name, texts in sets.items():
        for i, ((nll, n), salad) in enumerate(zip(check.mean_nll(texts), check.salad(texts))):
            rows.append({"set": name, "row": i, "tokens": n, "mean_nll": round(nll, 4), "salad": int(salad)})
    return rows


def summarize(rows: list[dict[str, object]], min_tokens: int) -> pd.DataFrame:
    """Per set: texts, flagged as salad, and the highest mean NLL among texts long enough to judge."""
    frame = pd.DataFrame(rows)
    long = frame[frame["tokens"] >= min_tokens]
    out = frame.groupby("set", sort=False).agg(texts=("row", "size"), salad=("salad", "sum"))
    out["salad %"] = (100 * out["salad"] / out["texts"]).round(1)
    out["mean NLL"] = frame.groupby("set", sort=False)["mean_nll"].mean().round(2)
    out["highest NLL (>= min tokens)"] = long.groupby("set", sort=False)["mean_nll"].max().round(2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="the reference LM (a .gguf file, folder or hub id)")
    ap.add_argument("--export", action="append", default=[], help="a per-prompt.parquet export (repeatable)")
    ap.add_argument("--condition", help="perturbed answers only of conditions whose name contains this")
    ap.add_argument("--label", help="perturbed answers only that some judge labelled so (e.g. compliance)")
    ap.add_argument("--rows", help="save each text's NLL and call to this CSV")
    ap.add_argument("--no-fluent", action="store_true", help="skip the fluent sets the thresholds were set on")
    ap.add_argument("--show", type=int, default=0, help="print this many flagged texts per set")
    args = ap.parse_args()
    check = Fluency(args.ref)
    sets = {} if args.no_fluent else fluent_sets(Path(os.environ.get("SAFESTRESS_DATA_DIR", "../shared/data")))
    for path in args.export:
        sets.update(export_sets(Path(path), args.condition, args.label))
    rows = measure(check, sets)
    print(f"reference {args.ref}: salad = mean NLL > {check.max_nll} nats/token on >= {check.min_tokens} tokens")
    print(summarize(rows, check.min_tokens).to_string())
    if args.show:
        for name, texts in sets.items():
            flagged = [r["row"] for r in rows if r["set"] == name and r["salad"]][: args.show]
            for i in flagged:
                print(f"  {name} #{i}: {texts[i][:160]!r}")
    if args.rows:
        Path(args.rows).parent.mkdir(parents=True, exist_ok=True)
        with open(args.rows, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
