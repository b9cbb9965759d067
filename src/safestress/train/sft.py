"""Supervised fine-tuning of a chat model on (prompt, response) pairs, optionally with units frozen.

This is the experiment behind SSAH's "alignment budget": fine-tune an aligned model (on benign
task data, or on a few harmful demonstrations — a fine-tuning attack) and compare its safety
afterwards with nothing frozen, with the safety-critical units frozen, and with as many random
units frozen. Training is TRL's ``SFTTrainer`` on conversational prompt/completion rows (the
model's own chat template, loss on the response tokens only); :mod:`safestress.train.freeze`
adds the unit masks through a gradient hook and a callback that restores the frozen entries after
every optimiser step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from safestress.train.freeze import UnitFreeze


@dataclass
class FinetuneSettings(TrainSettings):
    weight_decay: float = 0.0
    warmup_steps: int = 0


def _restore_callback(freeze: UnitFreeze) -> Any:
    from transformers import TrainerCallback

    class RestoreFrozen(TrainerCallback):  # after each optimiser step: frozen entries back to their saved values
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            freeze.restore()
            return control

    return RestoreFrozen()


def finetune(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    out: str | Path,
    settings: FinetuneSettings | None = None,
    freeze: UnitFreeze | None = None,
    log: Callable[[str], None] = print,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``lm`` on ``pairs`` and save model + tokenizer to ``out`` (written whole or not at all).

    Returns a summary (settings, data size, frozen units, loss, seconds, plus ``meta``), also saved
    as ``out/finetune.json``.
    """
    settings = settings or FinetuneSettings()
    if not pairs:
        raise SafestressError("no training pairs")
    if lm.template != "chat":
        raise SafestressError("fine-tuning needs a chat template (the model was loaded with template 'raw')")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = lm.ensure_weights()
    out = Path(out)
    tmp = staging_dir(out)
    rows = [{"prompt": chat_prompt(lm, p), "completion": [{"role": "assistant", "content": r}]} for p, r in pairs]
    with quiet_training():  # the config warns about deprecated arguments it sets itself
        args = SFTConfig(
            **trainer_args(lm, tmp, settings),
            weight_decay=settings.weight_decay,
            warmup_steps=settings.warmup_steps,
            completion_only_loss=True,
            packing=False,
        )
    tokenizer = padded_tokenizer(lm)
    model.train()
    t0 = time.perf_counter()
    with quiet_training():
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[_restore_callback(freeze)] if freeze else None,
        )
    result, first_loss = train(trainer, freeze.active() if freeze else None, label="fine-tuning")
    model.eval()
    summary = {
        "model": lm.name,
        "settings": asdict(settings),
        "pairs": len(pairs),
        "frozen": freeze.summary() if freeze else None,
        "first_loss": first_loss,
        "train_loss": float(result.training_loss),
        "seconds": round(time.perf_counter() - t0, 1),
        **(meta or {}),
    }
    publish(model, tokenizer, tmp, out, "finetune.json", summary)
    log(f"fine-tuned {summary['pairs']} pairs × {settings.steps} steps in {summary['seconds']} s; wrote {out}")
    return summary
