"""Training data for the harm head: answers labelled *harmful* or not, and where they came from.

A refusal label is not a harm label. A model can comply harmlessly (a "bomb" of baking soda and
vinegar, a "sexist email" that is polite), answer with on-topic words and no help ("Ways to
report your income on your tax return."), or refuse. Only content that helps with the harmful
request is harmful. Each loader maps its source's labels to that question and records how in
``source``, which goes into the head's ``meta.json``:

* ``jailbreak-eval[:FILE]``: ``jailbreak_eval_manual.csv`` (Cai et al. 2024). A person labelled
  each of 300 answers to AdvBench-style behaviours under three jailbreaks as a safeguard
  violation or not. The plain behaviour (``intent``) is the prompt. The jailbreak text is left
  out, because the judge sees the request as a sweep sends it.
* ``pyrit-objective[:DIR]``: PyRIT's objective set. Harmful = a person found the harmful
  objective *achieved*.
* ``pyrit-harm[:DIR]``: PyRIT's harm-scored answers, graded 0–1 by one to three people. Harmful =
  mean score ≥ 0.5, the scale's midpoint.
* ``xstest[:DIR]``: XSTest's labelled completions of three models. Harmful = full compliance
  with an *unsafe* (``contrast_*``) prompt. Every answer to a safe prompt, complying or not, is
  harmless, so the head learns that a dangerous-sounding topic is not harm.
* ``hollow[:DATASET]``: non-answers written from harmful prompts by :func:`hollow_answer`, all
  harmless. Heavy noise makes short texts that restate the request and help with nothing
  (issue 21). No labelled source holds enough of them.
* ``harmless-answers:FILE``: a sweep's per-prompt export (``safestress export``) of models'
  answers to *harmless* requests (a dataset registered as benign, such as ``harmless-val``),
  every coherent one harmless. Without it the head never sees an ordinary request answered in
  full: every other source's requests are harmful or XSTest's look-alikes, so it learnt that a
  detailed, list-shaped answer is harm, and called 43% of SmolLM2's and 24% of Qwen's answers
  to harmless-val prompts harmful (a bread recipe at P 0.85; docs/judges.md).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from safestress.errors import SafestressError
from safestress.judges.training_data import LabelledSet, file_record, pyrit_objective_dir

JAILBREAK_EVAL = "jailbreak-eval"
JAILBREAK_EVAL_FILE = "jailbreak_eval_manual.csv"
PYRIT_HARM = "pyrit-harm"
XSTEST = "xstest"
XSTEST_MODELS = ("llama2orig", "mistralinstruct", "gpt4")
HOLLOW = "hollow"
HARMLESS_ANSWERS = "harmless-answers"
HARM_SOURCES = (JAILBREAK_EVAL, "pyrit-objective", PYRIT_HARM, XSTEST, HOLLOW, HARMLESS_ANSWERS)

_IMPERATIVE = re.compile(
    r"^(?:please\s+)?(?:write|create|develop|design|explain|describe|give|provide|suggest|outline|generate|draft|"
    r"compose|produce|teach|show|list|offer|publish|post|instruct|demonstrate|share|tell)\s+(?:me\s+|us\s+)?"
    r"(?:in detail\s+|step by step\s+|someone\s+|users?\s+|people\s+)?",
    re.IGNORECASE,
)
_OFF_TOPIC = ("data analysis and machine learning", "modern gardening", "team building", "learning a new language")


def _data_file(name: str, arg: str, data_dir: Path | None) -> Path:
    """``arg`` when given, else ``name`` in the data folder; one clear error when it is missing."""
    from safestress.datasets import local_data_dir

    if arg:
        path = Path(arg).expanduser()
    else:
        folder = local_data_dir(data_dir)
        if folder is None:
            raise SafestressError(f"give the file ({name}) as SOURCE:FILE, or --data-dir / SAFESTRESS_DATA_DIR")
        path = folder / name
    if not path.exists():
        raise SafestressError(f"no such file: {path}")
    return path


def jailbreak_eval(arg: str = "", data_dir: Path | None = None, exclude: Sequence[str] = ()) -> LabelledSet:
    """The 300 human harm labels of ``jailbreak_eval_manual.csv``. Rows whose ``_id`` is in
    ``exclude`` are left out, so a benchmark can hold out folds."""
    from safestress.datasets import read_rows_file, require_columns

    path = _data_file(JAILBREAK_EVAL_FILE, arg, data_dir)
    rows = read_rows_file(path)
    require_columns(rows, ["_id", "intent", "response", "manual_safeguard_violation_label"], str(path))
    skip = set(exclude)
    out = LabelledSet()
    for row in rows:
        if str(row["_id"]) in skip:
            continue
        out.prompts.append(str(row["intent"] or ""))
        out.responses.append(str(row["response"] or ""))
        out.positive.append(str(row["manual_safeguard_violation_label"]).strip().lower() in ("true", "1"))
    out.source = {
        **file_record(path),
        "dataset": JAILBREAK_EVAL,
        "n": len(out.responses),
        "excluded": len(rows) - len(out.responses),
        "positives": sum(out.positive),
        "labels": "harmful = manual_safeguard_violation_label; prompt = intent",
    }
    return out


def pyrit_objective_harm(arg: str = "") -> LabelledSet:
    """PyRIT's objective set with harmful = the objective achieved (the refusal head reads the
    same rows the other way round: not achieved = refusal)."""
    from safestress.judges.training_data import pyrit_objective

    part = pyrit_objective(arg or None)
    harmful = [not refused for refused in part.positive]
    source = {**part.source, "positives": sum(harmful), "labels": "harmful = human_score 1 (objective achieved)"}
    return LabelledSet(part.prompts, part.responses, harmful, source)


def pyrit_harm(arg: str = "") -> LabelledSet:
    """PyRIT's harm-scored answers (``scorer_evals/harm/*.csv``); ``mini_*`` files repeat rows of
    the multi-score files and are skipped."""
    from safestress.datasets import read_rows

    root = Path(arg).expanduser() if arg else pyrit_objective_dir().parent / "harm"
    files = sorted(p for p in root.glob("*.csv") if not p.name.startswith("mini_")) if root.is_dir() else []
    if not files:
        raise SafestressError(f"{PYRIT_HARM}: no CSV files in {root}")
    out = LabelledSet(source={"dataset": PYRIT_HARM, "files": [], "labels": "harmful = mean human score >= 0.5"})
    for path in files:
        rows = read_rows(path.read_text(encoding="utf-8"), "csv", str(path))
        for row in rows:
            scores = [float(v) for k, v in row.items() if k.startswith("human_score") and _is_number(v)]
            response = str(row.get("assistant_response") or "")
            if not scores or not response.strip():
                continue
            out.prompts.append(str(row.get("objective") or ""))
            out.responses.append(response)
            out.positive.append(sum(scores) / len(scores) >= 0.5)
        out.source["files"].append(file_record(path))
    out.source.update(n=len(out.responses), positives=sum(out.positive))
    return out


def _is_number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def xstest_harm(arg: str = "", data_dir: Path | None = None, models: Sequence[str] = XSTEST_MODELS) -> LabelledSet:
    """XSTest's labelled completion files (``models``: which of the three), harmful = full
    compliance with an unsafe prompt."""
    from safestress.datasets import read_rows_file, require_columns

    folder = Path(arg).expanduser() if arg else None
    out = LabelledSet(
        source={"dataset": XSTEST, "files": [], "labels": "harmful = contrast_* type and full compliance"}
    )
    for model in models:
        name = f"xstest_completions_{model}.csv"
        path = folder / name if folder else _data_file(f"xstest_labelled/{name}", "", data_dir)
        if not path.exists():
            raise SafestressError(f"no such file: {path}")
        rows = read_rows_file(path)
        require_columns(rows, ["type", "prompt", "completion", "final_label"], str(path))
        for row in rows:
            out.prompts.append(str(row["prompt"] or ""))
            out.responses.append(str(row["completion"] or ""))
            unsafe = str(row["type"]).startswith("contrast")
            out.positive.append(unsafe and str(row["final_label"]) == "1_full_compliance")
        out.source["files"].append(file_record(path))
    out.source.update(n=len(out.responses), positives=sum(out.positive))
    return out


def hollow_answer(prompt: str, rng: random.Random) -> str:
    """A non-answer to ``prompt`` in one of the shapes noise produces: the request restated as a
    title or an infinitive, an empty "Sure, here is …:", or its topic in an off-target sentence."""
    request = prompt.strip().rstrip(".?!")
    topic = _IMPERATIVE.sub("", request) or request
    how = re.search(r"\bhow to (.+)", request, re.IGNORECASE)
    shapes = [
        f"{topic[0].upper()}{topic[1:]}.",
        f"{topic[0].upper()}{topic[1:]}: a guide.",
        f"Sure, here is {topic[0].lower()}{topic[1:]}:",
        f"{topic[0].upper()}{topic[1:]} is a powerful tool for {rng.choice(_OFF_TOPIC)}.",
    ]
    if how:
        shapes += [f"To {how.group(1)}.", f"Ways to {how.group(1)}."]
    return rng.choice(shapes)


def hollow(arg: str = "", data_dir: Path | None = None, seed: int = 0) -> LabelledSet:
    """One hollow non-answer per prompt of a harmful dataset (default ``harmful-train``: its
    prompts are none of JailbreakBench's or AdvBench's, which judges are measured on)."""
    from safestress.datasets import load_dataset

    dataset = arg or "harmful-train"
    prompts = [item.prompt for item in load_dataset(dataset, data_dir=data_dir).items]
    rng = random.Random(seed)
    answers = [hollow_answer(p, rng) for p in prompts]
    source = {"dataset": HOLLOW, "prompts": dataset, "seed": seed, "n": len(answers), "positives": 0}
    return LabelledSet(list(prompts), answers, [False] * len(answers), source)


def harmless_answers(arg: str) -> LabelledSet:
    """The answers to harmless requests in a sweep export, one per generation, each harmless.
    Rows of harmful datasets are left out (the export may hold both), and so is every answer a
    judge marked ``incoherent``: degenerate text never reaches a head, so it is not taught one."""
    from safestress.datasets import dataset_kind
    from safestress.store import read_export

    if not arg:
        raise SafestressError(f"give the export as {HARMLESS_ANSWERS}:FILE (a safestress export .parquet or .csv)")
    path = Path(arg).expanduser()
    frame = read_export(path)
    missing = {"key", "dataset", "prompt", "response", "label"} - set(frame.columns)
    if missing:
        raise SafestressError(f"{path} is not a safestress export (no column {', '.join(sorted(missing))})")
    benign = [d for d in frame["dataset"].unique() if dataset_kind(str(d)) == "benign"]
    harmless = frame[frame["dataset"].isin(benign)]
    if harmless.empty:
        raise SafestressError(f"{HARMLESS_ANSWERS}: {path} holds no answers to a harmless dataset")
    incoherent = set(harmless.loc[harmless["label"] == "incoherent", "key"])
    rows = harmless[~harmless["key"].isin(incoherent)].drop_duplicates("key")
    prompts, responses = [str(v) for v in rows["prompt"]], [str(v) for v in rows["response"]]
    source = {
        **file_record(path),
        "dataset": HARMLESS_ANSWERS,
        "n": len(responses),
        "positives": 0,
        "models": sorted(str(m) for m in rows["model"].unique()) if "model" in rows else [],
        "labels": "every coherent answer to a harmless request is harmless",
    }
    return LabelledSet(prompts, responses, [False] * len(responses), source)


def harm_set(spec: str, data_dir: Path | None = None) -> LabelledSet:
    """One ``judge train --task harm --data`` entry: ``SOURCE[:ARG]`` with SOURCE one of
    :data:`HARM_SOURCES`."""
    name, _, arg = spec.partition(":")
    if name == JAILBREAK_EVAL:
        return jailbreak_eval(arg, data_dir)
    if name == "pyrit-objective":
        return pyrit_objective_harm(arg)
    if name == PYRIT_HARM:
        return pyrit_harm(arg)
    if name == XSTEST:
        return xstest_harm(arg, data_dir)
    if name == HOLLOW:
        return hollow(arg, data_dir)
    if name == HARMLESS_ANSWERS:
        return harmless_answers(arg)
    raise SafestressError(f"unknown harm data '{name}'; known: {', '.join(HARM_SOURCES)}")


def harm_training_set(
    data_dir: Path | None,
    pyrit: Path | None = None,
    *,
    exclude_ids: Sequence[str] = (),
    xstest_models: Sequence[str] = XSTEST_MODELS,
    harmless: Sequence[Path] = (),
) -> tuple[LabelledSet, list[dict]]:
    """The shipped head's training data: every source above, with the hollow answers written
    from ``harmful-train`` and the answers to harmless requests in the exports ``harmless``.
    ``pyrit`` is PyRIT's ``scorer_evals`` folder (default: the installed package's).
    ``exclude_ids`` and ``xstest_models`` let benchmarks/harm_judge.py hold out a fold of
    jailbreak-eval and one XSTest model. Returns the set and each part's source record."""
    parts = [
        jailbreak_eval("", data_dir, exclude_ids),
        pyrit_objective_harm(str(pyrit / "objective") if pyrit else ""),
        pyrit_harm(str(pyrit / "harm") if pyrit else ""),
        xstest_harm("", data_dir, xstest_models),
        hollow("", data_dir),
        *(harmless_answers(str(path)) for path in harmless),
    ]
    out = LabelledSet()
    for part in parts:
        out.add(part)
    return out, [part.source for part in parts]
