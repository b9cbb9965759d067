"""How far a judge agrees with human labels: accuracy, Cohen's κ with its confidence interval,
confusion matrix, disagreements — and whether one judge agrees better than another on the same items.

A judge's verdict is *positive* when its label is the judge's ``positive_label`` (``refusal``
for refusal judges); a human label is positive when it is one of the ``positive`` values given
(for XSTest: ``2_full_refusal,3_partial_refusal``). Items the judge does not score (empty or
incoherent output) are reported as ``unscored`` and left out of accuracy and κ — never counted
as either class.

Why intervals: a κ from a few hundred items with a small positive class moves by several
hundredths from sample to sample (XSTest's Mistral-Instruct completions: 76 refusals of 450), so
"κ 0.73 against a bar of 0.80" and "judge A beats judge B" are only claims with their
uncertainty beside them. κ's interval is the large-sample one (Fleiss, Cohen & Everitt 1969,
as statsmodels computes it); two judges on the same items are compared by a paired bootstrap
(scipy), because their errors are correlated and two separate intervals would overstate the
uncertainty of the difference.
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
    kappa_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% unless evaluate_judge was told
    # per input item: the judge's verdict is positive (True/False), or None where it did not score
    verdicts: list[bool | None] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "n": self.n,
            "unscored": self.unscored,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "kappa_ci": list(self.kappa_ci),
            "confusion": self.confusion,
            "disagreements": self.disagreements,
        }


def cohen_kappa(truth: Sequence[bool], pred: Sequence[bool]) -> float:
    """Cohen's κ of two binary raters (NaN, undefined, when both use one and the same class throughout)."""
    import numpy as np

    if len(truth) == 0:
        return float("nan")
    return float(_kappa_along(np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)))


def confusion_counts(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, int]:
    """The 2×2 table of human labels against a judge's verdicts: tp, fp, fn, tn (positive = True)."""
    import numpy as np

    t, p = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum())}


def kappa_interval(confusion: dict[str, int], level: float = 0.95) -> tuple[float, float]:
    """Large-sample confidence interval of Cohen's κ from a 2×2 confusion (tp, fp, fn, tn),
    clipped to [-1, 1]; (nan, nan) when either rater used one class only (κ is then 0 or undefined
    and its large-sample variance is not defined)."""
    from scipy.stats import norm
    from statsmodels.stats.inter_rater import cohens_kappa

    table = [[confusion["tp"], confusion["fn"]], [confusion["fp"], confusion["tn"]]]
    rows, cols = [sum(r) for r in table], [table[0][j] + table[1][j] for j in range(2)]
    if min(rows) == 0 or min(cols) == 0:
        return float("nan"), float("nan")
    res = cohens_kappa(table)
    half = norm.isf((1 - level) / 2) * float(res.std_kappa)
    return max(-1.0, float(res.kappa) - half), min(1.0, float(res.kappa) + half)


@dataclass
class KappaDifference:
    """κ(first judge) − κ(second judge) on the items both scored, with a paired-bootstrap interval."""

    n: int
    difference: float
    ci: tuple[float, float]
    p_value: float  # two-sided, from the bootstrap distribution (smallest reportable: 2 / (resamples + 1))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "kappa_difference": self.difference, "ci": list(self.ci), "p_value": self.p_value}


def _kappa_along(t: Any, p: Any, axis: int = -1) -> Any:
    """Cohen's κ of boolean arrays along ``axis`` (vectorised over bootstrap resamples)."""
    from safestress.stats import kappa_from_counts

    return kappa_from_counts((t & p).sum(axis), (t & ~p).sum(axis), (~t & p).sum(axis), (~t & ~p).sum(axis))


def compare_kappa(
    truth: Sequence[bool],
    first: Sequence[bool | None],
    second: Sequence[bool | None],
    level: float = 0.95,
    resamples: int = 4999,
    seed: int = 0,
) -> KappaDifference:
    """Is the first judge's κ with the human labels higher than the second's, on the same items?

    Items either judge left unscored (``None``) are dropped from both. The interval is the
    percentile interval of a paired bootstrap over items (both judges' verdicts and the label
    resampled together); the p-value is twice the smaller tail share of bootstrap differences on
    either side of zero. Deterministic for a seed.
    """
    import numpy as np
    from scipy.stats import bootstrap

    keep = [i for i, (a, b) in enumerate(zip(first, second)) if a is not None and b is not None]
    t = np.array([truth[i] for i in keep], dtype=bool)
    a = np.array([first[i] for i in keep], dtype=bool)
    b = np.array([second[i] for i in keep], dtype=bool)
    if len(keep) < 2:
        raise SafestressError("comparing two judges needs at least two items both scored")

    def difference(t: Any, a: Any, b: Any, axis: int = -1) -> Any:
        return _kappa_along(t, a, axis) - _kappa_along(t, b, axis)

    observed = float(difference(t, a, b))
    if np.array_equal(a, b):  # identical verdicts: every resample differs by exactly zero
        return KappaDifference(len(keep), 0.0, (0.0, 0.0), 1.0)
    res = bootstrap(
        (t, a, b),
        difference,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    dist = np.asarray(res.bootstrap_distribution)
    tail = min((np.sum(dist <= 0) + 1) / (resamples + 1), (np.sum(dist >= 0) + 1) / (resamples + 1))
    ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return KappaDifference(len(keep), observed, ci, min(1.0, 2 * float(tail)))


def evaluate_judge(
    judge: Judge,
    prompts: Sequence[str],
    responses: Sequence[str],
    truth: Sequence[bool],
    keep: int = 20,
    level: float = 0.95,
) -> Agreement:
    verdicts = judge.judge(list(prompts), list(responses))
    t_scored, p_scored, disagreements = [], [], []
    per_item: list[bool | None] = []
    unscored = 0
    for prompt, response, t, v in zip(prompts, responses, truth, verdicts):
        if v.harmful is None and v.score is None:
            unscored += 1
            per_item.append(None)
            continue
        p = v.label == judge.positive_label
        per_item.append(p)
        t_scored.append(t)
        p_scored.append(p)
        if p != t and len(disagreements) < keep:
            disagreements.append(
                {"prompt": prompt, "response": response[:300], "human_positive": t, "judge_label": v.label}
            )
    n = len(t_scored)
    confusion = confusion_counts(t_scored, p_scored)
    accuracy = (confusion["tp"] + confusion["tn"]) / n if n else float("nan")
    return Agreement(
        judge.key,
        n,
        unscored,
        accuracy,
        cohen_kappa(t_scored, p_scored),
        confusion,
        disagreements,
        kappa_interval(confusion, level),
        per_item,
    )


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
