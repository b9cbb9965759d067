"""Per-architecture adapters: canonical site names -> modules of the plain Hugging Face tree.

A site is either the *output* of a module (read and replaced with a forward hook) or the *input*
of a module (a forward pre-hook). The adapters only name attributes; nothing is rewritten, so a
model loaded by ``transformers`` (or wrapped by PEFT) is used exactly as it ships.

Conventions shared by every architecture (documented in ``docs/sites.md``):

* ``resid_pre`` / ``resid_post``: the residual stream entering / leaving decoder block L.
* ``ln1.out``: the normalised input of attention; ``ln2.out``: the normalised input of the MLP
  (Gemma 2/3 have a pre-feed-forward norm for this; their post-attention norm is a *post*-norm).
* ``attn.z``: the input of the attention output projection — the heads' outputs, concatenated
  (head h owns channels ``h·d_head … (h+1)·d_head − 1``).
* ``attn.out``: the attention output projection's output (before any Gemma post-norm).
* ``mlp.act``: the input of the down projection, i.e. act(gate)·up for gated MLPs.
* ``mlp.out``: the MLP module's output.
* ``final_norm.out``: the final norm before the unembedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from safestress.errors import SafestressError
from safestress.sites.names import parse_site

HookKind = Literal["input", "output"]


@dataclass(frozen=True)
class SiteTarget:
    """Where a site lives: a module path relative to the causal-LM module, and hook kind."""

    module_path: str
    kind: HookKind


@dataclass(frozen=True)
class Adapter:
    """Attribute names of one architecture family."""

    family: str
    layers: str  # path of the ModuleList of decoder blocks
    final_norm: str
    block: dict[str, tuple[str, HookKind]] = field(default_factory=dict)
    # Names of the modules whose weights produce / consume a block's MLP and attention channels
    # (used by analysis code: unit scores, pruning).
    mlp_down: str = "mlp.down_proj"
    attn_out_proj: str = "self_attn.o_proj"
    # The MLP's activation function module (its output is act(gate); polynomial and CATS hook it).
    mlp_act_fn: str = "mlp.act_fn"
    # Site -> the projections that read it (candidates; those a model lacks are skipped: Phi-3
    # fuses q/k/v and gate/up). SmoothQuant and clipping calibration need their weights.
    consumers: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "ln1.out": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv_proj"),
            "attn.z": ("self_attn.o_proj",),
            "ln2.out": ("mlp.gate_proj", "mlp.up_proj", "mlp.gate_up_proj"),
            "mlp.act": ("mlp.down_proj",),
        }
    )

    def target(self, layer: int, suffix: str) -> SiteTarget:
        rel, kind = self.block[suffix]
        base = f"{self.layers}.{layer}"
        return SiteTarget(f"{base}.{rel}" if rel else base, kind)


def _llama_like(family: str, ln2: str = "post_attention_layernorm") -> Adapter:
    return Adapter(
        family=family,
        layers="model.layers",
        final_norm="model.norm",
        block={
            "resid_pre": ("", "input"),
            "ln1.out": ("input_layernorm", "output"),
            "attn.z": ("self_attn.o_proj", "input"),
            "attn.out": ("self_attn.o_proj", "output"),
            "ln2.out": (ln2, "output"),
            "mlp.act": ("mlp.down_proj", "input"),
            "mlp.out": ("mlp", "output"),
            "resid_post": ("", "output"),
        },
    )


_LLAMA = _llama_like("llama")
_GEMMA = _llama_like("gemma", ln2="pre_feedforward_layernorm")
_GPT2 = Adapter(
    family="gpt2",
    layers="transformer.h",
    final_norm="transformer.ln_f",
    block={
        "resid_pre": ("", "input"),
        "ln1.out": ("ln_1", "output"),
        "attn.z": ("attn.c_proj", "input"),
        "attn.out": ("attn.c_proj", "output"),
        "ln2.out": ("ln_2", "output"),
        "mlp.act": ("mlp.c_proj", "input"),
        "mlp.out": ("mlp", "output"),
        "resid_post": ("", "output"),
    },
    mlp_down="mlp.c_proj",
    attn_out_proj="attn.c_proj",
    mlp_act_fn="mlp.act",
    consumers={
        "ln1.out": ("attn.c_attn",),
        "attn.z": ("attn.c_proj",),
        "ln2.out": ("mlp.c_fc",),
        "mlp.act": ("mlp.c_proj",),
    },
)

# model_type (from config.json) -> adapter. Qwen3, Mistral and Phi-3 share Llama's attribute
# names (Phi-3 fuses q/k/v and gate/up, which does not change any site).
ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "phi3": _LLAMA,
    "smollm3": _LLAMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "gpt2": _GPT2,
}


def unwrap(model: nn.Module) -> nn.Module:
    """Return the plain causal-LM module under PEFT wrappers (``PeftModel.base_model.model``)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        model = get_base()
    return model


def adapter_for(model: nn.Module) -> Adapter:
    model = unwrap(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise SafestressError(
            f"architecture '{model_type}' has no site adapter; supported: {', '.join(sorted(ADAPTERS))}"
        ) from None


def num_layers(model: nn.Module) -> int:
    return len(resolve_module(model, adapter_for(model).layers))


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    return unwrap(model).get_submodule(path)


def consumers(model: nn.Module, site: str) -> list[nn.Module]:
    """The projections that read ``site`` (``blocks.L.ln1.out`` → q/k/v …); empty for other sites."""

    adapter = adapter_for(model)
    layer, suffix = parse_site(site)
    if layer is None or suffix not in adapter.consumers:
        return []
    block = resolve_module(model, f"{adapter.layers}.{layer}")
    out = []
    for rel in adapter.consumers[suffix]:
        try:
            out.append(block.get_submodule(rel))
        except AttributeError:
            continue
    return out


def input_columns(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [out, in] (GPT-2's ``Conv1D`` stores it transposed)."""
    w = module.weight
    return w.t() if type(module).__name__ == "Conv1D" else w
