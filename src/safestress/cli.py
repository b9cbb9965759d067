"""The ``safestress`` command line (typer + rich).

Heavy imports (torch, transformers) happen inside commands, so ``--help`` and ``list`` are fast.
Any :class:`~safestress.errors.SafestressError` is printed as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import typer
from rich.markup import escape

from safestress.cli_options import FORMAT, MARGIN, batch_size_option, parse_params
from safestress.config import default_of, margin_share, split_values
from safestress.consoles import err, out, stdout_is_terminal, wrote
from safestress.errors import SafestressError
from safestress.judges.base import stored_version

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Stress-test the safety alignment of chat LLMs under activation perturbations.",
)


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
    batch_size: str | None = typer.Option(
        None,
        help=f"rows per batch, or auto (halved on out-of-memory) {default_of('batch_size')}",
        callback=batch_size_option,
    ),
    do_sample: bool | None = typer.Option(None, "--sample/--greedy", help="decoding (default: greedy)"),
    early_exit: bool | None = typer.Option(
        None,
        "--early-exit",
        help="stop each answer once every judge has settled its verdict (stores the prefix; verdicts unchanged)",
    ),
    sequential: bool | None = typer.Option(
        None,
        "--sequential",
        help="add prompts in rounds and stop each condition once its contrast with clean is decided (see --margin)",
    ),
    round_size: int | None = typer.Option(
        None, min=1, help=f"prompts per dataset added in each round of --sequential {default_of('round_size')}"
    ),
    temperature: float | None = typer.Option(None, help=default_of("temperature")),
    top_p: float | None = typer.Option(None, help=default_of("top_p")),
    judge: list[str] | None = typer.Option(
        None, help=f"judge name(s), repeatable or comma-separated {default_of('judge')}"
    ),
    fluency_ref: str | None = typer.Option(
        None,
        help="reference LM whose token NLL marks salad of real words incoherent (judges.fluency; "
        "thresholds set for SmolLM2-135M-Instruct)",
    ),
    fluency_max_nll: float | None = typer.Option(
        None, help=f"mean NLL (nats/token) above which --fluency-ref calls text salad {default_of('fluency_max_nll')}"
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
        strengths=parse_floats(sigma) if sigma is not None else None,
        params=parse_params(param),
        scale=scale,
        positions=positions,
        sites=sites,
        seeds=seeds,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        early_exit=early_exit,
        sequential=sequential,
        round_size=round_size,
        temperature=temperature,
        top_p=top_p,
        judge=split_values(judge),
        fluency_ref=fluency_ref,
        fluency_max_nll=fluency_max_nll,
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

    run_and_report(cfg, out, err, resolve_format(output_format, stdout_is_terminal()))


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
    outcome: str = typer.Option(
        "rate",
        help="with --arm, what each run's rate counts: rate (flagged among coherent answers) | all (flagged "
        "among all responses) | safe | incoherent (shares of all responses)",
    ),
    output_format: str | None = FORMAT,
) -> None:
    """Print the summary tables of everything in a store."""
    from safestress.judges.base import latest_keys
    from safestress.report import summarize_judges
    from safestress.report.labels import labelled
    from safestress.report.summary import STOP_METRIC
    from safestress.store import Store

    if (labels is None) != (positive is None):
        raise SafestressError("--labels and --positive go together")
    from safestress.report.console import resolve_format
    from safestress.report.emit import emit, write_outputs
    from safestress.report.runs import arm_rows, parse_arms
    from safestress.report.summary import check_outcome

    arms = parse_arms(arm)
    check_outcome(outcome)  # before the store is read
    fmt = resolve_format(output_format, stdout_is_terminal())
    truth = None
    if labels is not None:
        from safestress.judges.audit import read_labels

        truth = read_labels(labels, "key", "label", split_values([positive or ""]) or [])
    with Store.open_existing(store) as st:
        frame = labelled(st.frame(), st)
        if frame.empty:
            raise SafestressError(f"store {store} holds no results")
        judges = sorted(frame["judge"].dropna().unique())
        if not judges:
            raise SafestressError(f"store {store} holds generations but no verdicts; run the sweep again to judge them")
        if judge is None:  # the newest version of the first judge, not a superseded one
            judge = latest_keys(judges)[0]
        elif judge not in judges:
            judge = stored_version(judge, judges, store)
        models = sorted(frame["model"].dropna().unique())
        if baseline is not None and baseline not in models:
            raise SafestressError(f"baseline model '{baseline}' is not in {store}; models: {', '.join(models)}")
        # the page (--out) covers the newest version of every judge, the one asked for first
        keys = sorted(set(latest_keys(judges)) | {judge}, key=lambda k: (k != judge, k)) if out_dir else [judge]
        summaries, all_versus = summarize_judges(frame, keys, st, baseline, margin=margin_share(margin))
        methods = arm_rows(frame, judge, arms, outcome) if arms else []
        specs = st.configs()
        stopped = {h for h, _ in st.metrics(STOP_METRIC)} & set(frame["config_hash"])
    if stopped:
        err.print(
            f"note: a sequential sweep stopped {len(stopped)} condition(s) of this store early; p-values read after "
            "optional stopping are not valid. Its decisions: run it again with --sequential (nothing is regenerated)"
        )
    audits = {}
    if truth is not None:
        from safestress.judges.audit import audit_store, auditable_judges

        auditable = set(auditable_judges(frame))
        audited = [k for k in keys if k in auditable]

        def skipped(why: str) -> None:
            err.print(f"note: not audited: {why}")

        audits = {a.judge: a for a in audit_store(frame, audited, truth, skip=skipped)}
    emit(out, fmt, summaries, all_versus, shown=[judge], methods=methods, audits=audits)
    if out_dir:
        write_outputs(
            Path(out_dir),
            summaries,
            all_versus,
            frame,
            specs,
            methods=methods,
            audits=audits,
            title=f"safestress report: {store}",
            examples=examples,
            wrote=wrote,
        )


@app.command()
def export(
    path: str = typer.Argument(..., help="output file: .parquet or .csv"),
    store: str = typer.Option("safestress.db", help="results database"),
) -> None:
    """Export every stored generation and verdict to Parquet or CSV, with each condition's
    perplexity (``ppl``) where the store measured one."""
    from safestress.report.labels import labelled
    from safestress.report.summary import with_perplexity
    from safestress.store import Store

    with Store.open_existing(store) as st:
        frame = labelled(st.frame(), st)
        n = st.export(path, with_perplexity(frame, st))
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
    what: str = typer.Argument(..., help="perturbations | judges | datasets | scores | studies | sites"),
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
        "studies": "safestress.studies:STUDIES",
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

from safestress.commands.judge import app as judge_app  # noqa: E402

app.add_typer(judge_app, name="judge")

from safestress.commands.study import app as study_app  # noqa: E402

app.add_typer(study_app, name="study")

from safestress.lab.cli import app as lab_app  # noqa: E402
from safestress.lab.cli import demo  # noqa: E402

app.add_typer(lab_app, name="lab")
app.command()(demo)


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
