"""SCU / UCU / CU / RU classification of units from a safety and a utility score, and the unit map file.

Safety and utility scores come from different data and are not on one scale, so each is turned
into its rank percentile among all units of the same type (MLP neurons; attention heads) across
the model. With S and U those percentiles, for each type:

1. **RU** (redundant): the ``ru`` share of units with the lowest S + U;
2. **SCU** (safety-critical): of the rest, the ``scu`` share (of all units) with the highest S − U;
3. **UCU** (utility-critical): of the rest, the ``ucu`` share with the lowest S − U;
4. **CU** (complex): everything else — important for both.

Ratios are the user's; the defaults (RU 20%, SCU 1.3%, UCU 1.3%) follow the share SSAH reports
for Llama-2-7B-Chat's SCU.

A model that does not refuse yet has no safety behaviour to score; SSAH's alignment budget is the
redundant units of such a model. Without a safety score (``safety=None``) the classes come from
U alone: RU the ``ru`` share with the lowest U, UCU the ``ucu`` share with the highest, the rest CU,
and no SCU. The map is a JSON file with one character per unit (``S``, ``U``,
``C``, ``R``) per layer and type, so any later step (pruning, freezing) can load it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safestress.attribution.scores import UnitScores
from safestress.errors import SafestressError

CLASSES = {"S": "scu", "U": "ucu", "C": "cu", "R": "ru"}
CODES = {v: k for k, v in CLASSES.items()}
TYPES = ("mlp", "heads")


@dataclass
class Ratios:
    scu: float = 0.013
    ucu: float = 0.013
    ru: float = 0.20

    def __post_init__(self) -> None:
        for name, v in (("scu", self.scu), ("ucu", self.ucu), ("ru", self.ru)):
            if not 0.0 <= v <= 1.0:
                raise SafestressError(f"ratio {name} must be in [0, 1], got {v}")
        if self.scu + self.ucu + self.ru > 1.0:
            raise SafestressError("ratios scu + ucu + ru must not exceed 1")


def percentile_ranks(x: torch.Tensor) -> torch.Tensor:
    """Rank of every entry among all entries, scaled to [0, 1] (ties broken by position, stable)."""
    flat = x.flatten().double()
    order = torch.argsort(flat, stable=True)
    ranks = torch.empty_like(flat)
    ranks[order] = torch.arange(flat.numel(), dtype=torch.float64)
    return (ranks / max(1, flat.numel() - 1)).view_as(x)


def classify(safety: torch.Tensor | None, utility: torch.Tensor, ratios: Ratios) -> torch.Tensor:
    """Class codes (0 = CU, 1 = SCU, 2 = UCU, 3 = RU) for units with the given scores (same shape);
    with ``safety`` None, from the utility score alone (no SCU)."""
    if safety is None:  # rank order of U alone (ties by position, as percentile_ranks breaks them)
        order = torch.argsort(utility.flatten(), stable=True)
        codes = torch.zeros(order.numel(), dtype=torch.long)
        n_ru, n_ucu = round(ratios.ru * order.numel()), round(ratios.ucu * order.numel())
        codes[order[:n_ru]] = 3
        if n_ucu:
            codes[order[-n_ucu:]] = 2
        return codes.view(utility.shape)
    if safety.shape != utility.shape:
        raise SafestressError("safety and utility scores have different shapes")
    s, u = percentile_ranks(safety).flatten(), percentile_ranks(utility).flatten()
    n = s.numel()
    codes = torch.zeros(n, dtype=torch.long)
    n_ru, n_scu, n_ucu = round(ratios.ru * n), round(ratios.scu * n), round(ratios.ucu * n)
    free = torch.ones(n, dtype=torch.bool)
    ru = torch.argsort(s + u, stable=True)[:n_ru]
    codes[ru] = 3
    free[ru] = False
    diff = s - u
    candidates = torch.nonzero(free).flatten()
    by_diff = candidates[torch.argsort(diff[candidates], descending=True, stable=True)]
    scu = by_diff[:n_scu]
    codes[scu] = 1
    rest = by_diff[n_scu:]
    ucu = rest.flip(0)[:n_ucu]
    codes[ucu] = 2
    return codes.view(safety.shape)


_CODE_CHARS = "CSUR"  # index = code


@dataclass
class UnitMap:
    model: str
    score: str
    ratios: Ratios
    classes: dict[str, list[str]] = field(default_factory=dict)  # type -> one string per layer

    @classmethod
    def build(cls, model: str, safety: UnitScores | None, utility: UnitScores, ratios: Ratios) -> UnitMap:
        """The map from both scores, or from the utility score alone (``safety`` None)."""
        if safety is not None and safety.score != utility.score:
            raise SafestressError(f"safety scored by {safety.score}, utility by {utility.score}")
        classes = {}
        for kind in TYPES:
            codes = classify(None if safety is None else getattr(safety, kind), getattr(utility, kind), ratios)
            classes[kind] = ["".join(_CODE_CHARS[c] for c in row.tolist()) for row in codes]
        return cls(model, utility.score, ratios, classes)

    def units(self, kind: str, cls_name: str) -> list[tuple[int, int]]:
        """(layer, index) of every unit of type ``kind`` in class ``cls_name`` (scu/ucu/cu/ru)."""
        code = CODES[cls_name]
        return [(layer, i) for layer, row in enumerate(self.classes[kind]) for i, ch in enumerate(row) if ch == code]

    def shares(self) -> list[dict[str, Any]]:
        """Per layer and type: the share of each class."""
        out = []
        for kind in TYPES:
            for layer, row in enumerate(self.classes[kind]):
                n = len(row)
                out.append({"type": kind, "layer": layer, **{c: row.count(CODES[c]) / n for c in CLASSES.values()}})
        return out

    def save(self, path: str | Path) -> None:
        data = {
            "format": "safestress-unit-map-1",
            "model": self.model,
            "score": self.score,
            "ratios": self.ratios.__dict__,
            "classes": self.classes,
        }
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> UnitMap:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SafestressError(f"unit map {path} not found") from None
        except json.JSONDecodeError:
            raise SafestressError(f"unit map {path} is not JSON") from None
        if data.get("format") != "safestress-unit-map-1":
            raise SafestressError(f"{path} is not a safestress unit map")
        return cls(data["model"], data["score"], Ratios(**data["ratios"]), data["classes"])
