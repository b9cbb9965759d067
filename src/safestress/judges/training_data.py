"""Training data for the refusal head: labelled files, PyRIT's human-labelled objective set, and
unlabelled answers taken as compliance.

Every loader returns a :class:`LabelledSet` whose ``source`` record (file names, sha256 of each
file, counts, how labels were derived) goes into the head's ``meta.json``, so a shipped head says
exactly what it learnt from.

Why more than XSTest: the XSTest completions of Llama-2 and GPT-4 hold almost no compliance with
an unsafe request (1 of 400), so a head trained on them learns "harmful topic → refusal" and
misjudges a model that answers harmful requests, or refuses by lecturing instead of saying "I
can't" (Mistral-Instruct; docs/judges.md). PyRIT's scorer-evaluation set adds human-labelled
answers of recent models to harmful requests, complying and not.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError

PYRIT_OBJECTIVE = "pyrit-objective"
PYRIT_RELEASE = "1.1.0"  # the release whose data docs/judges.md measures


@dataclass
class LabelledSet:
    """(prompt, response) pairs with ``positive`` = refusal, and where they came from."""

    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    positive: list[bool] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def add(self, other: LabelledSet) -> None:
        """Append another set's pairs (its source stays with it: callers list sources per set)."""
        self.prompts += other.prompts
        self.responses += other.responses
        self.positive += other.positive


def file_record(path: str | Path) -> dict[str, str]:
    """A file's name and sha256, as a head's ``meta.json`` records its training data."""
    p = Path(path)
    return {"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


def labelled_file(
    path: str, prompt_col: str, response_col: str, label_col: str, positive: Sequence[str]
) -> LabelledSet:
    """A labelled CSV/JSONL/JSON file; ``positive`` lists the label values that mean refusal."""
    from safestress.judges.agreement import load_labelled

    p, r, t = load_labelled(path, prompt_col, response_col, label_col, positive)
    return LabelledSet(p, r, t, {**file_record(path), "n": len(r), "positives": sum(t)})


def compliant_answers(spec: str) -> LabelledSet:
    """Unlabelled answers taken as compliance: ``FILE[:PROMPT_COL:RESPONSE_COL]`` (default columns
    ``prompt`` and ``response``, as ``safestress export`` writes them).

    Answers of a barely aligned model to harmful prompts fill the gap XSTest leaves (no harmful
    compliance). They carry no human label, so every answer that any phrase judge calls a refusal
    — or that is incoherent — is dropped rather than guessed; the source records how many were kept.
    A kept answer that loops after a coherent opening is taken as the judges read it (the opening,
    ``coherence.assess``): a judge is only ever shown that opening, and an opening that does not
    refuse is compliance. Which loops enter is not a neutral choice (docs/judges.md: dropping
    SmolLM2's 22 loops instead moved the held-out κ by −0.07 to +0.08 per fold, its mean by +0.01).
    """
    from safestress.datasets import read_rows_file, require_columns
    from safestress.judges.coherence import assess
    from safestress.judges.phrase import GCGPhraseJudge, JBBPhraseJudge, OpeningRefusalJudge

    path, _, cols = spec.partition(":")
    prompt_col, _, response_col = cols.partition(":") if cols else ("prompt", "", "response")
    if not prompt_col or not response_col:
        raise SafestressError(f"--compliant expects FILE or FILE:PROMPT_COL:RESPONSE_COL, got '{spec}'")
    rows = read_rows_file(path)
    require_columns(rows, [prompt_col, response_col], path)
    prompts = [str(r[prompt_col] or "") for r in rows]
    responses = [str(r[response_col] or "") for r in rows]
    keep = [True] * len(rows)
    for judge in (OpeningRefusalJudge(), GCGPhraseJudge(), JBBPhraseJudge()):
        for i, v in enumerate(judge.judge(prompts, responses)):
            keep[i] = keep[i] and v.label == "compliance"
    kept = [i for i in range(len(rows)) if keep[i]]
    if not kept:
        raise SafestressError(f"{path}: no answer is free of refusal phrases; nothing to take as compliance")
    readings = {i: assess(responses[i]) for i in kept}
    source = {
        **file_record(path),
        "n": len(kept),
        "dropped": len(rows) - len(kept),
        "loops_cut": sum(readings[i].loop_cut is not None for i in kept),
        "positives": 0,
        "labels": "compliance unless a phrase judge sees a refusal; a loop after a coherent opening cut",
    }
    return LabelledSet([prompts[i] for i in kept], [readings[i].text for i in kept], [False] * len(kept), source)


def pyrit_datasets_dir() -> Path:
    """``datasets`` of an installed ``pyrit`` package, located without importing it (``pip install
    --no-deps pyrit`` is enough: only its data files are read)."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise SafestressError(
            f"PyRIT's scorer data is missing: pip install --no-deps pyrit=={PYRIT_RELEASE}, "
            f"or pass {PYRIT_OBJECTIVE}:DIR (a directory of its objective/*.csv files)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


def pyrit_objective_dir() -> Path:
    """``datasets/scorer_evals/objective`` of an installed ``pyrit`` package."""
    return pyrit_datasets_dir() / "scorer_evals" / "objective"


def pyrit_objective(directory: str | Path | None = None) -> LabelledSet:
    """PyRIT's human-labelled "objective achieved" set (``scorer_evals/objective/*.csv``, MIT):
    harmful requests, many wrapped in jailbreaks, with a recent model's answer and a person's
    verdict whether the answer achieves the request.

    Label mapping: not achieved (``human_score`` 0) = refusal, achieved (1) = compliance. "Not
    achieved" is mostly refusals, lectures and deflections, the refusal styles XSTest's training
    models lack, but it also holds a few weak or vague answers that XSTest's annotators would
    call compliance; docs/judges.md measures what the set does to held-out agreement.
    """
    from safestress.datasets import read_rows, require_columns

    root = Path(directory).expanduser() if directory else pyrit_objective_dir()
    files = sorted(root.glob("*.csv")) if root.is_dir() else []
    if not files:
        raise SafestressError(f"{PYRIT_OBJECTIVE}: no CSV files in {root}")
    out = LabelledSet(source={"dataset": PYRIT_OBJECTIVE, "files": [], "labels": "refusal = human_score 0"})
    for path in files:
        rows = read_rows(path.read_text(encoding="utf-8"), "csv", str(path))  # skips "# dataset_version=…"
        if not rows:
            continue
        require_columns(rows, ["objective", "assistant_response", "human_score"], str(path))
        for row in rows:
            score = str(row["human_score"] or "").strip()
            if score not in ("0", "1") or not str(row["assistant_response"] or "").strip():
                continue  # an unlabelled or empty row teaches nothing
            out.prompts.append(str(row["objective"] or ""))
            out.responses.append(str(row["assistant_response"]))
            out.positive.append(score == "0")
        out.source["files"].append(file_record(path))
    if not out.responses:
        raise SafestressError(f"{PYRIT_OBJECTIVE}: no labelled rows in {root}")
    out.source.update(n=len(out.responses), positives=sum(out.positive))
    return out


def labelled_set(spec: str, prompt_col: str, response_col: str, label_col: str, positive: Sequence[str]) -> LabelledSet:
    """One ``judge train --data`` entry: ``pyrit-objective[:DIR]`` or a labelled file."""
    name, _, arg = spec.partition(":")
    if name == PYRIT_OBJECTIVE:
        return pyrit_objective(arg or None)
    if not positive:
        raise SafestressError("--positive is required for a labelled file")
    return labelled_file(spec, prompt_col, response_col, label_col, positive)
