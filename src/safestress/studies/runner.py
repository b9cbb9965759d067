"""Run a study's steps in order into one folder, skipping what is finished.

The folder holds ``study.json`` (which study, scale and models), ``study.db`` (every generation of
every step, keyed by content) and ``steps/NAME-KEY/`` per step. A step's key is the hash of the
study, the step's settings at the scale, the models' identities, the contents of the data it
reads (:func:`step_data`, its kind's default datasets included) and the keys of the steps it
needs, so a finished step (its ``done.json`` written last, atomically) is found again by a rerun
and skipped, and a changed input gets a new folder instead of overwriting an old result. A study
killed inside a step reruns that step: a sweep resumes from its stored rows, other work restarts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.store import content_hash
from safestress.studies.spec import StepSpec, StudySpec


@dataclass
class StepOutcome:
    name: str
    folder: Path
    skipped: bool
    seconds: float


def model_identities(study: StudySpec, models: list[str]) -> list[dict[str, Any]]:
    """What identifies each model in step keys (a file's digest, a hub id's revision), read
    without weights; a model that lacks what the study requires is refused here, before any step."""
    from safestress.models import load_model

    if not models:
        raise SafestressError("no model given; use --model (repeatable)")
    out = []
    for spec in models:
        try:
            lm = load_model(spec, weights=False, template="chat" if "chat" in study.requires else "raw")
        except SafestressError as exc:
            raise SafestressError(f"cannot run study '{study.name}': {exc}") from None
        out.append(lm.identity)
    return out


# settings whose values name data a step reads: datasets, "ppl" a perplexity corpus, "calib" a
# perturbation's calibration prompts (CATS, SmoothQuant, OmniQuant; its default where unnamed)
DATA_SETTINGS = ("dataset", "harmful", "benign", "ppl", "calib")


def _perturbation_data(part: dict[str, Any]) -> dict[str, Any]:
    """The calibration set of the perturbation a step (or variant) names, where it has one."""
    from safestress.perturb import PERTURBATIONS

    name = part.get("perturb")
    if not isinstance(name, str) or name not in PERTURBATIONS:
        return {}
    params = getattr(PERTURBATIONS.get(name), "Params", None)
    calib = params.model_fields.get("calib") if params is not None else None
    return {"calib": calib.default} if calib is not None else {}


def step_data(step: StepSpec, data_dir: str | None = None) -> dict[str, str]:
    """Each dataset or corpus the step reads (its settings, its variants', else its kind's
    ``data_defaults``) → a digest of its contents. Datasets are read here, before the step runs,
    so a missing file is refused before any work."""
    import hashlib

    from safestress.datasets import content_digest
    from safestress.studies import STEPS
    from safestress.utility import load_corpus

    kind = STEPS.get(step.kind)
    settings = {**getattr(kind, "data_defaults", dict)(), **step.settings}
    named: list[tuple[str, Any]] = []
    for part in [settings, *({**settings, **v} for v in settings.get("variants") or [])]:
        part = {**_perturbation_data(part), **part.get("params", {}), **part}
        for key in DATA_SETTINGS:
            values = part.get(key)
            for value in values if isinstance(values, list) else [values]:
                if value is not None and (key, value) not in named:
                    named.append((key, value))
    where = Path(data_dir) if data_dir else None
    out = {}
    for key, value in named:
        label = f"{key}:{json.dumps(value, sort_keys=True) if isinstance(value, dict) else value}"
        if key == "ppl":
            out[label] = hashlib.sha256(load_corpus(str(value)).encode()).hexdigest()[:16]
        else:
            out[label] = content_digest(value, where)
    return out


def step_key(
    study: StudySpec,
    step: StepSpec,
    scale: str,
    identities: list[dict[str, Any]],
    needs: list[str],
    data: dict[str, str] | None = None,
) -> str:
    return content_hash(
        {
            "study": study.name,
            "seed": study.seed,
            "scale": scale,
            "step": step.model_dump(by_alias=True),
            "models": identities,
            "data": data or {},
            "needs": needs,
        }
    )


def check_redo(study: StudySpec, redo: frozenset[str]) -> None:
    """Refuse ``--redo`` of a step the study does not have."""
    names = [s.name for s in study.steps]
    unknown = sorted(redo - set(names))
    if unknown:
        raise SafestressError(f"study '{study.name}' has no step {', '.join(unknown)}; its steps: {', '.join(names)}")


def check_folder(out: Path, study: StudySpec) -> None:
    """Refuse a folder that is a file or holds another study, before anything is written."""
    if out.exists() and not out.is_dir():
        raise SafestressError(f"{out} exists and is not a folder")
    if (out / "study.json").is_file():
        held = read_folder(out)
        if held.get("study") != study.name:
            raise SafestressError(f"{out} holds study '{held.get('study')}'; give another --out for '{study.name}'")


def open_folder(out: Path, study: StudySpec, scale: str, models: list[str], names: list[str]) -> dict[str, Any]:
    """Create the study folder, or check that an existing one holds this study; returns the
    record ``study.json`` will hold (the step folders of this run are added as they finish)."""
    check_folder(out, study)
    meta = out / "study.json"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "study": study.name,
        "scale": scale,
        "models": models,
        "names": names,
        "spec": study.model_dump(mode="json", by_alias=True),
        "steps": {},
    }
    _write_json(meta, record)
    return record


def _write_json(path: Path, data: Any) -> None:
    """Write beside, then rename: a kill never leaves half a record that a rerun would trust."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def run_study(
    study: StudySpec,
    models: list[str],
    out: Path,
    scale: str,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    data_dir: str | None = None,
    identities: list[dict[str, Any]] | None = None,
    redo: frozenset[str] = frozenset(),
    drop_weights: bool = False,
) -> list[StepOutcome]:
    """Run every unfinished step of ``study`` at ``scale`` on ``models`` into ``out``
    (``identities``: :func:`model_identities` of ``models``, when the caller checked them first).
    Steps named in ``redo`` run again although finished, from an empty folder (the old one is
    renamed, not deleted), e.g. after a change the key cannot see (a judge's code, a library).
    ``drop_weights``: delete a training step's weights once every step that needs it has finished
    (:func:`drop_spent_weights`), so a study keeps one training step's runs on disk at a time."""
    from safestress.studies import STEPS

    study.check(STEPS.names())
    steps = study.steps_at(scale)
    check_redo(study, redo)
    identities = identities if identities is not None else model_identities(study, models)
    meta = open_folder(out, study, scale, models, [str(i["model"]) for i in identities])
    keys: dict[str, str] = {}
    folders: dict[str, Path] = {}
    outcomes = []
    for step in steps:
        key = step_key(study, step, scale, identities, [keys[n] for n in step.needs], step_data(step, data_dir))
        keys[step.name] = key
        folder = out / "steps" / f"{step.name}-{key[:10]}"
        folders[step.name] = folder
        done = folder / "done.json"
        if done.is_file() and step.name not in redo:
            log(f"step {step.name}: finished before, skipped")
            outcomes.append(StepOutcome(step.name, folder, True, 0.0))
            meta["steps"][step.name] = folder.name
            _write_json(out / "study.json", meta)
            continue
        if step.name in redo and folder.exists():
            # what the step made before (trained models above all) is kept beside, never reused
            aside = folder.with_name(f"{folder.name}.before-{time.strftime('%Y%m%dT%H%M%S')}")
            folder.rename(aside)
            log(f"step {step.name}: its earlier output moved to {aside.name}")
        folder.mkdir(parents=True, exist_ok=True)
        log(f"step {step.name} ({step.kind})")
        t0 = time.perf_counter()
        from safestress.studies.steps import StepContext

        ctx = StepContext(
            step=step,
            models=models,
            folder=folder,
            store=out / "study.db",
            needs={n: folders[n] for n in step.needs},
            seed=study.seed,
            log=log,
            progress=progress,
            data_dir=data_dir,
        )
        record = STEPS.get(step.kind)().run(ctx)
        seconds = round(time.perf_counter() - t0, 1)
        _write_json(done, {"key": key, "kind": step.kind, "seconds": seconds, "record": record})
        meta["steps"][step.name] = folder.name
        _write_json(out / "study.json", meta)
        log(f"step {step.name}: done in {seconds} s")
        outcomes.append(StepOutcome(step.name, folder, False, seconds))
        if drop_weights:
            drop_spent_weights(steps, folders, log)
    if drop_weights:  # also what a finished study left: a rerun with the option frees it
        drop_spent_weights(steps, folders, log)
    return outcomes


# files that hold a run's weights; its config, tokenizer and training record stay
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth")


def drop_spent_weights(steps: tuple[StepSpec, ...] | list[StepSpec], folders: dict[str, Path], log: Callable) -> None:
    """Delete the weights of every training step's runs once each step that needs that training step
    has finished: what they were made for is then in the store and the records. Each run keeps
    its config, tokenizer and training record, and ``weights-dropped.json`` lists what went and its
    size; a later step that wants the weights again says so in one line (``--redo`` the training)."""
    from safestress.studies.steps import DROPPED

    for step in steps:
        folder = folders.get(step.name)
        listing = folder / "models.json" if folder else None
        if listing is None or not listing.is_file() or not (folder / "done.json").is_file():
            continue  # not a training step, or not finished
        readers = [s.name for s in steps if step.name in s.needs]
        if not readers or not all((folders.get(r, Path("-")) / "done.json").is_file() for r in readers):
            continue
        freed = 0
        for run in sorted(p for p in folder.iterdir() if p.is_dir() and not (p / DROPPED).is_file()):
            files = sorted(f for pattern in _WEIGHTS for f in run.glob(pattern))
            if not files:
                continue
            sizes = {f.name: f.stat().st_size for f in files}
            _write_json(run / DROPPED, {"files": sizes, "after": readers})
            for f in files:
                f.unlink()
            freed += sum(sizes.values())
        if freed:
            log(
                f"step {step.name}: weights of its runs dropped ({freed / 1024**3:.1f} GB); "
                "every step that needs them is done"
            )


def read_folder(out: Path) -> dict[str, Any]:
    """``study.json`` of a study folder."""
    meta = out / "study.json"
    if not meta.is_file():
        raise SafestressError(f"{out} holds no study (no study.json); run 'safestress study run' first")
    try:
        held = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise SafestressError(f"cannot read {meta}: {exc}") from None
    if not isinstance(held, dict) or "study" not in held:
        raise SafestressError(f"{meta} is not a study record")
    return held


def finished_steps(out: Path, study: StudySpec) -> list[tuple[StepSpec, Path, dict[str, Any]]]:
    """The steps of the last run in ``out`` that finished, in study order, with their records."""
    held = read_folder(out)
    found = []
    for step in study.steps_at(held["scale"]):
        folder = out / "steps" / held.get("steps", {}).get(step.name, "-")
        if (folder / "done.json").is_file():
            found.append((step, folder, json.loads((folder / "done.json").read_text())["record"]))
    return found
