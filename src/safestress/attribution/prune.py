"""Structured pruning as a perturbation: zero chosen units through hooks, undone on exit.

``prune`` masks the input channels of B (MLP neurons at ``blocks.L.mlp.act``, attention heads'
channel blocks at ``blocks.L.attn.z``) of one class of a unit map — ``scu``, ``ucu``, ``cu``,
``ru`` — or of a ``random`` set of the same size per unit type as the class named by
``random_like`` (seeded), which is the control SSAH compares against. Weights are never
touched, so leaving the ``with`` block restores the model exactly.

The site selection filters where pruning applies: ``--sites "blocks.*.mlp.act,blocks.*.attn.z"``
prunes everywhere, ``blocks.*.mlp.act`` neurons only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn

from safestress.attribution.units import UnitMap
from safestress.errors import SafestressError
from safestress.perturb.base import Params, Perturbation
from safestress.perturb.context import RowContext
from safestress.sites.hooks import site_hooks
from safestress.sites.names import parse_site


class PruneParams(Params):
    units: str
    unit_class: Literal["scu", "ucu", "cu", "ru", "random"] = "scu"
    random_like: Literal["scu", "ucu", "cu", "ru"] = "scu"
    seed: int = 0


class Prune(Perturbation):
    name = "prune"
    Params: ClassVar = PruneParams

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        path = Path(self.params.units)
        fp["units"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else str(path)
        if self.params.unit_class != "random":
            fp.pop("random_like", None)
            fp.pop("seed", None)
        return fp

    def chosen(self, umap: UnitMap) -> dict[str, list[tuple[int, int]]]:
        """(layer, unit) pairs to prune, per unit type."""
        p = self.params
        if p.unit_class != "random":
            return {kind: umap.units(kind, p.unit_class) for kind in ("mlp", "heads")}
        rng = random.Random(p.seed)
        out = {}
        for kind in ("mlp", "heads"):
            everything = [(layer, i) for layer, row in enumerate(umap.classes[kind]) for i in range(len(row))]
            out[kind] = sorted(rng.sample(everything, len(umap.units(kind, p.random_like))))
        return out

    def masks(self, model: nn.Module, umap: UnitMap) -> dict[str, torch.Tensor]:
        """Site → channel mask (1 keep, 0 pruned) for every site with a pruned unit."""
        from safestress.attribution.scores import n_heads

        heads = n_heads(model)
        out: dict[str, torch.Tensor] = {}
        for kind, units in self.chosen(umap).items():
            for layer, i in units:
                if kind == "mlp":
                    site = f"blocks.{layer}.mlp.act"
                    width = len(umap.classes["mlp"][layer])
                    lo, hi = i, i + 1
                else:
                    site = f"blocks.{layer}.attn.z"
                    width = _attn_width(model, layer)
                    d_head = width // heads
                    lo, hi = i * d_head, (i + 1) * d_head
                mask = out.setdefault(site, torch.ones(width))
                mask[lo:hi] = 0.0
        return out

    def prepare(self, lm: Any, sites: list[str]) -> None:
        """Refuse a site selection that holds none of the chosen units: pruning would change
        nothing, and every "pruned" condition would silently be the clean model."""
        chosen = self.masks(lm.ensure_weights(), UnitMap.load(self.params.units))
        if chosen and not set(chosen) & set(sites):
            raise SafestressError(
                f"prune: none of the {len(sites)} selected sites ({sites[0]}, …) holds a unit of "
                f"'{self.params.unit_class}'; units sit at blocks.L.mlp.act and blocks.L.attn.z "
                "(--sites 'blocks.*.mlp.act,blocks.*.attn.z')"
            )

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        umap = UnitMap.load(self.params.units)
        wanted = set(sites)
        masks = {s: m for s, m in self.masks(model, umap).items() if s in wanted}

        def fn_for(mask: torch.Tensor):
            def fn(x: torch.Tensor) -> torch.Tensor:
                return x * mask.to(x.device, x.dtype)

            return fn

        with site_hooks(model, {s: fn_for(m) for s, m in masks.items()}):
            yield

    def pruned_sites(self, model: nn.Module) -> list[str]:
        return sorted(self.masks(model, UnitMap.load(self.params.units)), key=lambda s: parse_site(s)[0] or 0)


def _attn_width(model: nn.Module, layer: int) -> int:
    from safestress.attribution.scores import _b_modules, _columns

    _, out = _b_modules(model)
    return int(_columns(out[layer]).shape[1])
