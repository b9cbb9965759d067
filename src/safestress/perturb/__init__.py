"""Perturbations: a registry of classes that change activations at canonical sites.

``PERTURBATIONS.get(name)(**params)`` builds one; :func:`perturbed` applies it in a ``with`` block.
"""

from __future__ import annotations

from typing import Any

from safestress.perturb.base import Identity, Params, Perturbation, PerturbedModel, perturbed
from safestress.registry import Registry

PERTURBATIONS: Registry[type[Perturbation]] = Registry("perturbation")
PERTURBATIONS.register("none", Identity)
PERTURBATIONS.register("noise", "safestress.perturb.noise:GaussianNoise")
PERTURBATIONS.register("gaussian", "safestress.perturb.noise:GaussianNoise")
PERTURBATIONS.register("laplace", "safestress.perturb.noise:LaplaceNoise")
PERTURBATIONS.register("prune", "safestress.attribution.prune:Prune")
PERTURBATIONS.register("ablate-direction", "safestress.attribution.direction:DirectionAblation")
PERTURBATIONS.register("add-direction", "safestress.attribution.direction:DirectionAddition")
PERTURBATIONS.register("polynomial", "safestress.approx.polynomial:PolynomialActivation")
PERTURBATIONS.register("teal", "safestress.approx.sparsify:Teal")
PERTURBATIONS.register("cats", "safestress.approx.sparsify:Cats")
PERTURBATIONS.register("quant", "safestress.approx.quantize:ActivationQuant")
PERTURBATIONS.register("smoothquant", "safestress.approx.quantize:SmoothQuant")
PERTURBATIONS.register("omniquant", "safestress.approx.quantize:OmniQuant")


def make_perturbation(name: str, **params: Any) -> Perturbation:
    """Build the registered perturbation ``name`` with ``params`` (validated; errors are one line)."""
    cls = PERTURBATIONS.get(name)
    obj = cls(**params)
    return obj


__all__ = ["PERTURBATIONS", "Identity", "Params", "Perturbation", "PerturbedModel", "make_perturbation", "perturbed"]
