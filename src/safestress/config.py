"""The sweep specification: one pydantic model behind both the flags and the YAML file.

Every flag of ``safestress run`` has a YAML twin with the same name (hyphens or underscores); a
flag given on the command line overrides the file. Validation errors become one-line messages.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safestress.errors import SafestressError
from safestress.judges.fluency import MAX_NLL as FLUENCY_MAX_NLL
from safestress.textfile import read_text


def margin_share(points: float | None) -> float | None:
    """An equivalence margin given in points (``--margin 5``) as the share the statistics use."""
    return None if points is None else points / 100


# ``--batch-size auto``: where to start. On a GPU the largest batch is found by halving on
# out-of-memory; on a CPU throughput stops growing near 64 rows (docs/benchmarks.md, throughput)
AUTO_BATCH = {"cuda": 512, "cpu": 64}


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="hub ids, local directories or .gguf files")
    dataset: str | dict[str, Any] | list[str | dict[str, Any]] = "advbench"
    limit: int | None = Field(None, ge=1)
    data_dir: str | None = None
    perturb: str = "noise"
    # strengths of the perturbation's strength parameter (σ for noise, α for add-direction,
    # sparsity for TEAL; ``sigma`` is accepted as an alias); None: the perturbation's default
    # strengths, else [0, 0.05, 0.1, 0.2]. Perturbations without one (prune, ablate-direction) take none
    strengths: list[float] | None = Field(None, min_length=1)
    scale: Literal["absolute", "relative"] = "absolute"
    positions: Literal["all", "generated"] = "all"
    params: dict[str, Any] = Field(default_factory=dict, description="further perturbation parameters")
    sites: list[str] = Field(default_factory=lambda: ["blocks.*.resid_post"], min_length=1)
    seeds: int = Field(1, ge=1, le=10_000)
    max_new_tokens: int = Field(64, ge=1, le=32768)
    # rows per batch, or "auto": AUTO_BATCH[device kind] to start, halved on out-of-memory
    # (generation.iter_generate backs off from any size)
    batch_size: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = 16
    # stop a row once every judge has settled its verdict on the text so far (Judge.settled); the
    # stored response is then that prefix, and a judge added later that cannot settle on it has
    # the row regenerated. Not part of any key: it changes what is generated, never a verdict
    early_exit: bool = False
    # add prompts in rounds of round_size (per dataset, in a fixed random order) and stop each
    # condition once its contrast with clean is decided (safestress.sequential)
    sequential: bool = False
    round_size: int = Field(20, ge=1, le=1_000_000)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    judge: list[str] = Field(default_factory=lambda: ["refusal"], min_length=1)
    # a reference LM's salad check after the coherence criterion (judges.fluency); part of the
    # verdict keys of the judges it applies to, never of a generation's
    fluency_ref: str | None = None
    fluency_max_nll: float = Field(FLUENCY_MAX_NLL, gt=0)
    # utility beside safety: perplexity of this corpus under each condition (utility.load_corpus)
    ppl: str | None = None
    ppl_tokens: int = Field(4096, ge=16)
    store: str = "safestress.db"
    out: str | None = Field(None, description="report folder (default: beside the store)")
    template: Literal["chat", "raw"] | None = None
    chat_template: str | None = None
    system_prompt: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    plot: bool = True
    # equivalence margin in points: each contrast with clean also gets a TOST within ±margin and is
    # reported as different, equivalent or inconclusive (stats.verdict); None: no equivalence claims
    margin: float | None = Field(None, gt=0, lt=100)
    # generation on Ray workers: > 1 starts that many (one GPU each where there are GPUs), or
    # joins the cluster at ray_address ("auto" for a running one); judging and the store stay local
    workers: int = Field(1, ge=1, le=4096)
    ray_address: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {str(k).replace("-", "_"): v for k, v in data.items()}
            if "model" in data:
                if "models" in data:
                    raise ValueError("give 'model' or 'models', not both")
                data["models"] = data.pop("model")
            for key in ("models", "sites", "judge"):
                if isinstance(data.get(key), str):
                    data[key] = [data[key]]
            if "sigma" in data:  # the name before perturbations other than noise had strengths
                if "strengths" in data:
                    raise ValueError("give 'strengths' or its alias 'sigma', not both")
                data["strengths"] = data.pop("sigma")
            if isinstance(data.get("strengths"), (int, float, str)):
                data["strengths"] = parse_floats(str(data["strengths"]))
        return data

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto" and not value.strip().isdigit():
            raise ValueError(f"batch size must be a number of rows or 'auto', got '{value}'")
        return value

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        for v in values:
            if not math.isfinite(v):
                raise ValueError(f"a strength (--sigma/--strength) must be finite, got {v}")
            if v < 0:
                raise ValueError(f"a strength (--sigma/--strength) must be >= 0, got {v}")
        return sorted(set(values))

    def rows_per_batch(self) -> int:
        """The batch size to start from: the given one, or for ``auto`` the device's default."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        from safestress.models import resolve_device

        return AUTO_BATCH["cuda" if resolve_device(self.device).startswith("cuda") else "cpu"]

    def datasets(self) -> list[str | dict[str, Any]]:
        return self.dataset if isinstance(self.dataset, list) else [self.dataset]

    def report_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        store = Path(self.store)
        return store.with_name(store.stem + "-report")


def parse_floats(text: str) -> list[float]:
    """``"0,0.05, 0.1"`` → floats; an empty list is an error, never "use the defaults"."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SafestressError(f"expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise SafestressError(f"expected comma-separated numbers, got '{text}' (an empty list)")
    return values


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
        import difflib

        known = [*SweepConfig.model_fields, "model", "sigma"]
        close = difflib.get_close_matches(str(err["loc"][0]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"
        return f"unknown setting '{where}' ({hint})"
    return f"invalid {where}: {msg}"


def default_of(name: str) -> str:
    """A setting's default as the help of ``run`` shows it. The flags default to "not given" so
    that a YAML file can set them; their help states the default that then applies."""
    field = SweepConfig.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f"(default: {value})"


def load_yaml(path: str | Path) -> dict[str, Any]:
    text = read_text(path, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SafestressError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SafestressError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def build_config(file: str | Path | None = None, **flags: Any) -> SweepConfig:
    """YAML file (optional) overridden by the flags that were given (``None`` = not given)."""
    data: dict[str, Any] = load_yaml(file) if file else {}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    for key, value in flags.items():
        if value is None or value == [] or value == ():
            continue
        if key == "models":
            data.pop("model", None)
        if key == "strengths":  # the flag overrides the file's setting under either name
            data.pop("sigma", None)
        data[key] = value
    if "models" not in data and "model" not in data:
        raise SafestressError("no model given; use --model (repeatable) or 'models:' in the config file")
    try:
        return SweepConfig(**data)
    except ValidationError as exc:
        raise SafestressError(_one_line(exc)) from None


def split_values(values: list[str] | None) -> list[str] | None:
    """Repeatable, comma-separated option values as one flat list (``None`` when none were
    given), so ``--judge a,b`` and ``--judge a --judge b`` mean the same."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]
