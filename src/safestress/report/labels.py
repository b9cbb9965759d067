"""Display names of conditions: the report layer's view of stored configuration specs.

The store holds specs and returns raw columns; what a table calls a condition is decided here,
once, for every table, export and page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safestress.store import Store


def labelled(frame: Any, store: Store) -> Any:
    """``frame`` (rows of ``store``) with a ``condition`` column of display names, placed where
    exports have always had it (before ``perturbation``)."""
    specs = store.configs()
    labels = condition_labels({h: specs[h] for h in frame["config_hash"].unique()})
    out = frame.copy()
    at = out.columns.get_loc("perturbation") if "perturbation" in out.columns else len(out.columns)
    out.insert(at, "condition", out["config_hash"].map(labels))
    return out


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    """The parameters a condition's name may need: the perturbation's and the decoding settings."""
    out = {k: v for k, v in spec.get("perturbation", {}).items() if k not in ("name", "version")}
    out.update(spec.get("generation", {}))
    return out


def condition_labels(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A distinct display name per configuration.

    A stored label names a strength perturbation by its strength only (``quant bits=4 @ …``), so two
    configurations that differ in another parameter (per-token vs per-tensor quantization, a
    different token budget) would share it and be merged by every table. Where labels collide
    (same model), the parameters whose values differ are appended; stored labels and hashes stay
    as they are, so existing stores keep resuming.
    """
    labels = {h: str(spec.get("label", "")) for h, spec in specs.items()}
    groups: dict[tuple[str, str], list[str]] = {}
    for h, spec in specs.items():
        groups.setdefault((str(spec.get("model_name", "")), labels[h]), []).append(h)
    for (_, label), hashes in groups.items():
        if len(hashes) < 2:
            continue
        flats = {h: _flat(specs[h]) for h in hashes}
        keys = sorted({k for f in flats.values() for k in f})
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
        for h in hashes:
            extra = " ".join(f"{k}={_short(flats[h].get(k))}" for k in differ)
            labels[h] = f"{label} [{extra}]" if extra else label
    return labels


def _short(value: Any) -> str:
    if isinstance(value, str) and "/" in value:
        return Path(value).name
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
