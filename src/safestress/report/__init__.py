"""Reports: summary statistics, terminal tables and plots from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safestress.report.contrasts import ContrastRow, model_contrasts
from safestress.report.jsonfile import write_json
from safestress.report.summary import RateRow, TrendRow, metric_text, summarize, to_records

__all__ = ["ContrastRow", "RateRow", "TrendRow", "model_contrasts", "summarize", "write_report"]


def write_report(
    rates: list[RateRow],
    trends: list[TrendRow],
    out_dir: Path,
    plot: bool = True,
    contrasts: list[ContrastRow] | None = None,
) -> list[Path]:
    """Write ``summary.json``, ``summary.csv``, ``summary.md``, the plots and, for a sweep of several
    models, ``contrasts.csv`` into ``out_dir``; return the paths."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    contrasts = contrasts or []
    data: dict[str, Any] = {
        "rates": to_records(rates),
        "trends": to_records(trends),
        "contrasts": to_records(contrasts),
    }
    write_json(out_dir / "summary.json", data)
    pd.DataFrame(to_records(rates)).to_csv(out_dir / "summary.csv", index=False)
    md = markdown_table(rates) + (("\n" + markdown_contrasts(contrasts)) if contrasts else "")
    (out_dir / "summary.md").write_text(md)
    paths = [out_dir / "summary.json", out_dir / "summary.csv", out_dir / "summary.md"]
    if contrasts:
        pd.DataFrame(to_records(contrasts)).to_csv(out_dir / "contrasts.csv", index=False)
        paths.append(out_dir / "contrasts.csv")
    if plot:
        from safestress.report.plots import rate_vs_strength

        paths += rate_vs_strength(rates, out_dir)
    return paths


def markdown_table(rates: list[RateRow]) -> str:
    """The rate table as Markdown (for papers and docs): one row per model, dataset and condition."""
    import math

    from safestress.report.tables import condition_name

    def pct(x: float) -> str:
        return "—" if math.isnan(x) else f"{100 * x:.1f}"

    with_ppl = any(not math.isnan(r.ppl) for r in rates)
    _, what, _ = metric_text({r.metric for r in rates} or {"harmful"})
    head = ["model", "dataset", "condition", "n", what, "95% CI", "Δ pts", "p vs clean", "p (Holm)", "incoherent %"]
    head += ["ppl"] if with_ppl else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rates:
        cells = [
            r.model,
            r.dataset,
            condition_name(r),
            str(r.n),
            pct(r.value),
            f"{pct(r.ci_low)}–{pct(r.ci_high)}",
            "—" if math.isnan(r.delta) else f"{100 * r.delta:+.1f}",
            "—" if math.isnan(r.p) else f"{r.p:.2g}",
            "—" if math.isnan(r.p_holm) else f"{r.p_holm:.2g}",
            pct(r.incoherent),
        ]
        if with_ppl:
            cells.append("—" if math.isnan(r.ppl) else f"{r.ppl:.2f}")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_contrasts(rows: list[ContrastRow]) -> str:
    """The model-against-baseline table as Markdown."""
    import math

    from safestress.report.tables import condition_name, fmt_p, fmt_pct

    head = ["model", "baseline", "dataset", "condition", "n", "rate %", "baseline %", "Δ pts", "p (Holm)"]
    head += ["Δ effect pts", "n (effect)", "p (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.model,
            r.baseline,
            r.dataset,
            condition_name(r),
            str(r.n_prompts),
            fmt_pct(r.value),
            fmt_pct(r.baseline_value),
            f"{100 * r.delta:+.1f}",
            fmt_p(r.p_holm),
            "—" if math.isnan(r.effect_delta) else f"{100 * r.effect_delta:+.1f}",
            str(r.n_effect) if r.n_effect else "—",
            fmt_p(r.effect_p_holm),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
