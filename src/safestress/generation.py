"""Batched, seeded generation that is independent of batch size, composition and order.

* Prompts are tokenised once, sorted by length (less padding) with equal prompts side by side,
  and generated in a pool of at most ``batch_size`` left-padded rows with the KV cache, refilled as
  rows end (:mod:`safestress.decoding`); a row stops at EOS, at ``max_new_tokens``, or early when
  ``stop`` says its verdicts are settled.
* With no perturbation the tokens equal those of a plain ``model.generate`` call on the same
  batch (tested on every supported architecture): safestress only adds hooks and, for sampling,
  the Gumbel draw.
* Sampling draws with the Gumbel-max trick from the counter-based generator keyed by row key and
  step, so a sampled row is reproducible whatever batch it lands in (torch's global RNG is not).
* Each row's key defaults to a hash of (prompt, seed); perturbations draw their noise from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from safestress.decoding import Decoded, ScoreFn, decode_rows
from safestress.errors import SafestressError
from safestress.models import LoadedModel
from safestress.perturb import rng
from safestress.perturb.base import active_context

log = logging.getLogger(__name__)


class GenerationSettings(BaseModel):
    """Decoding settings; all of them are part of the store key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(64, ge=1, le=32768)
    min_new_tokens: int = Field(0, ge=0, description="suppress end tokens before this many (benchmarks)")
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)


@dataclass
class Generation:
    text: str
    n_tokens: int
    stopped: bool  # True when the model emitted an end token before max_new_tokens
    settled: bool = False  # True when it stopped early: every judge's verdict was settled by its text


def row_key(prompt: str, seed: int) -> int:
    """The default 64-bit noise/sampling key of one row."""
    return rng.key_from_text("row", prompt, seed)


def _gumbel(keys: torch.Tensor, steps: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Turns greedy decoding into exact categorical sampling: argmax(logits + Gumbel), the Gumbel
    noise keyed by each row's key and the number of tokens it has generated."""
    steps = steps.to(device=scores.device, dtype=torch.int64)
    return scores.float() + rng.standard_gumbel(keys.to(scores.device), steps, scores.shape[-1])


def _eos_ids(lm: LoadedModel) -> list[int]:
    eos = lm.model.generation_config.eos_token_id
    if eos is None:
        eos = lm.tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if i is not None]


def _warp(settings: GenerationSettings, keys: torch.Tensor) -> ScoreFn | None:
    """The sampling step as a score function (``None`` for greedy decoding)."""
    if not settings.do_sample:
        return None
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers: list = []
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        warpers.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))

    def scores(logits: torch.Tensor, steps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        for w in warpers:
            logits = w(None, logits)
        return _gumbel(keys[rows.to(keys.device)], steps, logits)

    return scores


def iter_generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    seeds: int | Sequence[int] = 0,
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
    keys: Sequence[int] | None = None,
    row_params: dict[str, Sequence[float]] | None = None,
    shared_prefill: Sequence[bool] | None = None,
    stop: Callable[[Sequence[int], Sequence[str]], Sequence[bool]] | None = None,
) -> Iterator[tuple[list[int], list[Generation]]]:
    """Yield ``(indices, generations)`` batch by batch (indices into ``prompts``).

    ``row_params`` gives per-row values of a perturbation's row parameters (e.g. ``sigma``).
    Inside ``with perturbed(...)`` the active perturbation sees each batch's keys and parameters.
    ``shared_prefill`` marks the rows whose prompt forward the perturbation leaves untouched: rows
    with equal prompts among them share one (:mod:`safestress.decoding`). ``stop(indices, texts)``
    says which rows' verdicts are already settled by their text so far; those stop early.
    """
    settings = settings or GenerationSettings()
    n = len(prompts)
    seed_list = [seeds] * n if isinstance(seeds, int) else list(seeds)
    if len(seed_list) != n:
        raise ValueError("seeds must be an int or one per prompt")
    key_list = list(keys) if keys is not None else [row_key(p, s) for p, s in zip(prompts, seed_list)]
    tok = lm.tokenizer
    add_special = lm.template == "raw"
    encoded = [tok(lm.format(p), add_special_tokens=add_special)["input_ids"] for p in prompts]
    # by length (less padding), equal prompts side by side (so they can share a prefill)
    order = sorted(range(n), key=lambda i: (len(encoded[i]), encoded[i], i))
    eos_ids = _eos_ids(lm)
    ctx = active_context(lm.model)
    device = lm.device

    def text(tokens: list[int]) -> str:
        return tok.decode(tokens, skip_special_tokens=True)

    def gen(d: Decoded) -> Generation:
        return Generation(text(d.tokens), len(d.tokens), d.reason == "eos", d.reason == "settled")

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    todo, size = order, batch_size
    while todo:
        ready: list[tuple[int, Decoded]] = []
        finished: set[int] = set()
        key_tensor = rng.split_keys([key_list[i] for i in todo], device)
        params = {
            name: torch.tensor([float(vals[i]) for i in todo], device=device)
            for name, vals in (row_params or {}).items()
        }
        row_stop = None
        if stop is not None:

            def row_stop(rows: Sequence[int], texts: Sequence[str], todo: list[int] = todo) -> Sequence[bool]:
                return stop([todo[r] for r in rows], texts)

        try:
            for done in decode_rows(
                lm.model,
                [encoded[i] for i in todo],
                batch_size=size,
                pad_id=pad_id,
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens,
                eos_ids=eos_ids,
                keys=key_tensor,
                row_params=params,
                ctx=ctx,
                shared=[bool(shared_prefill[i]) for i in todo] if shared_prefill is not None else None,
                scores_fn=_warp(settings, key_tensor),
                stop=row_stop,
                decode=text,
            ):
                ready += [(todo[j], d) for j, d in done]
                finished.update(todo[j] for j, _ in done)
                if len(ready) >= size:  # hand rows over in batches (a sweep stores each)
                    yield [i for i, _ in ready], [gen(d) for _, d in ready]
                    ready = []
            todo = []
        except torch.OutOfMemoryError:  # the rows that ended are kept; the others start again
            size = _smaller_batch(size, lm)
            todo = [i for i in todo if i not in finished]
        if ready:
            yield [i for i, _ in ready], [gen(d) for _, d in ready]


def _smaller_batch(failed: int, lm: LoadedModel) -> int:
    """Half the batch that ran out of memory (a row's output does not depend on its batch, so the
    retry gives the same rows); one row that does not fit is a one-line error."""
    if failed == 1:
        raise SafestressError(
            f"{lm.name}: one row does not fit in the device's memory; use fewer --max-new-tokens, "
            "a smaller --dtype or more devices"
        )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.warning("out of memory at batch %d; retrying at %d", failed, failed // 2)
    return failed // 2


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    seeds: int | Sequence[int] = 0,
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
    keys: Sequence[int] | None = None,
    row_params: dict[str, Sequence[float]] | None = None,
    shared_prefill: Sequence[bool] | None = None,
    stop: Callable[[Sequence[int], Sequence[str]], Sequence[bool]] | None = None,
) -> list[Generation]:
    """Generate a response for every prompt (in input order); see :func:`iter_generate`."""
    results: list[Generation | None] = [None] * len(prompts)
    for idx, gens in iter_generate(
        lm,
        prompts,
        seeds=seeds,
        settings=settings,
        batch_size=batch_size,
        keys=keys,
        row_params=row_params,
        shared_prefill=shared_prefill,
        stop=stop,
    ):
        for i, g in zip(idx, gens):
            results[i] = g
    return results  # type: ignore[return-value]
