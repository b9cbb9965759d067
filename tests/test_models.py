"""Model loading: local directories, templates, errors, GGUF conversion cache."""

from __future__ import annotations

import json
import shutil

import pytest

import safestress as ss
from safestress.errors import SafestressError

from .conftest import SMOLLM


def test_local_dir_loads_lazily_and_formats_chat(tiny_dir):
    lm = ss.load_model(str(tiny_dir), weights=False, system_prompt="Be brief.")
    assert lm.model is None and lm.n_layers == 2 and len(lm.sites()) == 17
    assert lm.format("hi") == "<|system|>Be brief.<|end|><|user|>hi<|end|><|assistant|>"
    lm.ensure_weights()
    assert lm.model is not None and str(next(lm.model.parameters()).dtype) == "torch.float32"
    assert lm.fingerprint()["dtype"] == "float32"


def test_missing_chat_template_is_an_error_unless_raw_or_given(tiny_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in bare.glob("chat_template.*"):
        extra.unlink()
    with pytest.raises(SafestressError, match="no chat template"):
        ss.load_model(str(bare), weights=False)
    assert ss.load_model(str(bare), weights=False, template="raw").format("go on:") == "go on:"
    tpl = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    assert ss.load_model(str(bare), weights=False, chat_template=tpl).format("x") == "[x]"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("/no/such/model.gguf", "model file not found"), ("not-a-model", "not a file, a directory or a hub id")],
)
def test_bad_model_specs(spec, message):
    with pytest.raises(SafestressError, match=message):
        ss.load_model(spec)


def test_bad_dtype(tiny_dir):
    with pytest.raises(SafestressError, match="unknown dtype"):
        ss.load_model(str(tiny_dir), dtype="float8")


@pytest.mark.skipif(not SMOLLM.is_file(), reason="SmolLM2 GGUF not available")
def test_gguf_is_converted_once_and_cached(smollm):
    from safestress.paths import cache_dir

    found = cache_dir("models").glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors")
    converted = [f for f in found if not f.parent.name.endswith(".tmp")]  # another test's conversion in flight
    assert len(converted) == 1
    mtime = converted[0].stat().st_mtime_ns
    again = ss.load_model(str(SMOLLM), weights=False)
    assert again.identity == {k: v for k, v in smollm.identity.items()}
    assert converted[0].stat().st_mtime_ns == mtime
    assert smollm.model.config.model_type == "llama" and smollm.tokenizer.chat_template


def test_two_runs_converting_one_gguf_at_once_both_load_it(tmp_path):
    """Two sweeps started together on a new machine convert the same GGUF at once: each writes
    its own staging folder, the first to finish publishes it, and both load the result."""
    import os
    import subprocess
    import sys

    if not SMOLLM.is_file():
        pytest.skip("SmolLM2 GGUF not available")
    code = "import sys, safestress as ss; print(ss.load_model(sys.argv[1], weights=False).identity['digest'])"
    env = {**os.environ, "SAFESTRESS_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(SMOLLM)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-400:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
    folders = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    assert len(folders) == 1 and not folders[0].endswith(".tmp")


def test_a_model_is_spread_over_gpus_only_when_it_does_not_fit_one():
    import torch

    from safestress.models import FIT_SHARE, _weight_bytes, spread_over_gpus
    from safestress.testing import tiny_config, tiny_model

    cfg = tiny_config("llama", vocab_size=262)
    n = sum(p.numel() for p in tiny_model("llama").model.parameters())
    assert _weight_bytes(cfg, torch.bfloat16) == 2 * n and _weight_bytes(cfg, torch.float32) == 4 * n
    gib = 2**30
    assert not spread_over_gpus(16 * gib, [139 * gib])  # one GPU: nowhere to spread to
    assert not spread_over_gpus(16 * gib, [139 * gib, 139 * gib])  # an 8B model in bf16 fits one H200
    assert spread_over_gpus(140 * gib, [139 * gib, 139 * gib])  # a 70B model in bf16 does not
    assert spread_over_gpus(int(FIT_SHARE * 80 * gib) + 1, [80 * gib] * 4)
