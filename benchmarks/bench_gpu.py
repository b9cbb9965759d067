"""The GPU path: seconds per sweep condition for a Llama-3-8B-shaped model (random weights, bf16).

Goal (issue 24): 520 AdvBench prompts × 128 new tokens per condition in ≤ 30 s on one H100/H200.
Each condition generates every prompt to exactly ``--tokens`` new tokens (``min_new_tokens``), as
one batch of all prompts, halved on out-of-memory (the generation's own backoff); the conditions
are the clean run and Gaussian noise σ = 0.1 at every block's residual output, as in a sweep.
Weights are random (the shape is what costs), the tokenizer is safestress's byte-level test
tokenizer: prompts are about 60–110 tokens, longer than Llama-3's ~25 for the same text.

Without a GPU the script runs a tiny shape on the CPU, so that it cannot rot (a test runs it):

    python benchmarks/bench_gpu.py                       # llama3-8b on CUDA, else tiny
    python benchmarks/bench_gpu.py --shape tiny --prompts 16 --tokens 8
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

import safestress as ss
from safestress.models import wrap_model
from safestress.testing import byte_tokenizer

HERE = Path(__file__).resolve().parent
SHAPES = {
    # meta-llama/Meta-Llama-3-8B's config.json
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,  # the byte tokenizer's 262 and room; a large table only slows the build
        max_position_embeddings=1024,
    ),
}


def build(shape: str, device: str, dtype: torch.dtype) -> ss.LoadedModel:
    """A random model of ``shape`` on ``device``, wrapped with the byte tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = byte_tokenizer()
    cfg = LlamaConfig(**SHAPES[shape], pad_token_id=tok.pad_token_id, bos_token_id=1, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return wrap_model(model, tok, name=f"random-{shape}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: llama3-8b on CUDA, else tiny")
    ap.add_argument("--prompts", type=int, default=520)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "advbench.csv"))
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shape = args.shape or ("llama3-8b" if cuda else "tiny")
    dtype = torch.bfloat16 if cuda else torch.float32
    with open(args.data, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    column = "goal" if "goal" in rows[0] else next(iter(rows[0]))
    prompts = [r[column] for r in rows][: args.prompts]
    t = time.perf_counter()
    lm = build(shape, device, dtype)
    n_params = sum(p.numel() for p in lm.model.parameters())
    print(f"# {shape}: {n_params / 1e9:.2f} B parameters, {dtype}, {device}; built in {time.perf_counter() - t:.1f} s")
    if cuda:
        print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    lengths = [len(lm.tokenizer(lm.format(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"# {len(prompts)} prompts of {min(lengths)}–{max(lengths)} tokens, {args.tokens} new tokens each")
    settings = ss.GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    ss.generate(lm, prompts[:2], settings=ss.GenerationSettings(max_new_tokens=2))  # warm-up
    conditions = [("clean", None), ("gaussian σ=0.1 @ blocks.*.resid_post", ss.make_perturbation("noise", sigma=0.1))]
    print("| condition | seconds | new tokens/s | goal ≤ 30 s (8B shape, one GPU) |")
    print("|---|---|---|---|")
    for label, noise in conditions:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        if noise is None:
            gens = ss.generate(lm, prompts, settings=settings, batch_size=len(prompts))
        else:
            with ss.perturbed(lm, noise, "blocks.*.resid_post"):
                gens = ss.generate(lm, prompts, settings=settings, batch_size=len(prompts))
        if cuda:
            torch.cuda.synchronize()
        sec = time.perf_counter() - t
        new = sum(g.n_tokens for g in gens)
        verdict = ("met" if sec <= 30 else "missed") if shape == "llama3-8b" else "n/a (not the 8B shape)"
        print(f"| {label} | {sec:.1f} | {new / sec:,.0f} | {verdict} |")


if __name__ == "__main__":
    main()
