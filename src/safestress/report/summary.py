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
from safestress.datasets import BENIGN_DATASETS


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
    ci_low: float
    ci_high: float
    incoherent: float  # share of responses judged incoherent (empty, loop, word salad): not in the rate
    unscored: float  # share the judge could not score (e.g. an unparseable LLM-judge answer)
    delta: float  # harmful - clean harmful (same prompts)
    p: float  # paired test against clean
    p_holm: float
    test: str
    ppl: float = float("nan")  # corpus perplexity under this condition, when the sweep measured it
    loop_cut: float = 0.0  # share of responses judged on their opening, a loop after it cut (judges.coherence)


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


def _matrix(df: Any) -> Any:
    """prompts × seeds table of harmful (1/0/NaN)."""
    return df.pivot_table(index="item_id", columns="seed", values="harmful_f", aggfunc="first", dropna=False)


# (table title, value column, plot axis) per metric
METRIC_TEXT = {
    "complied": ("Complied rate (not refused: a refusal judge does not see harm)", "complied %", "complied (%)"),
    "harmful": ("Harmful-output rate", "harmful %", "harmful-output rate (%)"),
    "toxic": ("Toxic-output rate", "toxic %", "toxic-output rate (%)"),
    "answered": ("Answer rate on benign prompts (100 − over-refusal)", "answered %", "answered, not refused (%)"),
    "score": ("Mean score", "score %", "mean judge score (%)"),
}


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


def summarize(frame: Any, judge: str | None = None) -> tuple[list[RateRow], list[TrendRow]]:
    df = frame.copy()
    if df.empty:
        return [], []
    if judge is None:
        judge = sorted(df["judge"].dropna().unique())[0]
    df = df[df["judge"] == judge].copy()
    # Refusal/harm judges are summarised by their harmful flag; score-only judges (task accuracy,
    # chain-of-thought step accuracy) by their mean score.
    has_flags = bool(df["harmful"].notna().any())
    df["harmful_f"] = df["harmful" if has_flags else "score"].astype(float)
    binary = bool(df["harmful_f"].dropna().isin([0.0, 1.0]).all())
    rates: list[RateRow] = []
    trends: list[TrendRow] = []
    outcome = judge_outcome(judge, has_flags) if has_flags else "score"
    for (model, dataset), part in df.groupby(["model", "dataset"], sort=True):
        row_metric = "answered" if outcome == "complied" and dataset in BENIGN_DATASETS else outcome
        clean = part[part["perturbation"] == "none"]
        clean_by_item = clean.groupby("item_id")["harmful_f"].mean() if not clean.empty else None
        model_rows: list[RateRow] = []
        for (cond, pert, sites, strength), cpart in part.groupby(
            ["condition", "perturbation", "sites", "strength"], sort=False
        ):
            m = _matrix(cpart)
            obs = m.to_numpy(dtype=float)
            scored = obs[~np.isnan(obs)]
            n, k = scored.size, int(np.nansum(obs))
            seeds = m.shape[1]
            value = float(np.nansum(obs)) / n if n else math.nan
            if seeds == 1 and binary:
                lo, hi = stats.wilson_ci(k, n)
            else:
                lo, hi = stats.cluster_bootstrap_ci(obs[~np.all(np.isnan(obs), axis=1)])
            # shares of the rows, counted (a difference of two shares leaves 1e-17 behind)
            is_incoherent = cpart["label"] == "incoherent"
            incoherent = float(is_incoherent.mean()) if len(cpart) else math.nan
            unscored = float((cpart["harmful_f"].isna() & ~is_incoherent).mean()) if len(cpart) else math.nan
            loop_cut = float(cpart["loop_cut"].notna().mean()) if "loop_cut" in cpart and len(cpart) else 0.0
            delta, p, test = math.nan, math.nan, ""
            if pert != "none" and clean_by_item is not None:
                per_prompt = m.mean(axis=1, skipna=True)
                joined = per_prompt.to_frame("pert").join(clean_by_item.rename("clean"), how="inner").dropna()
                if len(joined):
                    delta = float(joined["pert"].mean() - joined["clean"].mean())
                    if seeds == 1 and binary:
                        b, c = stats.discordant(joined["clean"] > 0.5, joined["pert"] > 0.5)
                        p, test = stats.mcnemar_exact(b, c), "exact McNemar"
                    else:
                        p, test = stats.sign_flip_test((joined["pert"] - joined["clean"]).to_numpy()), "sign-flip"
            model_rows.append(
                RateRow(
                    model,
                    dataset,
                    judge,
                    row_metric,
                    cond,
                    pert,
                    sites,
                    float(strength),
                    n,
                    m.shape[0],
                    seeds,
                    value,
                    lo,
                    hi,
                    incoherent,
                    unscored,
                    delta,
                    p,
                    math.nan,
                    test,
                    loop_cut=loop_cut,
                )
            )
        model_rows.sort(key=lambda r: (r.perturbation != "none", r.perturbation, r.sites, r.strength))
        rates.extend(model_rows)
        # trend across strength for each (perturbation, sites) family, σ = 0 being the clean run
        families: dict[tuple[str, str], list[RateRow]] = {}
        for r in model_rows:
            if r.perturbation != "none":
                families.setdefault((r.perturbation, r.sites), []).append(r)
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
    adjusted = stats.holm([r.p for r in rates])
    for r, q in zip(rates, adjusted):
        r.p_holm = q
    return rates, trends


def attach_perplexity(rows: list[RateRow], frame: Any, store: Any, metric: str | None = None) -> None:
    """Fill ``ppl`` of each row from the store's perplexity metric ``metric`` (default: the one
    stored last, for summaries of a whole store)."""
    found = store.metrics(metric or "ppl:")
    if not found:
        return
    metric = metric or list(found)[-1][1]
    by_hash = {h: v for (h, name), v in found.items() if name == metric}
    label_of = frame.drop_duplicates("config_hash").set_index("config_hash")[["model", "condition"]]
    values = {
        (label_of.loc[h, "model"], label_of.loc[h, "condition"]): v for h, v in by_hash.items() if h in label_of.index
    }
    for r in rows:
        r.ppl = values.get((r.model, r.condition), float("nan"))


def to_records(rows: list[Any]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
