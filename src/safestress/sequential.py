"""Sequential sweeps: add prompts to each condition in rounds, and stop a condition once its
contrast with the clean run is decided (``safestress run --sequential``).

Why: a screening sweep (σ × layer windows × datasets) spends most of its tokens on conditions
whose answer is plain after a fraction of the prompts — a σ that breaks refusals on 60 of the
first 80 prompts, or one that changes no verdict at all. Stopping those early leaves the
prompts for the conditions that need them.

How, and why it stays valid:

* Each dataset's prompts are taken in one fixed, seeded random order (:func:`prompt_order`), so
  a round is a random sample of the rest and every condition sees the same prompts.
* Round *k* generates the next ``round_size`` prompts of every undecided condition and of its
  model's clean run, through the ordinary driver (:func:`safestress.execution.execute`): the
  store, resumption, leases, early exit and Ray workers all work as in a full sweep.
* After each round, each contrast (condition × dataset × judge, against the same model's clean
  run) is looked at with an anytime-valid confidence sequence (:mod:`safestress.stats.sequential`)
  at level α/2 ÷ C, C the contrasts with the clean run in the judge's table (Bonferroni):
  "different" when it excludes 0, "equivalent within ±m" when it excludes everything at or
  beyond the margin.
* A contrast still open when its dataset runs out gets the full sweep's fixed-sample tests (exact
  McNemar or sign flips; TOST on Newcombe's interval) at the other α/2 ÷ C. The two parts spend α
  between them, so the chance of any false claim in the family stays ≤ α however the looks fall.
* A condition stops (for one dataset) once every judge's contrast is decided.

Every decision is a function of stored verdicts in that fixed order, so a sweep killed in any
round and run again replays the finished rounds from the store (generating nothing) and stops
each condition exactly where an uninterrupted run would.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from safestress import stats
from safestress.config import margin_share
from safestress.datasets import Dataset
from safestress.report.summary import STOP_METRIC, RateRow, verdict_matrix, verdict_values
from safestress.stats.sequential import confidence_sequence, interim_decision
from safestress.store import Store, content_hash
from safestress.sweep import ProgressFn, SweepPlan, Task

ALPHA = 0.05
INTERIM_SHARE = 0.5  # of α, spent on the looks by the confidence sequence; the rest at the final look

Execute = Callable[[SweepPlan, Store, ProgressFn | None], dict[str, int]]


def prompt_order(dataset: Dataset) -> list[str]:
    """The dataset's item ids in a random order fixed by its content: rounds take prompts in this
    order, so a round is a random sample and a rerun takes the same prompts."""
    ids = [item.id for item in dataset.items]
    seed = int(content_hash([dataset.name, ids])[:15], 16)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def stop_metric(dataset: str, judge: str) -> str:
    """The stored metric that records where a sequential sweep stopped a condition (its value:
    the prompts it had)."""
    return f"{STOP_METRIC}{dataset}:{judge}"


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


@dataclass
class SequentialResult:
    """What a sequential sweep did: the plan restricted to the rows it generated, and its decisions."""

    plan: SweepPlan
    decisions: list[Decision] = field(default_factory=list)
    generated: int = 0
    stored_before: int = 0
    contrasts: int = 0  # C: the family every look corrects over

    def levels(self) -> tuple[float, float]:
        return family_levels(self.contrasts)


def family_levels(contrasts: int) -> tuple[float, float]:
    """The level of each contrast's confidence sequence and of its final test, in a family of
    ``contrasts``: α split between the two parts, then Bonferroni."""
    c = max(1, contrasts)
    return ALPHA * INTERIM_SHARE / c, ALPHA * (1 - INTERIM_SHARE) / c


def run_sequential(
    plan: SweepPlan, store: Store, execute: Execute, progress: ProgressFn | None = None
) -> SequentialResult:
    """Run ``plan`` round by round, stopping each condition once decided (module docstring)."""
    cfg = plan.config
    orders = {ds.name: prompt_order(ds) for ds in plan.datasets}
    cells = _cells(plan)
    model_of = {c.config_hash: c.lm.name for c in plan.conditions}
    clean = {c.lm.name: c.config_hash for c in plan.conditions if c.clean}
    # every model has its clean run: plan_sweep refuses a sequential sweep without one
    open_cells = {cell for cell in cells if cell[0] not in clean.values()}
    result = SequentialResult(plan, contrasts=len(open_cells))  # per judge, as each judge's table
    result.stored_before = len(store.existing_keys(t.key for t in plan.tasks))
    used: dict[tuple[str, str], int] = {}  # (condition, dataset) → prompts generated so far
    ppl_metric = plan.ppl_metric
    rounds = max((len(looks(len(o), cfg.round_size)) for o in orders.values()), default=0)
    for k in range(rounds):
        if not open_cells:
            break
        upto = {}
        for ds, order in orders.items():
            marks = looks(len(order), cfg.round_size)
            upto[ds] = marks[min(k, len(marks) - 1)]
        for cell in open_cells:
            ds = cell[1]
            used[cell] = used[(clean[model_of[cell[0]]], ds)] = upto[ds]
        todo = _taken(used, orders, cells)
        sub = replace(plan, tasks=todo)
        counts = execute(sub, store, progress)
        ppl_metric = sub.ppl_metric
        result.generated += counts["generated"]
        frame = store.frame(sorted({cell[0] for cell in used}))
        frame = frame[frame["key"].isin({t.key for t in todo})]
        for cell in sorted(open_cells):
            model, order = model_of[cell[0]], orders[cell[1]]
            taken = (order[: upto[cell[1]]], len(order))
            decided = _decide_cell(frame, _rule(plan, result.levels()), cell, taken, (model, clean[model]), k)
            if decided:
                result.decisions += decided
                open_cells.discard(cell)
                for d in decided:  # marks the condition, so `results` warns of p-values after stopping
                    store.put_metric(d.config_hash, stop_metric(d.dataset, d.judge), d.prompts)
    result.plan = replace(plan, tasks=_taken(used, orders, cells), ppl_metric=ppl_metric)
    return result


@dataclass(frozen=True)
class Rule:
    """What every look applies: the judges whose contrasts must all be decided, the levels of the
    confidence sequence and of the final test, and the equivalence margin (a share, or None)."""

    judges: tuple[str, ...]
    levels: tuple[float, float]
    margin: float | None


def _rule(plan: SweepPlan, levels: tuple[float, float]) -> Rule:
    return Rule(tuple(j.key for j in plan.judges), levels, margin_share(plan.config.margin))


def _decide_cell(
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
            decided = _decide_cell(frame, rule, cell, (order[:upto], len(order)), (model, clean[model]), k)
            if decided:
                decisions += decided
                break
    return decisions


def _cells(plan: SweepPlan) -> dict[tuple[str, str], dict[str, list[Task]]]:
    """The plan's tasks by (condition, dataset), then by prompt (several seeds: several tasks)."""
    out: dict[tuple[str, str], dict[str, list[Task]]] = {}
    for t in plan.tasks:
        out.setdefault((t.condition.config_hash, t.dataset), {}).setdefault(t.item_id, []).append(t)
    return out


def _taken(
    used: dict[tuple[str, str], int], orders: dict[str, list[str]], cells: dict[tuple[str, str], dict[str, list[Task]]]
) -> list[Task]:
    """The tasks of the first ``used[cell]`` prompts (in their dataset's order) of every cell."""
    return [t for cell, n in used.items() for item in orders[cell[1]][:n] for t in cells[cell].get(item, [])]


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


def annotate(rates: list[RateRow], result: SequentialResult, labels: dict[str, str]) -> None:
    """Put each contrast's sequential decision on its rate row: the verdict, where it stopped and
    what decided it. The row's fixed-sample Holm p-values are cleared: read after optional
    stopping they are not valid tests, and the verdict no longer rests on them. A contrast the
    confidence sequence decided shows the sequence's 95% interval of Δ, which holds at a
    data-chosen stop; the fixed-sample interval does not. One the final test decided keeps the
    fixed-sample interval of the test that decided it, on every prompt."""
    found = {(d.model, d.dataset, labels.get(d.config_hash, ""), d.judge): d for d in result.decisions}
    for r in rates:
        if r.perturbation == "none":
            continue
        d = found.get((r.model, r.dataset, r.condition, r.judge))
        r.p_holm = r.p_all_holm = r.p_tost_holm = math.nan
        r.incoherent_sensitive = False
        if d is None:
            r.verdict = "inconclusive"
            continue
        r.verdict = d.word
        r.stopped_after, r.of_prompts, r.decided_by = d.prompts, d.of_prompts, d.by
        if d.by == "confidence sequence":
            r.delta_ci_low, r.delta_ci_high = d.cs_low, d.cs_high
