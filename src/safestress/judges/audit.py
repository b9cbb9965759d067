"""Audit a store's judges with a person's labels: a blind sample to label, then each condition's
harmful rate corrected for the judge's errors.

Why: agreement on XSTest says how a judge reads *those* models; a sweep's responses come from
another model under perturbations that change how it refuses and how it fails (lectures after
DPO, gibberish under strong noise), so the judge's error rate, and with it the bias of every
point on a curve, can change from one condition to the next. The remedy is to label a random
sample *of each condition* of the store and estimate each condition's rate from the labels plus
the judge's verdicts on the rest (:func:`safestress.stats.prediction_powered_rate`): unbiased
whatever the judge's errors, and as narrow as the judge's agreement allows.

The sample is blind: the file holds only an opaque key, the prompt and the response, shuffled
across conditions, so a labeller cannot tell the clean from the perturbed response or see what a
judge said. The audited quantity is the share of *all* responses that are harmful (for a refusal
judge: not refused) — a person reads gibberish as not harmful, so ``incoherent`` verdicts count
as not harmful here, where the sweep's table leaves them out of its rate and reports their share
beside it. Responses a judge could not score are left out of its audit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safestress import stats
from safestress.datasets import read_rows_file, require_columns
from safestress.errors import SafestressError
from safestress.guards import FIELD, MIN_AUDIT_LABELS, shortfalls

CELL = ["model", "dataset", "condition", "perturbation", "sites", "strength"]
FEW_LABELS = MIN_AUDIT_LABELS  # below this a condition's normal interval is too narrow (safestress/guards.py)


def draw_sample(frame: Any, per_condition: int, seed: int = 0) -> Any:
    """A blind random sample of ``per_condition`` responses from each condition (model × dataset ×
    configuration) of a store's frame: columns key, prompt, response and an empty label, shuffled.

    With several seeds, a condition's prompts are drawn first and one response (seed) of each, so
    the labels are independent across prompts; a second response of a prompt is drawn only once
    every prompt has one. Every response of a finished condition (the same number per prompt) is
    equally likely to be drawn. Seeded and independent of the store's row order, so the same
    store and seed give the same file; a condition with fewer responses contributes all of them.
    """
    import pandas as pd

    if per_condition < 1:
        raise SafestressError("--per-condition must be at least 1")
    gens = frame.drop_duplicates("key").sort_values("key")
    if gens.empty:
        raise SafestressError("the store holds no generations to sample")
    rng = np.random.default_rng(seed)
    parts = []
    for _, part in gens.groupby("config_hash", sort=True):
        shuffled = part.iloc[rng.permutation(len(part))]
        # the k-th response drawn of a prompt comes after every prompt's (k-1)-th
        rank = shuffled.groupby(["dataset", "item_id"], sort=False).cumcount().to_numpy()
        order = np.lexsort((np.arange(len(shuffled)), rank))
        parts.append(shuffled.iloc[order[:per_condition]])
    sample = pd.concat(parts)
    sample = sample.iloc[rng.permutation(len(sample))]
    out = sample[["key", "prompt", "response"]].copy()
    out["label"] = ""
    return out.reset_index(drop=True)


def require_new_file(path: str | Path) -> Path:
    """One-line error if ``path`` exists: a sample file may hold labels, which are never overwritten."""
    p = Path(path)
    if p.exists():
        raise SafestressError(f"{p} exists (it may hold labels); choose another --out or remove it first")
    return p


def auditable_judges(frame: Any) -> list[str]:
    """The judges of a store's frame with harmful/refusal verdicts (score-only judges have none)."""
    return sorted(frame.loc[frame["harmful"].notna(), "judge"].dropna().unique())


def write_sample(sample: Any, path: str | Path) -> Path:
    """Write the sample as CSV (or JSONL); never over an existing file, which may hold labels."""
    p = require_new_file(path)
    if p.suffix not in (".csv", ".jsonl"):
        raise SafestressError(f"sample format of {p.name} unknown; use .csv or .jsonl")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".csv":
        sample.to_csv(p, index=False)
    else:
        sample.to_json(p, orient="records", lines=True, force_ascii=False)
    return p


def label_with_judge(rows: list[dict[str, Any]], judge: Any, prompt_col: str, response_col: str) -> Counter[str]:
    """Fill the ``label`` of every sampled row from ``judge``'s verdict (``harmful`` /
    ``not harmful`` / ``incoherent``; left empty where it could not score, so the audit leaves the
    row out) and name the judge in ``labelled_by``; returns the count of each label.

    Why: a strong judge that is too slow or costly for every response of a sweep (an LLM judge,
    a HarmBench classifier) can label the blind sample instead of a person, and the audit then
    corrects the cheap judge's rates toward the strong judge's — its standard, with its errors.
    """
    verdicts = judge.judge([str(r[prompt_col] or "") for r in rows], [str(r[response_col] or "") for r in rows])
    for row, v in zip(rows, verdicts):
        if v.label == "incoherent":
            row["label"] = "incoherent"
        elif v.harmful is None:
            row["label"] = ""
        else:
            row["label"] = "harmful" if v.harmful else "not harmful"
        row["labelled_by"] = judge.key
    return Counter(r["label"] for r in rows)


def read_labels(path: str, key_col: str, label_col: str, positive: Sequence[str]) -> dict[str, bool]:
    """``{key: harmful}`` of the labelled rows of a filled-in sample; empty labels are skipped, so
    a partly labelled file can be audited as it grows."""
    rows = read_rows_file(path)
    require_columns(rows, [key_col, label_col], path)
    labelled = {str(r[key_col]): str(r[label_col]).strip() for r in rows if str(r[label_col] or "").strip()}
    if not labelled:
        raise SafestressError(f"no row of {path} has a '{label_col}' yet; label some responses first")
    values = set(labelled.values())
    missing = [v for v in positive if v not in values]
    if missing:
        raise SafestressError(
            f"positive value(s) {', '.join(missing)} never occur in '{label_col}'; values: {', '.join(sorted(values))}"
        )
    return {k: v in set(positive) for k, v in labelled.items()}


@dataclass
class AuditRow:
    judge: str
    model: str
    dataset: str
    condition: str
    perturbation: str
    sites: str
    strength: float
    responses: int  # the judge's scored responses in this condition (incoherent included, as not harmful)
    labelled: int  # of those, labelled by a person
    unscored: int  # responses the judge could not score: in neither count
    judge_rate: float  # share the judge calls harmful, of all its scored responses
    label_rate: float  # share the person calls harmful, of the labelled ones
    label_ci: tuple[float, float]  # Wilson interval of label_rate
    corrected: float  # prediction-powered estimate of the harmful share
    corrected_ci: tuple[float, float]
    lam: float  # weight the estimate gives the judge (0: the labels alone)
    accuracy: float  # judge vs person on this condition's labelled responses
    # corrected rate minus the clean run's (same model and dataset), its interval, p and Holm's p
    delta: float = float("nan")
    delta_ci: tuple[float, float] = (float("nan"), float("nan"))
    p: float = float("nan")
    p_holm: float = float("nan")
    # labels this condition would need for the planned half-width (inf: the judge term alone is wider)
    labels_needed: float = float("nan")


@dataclass
class JudgeAudit:
    judge: str
    n: int  # labelled responses the judge scored
    accuracy: float
    kappa: float
    kappa_ci: tuple[float, float]
    confusion: dict[str, int]  # positive = harmful
    rows: list[AuditRow]
    half_width: float = 0.05  # the interval half-width ``labels_needed`` plans for

    @property
    def shortfall(self) -> str:
        """ "" when every audited condition has enough labels (safestress/guards.py), else what is short."""
        few = min((r.labelled for r in self.rows), default=0)
        return "; ".join(shortfalls({"labels in a condition": (few, MIN_AUDIT_LABELS)}))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {FIELD: self.shortfall}  # rows included: asdict recurses into them


def judge_flags(part: Any) -> Any:
    """The judge's harmful flag per row as 1/0, incoherent as 0, unscored as NaN."""
    flags = part["harmful"].astype(float)
    return flags.where(~(part["label"] == "incoherent"), 0.0)


def audit_judge(
    frame: Any, judge: str, labels: dict[str, bool], level: float = 0.95, half_width: float = 0.05
) -> JudgeAudit:
    """Each condition's harmful share by ``judge``, by the labels, and corrected (see module doc)."""
    from safestress.judges.agreement import cohen_kappa, confusion_counts, kappa_interval

    df = frame[frame["judge"] == judge].drop_duplicates("key").copy()
    missing = set(labels) - set(df["key"])
    if missing:
        raise SafestressError(
            f"{len(missing)} labelled response(s) have no verdict by {judge} in this store; "
            "run the sweep again with this judge to compute them"
        )
    df["flag"] = judge_flags(df)
    df["human"] = df["key"].map(labels)
    rows: list[AuditRow] = []
    estimates: list[stats.CorrectedRate] = []
    for (model, dataset, condition, perturbation, sites, strength), part in df.groupby(CELL, sort=False):
        scored = part[part["flag"].notna()]
        lab = scored[scored["human"].notna()]
        rest = scored[scored["human"].isna()]
        y, f = lab["human"].astype(float).to_numpy(), lab["flag"].to_numpy()
        k = int(y.sum())
        prompts = (rest["dataset"].astype(str) + "\x1f" + rest["item_id"].astype(str)).tolist()
        est = stats.prediction_powered_rate(y, f, rest["flag"].to_numpy(), level=level, unlabelled_clusters=prompts)
        estimates.append(est)
        rows.append(
            AuditRow(
                judge,
                str(model),
                str(dataset),
                str(condition),
                str(perturbation),
                str(sites),
                float(strength),
                len(scored),
                len(lab),
                len(part) - len(scored),
                float(scored["flag"].mean()) if len(scored) else float("nan"),
                k / len(y) if len(y) else float("nan"),
                stats.wilson_ci(k, len(y), 1 - level),
                est.estimate,
                est.ci,
                est.lam,
                float((y == f).mean()) if len(y) else float("nan"),
                labels_needed=est.labels_for(half_width, level),
            )
        )
    _against_clean(rows, estimates, level)
    lab = df[df["human"].notna() & df["flag"].notna()]
    t, p = lab["human"].astype(bool).to_numpy(), lab["flag"].astype(bool).to_numpy()
    confusion = confusion_counts(t, p)
    return JudgeAudit(
        judge,
        len(lab),
        float((t == p).mean()) if len(lab) else float("nan"),
        cohen_kappa(t, p),
        kappa_interval(confusion, level),  # (nan, nan) without labels
        confusion,
        rows,
        half_width,
    )


def labelling_plan(audit: JudgeAudit) -> str:
    """One line: how many labels per condition would give every corrected rate ± the planned width."""
    rows = [r for r in audit.rows if not math.isnan(r.labels_needed)]
    if not rows:
        return ""
    target = f"±{100 * audit.half_width:g} pts"
    short = [r for r in rows if r.labels_needed > r.responses]
    if short:
        r = max(short, key=lambda r: r.labels_needed / r.responses)
        needed = "more than any number" if math.isinf(r.labels_needed) else f"{int(r.labels_needed)}"
        return (
            f"{audit.judge}: {target} would take {needed} labels in '{r.condition}', which has {r.responses} "
            "responses; more prompts or seeds, or a wider target (--plan)"
        )
    worst = max(rows, key=lambda r: r.labels_needed)
    return (
        f"{audit.judge}: about {int(worst.labels_needed)} labels per condition would give {target} in every "
        f"condition ('{worst.condition}' needs the most; it has {worst.labelled} now)"
    )


def _against_clean(rows: list[AuditRow], estimates: list[stats.CorrectedRate], level: float) -> None:
    """Fill each perturbed row's corrected change against its model's clean row; Holm across rows."""
    clean = {(r.model, r.dataset): e for r, e in zip(rows, estimates) if r.perturbation == "none"}
    tested = []
    for r, e in zip(rows, estimates):
        base = clean.get((r.model, r.dataset))
        if r.perturbation == "none" or base is None:
            continue
        r.delta, r.delta_ci, r.p = stats.corrected_difference(e, base, level)
        tested.append(r)
    for r, q in zip(tested, stats.holm([r.p for r in tested])):
        r.p_holm = q


def audit_store(
    frame: Any,
    judges: Sequence[str],
    labels: dict[str, bool],
    level: float = 0.95,
    skip: Callable[[str], None] | None = None,
    half_width: float = 0.05,
) -> list[JudgeAudit]:
    """Every judge's audit. Labels of responses the store does not hold are an error (a sample of
    another store); a judge without verdicts on every labelled response is an error too, unless
    ``skip`` is given: then it is called with the reason and the judge is left out."""
    unknown = set(labels) - set(frame["key"])
    if unknown:
        raise SafestressError(
            f"{len(unknown)} of {len(labels)} labelled keys are not in this store; "
            "was the sample drawn from another one?"
        )
    audits = []
    for judge in judges:
        try:
            audits.append(audit_judge(frame, judge, labels, level, half_width))
        except SafestressError as exc:
            if skip is None:
                raise
            skip(str(exc))
    return audits
