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

import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.models import LoadedModel
from safestress.train.freeze import UnitFreeze


@dataclass
class FinetuneSettings:
    steps: int = 100
    learning_rate: float = 2e-5
    batch_size: int = 8
    max_length: int = 512
    weight_decay: float = 0.0
    warmup_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.max_length < 8:
            raise SafestressError("steps and batch size must be ≥ 1 and max length ≥ 8")
        if not self.learning_rate > 0:
            raise SafestressError(f"learning rate must be > 0, got {self.learning_rate}")


@contextmanager
def quiet_training() -> Iterator[None]:
    """Silence the trainers' deprecation warnings and info logs for the block, then restore both
    (the command line reports progress and the loss itself). A trainer's own refusal (a model it
    cannot train, a bad argument combination) or a tensor error becomes one line."""
    logger = logging.getLogger("transformers")
    level = logger.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.setLevel(logging.ERROR)
        try:
            yield
        except SafestressError:
            raise
        except (ValueError, RuntimeError, TypeError) as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise SafestressError(f"training failed: {first}") from None
        finally:
            logger.setLevel(level)


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
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rows = [
        {
            "prompt": [{"role": "user", "content": p}]
            if not lm.system_prompt
            else [{"role": "system", "content": lm.system_prompt}, {"role": "user", "content": p}],
            "completion": [{"role": "assistant", "content": r}],
        }
        for p, r in pairs
    ]
    with quiet_training():  # the config warns about deprecated arguments it sets itself
        args = SFTConfig(
            output_dir=str(tmp / "trainer"),
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            warmup_steps=settings.warmup_steps,
            max_length=settings.max_length,
            completion_only_loss=True,
            packing=False,
            report_to="none",
            save_strategy="no",
            logging_steps=max(1, settings.steps // 5),
            seed=settings.seed,
            data_seed=settings.seed,
            use_cpu=str(lm.device) == "cpu",
            disable_tqdm=True,
        )
    tokenizer = lm.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the summary reports the loss
        if freeze:
            with freeze.active():
                result = trainer.train()
        else:
            result = trainer.train()
    model.eval()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {
        "model": lm.name,
        "settings": asdict(settings),
        "pairs": len(pairs),
        "frozen": freeze.summary() if freeze else None,
        "first_loss": losses[0] if losses else None,
        "train_loss": float(result.training_loss),
        "seconds": round(time.perf_counter() - t0, 1),
        **(meta or {}),
    }
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"fine-tuned {summary['pairs']} pairs × {settings.steps} steps in {summary['seconds']} s; wrote {out}")
    return summary
