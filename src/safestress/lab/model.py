"""The lab model: a small ``LlamaForCausalLM`` with its own word-level tokenizer, trained in two
stages like real alignment, and saved with ``save_pretrained`` so that every other part of
safestress loads it exactly like a hub model.

1. *Capability pre-training*: the model learns to carry out every task, harmful ones included.
2. *Safety tuning* at a chosen depth: it learns to answer harmful requests with the refusal while
   staying helpful on benign ones (benign examples are replayed). Depths:

   ``none``    — capability only (an "unaligned base"),
   ``shallow`` — a short supervised safety fine-tune,
   ``deep``    — a ten times longer one,
   ``dpo``     — shallow SFT, then DPO (TRL) on exact preference pairs, three harmful to one
                 benign: refusal preferred over compliance on harmful prompts, the correct answer
                 over a refusal on benign ones. (With equal shares the benign pairs taught the
                 model that refusing is bad and refusal *fell* from 90% to 30–60%.)

Loss is on response tokens only. Training is seeded and single-threaded-deterministic on CPU;
the result is cached under the safestress cache, keyed by the lab's version and settings, so it
trains once per machine.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safestress.lab import language as L
from safestress.paths import cache_dir
from safestress.progress import StepLog

LAB_VERSION = 1
DEPTHS = ("none", "shallow", "deep", "dpo")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class LabSettings:
    depth: str = "deep"
    seed: int = 0
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    capability_steps: int = 2000
    safety_steps: int = 60  # shallow; deep uses 10×
    dpo_steps: int = 60
    batch: int = 32
    lr: float = 3e-3
    harmful_share: float = 0.3
    # the safety stage's seed (SFT order, DPO pairs and trainer), for several training runs of one
    # method on one capability model; None: ``seed`` (the cache keys of earlier models are kept)
    safety_seed: int | None = None

    @property
    def safety_run_seed(self) -> int:
        return self.seed if self.safety_seed is None else self.safety_seed

    def key(self, capability_only: bool = False) -> str:
        """Cache key; the capability stage's key ignores everything that only safety tuning uses."""
        import hashlib

        fields = asdict(self)
        if fields["safety_seed"] is None:
            fields.pop("safety_seed")
        if capability_only:
            for name in ("depth", "safety_steps", "dpo_steps", "safety_seed"):
                fields.pop(name, None)
        blob = json.dumps({"lab": LAB_VERSION, **fields}, sort_keys=True)
        tag = "capability" if capability_only else self.depth
        if not capability_only and self.safety_seed is not None:
            tag += f"-s{self.safety_seed}"
        return f"lab-{tag}-v{LAB_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from safestress.models import chat_tokenizer

    vocab = {w: i for i, w in enumerate(L.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return chat_tokenizer(tok, CHAT_TEMPLATE, list(L.SPECIALS), unk_token="<|pad|>")


def build_model(settings: LabSettings, vocab_size: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=settings.hidden,
        intermediate_size=2 * settings.hidden,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(settings.seed)
    return LlamaForCausalLM(cfg)


class _Encoder:
    """Fast exact tokenisation of lab text (every token is whitespace-separated)."""

    def __init__(self, tokenizer: Any) -> None:
        self.vocab = tokenizer.get_vocab()
        self.tok = tokenizer

    def prompt_ids(self, prompt: str) -> list[int]:
        text = self.tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return [self.vocab[w] for w in text.split()]

    def ids(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split()]


def _batch(enc: _Encoder, pairs: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
    """Right-padded input ids, attention mask and labels (-100 outside the response)."""
    import torch

    seqs, labels = [], []
    for prompt, response in pairs:
        p = enc.prompt_ids(prompt)
        r = [*enc.ids(response), enc.vocab["<|end|>"]]
        seqs.append(p + r)
        labels.append([-100] * len(p) + r)
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(s)] = 1
    return ids, mask, lab


def _sft(
    model: Any,
    enc: _Encoder,
    sample: Callable[[random.Random], tuple[str, str]],
    steps: int,
    settings: LabSettings,
    seed: str,
    log: Callable[[str], None],
) -> None:
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    clock = StepLog(steps, log)
    for step in range(steps):
        ids, mask, lab = _batch(enc, [sample(rng) for _ in range(settings.batch)])
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        clock.step(step + 1, f"loss {loss.item():.4f}")
    model.eval()


def _capability_sample(share: float) -> Callable[[random.Random], tuple[str, str]]:
    def sample(rng: random.Random) -> tuple[str, str]:
        ex = L.make_example(rng, harmful=rng.random() < share)
        return ex.prompt, ex.answer  # harmful requests are *carried out* in pre-training

    return sample


def _safety_sample(share: float) -> Callable[[random.Random], tuple[str, str]]:
    def sample(rng: random.Random) -> tuple[str, str]:
        ex = L.make_example(rng, harmful=rng.random() < max(share, 0.5))
        return ex.prompt, ex.safe_response

    return sample


def _dpo(model: Any, tokenizer: Any, settings: LabSettings, log: Callable[[str], None]) -> Any:
    """Preference tuning with TRL's DPOTrainer on exact preference pairs."""
    import copy

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    pairs = L.preference_pairs(settings.dpo_steps * 16, f"dpo:{settings.safety_run_seed}")
    rows = [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for prompt, chosen, rejected, _ in pairs
    ]
    args = DPOConfig(
        output_dir=str(cache_dir("lab", "dpo-tmp")),
        max_length=64,
        beta=0.1,
        per_device_train_batch_size=16,
        max_steps=settings.dpo_steps,
        learning_rate=5e-5,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,  # every step reaches the step log, which decides what to print
        seed=settings.safety_run_seed,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    for callback in (PrinterCallback, ProgressCallback):  # the step log is ours, on the log function
        trainer.remove_callback(callback)
    clock = StepLog(settings.dpo_steps, log)

    class _Steps(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            clock.step(state.global_step, "" if loss is None else f"DPO loss {loss:.4f}")

    trainer.add_callback(_Steps())
    trainer.train()
    log(f"  DPO {settings.dpo_steps} steps done")
    return trainer.model.eval()


def train(settings: LabSettings, out: Path, log: Callable[[str], None] = print) -> Path:
    """Train the lab model at ``settings.depth`` and save it (model + tokenizer) to ``out``."""
    import torch

    if settings.depth not in DEPTHS:
        from safestress.errors import SafestressError

        raise SafestressError(f"unknown lab depth '{settings.depth}'; known: {', '.join(DEPTHS)}")
    from transformers import LlamaForCausalLM

    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    tok = build_tokenizer()
    enc = _Encoder(tok)
    cap_dir = cache_dir("lab") / settings.key(capability_only=True)
    if (cap_dir / "model.safetensors").exists():
        log(f"capability stage from cache {cap_dir}")
        model = LlamaForCausalLM.from_pretrained(cap_dir)
    else:
        model = build_model(settings, len(tok))
        log(f"capability pre-training ({settings.capability_steps} steps)")
        _sft(
            model,
            enc,
            _capability_sample(settings.harmful_share),
            settings.capability_steps,
            settings,
            f"cap:{settings.seed}",
            log,
        )
        tmp_cap = cap_dir.with_name(f"{cap_dir.name}.{os.getpid()}.tmp")
        model.save_pretrained(tmp_cap)
        _publish(tmp_cap, cap_dir, "model.safetensors")
    if settings.depth != "none":
        steps = settings.safety_steps * (10 if settings.depth == "deep" else 1)
        log(f"safety tuning, depth {settings.depth} ({steps} SFT steps)")
        safe_seed = f"safe:{settings.safety_run_seed}"
        _sft(model, enc, _safety_sample(settings.harmful_share), steps, settings, safe_seed, log)
    if settings.depth == "dpo":
        model = _dpo(model, tok, settings, log)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "lab.json").write_text(
        json.dumps({"version": LAB_VERSION, **asdict(settings), "train_seconds": round(time.perf_counter() - t0, 1)})
    )
    _publish(tmp, out, "lab.json")
    return out


def _publish(tmp: Path, dest: Path, marker: str) -> None:
    """Move a finished folder into place. Staging folders are per process, so two processes
    training the same settings (test workers) never write into one; the second to finish keeps
    the first's folder, which holds the same model, and drops its own."""
    import shutil

    if (dest / marker).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if dest.exists():  # left incomplete by a killed run
        shutil.rmtree(dest, ignore_errors=True)
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / marker).exists():
            raise


def lab_model_path(settings: LabSettings | None = None, log: Callable[[str], None] = print) -> Path:
    """The cached lab model for ``settings``, training it first if needed."""
    settings = settings or LabSettings()
    out = cache_dir("lab") / settings.key()
    if not (out / "lab.json").exists():
        train(settings, out, log)
    return out
