"""safestress: stress-test the safety alignment of chat LLMs under activation perturbations.

The flow, as a few calls for notebooks::

    import safestress as ss

    lm = ss.load_model("HuggingFaceTB/SmolLM2-135M-Instruct")       # hub id, dir or .gguf
    prompts = [it.prompt for it in ss.load_dataset("jbb", limit=20).items]
    noise = ss.make_perturbation("noise", sigma=0.1)
    with ss.perturbed(lm, noise, "blocks.0-3.resid_post"):
        gens = ss.generate(lm, prompts, seeds=0, settings=ss.GenerationSettings(max_new_tokens=64))
    verdicts = ss.make_judge("refusal").judge(prompts, [g.text for g in gens])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "safestress.models",
    "wrap_model": "safestress.models",
    "LoadedModel": "safestress.models",
    "load_dataset": "safestress.datasets",
    "make_perturbation": "safestress.perturb",
    "perturbed": "safestress.perturb",
    "PERTURBATIONS": "safestress.perturb",
    "generate": "safestress.generation",
    "GenerationSettings": "safestress.generation",
    "make_judge": "safestress.judges",
    "JUDGES": "safestress.judges",
    "DATASETS": "safestress.datasets",
    "Store": "safestress.store",
    "SweepConfig": "safestress.config",
    "build_config": "safestress.config",
    "plan_sweep": "safestress.sweep",
    "execute": "safestress.execution",
    "summarize": "safestress.report",
    "labelled": "safestress.report.labels",
    "site_hooks": "safestress.sites",
    "capture": "safestress.sites",
    "select_sites": "safestress.sites",
    "SafestressError": "safestress.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from safestress.models import load_model  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'safestress' has no attribute '{name}'")


__all__ = sorted(_LAZY)
