"""Plots written beside the results: harmful rate vs strength with its 95% CI band."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safestress.report.summary import RateRow, metric_text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "all"


def rate_figures(rows: list[RateRow]) -> Iterator[tuple[str, Any]]:
    """One matplotlib figure per (dataset, perturbation, sites) with its file stem: a line per model
    with its 95% CI band, σ = 0 taken from the clean run. The caller saves and closes each figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = {(r.model, r.dataset): r for r in rows if r.perturbation == "none"}
    families: dict[tuple[str, str, str], dict[str, list[RateRow]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.perturbation != "none":
            families[(r.dataset, r.perturbation, r.sites)][r.model].append(r)
    for (dataset, pert, sites), by_model in families.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for model, rs in sorted(by_model.items()):
            pts = sorted(rs, key=lambda r: r.strength)
            if (model, dataset) in clean:
                pts = [clean[(model, dataset)], *pts]
            xs = [0.0 if p.perturbation == "none" else p.strength for p in pts]
            ys = [100 * p.value for p in pts]
            ax.plot(xs, ys, marker="o", label=model)
            ax.fill_between(xs, [100 * p.ci_low for p in pts], [100 * p.ci_high for p in pts], alpha=0.2)
        ax.set_xlabel(f"{pert} σ")
        metrics = {r.metric for rs_ in by_model.values() for r in rs_}
        ax.set_ylabel(f"mean {rs[0].judge} score (%)" if metrics == {"score"} else metric_text(metrics)[2])
        ax.set_ylim(0, 100)
        ax.set_title(f"{dataset}: {pert} @ {sites}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        yield f"rate-{_slug(dataset)}-{_slug(pert)}-{_slug(sites)}", fig


def rate_vs_strength(rows: list[RateRow], out_dir: Path) -> list[Path]:
    """Write :func:`rate_figures` as PNG files into ``out_dir``; return their paths."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in rate_figures(rows):
        path = out_dir / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (for embedding in the HTML report), the figure closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
