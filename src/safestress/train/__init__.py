"""Training beside the measurement flow, reusing its sites, hooks and perturbations: fine-tuning with
units of a unit map frozen (SSAH) and QuadA-style perturbation-aware safety training.

Names are imported on first use: the command line imports :mod:`safestress.train.cli` at start-up,
and torch (which the trainers need) must not slow ``safestress --help``."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "FinetuneSettings": "safestress.train.sft",
    "finetune": "safestress.train.sft",
    "FrozenSlice": "safestress.train.freeze",
    "UnitFreeze": "safestress.train.freeze",
    "chosen_units": "safestress.train.freeze",
    "parse_classes": "safestress.train.freeze",
    "random_units": "safestress.train.freeze",
    "unit_masks": "safestress.train.freeze",
    "unit_slices": "safestress.train.freeze",
    "PreferenceRow": "safestress.train.quada",
    "QuadASettings": "safestress.train.quada",
    "quada_train": "safestress.train.quada",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'safestress.train' has no attribute '{name}'")


__all__ = sorted(_LAZY)
