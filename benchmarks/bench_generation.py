"""Generation speed on SmolLM2-135M (CPU), as ratios against baselines run in the same process.

(a) perturbed vs plain batched generation of the same batch (Gaussian noise at every block's
    residual output; both forced to the same number of tokens): goal ≤ 1.03×.
(b) a 100-prompt × 5-σ × 64-token sweep through safestress (plan → execute into a fresh store)
    vs the naive research-script loop: for each σ, for each prompt, one ``model.generate`` with a
    hook adding ``torch.randn`` noise. The naive loop's cost is a sum of independent per-call
    costs, so it is timed on a random sample of its (prompt, σ) calls and scaled up; the sample
    size is printed. Goal ≥ 10×.

Usage: python benchmarks/bench_generation.py [--model GGUF] [--data-dir DIR] [--naive-sample N]
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

import safestress as ss
from safestress.execution import execute
from safestress.store import Store
from safestress.sweep import plan_sweep

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def bench_overhead(lm, prompts: list[str], repeats: int) -> None:
    settings = ss.GenerationSettings(max_new_tokens=64, min_new_tokens=64)
    noise = ss.make_perturbation("noise", sigma=0.1)
    ss.generate(lm, prompts[:4], settings=ss.GenerationSettings(max_new_tokens=4))  # warm-up
    plain_t, pert_t = [], []
    for _ in range(repeats):  # interleaved, so drift in machine speed hits both alike
        t = time.perf_counter()
        ss.generate(lm, prompts, settings=settings, batch_size=len(prompts))
        plain_t.append(time.perf_counter() - t)
        with ss.perturbed(lm, noise, "blocks.*.resid_post"):
            t = time.perf_counter()
            ss.generate(lm, prompts, settings=settings, batch_size=len(prompts))
            pert_t.append(time.perf_counter() - t)
    ratios = [p / q for p, q in zip(pert_t, plain_t)]
    hook_s = time_inside_hooks(lm, prompts, settings, noise)
    plain = statistics.median(plain_t)
    print(f"(a) batch {len(prompts)} × 64 tokens, noise at {lm.n_layers} resid_post sites")
    print(f"    plain {plain:.2f} s, perturbed {statistics.median(pert_t):.2f} s (medians of {repeats})")
    print(
        f"    ratio of medians {statistics.median(pert_t) / plain:.3f}×; paired ratios "
        + ", ".join(f"{r:.3f}" for r in ratios)
    )
    print(
        f"    time inside the noise hooks during one perturbed run: {hook_s:.3f} s "
        f"= {hook_s / plain:.3f} of plain generation → overhead ≈ {1 + hook_s / plain:.3f}×"
    )


def time_inside_hooks(lm, prompts: list[str], settings: ss.GenerationSettings, noise) -> float:
    """Wall time spent in the perturbation's hook functions (CPU execution is synchronous, so
    this is the hooks' true cost, free of the run-to-run noise of whole generations)."""
    import safestress.perturb.noise as noise_module

    spent = [0.0]
    original = noise_module.site_hooks

    def timed(model, fns):
        def wrap(fn):
            def run(x):
                t = time.perf_counter()
                out = fn(x)
                spent[0] += time.perf_counter() - t
                return out

            return run

        return original(model, {site: wrap(fn) for site, fn in fns.items()})

    noise_module.site_hooks = timed
    try:
        with ss.perturbed(lm, noise, "blocks.*.resid_post"):
            ss.generate(lm, prompts, settings=settings, batch_size=len(prompts))
    finally:
        noise_module.site_hooks = original
    return spent[0]


def naive_call(lm, prompt: str, sigma: float, seed: int) -> str:
    """What research scripts do: one prompt, one generate, noise from the global RNG."""
    torch.manual_seed(seed)
    handles = []
    if sigma > 0:
        for layer in lm.model.model.layers:
            handles.append(layer.register_forward_hook(lambda m, a, out: out + sigma * torch.randn_like(out)))
    try:
        text = lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = lm.model.generate(**ids, max_new_tokens=64, do_sample=False)
        return lm.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        for h in handles:
            h.remove()


def bench_sweep(model_path: str, lm, data_dir: Path, naive_sample: int, batch_size: int) -> None:
    sigmas = [0.0, 0.05, 0.1, 0.2, 0.3]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ss.build_config(
            models=[model_path],
            dataset=f"csv:{data_dir / 'jbb_harmful.csv'}:Goal",
            sigma=sigmas,
            sites=["blocks.*.resid_post"],
            max_new_tokens=64,
            batch_size=batch_size,
            store=str(Path(tmp) / "b.db"),
            plot=False,
        )
        plan = plan_sweep(cfg)
        plan.models[0].model = lm.model  # reuse the loaded weights
        plan.models[0].extra.pop("weights_loader", None)
        t = time.perf_counter()
        with Store(cfg.store) as store:
            counts = execute(plan, store)
        sweep_s = time.perf_counter() - t
    prompts = [r["Goal"] for r in csv.DictReader((data_dir / "jbb_harmful.csv").open())]
    calls = [(p, s) for s in sigmas for p in prompts]
    sample = random.Random(0).sample(calls, naive_sample)
    t = time.perf_counter()
    for p, s in sample:
        naive_call(lm, p, s, 0)
    naive_sample_s = time.perf_counter() - t
    naive_est = naive_sample_s / naive_sample * len(calls)
    print(
        f"(b) sweep 100 prompts × {len(sigmas)} σ × 64 tokens: safestress {sweep_s:.1f} s "
        f"({counts['generated']} rows generated, batch {batch_size})"
    )
    print(
        f"    naive loop: {naive_sample} of {len(calls)} calls took {naive_sample_s:.1f} s → {naive_est:.0f} s for all"
    )
    print(f"    speed-up safestress vs naive: {naive_est / sweep_s:.1f}×")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHARED / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--naive-sample", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    lm = ss.load_model(args.model)
    data_dir = Path(args.data_dir)
    prompts = [r["Goal"] for r in csv.DictReader((data_dir / "jbb_harmful.csv").open())][:32]
    bench_overhead(lm, prompts, args.repeats)
    if not args.skip_sweep:
        bench_sweep(args.model, lm, data_dir, args.naive_sample, args.batch_size)


if __name__ == "__main__":
    main()
