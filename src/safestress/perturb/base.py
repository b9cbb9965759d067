"""The perturbation contract and the ``perturbed`` context manager.

A perturbation is a registered class with validated parameters. It turns a list of sites into
hook functions; :func:`perturbed` installs them together with the row-position tracker and
removes everything in ``finally``. Parameters listed in ``row_params`` (``sigma`` for noise) may
differ per row of one batch, so a σ sweep runs as one batched job rather than one job per σ.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, ValidationError

from safestress.errors import SafestressError
from safestress.perturb.context import RowContext, tracking
from safestress.sites.hooks import SiteFn, site_hooks


class Params(BaseModel):
    """Base of every perturbation's parameter model: strict, frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Perturbation:
    """Base class. Subclasses set ``name``, ``Params`` and implement :meth:`site_fn` (one hook
    function per site) or override :meth:`install` (hooks that share work across sites, or that
    also change weights)."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[Params]] = Params
    row_params: ClassVar[tuple[str, ...]] = ()
    # The parameter a sweep's strengths (``--strength``) set when it is not a row parameter
    # (e.g. TEAL's ``sparsity``): each strength is then its own batch rather than a row value.
    strength: ClassVar[str | None] = None
    default_strengths: ClassVar[tuple[float, ...] | None] = None  # None: the sweep's default
    # Bump when the numbers a perturbation produces change, so stored results are not reused.
    version: ClassVar[int] = 1

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "parameters"
            raise SafestressError(f"perturbation '{self.name}': {where}: {err['msg']}") from None

    @classmethod
    def strength_param(cls) -> str | None:
        """The parameter a sweep's strengths set: ``strength``, else the first row parameter (σ
        for noise); None for a perturbation without one (prune, ablate-direction)."""
        return cls.strength or (cls.row_params[0] if cls.row_params else None)

    @classmethod
    def at_strength(
        cls, strength: float | None, params: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
    ) -> Perturbation:
        """This perturbation at ``strength`` (ignored without a strength parameter), with
        ``params`` and, for the parameters it has that ``params`` does not set, the caller's
        ``defaults`` (a sweep's ``scale`` and ``positions``). Callers never need to know which
        parameter is the strength, or which optional settings a perturbation takes."""
        return cls(**cls.parameters_at(strength, params, defaults))

    @classmethod
    def parameters_at(
        cls, strength: float | None, params: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The keyword arguments :meth:`at_strength` builds with: the strength parameter (the
        strength wins over a ``params`` entry of the same name), the defaults this perturbation
        takes, and ``params``, which override the defaults."""
        values: dict[str, Any] = {}
        name = cls.strength_param()
        if name is not None and strength is not None:
            values[name] = strength
        values |= {key: value for key, value in (defaults or {}).items() if key in cls.Params.model_fields}
        values |= dict(params or {})
        if name is not None and strength is not None:
            values[name] = strength
        return values

    def fingerprint(self) -> dict[str, Any]:
        """Everything about this perturbation that determines outputs (hashed into the store key)."""
        return {"name": self.name, "version": self.version, **self.params.model_dump(mode="json")}

    def group_fingerprint(self) -> dict[str, Any]:
        """The fingerprint without per-row parameters: configurations that share it can share a batch."""
        fp = self.fingerprint()
        for name in self.row_params:
            fp.pop(name, None)
        return fp

    def is_identity(self) -> bool:
        """True when this perturbation changes nothing (e.g. σ = 0); the runner then treats it as clean."""
        return False

    def leaves_prompt(self, row_values: dict[str, float]) -> bool:
        """True when a row with these row parameters runs the prompt forward unperturbed, so that
        rows with the same prompt can share it (:mod:`safestress.decoding`). Only a perturbation
        that changes nothing can say so by default; noise says so at σ = 0 or on generated
        positions only."""
        return self.is_identity() and not any(row_values.values())

    def prepare(self, lm: Any, sites: list[str]) -> None:
        """Calibrate against the loaded model before hooks go in (called by :func:`perturbed` when
        it is given a :class:`~safestress.models.LoadedModel`); calibrating perturbations cache
        what they measure, so this runs once per model, data and settings."""

    def site_fn(self, site: str, ctx: RowContext) -> SiteFn:
        raise NotImplementedError

    @contextmanager
    def install(self, model: nn.Module, sites: list[str], ctx: RowContext) -> Iterator[None]:
        """Install the hooks; override for perturbations that also change weights (always restoring them)."""
        with site_hooks(model, {site: self.site_fn(site, ctx) for site in sites}):
            yield

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{self.name}({args})"


class Identity(Perturbation):
    """No perturbation: the clean baseline of every sweep."""

    name = "none"

    @classmethod
    def at_strength(
        cls, strength: float | None, params: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
    ) -> Perturbation:
        return cls()  # the clean run: any strength or parameter means nothing to it

    def is_identity(self) -> bool:
        return True

    def site_fn(self, site: str, ctx: RowContext) -> SiteFn:
        return lambda x: None


class PerturbedModel:
    """What ``with perturbed(...)`` yields: the row context that :func:`safestress.generate` fills."""

    def __init__(self, model: nn.Module, perturbation: Perturbation, sites: list[str], ctx: RowContext) -> None:
        self.model = model
        self.perturbation = perturbation
        self.sites = sites
        self.ctx = ctx


@contextmanager
def perturbed(lm: Any, perturbation: Perturbation, sites: list[str] | str | None = None) -> Iterator[PerturbedModel]:
    """Apply ``perturbation`` at ``sites`` of ``lm`` (a :class:`~safestress.models.LoadedModel` or a
    plain ``nn.Module``) inside the block; everything is removed on exit, also after an exception.
    """
    # a LoadedModel carries its module in .model; a bare HF module's own .model is its trunk
    loaded = not isinstance(lm, nn.Module)
    model: nn.Module = lm.ensure_weights() if loaded else lm
    if isinstance(sites, str) or sites is None:
        from safestress.sites import num_layers, select_sites

        sites = select_sites(sites or "blocks.*.resid_post", num_layers(model))
    if loaded and not perturbation.is_identity():
        perturbation.prepare(lm, list(sites))
    ctx = RowContext()
    state = PerturbedModel(model, perturbation, list(sites), ctx)
    with ExitStack() as stack:
        stack.enter_context(tracking(model, ctx))
        # With row parameters a batch may mix strengths, so even a σ = 0 instance installs its
        # hooks (adding an exact zero to σ = 0 rows).
        if perturbation.row_params or not perturbation.is_identity():
            stack.enter_context(perturbation.install(model, list(sites), ctx))
        previous = getattr(model, "_safestress_active", None)
        model._safestress_active = state  # type: ignore[attr-defined]
        stack.callback(setattr, model, "_safestress_active", previous)
        yield state


def active_context(model: nn.Module) -> RowContext | None:
    state = getattr(model, "_safestress_active", None)
    return None if state is None else state.ctx


def as_row_tensor(values: list[float] | None, device: torch.device) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32, device=device)
