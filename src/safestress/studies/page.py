"""A study's page: every finished step's tables, for every model given, in one Markdown file.

Each rate or contrast table on the page is a ``safestress-table`` block over the step's
per-prompt export beside it, so ``safestress refresh-tables study.md --check`` recomputes the
page from its files and a copied page cannot drift from its data. Per step, the judges' report
folders (tables, plots, ``report.html``) are written beside the export.
"""

from __future__ import annotations

from pathlib import Path

from safestress.studies.runner import finished_steps, read_folder
from safestress.studies.spec import StudySpec


def write_page(out: Path, study: StudySpec, fresh: bool = False) -> Path:
    """Write ``out/report/study.md`` from the finished steps in ``out``. A step's tables, plots and
    export are rewritten when they were written from another run of it, or with ``fresh``."""
    from safestress.store import Store
    from safestress.studies import STEPS
    from safestress.studies.steps import ReportContext

    held = read_folder(out)
    page_dir = out / "report"
    page_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Study `{study.name}`: {study.title}",
        "",
        f"Seed paper {study.paper}; scale `{held['scale']}`; models, the first the baseline of every contrast:",
        "",
        *[f"{i + 1}. `{name}`" for i, name in enumerate(held["names"])],
        "",
    ]
    if study.notes:
        lines += [study.notes, ""]
    done = finished_steps(out, study)
    missing = [s.name for s in study.steps if s.name not in {step.name for step, _, _ in done}]
    if missing:
        lines += [f"**Unfinished steps** (rerun `safestress study run` to finish them): {', '.join(missing)}", ""]
    with Store.open_existing(out / "study.db") as store:
        baseline = held["names"][0]
        for step, folder, record in done:
            ctx = ReportContext(step, record, store, folder, page_dir, baseline, fresh)
            lines += [f"## {step.title or step.name}", "", f"Step `{step.name}` ({step.kind}).", ""]
            lines.append(STEPS.get(step.kind)().report(ctx))
    page = page_dir / "study.md"
    page.write_text("\n".join(lines).rstrip("\n") + "\n")
    return page
