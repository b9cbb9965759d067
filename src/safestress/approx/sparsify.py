"""Activation sparsification: TEAL and CATS, with thresholds calibrated on the model itself.

**TEAL** (Liu et al., *Training-Free Activation Sparsity in Large Language Models*, 2024) zeroes
the entries of a projection's input whose magnitude is below a threshold chosen so that a target
share of entries is zero on calibration data. The inputs of all projections are canonical sites:
``ln1.out`` (q/k/v), ``attn.z`` (o), ``ln2.out`` (gate/up) and ``mlp.act`` (down), which is the
default selection. Thresholds are per site (per tensor), the same target sparsity at every site
— TEAL's uniform setting; TEAL's greedy per-block allocation is not implemented.

**CATS** (Lee et al., *CATS: Contextually-Aware Thresholding for Sparsity in LLMs*, 2024) zeroes
the output of the gate activation, act(gate), where its magnitude is below a per-layer threshold
set by the same quantile rule; the product with ``up`` and the down projection then skip those
channels. It applies to the blocks of the selected ``blocks.L.mlp.act`` sites.

The thresholds are a quantile of |x| over calibration prompts (``calib``, ``calib_n``), measured
once and cached (:mod:`safestress.approx.calibrate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import Field

from safestress.approx.calibrate import SiteStats, act_fn_key, calibrated_stats, require_prepared
from safestress.errors import SafestressError
from safestress.perturb.base import Params, Perturbation
from safestress.perturb.context import RowContext
from safestress.sites.hooks import site_hooks
from safestress.sites.names import parse_site

PROJECTION_INPUTS = ("ln1.out", "attn.z", "ln2.out", "mlp.act")


class SparsityParams(Params):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="target share of zeroed entries")
    calib: str = "harmless-val"
    calib_n: int = Field(32, ge=1)


def _zero_below(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < threshold.to(x.dtype), torch.zeros_like(x), x)


class Teal(Perturbation):
    """Magnitude sparsification of projection inputs at a calibrated per-site threshold."""

    name = "teal"
    Params: ClassVar = SparsityParams
    strength = "sparsity"
    default_strengths = (0.0, 0.25, 0.5, 0.9)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.stats: dict[str, SiteStats] | None = None

    def is_identity(self) -> bool:
        return self.params.sparsity == 0.0

    def targets(self, sites: list[str]) -> list[str]:
        chosen = [s for s in sites if parse_site(s)[1] in PROJECTION_INPUTS]
        if not chosen:
            raise SafestressError(
                "perturbation 'teal' sparsifies projection inputs: select ln1.out, attn.z, ln2.out or mlp.act sites"
            )
        return chosen

    def prepare(self, lm: Any, sites: list[str]) -> None:
        self.stats = calibrated_stats(self, lm, self.targets(sites))

    def thresholds(self, sites: list[str]) -> dict[str, torch.Tensor]:
        stats = require_prepared(self.stats, self.name)
        return {s: stats[s].abs_quantile(self.params.sparsity) for s in self.targets(sites)}

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        fns = {s: (lambda x, t=t: _zero_below(x, t.to(x.device))) for s, t in self.thresholds(sites).items()}
        with site_hooks(model, fns):
            yield


class Cats(Teal):
    """Thresholding of act(gate) at a calibrated per-layer threshold (CATS)."""

    name = "cats"

    def layers(self, sites: list[str]) -> list[int]:
        layers = sorted({layer for layer, suffix in map(parse_site, sites) if suffix == "mlp.act"})
        if not layers:
            raise SafestressError("perturbation 'cats' thresholds the gate activation: select blocks.L.mlp.act sites")
        return layers

    def prepare(self, lm: Any, sites: list[str]) -> None:
        self.stats = calibrated_stats(self, lm, [act_fn_key(layer) for layer in self.layers(sites)])

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        from safestress.sites.adapters import adapter_for, resolve_module

        stats = require_prepared(self.stats, self.name)
        adapter = adapter_for(model)
        handles = []
        try:
            for layer in self.layers(sites):
                act = resolve_module(model, f"{adapter.layers}.{layer}.{adapter.mlp_act_fn}")
                t = stats[act_fn_key(layer)].abs_quantile(self.params.sparsity)
                handles.append(act.register_forward_hook(lambda _m, _a, out, t=t: _zero_below(out, t.to(out.device))))
            yield
        finally:
            for h in handles:
                h.remove()
