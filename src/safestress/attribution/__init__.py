"""Where safety lives: unit importance, SCU/UCU/CU/RU maps, pruning, probes and the refusal direction.

Beside the main flow, reusing its sites and hooks: scores are taken with hooks at
``blocks.L.mlp.act`` / ``blocks.L.attn.z``, pruning and direction ablation are perturbations in
the core's registry, so "prune the SCU" or "remove the refusal direction" sweeps like noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safestress.registry import Registry

SCORES: Registry[Callable[..., Any]] = Registry("importance score")
SCORES.register("ssah", "safestress.attribution.scores:ssah_score")
SCORES.register("wanda", "safestress.attribution.scores:wanda_score")
SCORES.register("snip", "safestress.attribution.scores:snip_score")

__all__ = ["SCORES"]
