"""``safestress study …``: run a paper's experiment on any model as one resumable command.

``study list`` names the studies and their steps, ``study run NAME --model M … --out DIR`` runs
the unfinished steps and writes the page, ``study report DIR`` writes the page again from what
is stored (no model is loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from safestress.consoles import err, out, wrote

app = typer.Typer(no_args_is_help=True, help="Studies: each paper's experiment as one resumable command.")


@app.command("list")
def study_list() -> None:
    """Each registered study, its seed paper, scales and steps."""
    from safestress.studies import STUDIES, load_study

    for name in STUDIES.names():
        study = load_study(name)
        out.print(f"[bold]{name}[/] (paper {study.paper}): {study.title}", highlight=False)
        out.print(f"  scales: {', '.join(study.scales)}", highlight=False)
        for step in study.steps:
            needs = f", needs {', '.join(step.needs)}" if step.needs else ""
            out.print(f"  - {step.name} ({step.kind}{needs}): {step.title}", highlight=False)


@app.command("run")
def study_run(
    name: str = typer.Argument(..., help="a study (safestress study list) or a study file (.yaml)"),
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="hub id, directory or .gguf; repeat for a family (the first is the baseline)"
    ),
    out_dir: Path = typer.Option(..., "--out", help="the study's folder (created; a rerun resumes in it)"),
    scale: str = typer.Option("cpu", help="a scale the study declares: cpu (2 cores), paper (a GPU), test"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML of the scale's settings to change, e.g. 'prompts: 20'"
    ),
    data_dir: str | None = typer.Option(None, help="folder with local copies of the datasets"),
    redo: list[str] | None = typer.Option(
        None, "--redo", help="run this finished step again (repeatable), e.g. after a judge's code changed"
    ),
    drop_weights: bool = typer.Option(
        False, "--drop-weights", help="delete a training step's run weights once every step that needs it is done"
    ),
) -> None:
    """Run a study's unfinished steps on the models, then write its page (report/study.md)."""
    from transformers.utils import logging as hf_logging

    from safestress.progress import job_bar
    from safestress.studies import load_study
    from safestress.studies.page import write_page
    from safestress.studies.runner import check_folder, check_redo, model_identities, run_study

    hf_logging.disable_progress_bar()
    study = load_study(name)
    if config is not None:
        from safestress.config import load_yaml

        study = study.with_settings(scale, load_yaml(config))
    study.steps_at(scale)  # an unknown scale or setting fails before any model loads
    check_redo(study, frozenset(redo or []))
    check_folder(out_dir, study)
    identities = model_identities(study, model)  # and a model without what the study needs, before the bar
    with job_bar("generating", err) as bar:
        tasks: list[Any] = []  # the bar appears with the first generation, not for a study that is done

        def progress(done: int, total: int) -> None:
            if not tasks:
                tasks.append(bar.add_task("step", total=total))
            bar.update(tasks[0], completed=done, total=total)

        def log(message: str) -> None:
            err.print(message, highlight=False)

        outcomes = run_study(
            study,
            model,
            out_dir,
            scale,
            log=log,
            progress=progress,
            data_dir=data_dir,
            identities=identities,
            redo=frozenset(redo or []),
            drop_weights=drop_weights,
        )
    ran = [o for o in outcomes if not o.skipped]
    err.print(f"{len(ran)} step(s) run, {len(outcomes) - len(ran)} finished before", highlight=False)
    wrote(write_page(out_dir, study))


@app.command("report")
def study_report(
    folder: Path = typer.Argument(..., help="a study's folder (safestress study run --out)"),
) -> None:
    """Write a study's page, and every step's tables, plots and exports, again from its stored steps."""
    from safestress.studies.page import write_page
    from safestress.studies.runner import read_folder
    from safestress.studies.spec import StudySpec

    study = StudySpec(**read_folder(folder)["spec"])  # as it ran, even from a file since changed
    wrote(write_page(folder, study, fresh=True))
