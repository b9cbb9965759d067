"""The ``safestress`` command line (typer + rich).

Heavy imports (torch, transformers) happen inside commands, so ``--help`` and ``list`` are fast.
Any :class:`~safestress.errors.SafestressError` is printed as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from safestress.cli_options import FORMAT, MARGIN, parse_params
from safestress.config import default_of, margin_share
from safestress.errors import SafestressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Stress-test the safety alignment of chat LLMs under activation perturbations.",
)
out = Console(width=max(120, shutil.get_terminal_size((120, 24)).columns))
err = Console(stderr=True)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML sweep file (flags override it)"),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="hub id, local dir or .gguf (repeatable)"),
    dataset: str | None = typer.Option(
        None, help=f"dataset name, or csv:PATH:COLUMN / jsonl:PATH:COLUMN {default_of('dataset')}"
    ),
    limit: int | None = typer.Option(None, help="use the first N items"),
    data_dir: str | None = typer.Option(None, help="folder with local copies of benchmark files"),
    perturb: str | None = typer.Option(
        None, help=f"perturbation name (safestress list perturbations) {default_of('perturb')}"
    ),
    sigma: str | None = typer.Option(
        None,
        "--sigma",
        "--strength",
        help="comma-separated strengths (σ, α, sparsity, bits…) (default: 0,0.05,0.1,0.2 where the perturbation "
        "has a strength)",
    ),
    param: list[str] | None = typer.Option(
        None, "--param", help="further perturbation parameter KEY=VALUE (repeatable), e.g. units=units.json"
    ),
    scale: str | None = typer.Option(None, help=f"absolute | relative (to each token's RMS) {default_of('scale')}"),
    positions: str | None = typer.Option(None, help=f"all | generated {default_of('positions')}"),
    sites: list[str] | None = typer.Option(None, help=f"site selection (repeatable) {default_of('sites')}"),
    seeds: int | None = typer.Option(None, help=f"number of seeds {default_of('seeds')}"),
    max_new_tokens: int | None = typer.Option(None, help=default_of("max_new_tokens")),
    batch_size: int | None = typer.Option(None, help=default_of("batch_size")),
    do_sample: bool | None = typer.Option(None, "--sample/--greedy", help="decoding (default: greedy)"),
    temperature: float | None = typer.Option(None, help=default_of("temperature")),
    top_p: float | None = typer.Option(None, help=default_of("top_p")),
    judge: list[str] | None = typer.Option(
        None, help=f"judge name(s), repeatable or comma-separated {default_of('judge')}"
    ),
    ppl: str | None = typer.Option(None, help="also measure perplexity of this corpus: wikitext2 or a text file"),
    ppl_tokens: int | None = typer.Option(None, help="corpus tokens used for perplexity (default 4096)"),
    store: str | None = typer.Option(None, help=f"results database {default_of('store')}"),
    out_dir: str | None = typer.Option(None, "--out", help="report folder (default: beside the store)"),
    template: str | None = typer.Option(
        None, help="chat | raw (default: the dataset's, raw for ToxiGen continuations, else chat)"
    ),
    chat_template: str | None = typer.Option(None, help="Jinja chat template (string or file)"),
    system_prompt: str | None = typer.Option(None),
    dtype: str | None = typer.Option(None, help=f"auto | float32 | bfloat16 | float16 {default_of('dtype')}"),
    device: str | None = typer.Option(None, help=f"auto | cpu | cuda | cuda:N {default_of('device')}"),
    trust_remote_code: bool | None = typer.Option(None, "--trust-remote-code", help="allow model code from the hub"),
    plot: bool | None = typer.Option(None, "--plot/--no-plot", help="write the rate plots (default: plot)"),
    margin: float | None = MARGIN,
    output_format: str | None = FORMAT,
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be generated and judged; change nothing"),
    workers: int | None = typer.Option(
        None, min=1, help=f"generate on N Ray workers (one GPU each where available) {default_of('workers')}"
    ),
    ray_address: str | None = typer.Option(None, help="join this Ray cluster ('auto' for a running one)"),
) -> None:
    """Run a sweep: generate, judge, store, then print the table and write the plot."""
    from safestress.config import build_config, parse_floats

    cfg = build_config(
        config,
        models=model,
        dataset=dataset,
        limit=limit,
        data_dir=data_dir,
        perturb=perturb,
        sigma=parse_floats(sigma) if sigma is not None else None,
        params=parse_params(param),
        scale=scale,
        positions=positions,
        sites=sites,
        seeds=seeds,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        judge=_split(judge),
        ppl=ppl,
        ppl_tokens=ppl_tokens,
        store=store,
        out=out_dir,
        template=template,
        chat_template=chat_template,
        system_prompt=system_prompt,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        plot=plot,
        margin=margin,
        workers=workers,
        ray_address=ray_address,
    )
    from safestress.runner import describe_plan, run_and_report

    if dry_run:
        describe_plan(cfg, out)
        return
    from safestress.report.console import resolve_format

    run_and_report(cfg, out, err, resolve_format(output_format, is_terminal=True))


def _stored_version(name: str, stored: list[str], store: str) -> str:
    """The stored ``judge@version`` a bare judge name means: today's version of that judge if it
    has verdicts here, else the only stored version; several older versions must be named."""
    from safestress.judges.base import key_name

    match = [j for j in stored if key_name(j) == name]
    if not match:
        raise SafestressError(f"no verdicts by judge '{name}' in {store}; stored: {', '.join(stored)}")
    try:
        from safestress.judges import make_judge

        current = make_judge(name).key
    except (KeyError, SafestressError, TypeError):  # an unknown or argument-needing judge: no current version
        current = None
    if current in match:
        return current
    if len(match) == 1:
        return match[0]
    raise SafestressError(f"several versions of '{name}' in {store}: {', '.join(match)}; name one with --judge")


@app.command()
def results(
    store: str = typer.Option("safestress.db", help="results database"),
    judge: str | None = typer.Option(
        None, help="judge@version to summarise (default: the newest version of the first stored judge)"
    ),
    out_dir: str | None = typer.Option(
        None,
        "--out",
        help="also write summary files, plots and report.html (every judge of the store, newest versions) here",
    ),
    examples: int = typer.Option(3, min=0, help="report.html: examples shown per condition and kind of change"),
    baseline: str | None = typer.Option(
        None, help="with several models: compare each with this one on the same prompts (default: first by name)"
    ),
    labels: str | None = typer.Option(
        None, help="a labelled sample (safestress judge sample): also audit the judges with it (needs --positive)"
    ),
    positive: str | None = typer.Option(None, help="with --labels: label value(s) meaning harmful, comma-separated"),
    margin: float | None = MARGIN,
    arm: list[str] | None = typer.Option(
        None,
        "--arm",
        help="a training method's runs NAME=MODEL,MODEL,… (repeatable; the first is the baseline): "
        "compare methods with the run as the unit",
    ),
    output_format: str | None = FORMAT,
) -> None:
    """Print the summary tables of everything in a store."""
    from safestress.judges.base import latest_keys
    from safestress.report import summarize_judges, write_report
    from safestress.store import Store

    if (labels is None) != (positive is None):
        raise SafestressError("--labels and --positive go together")
    from safestress.report.console import print_summary, resolve_format
    from safestress.report.runs import arm_rows, parse_arms

    arms = parse_arms(arm)
    fmt = resolve_format(output_format, is_terminal=True)
    truth = None
    if labels is not None:
        from safestress.judges.audit import read_labels

        truth = read_labels(labels, "key", "label", _split([positive or ""]) or [])
    with Store.open_existing(store) as st:
        frame = st.frame()
        if frame.empty:
            raise SafestressError(f"store {store} holds no results")
        judges = sorted(frame["judge"].dropna().unique())
        if not judges:
            raise SafestressError(f"store {store} holds generations but no verdicts; run the sweep again to judge them")
        if judge is None:  # the newest version of the first judge, not a superseded one
            judge = latest_keys(judges)[0]
        elif judge not in judges:
            judge = _stored_version(judge, judges, store)
        models = sorted(frame["model"].dropna().unique())
        if baseline is not None and baseline not in models:
            raise SafestressError(f"baseline model '{baseline}' is not in {store}; models: {', '.join(models)}")
        # the page (--out) covers the newest version of every judge, the one asked for first
        keys = sorted(set(latest_keys(judges)) | {judge}, key=lambda k: (k != judge, k)) if out_dir else [judge]
        summaries, all_versus = summarize_judges(frame, keys, st, baseline, margin=margin_share(margin))
        methods = arm_rows(frame, judge, arms) if arms else []
        (rates, trends), versus = summaries[judge], all_versus[judge]
        specs = st.configs()
    audits = {}
    if truth is not None:
        from safestress.judges.audit import audit_store, auditable_judges

        auditable = set(auditable_judges(frame))
        audited = [k for k in keys if k in auditable]

        def skipped(why: str) -> None:
            err.print(f"note: not audited: {why}")

        audits = {a.judge: a for a in audit_store(frame, audited, truth, skip=skipped)}
    print_summary(out, fmt, rates, trends, versus, methods)
    if judge in audits and fmt == "table":
        from safestress.report.tables import audit_table

        out.print(audit_table(audits[judge]))
    if out_dir:
        from safestress.report import judge_folder, write_arms
        from safestress.report.html_report import write_html

        if methods:
            for p in write_arms(methods, Path(out_dir) / judge_folder(judge, keys)):
                err.print(f"wrote {p}")
        for key in keys:  # the layout of `run`: a folder per judge
            key_rates, key_trends = summaries[key]
            folder = Path(out_dir) / judge_folder(key, keys)
            for p in write_report(key_rates, key_trends, folder, contrasts=all_versus[key]):
                err.print(f"wrote {p}")
        page = write_html(
            Path(out_dir) / "report.html",
            frame,
            summaries,
            specs,
            title=f"safestress report: {store}",
            examples=examples,
            contrasts=all_versus,
            audits=audits,
        )
        err.print(f"wrote {page}")


@app.command()
def export(
    path: str = typer.Argument(..., help="output file: .parquet or .csv"),
    store: str = typer.Option("safestress.db", help="results database"),
) -> None:
    """Export every stored generation and verdict to Parquet or CSV."""
    from safestress.store import Store

    with Store.open_existing(store) as st:
        n = st.export(path)
    err.print(f"wrote {n} rows to {path}")


@app.command("refresh-tables")
def refresh_tables(
    documents: list[Path] = typer.Argument(..., help="Markdown files with safestress-table blocks"),
    check: bool = typer.Option(False, "--check", help="change nothing; fail if a table differs from its files"),
) -> None:
    """Recompute the tables a document marks from the per-prompt files they name (report/doc_tables.py)."""
    from safestress.report.doc_tables import blocks, refresh

    drifted = []
    for doc in documents:
        if not doc.is_file():
            raise SafestressError(f"document {doc} does not exist")
        changed = refresh(doc, check=check)
        drifted += [f"{doc}: {spec}" for spec in changed]
        err.print(f"{doc}: {blocks(doc)} table(s), {len(changed)} {'differ' if check else 'rewritten'}")
    if check and drifted:
        raise SafestressError(f"{len(drifted)} table(s) differ from their per-prompt files: " + "; ".join(drifted))


@app.command("list")
def list_(
    what: str = typer.Argument(..., help="perturbations | judges | datasets | scores | sites"),
    model: str | None = typer.Option(None, "--model", "-m", help="model whose sites to list"),
) -> None:
    """Print the names in a registry, one per line (or a model's sites)."""
    if what == "sites":
        if not model:
            raise SafestressError("list sites needs --model")
        from safestress.models import load_model

        lm = load_model(model, weights=False, template="raw")
        for s in lm.sites():
            print(s)
        return
    registries = {
        "perturbations": "safestress.perturb:PERTURBATIONS",
        "judges": "safestress.judges:JUDGES",
        "datasets": "safestress.datasets:DATASETS",
        "scores": "safestress.attribution:SCORES",
    }
    if what not in registries:
        raise SafestressError(f"cannot list '{what}'; known: {', '.join([*registries, 'sites'])}")
    import importlib

    module, attr = registries[what].split(":")
    for name in getattr(importlib.import_module(module), attr).names():
        print(name)


from safestress.attribution.cli import app as attribute_app  # noqa: E402

app.add_typer(attribute_app, name="attribute")

from safestress.analysis.cli import app as analyze_app  # noqa: E402

app.add_typer(analyze_app, name="analyze")

from safestress.train.cli import defend_app, finetune_command  # noqa: E402

app.command("finetune")(finetune_command)
app.add_typer(defend_app, name="defend")

judge_app = typer.Typer(no_args_is_help=True, help="Judges: agreement with human labels, training heads.")
app.add_typer(judge_app, name="judge")


@judge_app.command("eval")
def judge_eval(
    judge: list[str] = typer.Option(
        ..., help="judge name (safestress list judges); repeat to compare judges on the same items"
    ),
    data: str = typer.Option(..., help="labelled CSV / JSONL / JSON file"),
    prompt_col: str = typer.Option("prompt"),
    response_col: str = typer.Option("completion"),
    label_col: str = typer.Option("final_label"),
    positive: str = typer.Option(..., help="label value(s) that mean the judge's positive class, comma-separated"),
    level: float = typer.Option(0.95, min=0.5, max=0.999, help="confidence level of the κ intervals"),
    json_out: Path | None = typer.Option(
        None, "--json", help="write {n, accuracy, kappa, kappa_ci, ...} of the first judge here (others: 'compared')"
    ),
) -> None:
    """Agreement of a judge with human labels: accuracy, Cohen's κ with its confidence interval,
    confusion matrix, disagreements. With several --judge, each later judge's κ is compared with
    the first's on the items both scored (paired bootstrap: difference, interval, p-value)."""
    from rich.table import Table

    from safestress.judges import make_judge
    from safestress.judges.agreement import compare_kappa, evaluate_judge, load_labelled
    from safestress.report.jsonfile import write_json
    from safestress.report.tables import fmt_kappa

    judges = [make_judge(name) for name in dict.fromkeys(judge)]  # fail on a bad name before judging
    prompts, responses, truth = load_labelled(data, prompt_col, response_col, label_col, _split([positive]) or [])
    results = [evaluate_judge(j, prompts, responses, truth, level=level) for j in judges]
    first = results[0]
    diffs = [compare_kappa(truth, a.verdicts, first.verdicts, level=level) for a in results[1:]]
    t = Table(title=f"judges vs {label_col} in {Path(data).name} (positive: {judges[0].positive_label} = {positive})")
    pct = f"{level:.0%}".replace(".0%", "%")
    columns = ["judge", "n", "unscored", "accuracy", f"Cohen's κ [{pct} CI]", "TP/FP/FN/TN"]
    if diffs:
        columns += [f"κ − first's [{pct} CI]", "p"]
    for col in columns:
        t.add_column(col, justify="left" if col == "judge" else "right", no_wrap=True)
    for i, a in enumerate(results):
        c = a.confusion
        row = [a.judge, str(a.n), str(a.unscored), f"{a.accuracy:.3f}"]
        row += [
            fmt_kappa(a.kappa, a.kappa_ci),
            "/".join(str(c[k]) for k in ("tp", "fp", "fn", "tn")),
        ]
        if diffs:
            d = diffs[i - 1] if i else None
            row += [f"{d.difference:+.3f} [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]", f"{d.p_value:.2g}"] if d else ["", ""]
        t.add_row(*row)
    out.print(t)
    if first.disagreements:
        d = Table(title=f"{first.judge}: first {len(first.disagreements)} disagreements", show_lines=True)
        for col in ("prompt", "response", "human", "judge"):
            d.add_column(col, overflow="fold")
        for row in first.disagreements[:10]:
            d.add_row(
                row["prompt"][:80],
                row["response"][:160],
                "positive" if row["human_positive"] else "negative",
                row["judge_label"],
            )
        out.print(d)
    if json_out:
        report = first.as_dict()
        report["level"] = level
        if diffs:
            report["compared"] = [{**a.as_dict(), "vs_first": d.as_dict()} for a, d in zip(results[1:], diffs)]
        write_json(json_out, report)
        err.print(f"wrote {json_out}")


@judge_app.command("sample")
def judge_sample(
    out_path: Path = typer.Option(..., "--out", help="the file to label: .csv or .jsonl (never overwritten)"),
    store: str = typer.Option("safestress.db", help="results database"),
    per_condition: int = typer.Option(50, min=1, help="responses drawn from each condition (model × configuration)"),
    seed: int = typer.Option(0, help="the same store and seed draw the same sample"),
) -> None:
    """Draw a blind random sample of a store's responses for a person to label, per condition;
    then 'safestress judge audit' corrects every condition's rate for the judges' errors."""
    from safestress.judges.audit import FEW_LABELS, draw_sample, write_sample
    from safestress.store import Store

    with Store.open_existing(store) as st:
        sample = draw_sample(st.frame(), per_condition, seed)
    path = write_sample(sample, out_path)
    err.print(
        f"wrote {len(sample)} responses to {path}, shuffled, without their conditions or verdicts. Fill the "
        "'label' column (e.g. harmful / refusal / incoherent; empty = not yet), then run "
        f"safestress judge audit --store {store} --labels {path} --positive harmful"
    )
    if per_condition < FEW_LABELS:
        err.print(f"note: under {FEW_LABELS} labels per condition the corrected intervals are too narrow")


@judge_app.command("label")
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


@judge_app.command("audit")
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
) -> None:
    """Each condition's harmful share by the judge, by the labels, and corrected for the judge's
    errors (prediction-powered inference: the labels plus the judge's verdicts on the rest)."""
    from safestress.judges.audit import FEW_LABELS, audit_store, auditable_judges, labelling_plan, read_labels
    from safestress.judges.base import latest_keys
    from safestress.report.jsonfile import write_json
    from safestress.report.tables import audit_table
    from safestress.store import Store

    truth = read_labels(labels, key_col, label_col, _split([positive]) or [])
    with Store.open_existing(store) as st:
        frame = st.frame()
    stored = auditable_judges(frame)
    if not stored:
        raise SafestressError(f"store {store} holds no harmful/refusal verdicts to audit")
    keys = [j if j in stored else _stored_version(j, stored, store) for j in judge] if judge else latest_keys(stored)
    audits = audit_store(frame, list(dict.fromkeys(keys)), truth, level, half_width=plan / 100)
    for a in audits:
        out.print(audit_table(a, level))
        plan_line = labelling_plan(a)
        if plan_line:
            err.print(plan_line, highlight=False, soft_wrap=True)
    few = min((r.labelled for a in audits for r in a.rows), default=0)
    if few < FEW_LABELS:
        err.print(f"note: a condition has only {few} labels; under {FEW_LABELS} its corrected interval is too narrow")
    if json_out:
        write_json(
            json_out, {"labels": labels, "positive": positive, "level": level, "judges": [a.as_dict() for a in audits]}
        )
        err.print(f"wrote {json_out}")


@judge_app.command("train")
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
    label_col: str = typer.Option("final_label"),
    positive: str = typer.Option("", help="label value(s) of the positive class (refusal / toxic), comma-separated"),
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
    from dataclasses import replace

    from safestress.judges.embedding import HeadSettings, encoder_dir, train_head
    from safestress.judges.harm import HARM_SETTINGS
    from safestress.judges.harm_data import harm_set
    from safestress.judges.toxicity import TOXICITY_EPOCHS, toxicity_head_settings, toxigen_statements
    from safestress.judges.training_data import PYRIT_OBJECTIVE, LabelledSet, compliant_answers, labelled_set
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
            part = labelled_set(spec, prompt_col, response_col, label_col, _split([positive]) or [])
        train.add(part)
        sources.append(part.source)
    for spec in compliant or []:
        part = compliant_answers(spec)
        train.add(part)
        sources.append(part.source)
    if task == "toxicity":
        settings = toxicity_head_settings(epochs or TOXICITY_EPOCHS, seed)
    elif task == "harm":
        settings = replace(HARM_SETTINGS, epochs=epochs or HARM_SETTINGS.epochs, seed=seed)
    else:
        settings = HeadSettings(
            epochs=epochs or HeadSettings.epochs, seed=seed, augment=augment, opening_rule=opening_rule
        )
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


lab_app = typer.Typer(
    no_args_is_help=True, help="The synthetic safety lab: a tiny aligned model with exact ground truth."
)
app.add_typer(lab_app, name="lab")


def _lab_settings(depth: str, seed: int, safety_seed: int | None = None):
    from safestress.lab.model import DEPTHS, LabSettings

    if depth not in DEPTHS:
        raise SafestressError(f"unknown lab depth '{depth}'; known: {', '.join(DEPTHS)}")
    return LabSettings(depth=depth, seed=seed, safety_seed=None if safety_seed == seed else safety_seed)


@lab_app.command("train")
def lab_train(
    depth: str = typer.Option("deep", help="safety-tuning depth: none | shallow | deep | dpo"),
    seed: int = typer.Option(0, help="seed of the capability stage (and of the first run's safety stage)"),
    runs: int = typer.Option(
        1, min=1, max=100, help="training runs of the safety stage, seeds SEED … SEED+RUNS−1, on one capability model"
    ),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="report held-out quality"),
) -> None:
    """Train (once; cached) the lab model at a safety-tuning depth and print its path, one per run."""
    import contextlib

    from safestress.lab.model import lab_model_path
    from safestress.train.common import quiet_progress, quiet_training

    quiet_progress()  # no library bars (tokenising, writing shards): training logs its own steps
    for run in range(runs):
        # standard output carries the paths alone (scripts read them); the trainers print their
        # logs there, so training speaks on standard error
        with contextlib.redirect_stdout(sys.stderr), quiet_training():
            path = lab_model_path(_lab_settings(depth, seed, seed + run), log=err.print)
        if evaluate:
            from safestress.lab.evaluate import evaluate as run_eval

            q = run_eval(path)
            err.print(
                f"held-out: harmful refused {100 * q.harmful_refusal:.1f}% (n={q.n_harmful}), benign refused "
                f"{100 * q.benign_refusal:.1f}%, benign accuracy {100 * q.benign_accuracy:.1f}% (n={q.n_benign}), "
                f"chain accuracy {100 * q.chain_accuracy:.1f}%, chain steps {100 * q.chain_step_accuracy:.1f}%"
            )
        print(path)


@app.command()
def demo(
    store: str = typer.Option("safestress-demo.db", help="results database"),
    depth: str = typer.Option("deep", help="lab safety-tuning depth"),
    sigma: str = typer.Option("0,0.25,0.5,1", help="relative σ values"),
    sites: str = typer.Option("blocks.*.resid_post", help="site selection"),
) -> None:
    """Train or load the lab model and run a noise sweep on it through the normal pipeline."""
    from safestress.config import build_config, parse_floats
    from safestress.lab.model import lab_model_path
    from safestress.runner import run_and_report

    path = lab_model_path(_lab_settings(depth, 0), log=err.print)
    cfg = build_config(
        models=[str(path)],
        dataset=["lab-harmful", "lab-benign", "lab-chain"],
        perturb="noise",
        sigma=parse_floats(sigma),
        scale="relative",
        sites=[sites],
        seeds=2,
        max_new_tokens=24,
        batch_size=128,
        judge=["lab", "lab-task", "lab-cot"],
        store=store,
    )
    run_and_report(cfg, out, err)


def _fail(message: str) -> None:
    """The one way a command fails on bad input: one ``error:`` line, exit 2, no traceback."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    err.print(f"[bold red]error:[/] {escape(first)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    import os

    # Hub retries and transformers' advice are logged as warnings; the command line reports
    # failures itself, in one line. (Both libraries read these when first imported.)
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        # standalone_mode=False: usage errors (a missing option, a number that is not one) reach
        # this handler instead of being drawn in a box by typer, so they get one line like the rest
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # typer's usage errors (its vendored click's UsageError family)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `safestress judge` alone
            out.print(ctx.get_help(), highlight=False, soft_wrap=True)
            sys.exit(2)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SafestressError as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:  # a store that breaks after its checks (e.g. the disk fills)
        _fail(f"store error: {exc}")
    except OSError as exc:  # a file we write: a full disk, a folder that vanished, no permission
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _fail(f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        err.print("interrupted; stored rows are kept and a re-run resumes")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
