"""Calibration sets for unit importance: (prompt, response) pairs, loss and statistics on response tokens.

SSAH scores a unit by how much it matters for the model producing *its own* behaviour: on safety
data, harmful prompts with the model's refusals; on utility data, benign prompts with the model's
answers. :func:`build_calibration` generates those responses with the core's generation and keeps
the ones a judge labels as wanted (refusals for safety, compliance for utility), so a unit's
safety score is measured on real refusals of this model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safestress.errors import SafestressError


@dataclass
class CalibrationSet:
    name: str
    prompts: list[str]
    responses: list[str]

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.responses):
            raise ValueError("prompts and responses differ in length")
        if not self.prompts:
            raise SafestressError(f"calibration set '{self.name}' is empty")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.prompts, self.responses]).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        rows = [{"prompt": p, "response": r} for p, r in zip(self.prompts, self.responses)]
        Path(path).write_text(json.dumps({"name": self.name, "pairs": rows}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        data = json.loads(Path(path).read_text())
        pairs = data["pairs"]
        return cls(data["name"], [p["prompt"] for p in pairs], [p["response"] for p in pairs])


def build_calibration(
    lm: Any,
    name: str,
    prompts: Sequence[str],
    judge: Any,
    keep: str,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationSet:
    """Greedy responses of ``lm`` to ``prompts``, kept where ``judge`` gives label ``keep``;
    ``progress(done, total)`` hears of every generated batch."""
    from safestress.generation import GenerationSettings, iter_generate

    texts = [""] * len(prompts)
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    done = 0
    for idx, gens in iter_generate(lm, list(prompts), settings=settings, batch_size=batch_size):
        for i, g in zip(idx, gens):
            texts[i] = g.text
        done += len(idx)
        if progress is not None:
            progress(done, len(prompts))
    verdicts = judge.judge(list(prompts), texts)
    kept = [(p, t) for p, t, v in zip(prompts, texts, verdicts) if v.label == keep]
    if not kept:
        raise SafestressError(f"no response of the model was judged '{keep}' for calibration set '{name}'")
    return CalibrationSet(name, [p for p, _ in kept], [t for _, t in kept])


@dataclass
class EncodedBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # 1 on response tokens (where statistics and loss are taken)


def encode_pairs(lm: Any, calib: CalibrationSet, batch_size: int) -> Iterator[EncodedBatch]:
    """Right-padded batches of ``format(prompt) + response`` with a mask of the response tokens."""
    tok = lm.tokenizer
    add_special = lm.template == "raw"
    eos = tok.eos_token or ""
    rows = []
    for p, r in zip(calib.prompts, calib.responses):
        head = tok(lm.format(p), add_special_tokens=add_special)["input_ids"]
        full = tok(lm.format(p) + r + eos, add_special_tokens=add_special)["input_ids"]
        if full[: len(head)] != head:  # a merge across the boundary: tokenise the parts apart
            full = head + tok(r + eos, add_special_tokens=False)["input_ids"]
        rows.append((full, len(head)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        resp = torch.zeros_like(ids)
        for i, (row, cut) in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            attn[i, : len(row)] = 1
            resp[i, cut : len(row)] = 1
        yield EncodedBatch(ids, attn, resp)


def response_nll(lm: Any, calib: CalibrationSet, batch_size: int = 8) -> float:
    """Mean negative log-likelihood per response token of ``calib``'s responses (a utility measure:
    how well the model, as it is now — perturbed or not — still produces its clean answers)."""
    model = lm.ensure_weights()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in encode_pairs(lm, calib, batch_size):
            logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
            logp = logits[:, :-1].float().log_softmax(-1).cpu()
            target = batch.input_ids[:, 1:]
            mask = batch.response_mask[:, 1:].bool()
            nll = -logp.gather(-1, target[..., None]).squeeze(-1)
            total += float(nll[mask].sum())
            count += int(mask.sum())
    return total / max(1, count)
