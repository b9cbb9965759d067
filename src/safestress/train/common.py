"""What every trainer of :mod:`safestress.train` shares: the chat rows it feeds TRL, the trainer
arguments that make a run reproducible and quiet, running it, and writing its output directory
whole or not at all."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.models import LoadedModel


@dataclass
class TrainSettings:
    """What every trainer here takes; :func:`trainer_args` turns it into TRL arguments."""

    steps: int = 100
    learning_rate: float = 2e-5
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.max_length < 8:
            raise SafestressError("steps and batch size must be ≥ 1 and max length ≥ 8")
        if not self.learning_rate > 0:
            raise SafestressError(f"learning rate must be > 0, got {self.learning_rate}")


def require_new_dir(path: Path, what: str = "") -> None:
    """One-line error unless ``path`` is missing or an empty directory (never overwrite results)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SafestressError(f"{path} exists and is not an empty directory; choose a new one{what}")


def quiet_progress() -> None:
    """No per-file or per-map progress bars from transformers and datasets (loading and writing
    shards, tokenising the training rows): the command reports what it does itself."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


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


def chat_prompt(lm: LoadedModel, prompt: str) -> list[dict[str, str]]:
    """The prompt as chat messages, with the model's system prompt if it has one (as in generation)."""
    system = [{"role": "system", "content": lm.system_prompt}] if lm.system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


def trainer_args(lm: LoadedModel, staging: Path, settings: TrainSettings) -> dict[str, Any]:
    """Arguments every TRL config here gets: the settings' steps, batch size, learning rate, length
    and seed (data order too), no checkpoints, no reporting, no progress bars."""
    return {
        "output_dir": str(staging / "trainer"),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": max(1, settings.steps // 5),
        "seed": settings.seed,
        "data_seed": settings.seed,
        "use_cpu": str(lm.device) == "cpu",
        "disable_tqdm": True,
    }


def padded_tokenizer(lm: LoadedModel) -> Any:
    """The model's tokenizer, with the end token as padding where it has no pad token."""
    tokenizer = lm.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def train(trainer: Any, context: Any = None, label: str = "training") -> tuple[Any, float | None]:
    """Run ``trainer`` (inside ``context``, e.g. a unit freeze) under a progress bar on stderr;
    returns its result and first logged loss.

    The bar counts optimizer steps and shows the last logged loss: a real model trains for tens of
    minutes on a CPU, and a silent terminal reads as a hang."""
    from rich.console import Console
    from rich.progress import TextColumn
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from safestress.progress import job_bar

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the bar and the summary report the loss
    with job_bar(label, Console(stderr=True), TextColumn("{task.fields[loss]}")) as bar:
        task = bar.add_task(label, total=trainer.args.max_steps, loss="")

        class StepBar(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                bar.update(task, completed=state.global_step)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    bar.update(task, loss=f"loss {logs['loss']:.4g}")

        trainer.add_callback(StepBar())
        with quiet_training():
            if context is None:
                result = trainer.train()
            else:
                with context:
                    result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return result, losses[0] if losses else None


def staging_dir(out: Path) -> Path:
    """Where a run writes before its output is complete (cleared of a crashed run's leftovers)."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def publish(model: Any, tokenizer: Any, staging: Path, out: Path, record: str, summary: dict[str, Any]) -> None:
    """Save model, tokenizer and the run's JSON record into ``staging``, then move it to ``out``."""
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / record).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
