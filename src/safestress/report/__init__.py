"""Reports: summary statistics, terminal tables and plots from the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safestress.report.summary import RateRow, TrendRow, summarize, to_records

__all__ = ["RateRow", "TrendRow", "summarize", "write_report"]


def write_report(rates: list[RateRow], trends: list[TrendRow], out_dir: Path, plot: bool = True) -> list[Path]:
    """Write ``summary.json``, ``summary.csv`` and the plots into ``out_dir``; return the paths."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"rates": to_records(rates), "trends": to_records(trends)}
    (out_dir / "summary.json").write_text(json.dumps(data, indent=2, default=float))
    pd.DataFrame(to_records(rates)).to_csv(out_dir / "summary.csv", index=False)
    paths = [out_dir / "summary.json", out_dir / "summary.csv"]
    if plot:
        from safestress.report.plots import rate_vs_strength

        paths += rate_vs_strength(rates, out_dir)
    return paths
