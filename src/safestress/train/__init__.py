"""Training beside the measurement flow, reusing its sites, hooks and perturbations: fine-tuning with
units of a unit map frozen (SSAH) and QuadA-style perturbation-aware safety training."""

from safestress.train.finetune import FinetuneSettings, finetune
from safestress.train.freeze import (
    FrozenSlice,
    UnitFreeze,
    chosen_units,
    parse_classes,
    random_units,
    unit_masks,
    unit_slices,
)
from safestress.train.quada import PreferenceRow, QuadASettings, quada_train

__all__ = [
    "FinetuneSettings",
    "FrozenSlice",
    "PreferenceRow",
    "QuadASettings",
    "UnitFreeze",
    "chosen_units",
    "finetune",
    "parse_classes",
    "quada_train",
    "random_units",
    "unit_masks",
    "unit_slices",
]
