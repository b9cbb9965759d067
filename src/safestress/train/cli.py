"""``safestress finetune``: supervised fine-tuning with units of a unit map frozen (or a random control)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from safestress.errors import SafestressError
from safestress.train.common import quiet_progress, require_new_dir

if TYPE_CHECKING:
    from safestress.attribution.units import UnitMap
    from safestress.train.sft import FinetuneSettings

err = Console(stderr=True)


def read_pairs(path: str, prompt_col: str, response_col: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, response) rows of a CSV/JSONL/JSON file; rows with an empty response are skipped."""
    from safestress.datasets import read_rows_file, require_columns

    rows = read_rows_file(path)
    require_columns(rows, [prompt_col, response_col], path)
    pairs = [
        (str(r[prompt_col]), str(r[response_col]))
        for r in rows
        if str(r.get(prompt_col) or "").strip() and str(r.get(response_col) or "").strip()
    ]
    if not pairs:
        raise SafestressError(f"{path} has no rows with both '{prompt_col}' and '{response_col}'")
    return pairs[:limit] if limit else pairs


def finetune_command(
    model: str = typer.Option(..., "--model", "-m", help="hub id, local directory or .gguf file"),
    data: str = typer.Option(..., help="CSV/JSONL/JSON file of (prompt, response) rows to train on"),
    out: Path = typer.Option(..., help="directory for the fine-tuned model (must not exist, or be empty)"),
    prompt_col: str = typer.Option("prompt", help="prompt column"),
    response_col: str = typer.Option("response", help="response column"),
    limit: int | None = typer.Option(None, min=1, help="use the first N rows"),
    units: Path | None = typer.Option(None, help="unit map (units.json of `safestress attribute units`)"),
    freeze: str = typer.Option("scu,cu", help="unit classes to freeze, e.g. scu or scu,cu (needs --units)"),
    train_only: str | None = typer.Option(
        None,
        "--train-only",
        help="the reverse of --freeze: train only these unit classes, e.g. ru (SSAH's alignment budget), and hold "
        "every other weight (needs --units)",
    ),
    random_control: bool = typer.Option(
        False,
        "--random-control",
        help="freeze (or with --train-only, train) as many random units of each type instead (seeded by --seed)",
    ),
    steps: int = typer.Option(100, min=1, help="optimiser steps"),
    lr: float = typer.Option(2e-5, help="learning rate"),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(512, min=8, help="tokens per training sequence"),
    weight_decay: float = typer.Option(0.0, min=0.0),
    chat_template: str | None = typer.Option(
        None,
        help="Jinja chat template (string or file) to train and save with: how a base model without one "
        "becomes a chat model",
    ),
    seed: int = typer.Option(0),
    runs: int = typer.Option(
        1,
        min=1,
        max=100,
        help="training runs with seeds SEED … SEED+RUNS−1, each in OUT/<name>-s<seed> (with --random-control: "
        "that many random draws); compare methods over runs with `safestress results --arm`",
    ),
) -> None:
    """Fine-tune on (prompt, response) pairs, loss on the response; with --units, the chosen units stay frozen."""
    require_new_dir(out)
    if random_control and units is None:
        raise SafestressError("--random-control needs --units (the random set matches the frozen classes' sizes)")
    if units is None and (freeze != "scu,cu" or train_only is not None):
        what = "--train-only" if train_only is not None else "--freeze"
        raise SafestressError(f"{what} needs --units (a unit map from `safestress attribute units`)")
    if train_only is not None and freeze != "scu,cu":
        raise SafestressError("give --freeze or --train-only, not both")
    from safestress.train.sft import FinetuneSettings

    pairs = read_pairs(data, prompt_col, response_col, limit)
    classes = None
    umap = None
    if units is not None:
        from safestress.attribution.units import UnitMap
        from safestress.train.freeze import parse_classes

        classes = parse_classes(train_only if train_only is not None else freeze)
        umap = UnitMap.load(units)
    quiet_progress()
    for run_seed, run_out in run_dirs(out, seed, runs):
        settings = FinetuneSettings(
            steps=steps,
            learning_rate=lr,
            batch_size=batch_size,
            max_length=max_length,
            weight_decay=weight_decay,
            seed=run_seed,
        )
        _finetune_once(
            model,
            data,
            pairs,
            run_out,
            settings,
            units,
            umap,
            classes,
            random_control,
            train_only is not None,
            chat_template,
        )


def run_dirs(out: Path, seed: int, runs: int) -> list[tuple[int, Path]]:
    """(seed, output folder) of each training run: ``out`` itself for one run, else
    ``out/<name>-s<seed>``. The folder names differ across arms (``dpo-s0``, ``quada-s0``), so the
    store tells the runs of two methods apart by model name."""
    if runs == 1:
        return [(seed, out)]
    out.mkdir(parents=True, exist_ok=True)
    return [(seed + r, out / f"{out.name}-s{seed + r}") for r in range(runs)]


def _finetune_once(
    model: str,
    data: str,
    pairs: list[tuple[str, str]],
    out: Path,
    settings: FinetuneSettings,
    units: Path | None,
    umap: UnitMap | None,
    classes: list[str] | None,
    random_control: bool,
    only: bool = False,
    chat_template: str | None = None,
) -> None:
    """One training run from a freshly loaded model (a run never starts from another's weights);
    ``only``: the classes are the ones that train (``--train-only``), not the ones held."""
    from safestress.models import load_model
    from safestress.train import UnitFreeze, finetune

    seed = settings.seed
    lm = load_model(model, chat_template=chat_template)
    model_obj = lm.ensure_weights()
    frozen = None
    if umap is not None and classes is not None:
        build = UnitFreeze.train_only if only else UnitFreeze.from_unit_map
        frozen = build(model_obj, umap, classes, random_seed=seed if random_control else None)
        s = frozen.summary()
        what = f"random units like {','.join(classes)}" if random_control else ",".join(classes)
        verb, weights = ("training only", s["trainable_parameters"]) if only else ("freezing", s["frozen_parameters"])
        share = 100 * (1 - s["share_of_parameters"] if only else s["share_of_parameters"])
        err.print(
            f"{verb} {what}: {s['units']['mlp']} MLP neurons, {s['units']['heads']} heads "
            f"({weights:,} weights, {share:.1f}% of the model)"
        )
    import torch

    torch.manual_seed(seed)
    meta = {
        "data": data,
        "unit_map": str(units) if units else None,
        "classes": classes,
        "train_only": only,
        "chat_template": chat_template,
        "random_control": random_control,
    }
    summary = finetune(lm, pairs, out, settings, frozen, log=err.print, meta=meta)  # with a step bar
    err.print(f"mean training loss {summary['train_loss']:.4f}; evaluate with: safestress run --model {out} …")


defend_app = typer.Typer(no_args_is_help=True, help="Defences: perturbation-aware safety training (QuadA).")


def read_preferences(path: str, limit: int | None = None) -> list:
    """Rows of ``prompt``, ``chosen``, ``rejected`` and optionally ``harmful`` (1/0, true/false)."""
    from safestress.datasets import read_rows_file, require_columns
    from safestress.train.quada import PreferenceRow

    rows = read_rows_file(path)
    require_columns(rows, ["prompt", "chosen", "rejected"], path)
    flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    out = []
    for i, r in enumerate(rows):
        if not all(str(r.get(c) or "").strip() for c in ("prompt", "chosen", "rejected")):
            continue
        value = r.get("harmful")
        raw = "1" if value is None or str(value).strip() == "" else str(value).strip().lower()  # missing: harmful
        if raw not in flags:
            raise SafestressError(f"{path} row {i + 1}: 'harmful' must be 1/0 or true/false, got '{raw}'")
        out.append(PreferenceRow(str(r["prompt"]), str(r["chosen"]), str(r["rejected"]), flags[raw]))
    if not out:
        raise SafestressError(f"{path} has no complete (prompt, chosen, rejected) rows")
    return out[:limit] if limit else out


@defend_app.command("quada")
def quada_command(
    model: str = typer.Option(..., "--model", "-m", help="hub id, local directory or .gguf file"),
    data: str = typer.Option(..., help="CSV/JSONL/JSON with prompt, chosen, rejected [, harmful] columns"),
    out: Path = typer.Option(..., help="directory for the trained model (must not exist, or be empty)"),
    perturb: str = typer.Option("noise", help="perturbation during training (safestress list perturbations; none)"),
    sigma: float = typer.Option(
        0.5,
        "--sigma",
        "--strength",
        min=0.0,
        help="the perturbation's strength: σ for noise (e.g. the level `safestress analyze mva` reports)",
    ),
    scale: str = typer.Option(
        "relative", help="scale, for perturbations that have one: relative (to each token's RMS) or absolute"
    ),
    param: list[str] | None = typer.Option(None, "--param", help="further perturbation parameter KEY=VALUE"),
    sites: str | None = typer.Option(None, help="perturbed sites (default: resid_post of the first quarter)"),
    cluster_site: str | None = typer.Option(None, help="site of the cluster term (default: last perturbed block)"),
    cluster_weight: float = typer.Option(0.1, min=0.0, help="weight of the harmful-activation cluster term"),
    steps: int = typer.Option(100, min=1),
    lr: float = typer.Option(5e-6, help="learning rate"),
    beta: float = typer.Option(0.1, help="DPO beta"),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(512, min=8),
    limit: int | None = typer.Option(None, min=1, help="use the first N rows"),
    seed: int = typer.Option(0),
    gradient_checkpointing: bool = typer.Option(
        True, help="recompute activations in the backward: less memory, more compute"
    ),
    runs: int = typer.Option(
        1,
        min=1,
        max=100,
        help="training runs with seeds SEED … SEED+RUNS−1, each in OUT/<name>-s<seed>; "
        "compare methods over runs with `safestress results --arm`",
    ),
) -> None:
    """DPO with the policy's early activations perturbed, plus a term that keeps harmful activations clustered."""
    require_new_dir(out)
    from safestress.cli_options import parse_params
    from safestress.perturb import PERTURBATIONS
    from safestress.train.quada import QuadASettings, quada_train

    # an unknown name or bad parameters fail before anything loads
    cls = PERTURBATIONS.get(perturb)
    params = {} if perturb == "none" else cls.parameters_at(sigma, parse_params(param), {"scale": scale})
    cls(**params)
    rows = read_preferences(data, limit)
    from safestress.models import load_model

    quiet_progress()
    for run_seed, run_out in run_dirs(out, seed, runs):
        settings = QuadASettings(
            steps=steps,
            learning_rate=lr,
            beta=beta,
            batch_size=batch_size,
            max_length=max_length,
            perturbation=perturb,
            params=params,
            sites=sites,
            cluster_site=cluster_site,
            cluster_weight=cluster_weight,
            seed=run_seed,
            gradient_checkpointing=gradient_checkpointing,
        )
        lm = load_model(model)  # every run from the original weights
        import torch

        torch.manual_seed(run_seed)
        summary = quada_train(lm, rows, run_out, settings, log=err.print, meta={"data": data})  # with a step bar
        what = "no perturbation" if perturb == "none" else f"perturbed {', '.join(summary['sites'])}"
        if cluster_weight > 0:
            what += (
                f"; cluster term at {summary['cluster_site']} "
                f"{summary['cluster_first']:.3f} → {summary['cluster_last']:.3f}"
            )
        err.print(f"{run_out.name}: {what}; mean loss {summary['train_loss']:.4f}")
