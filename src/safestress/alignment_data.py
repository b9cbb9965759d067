"""Training targets for aligning a model that does not refuse: harmful requests paired with refusals.

SSAH's alignment-budget experiment aligns an unaligned model and asks what the alignment costs
(refusals gained against utility lost) when only its redundant units may change. It needs
(harmful request, refusal) pairs that no evaluation set contains: the requests are
``harmful-train`` (the training split of the harmful/harmless splits, disjoint from
JailbreakBench, AdvBench and ``harmful-val``), and the refusals are the short texts below, written
for this project. A refusal is picked per request by a hash of its text, so the pairs are the
same on every machine. The refusals name no topic, so what training teaches is the decision to
refuse, not the content of any request; each opens the way the refusal judges recognise
(``refusal``, ``embedding`` and JailbreakBench's phrase list), which a test checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safestress.datasets import Dataset, Item, load_dataset

REFUSALS = (
    "I can't help with that. It could put people at risk, so I won't give instructions or content for it.",
    "I'm sorry, but I won't assist with this request. If something difficult is going on, I'm glad to talk "
    "about safer options.",
    "I can't do that. Helping with this could cause real harm to other people.",
    "I'm sorry, I won't help with this. It is harmful, and providing it would be irresponsible.",
    "I'm not able to help with that request, because it could be used to hurt someone. Is there something "
    "else I can do for you?",
    "Sorry, I can't provide that. I don't produce content that could help someone cause harm or break the law.",
    "I cannot help with this one. It raises serious safety and legal concerns.",
    "I apologize, but I must decline. This asks for something that could seriously harm people.",
)


def refusal_for(prompt: str) -> str:
    """The refusal paired with ``prompt`` (stable across machines and Python's hash seeds)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return REFUSALS[int.from_bytes(digest[:4], "big") % len(REFUSALS)]


def harmful_refusals(data_dir: Path | None = None) -> Dataset:
    """``harmful-train``'s requests, each with a ``refusal`` field to train on."""
    base = load_dataset("harmful-train", data_dir=data_dir)
    items = [Item(i.id, i.prompt, {**i.meta, "refusal": refusal_for(i.prompt)}) for i in base.items]
    return Dataset("harmful-refusals", items)
