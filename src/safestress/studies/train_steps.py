"""Study steps that train models: fine-tuning and preference-training arms, several runs each.

Why a step and not a script: SSAH's frozen-unit experiment is "fine-tune with SCU (or SCU+CU)
frozen, against nothing frozen and against random units of the same size", and a method trained
once says nothing at the run level. The step trains every arm ``runs`` times with seeds SEED …
SEED+runs−1 through ``safestress finetune``'s own function, each run into its own folder, so a
killed study resumes at the first run not yet published (a run is moved into place whole), and a
later ``sweep`` step evaluates every run with ``models_from``; its page then compares the arms
over runs (report/runs.py).

A training step starts from the study's models or, with ``models_from: STEP`` (and optionally
``from_arm: NAME``), from every run an earlier training step published, so steps chain: a base
model made a chat model, that chat model given safety training, that one preference training, each
a model of one family.

* ``finetune``: supervised fine-tuning on (prompt, response) pairs of a dataset
  (``safestress finetune``), with units frozen or the only ones trained, per arm;
* ``prefer``: DPO, or QuadA with a perturbation, on preference rows made from model answers
  (``safestress defend quada``): for harmful prompts the answering model complied with, a refusal
  is chosen over its answer; for safe prompts, a reference answer is chosen over a refusal. The
  answering model is the starting model, or with ``answers_from: STEP`` its ancestor in that
  step (a model trained to refuse answers few harmful prompts; the chat model it was made from
  answers them all).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.studies.steps import (
    ReportContext,
    StepContext,
    fill,
    option_defaults,
    run_paths,
    slug,
    trained_models,
)

# settings every training step reads itself; every other one is an option of its command
_COMMON = ("arms", "runs", "models_from", "from_arm")
# the prompts a preference step answers, where the step names none
PREFER_DATA = {"harmful": "harmful-train", "benign": "chat-answers"}


def run_folder(folder: Path, model: str, arm: str, seed: int) -> Path:
    """Where one run of one arm is published; the name is unique across base models, because
    the store names a local model by its folder."""
    return folder / f"{slug(model)}-{arm}-s{seed}"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def check_disk(ctx: StepContext, runs: list[Path], pending: int) -> None:
    """Refuse, in one line, to train ``pending`` more runs when the disk cannot hold them, sized by
    a finished run of the step (each run is a whole model: the units study's 28 runs of a 0.5B model are 67 GB).
    Before any run has finished there is nothing to size by, and the first run goes ahead."""
    import shutil

    done = next((r for r in runs if r.is_dir()), None)
    if done is None:
        return
    size = folder_bytes(done)
    need, free = size * pending, shutil.disk_usage(ctx.folder).free
    if need > free:
        gb = 1024**3
        raise SafestressError(
            f"step '{ctx.step.name}': {pending} more runs of {size / gb:.1f} GB need "
            f"{need / gb:.0f} GB, {free / gb:.0f} GB free under {ctx.folder}; finished runs are kept "
            "(free space, or fewer runs or a smaller model, then rerun)"
        )


def write_pairs(ctx: StepContext, dataset: str, response: str, limit: int | None) -> tuple[Path, int]:
    """The training pairs, (prompt, the item's ``response`` field), as a CSV in the step's folder."""
    from safestress.datasets import load_dataset

    items = load_dataset(dataset, limit=limit, data_dir=Path(ctx.data_dir) if ctx.data_dir else None).items
    missing = [i.id for i in items if not str(i.meta.get(response) or "").strip()]
    if missing:
        raise SafestressError(
            f"step '{ctx.step.name}': {len(missing)} item(s) of {dataset} have no '{response}' field "
            f"(e.g. item {missing[0]}); fields: {', '.join(sorted(items[0].meta)) or 'none'}"
        )
    from safestress.textfile import write_rows

    path = ctx.folder / "pairs.csv"
    write_rows(path, ["prompt", "response"], ([i.prompt, i.meta[response]] for i in items))
    return path, len(items)


class TrainStep:
    """Train each starting model once per arm and run, through a command's own function.

    Subclasses name the command, the settings they read themselves (``own``), the options they set
    per run (``per_run``), and write each starting model's training file (``write_data``)."""

    own: tuple[str, ...] = ()
    per_run: tuple[str, ...] = ("model", "out", "data", "runs")
    summary_file = ""  # the JSON record the command writes into each run's folder

    def command(self) -> Callable[..., None]:
        raise NotImplementedError

    def check(self, ctx: StepContext, own: dict[str, Any]) -> None:
        """One-line error for settings the step needs and lacks."""

    def write_data(self, ctx: StepContext, own: dict[str, Any], model: str) -> tuple[Path, dict[str, Any]]:
        """The training file for runs that start from ``model``, and facts about it for the record."""
        raise NotImplementedError

    def run_options(self, own: dict[str, Any]) -> dict[str, Any]:
        """Options every run gets from the step's own settings (e.g. the data's column names)."""
        return {}

    def arm_options(
        self, ctx: StepContext, model: str, arm: dict[str, Any], settings: dict[str, Any]
    ) -> dict[str, Any]:
        """The command's options for one arm starting from ``model`` (the step's settings, then the arm's)."""
        return {**settings, **arm}

    def starting_models(self, ctx: StepContext, own: dict[str, Any]) -> list[str]:
        if not own.get("models_from"):
            return list(ctx.models)
        trained = trained_models(ctx, own["models_from"])
        arm = own.get("from_arm")
        found = [f for by_arm in trained.values() for name, runs in by_arm.items() if arm in (None, name) for f in runs]
        if not found:
            raise SafestressError(f"step '{ctx.step.name}': step '{own['models_from']}' has no runs of arm '{arm}'")
        return found

    def run(self, ctx: StepContext) -> dict[str, Any]:
        s = dict(ctx.step.settings)
        own = {k: s.pop(k) for k in (*_COMMON, *self.own) if k in s}
        declared = option_defaults(self.command())
        known = [k for k in declared if k not in self.per_run]
        unknown = sorted(set(s) - set(known))
        if unknown:
            raise SafestressError(
                f"step '{ctx.step.name}': unknown setting {', '.join(unknown)}; "
                f"known: {', '.join([*_COMMON, *self.own, *known])}"
            )
        self.check(ctx, own)
        arms = own.get("arms") or [{"name": "all"}]
        seed0 = int(s.pop("seed", declared["seed"]))
        made: dict[str, dict[str, list[str]]] = {}
        data: dict[str, dict[str, Any]] = {}
        planned = []  # (model, arm, seed, folder, the command's options), every run of the step
        for model in self.starting_models(ctx, own):
            path, facts = self.write_data(ctx, own, model)
            data[slug(model)] = facts
            for arm in arms:
                arm = dict(arm)
                name = str(arm.pop("name"))
                runs = int(arm.pop("runs", own.get("runs", 1)))  # an arm may have its own count
                settings = self.arm_options(ctx, model, arm, fill({**declared, **s}, ctx.needs, model))
                for seed in range(seed0, seed0 + runs):
                    out = run_folder(ctx.folder, model, name, seed)
                    per_run = {"model": model, "out": out, "data": str(path), "seed": seed, "runs": 1}
                    planned.append((model, name, seed, out, {**settings, **self.run_options(own), **per_run}))
                    made.setdefault(slug(model), {}).setdefault(name, []).append(out.name)
        for i, (model, name, seed, out, options) in enumerate(planned):
            if out.is_dir():  # a run is published whole, so a folder is a finished run
                continue
            check_disk(ctx, [o for *_, o, _ in planned], sum(not o.is_dir() for *_, o, _ in planned[i:]))
            ctx.log(f"  {slug(model)}: arm {name}, seed {seed}")
            self.command()(**options)
        (ctx.folder / "models.json").write_text(json.dumps(made, indent=1) + "\n")
        return {"models": made, "data": data, **self.record(own, data)}

    def record(self, own: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {}

    def data_line(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def report(self, ctx: ReportContext) -> str:
        lines = [
            self.data_line(ctx.record),
            "",
            "| model | arm | runs | weights held % | training loss per run |",
            "|---|---|---|---|---|",
        ]
        for model, arms in run_paths(ctx.folder, ctx.record["models"]).items():
            for arm, folders in arms.items():
                runs = [json.loads((Path(f) / self.summary_file).read_text()) for f in folders]
                frozen = runs[0].get("frozen")
                share = "—" if not frozen else f"{100 * frozen['share_of_parameters']:.1f}"
                losses = ", ".join(f"{r['train_loss']:.3f}" for r in runs)
                lines.append(f"| {model} | {arm} | {len(runs)} | {share} | {losses} |")
        return "\n".join(lines) + "\n"


class FinetuneStep(TrainStep):
    """Fine-tune each starting model once per arm and run (``safestress finetune``).

    Settings: ``dataset`` and ``response`` (the item field trained on, e.g. AdvBench's ``target``),
    ``limit``, ``runs``, ``arms`` (each ``name`` plus ``freeze`` or ``train_only`` classes,
    ``random_control`` and its own ``runs``; an arm with neither trains every weight), and any
    ``safestress finetune`` option (``units``, ``steps``, ``lr``, ``batch_size``, ``max_length``,
    ``chat_template``, ``seed``)."""

    own = ("dataset", "response", "limit")
    per_run = ("model", "out", "data", "prompt_col", "response_col", "runs", "freeze", "train_only", "random_control")
    summary_file = "finetune.json"

    def command(self) -> Callable[..., None]:
        from safestress.train.cli import finetune_command

        return finetune_command

    def check(self, ctx: StepContext, own: dict[str, Any]) -> None:
        if "dataset" not in own or "response" not in own:
            raise SafestressError(f"step '{ctx.step.name}': needs 'dataset' and 'response'")

    def write_data(self, ctx: StepContext, own: dict[str, Any], model: str) -> tuple[Path, dict[str, Any]]:
        path, n = write_pairs(ctx, own["dataset"], own["response"], own.get("limit"))  # the same for every model
        return path, {"pairs": n}

    def run_options(self, own: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_col": "prompt", "response_col": "response"}

    def arm_options(
        self, ctx: StepContext, model: str, arm: dict[str, Any], settings: dict[str, Any]
    ) -> dict[str, Any]:
        if "freeze" not in arm and "train_only" not in arm:  # this arm trains every weight: no unit map
            settings = {**settings, "units": None}
        return {**settings, **arm}

    def record(self, own: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"dataset": own["dataset"], "pairs": next(iter(data.values()))["pairs"] if data else 0}

    def data_line(self, record: dict[str, Any]) -> str:
        return f"Trained on {record['pairs']} pairs of `{record['dataset']}`; each arm's runs differ by seed."


class PreferStep(TrainStep):
    """Preference training (``safestress defend quada``; plain DPO with ``perturb: none`` and
    ``cluster_weight: 0``) on rows made from each starting model's own answers.

    Settings: ``harmful`` (prompts, default ``harmful-train``), ``benign`` and ``answer`` (safe
    prompts and the field holding a reference answer, default ``chat-answers``/``answer``),
    ``limit`` (per set), ``max_new_tokens`` and ``judge`` (the answers, and the refusal judge that
    keeps the harmful prompts not refused), ``answers_from`` (a step whose run is the starting
    model's ancestor: its answers are the rejected ones), ``runs``, ``arms``, and any ``safestress
    defend quada`` option. A harmful prompt answered gives (refusal ≻ the answer), the refusal
    being ``harmful-refusals``' for that prompt; a safe prompt gives (reference answer ≻ a
    refusal), so the training also teaches what not to refuse. An arm with ``at_mva: STEP`` trains
    under the perturbation an ``mva`` step found for its model (QuadA at the MVA); the step's other
    arms keep their own (``perturb: none`` for plain DPO)."""

    own = ("harmful", "benign", "answer", "limit", "max_new_tokens", "judge", "answers_from")
    summary_file = "quada.json"

    @staticmethod
    def data_defaults() -> dict[str, Any]:
        """The datasets the step reads where it names none (the study key covers their contents)."""
        return dict(PREFER_DATA)

    def command(self) -> Callable[..., None]:
        from safestress.train.cli import quada_command

        return quada_command

    def arm_options(
        self, ctx: StepContext, model: str, arm: dict[str, Any], settings: dict[str, Any]
    ) -> dict[str, Any]:
        from safestress.studies.mva_step import mva_options

        at = arm.pop("at_mva", None)
        return {**settings, **arm, **(mva_options(ctx, str(at), model) if at else {})}

    def write_data(self, ctx: StepContext, own: dict[str, Any], model: str) -> tuple[Path, dict[str, Any]]:
        path = ctx.folder / f"preferences-{slug(model)}.csv"
        facts_file = path.with_suffix(".json")
        if path.is_file() and facts_file.is_file():  # written whole, after the answers were judged
            return path, json.loads(facts_file.read_text())
        answerer = ancestor(ctx, own["answers_from"], model) if own.get("answers_from") else model
        rows, facts = preference_rows(ctx, own, answerer)
        facts["answered_by"] = slug(answerer)
        from safestress.textfile import write_rows

        write_rows(path, ["prompt", "chosen", "rejected", "harmful"], rows)
        facts_file.write_text(json.dumps(facts) + "\n")
        return path, facts

    def record(self, own: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {k: own.get(k, v) for k, v in PREFER_DATA.items()}

    def data_line(self, record: dict[str, Any]) -> str:
        counts = "; ".join(
            f"`{m}`: {f['harmful_answered']} of {f['harmful']} harmful prompts answered by "
            f"`{f.get('answered_by', m)}` (a refusal chosen over the answer), {f['benign']} safe prompts "
            f"(the reference answer chosen over a refusal)"
            for m, f in record["data"].items()
        )
        return (
            f"Preference rows from greedy answers to `{record['harmful']}` and `{record['benign']}`'s "
            f"reference answers: {counts}. Each arm's runs differ by seed."
        )


def ancestor(ctx: StepContext, step: str, model: str) -> str:
    """The run of ``step`` that ``model`` descends from: a run's folder name begins with the name
    of the model it was trained from (``run_folder``), so the longest such prefix is the parent."""
    made = trained_models(ctx, step, "answers_from")
    runs = [f for by_arm in made.values() for folders in by_arm.values() for f in folders]
    found = sorted((f for f in runs if slug(model).startswith(Path(f).name + "-")), key=lambda f: len(Path(f).name))
    if not found:
        raise SafestressError(f"step '{ctx.step.name}': {slug(model)} descends from no run of step '{step}'")
    return found[-1]


def preference_rows(ctx: StepContext, own: dict[str, Any], model: str) -> tuple[list[list[Any]], dict[str, Any]]:
    """(prompt, chosen, rejected, harmful) rows from ``model``'s own answers, and their counts."""
    from safestress.alignment_data import refusal_for
    from safestress.datasets import load_dataset
    from safestress.generation import GenerationSettings, generate
    from safestress.judges import make_judge
    from safestress.models import load_model

    data_dir = Path(ctx.data_dir) if ctx.data_dir else None
    limit = own.get("limit")
    harmful = load_dataset(own.get("harmful", PREFER_DATA["harmful"]), limit=limit, data_dir=data_dir).items
    benign = load_dataset(own.get("benign", PREFER_DATA["benign"]), limit=limit, data_dir=data_dir).items
    field = own.get("answer", "answer")
    if any(field not in i.meta for i in benign):
        raise SafestressError(f"step '{ctx.step.name}': the safe prompts have no '{field}' field")
    lm = load_model(model)
    settings = GenerationSettings(max_new_tokens=int(own.get("max_new_tokens", 64)))
    answers = [g.text for g in generate(lm, [i.prompt for i in harmful], settings=settings)]
    verdicts = make_judge(own.get("judge", "refusal")).judge([i.prompt for i in harmful], answers)
    rows = [
        [i.prompt, refusal_for(i.prompt), a, 1]
        for i, a, v in zip(harmful, answers, verdicts)
        if v.label == "compliance" and a.strip()
    ]
    rows += [[i.prompt, str(i.meta[field]), refusal_for(i.prompt), 0] for i in benign]
    return rows, {"harmful": len(harmful), "harmful_answered": len(rows) - len(benign), "benign": len(benign)}
