"""The decoding loop behind :func:`safestress.generation.iter_generate`: a pool of rows, token by token.

Why not ``model.generate``: a sweep wants four things it cannot do.

* **Rows leave the pool when they are done.** A row that emitted an end token, reached
  ``max_new_tokens`` or whose verdict is settled (``stop``, asked every ``STOP_EVERY`` tokens of
  the row) is dropped from the pool and from the KV cache at once, so the rest no longer pays for
  it. ``model.generate`` keeps computing finished rows until the longest one ends.
* **New rows take the freed places (continuous batching).** Once a quarter of the pool's places
  are free, the next rows run their prompt forward and join it: their KV cache is left-padded to
  the pool's length (or the pool's to theirs) and the attention mask hides the padding. The pool
  stays near ``batch_size`` until the last rows, where a batch-by-batch loop would run each batch's
  tail at a few rows (matrix products of a few rows cost almost what full ones do on a CPU: the
  weights are read either way). Caches whose layers are not plain full attention (sliding windows
  shorter than a row can get, linear attention) cannot be padded that way; there the pool refills
  only when it is empty.
* **Shared prefill.** Rows whose prompt forward the perturbation leaves untouched (``shared``:
  the clean run, noise at σ = 0, noise on generated positions only) and whose prompt tokens are
  equal run one prompt forward between them; its KV cache and first-token logits are copied to
  each of them. Rows whose prompt the perturbation changes run their own.
* **Per-row state follows the rows.** The perturbation's row context (noise keys, per-row σ,
  prompt lengths) is rebuilt whenever the pool changes.

A row's tokens do not depend on its pool: positions come from its own attention mask, its noise
and sampling draws from its key and its own token count. Everything else is what
``model.generate`` does for greedy search on a decoder: a dynamic cache built from the model's
config, position ids from the attention mask (left padding), the last position's logits in
float32, the end-token ban before ``min_new_tokens``, then the warpers and the sampler. The tests
check that the tokens equal ``model.generate``'s on every supported architecture, whatever the
pool size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from transformers.cache_utils import DynamicLayer

from safestress.perturb.context import RowContext

STOP_EVERY = 4  # tokens between checks of ``stop``: a check decodes and reads every live row
ROOM = 64  # tokens of headroom a row block of the KV cache is allocated with

# (rows, their texts so far) -> whether each row's verdicts are settled
StopFn = Callable[[Sequence[int], Sequence[str]], Sequence[bool]]
# (scores [B, V], tokens each row has generated [B], the rows) -> scores; the warpers and the sampler
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Decoded:
    tokens: list[int]
    reason: str  # "eos", "length" or "settled"


class InPlaceLayer(DynamicLayer):
    """A full-attention cache layer that writes each token's keys and values into a buffer with
    room to grow. ``DynamicLayer`` concatenates, which copies the whole cache at every token.

    Whatever replaces ``keys`` (rows leaving, rows joining) is adopted into a new buffer at the
    next update; ``keys`` and ``values`` are always the filled part of the buffer."""

    def __init__(self) -> None:
        super().__init__()
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _adopted(self, key_states: torch.Tensor, length: int, new: int) -> bool:
        buf = self._k
        if buf is None or length + new > buf.shape[-2] or buf.shape[:2] != key_states.shape[:2]:
            return False
        return length == 0 or (self.keys.data_ptr() == buf.data_ptr() and self.keys.stride() == buf.stride())

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t, n = self.get_seq_length(), key_states.shape[-2]
        if not self._adopted(key_states, t, n):
            b, h = key_states.shape[:2]
            self._k = key_states.new_empty((b, h, t + n + ROOM, key_states.shape[-1]))
            self._v = value_states.new_empty((b, h, t + n + ROOM, value_states.shape[-1]))
            if t:
                self._k[:, :, :t] = self.keys
                self._v[:, :, :t] = self.values
        assert self._k is not None and self._v is not None
        self._k[:, :, t : t + n] = key_states
        self._v[:, :, t : t + n] = value_states
        self.keys, self.values = self._k[:, :, : t + n], self._v[:, :, : t + n]
        return self.keys, self.values


def new_cache(model: torch.nn.Module, longest: int) -> tuple[object, bool]:
    """A dynamic cache for ``model`` whose full-attention layers write in place, and whether every
    layer is one (only then can rows with other histories join it, left-padded).

    A sliding-window layer whose window is longer than any row can get (``longest``: prompt and
    new tokens) never slides: it is full attention, and is made one."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicSlidingWindowLayer

    cache = DynamicCache(config=model.config)
    joinable = bool(cache.layers)
    for i, layer in enumerate(cache.layers):
        kind = type(layer)
        if kind is DynamicLayer or (kind is DynamicSlidingWindowLayer and longest < layer.sliding_window):
            cache.layers[i] = InPlaceLayer()
        else:
            joinable = False
    return cache, joinable


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


def _left_pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``x`` with zeros prepended along ``dim`` up to ``length``."""
    short = length - x.shape[dim]
    if short <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = short
    return torch.cat([x.new_zeros(shape), x], dim=dim)


@dataclass
class _Pool:
    """The rows being decoded: their KV cache and everything indexed by their place in it."""

    rows: list[int]  # indices into the prompts
    cache: object
    mask: torch.Tensor  # [B, T] over the cache's positions (left padding is 0)
    logits: torch.Tensor  # [B, V] the next token's logits
    keys: torch.Tensor  # [B, 2]
    params: dict[str, torch.Tensor]  # name -> [B]
    prompt_len: torch.Tensor  # [B]

    def select(self, keep: list[int]) -> None:
        """Keep the rows at ``keep`` (in the cache and in everything indexed by place)."""
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[j] for j in keep]
        self.mask, self.logits, self.keys = self.mask[index], self.logits[index], self.keys[index]
        self.params = {k: v[index] for k, v in self.params.items()}
        self.prompt_len = self.prompt_len[index]

    def trim(self) -> None:
        """Drop the leading cache positions that no row attends to (full-attention caches only)."""
        first = int(self.mask.any(0).long().argmax())
        if first > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    def join(self, other: _Pool) -> None:
        """Append ``other``'s rows, left-padding the shorter of the two caches."""
        t = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, t, 2), _left_pad(theirs.keys, t, 2)])
            mine.values = torch.cat([_left_pad(mine.values, t, 2), _left_pad(theirs.values, t, 2)])
        self.mask = torch.cat([_left_pad(self.mask, t, 1), _left_pad(other.mask, t, 1)])
        self.rows += other.rows
        self.logits = torch.cat([self.logits, other.logits])
        self.keys = torch.cat([self.keys, other.keys])
        self.params = {k: torch.cat([v, other.params[k]]) for k, v in self.params.items()}
        self.prompt_len = torch.cat([self.prompt_len, other.prompt_len])

    def sync(self, ctx: RowContext | None) -> None:
        """Point the perturbation's row context at the pool's rows."""
        if ctx is not None:
            ctx.reset(self.keys, dict(self.params))
            ctx.prompt_len = self.prompt_len


def _prefill(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    rows: list[int],
    *,
    pad_id: int,
    keys: torch.Tensor,
    row_params: dict[str, torch.Tensor],
    ctx: RowContext | None,
    shared: Sequence[bool],
    longest: int,
) -> tuple[_Pool, bool]:
    """Run the prompt forwards of ``rows`` (left-padded), sharing them where allowed."""
    device = keys.device
    width = max(len(prompts[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for j, r in enumerate(rows):
        if prompts[r]:
            ids[j, width - len(prompts[r]) :] = torch.tensor(prompts[r], device=device)
            mask[j, width - len(prompts[r]) :] = 1
    index = torch.tensor(rows, device=device)
    pool_keys = keys[index]
    params = {k: v[index] for k, v in row_params.items()}
    sources, where = prefill_rows(ids, mask, [shared[r] for r in rows])
    src = torch.tensor(sources, device=device)
    cache, joinable = new_cache(model, longest)
    if ctx is not None:
        ctx.reset(pool_keys[src], {k: v[src] for k, v in params.items()})
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = _forward(model, ids[src], mask[src], pos[src], cache)
    if len(sources) < len(rows):  # copy each shared prefill to the rows that use it
        expand = torch.tensor(where, device=device)
        cache.batch_select_indices(expand)
        logits = logits[expand]
    return _Pool(rows, cache, mask, logits, pool_keys, params, mask.sum(-1)), joinable


class _Decoder:
    """The state of :func:`decode_rows` between tokens."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]],
        *,
        batch_size: int,
        pad_id: int,
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
    ) -> None:
        self.model, self.prompts, self.batch_size, self.pad_id = model, prompts, batch_size, pad_id
        self.max_new_tokens, self.min_new_tokens, self.eos_ids = max_new_tokens, min_new_tokens, list(eos_ids)
        self.keys, self.row_params, self.ctx = keys, row_params, ctx
        self.shared = shared if shared is not None else [False] * len(prompts)
        self.scores_fn, self.stop, self.decode = scores_fn, stop, decode
        self.device = keys.device
        self.eos = torch.tensor(self.eos_ids, device=self.device, dtype=torch.long)
        self.refill = max(1, batch_size // 4)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.pool: _Pool | None = None
        self.joinable = False
        self.admitted = 0
        self.longest = max((len(p) for p in prompts), default=0) + max_new_tokens

    @property
    def finished(self) -> bool:
        return self.pool is None and self.admitted == len(self.prompts)

    def _admit(self) -> None:
        """Prefill the next rows into the free places, once there are enough of them."""
        live = len(self.pool.rows) if self.pool is not None else 0
        if self.admitted == len(self.prompts) or not (
            live == 0 or (self.joinable and self.batch_size - live >= self.refill)
        ):
            return
        rows = list(range(self.admitted, min(len(self.prompts), self.admitted + self.batch_size - live)))
        self.admitted += len(rows)
        fresh, self.joinable = _prefill(
            self.model,
            self.prompts,
            rows,
            pad_id=self.pad_id,
            keys=self.keys,
            row_params=self.row_params,
            ctx=self.ctx,
            shared=self.shared,
            longest=self.longest,
        )
        if self.pool is None:
            self.pool = fresh
        else:
            self.pool.join(fresh)
        self.pool.sync(self.ctx)

    def _ended(self, nxt: torch.Tensor) -> dict[int, str]:
        """Append each row's token; the pool places whose rows end here, and why."""
        pool, tokens = self.pool, self.tokens
        assert pool is not None
        ended: dict[int, str] = {}
        for j, (r, t) in enumerate(zip(pool.rows, nxt.tolist())):
            if t in self.eos_ids:
                ended[j] = "eos"
                continue
            tokens[r].append(t)
            if len(tokens[r]) >= self.max_new_tokens:
                ended[j] = "length"
        if self.stop is not None and self.decode is not None:
            ask = [j for j, r in enumerate(pool.rows) if j not in ended and len(tokens[r]) % STOP_EVERY == 0]
            if ask:
                settled = self.stop([pool.rows[j] for j in ask], [self.decode(tokens[pool.rows[j]]) for j in ask])
                ended.update({j: "settled" for j, done in zip(ask, settled) if done})
        return ended

    def step(self) -> list[tuple[int, Decoded]]:
        """One token for every row in the pool; returns the rows that ended."""
        self._admit()
        pool = self.pool
        if pool is None:
            return []
        steps = torch.tensor([len(self.tokens[r]) for r in pool.rows], device=self.device)
        logits = pool.logits
        if len(self.eos) and bool((steps < self.min_new_tokens).any()):
            early = (steps < self.min_new_tokens).nonzero().squeeze(-1)
            logits[early[:, None], self.eos[None, :]] = float("-inf")
        scores = logits
        if self.scores_fn is not None:
            scores = self.scores_fn(logits, steps, torch.tensor(pool.rows, device=self.device))
        nxt = scores.argmax(-1)
        ended = self._ended(nxt)
        done = [(pool.rows[j], Decoded(self.tokens[pool.rows[j]], why)) for j, why in sorted(ended.items())]
        if ended:
            keep = [j for j in range(len(pool.rows)) if j not in ended]
            if not keep:
                self.pool = None
                return done
            nxt = nxt[torch.tensor(keep, device=self.device)]
            pool.select(keep)
            if self.joinable:
                pool.trim()
            pool.sync(self.ctx)
        pool.mask = torch.cat([pool.mask, pool.mask.new_ones((len(pool.rows), 1))], dim=-1)
        pos = pool.mask.sum(-1, keepdim=True) - 1
        pool.logits = _forward(self.model, nxt[:, None], pool.mask, pos, pool.cache)
        return done


def decode_rows(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], **kw: object
) -> Iterator[list[tuple[int, Decoded]]]:
    """Generate for every prompt (token ids, admitted in the given order) with at most
    ``batch_size`` rows in the pool; yields, after each token, the rows that ended at it.

    Keywords: ``batch_size``, ``pad_id``, ``max_new_tokens``, ``min_new_tokens``, ``eos_ids``,
    ``keys`` ([N, 2]), ``row_params`` (name -> [N]), ``ctx``, and optionally ``shared``,
    ``scores_fn``, ``stop`` and ``decode``. The model runs in inference mode, which is left
    between tokens so that the caller's code between yields does not run in it."""
    dec = _Decoder(model, prompts, **kw)  # type: ignore[arg-type]
    while not dec.finished:
        with torch.inference_mode():
            done = dec.step()
        if done:
            yield done


def decode_batch(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kw: object) -> list[Decoded]:
    """Generate for one left-padded batch, all rows in one pool (``decode_rows``'s other keyword
    arguments); returns each row's tokens and why it ended, in row order."""
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    pad = ids[mask == 0]
    out: dict[int, Decoded] = {}
    for done in decode_rows(
        model, prompts, batch_size=max(1, len(prompts)), pad_id=int(pad[0]) if len(pad) else 0, **kw
    ):
        out.update(done)
    return [out[r] for r in range(len(prompts))]
