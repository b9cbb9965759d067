"""Batched generation: equal to model.generate when clean; noise independent of batching; seeds."""

from __future__ import annotations

import torch

import safestress as ss
from safestress.perturb.rng import key_from_text  # noqa: F401  (documented key derivation)

PROMPTS = [f"Question {i}: {'why ' * (i % 5)}is the sky blue?" for i in range(16)]
SETTINGS = ss.GenerationSettings(max_new_tokens=12)


def _plain_generate(lm, prompts, max_new_tokens):
    tok = lm.tokenizer
    batch = tok([lm.format(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    out = lm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        cut = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts


def test_clean_generation_equals_model_generate(tiny_llama):
    ours = ss.generate(tiny_llama, PROMPTS[:4], settings=SETTINGS, batch_size=4)
    assert [g.text for g in ours] == _plain_generate(tiny_llama, PROMPTS[:4], 12)


def test_sigma_zero_equals_model_generate(tiny_llama):
    zero = ss.make_perturbation("noise", sigma=0.0)
    assert zero.is_identity()
    with ss.perturbed(tiny_llama, ss.make_perturbation("noise", sigma=1.0), "blocks.*.resid_post"):
        # row parameters override the configured σ: σ = 0 rows must equal plain generation
        ours = ss.generate(tiny_llama, PROMPTS[:4], settings=SETTINGS, batch_size=4, row_params={"sigma": [0.0] * 4})
    assert [g.text for g in ours] == _plain_generate(tiny_llama, PROMPTS[:4], 12)


def test_noise_is_identical_at_batch_sizes_1_4_16_and_differs_by_seed(tiny_llama):
    noise = ss.make_perturbation("noise", sigma=0.5)
    with ss.perturbed(tiny_llama, noise, "blocks.*.resid_post"):
        runs = {
            bs: [g.text for g in ss.generate(tiny_llama, PROMPTS, settings=SETTINGS, batch_size=bs)]
            for bs in (1, 4, 16)
        }
        shuffled_order = list(reversed(range(16)))
        shuffled = ss.generate(tiny_llama, [PROMPTS[i] for i in shuffled_order], settings=SETTINGS, batch_size=4)
        seed1 = [g.text for g in ss.generate(tiny_llama, PROMPTS, settings=SETTINGS, batch_size=16, seeds=1)]
    clean = [g.text for g in ss.generate(tiny_llama, PROMPTS, settings=SETTINGS, batch_size=16)]
    assert runs[1] == runs[4] == runs[16]
    assert [shuffled[shuffled_order.index(i)].text for i in range(16)] == runs[16]
    assert sum(a != b for a, b in zip(runs[16], clean)) >= 8  # the noise does something
    assert sum(a != b for a, b in zip(runs[16], seed1)) >= 8  # other seed, other noise


def test_mixed_sigma_batch_equals_separate_runs(tiny_llama):
    noise = ss.make_perturbation("noise", sigma=0.0)
    sigmas = [0.0, 0.3, 1.0, 0.3] * 2
    with ss.perturbed(tiny_llama, noise, "blocks.*.mlp.act"):
        mixed = ss.generate(tiny_llama, PROMPTS[:8], settings=SETTINGS, batch_size=8, row_params={"sigma": sigmas})
    for s in (0.3, 1.0):
        with ss.perturbed(tiny_llama, ss.make_perturbation("noise", sigma=s), "blocks.*.mlp.act"):
            alone = ss.generate(tiny_llama, PROMPTS[:8], settings=SETTINGS, batch_size=3)
        for i, sig in enumerate(sigmas):
            if sig == s:
                assert mixed[i].text == alone[i].text


def test_generated_positions_leave_the_prompt_untouched(tiny_llama):
    prompt_only = ss.make_perturbation("noise", sigma=3.0, positions="generated")
    tok = tiny_llama.tokenizer
    batch = tok(
        [tiny_llama.format(p) for p in PROMPTS[:2]], return_tensors="pt", padding=True, add_special_tokens=False
    )
    with torch.no_grad():
        clean = tiny_llama.model(**batch).logits
        with ss.perturbed(tiny_llama, prompt_only, "blocks.*.resid_post") as p:
            p.ctx.reset()
            pert = tiny_llama.model(**batch).logits
    torch.testing.assert_close(clean, pert)  # the first forward is all prompt
    with ss.perturbed(tiny_llama, prompt_only, "blocks.*.resid_post"):
        gens = ss.generate(tiny_llama, PROMPTS[:4], settings=SETTINGS)
    clean_gens = ss.generate(tiny_llama, PROMPTS[:4], settings=SETTINGS)
    # first generated token comes from the unperturbed prompt forward
    assert all(a.text[:1] == b.text[:1] for a, b in zip(gens, clean_gens))
    assert any(a.text != b.text for a, b in zip(gens, clean_gens))


def test_relative_noise_scales_with_token_rms(tiny_llama):
    from safestress.sites import capture

    rel = ss.make_perturbation("noise", sigma=0.1, scale="relative")
    batch = tiny_llama.tokenizer(["abc def"], return_tensors="pt")
    with torch.no_grad(), capture(tiny_llama.model, ["blocks.0.ln1.out"]) as clean:
        tiny_llama.model(**batch)
    x = clean["blocks.0.ln1.out"][0]
    with (
        torch.no_grad(),
        ss.perturbed(tiny_llama, rel, ["blocks.0.ln1.out"]),
        capture(tiny_llama.model, ["blocks.0.attn.out"]),
    ):
        # read the perturbed value through a second hook on the same module output
        seen = {}
        from safestress.sites import site_hooks

        with site_hooks(tiny_llama.model, {"blocks.0.ln1.out": lambda t: seen.setdefault("x", t.clone())}):
            tiny_llama.model(**batch)
    delta = seen["x"] - x
    ratio = delta.pow(2).mean(-1).sqrt() / x.pow(2).mean(-1).sqrt()
    assert torch.allclose(ratio, torch.full_like(ratio, 0.1), rtol=0.25)


def test_sampling_is_seeded_and_batch_independent(tiny_llama):
    s = ss.GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=50)
    a = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=s, batch_size=1, seeds=3)]
    b = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=s, batch_size=6, seeds=3)]
    c = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=s, batch_size=6, seeds=4)]
    greedy = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=SETTINGS)]
    assert a == b
    assert a != c and a != greedy


def test_fused_multi_site_draws_equal_site_by_site_draws(tiny_llama, monkeypatch):
    from safestress.perturb import noise as noise_module

    for name in ("gaussian", "laplace"):
        pert = ss.make_perturbation(name, sigma=0.7)
        with ss.perturbed(tiny_llama, pert, "blocks.*.resid_post,blocks.*.mlp.act"):
            fused = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=SETTINGS)]
        monkeypatch.setattr(noise_module, "FUSED_BUDGET", 0)
        with ss.perturbed(tiny_llama, pert, "blocks.*.resid_post,blocks.*.mlp.act"):
            single = [g.text for g in ss.generate(tiny_llama, PROMPTS[:6], settings=SETTINGS)]
        monkeypatch.undo()
        assert fused == single


def _refilled_pool(model, batch, keys, kw, monkeypatch):
    """Decode a left-padded batch's prompts in a pool of 3, rows settled at 4, 8 or 12 tokens
    (row r at its (r % 3 + 1)-th check), so rows end at different steps and others join;
    returns each row's Decoded and how many times rows joined the pool."""
    import safestress.decoding as dec

    joins = []
    real_join = dec._Pool.join
    monkeypatch.setattr(dec._Pool, "join", lambda pool, other: joins.append(1) or real_join(pool, other))
    prompts = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]
    asked: dict[int, int] = {}

    def stop(rows, texts):
        for r in rows:
            asked[r] = asked.get(r, 0) + 1
        return [asked[r] > r % 3 for r in rows]

    pooled = {}
    try:
        for done in dec.decode_rows(model, prompts, batch_size=3, pad_id=0, keys=keys, stop=stop, decode=str, **kw):
            pooled.update(done)
    finally:
        monkeypatch.undo()
    return pooled, len(joins)


def test_every_architecture_decodes_as_model_generate(monkeypatch):
    """The decoding loop (rows leave the pool as they end, new rows join it) gives
    model.generate's greedy tokens on every supported architecture, with left padding and rows
    that end at different steps, whether all rows start together or a pool of 3 is refilled."""
    from safestress.decoding import decode_batch
    from safestress.perturb.rng import split_keys
    from safestress.testing import ARCHITECTURES, tiny_model

    for arch in ARCHITECTURES:
        lm = tiny_model(arch, init_std=0.1 if arch.startswith("gemma") else 0.2)  # gemma collapses at 0.2
        tok = lm.tokenizer
        batch = tok([lm.format(p) for p in PROMPTS[:6]], return_tensors="pt", padding=True, add_special_tokens=False)
        start = batch["input_ids"].shape[1]
        first = lm.model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        # a second end token that one row emits mid-answer and another does not, so rows end at
        # different steps
        new = first[:, start:]
        extra = next(int(t) for t in new.flatten().tolist() if 0 < (new == t).any(-1).sum() < len(new))
        eos = [tok.eos_token_id, extra]
        out = lm.model.generate(
            **batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos
        )
        plain = []
        for row in out[:, start:].tolist():
            cut = next((j for j, t in enumerate(row) if t in eos), len(row))
            plain.append(row[:cut])
        kw = {"max_new_tokens": 12, "min_new_tokens": 0, "eos_ids": eos, "row_params": {}, "ctx": None}
        keys = split_keys(list(range(6)), lm.device)
        with torch.inference_mode():
            ours = decode_batch(lm.model, batch["input_ids"], batch["attention_mask"], keys=keys, **kw)
        assert [d.tokens for d in ours] == plain, arch
        assert len({len(t) for t in plain}) > 1, arch
        pooled, joins = _refilled_pool(lm.model, batch, keys, kw, monkeypatch)
        for r in range(6):
            settled = pooled[r].reason == "settled"
            assert pooled[r].tokens == (plain[r][: len(pooled[r].tokens)] if settled else plain[r]), arch
        # the pool was refilled as rows ended (sliding windows of 4096 never slide at these lengths)
        assert joins, arch


def test_a_window_shorter_than_a_row_keeps_sliding_and_the_tokens_of_model_generate():
    """A sliding window that a row outgrows stays a sliding layer (the pool then refills only when
    empty), and the loop still gives model.generate's tokens."""
    from transformers import AutoModelForCausalLM
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from safestress.decoding import InPlaceLayer, decode_batch, new_cache
    from safestress.perturb.rng import split_keys
    from safestress.testing import byte_tokenizer, tiny_config

    tok = byte_tokenizer()
    cfg = tiny_config("mistral", vocab_size=len(tok), n_layers=2, hidden=64)
    cfg.sliding_window, cfg.initializer_range = 24, 0.2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    batch = tok([f"<s>{p}" for p in PROMPTS[:4]], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=-1)
    cache, joinable = new_cache(model, longest=batch["input_ids"].shape[1] + 12)
    assert not joinable and all(type(layer) is DynamicSlidingWindowLayer for layer in cache.layers)
    assert all(type(layer) is InPlaceLayer for layer in new_cache(model, longest=20)[0].layers)
    with torch.inference_mode():
        ours = decode_batch(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            max_new_tokens=12,
            min_new_tokens=0,
            eos_ids=[],
            keys=split_keys(list(range(4)), "cpu"),
            row_params={},
            ctx=None,
        )
    assert [d.tokens for d in ours] == out[:, batch["input_ids"].shape[1] :].tolist()


def test_shared_prefill_gives_the_tokens_of_separate_prefills(tiny_llama, monkeypatch):
    """Rows whose prompt the perturbation leaves untouched (σ = 0, or noise on generated tokens
    only) share one prompt forward per distinct prompt; their outputs equal separate prefills."""
    import safestress.decoding as dec

    prompts = PROMPTS[:4] * 3
    sigmas = [0.0] * 4 + [0.5] * 4 + [1.0] * 4
    forwards = []
    real = dec._forward
    monkeypatch.setattr(dec, "_forward", lambda m, ids, *a: forwards.append(ids.shape) or real(m, ids, *a))
    noise = ss.make_perturbation("noise", sigma=1.0, positions="generated")
    with ss.perturbed(tiny_llama, noise, "blocks.*.resid_post"):
        shared = ss.generate(
            tiny_llama,
            prompts,
            settings=SETTINGS,
            batch_size=12,
            row_params={"sigma": sigmas},
            shared_prefill=[True] * 12,
        )
        prefill_rows = forwards[0][0]
        separate = ss.generate(tiny_llama, prompts, settings=SETTINGS, batch_size=12, row_params={"sigma": sigmas})
    assert prefill_rows == 4  # one prompt forward per distinct prompt, not per row
    assert [g.text for g in shared] == [g.text for g in separate]
    assert len({g.text for g in shared}) > 4  # the σ values did change the continuations


def test_stop_ends_rows_early_and_keeps_the_rest_identical(tiny_llama):
    from safestress.decoding import STOP_EVERY

    full = ss.generate(tiny_llama, PROMPTS, settings=ss.GenerationSettings(max_new_tokens=32), batch_size=16)
    asked = []

    def stop(rows, texts):  # every third prompt is settled as soon as it is asked about
        asked.extend(rows)
        return [r % 3 == 0 for r in rows]

    early = ss.generate(
        tiny_llama, PROMPTS, settings=ss.GenerationSettings(max_new_tokens=32), batch_size=16, stop=stop
    )
    for i, (a, b) in enumerate(zip(full, early)):
        if b.settled:
            # a byte-level prefix can end inside a character, decoded as U+FFFD
            assert i % 3 == 0 and b.n_tokens == STOP_EVERY and a.text.startswith(b.text.rstrip("\ufffd"))
        else:
            assert (a.text, a.n_tokens, a.stopped) == (b.text, b.n_tokens, b.stopped)
    assert sum(g.settled for g in early) >= 3 and asked


def test_out_of_memory_halves_the_batch_and_keeps_the_rows(tiny_llama, monkeypatch):
    import safestress.decoding as dec

    real = dec._forward
    sizes = []

    def tight(model, ids, *a):  # a device where a forward of more than 5 rows does not fit
        sizes.append(ids.shape[0])
        if ids.shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model, ids, *a)

    monkeypatch.setattr(dec, "_forward", tight)
    backed = [g.text for g in ss.generate(tiny_llama, PROMPTS, settings=SETTINGS, batch_size=16)]
    monkeypatch.setattr(dec, "_forward", real)
    assert backed == [g.text for g in ss.generate(tiny_llama, PROMPTS, settings=SETTINGS, batch_size=16)]
    assert sizes[:3] == [16, 8, 4] and max(sizes[3:]) == 4  # found once, then kept


def test_one_row_that_does_not_fit_is_a_one_line_error(tiny_llama, monkeypatch):
    import pytest

    import safestress.decoding as dec
    from safestress.errors import SafestressError

    def full(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(dec, "_forward", full)
    with pytest.raises(SafestressError, match="one row does not fit"):
        ss.generate(tiny_llama, PROMPTS[:3], settings=SETTINGS, batch_size=2)


def test_gpu_benchmark_runs_on_a_tiny_shape_without_a_gpu(data_dir, monkeypatch, capsys):
    """benchmarks/bench_gpu.py (the Llama-3-8B-shaped GPU figure) runs here on a tiny shape, so it
    cannot rot before a GPU runs it."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"
    argv = [str(script), "--shape", "tiny", "--prompts", "6", "--tokens", "4", "--data", str(data_dir / "advbench.csv")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "| clean |" in out and "| gaussian σ=0.1 @ blocks.*.resid_post |" in out and "6 prompts" in out
