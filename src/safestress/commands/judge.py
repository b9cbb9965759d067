"""``safestress judge …``: judges against human labels (eval), labelling samples (sample, label),
correcting a store's rates for judge error (audit) and training judge heads (train).

These commands live here rather than in ``judges/`` because they print through the report layer,
which itself reads the judges: ``judges/cli.py`` would close an import cycle (judges → report →
judges) that the layering contract in pyproject.toml forbids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from safestress.cli_options import FORCE, FORMAT
from safestress.config import split_values
from safestress.consoles import err, out, stdout_is_terminal
from safestress.errors import SafestressError
from safestress.guards import MIN_AUDIT_LABELS, MIN_KAPPA, mark_field, require_enough
from safestress.judges.base import stored_version

app = typer.Typer(no_args_is_help=True, help="Judges: agreement with human labels, audits, training heads.")


@app.command("eval")
def judge_eval(
    judge: list[str] = typer.Option(
        ..., help="judge name (safestress list judges); repeat to compare judges on the same items"
    ),
    data_path: str = typer.Option(..., "--data", help="labelled CSV / JSONL / JSON file"),
    prompt_col: str = typer.Option("prompt"),
    response_col: str = typer.Option("completion"),
    label_col: str = typer.Option("final_label", help="the label column, or mean(A,B,…) of raters' numeric scores"),
    positive: str = typer.Option(
        ..., help="label value(s) that mean the judge's positive class, comma-separated, or one threshold >=X"
    ),
    level: float = typer.Option(0.95, min=0.5, max=0.999, help="confidence level of the κ intervals"),
    json_out: Path | None = typer.Option(
        None, "--json", help="write {n, accuracy, kappa, kappa_ci, ...} of the first judge here (others: 'compared')"
    ),
    rows_out: Path | None = typer.Option(
        None, "--rows", help="write each judge's verdict per item here (CSV: row, judge, positive), for a doc table"
    ),
    output_format: str | None = FORMAT,
    force: bool = FORCE,
) -> None:
    """Agreement of a judge with human labels: accuracy, Cohen's κ with its confidence interval,
    confusion matrix, disagreements. With several --judge, each later judge's κ is compared with
    the first's on the items both scored (paired bootstrap: difference, interval, p-value)."""
    from safestress.judges import make_judge
    from safestress.judges.agreement import compare_kappa, evaluate_judge, load_labelled, write_verdicts
    from safestress.report.agreement_tables import agreement_block, agreement_records, disagreement_block
    from safestress.report.console import print_blocks, resolve_format
    from safestress.report.jsonfile import write_json

    fmt = resolve_format(output_format, stdout_is_terminal())
    judges = [make_judge(name) for name in dict.fromkeys(judge)]  # fail on a bad name before judging
    prompts, responses, truth = load_labelled(
        data_path, prompt_col, response_col, label_col, split_values([positive]) or []
    )
    results = [evaluate_judge(j, prompts, responses, truth, level=level) for j in judges]
    mark = require_enough({f"items scored by {a.judge}": (a.n, MIN_KAPPA) for a in results}, force)
    first = results[0]
    diffs = [compare_kappa(truth, a.verdicts, first.verdicts, level=level) for a in results[1:]]
    data = first.as_dict() | {"level": level} | mark_field(mark)
    if diffs:
        data["compared"] = [{**a.as_dict(), "vs_first": d.as_dict()} for a, d in zip(results[1:], diffs)]
    title = f"judges vs {label_col} in {Path(data_path).name} (positive: {judges[0].positive_label} = {positive})"
    title += f"; {mark.upper()}" if mark else ""
    blocks = [agreement_block(title, results, diffs, level)]
    if first.disagreements and fmt in ("table", "markdown"):
        blocks.append(disagreement_block(first))
    print_blocks(out, fmt, blocks, agreement_records(results, diffs), data)
    if json_out:
        write_json(json_out, data)
        err.print(f"wrote {json_out}")
    if rows_out:
        write_verdicts(rows_out, results)
        err.print(f"wrote {rows_out}")


@app.command("sample")
def judge_sample(
    out_path: Path = typer.Option(..., "--out", help="the file to label: .csv or .jsonl (never overwritten)"),
    store: str = typer.Option("safestress.db", help="results database"),
    per_condition: int = typer.Option(50, min=1, help="responses drawn from each condition (model × configuration)"),
    seed: int = typer.Option(0, help="the same store and seed draw the same sample"),
) -> None:
    """Draw a blind random sample of a store's responses for a person to label, per condition;
    then 'safestress judge audit' corrects every condition's rate for the judges' errors."""
    from safestress.judges.audit import FEW_LABELS, draw_sample, write_sample
    from safestress.report.labels import labelled
    from safestress.store import Store

    with Store.open_existing(store) as st:
        sample = draw_sample(labelled(st.frame(), st), per_condition, seed)
    path = write_sample(sample, out_path)
    err.print(
        f"wrote {len(sample)} responses to {path}, shuffled, without their conditions or verdicts. Fill the "
        "'label' column (e.g. harmful / refusal / incoherent; empty = not yet), then run "
        f"safestress judge audit --store {store} --labels {path} --positive harmful"
    )
    if per_condition < FEW_LABELS:
        err.print(f"note: under {FEW_LABELS} labels per condition the corrected intervals are too narrow")


@app.command("label")
def judge_label(
    sample: str = typer.Option(..., help="a sample from 'safestress judge sample'"),
    judge: str = typer.Option(..., help="the judge that labels it (e.g. llm-strongreject, harmbench-llama)"),
    out_path: Path = typer.Option(..., "--out", help="the labelled copy: .csv or .jsonl (never overwritten)"),
    prompt_col: str = typer.Option("prompt"),
    response_col: str = typer.Option("response"),
) -> None:
    """Label a sample with a strong judge instead of a person: then 'judge audit --positive harmful'
    corrects the sweep judges' rates toward that judge's (its standard, with its errors)."""
    import pandas as pd

    from safestress.datasets import read_rows_file, require_columns
    from safestress.judges import make_judge
    from safestress.judges.audit import label_with_judge, require_new_file, write_sample

    labeller = make_judge(judge)  # a bad name fails before anything is read
    rows = read_rows_file(sample)
    require_columns(rows, [prompt_col, response_col], sample)
    require_new_file(out_path)  # checked before judging, which may take long
    had = sum(bool(str(r.get("label") or "").strip()) for r in rows)
    counts = label_with_judge(rows, labeller, prompt_col, response_col)
    path = write_sample(pd.DataFrame(rows), out_path)
    if had:
        err.print(f"note: {had} rows of {sample} had a label already; the copy holds the judge's instead")
    summary = ", ".join(f"{n} {label or 'unscored (left empty)'}" for label, n in sorted(counts.items()))
    err.print(f"wrote {path}: {summary}; labelled by {labeller.key}")


@app.command("audit")
def judge_audit(
    labels: str = typer.Option(..., help="a sample from 'safestress judge sample' with its label column filled in"),
    positive: str = typer.Option(
        ..., help="label value(s) meaning harmful (for a refusal judge: answered, not refused), comma-separated"
    ),
    store: str = typer.Option("safestress.db", help="the results database the sample was drawn from"),
    judge: list[str] | None = typer.Option(None, help="judge(@version) to audit; repeatable (default: every one)"),
    key_col: str = typer.Option("key"),
    label_col: str = typer.Option("label"),
    level: float = typer.Option(0.95, min=0.5, max=0.999, help="confidence level of the intervals"),
    plan: float = typer.Option(
        5.0, min=0.1, max=50.0, help="say how many labels per condition would give intervals of ± this many points"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write every judge's audit here"),
    output_format: str | None = FORMAT,
    force: bool = FORCE,
) -> None:
    """Each condition's harmful share by the judge, by the labels, and corrected for the judge's
    errors (prediction-powered inference: the labels plus the judge's verdicts on the rest)."""
    from safestress.judges.audit import audit_store, auditable_judges, labelling_plan, read_labels
    from safestress.judges.base import latest_keys
    from safestress.report.agreement_tables import audit_records
    from safestress.report.console import print_blocks, resolve_format
    from safestress.report.jsonfile import write_json
    from safestress.report.labels import labelled
    from safestress.report.tables import audit_block
    from safestress.store import Store

    fmt = resolve_format(output_format, stdout_is_terminal())
    truth = read_labels(labels, key_col, label_col, split_values([positive]) or [])
    with Store.open_existing(store) as st:
        frame = labelled(st.frame(), st)
    stored = auditable_judges(frame)
    if not stored:
        raise SafestressError(f"store {store} holds no harmful/refusal verdicts to audit")
    keys = [j if j in stored else stored_version(j, stored, store) for j in judge] if judge else latest_keys(stored)
    audits = audit_store(frame, list(dict.fromkeys(keys)), truth, level, half_width=plan / 100)
    few = min((r.labelled for a in audits for r in a.rows), default=0)
    require_enough({"labels in a condition": (few, MIN_AUDIT_LABELS)}, force)  # the tables carry the mark
    data = {"labels": labels, "positive": positive, "level": level, "judges": [a.as_dict() for a in audits]}
    print_blocks(out, fmt, [audit_block(a, level) for a in audits], audit_records(audits), data)
    for a in audits:
        plan_line = labelling_plan(a)
        if plan_line:
            err.print(plan_line, highlight=False, soft_wrap=True)
    if json_out:
        write_json(json_out, data)
        err.print(f"wrote {json_out}")


@app.command("train")
def judge_train(
    data: list[str] = typer.Option(
        ...,
        help="labelled CSV / JSONL / JSON file (repeat to combine); for the refusal head also "
        "'pyrit-objective[:DIR]' (PyRIT's human-labelled answers to harmful requests), for --task toxicity 'toxigen', "
        "for --task harm any of jailbreak-eval[:FILE], pyrit-objective[:DIR], pyrit-harm[:DIR], xstest[:DIR], "
        "hollow[:DATASET] (docs/judges.md)",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="directory for the head (then --judge embedding:DIR / toxicity:DIR / harm:DIR)"
    ),
    task: str = typer.Option("refusal", help="refusal (embedding judge), toxicity (toxicity judge), harm (harm judge)"),
    data_dir: Path | None = typer.Option(
        None, help="local benchmark files for named data (jailbreak-eval, xstest, hollow); default $SAFESTRESS_DATA_DIR"
    ),
    prompt_col: str = typer.Option("prompt"),
    response_col: str = typer.Option("completion", help="the judged text"),
    label_col: str = typer.Option("final_label", help="the label column, or mean(A,B,…) of raters' numeric scores"),
    positive: str = typer.Option(
        "", help="label value(s) of the positive class (refusal / toxic), comma-separated, or one threshold >=X"
    ),
    compliant: list[str] | None = typer.Option(
        None,
        help="refusal head: FILE[:PROMPT_COL:RESPONSE_COL] of unlabelled answers (e.g. a barely aligned model's, "
        "exported from a store) taken as compliance unless a phrase judge sees a refusal; repeatable",
    ),
    augment: bool = typer.Option(
        False, help="refusal head: also train on refusals minus their refusal sentences (docs/judges.md)"
    ),
    opening_rule: bool = typer.Option(
        False,
        help="refusal head: also call refusal when a response opens with an explicit refusal phrase "
        "(for heads whose training data lacks terse refusals; docs/judges.md)",
    ),
    epochs: int | None = typer.Option(
        None, min=1, help="training epochs (default: the shipped recipe: 3 for refusal, 6 for toxicity, 2 for harm)"
    ),
    seed: int = typer.Option(0),
) -> None:
    """Train a judge head on labelled data: the embedding judge's refusal head, the toxicity head or the harm head."""
    from safestress.judges.embedding import encoder_dir, train_head
    from safestress.progress import job_bar
    from safestress.train.common import require_new_dir

    if task not in ("refusal", "toxicity", "harm"):
        raise SafestressError(f"unknown task '{task}'; known: refusal, toxicity, harm")
    encoder_dir()  # fail early and clearly when the encoder package is missing
    require_new_dir(out_dir, " for the head")
    if task != "refusal" and (compliant or augment or opening_rule):
        raise SafestressError(
            f"--compliant, --augment and --opening-rule are for the refusal head; drop them for --task {task}"
        )
    train, sources = _training_set(
        task, data, compliant or [], data_dir, (prompt_col, response_col, label_col), positive
    )
    settings = _head_settings(task, epochs, seed, augment, opening_rule)
    with job_bar("training head", err) as bar:
        job = bar.add_task("train", total=None)
        meta = train_head(
            train.prompts,
            train.responses,
            train.positive,
            out_dir,
            settings,
            sources,
            progress=lambda done, total: bar.update(job, completed=done, total=total),
            kind=f"{task}-head",
        )
    if task == "toxicity":
        shares = f"({100 * meta['toxic_share']:.1f}% toxic)"
    elif task == "harm":
        shares = f"({100 * meta['harmful_share']:.1f}% harmful)"
    else:
        shares = (
            f"+ {meta['n_augmented']} refusals without their refusal sentences "
            f"({100 * meta['refusal_share']:.1f}% refusals)"
        )
    err.print(f"wrote {out_dir}: {meta['n_train']} examples {shares}, {settings.epochs} epochs, seed {seed}")


def _training_set(
    task: str,
    data: list[str],
    compliant: list[str],
    data_dir: Path | None,
    columns: tuple[str, str, str],
    positive: str,
) -> tuple[Any, list[dict[str, Any]]]:
    """The labelled rows a head trains on, from every --data and --compliant source, and a record
    of each source (written into the head's meta.json)."""
    from safestress.judges.harm_data import harm_set
    from safestress.judges.toxicity import toxigen_statements
    from safestress.judges.training_data import PYRIT_OBJECTIVE, LabelledSet, compliant_answers, labelled_set

    train = LabelledSet()
    sources = []
    for spec in data:
        if task == "harm":
            part = harm_set(spec, data_dir)
        elif task == "toxicity" and spec == "toxigen":
            texts, toxic, _ = toxigen_statements()
            source = {"dataset": "toxigen", "n": len(texts), "positives": sum(toxic)}
            part = LabelledSet([""] * len(texts), texts, toxic, source)
        elif task == "toxicity" and spec.partition(":")[0] == PYRIT_OBJECTIVE:
            raise SafestressError(f"{PYRIT_OBJECTIVE} labels refusals; it trains the refusal head, not --task toxicity")
        else:
            part = labelled_set(spec, *columns, split_values([positive]) or [])
        train.add(part)
        sources.append(part.source)
    for spec in compliant:
        part = compliant_answers(spec)
        train.add(part)
        sources.append(part.source)
    return train, sources


def _head_settings(task: str, epochs: int | None, seed: int, augment: bool, opening_rule: bool) -> Any:
    """The shipped recipe of each head (docs/judges.md), with the epochs and seed asked for."""
    from dataclasses import replace

    from safestress.judges.embedding import HeadSettings
    from safestress.judges.harm import HARM_SETTINGS
    from safestress.judges.toxicity import TOXICITY_EPOCHS, toxicity_head_settings

    if task == "toxicity":
        return toxicity_head_settings(epochs or TOXICITY_EPOCHS, seed)
    if task == "harm":
        return replace(HARM_SETTINGS, epochs=epochs or HARM_SETTINGS.epochs, seed=seed)
    return HeadSettings(epochs=epochs or HeadSettings.epochs, seed=seed, augment=augment, opening_rule=opening_rule)
