"""``safestress analyze …``: layer sensitivity, harmful-cluster drift, rate–perplexity trade-off, MVA.

Every command prints a table and writes ``<name>.json`` and ``<name>.png`` into ``--out``. The
generations behind them go through the ordinary sweep into ``--store``, so an interrupted
analysis resumes and a later one with overlapping conditions reuses them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from safestress.cli_options import DATA_DIR, MODEL, PARAM
from safestress.errors import SafestressError
from safestress.report.jsonfile import write_json

app = typer.Typer(no_args_is_help=True, help="Analyses: layer sensitivity, drift, trade-off, MVA search.")
out_console = Console()
err = Console(stderr=True)


def _out(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise SafestressError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


_SHARED = (
    "perturb", "scale", "dataset", "limit", "data_dir", "max_new_tokens", "batch_size", "store", "ppl", "ppl_tokens",
)  # fmt: skip


def _sweep_config(options: dict[str, Any], strengths: list[float], sites: list[str]) -> Any:
    """The sweep behind an analysis, from the command's own options (its ``locals()``): the
    analyses differ only in which strengths and site selections they sweep."""
    from safestress.cli_options import parse_params
    from safestress.config import build_config

    kw = {k: options[k] for k in _SHARED if k in options}
    return build_config(
        None,
        models=[options["model"]],
        judge=[options["judge"]],
        params=parse_params(options.get("param")),
        strengths=strengths,
        sites=sites,
        **kw,
    )


def _progress() -> tuple[Any, Any]:
    from safestress.progress import job_bar

    bar = job_bar("generating", err)
    task = bar.add_task("sweep", total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _run(cfg: Any) -> list[Any]:
    from transformers.utils import logging as hf_logging

    from safestress.analysis.sweeps import run_rows

    hf_logging.disable_progress_bar()
    bar, progress = _progress()
    with bar:
        return run_rows(cfg, progress)


def _rate_column(row: Any) -> str:
    """The rate's column name with its judge, e.g. "complied % (refusal)": a refusal judge's rate
    counts answers that were not refused, which is not harm, so the table never says ASR."""
    from safestress.judges.base import key_name
    from safestress.report.summary import metric_text

    return f"{metric_text({row.metric})[1]} ({key_name(row.judge)})"


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.2g}"


def _save(fig: Any, out: Path, name: str) -> None:
    """Write ``<name>.png`` beside the ``<name>.json`` the command wrote, and say so."""
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=130)
    _plt().close(fig)
    err.print(f"wrote {out / f'{name}.json'}, {out / f'{name}.png'}")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@app.command()
def layers(
    model: str = MODEL,
    perturb: str = typer.Option("gaussian", help="perturbation name"),
    strength: float = typer.Option(..., help="one strength (σ, sparsity, bits…) for every window"),
    site: str = typer.Option("mlp.act", help="site within each block, e.g. mlp.act, ln2.out, resid_post"),
    window: int = typer.Option(4, help="layers per window"),
    param: list[str] | None = PARAM,
    scale: str = typer.Option("absolute", help="absolute | relative (noise)"),
    dataset: str = typer.Option("advbench"),
    data_dir: Path | None = DATA_DIR,
    limit: int | None = typer.Option(50),
    judge: str = typer.Option("refusal"),
    max_new_tokens: int = typer.Option(48),
    batch_size: int = typer.Option(16),
    store: str = typer.Option("safestress.db"),
    out: Path = typer.Option(Path("analysis/layers")),
) -> None:
    """Layer sensitivity: perturb one window of layers at a time; rate per window vs clean."""
    from safestress.analysis.sweeps import layer_sensitivity, layer_windows, records
    from safestress.models import load_model

    n_layers = load_model(model, weights=False).n_layers
    windows = layer_windows(n_layers, window, site)
    cfg = _sweep_config(locals(), [0.0, strength], windows)
    clean, results = layer_sensitivity(_run(cfg))
    out = _out(out)
    t = Table(title=f"Layer sensitivity: {perturb} {strength:g} at {site}, {window} layers per window")
    for col in ("window", "n", _rate_column(clean), "95% CI", "p vs clean", "incoherent %"):
        t.add_column(col)
    t.add_row("clean", str(clean.n), _pct(clean.value), f"{_pct(clean.ci_low)}–{_pct(clean.ci_high)}", "—", "—")
    for w in results:
        t.add_row(w.sites, str(w.n), _pct(w.rate), f"{_pct(w.ci_low)}–{_pct(w.ci_high)}", _p(w.p), _pct(w.incoherent))
    out_console.print(t)
    summary = {
        "model": model,
        "perturbation": perturb,
        "strength": strength,
        "site": site,
        "window": window,
        "judge": judge,
        "metric": clean.metric,
        "clean": {"rate": clean.value, "ci": [clean.ci_low, clean.ci_high], "n": clean.n},
        "windows": records(results),
    }
    write_json(out / "layers.json", summary)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(results) + 2), 3.6))
    xs = range(len(results))
    rate = [100 * w.rate for w in results]
    yerr = [[100 * (w.rate - w.ci_low) for w in results], [100 * (w.ci_high - w.rate) for w in results]]
    ax.bar(xs, rate, yerr=yerr, capsize=3, color="tab:red", alpha=0.8, label=f"{perturb} {strength:g}")
    ax.axhline(100 * clean.value, color="black", ls="--", lw=1, label="clean")
    ax.set_xticks(list(xs), [w.sites.split(".")[1] for w in results], rotation=45)
    ax.set_xlabel(f"layers perturbed ({site})")
    ax.set_ylabel(f"{_rate_column(clean)} (95% CI)")
    ax.legend(fontsize=8)
    _save(fig, out, "layers")


@app.command()
def drift(
    model: str = MODEL,
    perturb: str = typer.Option("gaussian"),
    strength: float = typer.Option(..., help="strength of the perturbation"),
    sites: str = typer.Option("blocks.*.mlp.act", help="where to perturb"),
    layer: int = typer.Option(-1, help="layer whose last-token residual is read (-1: the last)"),
    param: list[str] | None = PARAM,
    scale: str = typer.Option("absolute"),
    harmful: str = typer.Option("advbench", help="harmful prompts"),
    benign: str = typer.Option("harmless-val", help="benign prompts"),
    limit: int = typer.Option(64, min=2, help="prompts of each kind"),
    data_dir: Path | None = DATA_DIR,
    out: Path = typer.Option(Path("analysis/drift")),
) -> None:
    """Harmful-cluster drift at one layer: centroid distance and probe flips, clean vs perturbed."""
    from dataclasses import asdict

    from transformers.utils import logging as hf_logging

    from safestress.analysis.drift import change_text, measure_drift, plot_drift
    from safestress.cli_options import parse_params
    from safestress.datasets import load_dataset
    from safestress.models import load_model
    from safestress.perturb import PERTURBATIONS

    hf_logging.disable_progress_bar()
    lm = load_model(model)
    pert = PERTURBATIONS.get(perturb).at_strength(strength, parse_params(param), {"scale": scale})
    harmful_prompts = [i.prompt for i in load_dataset(harmful, limit=limit, data_dir=data_dir).items]
    benign_prompts = [i.prompt for i in load_dataset(benign, limit=limit, data_dir=data_dir).items]
    with err.status("reading activations"):
        result, states = measure_drift(lm, pert, lm.sites(sites), layer, harmful_prompts, benign_prompts)
    layer = result.layer
    out = _out(out)
    t = Table(title=f"Harmful-cluster drift at layer {layer}: {pert!r} @ {sites}")
    t.add_column("metric")
    t.add_column("clean", justify="right")
    t.add_column("perturbed", justify="right")
    t.add_row(
        "harmful↔benign centroid distance",
        f"{result.centroid_distance_clean:.2f}",
        f"{result.centroid_distance_perturbed:.2f}",
    )
    t.add_row(
        "harmful called benign by the clean probe %",
        _pct(result.harmful_called_benign_clean),
        _pct(result.harmful_called_benign_perturbed),
    )
    t.add_row("benign called harmful %", "—", _pct(result.benign_called_harmful_perturbed))
    t.add_row("change in harmful called benign, pts [95% CI]", "—", change_text(result))
    t.add_row("p (exact McNemar, paired prompts)", "—", _p(result.drift_p))
    out_console.print(t)
    summary = {"model": model, "perturbation": repr(pert), "sites": sites, **asdict(result)}
    write_json(out / "drift.json", summary)
    plot_drift(result, states, out / "drift.png", f"{Path(model).name}: {pert!r} @ {sites}")
    err.print(f"wrote {out / 'drift.json'}, {out / 'drift.png'}")


def _strength_rows(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda r: (r.perturbation != "none", r.strength))


@app.command()
def tradeoff(
    model: str = MODEL,
    perturb: str = typer.Option(..., help="perturbation name"),
    strength: str = typer.Option(..., help="comma-separated strengths (include 0 for the clean model)"),
    sites: str = typer.Option("blocks.*.mlp.act"),
    param: list[str] | None = PARAM,
    scale: str = typer.Option("absolute"),
    dataset: str = typer.Option("advbench"),
    data_dir: Path | None = DATA_DIR,
    limit: int | None = typer.Option(50),
    judge: str = typer.Option("refusal"),
    ppl: str = typer.Option("wikitext2", help="perplexity corpus: wikitext2 or a text file"),
    ppl_tokens: int = typer.Option(4096),
    max_new_tokens: int = typer.Option(48),
    batch_size: int = typer.Option(16),
    store: str = typer.Option("safestress.db"),
    out: Path = typer.Option(Path("analysis/tradeoff")),
) -> None:
    """rate against perplexity across a technique's strength."""
    from safestress.config import parse_floats

    cfg = _sweep_config(locals(), parse_floats(strength), [sites])
    rows = _strength_rows(_run(cfg))
    out = _out(out)
    t = Table(title=f"rate vs perplexity: {perturb} @ {sites}")
    for col in ("strength", "n", _rate_column(rows[0]), "95% CI", "p vs clean", "incoherent %", "ppl"):
        t.add_column(col)
    for r in rows:
        s = "clean" if r.perturbation == "none" else f"{r.strength:g}"
        t.add_row(
            s,
            str(r.n),
            _pct(r.value),
            f"{_pct(r.ci_low)}–{_pct(r.ci_high)}",
            _p(r.p),
            _pct(r.incoherent),
            f"{r.ppl:.2f}",
        )
    out_console.print(t)
    data = [
        {
            "strength": 0.0 if r.perturbation == "none" else r.strength,
            "rate": r.value,
            "ci": [r.ci_low, r.ci_high],
            "n": r.n,
            "p": None if math.isnan(r.p) else r.p,
            "incoherent": r.incoherent,
            "ppl": r.ppl,
        }
        for r in rows
    ]
    write_json(
        out / "tradeoff.json",
        {"model": model, "perturbation": perturb, "judge": judge, "metric": rows[0].metric, "rows": data},
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot([d["ppl"] for d in data], [100 * d["rate"] for d in data], "o-", color="tab:red")
    for d in data:
        ax.annotate(
            f"{d['strength']:g}", (d["ppl"], 100 * d["rate"]), fontsize=8, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"perplexity ({Path(ppl).name})")
    ax.set_ylabel(_rate_column(rows[0]))
    ax.set_title(f"{perturb} @ {sites}", fontsize=9)
    _save(fig, out, "tradeoff")


@app.command()
def mva(
    model: str = MODEL,
    perturb: str = typer.Option("gaussian", help="gaussian or laplace (any perturbation with a strength)"),
    grid: str = typer.Option("0.05,0.1,0.2,0.4,0.8", help="coarse strengths"),
    refine: int = typer.Option(2, help="strengths added on each side of the coarse maximum"),
    max_ppl: float | None = typer.Option(None, help="perplexity bound (absolute)"),
    max_ppl_ratio: float | None = typer.Option(None, help="perplexity bound as a multiple of the clean model's"),
    sites: str = typer.Option("blocks.*.mlp.act"),
    param: list[str] | None = PARAM,
    scale: str = typer.Option("relative"),
    dataset: str = typer.Option("advbench"),
    data_dir: Path | None = DATA_DIR,
    limit: int | None = typer.Option(50),
    judge: str = typer.Option("refusal"),
    ppl: str = typer.Option("wikitext2"),
    ppl_tokens: int = typer.Option(2048),
    max_new_tokens: int = typer.Option(48),
    batch_size: int = typer.Option(16),
    store: str = typer.Option("safestress.db"),
    out: Path = typer.Option(Path("analysis/mva")),
) -> None:
    """Most vulnerable approximation: the noise level with the highest rate within a perplexity bound."""
    from safestress.analysis.sweeps import mva as best_point
    from safestress.analysis.sweeps import mva_search, records
    from safestress.config import parse_floats

    if max_ppl is not None and max_ppl_ratio is not None:
        raise SafestressError("give --max-ppl or --max-ppl-ratio, not both")

    options = dict(locals())

    def sweep(strengths: list[float]) -> list[Any]:
        return _run(_sweep_config(options, [0.0, *strengths], [sites]))

    coarse = parse_floats(grid)
    if not coarse or min(coarse) <= 0:
        raise SafestressError("--grid needs positive strengths")
    clean, bound, points, extra = mva_search(sweep, coarse, refine, max_ppl, max_ppl_ratio)
    best = best_point(points)
    out = _out(out)
    out_console.print(_mva_table(clean, points, best, f"{perturb} @ {sites}", bound))
    summary = {
        "model": model,
        "perturbation": perturb,
        "sites": sites,
        "scale": scale,
        "ppl_bound": bound,
        "metric": clean.metric,
        "clean": {"rate": clean.value, "ci": [clean.ci_low, clean.ci_high], "ppl": clean.ppl, "n": clean.n},
        "coarse": coarse,
        "refined": extra,
        "points": records(points),
        "mva": None if best is None else records([best])[0],
    }
    write_json(out / "mva.json", summary)
    _save(_mva_figure(clean, points, best, f"{perturb} strength ({scale}); x = over the perplexity bound"), out, "mva")
    if best is None:
        err.print("no strength met the perplexity bound")
    else:
        err.print(
            f"MVA: {perturb} {best.strength:g} → {_rate_column(clean)} {_pct(best.rate)} "
            f"({_pct(best.ci_low)}–{_pct(best.ci_high)})"
        )


def _mva_table(clean: Any, points: list[Any], best: Any, what: str, bound: float | None) -> Table:
    t = Table(title=f"MVA search: {what} (ppl bound {'none' if bound is None else f'{bound:.2f}'})")
    for col in ("strength", "n", _rate_column(clean), "95% CI", "p vs clean", "ppl", "within bound"):
        t.add_column(col)
    t.add_row("clean", str(clean.n), _pct(clean.value), f"{_pct(clean.ci_low)}–{_pct(clean.ci_high)}", "—",
              f"{clean.ppl:.2f}", "")  # fmt: skip
    for p in points:
        mark = "yes" if p.admissible else "no"
        if best is not None and p.strength == best.strength:
            mark += " ← MVA"
        t.add_row(f"{p.strength:g}", str(p.n), _pct(p.rate), f"{_pct(p.ci_low)}–{_pct(p.ci_high)}", _p(p.p),
                  f"{p.ppl:.2f}", mark)  # fmt: skip
    return t


def _mva_figure(clean: Any, points: list[Any], best: Any, xlabel: str) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = [p.strength for p in points]
    ax.errorbar(
        xs,
        [100 * p.rate for p in points],
        yerr=[[100 * (p.rate - p.ci_low) for p in points], [100 * (p.ci_high - p.rate) for p in points]],
        fmt="o-",
        color="tab:red",
        capsize=3,
        label=f"{_rate_column(clean)} (95% CI)",
    )
    for p in points:
        if not p.admissible:
            ax.plot(p.strength, 100 * p.rate, "kx", ms=9)
    if best is not None:
        ax.plot(best.strength, 100 * best.rate, "*", color="gold", ms=16, mec="black", label=f"MVA {best.strength:.3g}")
    ax.axhline(100 * clean.value, color="black", ls="--", lw=1, label="clean")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:.3g}" for x in xs], rotation=45, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_rate_column(clean))
    ax.legend(fontsize=8)
    return fig
