"""The typed condition spec reproduces the hashes of stored specs, so stores written before it was
typed keep resuming; a misspelt key is an error, not a new hash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from safestress.condition_spec import ConditionSpec
from safestress.store import content_hash

ROOT = Path(__file__).resolve().parents[1]

# The spec of Qwen2.5-Coder-0.5B at σ 0.2 on blocks 0-3, as the sweep wrote it on 2026-11-30 (the
# store behind docs/results/qwen-noise), and the hash its rows are keyed by.
STORED = {
    "generation": {"do_sample": False, "max_new_tokens": 48, "min_new_tokens": 0, "temperature": 1.0, "top_k": 0,
                   "top_p": 1.0},
    "label": "gaussian σ=0.2 @ blocks.0-3.resid_post",
    "model": {"chat_template_sha": "cd8e9439f0570856", "digest": "e00cafc9d0c6467f826e3037", "dtype": "float32",
              "model": "qwen2.5-coder-0.5b-instruct", "system_prompt": None, "template": "chat"},
    "model_name": "qwen2.5-coder-0.5b-instruct",
    "noise_keys": "rowkey-v1",
    "perturbation": {"name": "gaussian", "positions": "all", "scale": "absolute", "sigma": 0.2, "version": 2},
    "site_pattern": "blocks.0-3.resid_post",
    "sites": ["blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.resid_post", "blocks.3.resid_post"],
    "strength": 0.2,
}  # fmt: skip
STORED_HASH = "7a612d3cbe05fb7ed7a9c4a12ef9c3e3"


def test_a_stored_spec_keeps_its_hash():
    spec = ConditionSpec(**STORED)
    assert spec.hash() == STORED_HASH == content_hash(STORED)
    assert spec.record() == STORED
    committed = pd.read_parquet(
        ROOT / "docs" / "results" / "qwen-noise" / "per-prompt.parquet", columns=["config_hash"]
    )
    assert STORED_HASH in set(committed["config_hash"])  # the committed rows are keyed by it


def test_a_misspelt_or_missing_key_is_an_error_not_a_new_hash():
    with pytest.raises(ValidationError):
        ConditionSpec(**{**STORED, "strenght": 0.2})
    with pytest.raises(ValidationError):
        ConditionSpec(**{k: v for k, v in STORED.items() if k != "noise_keys"})


def test_the_sweep_keys_every_condition_by_its_typed_spec(tiny_dir, prompts_csv, tmp_path):
    import safestress as ss

    cfg = ss.build_config(
        models=[str(tiny_dir)], dataset=f"csv:{prompts_csv}:text", sigma=[0, 0.1], store=str(tmp_path / "s.db")
    )
    plan = ss.plan_sweep(cfg)
    assert len(plan.conditions) == 2
    for cond in plan.conditions:
        assert cond.config_hash == ConditionSpec(**cond.spec).hash() == content_hash(cond.spec)
