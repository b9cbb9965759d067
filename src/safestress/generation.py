"""Batched, seeded generation that is independent of batch size, composition and order.

* Prompts are tokenised once, sorted by length (less padding), left-padded and generated in
  batches with ``model.generate`` and the KV cache; stops at EOS or ``max_new_tokens``.
* With no perturbation the tokens equal those of a plain ``model.generate`` call on the same
  batch: safestress only adds hooks and, for sampling, a logits processor.
* Sampling draws with the Gumbel-max trick from the counter-based generator keyed by row key and
  step, so a sampled row is reproducible whatever batch it lands in (torch's global RNG is not).
* Each row's key defaults to a hash of (prompt, seed); perturbations draw their noise from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from safestress.models import LoadedModel
from safestress.perturb import rng
from safestress.perturb.base import active_context


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


def row_key(prompt: str, seed: int) -> int:
    """The default 64-bit noise/sampling key of one row."""
    return rng.key_from_text("row", prompt, seed)


class _GumbelSampler:
    """Turns greedy decoding into exact categorical sampling: argmax(logits + Gumbel)."""

    def __init__(self, keys: torch.Tensor, start: int) -> None:
        self.keys = keys
        self.start = start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = torch.full((scores.shape[0],), input_ids.shape[1] - self.start, dtype=torch.int64, device=scores.device)
        gumbel = rng.standard_gumbel(self.keys.to(scores.device), step, scores.shape[-1])
        return scores.float() + gumbel


def _eos_ids(lm: LoadedModel) -> list[int]:
    eos = lm.model.generation_config.eos_token_id
    if eos is None:
        eos = lm.tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if i is not None]


def iter_generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    seeds: int | Sequence[int] = 0,
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
    keys: Sequence[int] | None = None,
    row_params: dict[str, Sequence[float]] | None = None,
) -> Iterator[tuple[list[int], list[Generation]]]:
    """Yield ``(indices, generations)`` batch by batch (indices into ``prompts``).

    ``row_params`` gives per-row values of a perturbation's row parameters (e.g. ``sigma``).
    Inside ``with perturbed(...)`` the active perturbation sees each batch's keys and parameters.
    """
    from transformers import GenerationConfig, LogitsProcessorList
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    settings = settings or GenerationSettings()
    n = len(prompts)
    seed_list = [seeds] * n if isinstance(seeds, int) else list(seeds)
    if len(seed_list) != n:
        raise ValueError("seeds must be an int or one per prompt")
    key_list = list(keys) if keys is not None else [row_key(p, s) for p, s in zip(prompts, seed_list)]
    tok = lm.tokenizer
    add_special = lm.template == "raw"
    encoded = [tok(lm.format(p), add_special_tokens=add_special)["input_ids"] for p in prompts]
    order = sorted(range(n), key=lambda i: (len(encoded[i]), i))
    eos_ids = _eos_ids(lm)
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_ids,
        pad_token_id=tok.pad_token_id,
    )
    ctx = active_context(lm.model)
    device = lm.device

    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt", padding=True)
        batch = {k: v.to(device) for k, v in batch.items()}
        key_tensor = rng.split_keys([key_list[i] for i in idx], device)
        if ctx is not None:
            params = {
                name: torch.tensor([float(vals[i]) for i in idx], device=device)
                for name, vals in (row_params or {}).items()
            }
            ctx.reset(key_tensor, params)
        processors = LogitsProcessorList()
        if settings.do_sample:
            if settings.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k:
                processors.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(settings.top_p))
            processors.append(_GumbelSampler(key_tensor, batch["input_ids"].shape[1]))
        with torch.inference_mode():
            out = lm.model.generate(**batch, generation_config=config, logits_processor=processors)
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        gens = []
        for row in new:
            cut = next((j for j, t in enumerate(row) if t in eos_ids), None)
            tokens = row if cut is None else row[:cut]
            gens.append(Generation(tok.decode(tokens, skip_special_tokens=True), len(tokens), cut is not None))
        yield idx, gens


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    seeds: int | Sequence[int] = 0,
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
    keys: Sequence[int] | None = None,
    row_params: dict[str, Sequence[float]] | None = None,
) -> list[Generation]:
    """Generate a response for every prompt (in input order); see :func:`iter_generate`."""
    results: list[Generation | None] = [None] * len(prompts)
    for idx, gens in iter_generate(
        lm, prompts, seeds=seeds, settings=settings, batch_size=batch_size, keys=keys, row_params=row_params
    ):
        for i, g in zip(idx, gens):
            results[i] = g
    return results  # type: ignore[return-value]
