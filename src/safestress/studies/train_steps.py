"""Study steps that train models: fine-tuning arms, several runs each.

Why a step and not a script: SSAH's frozen-unit experiment is "fine-tune with SCU (or SCU+CU)
frozen, against nothing frozen and against random units of the same size", and a method trained
once says nothing at the run level. The step trains every arm ``runs`` times with seeds SEED …
SEED+runs−1 through ``safestress finetune``'s own function, each run into its own folder, so a
killed study resumes at the first run not yet published (a run is moved into place whole), and a
later ``sweep`` step evaluates every run with ``models_from``; its page then compares the arms
over runs (report/runs.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.studies.steps import ReportContext, StepContext, fill, option_defaults, slug

# settings the step itself reads; every other one is an option of ``safestress finetune``
_OWN = ("dataset", "response", "limit", "arms", "runs")
# options the step sets for each run, not the study file
_SET_PER_RUN = ("model", "out", "data", "prompt_col", "response_col", "runs", "freeze", "train_only", "random_control")


def run_folder(folder: Path, model: str, arm: str, seed: int) -> Path:
    """Where one run of one arm is published; the name is unique across base models, because
    the store names a local model by its folder."""
    return folder / f"{slug(model)}-{arm}-s{seed}"


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
    path = ctx.folder / "pairs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "response"])
        writer.writerows([i.prompt, i.meta[response]] for i in items)
    return path, len(items)


class FinetuneStep:
    """Fine-tune each model once per arm and run (``safestress finetune`` into the step's folder).

    Settings: ``dataset`` and ``response`` (the item field trained on, e.g. AdvBench's ``target``),
    ``limit``, ``runs``, ``arms`` (each ``name`` plus ``freeze`` or ``train_only`` classes,
    ``random_control`` and its own ``runs``; an arm with neither trains every weight), and any
    ``safestress finetune`` option
    (``units``, ``steps``, ``lr``, ``batch_size``, ``max_length``, ``seed``)."""

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from safestress.train.cli import finetune_command

        s = dict(ctx.step.settings)
        own = {k: s.pop(k) for k in _OWN if k in s}
        declared = option_defaults(finetune_command)
        known = [k for k in declared if k not in _SET_PER_RUN]
        unknown = sorted(set(s) - set(known))
        if unknown or "dataset" not in own or "response" not in own:
            what = f"unknown setting {', '.join(unknown)}" if unknown else "needs 'dataset' and 'response'"
            raise SafestressError(f"step '{ctx.step.name}': {what}; known: {', '.join([*_OWN, *known])}")
        pairs, n = write_pairs(ctx, own["dataset"], own["response"], own.get("limit"))
        arms = own.get("arms") or [{"name": "all"}]
        seed0 = int(s.pop("seed", declared["seed"]))
        made: dict[str, dict[str, list[str]]] = {}
        for model in ctx.models:
            for arm in arms:
                arm = dict(arm)
                name = str(arm.pop("name"))
                settings = fill({**declared, **s}, ctx.needs, model)
                if "freeze" not in arm and "train_only" not in arm:  # this arm trains every weight: no unit map
                    settings["units"] = None
                runs = int(arm.pop("runs", own.get("runs", 1)))  # an arm may have its own count
                for seed in range(seed0, seed0 + runs):
                    out = run_folder(ctx.folder, model, name, seed)
                    if not out.is_dir():  # a run is published whole, so a folder is a finished run
                        ctx.log(f"  {slug(model)}: arm {name}, seed {seed}")
                        per_run = {"model": model, "out": out, "data": str(pairs), "seed": seed, "runs": 1}
                        finetune_command(
                            **{**settings, **arm, **per_run, "prompt_col": "prompt", "response_col": "response"}
                        )
                    made.setdefault(slug(model), {}).setdefault(name, []).append(str(out))
        (ctx.folder / "models.json").write_text(json.dumps(made, indent=1) + "\n")
        return {"models": made, "dataset": own["dataset"], "pairs": n}

    def report(self, ctx: ReportContext) -> str:
        lines = [
            f"Trained on {ctx.record['pairs']} pairs of `{ctx.record['dataset']}`; each arm's runs differ by seed.",
            "",
            "| model | arm | runs | weights held % | training loss per run |",
            "|---|---|---|---|---|",
        ]
        for model, arms in ctx.record["models"].items():
            for arm, folders in arms.items():
                runs = [json.loads((Path(f) / "finetune.json").read_text()) for f in folders]
                frozen = runs[0].get("frozen")
                share = "—" if not frozen else f"{100 * frozen['share_of_parameters']:.1f}"
                losses = ", ".join(f"{r['train_loss']:.3f}" for r in runs)
                lines.append(f"| {model} | {arm} | {len(runs)} | {share} | {losses} |")
        return "\n".join(lines) + "\n"
