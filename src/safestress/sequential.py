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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from safestress.config import margin_share
from safestress.datasets import Dataset
from safestress.report.stopping import (  # the rule itself, replayable from stored rows
    ALPHA,
    INTERIM_SHARE,
    Decision,
    Rule,
    decide,
    decide_cell,
    family_levels,
    looks,
    paired_values,
    replay,
)
from safestress.report.summary import STOP_METRIC, RateRow
from safestress.store import Store, content_hash
from safestress.sweep import ProgressFn, SweepPlan, Task

__all__ = [
    "ALPHA",
    "INTERIM_SHARE",
    "Decision",
    "SequentialResult",
    "annotate",
    "decide",
    "family_levels",
    "looks",
    "paired_values",
    "prompt_order",
    "replay",
    "run_sequential",
]


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
    rule = Rule(tuple(j.key for j in plan.judges), result.levels(), margin_share(cfg.margin))
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
            decided = decide_cell(frame, rule, cell, taken, (model, clean[model]), k)
            if decided:
                result.decisions += decided
                open_cells.discard(cell)
                for d in decided:  # marks the condition, so `results` warns of p-values after stopping
                    store.put_metric(d.config_hash, stop_metric(d.dataset, d.judge), d.prompts)
    result.plan = replace(plan, tasks=_taken(used, orders, cells), ppl_metric=ppl_metric)
    return result


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
