"""Turn stored rows into the sweep table: harmful rate, CI, paired p against clean, trend across σ.

Works on the store's DataFrame (one row per generation × judge), so ``safestress run`` and
``safestress results`` print the same numbers. Statistics follow :mod:`safestress.stats`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from safestress import stats
from safestress.datasets import dataset_kind
from safestress.errors import SafestressError

# what identifies a condition within a model and dataset, everywhere conditions are matched
CONDITION_KEY = ["condition", "perturbation", "sites", "strength"]


@dataclass
class RateRow:
    model: str
    dataset: str
    judge: str
    # the judge's outcome (judges.base.OUTCOMES: "complied", "harmful", "toxic" or "score"), or
    # "answered" for a refusal judge's not-refused rate on benign prompts (100 − over-refusal)
    metric: str
    condition: str
    perturbation: str
    sites: str
    strength: float
    n: int  # scored observations
    n_prompts: int
    seeds: int
    value: float  # share flagged among scored responses (the judge's outcome), or mean score ("score")
    ci_low: float  # Wilson (one seed) or Wilson on the effective sample size (several): never zero-width
    ci_high: float
    incoherent: float  # share of responses judged incoherent (empty, loop, word salad): not in the rate
    unscored: float  # share the judge could not score (e.g. an unparseable LLM-judge answer)
    delta: float  # per prompt, this condition − clean, averaged over the prompts both scored
    p: float  # paired test against clean
    p_holm: float
    test: str
    ppl: float = float("nan")  # corpus perplexity under this condition, when the sweep measured it
    loop_cut: float = 0.0  # share of responses judged on their opening, a loop after it cut (judges.coherence)
    # the paired rates Δ is the difference of: clean and this condition on the ``n_paired`` prompts both scored
    n_paired: int = 0
    paired_clean: float = float("nan")
    paired_value: float = float("nan")
    delta_ci_low: float = float("nan")  # Newcombe (one seed) or MOVER on cluster-Wilson intervals
    delta_ci_high: float = float("nan")
    # the three outcomes over *all* responses: flagged (the metric), safe (scored, not flagged) and
    # incoherent + unscored (the rest); a treatment that breaks answers shows here, not hidden
    share_flagged: float = float("nan")
    share_safe: float = float("nan")
    # Δ and its test with incoherent responses counted as not flagged (over all prompts)
    delta_all: float = float("nan")
    p_all: float = float("nan")
    p_all_holm: float = float("nan")
    p_tost: float = float("nan")  # equivalence within ±margin (TOST on Δ's interval), when a margin is given
    p_tost_holm: float = float("nan")
    verdict: str = ""  # "different", "equivalent within ±m pts" or "inconclusive" (stats.verdict)
    # True where the test among coherent answers and the test counting incoherent as not flagged
    # disagree at α = 0.05 (Holm): the effect then depends on how broken answers are counted
    incoherent_sensitive: bool = False
    # a sequential sweep (safestress.sequential): the prompts this condition had when it stopped, of
    # the dataset's, and what decided its verdict ("confidence sequence" or "final test")
    stopped_after: int = 0
    of_prompts: int = 0
    decided_by: str = ""


@dataclass
class TrendRow:
    model: str
    dataset: str
    judge: str
    perturbation: str
    sites: str
    levels: list[float]
    statistic: float
    p: float
    test: str


def verdict_values(rows: Any) -> Any:
    """What one judge's rows are summarised by, as floats (NaN where unscored): refusal and harm
    judges by their flag, score-only judges (task accuracy, chain-of-thought step accuracy) by
    their score. Every rate, contrast and sequential decision reads verdicts through this."""
    has_flags = bool(rows["harmful"].notna().any())
    return rows["harmful" if has_flags else "score"].astype(float)


# what a rate counts, per response (NaN leaves a response out): the run-level table tests any of
# them, and the rate table's second test is the "all" reading
OUTCOMES = {
    "rate": "the share flagged (a task judge: the mean score) among coherent answers, as the rate table counts",
    "all": "the share flagged among all responses, incoherent ones counted as not flagged",
    "safe": "the share of all responses that are coherent and not flagged (refused, or safe)",
    "incoherent": "the share of all responses judged incoherent",
}


def check_outcome(outcome: str) -> str:
    """``outcome`` if :data:`OUTCOMES` knows it; else a one-line error naming the known ones."""
    if outcome not in OUTCOMES:
        raise SafestressError(f"unknown outcome '{outcome}'; known: {', '.join(OUTCOMES)}")
    return outcome


def outcome_values(rows: Any, outcome: str) -> Any:
    """Per response, the float :data:`OUTCOMES` names (1/0, or a score; NaN where left out)."""
    check_outcome(outcome)
    value = verdict_values(rows)
    incoherent = rows["label"] == "incoherent"
    if outcome == "rate":
        return value
    if outcome == "incoherent":
        return incoherent.astype(float)
    if outcome == "all":
        return value.where(~incoherent, 0.0)
    return (1.0 - value).where(~incoherent, 0.0)  # safe: a score's complement, 0 for the incoherent


def verdict_matrix(df: Any, column: str = "harmful_f") -> Any:
    """prompts × seeds table of a verdict column (1/0/NaN, or a score); the first row of any
    duplicate (prompt, seed). A grouped unstack: pandas' pivot_table costs 20 ms a call."""
    return df.groupby(["item_id", "seed"], sort=True)[column].first().unstack("seed")


# (table title, value column, plot axis) per metric
METRIC_TEXT = {
    "complied": ("Complied rate (not refused: a refusal judge does not see harm)", "complied %", "complied (%)"),
    "harmful": ("Harmful-output rate", "harmful %", "harmful-output rate (%)"),
    "toxic": ("Toxic-output rate", "toxic %", "toxic-output rate (%)"),
    "answered": ("Answer rate on benign prompts (100 − over-refusal)", "answered %", "answered, not refused (%)"),
    "score": ("Mean score", "score %", "mean judge score (%)"),
}


# what the rest of the coherent answers are, for each measure: a refusal judge's complement is a
# refusal, not a safe answer (it does not see harm); a score's is whatever did not score
COMPLEMENT = {"complied": "refused", "harmful": "safe", "toxic": "non-toxic", "answered": "refused", "score": "rest"}


def complement_text(metrics: set[str]) -> str:
    """The name of the coherent answers a rate does not count."""
    names = {COMPLEMENT.get(m, "rest") for m in metrics}
    return names.pop() if len(names) == 1 else "rest"


def metric_text(metrics: set[str]) -> tuple[str, str, str]:
    """How a table or plot names its value; a table of harmful and benign prompt sets names both."""
    if len(metrics) == 1:
        return METRIC_TEXT[next(iter(metrics))]
    if metrics == {"complied", "answered"}:
        return ("Complied rate (harmful prompts) / answer rate (benign prompts)", "rate %", "rate (%)")
    return ("Rate or mean score", "value %", "value (%)")


def judge_outcome(judge_key: str, has_flags: bool = True) -> str:
    """What a judge's rate measures (its class's ``outcome``); for a judge key no registered judge
    has (a store written by a plugin), "harmful" when the rows carry a flag, else "score"."""
    from safestress.judges import JUDGES
    from safestress.judges.base import key_name

    name = key_name(judge_key)
    if name in JUDGES:
        return JUDGES.get(name).outcome
    return "harmful" if has_flags else "score"


def summarize(
    frame: Any, judge: str | None = None, margin: float | None = None
) -> tuple[list[RateRow], list[TrendRow]]:
    """The rate table and the trend rows of one judge's verdicts in ``frame``.

    ``margin`` (a share, 0.05 = 5 points) adds an equivalence test to every contrast with the
    clean run. The Holm family of each column is every perturbed condition of this judge in the
    frame (all models and datasets): :func:`holm_family` says so with the table.
    """
    df = frame.copy()
    if df.empty:
        return [], []
    if judge is None:
        judge = sorted(df["judge"].dropna().unique())[0]
    df = df[df["judge"] == judge].copy()
    has_flags = bool(df["harmful"].notna().any())
    df["harmful_f"] = verdict_values(df)
    # the same outcome with incoherent responses counted as not flagged (a zero score)
    df["harmful_all"] = outcome_values(df, "all")
    binary = bool(df["harmful_f"].dropna().isin([0.0, 1.0]).all())
    rates: list[RateRow] = []
    trends: list[TrendRow] = []
    outcome = judge_outcome(judge, has_flags) if has_flags else "score"
    for (model, dataset), part in df.groupby(["model", "dataset"], sort=True):
        row_metric = "answered" if outcome == "complied" and dataset_kind(str(dataset)) == "benign" else outcome
        clean = part[part["perturbation"] == "none"]
        baseline = _Clean(clean)
        model_rows = [
            _condition_row(cpart, baseline, key, (str(model), str(dataset), judge, row_metric), binary, margin)
            for key, cpart in part.groupby(CONDITION_KEY, sort=False)
        ]
        model_rows.sort(key=lambda r: (r.perturbation != "none", r.perturbation, r.sites, r.strength))
        rates.extend(model_rows)
        trends.extend(_trends(part, clean, model_rows, judge, binary))
    for column in ("p", "p_all", "p_tost"):
        for r, q in zip(rates, stats.holm([getattr(r, column) for r in rates])):
            setattr(r, f"{column}_holm", q)
    for r in rates:
        if r.perturbation != "none":
            r.verdict = stats.verdict(r.p_holm, r.p_tost_holm, margin)
            r.incoherent_sensitive = stats.rejects(r.p_holm) != stats.rejects(r.p_all_holm)
    return rates, trends


def holm_family(rows: list[RateRow]) -> str:
    """The family each Holm-corrected column of a rate table corrects over, said with the table."""
    tested = [r for r in rows if r.perturbation != "none" and not math.isnan(r.p)]
    models = len({r.model for r in tested})
    datasets = len({r.dataset for r in tested})
    judge = rows[0].judge if rows else "-"
    return (
        f"Holm family: the {len(tested)} contrasts with the clean run in this table "
        f"(judge {judge}; {models} model{'s' * (models != 1)} × {datasets} dataset{'s' * (datasets != 1)})"
    )


class _Clean:
    """The clean run of one model and dataset, its verdict matrices built once for all conditions."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows
        self.empty = rows.empty
        self.has_incoherent = bool((rows["label"] == "incoherent").any())
        self.matrix = verdict_matrix(rows) if not self.empty else None
        self.matrix_all = verdict_matrix(rows, "harmful_all") if self.has_incoherent else self.matrix


def _condition_row(
    cpart: Any,
    clean: _Clean,
    key: tuple[str, str, str, float],
    names: tuple[str, str, str, str],
    binary: bool,
    margin: float | None,
) -> RateRow:
    """One condition's rate, its three outcomes, and its paired contrast with the clean run."""
    cond, pert, sites, strength = key
    m = verdict_matrix(cpart)
    obs = m.to_numpy(dtype=float)
    n = int((~np.isnan(obs)).sum())
    seeds = m.shape[1]
    value = float(np.nansum(obs)) / n if n else math.nan
    lo, hi = stats.cluster_wilson_ci(obs) if n else (math.nan, math.nan)
    # shares of the rows, counted (a difference of two shares leaves 1e-17 behind)
    rows = len(cpart)
    is_incoherent = cpart["label"] == "incoherent"
    scored = cpart["harmful_f"].notna()
    row = RateRow(
        *names,
        condition=cond,
        perturbation=pert,
        sites=sites,
        strength=float(strength),
        n=n,
        n_prompts=m.shape[0],
        seeds=seeds,
        value=value,
        ci_low=lo,
        ci_high=hi,
        incoherent=float(is_incoherent.mean()) if rows else math.nan,
        unscored=float((~scored & ~is_incoherent).mean()) if rows else math.nan,
        delta=math.nan,
        p=math.nan,
        p_holm=math.nan,
        test="",
        loop_cut=float(cpart["loop_cut"].notna().mean()) if "loop_cut" in cpart and rows else 0.0,
        share_flagged=float((cpart["harmful_f"] > 0.5).sum() / rows) if rows and binary else math.nan,
        share_safe=float((scored & (cpart["harmful_f"] <= 0.5)).sum() / rows) if rows and binary else math.nan,
    )
    if pert == "none" or clean.empty:
        return row
    items = m.index.union(clean.matrix.index)
    after = m.reindex(items).to_numpy(dtype=float)
    before = clean.matrix.reindex(items).to_numpy(dtype=float)
    keep = ~np.all(np.isnan(before), axis=1) & ~np.all(np.isnan(after), axis=1)
    if keep.any():
        row.n_paired = int(keep.sum())
        row.paired_clean = float(np.mean(np.nanmean(before[keep], axis=1)))
        row.paired_value = float(np.mean(np.nanmean(after[keep], axis=1)))
        row.delta, (row.delta_ci_low, row.delta_ci_high) = stats.paired_difference(before, after)
        row.p, row.test = stats.paired_test(before, after)
        if margin is not None:
            row.p_tost = stats.tost_p(lambda a: stats.paired_difference(before, after, a)[1], margin)
    if not (is_incoherent.any() or clean.has_incoherent):
        row.delta_all, row.p_all = row.delta, row.p  # nothing incoherent: the same test
        return row
    after_all = verdict_matrix(cpart, "harmful_all").reindex(items).to_numpy(dtype=float)
    before_all = clean.matrix_all.reindex(items).to_numpy(dtype=float)
    row.delta_all = stats.paired_difference(before_all, after_all)[0]
    row.p_all = stats.paired_test(before_all, after_all)[0]
    return row


def _trends(part: Any, clean: Any, model_rows: list[RateRow], judge: str, binary: bool) -> list[TrendRow]:
    """Trend across strength for each (perturbation, sites) family of one model and dataset, σ = 0
    being the clean run."""
    model, dataset = model_rows[0].model, model_rows[0].dataset
    families: dict[tuple[str, str], list[RateRow]] = {}
    for r in model_rows:
        if r.perturbation != "none":
            families.setdefault((r.perturbation, r.sites), []).append(r)
    trends: list[TrendRow] = []
    for (pert, sites), rows in families.items():
        levels_df = [(0.0, clean)] if not clean.empty else []
        for r in rows:
            levels_df.append((r.strength, part[(part["condition"] == r.condition)]))
        if len(levels_df) < 2:
            continue
        scores = [s for s, _ in levels_df]
        seeds = max(r.seeds for r in rows)
        if seeds == 1 and binary:
            ks = [int(np.nansum(d["harmful_f"])) for _, d in levels_df]
            ns = [int(d["harmful_f"].notna().sum()) for _, d in levels_df]
            z, p = stats.cochran_armitage(ks, ns, scores)
            trends.append(TrendRow(model, dataset, judge, pert, sites, scores, z, p, "Cochran–Armitage"))
        else:
            per = [d.groupby("item_id")["harmful_f"].mean().rename(str(s)) for s, d in levels_df]
            table = per[0].to_frame()
            for col in per[1:]:
                table = table.join(col, how="inner")
            slope, p = stats.slope_sign_flip_trend(table.dropna().to_numpy(), scores)
            trends.append(TrendRow(model, dataset, judge, pert, sites, scores, slope, p, "slope sign-flip"))
    return trends


# the stored metric a sequential sweep writes for each condition it stopped (safestress.sequential):
# its rows are then too few, and chosen too adaptively, for the fixed-sample tests of this module
STOP_METRIC = "sequential-stop:"


def condition_perplexity(frame: Any, store: Any, metric: str | None = None) -> dict[str, float]:
    """Each configuration's perplexity (by config hash) from the store's metric ``metric``
    (default: the one stored last, for summaries of a whole store)."""
    found = store.metrics(metric or "ppl:")
    if not found:
        return {}
    metric = metric or list(found)[-1][1]
    hashes = set(frame["config_hash"])
    return {h: v for (h, name), v in found.items() if name == metric and h in hashes}


def with_perplexity(frame: Any, store: Any, metric: str | None = None) -> Any:
    """``frame`` with each condition's perplexity as a ``ppl`` column, where ``store`` measured it
    (``metric``; default the last stored): an export then carries utility beside the verdicts,
    and a document's table shows both from the file alone."""
    ppl = condition_perplexity(frame, store, metric)
    if not ppl:
        return frame
    out = frame.copy()
    out["ppl"] = out["config_hash"].map(ppl)
    return out


def attach_perplexity(rows: list[RateRow], frame: Any, store: Any = None, metric: str | None = None) -> None:
    """Fill ``ppl`` of each row: from ``store``'s metric, or, without a store, from the frame's
    ``ppl`` column (an export that carries each condition's perplexity on its rows)."""
    if store is not None:
        by_hash = condition_perplexity(frame, store, metric)
    elif "ppl" in frame.columns:
        by_hash = frame.dropna(subset=["ppl"]).drop_duplicates("config_hash").set_index("config_hash")["ppl"].to_dict()
    else:
        return
    if not by_hash:
        return
    label_of = frame.drop_duplicates("config_hash").set_index("config_hash")[["model", "condition"]]
    values = {
        (label_of.loc[h, "model"], label_of.loc[h, "condition"]): v for h, v in by_hash.items() if h in label_of.index
    }
    for r in rows:
        r.ppl = values.get((r.model, r.condition), float("nan"))


def to_records(rows: list[Any]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
