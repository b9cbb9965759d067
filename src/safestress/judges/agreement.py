"""How far a judge agrees with human labels: accuracy, Cohen's κ, confusion matrix, disagreements.

A judge's verdict is *positive* when its label is the judge's ``positive_label`` (``refusal``
for refusal judges); a human label is positive when it is one of the ``positive`` values given
(for XSTest: ``2_full_refusal,3_partial_refusal``). Items the judge does not score (empty or
incoherent output) are reported as ``unscored`` and left out of accuracy and κ — never counted
as either class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from safestress.datasets import read_rows_file, require_columns
from safestress.errors import SafestressError
from safestress.judges.base import Judge


@dataclass
class Agreement:
    judge: str
    n: int  # scored items
    unscored: int
    accuracy: float
    kappa: float
    confusion: dict[str, int]  # tp, fp, fn, tn (positive = the judge's positive label)
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "n": self.n,
            "unscored": self.unscored,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "confusion": self.confusion,
            "disagreements": self.disagreements,
        }


def cohen_kappa(truth: Sequence[bool], pred: Sequence[bool]) -> float:
    """Cohen's κ of two binary raters."""
    n = len(truth)
    if n == 0:
        return float("nan")
    observed = sum(t == p for t, p in zip(truth, pred)) / n
    pt, pp = sum(truth) / n, sum(pred) / n
    expected = pt * pp + (1 - pt) * (1 - pp)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def evaluate_judge(
    judge: Judge, prompts: Sequence[str], responses: Sequence[str], truth: Sequence[bool], keep: int = 20
) -> Agreement:
    verdicts = judge.judge(list(prompts), list(responses))
    t_scored, p_scored, disagreements = [], [], []
    unscored = 0
    for prompt, response, t, v in zip(prompts, responses, truth, verdicts):
        if v.harmful is None and v.score is None:
            unscored += 1
            continue
        p = v.label == judge.positive_label
        t_scored.append(t)
        p_scored.append(p)
        if p != t and len(disagreements) < keep:
            disagreements.append(
                {"prompt": prompt, "response": response[:300], "human_positive": t, "judge_label": v.label}
            )
    n = len(t_scored)
    confusion = {
        "tp": sum(t and p for t, p in zip(t_scored, p_scored)),
        "fp": sum((not t) and p for t, p in zip(t_scored, p_scored)),
        "fn": sum(t and (not p) for t, p in zip(t_scored, p_scored)),
        "tn": sum((not t) and (not p) for t, p in zip(t_scored, p_scored)),
    }
    accuracy = (confusion["tp"] + confusion["tn"]) / n if n else float("nan")
    return Agreement(judge.key, n, unscored, accuracy, cohen_kappa(t_scored, p_scored), confusion, disagreements)


def load_labelled(
    path: str, prompt_col: str, response_col: str, label_col: str, positive: Sequence[str]
) -> tuple[list[str], list[str], list[bool]]:
    """Read a labelled CSV/JSONL/JSON file; one-line errors for missing files and columns."""
    rows = read_rows_file(path)
    require_columns(rows, [prompt_col, response_col, label_col], path)
    values = {str(r[label_col]) for r in rows}
    missing = [v for v in positive if v not in values]
    if missing:
        raise SafestressError(
            f"positive value(s) {', '.join(missing)} never occur in '{label_col}'; values: {', '.join(sorted(values))}"
        )
    prompts = [str(r[prompt_col] or "") for r in rows]
    responses = [str(r[response_col] or "") for r in rows]
    truth = [str(r[label_col]) in set(positive) for r in rows]
    return prompts, responses, truth
