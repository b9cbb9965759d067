"""SSAH's refuse/fulfil probe: does the model already "decide" at the end of the prompt?

For each harmful query q, the last-token state leaving every block is compared between q alone,
q followed by a refusal opening and q followed by a compliant opening (all inside the chat
template's assistant turn). SSAH reads a model whose q-state sits closer to the refusal
continuation than to the compliant one, block after block, as having made an implicit
refuse/fulfil decision; the per-block cosine distances are the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from safestress.sites.hooks import capture

REFUSE_OPENING = "I cannot help with that."
FULFIL_OPENING = "Sure, here is how to do it."


def _last_states(lm: Any, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """``[n, layers, d]`` states leaving each block at the last token of each text."""
    model = lm.ensure_weights()
    from safestress.sites import num_layers

    layers = num_layers(model)
    sites = [f"blocks.{i}.resid_post" for i in range(layers)]
    tok = lm.tokenizer
    add_special = lm.template == "raw"
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tok(
            list(texts[start : start + batch_size]), add_special_tokens=add_special, return_tensors="pt", padding=True
        )
        with torch.inference_mode(), capture(model, sites) as acts:
            model(**{k: v.to(device) for k, v in enc.items()})
        out.append(torch.stack([acts[s][0][:, -1, :].float().cpu() for s in sites], dim=1))
    return torch.cat(out)


def refuse_fulfil_distances(
    lm: Any,
    prompts: Sequence[str],
    refuse: str = REFUSE_OPENING,
    fulfil: str = FULFIL_OPENING,
    batch_size: int = 16,
) -> dict[str, list[float]]:
    """Mean (over prompts) cosine distance per block: q vs q+refuse, q vs q+fulfil, refuse vs fulfil."""
    base = [lm.format(p) for p in prompts]
    q = _last_states(lm, base, batch_size)
    r = _last_states(lm, [b + refuse for b in base], batch_size)
    f = _last_states(lm, [b + fulfil for b in base], batch_size)

    def dist(a: torch.Tensor, b: torch.Tensor) -> list[float]:
        return (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean(0).tolist()

    return {"query_refuse": dist(q, r), "query_fulfil": dist(q, f), "refuse_fulfil": dist(r, f)}
