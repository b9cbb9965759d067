"""Report JSON that every reader accepts.

Python's ``json`` writes an undefined statistic (a p-value without a clean run, a perplexity that
was not measured) as ``NaN``, which is not JSON: ``jq``, browsers and ``JSON.parse`` reject the
whole file. Reports write it as ``null`` instead; numpy scalars become plain numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(data: Any) -> str:
    """``data`` as indented, strict JSON (``NaN`` and ±infinity as ``null``)."""
    return json.dumps(_clean(data), indent=2, allow_nan=False, default=str)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` to ``path`` as strict JSON (see :func:`dumps`); returns the path."""
    path = Path(path)
    path.write_text(dumps(data) + "\n")
    return path
