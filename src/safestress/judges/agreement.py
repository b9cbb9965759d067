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
from pathlib import Path
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


@dataclass
class AccuracyDifference:
    """Accuracy of a second judge minus the first's on the items both scored: a paired difference
    of proportions (each item is right or wrong under both judges)."""

    n: int
    difference: float
    ci: tuple[float, float]
    p_value: float  # exact McNemar on the items exactly one of the two gets right
    only_first: int  # items only the first judge gets right
    only_second: int


def compare_accuracy(
    truth: Sequence[bool], first: Sequence[bool | None], second: Sequence[bool | None], level: float = 0.95
) -> AccuracyDifference:
    """Is the second judge right more often than the first, on the same items?

    The question a harm-labelled set asks of judges with different positive rates: κ rewards
    matching the labels' base rate, accuracy counts right answers. Items either judge left
    unscored are dropped from both. The interval is Newcombe's paired square-and-add interval and
    the test exact McNemar, the pair this project uses for every paired proportion (stats.paired).
    """
    from safestress.stats import mcnemar_exact, newcombe_paired_ci

    keep = [i for i, (a, b) in enumerate(zip(first, second)) if a is not None and b is not None]
    if not keep:
        raise SafestressError("comparing two judges needs items both scored")
    right_a = [first[i] == truth[i] for i in keep]
    right_b = [second[i] == truth[i] for i in keep]
    only_a = sum(a and not b for a, b in zip(right_a, right_b))
    only_b = sum(b and not a for a, b in zip(right_a, right_b))
    ci = newcombe_paired_ci(right_a, right_b, alpha=1 - level)
    return AccuracyDifference(
        len(keep), (only_b - only_a) / len(keep), ci, mcnemar_exact(only_a, only_b), only_a, only_b
    )


def evaluate_judge(
    judge: Judge,
    prompts: Sequence[str],
    responses: Sequence[str],
    truth: Sequence[bool],
    keep: int = 20,
    level: float = 0.95,
) -> Agreement:
    """Judge every item, then :func:`agreement_from` its verdicts (the first ``keep``
    disagreements kept as examples)."""
    verdicts = judge.judge(list(prompts), list(responses))
    labels = [None if v.harmful is None and v.score is None else v.label for v in verdicts]
    per_item = [None if label is None else label == judge.positive_label for label in labels]
    return agreement_from(judge.key, per_item, truth, level, examples=(prompts, responses, labels), keep=keep)


def agreement_from(
    judge: str,
    per_item: Sequence[bool | None],
    truth: Sequence[bool],
    level: float = 0.95,
    examples: tuple[Sequence[str], Sequence[str], Sequence[str | None]] | None = None,
    keep: int = 20,
) -> Agreement:
    """Accuracy, Cohen's κ with its interval and the confusion of one judge's per-item verdicts
    (True: its positive class; None: not scored, reported and never counted) against the labels.
    A saved verdict file (:func:`read_verdicts`) gives the same figures without the judge."""
    t_scored, p_scored, disagreements = [], [], []
    for i, (t, p) in enumerate(zip(truth, per_item)):
        if p is None:
            continue
        t_scored.append(t)
        p_scored.append(p)
        if p != t and examples is not None and len(disagreements) < keep:
            prompts, responses, labels = examples
            disagreements.append(
                {"prompt": prompts[i], "response": responses[i][:300], "human_positive": t, "judge_label": labels[i]}
            )
    n = len(t_scored)
    confusion = confusion_counts(t_scored, p_scored)
    accuracy = (confusion["tp"] + confusion["tn"]) / n if n else float("nan")
    return Agreement(
        judge,
        n,
        len(per_item) - n,
        accuracy,
        cohen_kappa(t_scored, p_scored),
        confusion,
        disagreements,
        kappa_interval(confusion, level),
        list(per_item),
    )


VERDICT_COLUMNS = ["row", "judge", "positive"]
_VERDICT_TEXT = {"1": True, "1.0": True, "true": True, "0": False, "0.0": False, "false": False, "": None}


def verdict_of(value: object, where: str) -> bool | None:
    """One per-item verdict as a file holds it: 1/true positive, 0/false not, empty not scored; any
    other text is one line naming ``where`` (never read as "not positive")."""
    text = "" if value is None else str(value).strip()
    if text.lower() not in _VERDICT_TEXT:
        raise SafestressError(f"{where} holds '{text}', not true/false/1/0/empty")
    return _VERDICT_TEXT[text.lower()]


def write_verdicts(path: Path, results: Sequence[Agreement]) -> None:
    """Each judge's verdict on each item, by the item's row in the labelled file (1 its positive
    class, 0 not, empty where it did not score): the per-item file behind an agreement table. The
    labels stay in their own file; this holds only what the judges said."""
    write_verdict_lists(path, {a.judge: a.verdicts for a in results})


def write_verdict_lists(path: Path, verdicts: dict[str, Sequence[bool | None]]) -> None:
    """:func:`write_verdicts` from judge name → per-item verdicts, for verdicts made elsewhere
    (a benchmark's held-out heads)."""
    from safestress.textfile import write_rows

    rows = (
        [i, judge, "" if v is None else int(v)] for judge, per_item in verdicts.items() for i, v in enumerate(per_item)
    )
    write_rows(path, VERDICT_COLUMNS, rows)


def read_verdicts(path: Path, n_items: int) -> dict[str, list[bool | None]]:
    """Judge key → per-item verdicts of a :func:`write_verdicts` file, in the file's judge order;
    one line if it does not hold one verdict per item of a labelled file of ``n_items`` rows."""
    rows = read_rows_file(str(path))
    require_columns(rows, VERDICT_COLUMNS, str(path))
    out: dict[str, list[bool | None]] = {}
    for r in rows:
        out.setdefault(str(r["judge"]), []).append(verdict_of(r["positive"], str(path)))
        if int(r["row"]) != len(out[str(r["judge"])]) - 1:
            raise SafestressError(f"{path}: rows of judge {r['judge']} are not 0, 1, 2, … in order")
    for judge, verdicts in out.items():
        if len(verdicts) != n_items:
            raise SafestressError(
                f"{path}: {judge} has {len(verdicts)} verdicts for a labelled file of {n_items} rows; "
                "the labelled file changed, judge it again"
            )
    return out


def load_labelled(
    path: str, prompt_col: str, response_col: str, label_col: str, positive: Sequence[str]
) -> tuple[list[str], list[str], list[bool]]:
    """Read a labelled CSV/JSONL/JSON file; one-line errors for missing files and columns."""
    rows = read_rows_file(path)
    require_columns(rows, [prompt_col, response_col], path)
    prompts = [str(r[prompt_col] or "") for r in rows]
    responses = [str(r[response_col] or "") for r in rows]
    return prompts, responses, truth_of(rows, label_col, positive, path)


def truth_of(rows: list[dict[str, Any]], label_col: str, positive: Sequence[str], path: str) -> list[bool]:
    """Each row's human label is one of the ``positive`` values; one line for a missing column
    or a positive value the column never holds (a typo would otherwise make every label False).

    Two forms for scored labels: ``label_col`` may be ``mean(A,B,…)``, the mean of several raters'
    numeric columns, and ``positive`` may be one threshold ``>=X`` (PyRIT's multi-rater harm
    scores: positive where the raters' mean is at least 0.5)."""
    values = label_values(rows, label_col, path)
    if len(positive) == 1 and positive[0].startswith(">="):
        threshold = _number(positive[0][2:], f"threshold '{positive[0]}'")
        return [_number(v, f"'{label_col}' of {path}") >= threshold for v in values]
    present, wanted = set(values), set(positive)
    missing = [v for v in positive if v not in present]
    if missing:
        known = ", ".join(sorted(present))
        raise SafestressError(f"positive value(s) {', '.join(missing)} never occur in '{label_col}'; values: {known}")
    return [v in wanted for v in values]


def label_values(rows: list[dict[str, Any]], label_col: str, path: str) -> list[str]:
    """Each row's label as text: a column's value, or for ``mean(A,B,…)`` the mean of those numeric
    columns (printed with repr, so a threshold compares the exact mean)."""
    if label_col.startswith("mean(") and label_col.endswith(")"):
        columns = [c.strip() for c in label_col[5:-1].split(",") if c.strip()]
        if not columns:
            raise SafestressError(f"label {label_col} names no column")
        require_columns(rows, columns, path)
        means = [sum(_number(r[c], f"'{c}' of {path}") for c in columns) / len(columns) for r in rows]
        return [repr(m) for m in means]
    require_columns(rows, [label_col], path)
    return [str(r[label_col]) for r in rows]


def _number(text: object, where: str) -> float:
    """A numeric label or threshold; one line naming ``where`` when it is not a number."""
    try:
        return float(str(text))
    except ValueError:
        raise SafestressError(f"{where} holds '{text}', not a number") from None
