"""Fine-tuning with units frozen: exact freezing on every architecture, the command line, its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from safestress.attribution.units import Ratios, UnitMap
from safestress.errors import SafestressError
from safestress.testing import ARCHITECTURES, save_tiny_model, tiny_model
from safestress.train import FinetuneSettings, UnitFreeze, finetune, unit_masks, unit_slices
from tests.test_cli import cli

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
PAIRS = [("say hello", "hello there"), ("say bye", "goodbye now")] * 4


def _unit_map(lm) -> UnitMap:
    """Neurons 0-2 and head 0 of every block are SCU, neuron 3 is CU, the rest RU."""
    cfg = lm.model.config
    width = getattr(cfg, "intermediate_size", None) or 4 * cfg.n_embd
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    return UnitMap(
        lm.name,
        "ssah",
        Ratios(),
        {"mlp": ["SSSC" + "R" * (width - 4)] * layers, "heads": ["S" + "R" * (heads - 1)] * layers},
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_frozen_units_are_bit_exact_and_the_rest_trains(arch, tmp_path):
    lm = tiny_model(arch, n_layers=2)
    lm.tokenizer.chat_template = TEMPLATE
    model = lm.model
    freeze = UnitFreeze.from_unit_map(model, _unit_map(lm), ["scu"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # a large step and weight decay: without the restore, decay alone would move frozen entries
    settings = FinetuneSettings(steps=3, batch_size=4, learning_rate=1e-2, weight_decay=0.1)
    summary = finetune(lm, PAIRS, tmp_path / "out", settings, freeze, log=lambda _: None)
    assert summary["frozen"]["units"] == {"mlp": 6, "heads": 2}
    params = dict(model.named_parameters())
    masks = freeze.masks
    assert masks, "no parameter was masked"
    assert summary["frozen"]["frozen_parameters"] == sum(int(m.sum()) for m in masks.values())
    for name, mask in masks.items():
        p = params[name].detach()
        assert mask.any()
        assert torch.equal(p[mask], before[name][mask]), f"{name}: a frozen entry moved"
        assert (p[~mask] != before[name][~mask]).any(), f"{name}: no trainable entry moved"
    reloaded = type(model).from_pretrained(tmp_path / "out")
    for name, mask in masks.items():
        assert torch.equal(reloaded.state_dict()[name][mask], before[name][mask])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_only_moves_the_chosen_units_and_nothing_else(arch, tmp_path):
    """SSAH's alignment budget: only the redundant units' rows and columns train; every other
    entry, including whole tensors they do not touch (embeddings, norms), stays bit-exact."""
    lm = tiny_model(arch, n_layers=2)
    lm.tokenizer.chat_template = TEMPLATE
    model = lm.model
    budget = UnitFreeze.train_only(model, _unit_map(lm), ["ru"])
    ru = budget.units
    trained = {n: sl.mask(p.shape) for n, p in model.named_parameters() if (sl := unit_slices(model, ru).get(n))}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = FinetuneSettings(steps=3, batch_size=4, learning_rate=1e-2, weight_decay=0.1)
    summary = finetune(lm, PAIRS, tmp_path / "out", settings, budget, log=lambda _: None)
    assert summary["frozen"]["mode"] == "train-only"
    assert summary["frozen"]["trainable_parameters"] == sum(int(m.sum()) for m in trained.values())
    assert all(p.requires_grad for p in model.parameters())  # the held tensors are given back to training
    moved = 0
    for name, p in model.named_parameters():
        mask = trained.get(name, torch.zeros(p.shape, dtype=torch.bool))
        assert torch.equal(p.detach()[~mask], before[name][~mask]), f"{name}: a held entry moved"
        moved += int((p.detach()[mask] != before[name][mask]).any())
    assert moved == len(trained), "a tensor with trainable rows did not train"
    assert budget.whole and any("embed" in n or "wte" in n for n in budget.whole)


def test_train_only_with_no_unit_of_the_class_is_refused():
    lm = tiny_model("llama", n_layers=2)
    only_scu = UnitMap("x", "ssah", Ratios(), {"mlp": ["S" * 128] * 2, "heads": ["S" * 4] * 2})
    with pytest.raises(SafestressError, match="no units of class ru"):
        UnitFreeze.train_only(lm.model, only_scu, ["ru"])


def test_masks_follow_grouped_and_fused_projections():
    # llama-like: hidden 64, 4 heads of 16 over 2 key/value heads, MLP width 128
    lm = tiny_model("llama", n_layers=2)
    m = unit_masks(lm.model, {"mlp": [(0, 5)], "heads": [(1, 3)]})
    blk0, blk1 = "model.layers.0", "model.layers.1"
    assert m[f"{blk0}.mlp.gate_proj.weight"][5].all() and m[f"{blk0}.mlp.gate_proj.weight"].sum() == 64
    assert m[f"{blk0}.mlp.up_proj.weight"][5].all() and m[f"{blk0}.mlp.down_proj.weight"][:, 5].all()
    assert m[f"{blk0}.mlp.down_proj.weight"].sum() == 64
    q, k = m[f"{blk1}.self_attn.q_proj.weight"], m[f"{blk1}.self_attn.k_proj.weight"]
    assert q[48:64].all() and q.sum() == 16 * 64  # head 3's rows
    assert k[16:32].all() and k.sum() == 16 * 64  # key/value head 1 serves query heads 2 and 3
    assert m[f"{blk1}.self_attn.o_proj.weight"][:, 48:64].all()
    assert not any(n.startswith(blk1 + ".mlp") or n.startswith(blk0 + ".self_attn") for n in m)
    # Phi-3 fuses gate|up and q|k|v: neuron 5 is row 5 and row 128 + 5; head 3 is q rows 48-63,
    # k rows 64 + 16-31, v rows 64 + 32 + 16-31
    phi = tiny_model("phi3", n_layers=2)
    mp = unit_masks(phi.model, {"mlp": [(0, 5)], "heads": [(0, 3)]})
    gu = mp["model.layers.0.mlp.gate_up_proj.weight"]
    assert gu[5].all() and gu[128 + 5].all() and gu.sum() == 2 * 64
    qkv = mp["model.layers.0.self_attn.qkv_proj.weight"]
    rows = torch.nonzero(qkv.all(dim=1)).flatten().tolist()
    assert rows == [*range(48, 64), *range(64 + 16, 64 + 32), *range(96 + 16, 96 + 32)]


def test_frozen_neurons_compute_the_same_activations(tmp_path):
    """The point of freezing, checked through the model's sites: a frozen MLP neuron gives the
    same activation for the same block input after fine-tuning; unfrozen neurons do not."""
    from safestress.sites import site_hooks

    lm = tiny_model("llama", n_layers=2)
    lm.tokenizer.chat_template = TEMPLATE
    original = tiny_model("llama", n_layers=2).model
    frozen = [(0, i) for i in range(8)]
    units = {"mlp": frozen, "heads": []}
    freeze = UnitFreeze(lm.model, unit_slices(lm.model, units), units)
    settings = FinetuneSettings(steps=4, batch_size=4, learning_rate=1e-2)
    finetune(lm, PAIRS, tmp_path / "ft", settings, freeze, log=lambda _: None)
    ids = lm.tokenizer("say hello", return_tensors="pt")["input_ids"]
    seen: dict[str, torch.Tensor] = {}

    def grab(key):
        def fn(x):
            seen[key] = x.detach().clone()

        return fn

    with torch.no_grad():
        with site_hooks(lm.model, {"blocks.0.ln2.out": grab("x")}):
            lm.model(ids)
        # the same MLP input through the original and the fine-tuned MLP of block 0
        for key, model in (("before", original), ("after", lm.model)):
            with site_hooks(model, {"blocks.0.mlp.act": grab(key)}):
                model.model.layers[0].mlp(seen["x"])
    before, after = seen["before"], seen["after"]
    assert torch.equal(before[..., :8], after[..., :8])
    assert not torch.allclose(before[..., 8:], after[..., 8:])


def _command_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A saved tiny chat model, its unit map at ``tmp_path/units.json`` and a pairs file."""
    model_dir = save_tiny_model(tmp_path / "tiny", "llama", n_layers=2)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (model_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    _unit_map(tiny_model("llama", n_layers=2)).save(tmp_path / "units.json")
    data = tmp_path / "pairs.csv"
    data.write_text("prompt,response\n" + "\n".join(f"{p},{r}" for p, r in PAIRS) + "\n")
    return model_dir, data


def _finetune_with_units(tmp_path: Path, name: str, *extra: str) -> tuple[list[str], Any, dict]:
    """``safestress finetune`` (2 steps) of the saved tiny model with its unit map and ``extra``
    options into ``tmp_path/name``: the base arguments, the finished process and the run's record."""
    model_dir, data = _command_inputs(tmp_path)
    out = tmp_path / name
    args = ["finetune", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--steps", "2"]
    res = cli(*args, "--units", str(tmp_path / "units.json"), *extra)
    assert res.returncode == 0, res.stderr
    return args, res, json.loads((out / "finetune.json").read_text())


def test_finetune_command_writes_the_model_and_its_record(tmp_path):
    args, res, record = _finetune_with_units(tmp_path, "ft", "--freeze", "scu,cu", "--random-control")
    out = tmp_path / "ft"
    assert record["frozen"]["units"] == {"mlp": 8, "heads": 2} and record["random_control"] is True
    assert record["classes"] == ["scu", "cu"] and record["pairs"] == len(PAIRS)
    assert (out / "model.safetensors").is_file() and not (tmp_path / "ft.tmp").exists()
    assert re.search(r"fine-tuning .*2/2.*loss \d", res.stderr), res.stderr  # the step bar, finished, with the loss
    # the output directory is never overwritten
    again = cli(*args)
    assert again.returncode == 2 and "not an empty directory" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--freeze", "scu"], "--freeze needs --units"),
        (["--train-only", "ru"], "--train-only needs --units"),
        (["--units", "UNITS", "--train-only", "ru", "--freeze", "scu"], "not both"),
        (["--random-control"], "--random-control needs --units"),
        (["--units", "UNITS", "--freeze", "scu,xyz"], "unknown unit class 'xyz'"),
        (["--units", "missing.json"], "not found"),
        (["--prompt-col", "question"], "column 'question' not in"),
    ],
)
def test_finetune_command_errors_are_one_line(tmp_path, extra, message):
    lm = tiny_model("llama", n_layers=2)
    _unit_map(lm).save(tmp_path / "units.json")
    data = tmp_path / "pairs.csv"
    data.write_text("prompt,response\nsay hi,hi\n")
    extra = [str(tmp_path / "units.json") if e == "UNITS" else e for e in extra]
    res = cli("finetune", "--model", "/no/such/model", "--data", str(data), "--out", str(tmp_path / "o"), *extra)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_finetune_command_trains_only_the_budget_against_a_random_draw(tmp_path):
    """--train-only ru with --random-control: as many random units as RU train, recorded as such."""
    _, res, record = _finetune_with_units(tmp_path, "budget", "--train-only", "ru", "--random-control")
    assert "training only random units like ru" in res.stderr
    assert record["train_only"] is True and record["random_control"] is True and record["classes"] == ["ru"]
    assert record["frozen"]["units"] == {"mlp": 2 * 124, "heads": 2 * 3} and record["frozen"]["mode"] == "train-only"


def test_a_unit_map_of_another_model_is_refused():
    small = tiny_model("llama", n_layers=2)
    wide = UnitMap("x", "ssah", Ratios(), {"mlp": ["S" * 500, "R" * 500], "heads": ["R" * 4] * 2})
    with pytest.raises(SafestressError, match="does not fit this model"):
        UnitFreeze.from_unit_map(small.model, wide, ["scu"])


def test_a_trainer_refusal_is_one_line(tmp_path, monkeypatch):
    from trl import SFTTrainer

    def refuse(self, *a, **k):
        raise ValueError("You cannot perform fine-tuning on purely quantized models.\nSee the docs.")

    monkeypatch.setattr(SFTTrainer, "train", refuse)
    lm = tiny_model("llama", n_layers=2)
    lm.tokenizer.chat_template = TEMPLATE
    with pytest.raises(SafestressError, match=r"^training failed: You cannot perform fine-tuning on purely quantized"):
        finetune(lm, PAIRS, tmp_path / "out", FinetuneSettings(steps=1, batch_size=2), log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_finetune_trains_several_runs_from_the_same_weights(tmp_path):
    """--runs 2: two folders named for the arm and the seed, each trained from the original
    weights with its own seed (with --random-control, its own random draw of units)."""
    import hashlib

    from safestress.train.cli import run_dirs

    model_dir, data = _command_inputs(tmp_path)
    out = tmp_path / "random-scu"
    args = ["finetune", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--steps", "2"]
    res = cli(*args, "--units", str(tmp_path / "units.json"), "--random-control", "--runs", "2", "--seed", "5")
    assert res.returncode == 0, res.stderr
    runs = [out / "random-scu-s5", out / "random-scu-s6"]
    records = [json.loads((r / "finetune.json").read_text()) for r in runs]
    assert [r["settings"]["seed"] for r in records] == [5, 6] and all(r["random_control"] for r in records)
    digests = {hashlib.sha256((r / "model.safetensors").read_bytes()).hexdigest() for r in runs}
    assert len(digests) == 2  # two seeds, two models
    assert run_dirs(out, 0, 1) == [(0, out)] and run_dirs(tmp_path / "dpo", 3, 2)[1] == (4, tmp_path / "dpo" / "dpo-s4")
