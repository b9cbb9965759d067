"""Activation fake-quantization: plain, SmoothQuant and OmniQuant-style calibrated clipping.

Weights stay in full precision (the W16A8 / W16A4 settings of the activation-approximation
literature); a projection's input x is replaced by its quantize-dequantize x̂, so the model
computes exactly what an integer kernel with that activation format would, up to float rounding.

- ``quant``: round to ``bits`` bits, ``per-token`` (dynamic range of each token's vector) or
  ``per-tensor`` (one static range per site, calibrated on ``calib`` prompts), symmetric or
  asymmetric (with a zero point). For values inside the range the error is at most half a
  step (symmetric) or one step (asymmetric, where the zero point is rounded).
- ``smoothquant`` (Xiao et al., ICML 2023): migrates quantization difficulty from activations to
  weights with per-channel scales s_j = max|X_j|^α / max|W_:,j|^(1−α) over calibration data:
  the model computes (W·diag(s))·Q(x/s). Because weights are not quantized here, that equals
  W·(s ⊙ Q(x/s)), which is what the hook computes, leaving the weights untouched; with no
  quantization (``bits=0``) the output is unchanged.
- ``omniquant``: the clipping strength γ of the quantization range is chosen per site to
  minimise the error of the projections' outputs, ‖W(x̂_γ − x)‖², on calibration tokens — the
  objective of OmniQuant's learnable clipping (Shao et al., ICLR 2024), applied to activations
  and solved by a search over γ ∈ [0.5, 1] (a one-parameter problem needs no gradient
  descent); OmniQuant's learnable equivalent transformation is not included.

``bits`` is the sweep strength (``--strength 0,8,4``); ``bits=0`` is the unquantized model.
The default sites are the projection inputs ``ln1.out``, ``attn.z``, ``ln2.out``, ``mlp.act``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field

from safestress.approx.calibrate import SiteStats, calibrated_stats, require_prepared
from safestress.approx.sparsify import PROJECTION_INPUTS
from safestress.errors import SafestressError
from safestress.perturb.base import Params, Perturbation
from safestress.perturb.context import RowContext
from safestress.sites.hooks import site_hooks
from safestress.sites.names import parse_site

Granularity = Literal["per-token", "per-tensor"]


def fake_quant(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize ``x`` to ``bits`` bits over the range [lo, hi] (broadcast against x)."""
    xf = x.float()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        step = (torch.maximum(lo.abs(), hi.abs()) / qmax).clamp_min(1e-12)
        out = torch.clamp(torch.round(xf / step), -qmax, qmax) * step
    else:
        levels = 2**bits - 1
        step = ((hi - lo) / levels).clamp_min(1e-12)
        zero = torch.round(-lo / step)
        out = (torch.clamp(torch.round(xf / step) + zero, 0, levels) - zero) * step
    return out.to(x.dtype)


def step_size(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The quantization step for the range [lo, hi]."""
    if symmetric:
        return torch.maximum(lo.abs(), hi.abs()) / (2 ** (bits - 1) - 1)
    return (hi - lo) / (2**bits - 1)


def token_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float()
    return xf.amin(-1, keepdim=True), xf.amax(-1, keepdim=True)


class QuantParams(Params):
    bits: int = Field(8, ge=0, le=16, description="activation bits; 0 = not quantized")
    granularity: Granularity = "per-token"
    symmetric: bool = True
    calib: str = "harmless-val"
    calib_n: int = Field(32, ge=1)


class ActivationQuant(Perturbation):
    """Fake-quantization of projection inputs (per-token dynamic or per-tensor static)."""

    name = "quant"
    Params: ClassVar = QuantParams
    strength = "bits"
    default_strengths = (0.0, 8.0, 4.0)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params.bits == 1:
            raise SafestressError(f"perturbation '{self.name}': bits must be 0 (off) or at least 2")
        self.stats: dict[str, SiteStats] | None = None

    def is_identity(self) -> bool:
        return self.params.bits == 0

    def needs_calibration(self) -> bool:
        return self.params.granularity == "per-tensor"

    def targets(self, sites: list[str]) -> list[str]:
        chosen = [s for s in sites if parse_site(s)[1] in PROJECTION_INPUTS]
        if not chosen:
            raise SafestressError(
                f"perturbation '{self.name}' quantizes projection inputs: "
                "select ln1.out, attn.z, ln2.out or mlp.act sites"
            )
        return chosen

    def prepare(self, lm: Any, sites: list[str]) -> None:
        if self.needs_calibration():
            self.stats = calibrated_stats(self, lm, self.targets(sites))

    def site_quantizer(self, model: nn.Module, site: str) -> Any:
        """The function x → x̂ for one site."""
        p = self.params
        if p.granularity == "per-token":
            return lambda x: fake_quant(x, *token_range(x), p.bits, p.symmetric)
        st = require_prepared(self.stats, self.name)[site]
        lo, hi = st.amin.min(), st.amax.max()
        return lambda x: fake_quant(x, lo.to(x.device), hi.to(x.device), p.bits, p.symmetric)

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        with site_hooks(model, {s: self.site_quantizer(model, s) for s in self.targets(sites)}):
            yield


class SmoothParams(QuantParams):
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="migration strength")


def weight_absmax(model: nn.Module, site: str) -> torch.Tensor:
    """max over the site's consumer projections of |W[:, j]| per input channel j."""
    from safestress.sites.adapters import consumers, input_columns

    mods = consumers(model, site)
    if not mods:
        raise SafestressError(f"site '{site}' feeds no projection")
    return torch.stack([input_columns(m).detach().abs().amax(0).float().cpu() for m in mods]).amax(0)


class SmoothQuant(ActivationQuant):
    """SmoothQuant: per-channel smoothing scales calibrated on the model, then fake-quantization."""

    name = "smoothquant"
    Params: ClassVar = SmoothParams

    def needs_calibration(self) -> bool:
        return True

    def scales(self, model: nn.Module, site: str) -> torch.Tensor:
        st = require_prepared(self.stats, self.name)[site]
        a = self.params.alpha
        s = st.absmax.clamp_min(1e-5) ** a / weight_absmax(model, site).clamp_min(1e-5) ** (1 - a)
        return s.clamp_min(1e-5)

    def site_quantizer(self, model: nn.Module, site: str) -> Any:
        p = self.params
        s = self.scales(model, site)
        if p.granularity == "per-token":

            def fn(x: torch.Tensor) -> torch.Tensor:
                sx = s.to(x.device)
                xs = x.float() / sx
                return (fake_quant(xs, *token_range(xs), p.bits, p.symmetric) * sx).to(x.dtype)

            return fn
        st = require_prepared(self.stats, self.name)[site]
        lo, hi = (st.amin / s).min(), (st.amax / s).max()

        def fn_static(x: torch.Tensor) -> torch.Tensor:
            sx = s.to(x.device)
            q = fake_quant(x.float() / sx, lo.to(x.device), hi.to(x.device), p.bits, p.symmetric)
            return (q * sx).to(x.dtype)

        return fn_static


GAMMAS = tuple(round(1.0 - 0.02 * i, 2) for i in range(26))  # 1.00, 0.98, …, 0.50


class OmniQuant(ActivationQuant):
    """Fake-quantization with a per-site clipping strength fitted to the projections' outputs."""

    name = "omniquant"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.gamma: dict[str, float] = {}

    def needs_calibration(self) -> bool:
        return True

    def prepare(self, lm: Any, sites: list[str]) -> None:
        super().prepare(lm, sites)
        model = lm.ensure_weights()
        for site in self.targets(sites):
            self.gamma[site] = self.fit_gamma(model, site)

    def _range(self, x: torch.Tensor, site: str, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.params.granularity == "per-token":
            lo, hi = token_range(x)
        else:
            st = require_prepared(self.stats, self.name)[site]
            lo, hi = st.amin.min(), st.amax.max()
        return gamma * lo.to(x.device), gamma * hi.to(x.device)

    def fit_gamma(self, model: nn.Module, site: str) -> float:
        """The γ in :data:`GAMMAS` minimising Σ_consumers ‖W(x̂_γ − x)‖² on the calibration rows."""
        from safestress.sites.adapters import consumers, input_columns

        x = require_prepared(self.stats, self.name)[site].rows
        weights = [input_columns(m).detach().float().cpu() for m in consumers(model, site)]
        best, best_err = 1.0, float("inf")
        with torch.no_grad():
            for gamma in GAMMAS:
                delta = fake_quant(x, *self._range(x, site, gamma), self.params.bits, self.params.symmetric) - x
                err = sum(float((delta @ w.t()).pow(2).sum()) for w in weights)
                if err < best_err:
                    best, best_err = gamma, err
        return best

    def site_quantizer(self, model: nn.Module, site: str) -> Any:
        gamma = require_prepared(self.gamma or None, self.name)[site]
        p = self.params
        return lambda x: fake_quant(x, *self._range(x, site, gamma), p.bits, p.symmetric)
