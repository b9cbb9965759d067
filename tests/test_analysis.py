"""Analyses: perplexity, layer windows, MVA search, harmful-cluster drift and their commands."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
import torch

import safestress as ss
from safestress.analysis.drift import drift, fit_probe
from safestress.analysis.sweeps import MvaPoint, layer_windows, mva, refine_grid
from safestress.perturb import make_perturbation
from safestress.utility import load_corpus, perplexity, sequence_nll

from .test_cli import cli

TEXT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Natalia sold 48/2 = 24 clips in May. "
    "Natalia sold 48+24 = 72 clips altogether in April and May. "
) * 6


def test_perplexity_is_exp_mean_token_nll(tiny_llama):
    ids = tiny_llama.tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :200]
    with torch.no_grad():
        loss = tiny_llama.model(input_ids=ids, labels=ids).loss  # mean NLL of tokens 2..200
    assert perplexity(tiny_llama, TEXT, max_tokens=200, window=200) == pytest.approx(math.exp(float(loss)), rel=1e-4)
    # windows are independent: two windows of 100 = the mean over both windows' predicted tokens
    halves = []
    for part in (ids[:, :100], ids[:, 100:200]):
        with torch.no_grad():
            halves.append(float(tiny_llama.model(input_ids=part, labels=part).loss))
    assert perplexity(tiny_llama, TEXT, max_tokens=200, window=100, batch_size=2) == pytest.approx(
        math.exp(sum(halves) / 2), rel=1e-4
    )
    with ss.perturbed(tiny_llama, make_perturbation("gaussian", sigma=2.0), "blocks.*.mlp.act"):
        noisy = perplexity(tiny_llama, TEXT, max_tokens=200, window=100)
    assert noisy != pytest.approx(math.exp(sum(halves) / 2), rel=1e-3)


def test_sequence_nll_scores_each_sequence_as_it_would_alone(tiny_llama):
    ids = tiny_llama.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    sequences = [ids[:40], ids[5:12], ids[:1], [], ids[50:90]]  # uneven, padded to the longest in a batch
    batched = sequence_nll(tiny_llama.model, sequences, batch_size=3)
    for seq, (total, n) in zip(sequences, batched):
        if len(seq) < 2:
            assert (total, n) == (0.0, 0)  # nothing to predict: the first token is context only
            continue
        alone = torch.tensor([seq])
        with torch.no_grad():
            mean = float(tiny_llama.model(input_ids=alone, labels=alone).loss)
        assert n == len(seq) - 1
        assert total / n == pytest.approx(mean, rel=1e-4)


def test_corpus_sources(tmp_path, monkeypatch):
    f = tmp_path / "c.txt"
    f.write_text("hello world")
    assert load_corpus(str(f)) == "hello world"
    with pytest.raises(ss.SafestressError, match="not found"):
        load_corpus(str(tmp_path / "missing.txt"))
    monkeypatch.setenv("SAFESTRESS_DATA_DIR", str(tmp_path))
    (tmp_path / "wikitext-2-raw-v1-test.txt").write_text(" = Robert Boulter = \n")
    assert "Robert Boulter" in load_corpus("wikitext2")


def test_layer_windows_cover_every_layer():
    assert layer_windows(10, 4, "mlp.act") == ["blocks.0-3.mlp.act", "blocks.4-7.mlp.act", "blocks.8-9.mlp.act"]
    assert layer_windows(3, 1, "ln2.out") == ["blocks.0-0.ln2.out", "blocks.1-1.ln2.out", "blocks.2-2.ln2.out"]


def _pt(s, asr, ok=True):
    return MvaPoint(s, asr, asr - 0.1, asr + 0.1, 50, 10.0, 0.01, ok)


def test_mva_takes_the_admissible_maximum_and_refines_around_it():
    points = [_pt(0.1, 0.2), _pt(0.2, 0.5), _pt(0.4, 0.9, ok=False), _pt(0.8, 0.1)]
    best = mva(points)
    assert best is not None and best.strength == 0.2  # 0.4 has a higher rate but breaks the perplexity bound
    assert refine_grid(points, 1) == [0.15, 0.3]
    assert mva([_pt(0.1, 0.3, ok=False)]) is None and refine_grid([_pt(0.1, 0.3, ok=False)]) == []


def test_drift_metrics_see_harmful_points_move_into_the_benign_cluster():
    g = torch.Generator().manual_seed(0)
    d = 16
    harmful = torch.randn(40, d, generator=g) + 3.0
    benign = torch.randn(40, d, generator=g) - 3.0
    moved = harmful - 5.0  # most harmful points now sit on the benign side
    res = drift(harmful, benign, moved, benign, layer=3)
    assert res.probe_train_accuracy == 1.0 and res.harmful_called_benign_clean == 0.0
    assert res.harmful_called_benign_perturbed > 0.8
    assert res.centroid_distance_perturbed < res.centroid_distance_clean
    w, b = fit_probe(torch.cat([harmful, benign]), torch.cat([torch.ones(40), torch.zeros(40)]))
    assert bool(((harmful @ w + b) > 0).all()) and bool(((benign @ w + b) < 0).all())


def test_analyze_commands_end_to_end(tiny_dir, prompts_csv, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    db = tmp_path / "a.db"
    common = ["--limit", "4", "--max-new-tokens", "4", "--store", str(db), "--dataset", f"csv:{prompts_csv}:text"]
    res = cli("analyze", "layers", "-m", str(tiny_dir), "--strength", "0.5", "--window", "1", *common, "--out",
              str(tmp_path / "layers"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    layers = json.loads((tmp_path / "layers" / "layers.json").read_text())
    assert [w["sites"] for w in layers["windows"]] == ["blocks.0-0.mlp.act", "blocks.1-1.mlp.act"]
    assert (tmp_path / "layers" / "layers.png").stat().st_size > 0

    args = ["analyze", "tradeoff", "-m", str(tiny_dir), "--perturb", "teal", "--strength", "0,0.5",
            "--param", "calib_n=4", "--ppl", str(corpus), "--ppl-tokens", "128", *common]  # fmt: skip
    res = cli(*args, "--out", str(tmp_path / "trade"))
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "trade" / "tradeoff.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["ppl"] > 1 for r in rows) and rows[0]["ppl"] != rows[1]["ppl"]
    n_metrics = sqlite3.connect(db).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert n_metrics == 2
    again = cli(*args, "--out", str(tmp_path / "trade"))  # resumes: nothing generated or measured again
    assert again.returncode == 0
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == n_metrics
    # the export carries each condition's perplexity, so a document's table shows it from the file alone
    res = cli("export", str(tmp_path / "rows.parquet"), "--store", str(db))
    assert res.returncode == 0, res.stderr
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "rows.parquet")
    by_strength = frame.groupby("strength")["ppl"].agg(["min", "max"])
    assert list(by_strength["min"]) == list(by_strength["max"])  # one value per condition
    assert sorted(by_strength["min"]) == sorted(r["ppl"] for r in rows)

    res = cli("analyze", "mva", "-m", str(tiny_dir), "--grid", "0.1,1", "--refine", "1", "--ppl", str(corpus),
              "--ppl-tokens", "128", "--max-ppl-ratio", "100", *common, "--out", str(tmp_path / "mva"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    found = json.loads((tmp_path / "mva" / "mva.json").read_text())
    assert (
        found["mva"] is not None
        and found["refined"]
        and found["ppl_bound"] == pytest.approx(100 * found["clean"]["ppl"])
    )

    res = cli("analyze", "drift", "-m", str(tiny_dir), "--strength", "1", "--limit", "6", "--harmful",
              f"csv:{prompts_csv}:text", "--benign", "harmless-val", "--out", str(tmp_path / "drift"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert d["n_harmful"] == 6 and d["n_benign"] == 6 and 0 <= d["harmful_called_benign_perturbed"] <= 1


def test_analyze_bad_input_is_one_line(tiny_dir, tmp_path):
    res = cli("analyze", "mva", "-m", str(tiny_dir), "--grid", "0,1", "--store", str(tmp_path / "x.db"))
    assert res.returncode == 2 and "positive" in res.stderr and "Traceback" not in res.stderr
    res = cli("analyze", "layers", "-m", str(tiny_dir), "--strength", "1", "--window", "0")
    assert res.returncode == 2 and "--window" in res.stderr


def test_gsm8k_judge_scores_the_reference_solutions_correct(data_dir):
    from safestress.datasets import COT_INSTRUCTION, gsm8k_rows, load_dataset
    from safestress.judges import make_judge

    rows = gsm8k_rows()[:300]
    judge = make_judge("gsm8k")
    prompts = [f"{r['question']}\n\n{COT_INSTRUCTION}" for r in rows]
    verdicts = judge.judge(prompts, [r["answer"] for r in rows])
    assert all(v.label == "correct" for v in verdicts)
    shifted = judge.judge(prompts, [r["answer"] + "\nThe answer is 123456789." for r in rows])
    assert all(v.label == "wrong" for v in shifted)
    ds = load_dataset("gsm8k-cot", limit=3)
    assert (
        ds.items[0].prompt.endswith(COT_INSTRUCTION)
        and ds.items[0].meta["answer"] == rows[0]["answer"].split("####")[-1].strip()
    )
    safe = load_dataset("xstest-safe")
    assert len(safe.items) == 250 and all(i.meta["label"] == "safe" for i in safe.items)


def test_gsm8k_sweep_reads_references_from_the_sweeps_data_dir(tiny_dir, data_dir, tmp_path, monkeypatch):
    """The judge looks its references up where the sweep's datasets come from (a config's
    ``data-dir``), and does so while the plan is validated, before any generation."""
    monkeypatch.delenv("SAFESTRESS_DATA_DIR")
    monkeypatch.setenv("SAFESTRESS_CACHE_DIR", str(tmp_path / "empty-cache"))  # no cached download either
    common = dict(
        models=[str(tiny_dir)], dataset=["gsm8k-cot"], limit=2, sigma=[0.0], max_new_tokens=2, judge=["gsm8k"]
    )
    with pytest.raises(ss.SafestressError, match=r"gsm8k_test\.jsonl"):
        ss.plan_sweep(ss.build_config(data_dir=str(tmp_path / "nowhere"), store=str(tmp_path / "x.db"), **common))
    assert not (tmp_path / "x.db").exists()
    cfg = ss.build_config(data_dir=str(data_dir), store=str(tmp_path / "g.db"), **common)
    plan = ss.plan_sweep(cfg)
    with ss.Store(cfg.store) as store:
        assert ss.execute(plan, store)["generated"] == 2
        assert set(store.frame()["label"]) <= {"correct", "wrong"}


def test_a_failing_judge_keeps_the_generations(tiny_dir, prompts_csv, tmp_path):
    """Generations are stored even when a judge raises mid-sweep; the rerun judges them without
    generating again."""
    cfg = ss.build_config(models=[str(tiny_dir)], dataset=[f"csv:{prompts_csv}:text"], sigma=[0.0],
                          max_new_tokens=2, batch_size=3, judge=["refusal"], store=str(tmp_path / "f.db"))  # fmt: skip
    plan = ss.plan_sweep(cfg)
    real = plan.judges[0]

    class Broken(type(real)):
        def judge(self, prompts, responses):
            raise RuntimeError("judge crashed")

    plan.judges = [Broken()]
    with ss.Store(cfg.store) as store, pytest.raises(RuntimeError, match="judge crashed"):
        ss.execute(plan, store)
    # the sweep's hooks are gone while the error (and its traceback) is still alive
    model = plan.models[0].model
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    n_rows = sqlite3.connect(cfg.store).execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert n_rows == 3  # the first batch, generated before the judge failed
    with ss.Store(cfg.store) as store:
        counts = ss.execute(ss.plan_sweep(cfg), store)
        assert counts["stored_before"] == 3 and counts["generated"] == 3 and counts["judged_late"] == 3
        assert store.frame()["label"].notna().all()
