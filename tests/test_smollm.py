"""The real SmolLM2-135M-Instruct GGUF: the issue's command end to end, and exactness on a real model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import safestress as ss

from .conftest import DATA, SMOLLM

pytestmark = pytest.mark.skipif(not SMOLLM.is_file(), reason="SmolLM2 GGUF not available")


def test_issue_command_on_smollm_and_jbb(tmp_path):
    store = tmp_path / "smol.db"
    cmd = [
        sys.executable,
        "-m",
        "safestress.cli",
        "run",
        "--model",
        str(SMOLLM),
        "--dataset",
        f"csv:{DATA / 'jbb_harmful.csv'}:Goal",
        "--limit",
        "6",
        "--perturb",
        "noise",
        "--sigma",
        "0,0.05,0.1,0.2",
        "--sites",
        "blocks.*.resid_post",
        "--seeds",
        "3",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "32",
        "--store",
        str(store),
        "--judge",
        "refusal,harm",
        "--format",
        "table",  # the terminal's tables (piped, the default is Markdown)
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert proc.returncode == 0, proc.stderr
    # a refusal judge's rate is "complied", the harm judge's "harmful": two tables, each named
    text = " ".join(proc.stdout.split())
    assert "Complied rate (not refused: a refusal judge does not see harm) on jbb_harmful" in text
    assert "Harmful-output rate on jbb_harmful, model SmolLM2" in text and "(judge harm@" in text
    assert "complied %" in text and "harmful %" in text
    import json

    for judge, metric in (("refusal", "complied"), ("harm", "harmful")):
        summary = json.loads((tmp_path / "smol-report" / judge / "summary.json").read_text())
        assert list(summary["metrics"].values()) == [[metric]] and next(iter(summary["metrics"])).startswith(judge)
    assert "Trend across strength" in proc.stdout
    assert "60 rows generated" in proc.stderr  # clean once + 3 σ × 3 seeds, 6 prompts
    plots = list((tmp_path / "smol-report" / "refusal").glob("rate-*.png"))
    assert len(plots) == 1 and plots[0].stat().st_size > 10_000


def test_clean_and_sigma_zero_equal_model_generate_on_smollm(smollm):
    prompts = ["Write a haiku about autumn.", "How do I pick a lock?", "What is the capital of France?"]
    settings = ss.GenerationSettings(max_new_tokens=16)
    ours = [g.text for g in ss.generate(smollm, prompts, settings=settings, batch_size=3)]
    tok = smollm.tokenizer
    texts = [smollm.format(p) for p in prompts]
    order = sorted(range(3), key=lambda i: (len(tok(texts[i], add_special_tokens=False)["input_ids"]), i))
    batch = tok([texts[i] for i in order], return_tensors="pt", padding=True, add_special_tokens=False)
    out = smollm.model.generate(**batch, max_new_tokens=16, do_sample=False)
    plain = {}
    for j, row in zip(order, out[:, batch["input_ids"].shape[1] :].tolist()):
        eos = smollm.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        plain[j] = tok.decode(row[:cut], skip_special_tokens=True)
    assert ours == [plain[i] for i in range(3)]
    with ss.perturbed(smollm, ss.make_perturbation("noise", sigma=0.5), "blocks.*.resid_post"):
        zero = ss.generate(smollm, prompts, settings=settings, batch_size=3, row_params={"sigma": [0.0] * 3})
        b1 = [g.text for g in ss.generate(smollm, prompts, settings=settings, batch_size=1)]
        b3 = [g.text for g in ss.generate(smollm, prompts, settings=settings, batch_size=3)]
    assert [g.text for g in zero] == ours
    assert b1 == b3 and b1 != ours


def test_a_gguf_model_is_plain_and_trainable(smollm, tmp_path):
    """The converted GGUF carries no quantization entry: transformers' Trainer refused to fine-tune
    it as "purely quantized" (found running the QuadA defence on Qwen's GGUF)."""
    from safestress.train import FinetuneSettings, finetune

    model = smollm.ensure_weights()
    assert not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    try:
        summary = finetune(smollm, [("Say hi.", "Hi!")] * 2, tmp_path / "ft", FinetuneSettings(steps=1, batch_size=2))
        assert summary["train_loss"] > 0 and (tmp_path / "ft" / "model.safetensors").is_file()
    finally:  # the fixture is shared: put the weights back
        with torch.no_grad():
            for p, q in zip(model.parameters(), ss.load_model(str(SMOLLM)).ensure_weights().parameters()):
                p.copy_(q)
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before)


def test_readme_notebook_example_runs_as_written(smollm, monkeypatch, capsys):
    """The README's Python example, executed from the project root with fewer prompts and tokens,
    so the API a newcomer copies first cannot drift from the code."""
    import re

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    for full, small in (("limit=20", "limit=4"), ("max_new_tokens=64", "max_new_tokens=8")):
        assert full in code, f"README example no longer has {full}"
        code = code.replace(full, small)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'blocks.1.resid_post'" in out and "'blocks.2.resid_pre'" not in out
    p = float(re.search(r"exact McNemar p = ([0-9.]+)", out).group(1))
    assert 0.0 < p <= 1.0


def test_early_exit_keeps_every_verdict_on_smollm(smollm, tmp_path):
    """JailbreakBench on SmolLM2, clean and under noise: rows that stop once `refusal` has settled
    (its opening is written) get the verdicts a full-length run gives, with fewer tokens."""
    from safestress.report.labels import labelled

    frames = {}
    for early in (False, True):
        cfg = ss.build_config(
            models=[str(SMOLLM)],
            dataset=f"csv:{DATA / 'jbb_harmful.csv'}:Goal",
            limit=12,
            sigma=[0, 0.2],
            sites=["blocks.*.resid_post"],
            judge=["refusal"],
            max_new_tokens=48,
            batch_size=24,
            early_exit=early,
            store=str(tmp_path / f"{early}.db"),
            plot=False,
        )
        plan = ss.plan_sweep(cfg)
        plan.models[0].model = smollm.model  # the fixture's weights, not a second load
        plan.models[0].extra.pop("weights_loader", None)
        with ss.Store(cfg.store) as st:
            ss.execute(plan, st)
            frames[early] = labelled(plan.frame(st), st).sort_values(["key", "judge"]).reset_index(drop=True)
    full, early = frames[False], frames[True]
    assert full[["key", "judge", "label", "harmful"]].equals(early[["key", "judge", "label", "harmful"]])
    rows_full, rows_early = full.drop_duplicates("key"), early.drop_duplicates("key")
    assert rows_early["early_stop"].notna().sum() >= 12  # SmolLM2 complies: the opening settles `refusal`
    assert rows_early["n_tokens"].sum() < 0.8 * rows_full["n_tokens"].sum()
