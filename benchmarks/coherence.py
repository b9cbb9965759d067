"""How often the coherence criterion calls text `incoherent` — the figures in docs/judges.md.

On human-quality text every flag is a false alarm (a harmful answer that would go uncounted);
on heavily perturbed generations every miss is word salad counted as an answer. Measured on:

* XSTest: the 1,350 human-labelled completions of Llama-2, Mistral-Instruct and GPT-4;
* ``--pyrit DIR``: PyRIT's 395 human-labelled answers to harmful requests (docs/judges.md), with
  the human verdict of each flagged answer;
* ``--texts FILE:COLUMN`` (repeatable): any CSV of responses, or a ``safestress export`` Parquet
  file (each generation once), e.g. the committed per-prompt export of a results page;
* SmolLM2-135M-Instruct (``--smollm GGUF``) with Gaussian noise σ = 1, 2, 3 on every residual
  stream, the first 48 JailbreakBench behaviours, 48 new tokens, greedy.

Usage: SAFESTRESS_DATA_DIR=../shared/data python benchmarks/coherence.py \\
    --pyrit DIR --smollm ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf [--texts FILE:COL] [--show 5] \
    [--rows docs/results/judges/coherence.csv]

``--rows`` saves each text's verdict (set, row in the set, reason; for PyRIT the person's label),
which docs/judges.md's ``coherence`` table counts.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from pathlib import Path

from safestress.judges.coherence import VERSION, incoherence

ROWS: list[list[object]] = []  # set, row, reason ("" coherent), human label where the set has one


def report(name: str, texts: list[str], show: int, human: list[bool] | None = None) -> None:
    reasons = [incoherence(t) for t in texts]
    ROWS.extend([name, i, r or "", "" if human is None else int(human[i])] for i, r in enumerate(reasons))
    flagged = [i for i, r in enumerate(reasons) if r]
    by_reason = dict(Counter(r for r in reasons if r))
    share = 100 * len(flagged) / len(texts)
    line = f"{name:<28} n={len(texts):>5}  incoherent {len(flagged):>4} ({share:5.1f}%) {by_reason}"
    if human is not None:
        refused = sum(human[i] for i in flagged)
        line += f"  human label of the flagged: {refused} refusal, {len(flagged) - refused} compliance"
    print(line, flush=True)
    for i in flagged[:show]:
        print(f"    {reasons[i]}: {texts[i][:110]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SAFESTRESS_DATA_DIR", "../shared/data"))
    ap.add_argument("--pyrit", default="", help="PyRIT's scorer_evals/objective directory")
    ap.add_argument("--texts", action="append", default=[], help="FILE.csv:COLUMN of responses")
    ap.add_argument("--smollm", default="", help="SmolLM2 GGUF for the perturbed generations")
    ap.add_argument("--show", type=int, default=3, help="flagged examples to print per set")
    ap.add_argument("--rows", default="", help="write each text's verdict here (CSV)")
    args = ap.parse_args()
    print(f"coherence criterion version {VERSION}")
    data = Path(args.data)
    xstest = []
    for path in sorted((data / "xstest_labelled").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            xstest += [row["completion"] or "" for row in csv.DictReader(fh)]
    report("XSTest completions", xstest, args.show)
    if args.pyrit:
        from safestress.judges.training_data import pyrit_objective

        s = pyrit_objective(args.pyrit)
        report("PyRIT objective answers", s.responses, args.show, s.positive)
    for spec in args.texts:
        file, _, column = spec.rpartition(":")
        if file.endswith(".parquet"):
            import pandas as pd

            frame = pd.read_parquet(file).drop_duplicates("key")  # one row per generation, not per judge
            report(Path(file).parent.name, [str(t or "") for t in frame[column]], args.show)
            continue
        with open(file, newline="", encoding="utf-8") as fh:
            report(Path(file).name, [row[column] or "" for row in csv.DictReader(fh)], args.show)
    if args.smollm:
        import safestress as ss
        from safestress.models import load_model
        from safestress.perturb import PERTURBATIONS

        lm = load_model(args.smollm)
        with (data / "jbb_harmful.csv").open(newline="", encoding="utf-8") as fh:
            prompts = [row["Goal"] for row in csv.DictReader(fh)][:48]
        settings = ss.GenerationSettings(max_new_tokens=48)
        clean = [g.text for g in ss.generate(lm, prompts, settings=settings, batch_size=48)]
        report("SmolLM2 clean", clean, args.show)
        for sigma in (1.0, 2.0, 3.0):
            with ss.perturbed(lm, PERTURBATIONS.get("noise")(sigma=sigma), "blocks.*.resid_post"):
                noisy = [g.text for g in ss.generate(lm, prompts, settings=settings, batch_size=48)]
            report(f"SmolLM2 σ={sigma:g} (all resid_post)", noisy, 0)
    if args.rows:
        from safestress.textfile import write_rows

        write_rows(Path(args.rows), ["set", "row", "reason", "human"], ROWS)
        print(f"wrote {len(ROWS)} verdicts to {args.rows}")


if __name__ == "__main__":
    main()
