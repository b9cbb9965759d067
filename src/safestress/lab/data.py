"""Lab prompt sets as registered datasets (generated, no files): held out from training."""

from __future__ import annotations

from pathlib import Path

from safestress.datasets import Dataset, Item
from safestress.lab import language as L

HELD_OUT_SEED = 10_000  # training streams use other seeds
SIZE = 120


def _dataset(name: str, harmful: bool, task: str | None = None) -> Dataset:
    examples = L.split("held-out", SIZE * 3 if task else SIZE, harmful, HELD_OUT_SEED)
    if task:
        examples = [e for e in examples if e.task == task]
    items = [
        Item(str(i), e.prompt, {"task": e.task, "harmful": e.harmful, "answer": e.answer})
        for i, e in enumerate(examples)
    ]
    return Dataset(name, items)


def lab_harmful(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-harmful", harmful=True)


def lab_benign(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-benign", harmful=False)


def lab_chain(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-chain", harmful=False, task="chain")
