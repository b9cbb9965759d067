"""Hooks read and replace the right tensors and are always removed."""

from __future__ import annotations

import pytest
import torch

import safestress as ss
from safestress.sites import capture, site_hooks


def _ids(lm):
    return lm.tokenizer(["hello world", "a b"], return_tensors="pt", padding=True)


def test_sites_capture_the_tensors_they_name(tiny_llama):
    model = tiny_llama.model
    batch = _ids(tiny_llama)
    sites = ["blocks.0.resid_post", "blocks.1.resid_pre", "blocks.1.mlp.act", "blocks.1.ln2.out", "blocks.1.mlp.out"]
    seen = {}
    layer = model.model.layers[1]
    h = layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("down_in", a[0].clone()))
    try:
        with capture(model, sites) as acts, torch.no_grad():
            model(**batch)
    finally:
        h.remove()
    torch.testing.assert_close(acts["blocks.0.resid_post"][0], acts["blocks.1.resid_pre"][0])
    torch.testing.assert_close(acts["blocks.1.mlp.act"][0], seen["down_in"])
    mlp = layer.mlp
    x = acts["blocks.1.ln2.out"][0]
    torch.testing.assert_close(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x), acts["blocks.1.mlp.act"][0])
    torch.testing.assert_close(mlp.down_proj(acts["blocks.1.mlp.act"][0]), acts["blocks.1.mlp.out"][0])


def test_replacing_an_activation_changes_the_output(tiny_llama):
    batch = _ids(tiny_llama)
    with torch.no_grad():
        clean = tiny_llama.model(**batch).logits
        with site_hooks(tiny_llama.model, {"blocks.0.mlp.act": lambda x: torch.zeros_like(x)}):
            zeroed = tiny_llama.model(**batch).logits
        again = tiny_llama.model(**batch).logits
    assert not torch.allclose(clean, zeroed)
    torch.testing.assert_close(clean, again)


def test_exception_inside_a_perturbation_leaves_no_hook(tiny_llama):
    prompts = ["Tell me a story", "What is 2+2?"]
    settings = ss.GenerationSettings(max_new_tokens=8)
    clean = ss.generate(tiny_llama, prompts, settings=settings)

    class Boom(RuntimeError):
        pass

    def explode(x):
        raise Boom

    with pytest.raises(Boom), site_hooks(tiny_llama.model, {"blocks.1.resid_post": explode}):
        ss.generate(tiny_llama, prompts, settings=settings)
    noise = ss.make_perturbation("noise", sigma=5.0)
    with pytest.raises(Boom), ss.perturbed(tiny_llama, noise, "blocks.*.resid_post"):
        ss.generate(tiny_llama, prompts, settings=settings)  # perturbed generation works inside
        raise Boom
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_llama.model.modules())
    assert [g.text for g in ss.generate(tiny_llama, prompts, settings=settings)] == [g.text for g in clean]
