"""A study file: a paper's experiment declared as named steps over the existing machinery.

A study is YAML (the packaged ones sit beside this module) with a name, the seed paper it
reproduces, what every model must have (``requires``), declared scales and a list of steps::

    name: noise
    requires: [chat]
    scales:
      cpu: {prompts: 50, sigmas: [0.05, 0.1, 0.2]}
    steps:
      - name: harm
        kind: sweep                # a registered step kind (studies.STEPS)
        with: {dataset: jbb, limit: $prompts, strengths: $sigmas, judge: [refusal, harm]}

A value written ``$name`` is the scale's setting of that name, so one file holds the CPU and
the paper scale. Everything is validated when the file is read, before any step runs: an
unknown step kind, a scale's missing setting or a step that needs a later one is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safestress.errors import SafestressError

Requirement = Literal["chat"]


class StepSpec(BaseModel):
    """One step: its ``kind`` says which code runs it, ``with`` its settings, ``needs`` the
    earlier steps whose output folders it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: str
    needs: tuple[str, ...] = ()
    settings: dict[str, Any] = Field(default_factory=dict, alias="with")
    title: str = ""


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    paper: str = ""
    seed: int = 0
    requires: tuple[Requirement, ...] = ()
    scales: dict[str, dict[str, Any]] = Field(min_length=1)
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    notes: str = ""

    def check(self, known_kinds: list[str]) -> None:
        """Refuse what would fail mid-study: unknown kinds, duplicate names, needs of later or
        missing steps, and ``$settings`` a scale does not give."""
        seen: set[str] = set()
        for step in self.steps:
            if step.kind not in known_kinds:
                raise SafestressError(
                    f"study '{self.name}': step '{step.name}' has unknown kind '{step.kind}'; "
                    f"known: {', '.join(known_kinds)}"
                )
            if step.name in seen:
                raise SafestressError(f"study '{self.name}': two steps are named '{step.name}'")
            for need in step.needs:
                if need not in seen:
                    raise SafestressError(
                        f"study '{self.name}': step '{step.name}' needs '{need}', which is not an earlier step"
                    )
            seen.add(step.name)
        for scale in self.scales:
            for step in self.steps:
                substitute(step.settings, self.scales[scale], f"study '{self.name}' at scale '{scale}'")

    def with_settings(self, scale: str, settings: dict[str, Any]) -> StudySpec:
        """This study with ``settings`` (``study run -c FILE``) written over the scale's own."""
        if scale not in self.scales:
            raise SafestressError(f"study '{self.name}' has no scale '{scale}'; its scales: {', '.join(self.scales)}")
        unknown = sorted(set(settings) - set(self.scales[scale]))
        if unknown:
            raise SafestressError(
                f"study '{self.name}' has no setting {', '.join(unknown)}; "
                f"its settings: {', '.join(self.scales[scale])}"
            )
        return self.model_copy(update={"scales": {**self.scales, scale: {**self.scales[scale], **settings}}})

    def steps_at(self, scale: str) -> list[StepSpec]:
        """The steps with the scale's settings written in."""
        if scale not in self.scales:
            raise SafestressError(f"study '{self.name}' has no scale '{scale}'; its scales: {', '.join(self.scales)}")
        values = self.scales[scale]
        where = f"study '{self.name}' at scale '{scale}'"
        return [s.model_copy(update={"settings": substitute(s.settings, values, where)}) for s in self.steps]


def substitute(value: Any, values: dict[str, Any], where: str) -> Any:
    """``value`` with every ``$name`` string replaced by ``values[name]`` (recursively)."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in values:
            raise SafestressError(f"{where}: setting '${name}' is not given by the scale")
        return values[name]
    if isinstance(value, dict):
        return {k: substitute(v, values, where) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values, where) for v in value]
    return value


def read_study(path: Path) -> StudySpec:
    """A study file, validated; every fault is one line naming the file."""
    from safestress.config import load_yaml

    if not Path(path).is_file():
        raise SafestressError(f"study file not found: {path}")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SafestressError(f"study file {path} is not a mapping of settings")
    try:
        return StudySpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SafestressError(f"study file {path}: {where}: {err['msg']}") from None
