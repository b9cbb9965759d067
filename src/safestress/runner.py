"""Glue between the command line and the flow: plan → execute (with a progress bar) → report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from safestress.config import SweepConfig, margin_share
from safestress.consoles import wrote
from safestress.execution import execute
from safestress.progress import job_bar
from safestress.report import summarize_judges
from safestress.report.emit import emit, write_outputs
from safestress.report.labels import labelled
from safestress.sequential import annotate, run_sequential
from safestress.store import Store
from safestress.sweep import plan_sweep


def run_and_report(cfg: SweepConfig, out: Console, err: Console, fmt: str = "table") -> None:
    """Generate, judge and store what ``cfg`` asks for, then print each judge's summary in ``fmt``
    (report.console.FORMATS) and write the report files."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    plan = plan_sweep(cfg)  # everything validated before the store is opened
    with Store.for_writing(cfg.store) as store:
        with job_bar("generating", err) as bar:
            task = bar.add_task("sweep", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            sequential = None
            if cfg.sequential:
                sequential = run_sequential(plan, store, execute, progress)
                counts = {"generated": sequential.generated, "stored_before": sequential.stored_before}
                plan = sequential.plan  # the rows the rounds took
            else:
                counts = execute(plan, store, progress)
        err.print(
            f"{counts['generated']} rows generated, {counts['stored_before']} already stored "
            f"({len(plan.tasks)} in this sweep)"
        )
        frame = labelled(plan.frame(store), store)
        specs = {h: spec for h, spec in store.configs().items() if h in set(frame["config_hash"])}
        # several models (e.g. base, SFT and DPO variants): each against the first one listed
        rates_by_judge, contrasts = summarize_judges(
            frame, [j.key for j in plan.judges], store, plan.models[0].name, plan.ppl_metric, margin_share(cfg.margin)
        )
        if sequential is not None:
            labels = frame.drop_duplicates("config_hash").set_index("config_hash")["condition"].to_dict()
            for key, (rates, _) in rates_by_judge.items():
                annotate(rates, sequential, labels)
                rates_by_judge[key] = (rates, [])  # a trend test after optional stopping is not valid
    keys = [j.key for j in plan.judges]
    emit(out, fmt, rates_by_judge, contrasts, shown=keys)
    write_outputs(
        cfg.report_dir(),
        rates_by_judge,
        contrasts,
        frame,
        specs,
        plot=cfg.plot,
        wrote=wrote,
    )


def describe_plan(cfg: SweepConfig, out: Console) -> None:
    """What a run would do, touching nothing: per condition the prompts, how many are already
    stored and how many would be generated; per judge the verdicts still to compute. Lets a user
    check that an edited config resumes a stored sweep (same configuration hashes) before hours
    of generation, and that adding a judge only re-judges."""
    plan = plan_sweep(cfg)
    keys = [t.key for t in plan.tasks]
    stored: set[str] = set()
    unjudged: dict[str, int] = {j.key: 0 for j in plan.judges}
    if Path(cfg.store).is_file():
        with Store.open_existing(cfg.store) as store:
            stored = store.existing_keys(keys)
            for judge in plan.judges:
                unjudged[judge.key] = len(store.unjudged([k for k in keys if k in stored], judge.key))
    per_cond: Counter[str] = Counter()
    per_cond_stored: Counter[str] = Counter()
    labels = {}
    for t in plan.tasks:
        h = t.condition.config_hash
        labels[h] = (t.condition.lm.name, t.condition.spec.get("label", ""))
        per_cond[h] += 1
        per_cond_stored[h] += t.key in stored
    table = Table(title=f"Plan (dry run; store {cfg.store})")
    for col in ("model", "condition", "config", "rows", "stored", "to generate"):
        table.add_column(col, justify="right" if col in ("rows", "stored", "to generate") else "left")
    for h, n in per_cond.items():
        model, label = labels[h]
        cells = (model, label, h[:10], str(n), str(per_cond_stored[h]), str(n - per_cond_stored[h]))
        table.add_row(*[Text(c) for c in cells])  # labels as written, never rich markup
    out.print(table)
    todo = len(keys) - len(stored)
    out.print(f"{len(keys)} rows in this sweep: {len(stored)} stored, {todo} to generate")
    for judge in plan.judges:
        n = unjudged[judge.key]
        out.print(f"judge {judge.key}: {todo + n} verdicts to compute ({n} of them for stored rows)")
