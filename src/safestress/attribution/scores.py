"""Unit importance scores over a calibration set, computed in one pass with hooks (no model rewrite).

Units are the input channels of the second matrix ``B`` of a depth-2 module ``f(X) = B·σ(A·X)``:

* MLP neurons — ``B`` = the down projection, channel j = neuron j (site ``blocks.L.mlp.act``);
* attention heads — ``B`` = the output projection, channels grouped per head (site ``blocks.L.attn.z``).

Scores (``safestress list scores``), all taken on response tokens only:

* ``ssah`` — the SSAH / FLAP structured score: Var_t(X_tj) · ‖B[:, j]‖₂², the variance over
  calibration tokens of the input to B at channel j times the squared norm of B's column j
  (how much output variance removing the channel — replacing it by its mean — would cost);
* ``wanda`` — Σ_i |B_ij| · ‖X_:j‖₂ (Sun et al. 2024), the per-weight Wanda score summed over the
  weights reading channel j;
* ``snip`` — Σ_i |B_ij · ∂L/∂B_ij| (Lee et al. 2019; as used by Wei et al. 2024), summed over
  batches of the calibration set, with L the mean cross-entropy on response tokens.

A head's score is the sum of its channels' scores. Results are cached on disk keyed by the
model, the calibration set and the score, so a second call never recomputes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safestress.attribution.calibration import CalibrationSet, encode_pairs
from safestress.sites.adapters import adapter_for, resolve_module
from safestress.sites.hooks import site_hooks


@dataclass
class UnitScores:
    """Scores of every MLP neuron ``[layers, d_ff]`` and attention head ``[layers, heads]``."""

    score: str
    calibration: str
    mlp: torch.Tensor
    heads: torch.Tensor

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {"mlp": self.mlp.contiguous(), "heads": self.heads.contiguous()},
            str(path),
            metadata={"score": self.score, "calibration": self.calibration},
        )

    @classmethod
    def load(cls, path: str | Path) -> UnitScores:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
            return cls(meta["score"], meta["calibration"], fh.get_tensor("mlp"), fh.get_tensor("heads"))


def _columns(module: torch.nn.Module) -> torch.Tensor:
    """B's weight as ``[out, in]`` (GPT-2's Conv1D stores ``[in, out]``)."""
    w = module.weight
    return w.t() if type(module).__name__ == "Conv1D" else w


def _b_modules(model: torch.nn.Module) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    adapter = adapter_for(model)
    from safestress.sites import num_layers

    n = num_layers(model)
    down = [resolve_module(model, f"{adapter.layers}.{i}.{adapter.mlp_down}") for i in range(n)]
    out = [resolve_module(model, f"{adapter.layers}.{i}.{adapter.attn_out_proj}") for i in range(n)]
    return down, out


def n_heads(model: torch.nn.Module) -> int:
    cfg = model.config
    return int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)


def _per_head(channel_scores: torch.Tensor, heads: int) -> torch.Tensor:
    """``[layers, heads·d_head]`` → ``[layers, heads]`` by summing each head's channels."""
    layers, width = channel_scores.shape
    return channel_scores.view(layers, heads, width // heads).sum(-1)


def _activation_stats(lm: Any, calib: CalibrationSet, batch_size: int) -> dict[str, torch.Tensor]:
    """Per-channel count, sum and sum of squares of B's inputs over response tokens (float64)."""
    model = lm.ensure_weights()
    from safestress.sites import num_layers

    layers = num_layers(model)
    sites = [f"blocks.{i}.{kind}" for i in range(layers) for kind in ("mlp.act", "attn.z")]
    acc: dict[str, list[torch.Tensor]] = {}
    mask_ref: list[torch.Tensor] = []

    def recorder(site: str) -> Callable[[torch.Tensor], None]:
        def fn(x: torch.Tensor) -> None:
            m = mask_ref[0].to(x.device, torch.float64)[..., None]
            xd = x.detach().to(torch.float64)
            s1 = (xd * m).sum((0, 1))
            s2 = (xd * xd * m).sum((0, 1))
            if site in acc:
                acc[site][0] += s1
                acc[site][1] += s2
            else:
                acc[site] = [s1, s2]

        return fn

    count = torch.zeros((), dtype=torch.float64)
    device = next(model.parameters()).device
    with torch.inference_mode(), site_hooks(model, {s: recorder(s) for s in sites}):
        for batch in encode_pairs(lm, calib, batch_size):
            mask_ref[:] = [batch.response_mask]
            count += batch.response_mask.sum()
            model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
    stats = {"count": count}
    for kind in ("mlp.act", "attn.z"):
        stats[f"{kind}.sum"] = torch.stack([acc[f"blocks.{i}.{kind}"][0].cpu() for i in range(layers)])
        stats[f"{kind}.sumsq"] = torch.stack([acc[f"blocks.{i}.{kind}"][1].cpu() for i in range(layers)])
    return stats


def _col_norms(modules: list[torch.nn.Module], p: int) -> torch.Tensor:
    """Per input channel: ‖B[:, j]‖₂² (p=2) or Σ_i |B_ij| (p=1), stacked over layers."""
    rows = []
    for m in modules:
        w = _columns(m).detach().to(torch.float64)
        rows.append(w.pow(2).sum(0) if p == 2 else w.abs().sum(0))
    return torch.stack(rows).cpu()


def ssah_score(lm: Any, calib: CalibrationSet, batch_size: int = 8) -> UnitScores:
    stats = _activation_stats(lm, calib, batch_size)
    down, out = _b_modules(lm.model)
    n = stats["count"]
    result = {}
    for kind, mods in (("mlp.act", down), ("attn.z", out)):
        mean = stats[f"{kind}.sum"] / n
        var = (stats[f"{kind}.sumsq"] / n - mean.pow(2)).clamp_min(0)
        result[kind] = var * _col_norms(mods, 2)
    return UnitScores(
        "ssah", calib.fingerprint(), result["mlp.act"].float(), _per_head(result["attn.z"], n_heads(lm.model)).float()
    )


def wanda_score(lm: Any, calib: CalibrationSet, batch_size: int = 8) -> UnitScores:
    stats = _activation_stats(lm, calib, batch_size)
    down, out = _b_modules(lm.model)
    result = {
        kind: stats[f"{kind}.sumsq"].sqrt() * _col_norms(mods, 1) for kind, mods in (("mlp.act", down), ("attn.z", out))
    }
    return UnitScores(
        "wanda", calib.fingerprint(), result["mlp.act"].float(), _per_head(result["attn.z"], n_heads(lm.model)).float()
    )


def snip_score(lm: Any, calib: CalibrationSet, batch_size: int = 8) -> UnitScores:
    model = lm.ensure_weights()
    down, out = _b_modules(model)
    targets = [m.weight for m in down + out]
    saved = {p: p.requires_grad for p in model.parameters()}
    acc = [torch.zeros(_columns(m).shape[1], dtype=torch.float64) for m in down + out]
    device = next(model.parameters()).device
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in targets:
            w.requires_grad_(True)
        for batch in encode_pairs(lm, calib, batch_size):
            labels = batch.input_ids.masked_fill(batch.response_mask == 0, -100)
            loss = model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                labels=labels.to(device),
            ).loss
            grads = torch.autograd.grad(loss, targets)
            for i, (m, g) in enumerate(zip(down + out, grads)):
                wg = (_columns(m).detach() * (g.t() if type(m).__name__ == "Conv1D" else g)).abs()
                acc[i] += wg.to(torch.float64).sum(0).cpu()
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
    layers = len(down)
    mlp = torch.stack(acc[:layers])
    attn = torch.stack(acc[layers:])
    return UnitScores("snip", calib.fingerprint(), mlp.float(), _per_head(attn, n_heads(model)).float())


def cache_key(lm: Any, calib: CalibrationSet, score: str) -> str:
    ident = json.dumps([lm.identity, calib.fingerprint(), score, 1], sort_keys=True, default=str)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def compute_scores(lm: Any, calib: CalibrationSet, score: str, batch_size: int = 8, cache: bool = True) -> UnitScores:
    """Score every unit with the registered ``score``; cached in ``<cache>/scores/`` by content."""
    from safestress.attribution import SCORES
    from safestress.paths import cache_dir

    fn = SCORES.get(score)
    path = cache_dir() / "scores" / f"{cache_key(lm, calib, score)}.safetensors"
    if cache and path.is_file():
        return UnitScores.load(path)
    result = fn(lm, calib, batch_size=batch_size)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        result.save(tmp)
        tmp.replace(path)
    return result
