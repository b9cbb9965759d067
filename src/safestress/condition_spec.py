"""A condition's specification: what determines its outputs, typed, and the hash that keys it.

Why typed: the spec used to be a plain dict built in the sweep and read, key by key, by the store
and the reports; a misspelt or missing key changed a hash silently. The model below has exactly
today's keys, and its :meth:`ConditionSpec.hash` reproduces the hashes of every stored spec
(tests/test_condition_spec.py pins them), so stores written before it was typed keep resuming.
The store keeps the spec as JSON (``record()``); readers of old stores get dicts back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from safestress.store import content_hash


class ConditionSpec(BaseModel):
    """Everything that determines a condition's outputs (and its display label, which is part of
    the hash for historical reasons: changing how labels are written would orphan stored rows)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: dict[str, Any]  # LoadedModel.fingerprint(): weights' identity, dtype, template …
    model_name: str
    perturbation: dict[str, Any]  # Perturbation.fingerprint(): name, version, parameters
    strength: float
    site_pattern: str
    sites: list[str]
    generation: dict[str, Any]  # GenerationSettings
    noise_keys: str  # how noise is keyed to rows (sweep.NOISE_KEY_SCHEME)
    label: str

    def record(self) -> dict[str, Any]:
        """The spec as the store keeps it (JSON-ready, the keys in the hash)."""
        return self.model_dump(mode="python")

    def hash(self) -> str:
        """The configuration hash: the content hash of :meth:`record`."""
        return content_hash(self.record())
