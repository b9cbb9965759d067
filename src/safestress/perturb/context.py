"""Per-row state shared by the hooks of one perturbed model.

A :class:`RowContext` knows, for the batch currently going through the model, each row's noise
key, each row's own perturbation parameters (so that one batch can mix σ values, which is how
sweeps stay batched) and each token's position in its own, unpadded sequence. A forward
pre-hook on the causal-LM module keeps the positions current on every call that
``model.generate`` makes, from the attention mask it passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from safestress.perturb import rng
from safestress.sites.adapters import unwrap


@dataclass
class RowContext:
    keys: torch.Tensor | None = None  # [B, 2] int64
    row_params: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B]
    positions: torch.Tensor | None = None  # [B, T] for the current forward
    prompt_len: torch.Tensor | None = None  # [B] real prompt tokens (first forward of a generation)
    _rowpos: torch.Tensor | None = None  # cached (row key, position) hashes of the current forward
    cache: dict = field(default_factory=dict)  # per-forward scratch space of perturbations

    def reset(self, keys: torch.Tensor | None = None, row_params: dict[str, torch.Tensor] | None = None) -> None:
        """Start a new batch: forget positions and prompt lengths, set keys and row parameters."""
        self.keys = keys
        self.row_params = dict(row_params or {})
        self.positions = None
        self.prompt_len = None
        self._rowpos = None
        self.cache.clear()

    def batch_keys(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.keys is None or self.keys.shape[0] != batch:
            # Outside safestress.generate (a plain forward) every row uses key 0: deterministic,
            # and independent of batch composition.
            return torch.zeros(batch, 2, dtype=torch.int64, device=device)
        return self.keys.to(device)

    def param(self, name: str, default: float, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[B, 1, 1]`` per-row value of ``name`` (or ``default`` for every row)."""
        value = self.row_params.get(name)
        if value is None or value.shape[0] != batch:
            return torch.full((batch, 1, 1), float(default), device=device, dtype=dtype)
        return value.view(batch, 1, 1).to(device=device, dtype=dtype)

    def token_positions(self, batch: int, tokens: int, device: torch.device) -> torch.Tensor:
        pos = self.positions
        if pos is None or pos.shape != (batch, tokens):
            return torch.arange(tokens, device=device).expand(batch, tokens)
        return pos.to(device)

    def row_position_hash(self, batch: int, tokens: int, device: torch.device) -> torch.Tensor:
        """``[B, T]`` hashes of (row key, position), computed once per forward and shared by all sites."""
        cached = self._rowpos
        if cached is None or cached.shape != (batch, tokens) or cached.device != device:
            cached = rng.row_position_hash(self.batch_keys(batch, device), self.token_positions(batch, tokens, device))
            self._rowpos = cached
        return cached

    def generated_mask(self, batch: int, tokens: int, device: torch.device) -> torch.Tensor:
        """``[B, T]`` True where a token was generated rather than part of the prompt."""
        pos = self.token_positions(batch, tokens, device)
        if self.prompt_len is None or self.prompt_len.shape[0] != batch:
            return torch.zeros(batch, tokens, dtype=torch.bool, device=device)
        return pos >= self.prompt_len.to(device)[:, None]

    def _on_forward(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            return
        batch, tokens = ref.shape[0], ref.shape[1]
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and mask.shape[0] == batch:
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -tokens:]
            if self.prompt_len is None:
                self.prompt_len = mask.long().sum(-1)
        else:
            past = 0 if self.positions is None else int(self.positions[:, -1].max()) + 1
            pos = torch.arange(past, past + tokens, device=ref.device).expand(batch, tokens)
            if self.prompt_len is None:
                self.prompt_len = torch.full((batch,), tokens, device=ref.device)
        self.positions = pos
        self._rowpos = None
        self.cache.clear()


@contextmanager
def tracking(model: nn.Module, ctx: RowContext) -> Iterator[RowContext]:
    """Keep ``ctx.positions`` current for every forward of ``model`` inside the block."""
    handle = unwrap(model).register_forward_pre_hook(ctx._on_forward, with_kwargs=True)
    try:
        yield ctx
    finally:
        handle.remove()
