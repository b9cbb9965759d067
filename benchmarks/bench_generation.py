"""Generation speed on SmolLM2-135M (CPU), as ratios against baselines run in the same process.

(a) perturbed vs plain batched generation of the same batch (Gaussian noise at every block's
    residual output; both forced to the same number of tokens): goal ≤ 1.03×.
(b) a 100-prompt × 5-σ × 64-token sweep through safestress (plan → execute into a fresh store)
    vs the naive research-script loop: for each σ, for each prompt, one ``model.generate`` with a
    hook adding ``torch.randn`` noise. The naive loop's cost is a sum of independent per-call
    costs, so it is timed on a random sample of its (prompt, σ) calls and scaled up; the sample
    size is printed. The sweep runs twice, at full length and with early exit (rows stop once
    every judge's verdict is settled); the verdicts of the two are compared row by row.
(c) tokens generated per verdict, full length vs early exit, on one model (``--tokens-per-verdict``).
(d) where the early-exit sweep's forwards go (``--forwards``): prompt forwards against decoding
    steps, and decoding steps by how many rows they carried.

Usage: python benchmarks/bench_generation.py [--model GGUF] [--data-dir DIR] [--naive-sample N]
       python benchmarks/bench_generation.py --tokens-per-verdict GGUF [--limit 100] [--batch-size 25]
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
SWEEP_SIGMAS = [0.0, 0.05, 0.1, 0.2, 0.3]  # the (b) sweep's σ grid, also timed by (d)


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
        ids = lm.tokenizer(chat_text(lm, prompt), return_tensors="pt", add_special_tokens=False)
        out = lm.model.generate(**ids, max_new_tokens=64, do_sample=False)
        return lm.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        for h in handles:
            h.remove()


def run_sweep(
    model_path: str,
    lm,
    prompts_csv: Path,
    sigmas: list[float],
    judges: list[str],
    early_exit: bool,
    batch_size: int,
    tokens: int,
    store: Path,
    limit: int | None = None,
):
    """One sweep through safestress into ``store``; returns (seconds, rows generated, frame)."""
    cfg = ss.build_config(
        models=[model_path],
        dataset=f"csv:{prompts_csv}:Goal",
        limit=limit,
        sigma=sigmas,
        sites=["blocks.*.resid_post"],
        max_new_tokens=tokens,
        batch_size=batch_size,
        judge=judges,
        early_exit=early_exit,
        store=str(store),
        plot=False,
    )
    plan = plan_sweep(cfg)
    plan.models[0].model = lm.model  # reuse the loaded weights
    plan.models[0].extra.pop("weights_loader", None)
    t = time.perf_counter()
    with Store(cfg.store) as st:
        counts = execute(plan, st)
        frame = plan.frame(st)
    return time.perf_counter() - t, counts["generated"], frame


def compare_verdicts(full, early) -> tuple[int, int]:
    """(rows × judges compared, those whose label or counted flag differ)."""
    cols = ["key", "judge", "label", "harmful"]
    both = full[cols].merge(early[cols], on=["key", "judge"], suffixes=("_f", "_e"))
    same = (both["label_f"] == both["label_e"]) & (
        both["harmful_f"].fillna(-1).astype(float) == both["harmful_e"].fillna(-1).astype(float)
    )
    return len(both), int((~same).sum())


def bench_sweep(model_path: str, lm, data_dir: Path, naive_sample: int, batch_size: int, judges: list[str]) -> None:
    sigmas = SWEEP_SIGMAS
    csv_path = data_dir / "jbb_harmful.csv"
    with tempfile.TemporaryDirectory() as tmp:
        full_s, n_full, full = run_sweep(
            model_path, lm, csv_path, sigmas, judges, False, batch_size, 64, Path(tmp) / "f.db"
        )
        early_s, n_early, early = run_sweep(
            model_path, lm, csv_path, sigmas, judges, True, batch_size, 64, Path(tmp) / "e.db"
        )
    compared, differ = compare_verdicts(full, early)
    prompts = [r["Goal"] for r in csv.DictReader(csv_path.open())]
    calls = [(p, s) for s in sigmas for p in prompts]
    sample = random.Random(0).sample(calls, naive_sample)
    t = time.perf_counter()
    for p, s in sample:
        naive_call(lm, p, s, 0)
    naive_sample_s = time.perf_counter() - t
    naive_est = naive_sample_s / naive_sample * len(calls)
    rows = lambda f: f.drop_duplicates("key")  # noqa: E731
    print(f"(b) sweep 100 prompts × {len(sigmas)} σ × 64 tokens, judges {','.join(judges)}, batch {batch_size}")
    print(f"    full length: {full_s:.1f} s, {n_full} rows, {rows(full)['n_tokens'].sum()} tokens")
    print(
        f"    early exit:  {early_s:.1f} s, {n_early} rows, {rows(early)['n_tokens'].sum()} tokens, "
        f"{int(rows(early)['early_stop'].notna().sum())} rows stopped early"
    )
    print(f"    verdicts compared {compared}, different {differ}")
    print(
        f"    naive loop: {naive_sample} of {len(calls)} calls took {naive_sample_s:.1f} s → {naive_est:.0f} s for all"
    )
    print(f"    speed-up vs naive: full length {naive_est / full_s:.1f}×, early exit {naive_est / early_s:.1f}×")
    prompt_n, gen_n, flops, floor_s = compute_floor(lm, rows(early), {p: len(prompt_ids(lm, p)) for p in prompts})
    print(
        f"    compute floor of the early-exit sweep: {prompt_n:,} prompt and {gen_n:,} generated tokens, "
        f"{flops / 1e12:.2f} TFLOP, {floor_s:.1f} s at this machine's fp32 GEMM rate "
        f"→ at most {naive_est / floor_s:.1f}× the naive loop"
    )


def forward_times(model_path: str, lm, data_dir: Path, batch_size: int, judges: list[str]) -> None:
    """(d) Every forward of the early-exit sweep, timed: prompt forwards, and decoding steps by
    the number of rows they carried (a step reads all the weights however few rows it has)."""
    from collections import defaultdict

    from safestress import decoding

    timed: list[tuple[int, int, float]] = []
    real = decoding._forward

    def forward(model, ids, *a):
        t = time.perf_counter()
        out = real(model, ids, *a)
        timed.append((ids.shape[0], ids.shape[1], time.perf_counter() - t))
        return out

    decoding._forward = forward
    try:
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = data_dir / "jbb_harmful.csv"
            run_sweep(model_path, lm, csv_path, [0.1], judges, True, batch_size, 64, Path(tmp) / "w.db", limit=8)
            timed.clear()
            store = Path(tmp) / "e.db"
            seconds, _, _ = run_sweep(model_path, lm, csv_path, SWEEP_SIGMAS, judges, True, batch_size, 64, store)
    finally:
        decoding._forward = real
    prompt = [t for t in timed if t[1] > 1]
    steps = [t for t in timed if t[1] == 1]
    print(f"(d) early-exit sweep, batch {batch_size}: {seconds:.1f} s, forwards {sum(t[2] for t in timed):.1f} s")
    print(
        f"    prompt forwards: {len(prompt)}, {sum(t[2] for t in prompt):.1f} s, "
        f"{sum(t[0] * t[1] for t in prompt):,} tokens with padding"
    )
    row_tokens = sum(t[0] for t in steps)
    print(f"    decoding steps: {len(steps)}, {sum(t[2] for t in steps):.1f} s, {row_tokens:,} row-tokens")
    by_rows: dict[int, list[float]] = defaultdict(list)
    for rows, _, s in steps:
        by_rows[min(rows // 16 * 16, batch_size)].append(s)
    for low in sorted(by_rows):
        times = by_rows[low]
        each = 1000 * sum(times) / len(times)
        print(f"    {low:>4}+ rows: {len(times):4d} steps, {sum(times):6.1f} s, {each:.0f} ms a step")


def chat_text(lm, prompt: str) -> str:
    """One user turn in the model's chat template, ready for the answer (what naive_call feeds)."""
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def prompt_ids(lm, prompt: str) -> list[int]:
    """The prompt's tokens as the model receives them."""
    return lm.tokenizer(chat_text(lm, prompt), add_special_tokens=False)["input_ids"]


def compute_floor(lm, generated, prompt_tokens: dict[str, int]) -> tuple[int, int, float, float]:
    """(prompt tokens, generated tokens, FLOPs, seconds at the GEMM limit) of the sweep's rows:
    every stored row's prompt forward (no LM head: only its last position's logits are needed)
    and every generated token, at the FLOPs per token ``bench_throughput.flops_per_token`` counts.
    No batching, cache or kernel goes below it on this machine, so the naive loop's time over it
    bounds the speed-up."""
    from bench_throughput import flops_per_token, gemm_limit  # the same counts as the throughput figure

    model = lm.model
    head = model.get_output_embeddings().weight.numel()
    prompt_n = int(generated["prompt"].map(prompt_tokens).sum())
    gen_n = int(generated["n_tokens"].sum())
    context = prompt_n / max(1, len(generated)) + gen_n / max(1, 2 * len(generated))
    per_token = flops_per_token(model, context)
    flops = prompt_n * (per_token - 2 * head) + gen_n * per_token
    return prompt_n, gen_n, flops, flops / gemm_limit()


def bench_tokens_per_verdict(
    model_path: str, data_dir: Path, judges: list[str], limit: int, batch_size: int, tokens: int
) -> None:
    """Tokens generated per verdict, full length vs early exit, on one model (σ = 0)."""
    lm = ss.load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        args = (model_path, lm, data_dir / "jbb_harmful.csv", [0.0], judges)
        full_s, _, full = run_sweep(*args, False, batch_size, tokens, Path(tmp) / "f.db", limit)
        early_s, _, early = run_sweep(*args, True, batch_size, tokens, Path(tmp) / "e.db", limit)
    compared, differ = compare_verdicts(full, early)
    for name, f, sec in (("full length", full, full_s), ("early exit", early, early_s)):
        r = f.drop_duplicates("key")
        print(
            f"(c) {Path(model_path).stem}, {len(r)} JBB prompts, {tokens} tokens, judges {','.join(judges)}: {name}: "
            f"{r['n_tokens'].sum() / len(r):.1f} tokens per verdict, {sec:.1f} s"
        )
    print(f"    verdicts compared {compared}, different {differ}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHARED / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--naive-sample", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--judge", default="refusal", help="the sweep's judges, comma-separated")
    ap.add_argument("--tokens-per-verdict", metavar="MODEL", help="(c) only: tokens per verdict on this model")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--forwards", action="store_true", help="(d) only: time the early-exit sweep's forwards")
    args = ap.parse_args()
    judges = args.judge.split(",")
    if args.tokens_per_verdict:
        bench_tokens_per_verdict(
            args.tokens_per_verdict, Path(args.data_dir), judges, args.limit, args.batch_size, args.tokens
        )
        return
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    lm = ss.load_model(args.model)
    data_dir = Path(args.data_dir)
    if args.forwards:
        forward_times(args.model, lm, data_dir, args.batch_size, judges)
        return
    prompts = [r["Goal"] for r in csv.DictReader((data_dir / "jbb_harmful.csv").open())][:32]
    if not args.skip_overhead:
        bench_overhead(lm, prompts, args.repeats)
    if not args.skip_sweep:
        bench_sweep(args.model, lm, data_dir, args.naive_sample, args.batch_size, judges)


if __name__ == "__main__":
    main()
