"""Canonical site names, their modules per architecture, and glob selection."""

from __future__ import annotations

import pytest

from safestress.errors import SafestressError
from safestress.sites import all_sites, select_sites, site_target
from safestress.testing import ARCHITECTURES, tiny_model

BLOCK = ["resid_pre", "ln1.out", "attn.z", "attn.out", "ln2.out", "mlp.act", "mlp.out", "resid_post"]

# The full, pinned site list of a 2-layer model (identical for every architecture by design) ...
EXPECTED_SITES = [f"blocks.{layer}.{s}" for layer in range(2) for s in BLOCK] + ["final_norm.out"]

# ... and where each site of block 1 lives in the plain HF module tree, per architecture.
LLAMA_LIKE = {
    "resid_pre": ("model.layers.1", "input"),
    "ln1.out": ("model.layers.1.input_layernorm", "output"),
    "attn.z": ("model.layers.1.self_attn.o_proj", "input"),
    "attn.out": ("model.layers.1.self_attn.o_proj", "output"),
    "ln2.out": ("model.layers.1.post_attention_layernorm", "output"),
    "mlp.act": ("model.layers.1.mlp.down_proj", "input"),
    "mlp.out": ("model.layers.1.mlp", "output"),
    "resid_post": ("model.layers.1", "output"),
    "final_norm.out": ("model.norm", "output"),
}
GEMMA = {**LLAMA_LIKE, "ln2.out": ("model.layers.1.pre_feedforward_layernorm", "output")}
GPT2 = {
    "resid_pre": ("transformer.h.1", "input"),
    "ln1.out": ("transformer.h.1.ln_1", "output"),
    "attn.z": ("transformer.h.1.attn.c_proj", "input"),
    "attn.out": ("transformer.h.1.attn.c_proj", "output"),
    "ln2.out": ("transformer.h.1.ln_2", "output"),
    "mlp.act": ("transformer.h.1.mlp.c_proj", "input"),
    "mlp.out": ("transformer.h.1.mlp", "output"),
    "resid_post": ("transformer.h.1", "output"),
    "final_norm.out": ("transformer.ln_f", "output"),
}
PINNED = {
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
    "phi3": LLAMA_LIKE,
    "gemma2": GEMMA,
    "gemma3_text": GEMMA,
    "gpt2": GPT2,
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_site_list_and_modules_are_pinned(arch):
    lm = tiny_model(arch, n_layers=2, hidden=32)
    assert lm.sites() == EXPECTED_SITES
    for suffix, (path, kind) in PINNED[arch].items():
        site = "final_norm.out" if suffix == "final_norm.out" else f"blocks.1.{suffix}"
        target = site_target(lm.model, site)
        assert (target.module_path, target.kind) == (path, kind), site
        lm.model.get_submodule(path)  # exists in the real module tree


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("blocks.*.resid_post", [f"blocks.{i}.resid_post" for i in range(4)]),
        ("blocks.0-1.mlp.*", ["blocks.0.mlp.act", "blocks.0.mlp.out", "blocks.1.mlp.act", "blocks.1.mlp.out"]),
        ("blocks.-1.resid_pre", ["blocks.3.resid_pre"]),
        ("final_norm.out,blocks.2.attn.out", ["blocks.2.attn.out", "final_norm.out"]),
        ("blocks.0-3.*", all_sites(4)[:-1]),
    ],
)
def test_glob_selection(pattern, expected):
    assert select_sites(pattern, 4) == expected


@pytest.mark.parametrize("pattern", ["blocks.9.resid_post", "blocks.*.residpost", "blocks.x.mlp.act", "nothing", ""])
def test_bad_site_patterns_are_one_line_errors(pattern):
    with pytest.raises(SafestressError) as exc:
        select_sites(pattern, 4)
    assert "\n" not in str(exc.value)
