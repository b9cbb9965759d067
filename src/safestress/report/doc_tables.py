"""Tables in Markdown documents that are regenerated from committed per-prompt files, so they cannot drift.

A document marks a table with an opening and a closing comment; everything between them is
generated::

    <!-- safestress-table rates export=results/qwen-noise/per-prompt.parquet judge=refusal@3/c4 -->
    | model | dataset | condition | … |
    <!-- /safestress-table -->

The opening comment names the kind of table and its source, a path relative to the document:

* ``rates``: the rate table of one judge (``judge=KEY``, optional ``margin=POINTS``) from a
  ``safestress export`` file (Parquet or CSV): the same ``summarize`` and the same Markdown as
  ``safestress results`` writes to summary.md, so a number in the docs is a number the tool prints
  (with perplexity where the export has a ``ppl`` column, as a study's exports do);
* ``contrasts``: the model-against-baseline table (``baseline=NAME``, optional ``margin``);

Any table of per-prompt rows takes ``models=NAME,NAME,…`` to keep only those models' rows (a
study's runs against the one model they were trained from, when the export holds several), and
``datasets=NAME,…`` to keep only those datasets' rows (a judge that scored several sets), and
``condition=NAME`` to keep one condition's rows (``condition=clean``: a sweep's unperturbed models);
* ``runs``: training methods at the run level (``arms="NAME=MODEL,MODEL;NAME=…"``, the first
  arm the baseline; optional ``outcome=rate|all|safe|incoherent``, what each run's rate counts;
  report/runs.py);
* ``draws``: a classified set against random draws of its size (``classified=TEXT draws=TEXT``,
  parts of condition names, e.g. ``unit_class=scu`` and ``unit_class=random``; optional
  ``outcome=``): the draws' rates as a distribution and the classified set's rank in it
  (report/draws.py);
* ``agreement``: judges against human labels (``file=`` the verdicts ``safestress judge eval
  --rows`` wrote, ``data=`` the labelled file, ``label=`` its column, default ``final_label``,
  ``positive=V,V``): accuracy, Cohen's κ with its interval, the confusion, and every later
  judge's κ against the first's (paired bootstrap), as ``judge eval`` prints them. The labels are
  read from their own file (``../shared`` beside the project, or ``pyrit:PATH`` in an installed
  PyRIT's data), never copied. ``compare=accuracy`` compares accuracy instead (Newcombe, exact
  McNemar: for harm labels, where judges' base rates differ); ``columns=NAME:COL,…`` adds judges
  whose verdicts are columns of the labelled file (published labels); ``where=COL^PREFIX`` (or
  ``COL=VALUE``, negated by ``!``) keeps some rows, and ``positive_where=`` the same kind of
  condition makes a row positive only where it holds too (XSTest's harm: full compliance with an
  unsafe prompt); ``label=mean(A,B,…)`` with ``positive=>=X`` labels by raters' mean score, and
  ``data=toxigen-statements:DIR`` labels the distinct ToxiGen statements of DIR's files (columns
  ``text``, ``toxic``, ``group``);
* ``kappas``: one judge's κ (with its interval) for several variants of a run (rows) on several
  labelled files (columns), from the verdict files each variant saved (``benchmarks/
  judge_agreement.py --rows DIR``): ``variants="NAME=DIR;…"`` (folders relative to ``file=``, ``.``
  for ``file=`` itself), ``pattern=`` the verdict file's name and ``data=`` the labelled file's
  path, both with ``{fold}``, ``folds=LABEL:FOLD,…``, ``judge=`` the start of the judge's name in the files,
  ``positive=``; a variant run on some folds only leaves the others empty, and the mean is over
  variants run on every fold;
* ``calibration``: the figures of ``benchmarks/stat_calibration.py --out FILE`` (or
  ``benchmarks/lab_calibration.py``);
* ``audit``: what a judge audit buys, from ``benchmarks/judge_audit.py --out FILE``: per model and
  judge (``part=rates``) or per change between models (``part=changes``), at ``n=`` labels, how
  often each interval covers the true share and its mean width;
* ``lengths``: judges over real lengths, from ``benchmarks/long_outputs.py --rows FILE``: per
  model, dataset, σ and token budget, the share ``incoherent``, the share whose loop was cut, the
  share the old whole-answer loop rule would have dropped, and each judge's rate named for what
  it measures (optional ``models=``, ``datasets=``, ``tokens=N,N``, ``sigma=S,S`` keep some rows);
* ``coherence``: how often the coherence criterion flags each set of texts, from
  ``benchmarks/coherence.py --rows FILE``: per set, the texts, the flagged count and share, by
  reason, and where the set has a person's label, how many flagged texts it calls positive;
* ``sources``: a trained judge head's training data, from its ``meta.json`` (the file the head
  ships with): rows and positives per ``--data`` source, and how each was mapped to labels;
* ``sequential``: a sequential sweep against the full sweep of the same conditions
  (``full=FILE`` the full sweep's export, ``order=FILE`` the prompts in the order rounds took
  them, ``round=N``, ``margin=POINTS``): each condition's word from both, where it stopped, and
  the rows and tokens each generated (``benchmarks/bench_sequential.py --out DIR`` writes the files).

``safestress refresh-tables DOC.md …`` rewrites the blocks; ``--check`` changes nothing and
fails when a block differs from its recomputation (the test suite runs it on ``docs/``).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safestress.config import margin_share
from safestress.errors import SafestressError
from safestress.store import read_export

_BLOCK = re.compile(r"(<!-- safestress-table (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(<!-- /safestress-table -->)", re.S)
KINDS = (
    "rates",
    "contrasts",
    "runs",
    "draws",
    "agreement",
    "kappas",
    "calibration",
    "audit",
    "lengths",
    "coherence",
    "sources",
    "sequential",
)
_FILE_OPTIONS = ("full", "order", "data")  # options that name a further file, relative to the document
TOXIGEN_STATEMENTS = "toxigen-statements:"  # data=toxigen-statements:DIR, the statements of ToxiGen's files in DIR


@dataclass(frozen=True)
class TableSpec:
    kind: str
    source: Path
    options: dict[str, str]


def parse_spec(text: str, base: Path) -> TableSpec:
    """The opening comment's ``KIND key=value …``; ``export=`` or ``file=`` is the source."""
    kind, *items = shlex.split(text)
    if kind not in KINDS:
        raise SafestressError(f"unknown table kind '{kind}'; known: {', '.join(KINDS)}")
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SafestressError(f"table option '{item}' is not KEY=VALUE")
        if key in _FILE_OPTIONS and value.startswith(TOXIGEN_STATEMENTS):  # a data folder after the scheme
            options[key] = TOXIGEN_STATEMENTS + str((base / value.removeprefix(TOXIGEN_STATEMENTS)).resolve())
            continue
        in_project = key in _FILE_OPTIONS and not value.startswith("pyrit:")
        options[key] = str((base / value).resolve()) if in_project else value
    source = options.pop("export", None) or options.pop("file", None)
    if source is None:
        raise SafestressError(f"a '{kind}' table needs export=FILE or file=FILE")
    return TableSpec(kind, (base / source).resolve(), options)


def render(spec: TableSpec) -> str:
    """The Markdown a block holds, computed from its source."""
    if spec.kind == "calibration":
        return calibration_table(json.loads(spec.source.read_text()))
    if spec.kind == "agreement":
        return agreement_table(spec)
    if spec.kind == "kappas":
        return kappa_grid_table(spec)
    if spec.kind == "audit":
        return audit_table(json.loads(spec.source.read_text()), spec.options)
    if spec.kind == "lengths":
        return lengths_table(read_export(spec.source), spec.options)
    if spec.kind == "coherence":
        return coherence_table(read_export(spec.source))
    if spec.kind == "sources":
        return sources_table(json.loads(spec.source.read_text()))
    from safestress.report import markdown_arms, markdown_contrasts, markdown_draws, markdown_table
    from safestress.report.contrasts import model_contrasts
    from safestress.report.runs import arm_rows, parse_arms
    from safestress.report.summary import attach_perplexity, summarize

    frame = read_export(spec.source)
    judge = spec.options.get("judge")
    if judge is None:
        raise SafestressError(f"a '{spec.kind}' table needs judge=KEY")
    if judge not in set(frame["judge"].dropna()):
        raise SafestressError(f"judge '{judge}' has no verdicts in {spec.source.name}")
    for option, column in (("models", "model"), ("datasets", "dataset"), ("condition", "condition")):
        if option in spec.options:
            # a condition's name may hold commas (its sites), so condition= names exactly one
            keep = (
                [spec.options[option]] if option == "condition" else [m for m in spec.options[option].split(",") if m]
            )
            missing = sorted(set(keep) - set(frame[column]))
            if missing:
                raise SafestressError(f"{column} '{missing[0]}' has no rows in {spec.source.name}")
            frame = frame[frame[column].isin(keep)].reset_index(drop=True)
    margin = margin_share(float(spec.options["margin"])) if "margin" in spec.options else None
    if spec.kind == "sequential":
        return sequential_table(frame, spec, judge)
    if spec.kind == "rates":
        rows = summarize(frame, judge, margin)[0]
        attach_perplexity(rows, frame)  # where the export carries a ppl column
        return markdown_table(rows)
    if spec.kind == "runs":
        arms = parse_arms(spec.options.get("arms", "").split(";"))
        return markdown_arms(arm_rows(frame, judge, arms, spec.options.get("outcome", "rate")))
    if spec.kind == "draws":
        from safestress.report.draws import draw_rows

        picked = [spec.options.get(k, "") for k in ("classified", "draws")]
        return markdown_draws(draw_rows(frame, judge, *picked, spec.options.get("outcome", "rate")), *picked)
    return markdown_contrasts(model_contrasts(frame, judge, spec.options.get("baseline"), margin))


def agreement_table(spec: TableSpec) -> str:
    """Judges' saved per-item verdicts against the labels of the file they judged."""
    from safestress.judges.agreement import agreement_from, compare_accuracy, compare_kappa, read_verdicts, truth_of
    from safestress.report import markdown_notes, markdown_rows
    from safestress.report.agreement_tables import accuracy_block, agreement_block

    if "data" not in spec.options or "positive" not in spec.options:
        raise SafestressError("an 'agreement' table needs data=LABELLED_FILE and positive=VALUE[,VALUE]")
    compare = spec.options.get("compare", "kappa")
    if compare not in ("kappa", "accuracy"):
        raise SafestressError(f"compare={compare}: known are kappa and accuracy")
    rows, data = labelled_rows(spec.options["data"])
    label = spec.options.get("label", "final_label")
    # a positive value is checked against the whole file (a typo is never silently "no positives"),
    # then the rows are filtered: a subset may hold none
    truth = truth_of(rows, label, [v for v in spec.options["positive"].split(",") if v], data)
    if "positive_where" in spec.options:  # positive only where a second column agrees (XSTest: unsafe prompts)
        truth = [t and ok for t, ok in zip(truth, row_condition(rows, spec.options["positive_where"], data))]
    level = float(spec.options.get("level", 0.95))
    verdicts = read_verdicts(spec.source, len(truth)) | column_verdicts(rows, spec.options.get("columns", ""), data)
    kept = kept_rows(rows, spec.options.get("where", ""), data)
    truth = [truth[i] for i in kept]
    results = [agreement_from(j, [v[i] for i in kept], truth, level) for j, v in verdicts.items()]
    if compare == "accuracy":
        block = accuracy_block(
            results, [compare_accuracy(truth, results[0].verdicts, a.verdicts, level) for a in results[1:]], level
        )
    else:
        diffs = [compare_kappa(truth, a.verdicts, results[0].verdicts, level=level) for a in results[1:]]
        block = agreement_block("", results, diffs, level)
    positive = spec.options["positive"]
    if "positive_where" in spec.options:
        positive += f" where {spec.options['positive_where']}"
    where = f", rows where {spec.options['where']}" if "where" in spec.options else ""
    name = "the ToxiGen statements" if data.startswith(TOXIGEN_STATEMENTS) else Path(data).name
    source = f"Against `{label}` of {name}{where} (positive: {positive}); verdicts: {spec.source.name}."
    return markdown_rows(block.head, block.cells) + markdown_notes([source, *block.notes])


def kappa_grid_table(spec: TableSpec) -> str:
    """Variants of one run (rows) × labelled files (columns): the named judge's κ with its
    interval on each, read from each variant's saved verdicts and the labels' own files."""
    from safestress.judges.agreement import agreement_from, read_verdicts, truth_of
    from safestress.report import markdown_rows
    from safestress.report.tables import fmt_kappa

    needed = ("variants", "pattern", "folds", "judge", "data", "positive")
    missing = [k for k in needed if k not in spec.options]
    if missing:
        raise SafestressError(f"a 'kappas' table needs {', '.join(f'{k}=' for k in missing)}")
    folds = [item.partition(":") for item in spec.options["folds"].split(",") if item]
    variants = [item.partition("=") for item in spec.options["variants"].split(";") if item]
    if any(not sep for _, sep, _ in folds + variants):
        raise SafestressError("kappas: write folds=LABEL:FOLD,… and variants=NAME=DIR;…")
    positive = [v for v in spec.options["positive"].split(",") if v]
    labels = {}
    for _, _, fold in folds:
        rows, path = labelled_rows(spec.options["data"].replace("{fold}", fold))
        labels[fold] = truth_of(rows, spec.options.get("label", "final_label"), positive, path)
    cells = []
    for name, _, folder in variants:
        row, kappas = [name], []
        for _, _, fold in folds:
            path = spec.source / folder / spec.options["pattern"].replace("{fold}", fold)
            if not path.is_file():
                row.append("")
                continue
            verdicts = read_verdicts(path, len(labels[fold]))
            keys = [k for k in verdicts if k.startswith(spec.options["judge"])]
            if len(keys) != 1:
                raise SafestressError(f"{path.name} holds {len(keys)} verdict lists of judge '{spec.options['judge']}'")
            a = agreement_from(keys[0], verdicts[keys[0]], labels[fold])
            kappas.append(a.kappa)
            row.append(fmt_kappa(a.kappa, a.kappa_ci))
        row.append(f"{sum(kappas) / len(kappas):.3f}" if len(kappas) == len(folds) else "")
        cells.append(row)
    head = ["variant", *(f"{label}: κ [95% CI]" for label, _, _ in folds), "mean κ"]
    note = f"\nJudge {spec.options['judge']}; each variant's verdicts: {spec.options['pattern']} in its folder.\n"
    return markdown_rows(head, cells) + note


def labelled_rows(value: str) -> tuple[list[dict[str, Any]], str]:
    """The labelled rows of a ``data=`` value and the name they are read from. Besides a file (or
    ``pyrit:PATH``), ``toxigen-statements:DIR`` is the distinct ToxiGen statements of the dataset's
    files in DIR, the toxicity head's training rows (columns ``text``, ``toxic`` 1/0, ``group``):
    built from the benchmark's own files, as the head's training builds them, never copied."""
    from safestress.datasets import read_rows_file

    if value.startswith(TOXIGEN_STATEMENTS):
        from safestress.judges.toxicity import toxigen_statements

        texts, toxic, groups = toxigen_statements(Path(value.removeprefix(TOXIGEN_STATEMENTS)))
        rows = [{"text": t, "toxic": int(x), "group": g} for t, x, g in zip(texts, toxic, groups)]
        return rows, value
    path = labelled_path(value)
    return read_rows_file(path), path


def labelled_path(value: str) -> str:
    """A labelled file's path; ``pyrit:REST`` is REST under an installed PyRIT's ``datasets``
    folder (its human-labelled scorer sets, read as data files; ``pip install --no-deps pyrit``)."""
    if value.startswith("pyrit:"):
        from safestress.judges.training_data import pyrit_datasets_dir

        return str(pyrit_datasets_dir() / value.removeprefix("pyrit:"))
    return value


def column_verdicts(rows: list[dict[str, Any]], columns: str, path: str) -> dict[str, list[bool | None]]:
    """``NAME:COLUMN,…``: judges whose verdicts are columns of the labelled file itself (published
    judges' labels beside the human one): true/1 positive, false/0 not, empty not scored."""
    from safestress.datasets import require_columns
    from safestress.judges.agreement import verdict_of

    out: dict[str, list[bool | None]] = {}
    for item in (c for c in columns.split(",") if c):
        name, sep, column = item.rpartition(":")
        if not sep or not name:
            raise SafestressError(f"columns entry '{item}' is not NAME:COLUMN")
        require_columns(rows, [column], path)
        out[name] = [verdict_of(r[column], f"column '{column}'") for r in rows]
    return out


def row_condition(rows: list[dict[str, Any]], where: str, path: str) -> list[bool]:
    """Which rows meet ``COL=VALUE``, ``COL^PREFIX`` (starts with), or either negated by ``!``
    before the operator (``type!^contrast``)."""
    from safestress.datasets import require_columns

    match = re.fullmatch(r"(?P<col>[^!=^]+)(?P<neg>!?)(?P<op>[=^])(?P<value>.*)", where)
    if match is None:
        raise SafestressError(f"condition {where}: write COL=VALUE, COL^PREFIX, COL!=VALUE or COL!^PREFIX")
    col, value = match["col"], match["value"]
    require_columns(rows, [col], path)
    test = (lambda v: v == value) if match["op"] == "=" else (lambda v: v.startswith(value))
    return [test(str(r[col])) != bool(match["neg"]) for r in rows]


def kept_rows(rows: list[dict[str, Any]], where: str, path: str) -> list[int]:
    """The rows a ``where=`` condition keeps (:func:`row_condition`); none given keeps every row."""
    if not where:
        return list(range(len(rows)))
    kept = [i for i, ok in enumerate(row_condition(rows, where, path)) if ok]
    if not kept:
        raise SafestressError(f"where={where} keeps no row of {Path(path).name}")
    return kept


def calibration_table(data: dict[str, Any]) -> str:
    """The calibration figures as a Markdown table: measured rate with its Wilson interval, after
    the population the sweeps were drawn from when it was real data (``benchmarks/lab_calibration.py``)."""
    lines = [f"Population: {data['population']}.", ""] if data.get("population") else []
    lines += [
        f"{data['reps']:,} {data.get('unit', 'simulated sweeps')} of {data['prompts']} prompts per row, "
        f"α = {data['alpha']}:",
        "",
        "| kind | test or interval | goal | measured [95% CI] |",
        "|---|---|---|---|",
    ]
    for f in data["figures"]:
        lo, hi = (100 * x for x in f["ci"])
        places = 2 if hi < 1 else 1  # a rate against a goal below 1% needs its second decimal
        rate = 100 * f["rate"]
        lines.append(
            f"| {f['kind']} | {f['name']} | {f['goal']} | {rate:.{places}f}% [{lo:.{places}f}, {hi:.{places}f}] |"
        )
    return "\n".join(lines) + "\n"


_AUDIT_MODELS = {"llama2orig": "Llama-2", "mistralinstruct": "Mistral-Instruct", "gpt4": "GPT-4"}


def audit_table(data: dict[str, Any], options: dict[str, str]) -> str:
    """The judge-audit simulation at one labelled-sample size: coverage of the true share (or
    change) by each interval and its mean width, in points; "worth" is the labels-alone sample
    size the corrected interval's width equals."""
    if "n" not in options:
        raise SafestressError("an 'audit' table needs n=LABELS (a sample size the benchmark ran)")
    n, part = int(options["n"]), options.get("part", "rates")
    if part not in ("rates", "changes"):
        raise SafestressError(f"part={part}: known are rates and changes")
    rows = [r for r in data["rows" if part == "rates" else "changes"] if r["n"] == n]
    if not rows:
        raise SafestressError(f"the audit file holds no rows at n={n}")

    def cell(r: dict[str, Any], key: str) -> str:
        return f"{100 * r[key]['covered']:.1f}% / {100 * r[key]['width']:.1f}"

    def model(name: str) -> str:
        return _AUDIT_MODELS.get(name, name)

    if part == "rates":
        lines = [
            f"| model | judge | true % | judge % | judge alone | {n} labels alone | corrected | worth |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {model(r['model'])} | `{r['judge']}` | {100 * r['truth']:.1f} | {100 * r['judge_rate']:.1f} | "
            f"{cell(r, 'judge alone')} | {cell(r, 'labels alone')} | {cell(r, 'corrected')} | {r['worth']:.0f} |"
            for r in rows
        ]
    else:
        lines = [
            f"| change | judge | true Δ pts | judge's Δ pts | {n} labels alone: cover / width "
            "| corrected: cover / width |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {model(r['from'])} → {model(r['to'])} | `{r['judge']}` | {100 * r['truth']:+.1f} | "
            f"{100 * r['judge_change']:+.1f} | {cell(r, 'labels alone')} | {cell(r, 'corrected')} |"
            for r in rows
        ]
    lines += ["", f"{data['draws']:,} random labelled samples per row; cover / width: % of draws, points."]
    return "\n".join(lines) + "\n"


def lengths_table(frame: Any, options: dict[str, str]) -> str:
    """One row per model, dataset, σ and token budget of the long-output benchmark's rows: the
    shares over all responses (``incoherent``, loop cut, criterion 4's loop) are read from the
    first judge's rows (the coherence criterion is the judges' shared one), each judge's rate among
    the responses it scored, with that count where it scored fewer than all."""
    from safestress.judges.base import key_name
    from safestress.report.summary import judge_outcome

    for option, column, cast in (
        ("models", "model", str),
        ("datasets", "dataset", str),
        ("tokens", "max_new_tokens", int),
        ("sigma", "strength", float),
    ):
        if option in options:
            keep = [cast(v) for v in options[option].split(",") if v]
            frame = frame[frame[column].isin(keep)]
    if frame.empty:
        raise SafestressError("no rows left in the long-output file for this table")
    judges = list(dict.fromkeys(frame["judge"]))
    names = [f"{judge_outcome(j)} `{key_name(j)}`" for j in judges]
    head = ["model", "dataset", "σ", "tokens", "n", "`incoherent`", "loop cut, opening judged"]
    head += ["criterion 4 would have dropped", *names]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    # in a fixed order (model, dataset, budget, σ), whatever order the benchmark's runs wrote
    for (model, dataset, tokens, sigma), part in frame.groupby(["model", "dataset", "max_new_tokens", "strength"]):
        first = part[part["judge"] == judges[0]]
        n = len(first)
        cells = [str(model), str(dataset), f"{sigma:g}", str(tokens), str(n)]
        cells += [
            f"{100 * (first['label'] == 'incoherent').mean():.1f}%",
            f"{100 * first['loop_cut'].notna().mean():.1f}%",
        ]
        cells.append(f"{100 * first['criterion4_loop'].mean():.1f}%")
        for judge in judges:
            scored = part.loc[part["judge"] == judge, "harmful"].dropna()
            rate = f"{100 * scored.mean():.1f}%" if len(scored) else "—"
            cells.append(rate if len(scored) == n else f"{rate} (of {len(scored)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def coherence_table(frame: Any) -> str:
    """Per set of texts (in the file's order): how many the criterion calls ``incoherent``, by
    reason, and the person's label of the flagged ones where the set carries one."""
    lines = ["| text | n | `incoherent` | by reason | person's label of the flagged: positive / all |"]
    lines.append("|---|---|---|---|---|")
    for name, part in frame.groupby("set", sort=False):
        reasons = part["reason"].fillna("").astype(str)
        flagged = part[reasons != ""]
        counts = reasons[reasons != ""].value_counts()
        by = ", ".join(f"{r} {k}" for r, k in sorted(counts.items())) or "—"
        human = flagged["human"].dropna()  # the benchmark writes the column, empty for sets without labels
        labelled = f"{int(human.sum())} / {len(human)}" if part["human"].notna().any() else "—"
        lines.append(
            f"| {name} | {len(part):,} | {len(flagged)} ({100 * len(flagged) / len(part):.1f}%) | {by} | {labelled} |"
        )
    return "\n".join(lines) + "\n"


def sources_table(meta: dict[str, Any]) -> str:
    """Rows and positives of each training source a head's ``meta.json`` records, with the label
    mapping it wrote down, so the documented recipe is the shipped head's."""
    positive = "harmful" if meta.get("kind") == "harm-head" else "positive"
    lines = [f"| `--data` | rows | {positive} | mapping |", "|---|---|---|---|"]
    for source in meta["sources"]:
        mapping = source.get("labels") or ", ".join(
            f"{k} {v}" for k, v in source.items() if k not in ("dataset", "n", "positives", "files", "sha256", "file")
        )
        name = source.get("dataset") or source.get("file", "?")
        lines.append(f"| `{name}` | {source['n']:,} | {source['positives']:,} | {mapping} |")
    total = meta.get("n_train")
    if total is not None:
        lines += ["", f"{total:,} training rows, {100 * meta.get('harmful_share', float('nan')):.1f}% {positive}."]
    return "\n".join(lines) + "\n"


def sequential_table(frame: Any, spec: TableSpec, judge: str) -> str:
    """A sequential sweep (``frame``, its export) beside the full sweep of the same conditions: the
    decisions are replayed from the rows (stopping.replay), the full sweep's words are its rate
    table's, and generated rows and tokens are counted once per generation."""
    from safestress.report.stopping import replay
    from safestress.report.summary import summarize
    from safestress.report.tables import condition_name, stop_text

    for option in ("full", "order", "round"):
        if option not in spec.options:
            raise SafestressError(f"a 'sequential' table needs {option}=…")
    margin_points = float(spec.options["margin"]) if "margin" in spec.options else None
    full, order_rows = read_export(Path(spec.options["full"])), read_export(Path(spec.options["order"]))
    orders = {str(ds): [str(i) for i in part["item_id"]] for ds, part in order_rows.groupby("dataset", sort=False)}
    decisions = [d for d in replay(frame, orders, int(spec.options["round"]), margin_points) if d.judge == judge]
    full_rows = [r for r in summarize(full, judge, margin_share(margin_points))[0] if r.perturbation != "none"]
    full_words = {(r.model, r.dataset, condition_name(r)): r.verdict for r in full_rows}
    shown = {r.config_hash: r for r in frame.drop_duplicates("config_hash").itertuples()}
    lines = ["| condition | full sweep | sequential | stopped at |", "|---|---|---|---|"]
    same = 0
    for d in sorted(decisions, key=lambda d: (d.model, d.dataset, shown[d.config_hash].condition)):
        row = shown[d.config_hash]
        name = condition_name(row)
        word = full_words.get((d.model, d.dataset, name), "—")
        same += word == d.word
        lines.append(f"| {name} | {word} | {d.word} | {stop_text(d.prompts, d.of_prompts, d.by)} |")

    def generated(rows: Any) -> tuple[int, int]:
        if "n_tokens" not in rows.columns:
            raise SafestressError("a 'sequential' table needs exports with an n_tokens column (safestress export)")
        once = rows.drop_duplicates("key")
        return len(once), int(once["n_tokens"].sum())

    (seq_rows, seq_tokens), (full_n, full_tokens) = generated(frame), generated(full)
    saved = 1 - seq_tokens / full_tokens if full_tokens else float("nan")
    lines += [
        "",
        f"Same decision as the full sweep: **{same} of {len(decisions)}**. Rows generated: {seq_rows:,} "
        f"sequential, {full_n:,} full. Tokens generated: {seq_tokens:,} sequential, {full_tokens:,} full "
        f"(**{saved:.1%} fewer**).",
    ]
    return "\n".join(lines) + "\n"


def refresh(path: Path, check: bool = False) -> list[str]:
    """Recompute every block of one document; write it back unless ``check``. Returns the specs of
    the blocks whose text changed (with ``check``: the ones that drifted)."""
    text = path.read_text()
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        body = render(parse_spec(match["spec"], path.parent))
        if body != match["body"]:
            changed.append(match["spec"])
        return match.group(1) + body + match.group(4)

    new = _BLOCK.sub(replace, text)
    if changed and not check:
        path.write_text(new)
    return changed


def blocks(path: Path) -> int:
    """How many generated tables a document holds."""
    return len(_BLOCK.findall(path.read_text()))
