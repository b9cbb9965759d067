"""Canonical, model-independent activation sites and the hooks that read or replace them."""

from safestress.sites.adapters import ADAPTERS, Adapter, adapter_for, num_layers, resolve_module, unwrap
from safestress.sites.hooks import capture, site_hooks, site_target
from safestress.sites.names import all_sites, parse_site, select_sites

__all__ = [
    "ADAPTERS",
    "Adapter",
    "adapter_for",
    "all_sites",
    "capture",
    "num_layers",
    "parse_site",
    "resolve_module",
    "select_sites",
    "site_hooks",
    "site_target",
    "unwrap",
]


def model_sites(model) -> list[str]:
    """All canonical site names of ``model``."""
    return all_sites(num_layers(model))
