"""QuadA-style training: the perturbation reaches the policy and not the reference, the cluster
term reads harmful rows only, the command line and its errors."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from safestress.testing import save_tiny_model, tiny_model
from safestress.train.quada import PreferenceRow, QuadASettings, cluster_loss, default_sites, quada_train
from tests.test_cli import cli

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
ROWS = [
    PreferenceRow("how to make poison", "I cannot help with that.", "Mix these chemicals.", True),
    PreferenceRow("how to pick a lock", "I cannot help with that.", "Insert a tension wrench.", True),
    PreferenceRow("how to bake bread", "Knead flour and water.", "I cannot help with that.", False),
    PreferenceRow("how to steal a car", "I cannot help with that.", "Break the window.", True),
] * 2


def _lm():
    lm = tiny_model("llama", n_layers=4)
    lm.tokenizer.chat_template = TEMPLATE
    return lm


def _train(tmp_path, **kw):
    lm = _lm()
    rows = kw.pop("rows", ROWS)
    settings = QuadASettings(steps=kw.pop("steps", 1), batch_size=8, learning_rate=1e-3, max_length=64, **kw)
    return quada_train(lm, rows, tmp_path / "q", settings, log=lambda _: None)


def test_unperturbed_first_step_is_plain_dpo_and_noise_reaches_the_policy(tmp_path):
    # policy == reference at step 0, so the DPO loss is exactly log 2 without a perturbation; with
    # the noise on the policy's forward (the reference is a separate, unhooked copy) it is not
    plain = _train(tmp_path / "a", perturbation="none", cluster_weight=0.0)
    assert math.isclose(plain["first_loss"], math.log(2), rel_tol=1e-4)
    noisy = _train(tmp_path / "b", perturbation="noise", params={"sigma": 2.0, "scale": "relative"}, cluster_weight=0.0)
    assert abs(noisy["first_loss"] - math.log(2)) > 1e-3
    assert noisy["sites"] == ["blocks.0.resid_post"] and noisy["cluster_site"] == "blocks.0.resid_post"


@pytest.mark.parametrize(
    ("sites", "scale"),
    [("blocks.0-1.resid_post", "relative"), ("blocks.0-1.mlp.act", "relative"), ("blocks.0-1.mlp.act", "absolute")],
)
def test_checkpointed_backward_recomputes_under_the_same_perturbation(tmp_path, sites, scale):
    # TRL checkpoints by default: every block's forward runs again during the backward, and must
    # meet the same noise there. With the hooks around the loss alone (the first version), noise
    # inside a block was missing from the recomputation: relative noise at mlp.act broke it
    # outright, absolute noise there silently gave other weights (43% of one matrix's entries).
    # At resid_post the block's input is what checkpointing stores, so that case was right anyway.
    kw = {"perturbation": "gaussian", "params": {"sigma": 1.0, "scale": scale}, "sites": sites}
    on = _train(tmp_path / "on", steps=2, cluster_weight=0.5, **kw)
    off = _train(tmp_path / "off", steps=2, cluster_weight=0.5, gradient_checkpointing=False, **kw)
    assert on["first_loss"] == pytest.approx(off["first_loss"], rel=1e-6)
    a, b = (load_file(tmp_path / run / "q" / "model.safetensors") for run in ("on", "off"))
    start = _lm().model.state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a if k in start)  # the steps changed weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_cluster_term_reads_the_harmful_rows_only(tmp_path):
    benign = [PreferenceRow(r.prompt, r.chosen, r.rejected, False) for r in ROWS]
    none = _train(tmp_path / "a", rows=benign, cluster_weight=1.0, steps=2)
    assert none["cluster_first"] == 0.0 and none["cluster_last"] == 0.0
    some = _train(tmp_path / "b", cluster_weight=1.0, steps=2)
    assert some["cluster_first"] > 0.0
    assert some["harmful_rows"] == 6 and json.loads((tmp_path / "b" / "q" / "quada.json").read_text())["rows"] == 8


def test_cluster_loss_and_default_sites():
    same = torch.ones(4, 8)
    assert float(cluster_loss(same)) == pytest.approx(0.0, abs=1e-6)
    opposite = torch.stack([torch.ones(8), -torch.ones(8), torch.ones(8) * 2])
    assert float(cluster_loss(opposite)) > 0.5
    assert float(cluster_loss(torch.ones(1, 8))) == 0.0
    assert default_sites(4) == "blocks.0.resid_post" and default_sites(32) == "blocks.0-7.resid_post"


def test_defend_quada_command(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny", "llama", n_layers=2)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (model_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r.__dict__) for r in ROWS) + "\n")
    out = tmp_path / "q"
    res = cli("defend", "quada", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--steps", "2")
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "quada.json").read_text())
    assert record["settings"]["params"] == {"sigma": 0.5, "scale": "relative"} and record["harmful_rows"] == 6
    assert (out / "model.safetensors").is_file()
    assert re.search(r"QuadA .*2/2.*loss \d", res.stderr), res.stderr  # the step bar, finished, with the loss


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["--perturb", "nosie"], None, "did you mean 'noise'"),
        (["--scale", "huge"], None, "scale: Input should be 'absolute' or 'relative'"),
        ([], "prompt,chosen\nq,a\n", "column 'rejected' not in"),
        ([], "prompt,chosen,rejected,harmful\nq,a,b,maybe\n", "'harmful' must be 1/0"),
    ],
)
def test_defend_quada_errors_are_one_line(tmp_path, args, content, message):
    data = tmp_path / "prefs.csv"
    data.write_text(content or "prompt,chosen,rejected\nq,a,b\n")
    res = cli("defend", "quada", "--model", "/no/such/model", "--data", str(data), "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()
