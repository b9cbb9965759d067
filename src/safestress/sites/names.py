"""Canonical site names and glob selection.

Names follow TransformerLens' spirit: ``blocks.{L}.resid_post``, ``blocks.{L}.mlp.act``, ...,
``final_norm.out``. A selection is a comma-separated list of patterns; the layer field of a
``blocks.`` pattern may be ``*``, ``N``, ``A-B`` (inclusive) or ``-N`` (N-th from the end), and the
rest is an ``fnmatch`` glob (``blocks.0-3.*``, ``blocks.*.resid_post``, ``blocks.-1.mlp.*``).
"""

from __future__ import annotations

import fnmatch
import re

from safestress.errors import SafestressError

# Per-block site suffixes in the order they occur in the forward pass; the site list of a model
# is this order for block 0, 1, ... followed by ``final_norm.out``.
BLOCK_SITES: tuple[str, ...] = (
    "resid_pre",
    "ln1.out",
    "attn.z",
    "attn.out",
    "ln2.out",
    "mlp.act",
    "mlp.out",
    "resid_post",
)
FINAL_SITES: tuple[str, ...] = ("final_norm.out",)

_LAYER_FIELD = re.compile(r"^(\*|-?\d+|\d+-\d+)$")


def all_sites(n_layers: int) -> list[str]:
    """Every site of a model with ``n_layers`` blocks, in forward order."""
    names = [f"blocks.{layer}.{suffix}" for layer in range(n_layers) for suffix in BLOCK_SITES]
    return names + list(FINAL_SITES)


def parse_site(name: str) -> tuple[int | None, str]:
    """Split ``blocks.3.mlp.act`` into ``(3, "mlp.act")``; ``final_norm.out`` into ``(None, ...)``."""
    if name.startswith("blocks."):
        _, layer, suffix = name.split(".", 2)
        return int(layer), suffix
    return None, name


def _layers_of(field: str, n_layers: int, pattern: str) -> range | list[int]:
    if field == "*":
        return range(n_layers)
    if "-" in field[1:]:
        lo, hi = (int(x) for x in field.split("-"))
        if lo > hi or hi >= n_layers:
            raise SafestressError(f"site pattern '{pattern}': layers {lo}-{hi} outside 0-{n_layers - 1}")
        return range(lo, hi + 1)
    layer = int(field)
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise SafestressError(f"site pattern '{pattern}': layer {field} outside 0-{n_layers - 1}")
    return [layer]


def select_sites(patterns: str | list[str], n_layers: int) -> list[str]:
    """Resolve site patterns against a model with ``n_layers`` blocks.

    Returns the matching canonical names in forward order, without duplicates. A pattern that
    matches nothing is an error (a typo must not silently turn a sweep into a clean run).
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",")]
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise SafestressError("no site pattern given")
    everything = all_sites(n_layers)
    chosen: set[str] = set()
    for pattern in patterns:
        matched: list[str]
        if pattern.startswith("blocks."):
            parts = pattern.split(".", 2)
            if len(parts) < 3 or not _LAYER_FIELD.match(parts[1]):
                raise SafestressError(f"site pattern '{pattern}' is malformed; expected blocks.<layer|*|A-B>.<site>")
            layers = set(_layers_of(parts[1], n_layers, pattern))
            matched = [
                s
                for s in everything
                if s.startswith("blocks.")
                and parse_site(s)[0] in layers
                and fnmatch.fnmatchcase(parse_site(s)[1], parts[2])
            ]
        else:
            matched = [s for s in everything if fnmatch.fnmatchcase(s, pattern)]
        if not matched:
            raise SafestressError(
                f"site pattern '{pattern}' matches no site; sites look like blocks.0.resid_post, "
                f"blocks.0.mlp.act, final_norm.out (see `safestress list sites --model M`)"
            )
        chosen.update(matched)
    return [s for s in everything if s in chosen]
