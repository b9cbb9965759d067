"""Tiny random-initialised models of every supported architecture, for tests and plugin authors.

``tiny_model("llama")`` returns a :class:`~safestress.models.LoadedModel` with a byte-level
tokenizer and a chat template, small enough to generate in milliseconds on a CPU. The weights
are seeded, so two calls give the same model. ``save_tiny_model`` writes one with
``save_pretrained`` so that it loads through the normal loader like any hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "gpt2")


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + specials) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from safestress.models import chat_tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return chat_tokenizer(tok, CHAT_TEMPLATE, SPECIALS)


def tiny_config(arch: str, vocab_size: int, n_layers: int = 2, hidden: int = 64) -> Any:
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "gpt2":
        return tf.GPT2Config(n_layer=n_layers, n_embd=hidden, n_head=4, n_positions=512, **common)
    classes = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "phi3": tf.Phi3Config,
        "gemma2": tf.Gemma2Config,
        "gemma3_text": tf.Gemma3TextConfig,
    }
    if arch not in classes:
        raise ValueError(f"unknown architecture {arch}; known: {', '.join(ARCHITECTURES)}")
    kw: dict[str, Any] = dict(
        num_hidden_layers=n_layers,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **common,
    )
    if arch.startswith("gemma") or arch == "qwen3":
        kw["head_dim"] = hidden // 4
    return classes[arch](**kw)


def tiny_model(arch: str = "llama", seed: int = 0, n_layers: int = 2, hidden: int = 64, init_std: float = 0.2) -> Any:
    """A seeded random model of ``arch`` wrapped as a LoadedModel (float32, CPU).

    ``init_std`` is larger than the usual 0.02 so that logits are peaked: greedy decoding of a
    random model then has no near-ties, which keeps exact-equality tests meaningful.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from safestress.models import wrap_model

    tok = byte_tokenizer()
    cfg = tiny_config(arch, vocab_size=len(tok), n_layers=n_layers, hidden=hidden)
    cfg.initializer_range = init_std
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return wrap_model(model, tok, name=f"tiny-{arch}")


def save_tiny_model(path: str | Path, arch: str = "llama", **kw: Any) -> Path:
    """Write a tiny model and its tokenizer to ``path`` (``save_pretrained``); return the path."""
    lm = tiny_model(arch, **kw)
    path = Path(path)
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path
