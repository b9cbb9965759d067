"""Perturbation-aware safety training in the manner of QuadA (Zhang et al., USENIX Security 2025).

QuadA's analysis of activation approximations found that (1) errors in the first layers hurt
safety most, (2) one noise model — the *most vulnerable approximation*, MVA — stands in for the
approximations' errors, and (3) under approximation, harmful prompts' activations drift into the
benign cluster. Its defence follows each finding: preference training (DPO) in which the policy's
activations are perturbed with the MVA at the first layers only, plus a term that keeps the
harmful prompts' activations clustered.

Here, with every part named and replaceable:

* **preference loss** — TRL's ``DPOTrainer`` (sigmoid loss, ``beta``), reference model
  unperturbed;
* **perturbation** — any registered perturbation (default Gaussian noise, σ relative to each
  token's RMS, e.g. the level ``safestress analyze mva`` reports) at the chosen sites (default
  the residual output of the first 25% of blocks), fresh noise for every step (seeded);
* **cluster term** — for the harmful rows of a batch, the activation of the last prompt token at
  ``cluster_site`` (default: the last perturbed block's residual output), under the perturbation;
  the loss is the mean cosine distance of each to their batch centroid, ``1 − cos(h_i, h̄)``,
  weighted by ``cluster_weight``. With a weight of 0 and no perturbation the trainer is plain DPO,
  the baseline every QuadA measurement should be compared with.

The exact form of QuadA's clustering term is not reproduced from its code (not available here);
this cosine-to-centroid term implements the idea as stated — keep the harmful activations together
under perturbation — and is documented in docs/defence.md with what it measured.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from safestress.errors import SafestressError
from safestress.models import LoadedModel
from safestress.train.common import (
    TrainSettings,
    chat_prompt,
    padded_tokenizer,
    publish,
    quiet_training,
    staging_dir,
    train,
    trainer_args,
)


@dataclass(frozen=True)
class PreferenceRow:
    prompt: str
    chosen: str
    rejected: str
    harmful: bool = True


@dataclass
class QuadASettings(TrainSettings):
    learning_rate: float = 5e-6
    beta: float = 0.1
    perturbation: str = "noise"  # a registered perturbation; "none" for plain DPO
    params: dict[str, Any] = field(default_factory=lambda: {"sigma": 0.5, "scale": "relative"})
    sites: str | None = None  # default: resid_post of the first quarter of the blocks
    cluster_site: str | None = None  # default: the last perturbed block's resid_post
    cluster_weight: float = 0.1
    # recompute each block's forward during backward to save memory (TRL's default); the
    # perturbation stays installed through the backward, so the recomputation sees the same noise
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise SafestressError(f"beta must be > 0, got {self.beta}")
        if self.cluster_weight < 0:
            raise SafestressError(f"cluster weight must be ≥ 0, got {self.cluster_weight}")


def default_sites(n_layers: int) -> str:
    """The residual output of the first quarter of the blocks (at least one)."""
    last = max(1, round(n_layers / 4)) - 1
    return f"blocks.0-{last}.resid_post" if last else "blocks.0.resid_post"


def cluster_loss(h: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of the rows of ``h`` ``[N, d]`` to their centroid (0 for fewer than 2 rows)."""
    if h.shape[0] < 2:
        return h.sum() * 0.0
    centroid = h.mean(0, keepdim=True)
    return (1.0 - torch.nn.functional.cosine_similarity(h, centroid, dim=-1)).mean()


def _trainer_class() -> type:
    from trl import DPOTrainer

    class QuadATrainer(DPOTrainer):
        """DPO whose policy forward runs under a perturbation, plus the cluster term."""

        def __init__(self, *args: Any, quada: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.quada = quada
            self.quada_log: list[dict[str, float]] = []
            self._harmful: torch.Tensor | None = None  # this step's flags and captured activation,
            self._captured: dict[str, torch.Tensor] = {}  # set by training_step for compute_loss

        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
            """One optimiser step with the perturbation and the capture hook installed through the
            forward *and* the backward.

            With gradient checkpointing (TRL's default) every block's forward runs again during
            the backward. Were the hooks gone by then, as when they wrapped the loss alone, the
            gradient would belong to the unperturbed network (or, for a perturbation that saves
            tensors, the recomputation would fail). Inside the step the recomputation meets the same
            hooks, and the keyed noise is a function of (row, position, site), so it draws the same
            values: the gradient equals the one computed without checkpointing (tested).
            """
            from safestress.perturb import perturbed
            from safestress.sites import site_hooks

            q = self.quada
            self._harmful = inputs.pop("harmful", None)

            def capture(x: torch.Tensor) -> None:
                self._captured.setdefault("h", x)  # the forward's tensor, not a recomputation's

            rows = inputs["input_ids"].shape[0]
            keys = torch.randint(0, 2**62, (rows, 2), generator=q["generator"], dtype=torch.int64)
            try:
                with perturbed(model, q["perturbation"], q["sites"]) as state:
                    state.ctx.reset(keys=keys)
                    with site_hooks(model, {q["cluster_site"]: capture} if q["weight"] > 0 else {}):
                        return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._captured, self._harmful = {}, None  # no activations held between steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            q = self.quada
            harmful = inputs.pop("harmful", self._harmful)
            captured = self._captured
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = result[0] if return_outputs else result
            rows = inputs["input_ids"].shape[0]
            term = torch.zeros((), device=loss.device)
            if q["weight"] > 0 and "h" in captured:
                half = rows // 2  # chosen rows first, then the rejected rows of the same prompts
                mask = inputs["completion_mask"][:half]
                last_prompt = (mask.argmax(dim=1) - 1).clamp(min=0)
                h = captured["h"][:half][torch.arange(half, device=mask.device), last_prompt]
                if harmful is not None:
                    h = h[harmful.to(h.device).bool()]
                term = cluster_loss(h.float())
                loss = loss + q["weight"] * term
            self.quada_log.append({"cluster": float(term.detach())})
            return (loss, result[1]) if return_outputs else loss

    return QuadATrainer


def _collator_with_flags(base: Any) -> Any:
    """TRL's preference collator, plus the rows' ``harmful`` flags as a tensor."""

    class WithFlags(type(base)):  # type: ignore[misc]
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            out["harmful"] = torch.tensor([bool(e.get("harmful", True)) for e in examples])
            return out

    obj = copy.copy(base)
    obj.__class__ = WithFlags
    return obj


def _sites(settings: QuadASettings, n_layers: int) -> tuple[list[str], str]:
    """The perturbed sites (by default the first blocks, where the paper finds errors hurt most)
    and the one site whose harmful-cluster term is added: given, or the last perturbed block's
    residual stream."""
    from safestress.sites import parse_site, select_sites

    sites = select_sites(settings.sites or default_sites(n_layers), n_layers)
    if not settings.cluster_site:
        return sites, f"blocks.{max(parse_site(s)[0] or 0 for s in sites)}.resid_post"
    chosen = select_sites(settings.cluster_site, n_layers)
    if len(chosen) != 1:
        raise SafestressError(f"cluster site must name one site, got {len(chosen)}: {settings.cluster_site}")
    return sites, chosen[0]


def _preference_data(lm: LoadedModel, rows: Sequence[PreferenceRow]) -> Any:
    """TRL's conversational preference format, with the harmful flag the cluster term reads."""
    from datasets import Dataset

    def answer(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    return Dataset.from_list(
        [
            {
                "prompt": chat_prompt(lm, r.prompt),
                "chosen": answer(r.chosen),
                "rejected": answer(r.rejected),
                "harmful": bool(r.harmful),
            }
            for r in rows
        ]
    )


def quada_train(
    lm: LoadedModel,
    rows: Sequence[PreferenceRow],
    out: str | Path,
    settings: QuadASettings | None = None,
    log: Callable[[str], None] = print,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``lm`` on preference ``rows`` with the QuadA objective; save model + tokenizer to ``out``."""
    settings = settings or QuadASettings()
    if not rows:
        raise SafestressError("no preference rows")
    if lm.template != "chat":
        raise SafestressError("QuadA training needs a chat template (the model was loaded with template 'raw')")
    from trl import DPOConfig

    from safestress.perturb import make_perturbation
    from safestress.sites import num_layers

    model = lm.ensure_weights()
    sites, cluster_site = _sites(settings, num_layers(model))
    if settings.perturbation == "none":  # plain DPO: the registry's identity, no hooks
        perturbation = make_perturbation("none")
    else:
        perturbation = make_perturbation(settings.perturbation, **settings.params)
    out = Path(out)
    tmp = staging_dir(out)
    data = _preference_data(lm, rows)
    with quiet_training():  # the config warns about deprecated arguments it sets itself
        args = DPOConfig(
            **trainer_args(lm, tmp, settings),
            beta=settings.beta,
            remove_unused_columns=False,
            gradient_checkpointing=settings.gradient_checkpointing,
        )
    tokenizer = padded_tokenizer(lm)
    quada = {
        "perturbation": perturbation,
        "sites": sites,
        "cluster_site": cluster_site,
        "weight": settings.cluster_weight,
        "generator": torch.Generator().manual_seed(settings.seed),
    }
    t0 = time.perf_counter()
    model.train()
    with quiet_training():
        trainer = _trainer_class()(
            model=model,
            ref_model=copy.deepcopy(model).eval(),
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            quada=quada,
        )
        trainer.data_collator = _collator_with_flags(trainer.data_collator)
    plain_dpo = settings.perturbation == "none" and not settings.cluster_weight
    result, first_loss = train(trainer, label="DPO" if plain_dpo else "QuadA")
    model.eval()
    clusters = [e["cluster"] for e in trainer.quada_log]
    summary = {
        "model": lm.name,
        "settings": asdict(settings),
        "sites": sites,
        "cluster_site": cluster_site,
        "rows": len(rows),
        "harmful_rows": sum(r.harmful for r in rows),
        "first_loss": first_loss,
        "train_loss": float(result.training_loss),
        "cluster_first": clusters[0] if clusters else None,
        "cluster_last": clusters[-1] if clusters else None,
        "seconds": round(time.perf_counter() - t0, 1),
        **(meta or {}),
    }
    publish(model, tokenizer, tmp, out, "quada.json", summary)
    kind = "DPO" if plain_dpo else "QuadA"
    log(f"{kind}: {len(rows)} preference rows × {settings.steps} steps in {summary['seconds']} s; wrote {out}")
    return summary
