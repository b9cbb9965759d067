"""Polynomial replacement of the MLP activation function, as private-inference schemes do.

Cryptographic inference (MPC/HE) cannot evaluate SiLU or GELU exactly, so schemes replace them
with piecewise polynomials: 0 far left, the identity far right, low-degree polynomials between.
:class:`Piecewise` is such a function; :func:`fit` fits one piece to the model's *own*
activation (whatever its ``act_fn`` computes) by least squares or by the Remez exchange
algorithm (minimax: the smallest possible maximum error for the degree).

Presets give the segment layouts and degrees of published schemes; the coefficients are always
fitted here to the model's activation, because the papers fit GELU and most chat models use
SiLU. Sources (segment boundaries and degrees, as we read the papers):

- ``bumblebee``: Lu et al., *BumbleBee: Secure Two-party Inference Framework for Large
  Transformers*, NDSS 2025 — 0 below −5, degree 3 on [−5, −1.97], degree 6 on [−1.97, 3],
  identity above 3.
- ``bolt``: Pang et al., *BOLT: Privacy-Preserving, Accurate and Efficient Inference for
  Transformers*, IEEE S&P 2024 — 0 below −2.7, degree 4 on [−2.7, 2.7], identity above.
- ``mpcformer-quad``: Li et al., *MPCFormer*, ICLR 2023 — the published "Quad" replacement
  0.125x² + 0.25x + 0.5 everywhere (not fitted; MPCFormer distils the model to it, so applied
  to an undistilled model it is the crudest setting).

``segments``/``degrees`` define any other layout (``segments="-4,0,4" degrees="3,3"``).
The replacement hooks the activation module's output (``register_forward_hook``) and is removed
on exit like every other perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import model_validator

from safestress.errors import SafestressError
from safestress.perturb.base import Params, Perturbation
from safestress.perturb.context import RowContext
from safestress.sites.names import parse_site

Fn = Callable[[np.ndarray], np.ndarray]

PRESETS: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = {
    # name: (inner breakpoints, degree per inner segment)
    "bumblebee": ((-5.0, -1.97, 3.0), (3, 6)),
    "bolt": ((-2.7, 2.7), (4,)),
}
QUAD = np.array([0.5, 0.25, 0.125])  # MPCFormer's Quad, power basis c0 + c1 x + c2 x^2


def _to_unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (2.0 * x - (lo + hi)) / (hi - lo)


def fit_lsq(f: Fn, lo: float, hi: float, degree: int, n: int = 8193) -> np.ndarray:
    """Least-squares Chebyshev coefficients (on [lo, hi] mapped to [−1, 1]) on a dense uniform grid."""
    x = np.linspace(lo, hi, n)
    return np.polynomial.chebyshev.chebfit(_to_unit(x, lo, hi), f(x), degree)


def fit_minimax(f: Fn, lo: float, hi: float, degree: int, n: int = 20001, iters: int = 60) -> np.ndarray:
    """Minimax coefficients by the Remez exchange algorithm on a dense grid.

    Solves for the polynomial whose error equioscillates on ``degree + 2`` reference points,
    moves the reference to the error's alternating extrema, and stops when the levelled error
    equals the maximum error (to 1e-9 relative).
    """
    x = np.linspace(lo, hi, n)
    t = _to_unit(x, lo, hi)
    y = f(x)
    m = degree + 2
    ref = np.searchsorted(t, -np.cos(np.pi * np.arange(m) / (m - 1)))
    ref = np.clip(ref, 0, n - 1)
    coeffs = fit_lsq(f, lo, hi, degree)
    for _ in range(iters):
        basis = np.polynomial.chebyshev.chebvander(t[ref], degree)
        a = np.hstack([basis, ((-1.0) ** np.arange(m))[:, None]])
        try:
            sol = np.linalg.solve(a, y[ref])
        except np.linalg.LinAlgError:
            break
        coeffs, level = sol[:-1], abs(sol[-1])
        err = y - np.polynomial.chebyshev.chebval(t, coeffs)
        ext = _alternating_extrema(err)
        while len(ext) > m:  # drop the smaller end until m remain; alternation is kept
            if abs(err[ext[0]]) < abs(err[ext[-1]]):
                ext.pop(0)
            else:
                ext.pop()
        if len(ext) < m:
            break
        worst = np.abs(err).max()
        ref = np.array(ext)
        if worst - level <= 1e-9 * max(worst, 1e-300):
            break
    return coeffs


def _alternating_extrema(err: np.ndarray) -> list[int]:
    """Indices of the local extrema of ``err`` (endpoints included) with alternating signs: of
    consecutive extrema of one sign the larger is kept; an extremum of exactly zero takes the
    sign opposite to its neighbour (it can serve either way)."""
    d = np.diff(err)
    interior = np.flatnonzero(d[:-1] * d[1:] <= 0) + 1
    idx = [0, *interior.tolist(), len(err) - 1]
    sign = np.sign(err[idx])
    for i in range(len(idx)):
        if sign[i] == 0:
            neighbour = sign[i + 1] if i + 1 < len(idx) and sign[i + 1] != 0 else (sign[i - 1] if i else 1.0)
            sign[i] = -neighbour if neighbour != 0 else 1.0
    out: list[int] = []
    last = 0.0
    for i, s in zip(idx, sign):
        if out and s == last:
            if abs(err[i]) > abs(err[out[-1]]):
                out[-1] = i
            continue
        out.append(i)
        last = s
    return out


@dataclass(frozen=True)
class Piece:
    lo: float
    hi: float
    kind: Literal["zero", "identity", "cheb", "power"]
    coeffs: tuple[float, ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "zero":
            return torch.zeros_like(x)
        if self.kind == "identity":
            return x
        if self.kind == "power":
            out = torch.zeros_like(x)
            for c in reversed(self.coeffs):
                out = out * x + c
            return out
        t = (2.0 * x.clamp(self.lo, self.hi) - (self.lo + self.hi)) / (self.hi - self.lo)
        # Clenshaw recurrence for sum c_k T_k(t)
        b1 = torch.zeros_like(t)
        b2 = torch.zeros_like(t)
        for c in reversed(self.coeffs[1:]):
            b1, b2 = 2.0 * t * b1 - b2 + c, b1
        return t * b1 - b2 + self.coeffs[0]


@dataclass(frozen=True)
class Piecewise:
    """A function of x made of pieces on consecutive intervals covering the real line."""

    pieces: tuple[Piece, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = self.pieces[0](xf)
        for piece in self.pieces[1:]:
            out = torch.where(xf >= piece.lo, piece(xf), out)
        return out.to(x.dtype)

    def piece_errors(self, f: Fn, n: int = 20001) -> list[tuple[float, float, int, float]]:
        """(lo, hi, degree, max error on [lo, hi]) of every fitted polynomial piece."""
        out = []
        for piece in self.pieces:
            if piece.kind == "cheb":
                x = np.linspace(piece.lo, piece.hi, n)
                err = np.abs(piece(torch.from_numpy(x)).numpy() - f(x)).max()
                out.append((piece.lo, piece.hi, len(piece.coeffs) - 1, float(err)))
        return out

    def max_error(self, f: Fn, lo: float, hi: float, n: int = 200001) -> float:
        """max |p(x) − f(x)| on a dense grid of [lo, hi] (tails included)."""
        x = np.linspace(lo, hi, n)
        p = self(torch.from_numpy(x).float()).double().numpy()
        return float(np.abs(p - f(x)).max())


def build(
    f: Fn, breakpoints: tuple[float, ...], degrees: tuple[int, ...], method: Literal["lsq", "minimax"]
) -> Piecewise:
    """0 left of the first breakpoint, fitted polynomials between, identity right of the last."""
    if len(degrees) != len(breakpoints) - 1:
        raise SafestressError(f"{len(breakpoints)} breakpoints need {len(breakpoints) - 1} degrees, got {len(degrees)}")
    if any(b >= a for a, b in zip(breakpoints[1:], breakpoints[:-1])) or not breakpoints:
        raise SafestressError("breakpoints must increase")
    fitter = fit_minimax if method == "minimax" else fit_lsq
    pieces = [Piece(-np.inf, breakpoints[0], "zero")]
    for lo, hi, deg in zip(breakpoints[:-1], breakpoints[1:], degrees):
        pieces.append(Piece(lo, hi, "cheb", tuple(float(c) for c in fitter(f, lo, hi, deg))))
    pieces.append(Piece(breakpoints[-1], np.inf, "identity"))
    return Piecewise(tuple(pieces))


def numpy_fn(module: nn.Module) -> Fn:
    """The activation module as a float64 numpy function (what the polynomial is fitted to)."""

    def f(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.asarray(x, dtype=np.float64))).double().numpy()

    return f


def _floats(v: str | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    if isinstance(v, str):
        return tuple(float(p) for p in v.split(",") if p.strip())
    return tuple(float(p) for p in v)


class PolyParams(Params):
    preset: Literal["bumblebee", "bolt", "mpcformer-quad", "custom"] = "bumblebee"
    method: Literal["lsq", "minimax"] = "minimax"
    segments: str = ""  # custom: comma-separated breakpoints
    degrees: str = ""  # custom: comma-separated degree per segment

    @model_validator(mode="after")
    def _custom(self) -> PolyParams:
        if self.preset == "custom":
            if not self.segments or not self.degrees:
                raise ValueError("preset=custom needs segments=B0,B1,... and degrees=D1,...")
            b, d = _floats(self.segments), _floats(self.degrees)
            if len(d) != len(b) - 1 or any(x < 0 or x != int(x) for x in d):
                raise ValueError("degrees must be one non-negative integer per segment (len(segments) - 1)")
        elif self.segments or self.degrees:
            raise ValueError("segments/degrees apply to preset=custom only")
        return self


def approximation(params: PolyParams, act: nn.Module) -> Piecewise:
    """The piecewise polynomial ``params`` describe, fitted to ``act``."""
    if params.preset == "mpcformer-quad":
        return Piecewise((Piece(-np.inf, np.inf, "power", tuple(QUAD)),))
    if params.preset == "custom":
        breakpoints = _floats(params.segments)
        degrees = tuple(int(d) for d in _floats(params.degrees))
    else:
        breakpoints, degrees = PRESETS[params.preset]
    return build(numpy_fn(act), breakpoints, degrees, params.method)


class PolynomialActivation(Perturbation):
    """Replace the MLP activation of the selected blocks by a fitted piecewise polynomial.

    Applies to the blocks of the selected ``blocks.L.mlp.act`` sites (the activation feeds that
    site): ``--sites "blocks.*.mlp.act"`` replaces it everywhere, ``blocks.0-3.mlp.act`` in the
    first four blocks.
    """

    name = "polynomial"
    Params: ClassVar = PolyParams

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        from safestress.sites.adapters import adapter_for, resolve_module

        adapter = adapter_for(model)
        layers = sorted({layer for layer, suffix in map(parse_site, sites) if suffix == "mlp.act"})
        if not layers:
            raise SafestressError(
                "perturbation 'polynomial' replaces the MLP activation: select blocks.L.mlp.act sites"
            )
        handles = []
        fitted: dict[int, Piecewise] = {}
        try:
            for layer in layers:
                act = resolve_module(model, f"{adapter.layers}.{layer}.{adapter.mlp_act_fn}")
                if id(act) not in fitted:  # shared activation modules are fitted and hooked once
                    poly = fitted[id(act)] = approximation(self.params, act)
                    handles.append(act.register_forward_hook(lambda _m, args, _out, poly=poly: poly(args[0])))
            yield
        finally:
            for h in handles:
                h.remove()
