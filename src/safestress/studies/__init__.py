"""Studies: each paper's experiment as one declared, resumable chain of steps on any model.

``STUDIES`` maps a name to its packaged study file (YAML beside this module); ``STEPS`` maps a
step kind to the class that runs and reports it (studies/steps.py). Adding a study is a file and
one registration line; adding a step kind is its class and one line.
"""

from __future__ import annotations

from pathlib import Path

from safestress.registry import Registry
from safestress.studies.spec import StudySpec, read_study

_HERE = Path(__file__).parent

STUDIES: Registry[Path] = Registry("study")
STUDIES.register("noise", _HERE / "noise.yaml", paper="000")
STUDIES.register("units", _HERE / "units.yaml", paper="001")
STUDIES.register("approximations", _HERE / "approximations.yaml", paper="002")
STUDIES.register("budget", _HERE / "budget.yaml", paper="001")
STUDIES.register("family", _HERE / "family.yaml", paper="000")

STEPS: Registry[type] = Registry("step kind")
STEPS.register("sweep", "safestress.studies.steps:SweepStep")
STEPS.register("units", "safestress.studies.steps:UnitsStep")
STEPS.register("drift", "safestress.studies.steps:DriftStep")
STEPS.register("mva", "safestress.studies.mva_step:MvaStep")
STEPS.register("finetune", "safestress.studies.train_steps:FinetuneStep")
STEPS.register("prefer", "safestress.studies.train_steps:PreferStep")


def load_study(name: str) -> StudySpec:
    """A registered study by name, or a study file by path; checked before anything runs."""
    path = Path(name).expanduser()
    is_file = name.endswith((".yaml", ".yml")) or path.is_file()
    study = read_study(path if is_file else STUDIES.get(name))
    study.check(STEPS.names())
    return study


__all__ = ["STEPS", "STUDIES", "StudySpec", "load_study"]
