"""The stopping rule of a sequential sweep, as pure functions of stored rows.

Why here, in the report layer: a rule that reads only verdicts can be replayed from a store or a
committed export (:func:`replay`, the ``sequential`` kind of report/doc_tables.py) without the
machinery that generates, and the sweep that applies it round by round
(:func:`safestress.sequential.run_sequential`) calls the same :func:`decide_cell`. The rule and its
α budget are described in safestress.sequential and docs/statistics.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from safestress import stats
from safestress.config import margin_share
from safestress.report.summary import verdict_matrix, verdict_values
from safestress.stats.sequential import confidence_sequence, interim_decision

ALPHA = 0.05
INTERIM_SHARE = 0.5  # of α, spent on the looks by the confidence sequence; the rest at the final look


def looks(n_prompts: int, round_size: int) -> list[int]:
    """The prompt counts after each round: every ``round_size``, and the whole dataset last."""
    return sorted({*range(round_size, n_prompts, round_size), n_prompts})


@dataclass
class Decision:
    """One contrast of a sequential sweep: where it stopped and what it decided."""

    model: str
    dataset: str
    config_hash: str
    judge: str
    word: str  # "different", "equivalent within ±m pts" or "inconclusive" (stats.verdict's words)
    look: int  # the round that decided it (1-based); the last round when the final test decided
    prompts: int  # prompts generated for the condition when it stopped
    of_prompts: int  # prompts in the dataset
    n_pairs: int  # prompts both sides scored, in the order they were taken
    delta: float  # mean paired difference (this − clean) over those prompts
    # the 95% confidence sequence's interval of Δ at the stop: valid however the stop fell, so the
    # rate table shows it for a contrast the sequence decided (its decision used the smaller
    # family level, so this interval agrees with the word)
    cs_low: float
    cs_high: float
    by: str  # "confidence sequence" or "final test"


def family_levels(contrasts: int) -> tuple[float, float]:
    """The level of each contrast's confidence sequence and of its final test, in a family of
    ``contrasts``: α split between the two parts, then Bonferroni."""
    c = max(1, contrasts)
    return ALPHA * INTERIM_SHARE / c, ALPHA * (1 - INTERIM_SHARE) / c


@dataclass(frozen=True)
class Rule:
    """What every look applies: the judges whose contrasts must all be decided, the levels of the
    confidence sequence and of the final test, and the equivalence margin (a share, or None)."""

    judges: tuple[str, ...]
    levels: tuple[float, float]
    margin: float | None


def decide_cell(
    frame: Any,
    rule: Rule,
    cell: tuple[str, str],
    taken: tuple[list[str], int],
    models: tuple[str, str],
    look: int,
) -> list[Decision]:
    """The decisions of one condition on one dataset after ``look``, one per judge; none while a
    judge's contrast is still open (the condition then goes on for every judge). ``taken``: the
    prompts taken so far, in order, and the dataset's size; ``models``: the condition's model and
    the configuration hash of its clean run."""
    (order, total), (model, clean_hash) = taken, models
    out = []
    for judge in rule.judges:
        decided = _decide(frame, judge, (cell[0], clean_hash), order, rule.levels, rule.margin, len(order) == total)
        if decided is None:
            return []
        word, by, values = decided
        low, high = confidence_sequence(values, ALPHA) if values else (math.nan, math.nan)
        out.append(
            Decision(
                model,
                cell[1],
                cell[0],
                judge,
                stats.equivalent_within(rule.margin) if word == "equivalent" and rule.margin else word,
                look + 1,
                len(order),
                total,
                len(values),
                float(np.mean(values)) if values else math.nan,
                float(low),
                float(high),
                by,
            )
        )
    return out


def replay(frame: Any, orders: dict[str, list[str]], round_size: int, margin_points: float | None) -> list[Decision]:
    """The decisions a sequential sweep reached, recomputed from its stored rows alone (a store's
    frame or a ``safestress export``): each condition is looked at after every round, in each
    dataset's prompt ``orders``, by the rule :func:`run_sequential` applies, until every judge in
    ``frame`` has decided. Committed exports can so regenerate a documented table
    (report/doc_tables.py)."""
    judges = tuple(sorted(frame["judge"].dropna().unique()))
    conditions = frame.drop_duplicates("config_hash").set_index("config_hash")
    clean = {m: h for h, m in conditions.loc[conditions["perturbation"] == "none", "model"].items()}
    cells = sorted(
        (h, str(ds))
        for h, ds in frame[["config_hash", "dataset"]].drop_duplicates().itertuples(index=False)
        if conditions.at[h, "perturbation"] != "none" and conditions.at[h, "model"] in clean
    )
    rule = Rule(judges, family_levels(len(cells)), margin_share(margin_points))
    decisions = []
    for cell in cells:
        model, order = str(conditions.at[cell[0], "model"]), orders[cell[1]]
        for k, upto in enumerate(looks(len(order), round_size)):
            decided = decide_cell(frame, rule, cell, (order[:upto], len(order)), (model, clean[model]), k)
            if decided:
                decisions += decided
                break
    return decisions


def paired_values(frame: Any, judge: str, hashes: tuple[str, str], order: list[str]) -> tuple[list[float], Any, Any]:
    """The per-prompt differences (condition − clean, each a mean over its seeds) in ``order``,
    skipping prompts either side did not score (incoherent, unscored): the same pairs the full
    sweep's paired test uses. Also the two [prompts, seeds] matrices, for the final test."""
    rows = frame[frame["judge"] == judge]
    rows = rows.assign(value=verdict_values(rows))
    after, before = (
        verdict_matrix(rows[rows["config_hash"] == h], "value").reindex(order).to_numpy(dtype=float) for h in hashes
    )
    with warnings.catch_warnings():  # a prompt a side did not score is NaN, and skipped below
        warnings.simplefilter("ignore", RuntimeWarning)
        a, b = np.nanmean(after, axis=1), np.nanmean(before, axis=1)
    d = a - b
    return [float(v) for v in d[~np.isnan(d)]], before, after


def _decide(
    frame: Any,
    judge: str,
    hashes: tuple[str, str],
    order: list[str],
    levels: tuple[float, float],
    margin: float | None,
    final: bool,
) -> tuple[str, str, list[float]] | None:
    """One contrast at one look, from stored verdicts: (word, what decided it, the paired values),
    or None while open."""
    values, before, after = paired_values(frame, judge, hashes, order)
    decided = decide(values, before, after, levels, margin, final)
    return None if decided is None else (*decided, values)


def decide(
    values: list[float], before: Any, after: Any, levels: tuple[float, float], margin: float | None, final: bool
) -> tuple[str, str] | None:
    """The rule of one look, on arrays: ``values`` are the paired differences in the order taken,
    ``before``/``after`` the clean and perturbed [prompts, seeds] verdicts. The confidence sequence
    at ``levels[0]`` decides at any look; at the ``final`` look (every prompt taken), the full
    sweep's fixed-sample tests decide at ``levels[1]``. Returns (word, what decided it), or None
    while open. ``benchmarks/bench_sequential.py`` simulates this rule's error rates."""
    word = interim_decision(values, levels[0], margin)
    if word is not None:
        return word, "confidence sequence"
    if not final:
        return None
    p, _ = stats.paired_test(before, after)
    if stats.rejects(p, levels[1]):
        return "different", "final test"
    if margin is not None:
        p_tost = stats.tost_p(lambda a: stats.paired_difference(before, after, a)[1], margin)
        if stats.rejects(p_tost, levels[1]):
            return "equivalent", "final test"
    return "inconclusive", "final test"
