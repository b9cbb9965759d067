"""How close batched generation comes to this CPU's fp32 compute limit (issue 24, item 4).

The limit is the FLOP/s of a large fp32 matrix product (``torch.mm`` of two 2048 × 2048 matrices,
best of 5): the rate the model's own matrix products could reach on these cores. Generation is
SmolLM2-135M, greedy, every row forced to the same number of new tokens, prompts from
JailbreakBench. Its useful work is counted as 2 FLOPs per weight per token in every matrix
product (the input embedding is a lookup and does not count; the tied LM head does) plus the
attention scores and values, 4 · layers · width · context per token.

Each configuration is timed in this process, twice, interleaved with the others, and the better
run is kept (the slower one is the machine's noise):

* ``safestress`` — ``ss.generate`` as a sweep runs it (batch 64), the baseline;
* the same batches through Hugging Face ``generate`` with: eager attention instead of SDPA; a
  static KV cache; batch sizes 16, 32, 128; one thread instead of two.

Usage: python benchmarks/bench_throughput.py [--model GGUF] [--data-dir DIR] [--tokens 64] [--prompts 128]
       python benchmarks/bench_throughput.py --identity-only   # static vs dynamic KV cache, same tokens?
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import torch

import safestress as ss

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def gemm_limit(n: int = 2048, repeats: int = 5) -> float:
    """Best-of FLOP/s of an fp32 n × n matrix product on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_token(model: torch.nn.Module, context: float) -> float:
    """2 FLOPs per weight of every matrix product, plus attention over ``context`` tokens."""
    cfg = model.config
    embed = model.get_input_embeddings().weight
    matmul = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and p is not embed)
    head = model.get_output_embeddings()
    if head is not None and head.weight is embed:  # a tied head: its product is real work
        matmul += embed.numel()
    return 2 * matmul + 4 * cfg.num_hidden_layers * cfg.hidden_size * context


def hf_generate(lm, prompts: list[str], tokens: int, batch: int, **config_kwargs) -> int:
    """The sweep's batching (sorted by length, left padding) through HF ``generate``; returns rows × tokens."""
    from transformers import GenerationConfig

    tok = lm.tokenizer
    encoded = sorted((tok(lm.format(p))["input_ids"] for p in prompts), key=len)
    config = GenerationConfig(
        max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id, **config_kwargs
    )
    done = 0
    for start in range(0, len(encoded), batch):
        inputs = tok.pad({"input_ids": encoded[start : start + batch]}, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = lm.model.generate(**inputs, generation_config=config)
        done += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
    return done


def static_cache_identity(lm, prompts: list[str], tokens: int, batch: int = 32) -> tuple[int, int]:
    """Rows whose greedy tokens are identical with a static and a dynamic KV cache, of all rows."""
    from transformers import GenerationConfig

    tok = lm.tokenizer
    encoded = sorted((tok(lm.format(p))["input_ids"] for p in prompts), key=len)
    same = 0
    for start in range(0, len(encoded), batch):
        inputs = tok.pad({"input_ids": encoded[start : start + batch]}, return_tensors="pt", padding=True)
        outs = []
        for extra in ({}, {"cache_implementation": "static"}):
            config = GenerationConfig(max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id, **extra)
            with torch.inference_mode():
                outs.append(lm.model.generate(**inputs, generation_config=config)[:, inputs["input_ids"].shape[1] :])
        n = min(outs[0].shape[1], outs[1].shape[1])
        same += sum(a[:n] == b[:n] for a, b in zip(outs[0].tolist(), outs[1].tolist()))
    return same, len(encoded)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(SHARED / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--identity-only", action="store_true", help="only compare static and dynamic KV cache outputs")
    ap.add_argument("--only", help="run only these configurations (names separated by ';')")
    args = ap.parse_args()

    with open(Path(args.data_dir) / "jbb_harmful.csv", newline="") as f:
        prompts = [row["Goal"] for row in csv.DictReader(f)][: args.prompts]
    lm = ss.load_model(args.model, dtype="float32")
    if args.identity_only:
        same, n = static_cache_identity(lm, prompts, args.tokens)
        print(f"static vs dynamic KV cache: identical greedy tokens in {same} of {n} rows ({args.tokens} tokens)")
        return
    prompt_len = sum(len(lm.tokenizer(lm.format(p))["input_ids"]) for p in prompts) / len(prompts)
    per_token = flops_per_token(lm.model, prompt_len + args.tokens / 2)
    limit = gemm_limit()
    threads = torch.get_num_threads()
    settings = ss.GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    def with_threads(n: int, fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)

        return run

    def with_attention(impl: str, fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            before = lm.model.config._attn_implementation
            lm.model.set_attn_implementation(impl)
            try:
                return fn()
            finally:
                lm.model.set_attn_implementation(before)

        return run

    configs: dict[str, Callable[[], int]] = {
        "safestress (ss.generate, batch 64)": lambda: sum(
            g.n_tokens for g in ss.generate(lm, prompts, settings=settings, batch_size=64)
        ),
        "safestress (ss.generate, batch 128)": lambda: sum(
            g.n_tokens for g in ss.generate(lm, prompts, settings=settings, batch_size=128)
        ),
        "HF generate, batch 64": lambda: hf_generate(lm, prompts, args.tokens, 64),
        "HF generate, batch 16": lambda: hf_generate(lm, prompts, args.tokens, 16),
        "HF generate, batch 32": lambda: hf_generate(lm, prompts, args.tokens, 32),
        "HF generate, batch 128": lambda: hf_generate(lm, prompts, args.tokens, 128),
        "HF generate, batch 64, eager attention": with_attention(
            "eager", lambda: hf_generate(lm, prompts, args.tokens, 64)
        ),
        "HF generate, batch 64, static KV cache": lambda: hf_generate(
            lm, prompts, args.tokens, 64, cache_implementation="static"
        ),
        f"HF generate, batch 64, 1 thread (of {threads})": with_threads(
            1, lambda: hf_generate(lm, prompts, args.tokens, 64)
        ),
    }
    if args.only:
        wanted = [n.strip() for n in args.only.split(";")]
        unknown = [n for n in wanted if n not in configs]
        if unknown:
            raise SystemExit(f"unknown configuration(s) {unknown}; known: {list(configs)}")
        configs = {n: configs[n] for n in ["safestress (ss.generate, batch 64)", *wanted] if n in configs}
    ss.generate(lm, prompts[:4], settings=ss.GenerationSettings(max_new_tokens=4))  # warm-up
    best: dict[str, tuple[float, int]] = {}
    for _ in range(2):  # interleaved: drift in the machine's speed hits every configuration alike
        for name, fn in configs.items():
            seconds, n = timed(fn)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, n)
    context = prompt_len + args.tokens / 2
    print(f"compute limit: fp32 GEMM 2048² {limit / 1e9:.1f} GFLOP/s ({threads} threads); "
          f"{per_token / 1e6:.0f} MFLOP per generated token (mean context {context:.0f})")  # fmt: skip
    print(f"{len(prompts)} prompts × {args.tokens} tokens, SmolLM2-135M float32, better of 2 interleaved runs\n")
    print("| configuration | s | tokens/s | GFLOP/s | share of the limit | vs safestress |")
    print("|---|---|---|---|---|---|")
    base = best["safestress (ss.generate, batch 64)"]
    for name, (seconds, n) in best.items():
        rate = n / seconds
        ratio = (base[0] / base[1]) / (seconds / n)
        print(f"| {name} | {seconds:.1f} | {rate:.0f} | {rate * per_token / 1e9:.1f} | "
              f"{rate * per_token / limit:.1%} | {ratio:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
