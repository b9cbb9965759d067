"""Reports: summary statistics, terminal tables and plots from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safestress.report.jsonfile import write_json
from safestress.report.summary import RateRow, TrendRow, metric_text, summarize, to_records

__all__ = ["RateRow", "TrendRow", "summarize", "write_report"]


def write_report(rates: list[RateRow], trends: list[TrendRow], out_dir: Path, plot: bool = True) -> list[Path]:
    """Write ``summary.json``, ``summary.csv``, ``summary.md`` and the plots into ``out_dir``; return the paths."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"rates": to_records(rates), "trends": to_records(trends)}
    write_json(out_dir / "summary.json", data)
    pd.DataFrame(to_records(rates)).to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(markdown_table(rates))
    paths = [out_dir / "summary.json", out_dir / "summary.csv", out_dir / "summary.md"]
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
