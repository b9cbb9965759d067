"""Preference pairs for `safestress defend quada` from a model's own exported answers.

QuadA trains a model to keep *its own* refusals under perturbation, so the pairs are built from
the model's clean answers (``safestress export``) rather than from a fixed refusal template:

* harmful rows: prompts the model refuses when clean (every judge in the export says
  ``refusal``) -> chosen = the model's refusal, rejected = a compliant answer to the same prompt
  from another export (``--rejected``; rows its judge calls ``compliance``), e.g. a weakly
  aligned model's answers;
* benign rows: prompts of ``--benign-dataset`` the model answers -> chosen = its answer,
  rejected = its most frequent refusal text on the harmful prompts (over-refusal is the failure
  the benign rows guard against).

Rows are interleaved 3 harmful : 1 benign so that every batch of 4 holds both kinds. Used for
docs/defence.md ("On a real aligned model")::

  python benchmarks/quada_prefs.py --answers pref.csv --harmful-dataset harmful-train \\
      --benign-dataset harmless-val --rejected smollm2-harmful-train.csv --out prefs.csv
"""

from __future__ import annotations

import argparse

import pandas as pd


def build(answers: pd.DataFrame, rejected: pd.DataFrame, harmful_dataset: str, benign_dataset: str) -> pd.DataFrame:
    """The interleaved preference table (prompt, chosen, rejected, harmful)."""
    comply = rejected[rejected.label == "compliance"].drop_duplicates("prompt").set_index("prompt").response
    harmful = answers[answers.dataset == harmful_dataset]
    labels = harmful.pivot_table(index=["prompt", "response"], columns="judge", values="label", aggfunc="first")
    refused = labels[(labels == "refusal").all(axis=1)].reset_index()
    if refused.empty:
        raise SystemExit(f"error: the model refuses none of the {harmful_dataset} prompts in the export")
    template = refused.response.str.strip().value_counts().index[0]
    harm = [
        {"prompt": r.prompt, "chosen": r.response, "rejected": comply[r.prompt], "harmful": 1}
        for r in refused.itertuples()
        if r.prompt in comply.index
    ]
    benign = answers[(answers.dataset == benign_dataset) & (answers.label == "compliance")].drop_duplicates("prompt")
    ben = [{"prompt": r.prompt, "chosen": r.response, "rejected": template, "harmful": 0} for r in benign.itertuples()]
    rows: list[dict] = []
    for i in range(min(-(-len(harm) // 3), len(ben))):  # ceil(len(harm) / 3) groups
        rows += [*harm[3 * i : 3 * i + 3], ben[i]]
    print(
        f"{len(refused)} of {labels.shape[0]} {harmful_dataset} prompts refused by every judge; "
        f"{len(harm)} with a compliant answer to reject, {len(ben)} benign answers; "
        f"refusal template {template!r}; {len(rows)} rows"
    )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", required=True, help="export of the model's clean answers (harmful and benign)")
    ap.add_argument("--rejected", required=True, help="export with compliant answers to the harmful prompts")
    ap.add_argument("--harmful-dataset", default="harmful-train")
    ap.add_argument("--benign-dataset", default="harmless-val")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    table = build(pd.read_csv(a.answers), pd.read_csv(a.rejected), a.harmful_dataset, a.benign_dataset)
    table.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
