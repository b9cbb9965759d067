"""Where safestress keeps its caches (converted models, downloaded datasets, trained lab models).

``SAFESTRESS_CACHE_DIR`` overrides the platform's user cache directory; tests point it at a
temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("SAFESTRESS_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("safestress"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
