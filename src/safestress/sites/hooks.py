"""Hook installation at canonical sites, always undone in ``finally``.

``site_hooks`` takes ``{site: fn}`` where ``fn(tensor) -> tensor`` sees the activation at the
site (``[batch, tokens, features]``) and returns its replacement (or the same tensor). The
context manager removes every handle on exit, including when the body raises, so an exception
inside a perturbation can never leak a hook into later generations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from safestress.sites.adapters import SiteTarget, adapter_for, resolve_module
from safestress.sites.names import parse_site

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]


def site_target(model: nn.Module, site: str) -> SiteTarget:
    adapter = adapter_for(model)
    layer, suffix = parse_site(site)
    if layer is None:
        if suffix != "final_norm.out":
            raise KeyError(site)
        return SiteTarget(adapter.final_norm, "output")
    return adapter.target(layer, suffix)


def _output_hook(fn: SiteFn) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            new = fn(output[0])
            return output if new is None else (new, *output[1:])
        new = fn(output)
        return output if new is None else new

    return hook


def _input_hook(fn: SiteFn) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


@contextmanager
def site_hooks(model: nn.Module, fns: Mapping[str, SiteFn]) -> Iterator[None]:
    """Install ``fns`` at their sites for the duration of the ``with`` block."""
    handles = []
    try:
        for site, fn in fns.items():
            target = site_target(model, site)
            module = resolve_module(model, target.module_path)
            if target.kind == "output":
                handles.append(module.register_forward_hook(_output_hook(fn)))
            else:
                handles.append(module.register_forward_pre_hook(_input_hook(fn), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(model: nn.Module, sites: list[str], *, detach: bool = True) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the activations at ``sites`` of every forward call inside the block.

    Yields ``{site: [tensor per forward call]}``; used by analyses and tests.
    """
    store: dict[str, list[torch.Tensor]] = {s: [] for s in sites}

    def recorder(site: str) -> SiteFn:
        def fn(x: torch.Tensor) -> None:
            store[site].append(x.detach().clone() if detach else x)
            return None

        return fn

    with site_hooks(model, {s: recorder(s) for s in sites}):
        yield store
