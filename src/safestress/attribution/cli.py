"""``safestress attribute …``: unit maps, the refusal direction and the refuse/fulfil probe from the shell.

Each command writes a directory: a JSON summary, CSV tables and a plot, plus the artefacts later
steps load (``units.json`` for ``--perturb prune``, ``direction.safetensors`` for
``--perturb ablate-direction``). Calibration responses and scores are cached, so re-running a
command with the same model, data and settings recomputes nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer
from rich.console import Console

from safestress.cli_options import DATA_DIR, FORCE, MODEL
from safestress.datasets import CALIBRATION_BENIGN
from safestress.errors import SafestressError
from safestress.guards import (
    MIN_CALIBRATION,
    MIN_DIRECTION,
    MIN_DIRECTION_VAL,
    MIN_PROBE,
    mark_field,
    require_enough,
)
from safestress.report.jsonfile import write_json

app = typer.Typer(no_args_is_help=True, help="Where safety lives: unit maps, refusal direction, probes.")
err = Console(stderr=True)


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _prompts(spec: str, limit: int | None, offset: int = 0, data_dir: Path | None = None) -> list[str]:
    from safestress.datasets import load_dataset

    items = load_dataset(spec, data_dir=data_dir).items[offset:]
    return [i.prompt for i in (items[:limit] if limit else items)]


def _out(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise SafestressError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _calibration(lm, name: str, prompts: list[str], judge: str, keep: str, out: Path, max_new_tokens: int):
    """Build (or reuse, when model, prompts, judge and length are unchanged) a calibration set."""
    import hashlib

    from safestress.attribution.calibration import CalibrationSet, build_calibration
    from safestress.judges import make_judge

    ident = json.dumps([lm.identity, prompts, judge, keep, max_new_tokens], sort_keys=True, default=str)
    path = out / f"calibration-{name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}.json"
    if path.is_file():
        return CalibrationSet.load(path)
    from safestress.progress import job_bar

    with job_bar(f"{name} calibration responses", err) as bar:
        task = bar.add_task(name, total=len(prompts))
        calib = build_calibration(
            lm,
            name,
            prompts,
            make_judge(judge),
            keep,
            max_new_tokens=max_new_tokens,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    calib.save(path)
    return calib


@app.command("units")
def units(
    model: str = MODEL,
    harmful: str = typer.Option("harmful-train", help="harmful prompts (safety calibration)"),
    benign: str = typer.Option(CALIBRATION_BENIGN, help="benign prompts (utility calibration; not those sweeps take)"),
    limit: int = typer.Option(64, min=1, help="prompts per calibration set"),
    score: str = typer.Option("ssah", help="importance score (safestress list scores)"),
    scu: float = typer.Option(0.013, help="share of units classed safety-critical"),
    ucu: float = typer.Option(0.013, help="share of units classed utility-critical"),
    ru: float = typer.Option(0.20, help="share of units classed redundant"),
    judge: str = typer.Option("refusal", help="judge that keeps refusals (safety) and answers (utility)"),
    max_new_tokens: int = typer.Option(64, min=1),
    batch_size: int = typer.Option(8, min=1),
    safety: bool = typer.Option(
        True,
        "--safety/--no-safety",
        help="--no-safety: a model that does not refuse yet (SSAH's alignment budget): classes from the utility "
        "score alone (RU lowest, UCU highest, no SCU)",
    ),
    data_dir: Path | None = DATA_DIR,
    out: Path = typer.Option(Path("units"), help="output directory"),
    force: bool = FORCE,
) -> None:
    """Score every MLP neuron and attention head on safety and utility data; classify SCU/UCU/CU/RU.
    Needs at least MIN_CALIBRATION kept refusals (unless --no-safety) and answers (safestress/guards.py)."""
    from safestress.attribution import SCORES
    from safestress.attribution.scores import compute_scores
    from safestress.attribution.units import Ratios, UnitMap
    from safestress.models import load_model

    SCORES.get(score)  # unknown names fail before any work
    ratios = Ratios(scu=scu, ucu=ucu, ru=ru)
    out = _out(out)
    _quiet()
    lm = load_model(model)
    needed = {}
    if safety:
        safety_prompts = _prompts(harmful, limit, data_dir=data_dir)
        refusals = _calibration(lm, "safety", safety_prompts, judge, "refusal", out, max_new_tokens)
        needed[f"refusals kept of {len(safety_prompts)} harmful prompts"] = (len(refusals.prompts), MIN_CALIBRATION)
    utility_prompts = _prompts(benign, limit, data_dir=data_dir)
    utility = _calibration(lm, "utility", utility_prompts, judge, "compliance", out, max_new_tokens)
    needed[f"answers kept of {len(utility_prompts)} benign prompts"] = (len(utility.prompts), MIN_CALIBRATION)
    mark = require_enough(needed, force)
    from safestress.progress import working

    s = None
    if safety:
        with working(f"scoring units ({score}) on {len(refusals.prompts)} refusals", err):
            s = compute_scores(lm, refusals, score, batch_size=batch_size)
        s.save(out / f"scores-safety-{score}.safetensors")
    with working(f"scoring units ({score}) on {len(utility.prompts)} answers", err):
        u = compute_scores(lm, utility, score, batch_size=batch_size)
    u.save(out / f"scores-utility-{score}.safetensors")
    umap = UnitMap.build(lm.name, s, u, ratios)
    umap.save(out / "units.json")
    shares = umap.shares()
    with (out / "shares.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(shares[0]))
        w.writeheader()
        w.writerows(shares)
    totals = {kind: {c: len(umap.units(kind, c)) for c in ("scu", "ucu", "cu", "ru")} for kind in ("mlp", "heads")}
    summary = {
        "model": lm.name,
        "score": score,
        "ratios": ratios.__dict__,
        "calibration": {"safety": len(refusals.prompts) if safety else None, "utility": len(utility.prompts)},
        "classified_by": "safety and utility" if safety else "utility alone (--no-safety)",
        "units": totals,
    }
    summary |= mark_field(mark)
    write_json(out / "summary.json", summary)
    _plot_shares(shares, out / "shares.png", lm.name + (f"\n{mark}" if mark else ""))
    for kind, counts in totals.items():
        n = sum(counts.values())
        err.print(f"{kind}: " + ", ".join(f"{c.upper()} {k} ({100 * k / n:.1f}%)" for c, k in counts.items()))
    if mark:
        err.print(f"[bold]{mark.upper()}[/]: this unit map is not interpretable", highlight=False)
    err.print(f"wrote {out}/units.json (use: --perturb prune --param units={out}/units.json)")


def _plot_shares(shares: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, kind in zip(axes, ("mlp", "heads")):
        rows = [r for r in shares if r["type"] == kind]
        layers = [r["layer"] for r in rows]
        for cls in ("scu", "ucu", "ru"):
            ax.plot(layers, [100 * r[cls] for r in rows], marker="o", ms=3, label=cls.upper())
        ax.set_title(f"{'MLP neurons' if kind == 'mlp' else 'attention heads'}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the layer's units (%)")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command("direction")
def direction(
    model: str = MODEL,
    harmful: str = typer.Option("harmful-train"),
    benign: str = typer.Option(CALIBRATION_BENIGN, help="benign prompts (apart from the prompts sweeps take)"),
    limit: int = typer.Option(
        64, min=1, help=f"prompts of each kind used for the mean difference (minimum {MIN_DIRECTION})"
    ),
    val: int = typer.Option(
        16, min=1, help=f"held-out prompts of each kind used for selection (minimum {MIN_DIRECTION_VAL})"
    ),
    positions: int = typer.Option(3, min=1, help="last prompt tokens considered"),
    layers: str | None = typer.Option(None, help="candidate layers, e.g. '2-16' or '4,8,12' (default: all)"),
    batch_size: int = typer.Option(16, min=1),
    data_dir: Path | None = DATA_DIR,
    out: Path = typer.Option(Path("direction"), help="output directory"),
    force: bool = FORCE,
) -> None:
    """Extract and select the refusal direction (difference of means, Arditi et al. 2024)."""
    from safestress.attribution.direction import result_dict, save_direction, select_direction
    from safestress.models import load_model

    mark = require_enough(
        {
            "prompts of each kind (--limit)": (limit, MIN_DIRECTION),
            "held-out prompts (--val)": (val, MIN_DIRECTION_VAL),
        },
        force,
    )

    out = _out(out)
    h = _prompts(harmful, limit + val, data_dir=data_dir)
    b = _prompts(benign, limit + val, data_dir=data_dir)
    if len(h) < limit + val or len(b) < limit + val:
        raise SafestressError(f"need {limit + val} prompts of each kind; got {len(h)} harmful, {len(b)} benign")
    _quiet()
    lm = load_model(model)
    chosen = None
    if layers:
        chosen = []
        for part in layers.split(","):
            lo, _, hi = part.strip().partition("-")
            chosen += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    from safestress.progress import job_bar

    n_layers = lm.n_layers
    total = (len(chosen) if chosen is not None else n_layers) * positions
    with job_bar("scoring candidate directions", err) as bar:
        job = bar.add_task("candidates", total=total)
        r, res = select_direction(
            lm,
            h[:limit],
            b[:limit],
            h[limit:],
            b[limit:],
            positions=positions,
            batch_size=batch_size,
            layers_to_try=chosen,
            progress=lambda: bar.advance(job),
        )
    marked = mark_field(mark)
    meta = {k: v for k, v in result_dict(res).items() if k != "candidates"}
    save_direction(out / "direction.safetensors", r, {"model": lm.name, **meta, **marked})
    write_json(out / "direction.json", {"model": lm.name, **result_dict(res), **marked})
    _plot_candidates(res.candidates, res.layer, out / "candidates.png", lm.name + (f"\n{mark}" if mark else ""))
    note = "" if res.filtered else " (no candidate passed the filters; lowest bypass taken)"
    note += f" ({mark.upper()})" if mark else ""
    err.print(
        f"refusal direction: layer {res.layer}, position {res.position}, bypass {res.bypass:.2f}, "
        f"induce {res.induce:.2f}, KL {res.kl:.3f}{note}; wrote {out}/direction.safetensors"
    )


def _plot_candidates(candidates: list[dict], chosen: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for pos in sorted({c["position"] for c in candidates}):
        rows = [c for c in candidates if c["position"] == pos]
        ax.plot([c["layer"] for c in rows], [c["bypass"] for c in rows], marker="o", ms=3, label=f"position {pos}")
    ax.axvline(chosen, color="k", ls=":", lw=1)
    ax.set_xlabel("layer of the candidate direction")
    ax.set_ylabel("refusal score on harmful prompts\nwith the direction ablated")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command("probe")
def probe(
    model: str = MODEL,
    dataset: str = typer.Option("harmful-val"),
    limit: int = typer.Option(64, min=1, help=f"prompts averaged over (minimum {MIN_PROBE})"),
    data_dir: Path | None = DATA_DIR,
    out: Path = typer.Option(Path("probe"), help="output directory"),
    force: bool = FORCE,
) -> None:
    """SSAH's refuse/fulfil probe: per-block cosine distance of q to q+refusal and to q+compliance."""
    from safestress.attribution.probes import refuse_fulfil_distances
    from safestress.models import load_model

    prompts = _prompts(dataset, limit, data_dir=data_dir)
    mark = require_enough({f"prompts of {dataset}": (len(prompts), MIN_PROBE)}, force)
    out = _out(out)
    _quiet()
    lm = load_model(model)
    d = refuse_fulfil_distances(lm, prompts)
    marked = mark_field(mark)
    write_json(out / "probe.json", {"model": lm.name, "dataset": dataset, **d, **marked})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for key, label in (("query_refuse", "q vs q + refusal"), ("query_fulfil", "q vs q + compliance")):
        ax.plot(range(len(d[key])), d[key], marker="o", ms=3, label=label)
    ax.set_xlabel("block")
    ax.set_ylabel("cosine distance (last token)")
    ax.set_title(lm.name + (f"\n{mark}" if mark else ""))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "probe.png", dpi=120)
    plt.close(fig)
    closer = sum(a < b for a, b in zip(d["query_refuse"], d["query_fulfil"]))
    err.print(
        f"q is closer to the refusal than to the compliance continuation in {closer}/{len(d['query_refuse'])} blocks"
        + (f" ({mark.upper()})" if mark else "")
    )
