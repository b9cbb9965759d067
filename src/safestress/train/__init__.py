"""Training beside the measurement flow: fine-tuning with units frozen (SSAH), reusing the sites of
:mod:`safestress.sites` and the unit maps of :mod:`safestress.attribution`."""

from safestress.train.finetune import FinetuneSettings, finetune
from safestress.train.freeze import UnitFreeze, chosen_units, parse_classes, random_units, unit_masks

__all__ = ["FinetuneSettings", "UnitFreeze", "chosen_units", "finetune", "parse_classes", "random_units", "unit_masks"]
