"""Activation statistics on calibration prompts, measured once and cached.

TEAL thresholds, CATS thresholds, static per-tensor quantization ranges, SmoothQuant's
per-channel maxima and the clipping search all need the same thing: what a site's activations
look like on ordinary inputs. :func:`site_stats` runs the calibration prompts through the clean
model once (one prompt per forward, so no padding token ever enters a statistic), records per
site the per-channel |max|, min and max and a uniform sample of token rows, and saves them in the
cache under a hash of the model's identity, the data and the settings. A second call with the
same model, data and settings reads the file and runs no forward pass.

Besides canonical sites, ``blocks.L.act_fn`` names the output of block L's activation function
(act(gate), before the product with up), which CATS thresholds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safestress.errors import SafestressError
from safestress.paths import cache_dir

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class SiteStats:
    """Statistics of one site over the calibration tokens (float32, on CPU)."""

    absmax: torch.Tensor  # [features] max |x| per channel
    amin: torch.Tensor  # [features]
    amax: torch.Tensor  # [features]
    rows: torch.Tensor  # [n_rows, features] uniform sample of token rows
    n_tokens: int

    def abs_quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        """Quantile(s) of |x| over the sampled values (TEAL's threshold for sparsity ``q``)."""
        values = self.rows.abs().flatten()
        q = torch.as_tensor(q, dtype=torch.float32)
        # torch.quantile refuses inputs above 2^24 elements; a sorted array serves any size.
        ordered = values.sort().values
        pos = (q.clamp(0, 1) * (ordered.numel() - 1)).round().long()
        return ordered[pos]


def act_fn_key(layer: int) -> str:
    return f"blocks.{layer}.act_fn"


def _act_fn_module(model: Any, layer: int) -> torch.nn.Module:
    from safestress.sites.adapters import adapter_for, resolve_module

    adapter = adapter_for(model)
    return resolve_module(model, f"{adapter.layers}.{layer}.{adapter.mlp_act_fn}")


def calibration_prompts(lm: Any, data: str, n: int) -> list[str]:
    """The first ``n`` prompts of dataset ``data`` in the model's prompt format."""
    from safestress.datasets import load_dataset

    ds = load_dataset(data, limit=n)
    if not ds.items:
        raise SafestressError(f"calibration dataset '{data}' has no prompts")
    return [lm.format(item.prompt) for item in ds.items]


def _cache_path(lm: Any, key: str, data: str, n: int, rows: int, seed: int) -> Path:
    ident = json.dumps(
        {"model": lm.identity, "data": data, "n": n, "rows": rows, "seed": seed, "site": key, "v": VERSION},
        sort_keys=True,
        default=str,
    )
    return cache_dir("calibration") / f"{key}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.safetensors"


def _load(path: Path) -> SiteStats:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        return SiteStats(
            f.get_tensor("absmax"),
            f.get_tensor("amin"),
            f.get_tensor("amax"),
            f.get_tensor("rows"),
            int(meta["n_tokens"]),
        )


def _save(path: Path, st: SiteStats) -> None:
    from safetensors.torch import save_file

    tensors = {f: getattr(st, f).contiguous() for f in ("absmax", "amin", "amax", "rows")}
    tmp = path.with_suffix(".part")
    save_file(tensors, str(tmp), metadata={"n_tokens": str(st.n_tokens)})
    tmp.replace(path)


def site_stats(
    lm: Any, keys: list[str], *, data: str = "harmless-val", n: int = 32, rows: int = 256, seed: int = 0
) -> dict[str, SiteStats]:
    """Statistics of ``keys`` (canonical sites or ``blocks.L.act_fn``) over ``n`` calibration prompts.

    Cached per site: a site measured before for the same model, data, ``n``, ``rows`` and seed is
    read from its file; one forward pass over the prompts measures all the others together.
    """
    out: dict[str, SiteStats] = {}
    paths = {k: _cache_path(lm, k, data, n, rows, seed) for k in keys}
    for k, path in paths.items():
        if path.is_file():
            try:
                out[k] = _load(path)
            except Exception as exc:  # a damaged cache file is measured again, never trusted
                log.warning("ignoring unreadable calibration cache %s (%s)", path, exc)
    missing = [k for k in keys if k not in out]
    if not missing:
        return out
    model = lm.ensure_weights()
    tok = lm.tokenizer
    encoded = [
        tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"][0] for p in calibration_prompts(lm, data, n)
    ]
    total = sum(len(e) for e in encoded)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=gen)[: min(rows, total)]] = True

    acc: dict[str, dict[str, Any]] = {k: {"amin": None, "amax": None, "rows": []} for k in missing}
    offset = 0

    def record(key: str, x: torch.Tensor) -> None:
        x = x.detach()[0].float().cpu()  # [tokens, features]
        a = acc[key]
        mx, mn = x.max(0).values, x.min(0).values
        a["amax"] = mx if a["amax"] is None else torch.maximum(a["amax"], mx)
        a["amin"] = mn if a["amin"] is None else torch.minimum(a["amin"], mn)
        a["rows"].append(x[chosen[offset : offset + x.shape[0]]])

    from safestress.sites.hooks import site_hooks

    log.info("calibrating %d site(s) on %d prompts of %s", len(missing), len(encoded), data)
    handles = []
    try:
        for k in missing:
            if k.endswith(".act_fn"):
                module = _act_fn_module(model, int(k.split(".")[1]))
                handles.append(module.register_forward_hook(lambda _m, _a, o, k=k: record(k, o)))
        fns = {k: (lambda x, k=k: record(k, x)) for k in missing if not k.endswith(".act_fn")}
        device = next(model.parameters()).device
        with site_hooks(model, fns), torch.no_grad():
            for ids in encoded:
                model(input_ids=ids[None].to(device))
                offset += len(ids)
    finally:
        for h in handles:
            h.remove()

    for k in missing:
        a = acc[k]
        if a["amax"] is None:
            raise SafestressError(f"calibration never reached '{k}'")
        absmax = torch.maximum(a["amax"].abs(), a["amin"].abs())
        out[k] = SiteStats(absmax, a["amin"], a["amax"], torch.cat(a["rows"]), total)
        _save(paths[k], out[k])
    return out


def calibrated_stats(perturbation: Any, lm: Any, keys: list[str]) -> dict[str, SiteStats]:
    """Stats for a perturbation whose params carry ``calib``, ``calib_n`` and ``seed`` (when set)."""
    p = perturbation.params
    return site_stats(lm, keys, data=p.calib, n=p.calib_n, seed=getattr(p, "calib_seed", 0))


def require_prepared(stats: dict[str, SiteStats] | None, name: str) -> dict[str, SiteStats]:
    if stats is None:
        raise SafestressError(
            f"perturbation '{name}' calibrates on the model's own activations: apply it to a loaded model "
            "(ss.load_model / ss.wrap_model), not to a bare nn.Module"
        )
    return stats
