"""Utility next to safety: perplexity of a text corpus under the same perturbation.

Activation approximations are deployed because they keep utility; a sweep therefore reports, for
each condition, the perplexity of a fixed corpus beside the harmful rate (the PPL/ASR tables of
the approximation literature). Perplexity is measured by teacher forcing over consecutive,
non-overlapping windows of the tokenised corpus (the first ``max_tokens`` tokens), every window
its own forward with its own attention mask, so perturbation noise never depends on how many
windows came before.

Corpora: ``wikitext2`` (WikiText-2 raw test split, from a local ``wikitext-2-raw-v1-test.txt``
in the data directory or through ``datasets`` from the hub), a ``.txt`` file, or a
``csv:PATH:COLUMN`` / ``jsonl:PATH:FIELD`` / registered dataset whose texts are joined by blank
lines.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from safestress.errors import SafestressError
from safestress.textfile import read_text

WIKITEXT_FILE = "wikitext-2-raw-v1-test.txt"


def _wikitext2() -> str:
    data_dir = os.environ.get("SAFESTRESS_DATA_DIR")
    if data_dir and (Path(data_dir) / WIKITEXT_FILE).is_file():
        return read_text(Path(data_dir) / WIKITEXT_FILE, "corpus file")
    try:
        import datasets

        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    except Exception as exc:
        raise SafestressError(
            f"cannot load WikiText-2 ({type(exc).__name__}): put {WIKITEXT_FILE} in SAFESTRESS_DATA_DIR "
            "or pass a local text file"
        ) from None
    return "".join(ds["text"])


def load_corpus(spec: str) -> str:
    """The text of corpus ``spec`` (see the module docstring)."""
    if spec in ("wikitext2", "wikitext-2"):
        return _wikitext2()
    path = Path(spec)
    if path.suffix in (".txt", ".md", ".raw") or (path.is_file() and ":" not in spec):
        return read_text(path, "corpus file")
    from safestress.datasets import load_dataset

    ds = load_dataset(spec)
    return "\n\n".join(item.prompt for item in ds.items)


def corpus_id(spec: str, text: str, max_tokens: int, window: int) -> str:
    """Stable name of a perplexity measurement (corpus content, not its path)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"ppl:{Path(spec).name}:{digest}:{max_tokens}:{window}"


def perplexity(lm: Any, text: str, *, max_tokens: int = 4096, window: int = 512, batch_size: int = 4) -> float:
    """exp(mean NLL) of the first ``max_tokens`` tokens of ``text``, in windows of ``window``.

    Runs under whatever perturbation is active on ``lm`` (call it inside ``ss.perturbed``).
    """
    model = lm.ensure_weights()
    ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0][:max_tokens]
    if len(ids) < 2:
        raise SafestressError("the perplexity corpus has fewer than two tokens")
    windows = [ids[i : i + window] for i in range(0, len(ids), window)]
    windows = [w for w in windows if len(w) >= 2]
    sums = sequence_nll(model, windows, batch_size=batch_size)
    total_nll = sum(nll for nll, _ in sums)
    total_tokens = sum(n for _, n in sums)
    return math.exp(total_nll / total_tokens)


def sequence_nll(model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int) -> list[tuple[float, int]]:
    """Per token sequence, the summed negative log-likelihood (nats) of its tokens after the first,
    each given the ones before it, and how many tokens that is (0 for a sequence shorter than two).

    One place for the arithmetic that perplexity and the reference LM's salad check share: right
    padding (positions stay 0..len-1, so a short sequence scores as it would alone), padded
    positions masked out of both the attention and the sum.
    """
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = [torch.as_tensor(s, dtype=torch.long) for s in sequences[start : start + batch_size]]
            width = max(2, *(len(s) for s in chunk))
            batch = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, seq in enumerate(chunk):
                batch[i, : len(seq)] = seq
                mask[i, : len(seq)] = 1
            batch, mask = batch.to(device), mask.to(device)
            logits = model(input_ids=batch, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1)
            nll = -logp.gather(-1, batch[:, 1:, None])[..., 0]
            keep = mask[:, 1:].bool()
            out.extend((float(row[k].sum()), int(k.sum())) for row, k in zip(nll, keep))
    return out
