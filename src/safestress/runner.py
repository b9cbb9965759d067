"""Glue between the command line and the flow: plan → execute (with a progress bar) → report."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from safestress.config import SweepConfig
from safestress.report import summarize, write_report
from safestress.report.summary import attach_perplexity
from safestress.report.tables import rate_table, trend_table
from safestress.store import Store
from safestress.sweep import execute, plan_sweep


def run_and_report(cfg: SweepConfig, out: Console, err: Console) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    plan = plan_sweep(cfg)  # everything validated before the store is opened
    with Store(cfg.store) as store:
        columns = (
            TextColumn("[bold]generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("sweep", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            counts = execute(plan, store, progress)
        err.print(
            f"{counts['generated']} rows generated, {counts['stored_before']} already stored "
            f"({len(plan.tasks)} in this sweep)"
        )
        frame = plan.frame(store)
        rates_by_judge = {}
        for judge in plan.judges:
            rates_by_judge[judge.key] = summarize(frame, judge.key)
            attach_perplexity(rates_by_judge[judge.key][0], frame, store, plan.ppl_metric)
    for judge in plan.judges:
        rates, trends = rates_by_judge[judge.key]
        out.print(rate_table(rates))
        if trends:
            out.print(trend_table(trends))
        paths = write_report(rates, trends, cfg.report_dir() / judge.name, plot=cfg.plot)
        err.print("report: " + ", ".join(str(p) for p in paths))
