"""Lab prompt sets as registered datasets (generated, no files): held out from training."""

from __future__ import annotations

from pathlib import Path

from safestress.datasets import Dataset, Item
from safestress.lab import language as L

HELD_OUT_SEED = 10_000  # training streams use other seeds
CALIBRATION_SEED = 20_000  # unit scoring (SSAH's calibration prompts): disjoint from held-out and training
SIZE = 120
CALIBRATION_SIZE = 96


def _from_examples(name: str, examples: list[L.Example]) -> Dataset:
    items = [
        Item(str(i), e.prompt, {"task": e.task, "harmful": e.harmful, "answer": e.answer})
        for i, e in enumerate(examples)
    ]
    return Dataset(name, items)


def _dataset(name: str, harmful: bool, task: str | None = None) -> Dataset:
    examples = L.split("held-out", SIZE * 3 if task else SIZE, harmful, HELD_OUT_SEED)
    if task:
        examples = [e for e in examples if e.task == task]
    return _from_examples(name, examples)


def lab_harmful(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-harmful", harmful=True)


def lab_benign(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-benign", harmful=False)


def lab_chain(data_dir: Path | None = None) -> Dataset:
    return _dataset("lab-chain", harmful=False, task="chain")


def _calibration(name: str, harmful: bool) -> Dataset:
    """Prompts to score units on, from a seed stream neither training nor evaluation uses, so the
    units are classified on prompts the model is never measured on."""
    return _from_examples(name, L.split("calibration", CALIBRATION_SIZE, harmful, CALIBRATION_SEED))


def lab_calib_harmful(data_dir: Path | None = None) -> Dataset:
    return _calibration("lab-calib-harmful", harmful=True)


def lab_calib_benign(data_dir: Path | None = None) -> Dataset:
    return _calibration("lab-calib-benign", harmful=False)
