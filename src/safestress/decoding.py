"""The decoding loop behind :func:`safestress.generation.iter_generate`: one batch, token by token.

Why not ``model.generate``: a sweep wants three things it cannot do.

* **Rows leave the batch when they are done.** A row that emitted an end token, reached
  ``max_new_tokens`` or whose verdict is settled (``stop``, checked every ``STOP_EVERY`` tokens) is
  dropped from the batch and from the KV cache at once, so the rest of the batch no longer pays
  for it. ``model.generate`` keeps computing finished rows until the longest one ends.
* **Shared prefill.** Rows whose prompt forward the perturbation leaves untouched (``shared``:
  the clean run, noise at σ = 0, noise on generated positions only) and whose prompt tokens are
  equal run one prompt forward between them; its KV cache and first-token logits are copied to
  each of them. Rows whose prompt the perturbation changes run their own.
* **Per-row state follows the rows.** The perturbation's row context (noise keys, per-row σ,
  prompt lengths) is reduced with the batch.

Everything else is what ``model.generate`` does for greedy search on a decoder: a dynamic cache
built from the model's config (sliding-window layers included), position ids from the attention
mask (left padding), the last position's logits in float32, the end-token ban before
``min_new_tokens``, then the warpers and the sampler. The tests check that the tokens equal
``model.generate``'s on every supported architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from safestress.perturb.context import RowContext

STOP_EVERY = 4  # tokens between checks of ``stop``: a check decodes and reads every live row

# (batch rows, their texts so far) -> whether each row's verdicts are settled
StopFn = Callable[[Sequence[int], Sequence[str]], Sequence[bool]]
# (scores [B, V], generated tokens so far, live rows) -> scores; the warpers and the sampler
ScoreFn = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


@dataclass
class Decoded:
    tokens: list[int]
    reason: str  # "eos", "length" or "settled"


@lru_cache(maxsize=64)
def _keeps_logits(forward: Callable) -> bool:
    return "logits_to_keep" in inspect.signature(forward).parameters


def _forward(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: object
) -> torch.Tensor:
    kw = {"logits_to_keep": 1} if _keeps_logits(type(model).forward) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, **kw)
    # a model spread over GPUs returns logits on its last device: bring them to the batch's
    return out.logits[:, -1].to(copy=True, dtype=torch.float32, device=ids.device)


def prefill_rows(ids: torch.Tensor, mask: torch.Tensor, shared: Sequence[bool]) -> tuple[list[int], list[int]]:
    """Which batch rows run a prompt forward (``sources``), and which of those each row copies
    (``where``): shared rows with equal prompt tokens (and so equal padding) use the first of them."""
    first: dict[tuple[int, ...], int] = {}
    sources: list[int] = []
    where: list[int] = []
    for r in range(ids.shape[0]):
        if shared[r]:
            sig = tuple(ids[r][mask[r].bool()].tolist())
            if sig in first:
                where.append(first[sig])
                continue
            first[sig] = len(sources)
        where.append(len(sources))
        sources.append(r)
    return sources, where


def decode_batch(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    min_new_tokens: int,
    eos_ids: Sequence[int],
    keys: torch.Tensor,
    row_params: dict[str, torch.Tensor],
    ctx: RowContext | None,
    shared: Sequence[bool] | None = None,
    scores_fn: ScoreFn | None = None,
    stop: StopFn | None = None,
    decode: Callable[[list[int]], str] | None = None,
) -> list[Decoded]:
    """Generate for one left-padded batch; returns each row's tokens and why it ended."""
    from transformers import DynamicCache

    n = ids.shape[0]
    device = ids.device
    shared = shared if shared is not None else [False] * n
    sources, where = prefill_rows(ids, mask, shared)
    cache = DynamicCache(config=model.config)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    src = torch.tensor(sources, device=device)
    if ctx is not None:
        ctx.reset(keys[src], {k: v[src] for k, v in row_params.items()})
    logits = _forward(model, ids[src], mask[src], pos[src], cache)
    if len(sources) < n:  # copy each shared prefill to the rows that use it
        expand = torch.tensor(where, device=device)
        cache.batch_select_indices(expand)
        logits = logits[expand]
    if ctx is not None:
        ctx.reset(keys, dict(row_params))
        ctx.prompt_len = mask.long().sum(-1)
    eos = torch.tensor(list(eos_ids), device=device, dtype=torch.long)
    alive = torch.arange(n, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    reasons: list[str] = [""] * n
    step = 0
    while True:
        if step < min_new_tokens and len(eos):
            logits[:, eos] = float("-inf")
        scores = scores_fn(logits, step, alive) if scores_fn is not None else logits
        nxt = scores.argmax(-1)
        step += 1
        rows = alive.tolist()
        ended = [False] * len(rows)
        for j, (r, t) in enumerate(zip(rows, nxt.tolist())):
            if t in eos_ids:
                reasons[r], ended[j] = "eos", True
                continue
            tokens[r].append(t)
            if len(tokens[r]) >= max_new_tokens:
                reasons[r], ended[j] = "length", True
        if stop is not None and decode is not None and step % STOP_EVERY == 0:
            live = [j for j in range(len(rows)) if not ended[j]]
            if live:
                settled = stop([rows[j] for j in live], [decode(tokens[rows[j]]) for j in live])
                for j, done in zip(live, settled):
                    if done:
                        reasons[rows[j]], ended[j] = "settled", True
        if all(ended):
            break
        if any(ended):  # drop finished rows from the batch, the cache and the row context
            keep = torch.tensor([j for j in range(len(rows)) if not ended[j]], device=device)
            cache.batch_select_indices(keep)
            mask, nxt, alive = mask[keep], nxt[keep], alive[keep]
            if ctx is not None:
                ctx.select(keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        pos = mask.long().sum(-1, keepdim=True) - 1
        logits = _forward(model, nxt[:, None], mask, pos, cache)
    return [Decoded(t, r) for t, r in zip(tokens, reasons)]
