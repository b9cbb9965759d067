"""Additive Gaussian and Laplace noise at activation sites.

``sigma`` is absolute (same units as the activation) or, with ``scale="relative"``, a fraction
of each token's own RMS at that site. Relative is offered because one absolute σ means very
different things across blocks: residual streams carry a few "massive activations" (RMS ≈ 0.3
after block 0 but ≈ 12 from block 4 on in Qwen2.5-0.5B), and a whole-tensor standard deviation
is dominated by those few dimensions. Per-token RMS keeps the signal-to-noise ratio fixed.

For Laplace noise σ is the standard deviation too (scale b = σ/√2), so the two distributions are
compared at equal power. ``positions="generated"`` leaves the prompt untouched and perturbs only
tokens the model produces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from safestress.perturb import rng
from safestress.perturb.base import Params, Perturbation
from safestress.perturb.context import RowContext
from safestress.sites.hooks import SiteFn, site_hooks


class NoiseParams(Params):
    sigma: float = Field(0.0, ge=0.0, description="noise standard deviation (absolute or relative)")
    scale: Literal["absolute", "relative"] = "absolute"
    positions: Literal["all", "generated"] = "all"

    @field_validator("sigma")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("sigma must be a finite number")
        return v


# Largest number of values drawn in one pass for several sites at once (int64 temporaries are
# 8 bytes each): decoding steps fit, long prefills fall back to one site at a time.
FUSED_BUDGET = 4_000_000


class GaussianNoise(Perturbation):
    """x ← x + σ·s·ε with ε ~ N(0, 1) from the counter-based generator (s = 1 or the token RMS).

    The noise of one forward is drawn for all hooked sites of equal width in a single vectorised
    pass when that is small (decoding steps), which keeps the per-site cost at two tensor ops;
    the values are the same as drawing site by site.
    """

    name = "gaussian"
    Params: ClassVar = NoiseParams
    row_params = ("sigma",)
    transform = staticmethod(rng.normal_from_signed)
    version = 2

    def is_identity(self) -> bool:
        return self.params.sigma == 0.0

    def leaves_prompt(self, row_values: dict[str, float]) -> bool:
        return self.params.positions == "generated" or row_values.get("sigma", self.params.sigma) == 0.0

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        site_ids = {s: rng.name_hash32(s) for s in sites}
        widths: dict[str, int] = {}

        def draw(site: str, x: torch.Tensor) -> torch.Tensor:
            batch, tokens, feats = x.shape[0], x.shape[1], x.shape[-1]
            cached = ctx.cache.pop(site, None)
            if cached is not None and cached.shape == (batch, tokens, feats):
                return cached
            widths[site] = feats
            device = str(x.device)
            rowpos = ctx.row_position_hash(batch, tokens, x.device)
            group = [s for s in sites if widths.get(s) == feats and s not in ctx.cache]
            if len(group) > 1 and len(group) * batch * tokens * feats <= FUSED_BUDGET:
                tables = torch.stack([rng.feature_table(site_ids[s], feats, 0, device) for s in group])
                eps = self.transform(rng.signed_unit(rng.hashed_bits(rowpos, tables[:, None, None, :])))
                for i, s in enumerate(group):
                    if s != site:
                        ctx.cache[s] = eps[i]
                return eps[group.index(site)]
            table = rng.feature_table(site_ids[site], feats, 0, device)
            return self.transform(rng.signed_unit(rng.hashed_bits(rowpos, table)))

        with site_hooks(model, {site: self._site_fn(site, ctx, draw) for site in sites}):
            yield

    def _site_fn(self, site: str, ctx: RowContext, draw: Callable[[str, torch.Tensor], torch.Tensor]) -> SiteFn:
        p = self.params

        def fn(x: torch.Tensor) -> torch.Tensor:
            batch, tokens = x.shape[0], x.shape[1]
            eps = draw(site, x)
            sigma = ctx.param("sigma", p.sigma, batch, x.device, torch.float32)
            if p.scale == "relative":
                sigma = sigma * x.float().pow(2).mean(-1, keepdim=True).sqrt()
            if p.positions == "generated":
                sigma = sigma * ctx.generated_mask(batch, tokens, x.device)[..., None]
            if x.dtype == torch.float32:
                return torch.addcmul(x, sigma, eps)
            return x + (sigma * eps).to(x.dtype)

        return fn


class LaplaceNoise(GaussianNoise):
    """As :class:`GaussianNoise` with Laplace ε of unit standard deviation (heavier tails)."""

    name = "laplace"
    transform = staticmethod(rng.laplace_from_signed)
