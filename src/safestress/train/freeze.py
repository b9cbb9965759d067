"""Freeze chosen units during fine-tuning: SSAH's "freeze SCU (+ CU), train the rest".

A unit is an MLP neuron or an attention head (the units of :mod:`safestress.attribution.units`).
Freezing a unit keeps every weight that *computes* it and every weight that *reads* it exactly
as it was:

* MLP neuron ``i`` of block ``L``: row ``i`` of the gate and up projections (both halves of a
  fused ``gate_up_proj``; column ``i`` of GPT-2's ``c_fc``) with their biases, and input
  column ``i`` of the down projection;
* attention head ``h``: its rows of the query projection, the rows of the key/value head it reads
  (with grouped-query attention that key/value head is shared by ``H / KV`` query heads and is
  frozen with any of them), with biases, and its ``d_head`` input columns of the output
  projection.

Everything else — embeddings, norms, other units — trains. A unit owns whole rows or columns of
shared weight tensors, kept as index lists (:class:`FrozenSlice`) and enforced two ways: a
gradient hook zeroes those gradient entries (so clipping and optimiser statistics see only
trainable entries), and after every optimiser step they are written back from a saved copy
(decoupled weight decay would otherwise still shrink them). The result is bit-exact, which the
tests check.

The reverse, SSAH's "alignment budget" (align an unaligned model by updating its redundant units
only), is :meth:`UnitFreeze.train_only`: the rows and columns of the chosen units train and
everything else is held — the other entries of the tensors they share through the same index
lists (their complement), and every parameter they do not touch (embeddings, norms, other
projections) by taking it out of the optimiser while :meth:`UnitFreeze.active`. With
grouped-query attention a key/value head trains when any query head it serves is chosen, so the
query heads that share it but are not chosen see a changed key/value: the unit layout cannot
separate them, and the summary's trainable count includes those rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from safestress.attribution.units import CLASSES, TYPES, UnitMap
from safestress.errors import SafestressError
from safestress.sites.adapters import adapter_for, resolve_module, unwrap

UNIT_CLASSES = tuple(CLASSES.values())  # scu, ucu, cu, ru


def parse_classes(spec: str) -> list[str]:
    """``"scu,cu"`` → ``["scu", "cu"]``; one-line error for an unknown class."""
    names = [c.strip().lower() for c in spec.split(",") if c.strip()]
    bad = [c for c in names if c not in UNIT_CLASSES]
    if not names or bad:
        raise SafestressError(f"unknown unit class '{','.join(bad) or spec}'; known: {', '.join(UNIT_CLASSES)}")
    return names


def chosen_units(umap: UnitMap, classes: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """(layer, index) of every unit in ``classes``, per unit type (``mlp``, ``heads``)."""
    return {kind: sorted(u for c in classes for u in umap.units(kind, c)) for kind in TYPES}


def random_units(umap: UnitMap, like: dict[str, list[tuple[int, int]]], seed: int) -> dict[str, list[tuple[int, int]]]:
    """A seeded random set with as many units of each type as ``like`` — the control SSAH compares with."""
    rng = random.Random(seed)
    out = {}
    for kind in TYPES:
        everything = [(layer, i) for layer, row in enumerate(umap.classes[kind]) for i in range(len(row))]
        out[kind] = sorted(rng.sample(everything, len(like[kind])))
    return out


def _picked(umap: UnitMap, classes: Sequence[str], random_seed: int | None) -> dict[str, list[tuple[int, int]]]:
    """The units of ``classes``, or with ``random_seed`` as many random units of each type."""
    units = chosen_units(umap, classes)
    return units if random_seed is None else random_units(umap, units, random_seed)


def _is_conv1d(module: nn.Module) -> bool:  # GPT-2 stores [in, out]
    return type(module).__name__ == "Conv1D"


@dataclass(frozen=True)
class FrozenSlice:
    """The entries of one parameter that stay fixed: every index of ``index`` along ``dim``.

    Every unit freezes whole rows or whole columns of a weight, so an index list along one
    dimension describes it exactly, at a fraction of a dense mask's memory (a 7 B model's masks
    would take gigabytes).
    """

    dim: int
    index: torch.Tensor  # sorted, unique, int64

    def mask(self, shape: torch.Size) -> torch.Tensor:
        """The dense boolean mask (for inspection and tests)."""
        m = torch.zeros(shape, dtype=torch.bool)
        m.index_fill_(self.dim, self.index, True)
        return m


class _Marks:
    """Indices per (parameter, dimension), collected unit by unit."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.marks: dict[str, tuple[int, set[int]]] = {}

    def add(self, param: torch.Tensor, dim: int, idx: list[int]) -> None:
        name = self.names[id(param)]
        prev_dim, seen = self.marks.setdefault(name, (dim, set()))
        if prev_dim != dim:  # no unit layout freezes rows and columns of one tensor
            raise SafestressError(f"cannot freeze both rows and columns of '{name}'")
        seen.update(idx)

    def out(self, module: nn.Module, rows: list[int]) -> None:
        """Freeze output channels ``rows`` of a projection (its weight rows and bias entries)."""
        self.add(module.weight, 1 if _is_conv1d(module) else 0, rows)
        if getattr(module, "bias", None) is not None:
            self.add(module.bias, 0, rows)

    def into(self, module: nn.Module, cols: list[int]) -> None:
        """Freeze input channels ``cols`` of a projection (the weights that read them)."""
        self.add(module.weight, 0 if _is_conv1d(module) else 1, cols)

    def slices(self) -> dict[str, FrozenSlice]:
        return {n: FrozenSlice(d, torch.tensor(sorted(ix), dtype=torch.int64)) for n, (d, ix) in self.marks.items()}


def _optional(block: nn.Module, rel: str) -> nn.Module | None:
    try:
        return block.get_submodule(rel)
    except AttributeError:
        return None


def unit_slices(model: nn.Module, units: dict[str, list[tuple[int, int]]]) -> dict[str, FrozenSlice]:
    """Parameter name → the rows or columns that compute or read the given units."""
    model = unwrap(model)
    adapter = adapter_for(model)
    marks = _Marks(model)
    cfg = model.config
    heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    by_layer: dict[int, dict[str, list[int]]] = {}
    for kind in TYPES:
        for layer, i in units.get(kind, []):
            by_layer.setdefault(layer, {"mlp": [], "heads": []})[kind].append(i)
    for layer, chosen in sorted(by_layer.items()):
        block = resolve_module(model, f"{adapter.layers}.{layer}")
        if chosen["mlp"]:
            down = block.get_submodule(adapter.mlp_down)
            width = down.weight.shape[0] if _is_conv1d(down) else down.weight.shape[1]
            neurons = sorted(chosen["mlp"])
            if neurons[-1] >= width:
                raise SafestressError(f"unit map does not fit this model: block {layer} has {width} MLP neurons")
            marks.into(down, neurons)
            for rel in adapter.consumers["ln2.out"]:
                producer = _optional(block, rel)
                if producer is not None:
                    fused = rel.endswith("gate_up_proj")  # Phi-3: [gate; up]
                    marks.out(producer, neurons + [width + i for i in neurons] if fused else neurons)
        if chosen["heads"]:
            o_proj = block.get_submodule(adapter.attn_out_proj)
            width = o_proj.weight.shape[0] if _is_conv1d(o_proj) else o_proj.weight.shape[1]
            d = width // heads
            hs = sorted(chosen["heads"])
            if hs[-1] >= heads:
                raise SafestressError(f"unit map does not fit this model: block {layer} has {heads} heads")
            group = heads // kv_heads
            q_rows = [h * d + j for h in hs for j in range(d)]
            kv_rows = sorted({(h // group) * d + j for h in hs for j in range(d)})
            marks.into(o_proj, q_rows)
            for rel in adapter.consumers["ln1.out"]:
                producer = _optional(block, rel)
                if producer is None:
                    continue
                leaf = rel.rsplit(".", 1)[-1]
                if leaf == "q_proj":
                    rows = q_rows
                elif leaf in ("k_proj", "v_proj"):
                    rows = kv_rows
                elif leaf == "qkv_proj":  # Phi-3: [q; k; v]
                    rows = q_rows + [heads * d + r for r in kv_rows] + [(heads + kv_heads) * d + r for r in kv_rows]
                elif leaf == "c_attn":  # GPT-2: [q | k | v], no grouping
                    rows = q_rows + [width + r for r in q_rows] + [2 * width + r for r in q_rows]
                else:
                    raise SafestressError(f"cannot freeze heads through '{rel}' of {adapter.family}")
                marks.out(producer, rows)
    return marks.slices()


def complement_slices(
    model: nn.Module, trainable: dict[str, FrozenSlice]
) -> tuple[dict[str, FrozenSlice], tuple[str, ...]]:
    """Invert "these rows and columns train": the held entries of each tensor that has trainable
    ones (the other indices along the same dimension), and the names of the parameters held whole."""
    params = dict(unwrap(model).named_parameters())
    held: dict[str, FrozenSlice] = {}
    for name, sl in trainable.items():
        keep = torch.ones(params[name].shape[sl.dim], dtype=torch.bool)
        keep[sl.index] = False
        if keep.any():
            held[name] = FrozenSlice(sl.dim, torch.nonzero(keep).flatten())
    return held, tuple(n for n in params if n not in trainable)


def unit_masks(model: nn.Module, units: dict[str, list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
    """Parameter name → dense boolean mask of the frozen entries (for inspection; training uses slices)."""
    params = dict(unwrap(model).named_parameters())
    return {n: sl.mask(params[n].shape) for n, sl in unit_slices(model, units).items()}


@dataclass
class UnitFreeze:
    """Rows and columns of a model's parameters held fixed while :meth:`active`."""

    model: nn.Module
    slices: dict[str, FrozenSlice]
    units: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    whole: tuple[str, ...] = ()  # parameters held entirely (out of the optimiser while active)
    mode: str = "freeze"  # "freeze": ``units`` are held; "train-only": only ``units`` train
    _saved: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_unit_map(
        cls, model: nn.Module, umap: UnitMap, classes: Sequence[str], *, random_seed: int | None = None
    ) -> UnitFreeze:
        """Freeze the units of ``classes``; with ``random_seed``, as many random units of each type instead."""
        units = _picked(umap, classes, random_seed)
        return cls(model, unit_slices(model, units), units)

    @classmethod
    def train_only(
        cls, model: nn.Module, umap: UnitMap, classes: Sequence[str], *, random_seed: int | None = None
    ) -> UnitFreeze:
        """Train the units of ``classes`` (with ``random_seed``, as many random units of each
        type) and hold every other weight of the model."""
        units = _picked(umap, classes, random_seed)
        if not any(units.values()):
            raise SafestressError(f"no units of class {','.join(classes)} in the unit map: nothing would train")
        held, whole = complement_slices(model, unit_slices(model, units))
        return cls(model, held, units, whole, mode="train-only")

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Dense boolean masks of the frozen entries (built on demand, for inspection)."""
        params = self._params()
        return {n: sl.mask(params[n].shape) for n, sl in self.slices.items()}

    def frozen_elements(self) -> int:
        params = dict(unwrap(self.model).named_parameters())
        sliced = sum(len(sl.index) * (params[n].numel() // params[n].shape[sl.dim]) for n, sl in self.slices.items())
        return sliced + sum(params[n].numel() for n in self.whole)

    def summary(self) -> dict[str, Any]:
        total = sum(p.numel() for p in unwrap(self.model).parameters())
        frozen = self.frozen_elements()
        return {
            "mode": self.mode,
            "units": {kind: len(v) for kind, v in self.units.items()},
            "frozen_parameters": frozen,
            "trainable_parameters": total - frozen,
            "share_of_parameters": frozen / total if total else 0.0,
        }

    def _params(self) -> dict[str, nn.Parameter]:
        params = dict(unwrap(self.model).named_parameters())
        missing = [n for n in (*self.slices, *self.whole) if n not in params]
        if missing:
            raise SafestressError(f"frozen parameter '{missing[0]}' is not in the model")
        return {n: params[n] for n in self.slices}

    def restore(self) -> None:
        """Write the saved values back into the frozen rows/columns (after an optimiser step)."""
        with torch.no_grad():
            for name, p in self._params().items():
                sl = self.slices[name]
                p.data.index_copy_(sl.dim, sl.index.to(p.device), self._saved[name].to(p.device, p.dtype))

    @contextmanager
    def active(self) -> Iterator[UnitFreeze]:
        """Zero the frozen gradient entries and take the wholly held parameters out of training
        while inside (the trainer builds its optimiser inside, from the parameters that require
        gradients); call :meth:`restore` after each optimiser step."""
        params = self._params()
        self._saved = {
            n: p.detach().index_select(self.slices[n].dim, self.slices[n].index.to(p.device)).clone()
            for n, p in params.items()
        }
        everything = dict(unwrap(self.model).named_parameters())
        held = [everything[n] for n in self.whole if everything[n].requires_grad]
        handles = []
        try:
            for p in held:
                p.requires_grad_(False)
            for name, p in params.items():
                sl = self.slices[name]
                index = sl.index.to(p.device)

                def hook(grad: torch.Tensor, dim: int = sl.dim, index: torch.Tensor = index) -> torch.Tensor:
                    return grad.index_fill(dim, index, 0.0)

                handles.append(p.register_hook(hook))
            yield self
        finally:
            for h in handles:
                h.remove()
            for p in held:
                p.requires_grad_(True)
