"""Studies: the packaged studies end to end on tiny models of two architectures, resuming after
SIGKILL inside a step, a finished study's rerun, and bad input that leaves finished steps intact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safestress.cli import app
from safestress.errors import SafestressError
from safestress.judges.base import Judge, Verdict
from safestress.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def family(tmp_path_factory, data_dir) -> list[str]:
    """A tiny Llama and a tiny Qwen2 with chat templates (random weights)."""
    from safestress.testing import save_tiny_model

    root = tmp_path_factory.mktemp("family")
    return [
        str(save_tiny_model(root / "tiny-llama", "llama", n_layers=2, hidden=64)),
        str(save_tiny_model(root / "tiny-qwen", "qwen2", n_layers=2, hidden=64)),
    ]


def _made(out: Path, step: str) -> dict:
    """A finished training step's runs (base model → arm → run folders), as steps read them."""
    from safestress.studies.steps import run_paths

    folder = next(out.glob(f"steps/{step}-*/done.json")).parent
    return run_paths(folder, json.loads((folder / "done.json").read_text())["record"]["models"])


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output; a refusal (a SafestressError the entry point prints as its one line) last."""
    result = runner.invoke(app, list(args))
    refused = f"error: {result.exception}" if isinstance(result.exception, SafestressError) else ""
    return result.exit_code, result.output + refused


def _main(run_cli):
    """``run_cli`` as (exit code, one error line): the real entry point's failure handling."""

    def run(*args: str) -> tuple[int, str]:
        proc = run_cli(*args)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 0 or len(lines) == 1, proc.stderr  # a failure is one line
        return proc.returncode, proc.stderr

    return run


def _snapshot(folder: Path) -> dict[str, str]:
    """Content hashes of a study folder's step records and of its stored rows."""
    out = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("steps/*/*")}
    with Store.open_existing(folder / "study.db") as st:
        out["rows"] = str(st.count())
    return out


def test_noise_study_end_to_end_then_reruns_with_nothing_regenerated(family, tmp_path):
    out = tmp_path / "noise"
    code, text = _run(
        "study", "run", "noise", "--model", family[0], "--model", family[1], "--scale", "test", "--out", str(out)
    )
    assert code == 0, text
    assert "5 step(s) run, 0 finished before" in text
    page = (out / "report" / "study.md").read_text()
    for title in ("first blocks", "by layer window", "relative", "ToxiGen", "GSM8K"):
        assert title in page
    # both models, the clean run and both symbolic windows (blocks 0 and all of a 2-block model)
    assert "| tiny-llama | jbb | clean |" in page and "| tiny-qwen | advbench | gaussian σ=0.5 @ blocks.0.resid" in page
    assert "Each model against `tiny-llama`" in page
    # the page's tables are recomputed from the per-prompt exports beside it
    code, text = _run("refresh-tables", str(out / "report" / "study.md"), "--check")
    assert code == 0, text
    before = _snapshot(out)
    code, text = _run(
        "study", "run", "noise", "--model", family[0], "--model", family[1], "--scale", "test", "--out", str(out)
    )
    assert code == 0, text
    assert "0 step(s) run, 5 finished before" in text and "rows generated" not in text
    assert _snapshot(out) == before
    code, text = _run("study", "report", str(out))
    assert code == 0 and (out / "report" / "study.md").read_text() == page


class _Scripted(Judge):
    """Refuses the harmful calibration prompts and answers the rest, so that a random-weight model
    yields both calibration sets (a real model's refusals are judged by a real judge)."""

    name = "scripted"
    version = "1"
    positive_label = "compliance"
    examples = ()
    harmful: frozenset[str] = frozenset()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        return [
            Verdict(1.0, "refusal", False) if p in self.harmful else Verdict(0.0, "compliance", True) for p in prompts
        ]


def _scripted_run(
    study: str, family, tmp_path: Path, monkeypatch, data_dir, judge: type, setting: str, *extra: str
) -> Path:
    """Run a packaged study at the test scale on both tiny models, with ``judge`` (a scripted
    judge that knows harmful-train's prompts) named by the scale setting ``setting``."""
    from safestress.datasets import load_dataset
    from safestress.judges import JUDGES

    _Scripted.harmful = frozenset(i.prompt for i in load_dataset("harmful-train", data_dir=data_dir).items)
    monkeypatch.setitem(JUDGES._entries, "scripted", judge)
    settings = tmp_path / "judge.yaml"
    settings.write_text(f"{setting}: scripted\n")
    out = tmp_path / study
    models = ["-m", family[0], "-m", family[1]]
    code, text = _run("study", "run", study, *models, "--scale", "test", "-c", str(settings), "--out", str(out), *extra)
    assert code == 0, text
    return out


def test_units_study_classifies_then_prunes_against_random_draws(family, tmp_path, monkeypatch, data_dir):
    out = _scripted_run("units", family, tmp_path, monkeypatch, data_dir, _Scripted, "calib_judge")
    page = (out / "report" / "study.md").read_text()
    assert "| tiny-llama | mlp |" in page and "| tiny-qwen | heads |" in page
    assert page.count("unit\\_class=random") >= 5 * 2  # five random draws per model, in each judge's table
    assert "unit\\_class=scu" in page
    assert "SCU among the random draws of its size, judge" in page
    assert "@ blocks.\\*.mlp.act,blocks.\\*.attn.z" in page  # pruned where the units sit
    assert page.count(" of 6 |") >= 2 * 2  # the classified set's rank among itself and five draws, per model and set
    record = json.loads(next(out.glob("steps/units-*/done.json")).read_text())["record"]
    assert set(record["models"]) == {"tiny-llama", "tiny-qwen"}
    # the fine-tuning steps: every arm trained twice per model, then compared over runs
    attack = json.loads(next(out.glob("steps/attack-*/done.json")).read_text())["record"]
    assert attack["dataset"] == "advbench" and attack["pairs"] == 4
    assert {arm: len(runs) for arm, runs in attack["models"]["tiny-qwen"].items()} == {
        "none": 2, "scu": 2, "scu-cu": 2, "random": 2
    }  # fmt: skip
    run = json.loads((Path(_made(out, "attack")["tiny-llama"]["scu-cu"][1]) / "finetune.json").read_text())
    assert run["settings"]["seed"] == 1 and run["classes"] == ["scu", "cu"] and run["frozen"]["units"]["mlp"] > 0
    none = json.loads((Path(_made(out, "attack")["tiny-llama"]["none"][0]) / "finetune.json").read_text())
    assert none["frozen"] is None and none["unit_map"] is None
    assert "The arms of `tiny-llama` against `none`, tested over runs" in page and "| scu-cu | jbb | clean |" in page
    assert "smallest possible value is 0.333 (2 vs 2 runs)" in page
    code, text = _run("refresh-tables", str(out / "report" / "study.md"), "--check")
    assert code == 0, text


def test_family_study_chains_chat_safety_sft_and_dpo_from_each_base(family, tmp_path, monkeypatch, data_dir):
    """The family study: each base model made a chat model (with the study's turn template), that
    run given safety SFT, that run DPO (refusals chosen over the chat model's answers), and the
    three evaluated."""
    out = _scripted_run("family", family, tmp_path, monkeypatch, data_dir, _Answered, "answer_judge")
    record = {
        s: json.loads(next(out.glob(f"steps/{s}-*/done.json")).read_text())["record"]
        for s in ("chat", "safety-sft", "dpo")
    }
    chat = _made(out, "chat")["tiny-qwen"]["chat"][0]
    assert "<start_of_turn>model" in json.dumps(json.loads((Path(chat) / "finetune.json").read_text())["chat_template"])
    from safestress.models import load_model

    assert "<start_of_turn>user\nhi<end_of_turn>" in load_model(chat, weights=False).format("hi")
    sft = _made(out, "safety-sft")[Path(chat).name]["sft"][0]
    assert json.loads((Path(sft) / "finetune.json").read_text())["model"].endswith(Path(chat).name)
    assert record["safety-sft"]["dataset"] == "safety-sft"
    facts = record["dpo"]["data"][Path(sft).name]
    # the rejected answers are the chat model's (the SFT run's ancestor), every one judged answered
    assert facts == {"harmful": 4, "harmful_answered": 4, "benign": 4, "answered_by": Path(chat).name}
    rows = (next(out.glob("steps/dpo-*")) / f"preferences-{Path(sft).name}.csv").read_text()
    assert "I can't" in rows or "I'm" in rows or "I must" in rows or "I cannot" in rows  # refusals chosen
    dpo = _made(out, "dpo")[Path(sft).name]["dpo"][0]
    summary = json.loads((Path(dpo) / "quada.json").read_text())
    assert summary["settings"]["perturbation"] == "none" and summary["settings"]["cluster_weight"] == 0
    page = (out / "report" / "study.md").read_text()
    assert f"| {Path(dpo).name} | jbb | clean |" in page and f"| {Path(chat).name} | harmless-val | clean |" in page
    code, text = _run("refresh-tables", str(out / "report" / "study.md"), "--check")
    assert code == 0, text

    # the folder moved and resumed from another working directory: nothing is redone
    moved = tmp_path / "elsewhere" / "family"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    monkeypatch.chdir(moved.parent)
    settings = ["-c", str(tmp_path / "judge.yaml")]
    args = ["study", "run", "family", "-m", family[0], "-m", family[1], "--scale", "test", *settings, "--out", "family"]
    code, text = _run(*args)
    assert code == 0 and text.count("finished before, skipped") == 4, text
    # --redo trains the step again from an empty folder; what it made before is kept beside
    (sft_folder,) = moved.glob("steps/safety-sft-*")
    code, text = _run(*args, "--redo", "safety-sft")
    assert code == 0 and "step safety-sft: its earlier output moved to" in text, text
    kept = next(moved.glob(f"steps/{sft_folder.name}.before-*"))
    assert (kept / Path(sft).name / "finetune.json").is_file()
    assert (sft_folder / Path(sft).name / "finetune.json").is_file() and (sft_folder / "done.json").is_file()
    # a redone sweep rewrites its page's files (its folder has the same name, its run is new)
    marker = moved / "report" / "variants" / ".step"
    before_redo = marker.read_text()
    code, text = _run(*args, "--redo", "variants")
    assert code == 0 and marker.read_text() != before_redo, text


class _Answered(_Scripted):
    """Labels every answer a compliance (a chat model with no safety training)."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        return [Verdict(0.0, "compliance", True) for _ in prompts]


def test_budget_study_aligns_through_ru_alone_against_every_weight_and_random_units(
    family, tmp_path, monkeypatch, data_dir
):
    """SSAH's alignment budget: units classified from the utility score alone (no refusals to
    score), then aligned through every weight, only RU, or as many random units, each run set
    against the model it was trained from."""
    out = _scripted_run("budget", family, tmp_path, monkeypatch, data_dir, _Scripted, "calib_judge")
    page = (out / "report" / "study.md").read_text()
    units = json.loads(next(out.glob("steps/units-*/done.json")).read_text())["record"]["models"]["tiny-qwen"]
    assert units["classified_by"].startswith("utility alone") and units["calibration"]["safety"] is None
    assert units["units"]["mlp"]["scu"] == 0 and units["units"]["mlp"]["ru"] > 0
    assert "Unit classes from the utility score alone" in page
    align = json.loads(next(out.glob("steps/align-*/done.json")).read_text())["record"]
    assert align["dataset"] == "harmful-refusals"
    assert {arm: len(runs) for arm, runs in align["models"]["tiny-llama"].items()} == {
        "all": 2, "ru": 2, "random-budget": 2
    }  # fmt: skip
    ru = json.loads((Path(_made(out, "align")["tiny-qwen"]["ru"][0]) / "finetune.json").read_text())
    assert ru["train_only"] and ru["classes"] == ["ru"] and ru["frozen"]["mode"] == "train-only"
    assert ru["frozen"]["trainable_parameters"] > 0 and ru["frozen"]["units"]["mlp"] > 0
    assert "The arms of `tiny-qwen` against `all`, tested over runs" in page
    assert "Each run of `tiny-qwen` against the model before training" in page
    aligned = page.split("Step `aligned`")[1]
    qwen_runs = aligned.split("Each run of `tiny-qwen`")[1].split("<!-- /safestress-table -->")[0]
    assert "tiny-qwen-ru-s0" in qwen_runs and "tiny-llama-" not in qwen_runs  # each base with its own runs only
    code, text = _run("refresh-tables", str(out / "report" / "study.md"), "--check")
    assert code == 0, text


def test_a_training_step_the_disk_cannot_hold_stops_in_one_line_and_keeps_its_runs(
    family, tmp_path, monkeypatch, data_dir
):
    """Every run of a training step is a whole model; when the finished one says the rest will not
    fit, the step stops before the next run, in one line, and a rerun with room trains only the rest."""
    import shutil
    from collections import namedtuple

    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 1024))
    with pytest.raises(AssertionError, match="more runs of") as failed:
        _scripted_run("budget", family, tmp_path, monkeypatch, data_dir, _Scripted, "calib_judge")
    refusal = str(failed.value).split("error: ")[1].splitlines()[0]
    assert "GB free under" in refusal and "finished runs are kept" in refusal
    assert next((tmp_path / "budget").glob("steps/units-*/done.json")).is_file()
    (align,) = (tmp_path / "budget").glob("steps/align-*")
    (first,) = [f for f in align.iterdir() if f.is_dir()]  # the first run, published whole; nothing after it
    assert not (align / "done.json").exists() and (first / "finetune.json").is_file()
    stamp = (first / "finetune.json").stat().st_mtime_ns
    monkeypatch.setattr(shutil, "disk_usage", real)
    _scripted_run("budget", family, tmp_path, monkeypatch, data_dir, _Scripted, "calib_judge")
    assert (align / "done.json").is_file() and (first / "finetune.json").stat().st_mtime_ns == stamp


def test_drop_weights_frees_a_training_step_once_its_readers_are_done(family, tmp_path, monkeypatch, data_dir):
    """--drop-weights: each run of a training step loses its weights once every step that needs the
    training step has finished; the page, a rerun and the records are unchanged, and a step that
    wants the weights again says how to get them in one line."""
    out = _scripted_run("budget", family, tmp_path, monkeypatch, data_dir, _Scripted, "calib_judge")
    (align,) = out.glob("steps/align-*")
    assert list(align.glob("*/*.safetensors"))  # kept without the option
    settings = tmp_path / "judge.yaml"
    args = ["study", "run", "budget", "-m", family[0], "-m", family[1], "--scale", "test", "-c", str(settings)]
    code, text = _run(*args, "--out", str(out), "--drop-weights")  # a finished study: the option frees it
    assert code == 0 and "weights of its runs dropped" in text, text
    runs = [f for f in align.iterdir() if f.is_dir()]
    assert len(runs) == 2 * (2 + 2 + 2)  # two models, three arms, two runs each
    for run in runs:
        dropped = json.loads((run / "weights-dropped.json").read_text())
        assert dropped["after"] == ["aligned"] and any(name.endswith(".safetensors") for name in dropped["files"])
        assert not list(run.glob("*.safetensors")) and (run / "finetune.json").is_file()
        assert (run / "config.json").is_file()
    page = (out / "report" / "study.md").read_text()
    assert "Each run of `tiny-qwen` against the model before training" in page
    code, text = _run(*args, "--out", str(out))
    assert code == 0, text  # finished: nothing needs the weights
    assert "0 step(s) run, 3 finished before" in text and (out / "report" / "study.md").read_text() == page
    code, text = _run(*args, "--out", str(out), "--redo", "aligned")
    assert code != 0 and "were dropped (--drop-weights" in text and "--redo align " in text


def test_approximations_study_sets_perplexity_beside_rates_and_tests_drift(family, tmp_path, monkeypatch, data_dir):
    """Operators beside perplexity, layer windows, drift; then the MVA, QuadA trained under it
    against plain DPO over runs, and both under unseen approximations and on XSTest's safe prompts."""
    out = _scripted_run("approximations", family, tmp_path, monkeypatch, data_dir, _Answered, "answer_judge")
    page = (out / "report" / "study.md").read_text()
    for operator in ("polynomial preset=bumblebee", "polynomial preset=bolt", "teal", "cats", "quant", "smoothquant"):
        assert operator in page, operator
    assert "omniquant" in page and "granularity=per-tensor" in page.replace("\\", "")
    assert "ppl" in page  # perplexity beside every condition's rate
    # the layer windows of a 2-block model: the first, middle and last block
    assert all(f"blocks.{b}.mlp.act" in page.replace("\\", "") for b in (0, 1))
    drift = page.split("drifting into the benign cluster")[1]
    assert "| tiny-llama | 8 / 8 |" in drift and "| tiny-qwen | 8 / 8 |" in drift and "McNemar" in drift
    assert "calib=" in drift and "calib\\_n=32" in drift  # the perturbation's repr, escaped for Markdown
    found = json.loads(next(out.glob("steps/mva-*/done.json")).read_text())["record"]["models"]
    # every answer counts as complied here, so the MVA is the weakest strength within the bound
    assert {m: (r["strength"], r["sites"]) for m, r in found.items()} == {
        "tiny-llama": (0.5, "blocks.0.resid_post"), "tiny-qwen": (0.5, "blocks.0.resid_post")
    }  # fmt: skip
    runs = _made(out, "defend")["tiny-qwen"]
    assert {arm: len(r) for arm, r in runs.items()} == {"dpo": 2, "quada": 2}
    quada = json.loads((Path(runs["quada"][1]) / "quada.json").read_text())["settings"]
    dpo = json.loads((Path(runs["dpo"][0]) / "quada.json").read_text())["settings"]
    assert quada["perturbation"] == "gaussian" and quada["params"] == {"sigma": 0.5, "scale": "relative"}
    assert quada["sites"] == "blocks.0.resid_post" and quada["cluster_weight"] == 0.1
    assert dpo["perturbation"] == "none" and dpo["cluster_weight"] == 0
    assert (
        "most vulnerable approximation" in page
        and "| tiny-qwen | gaussian (relative) @ `blocks.0.resid_post` |" in page
    )
    defended = page.split("Step `defended`")[1].split("Step `over-refusal`")[0]
    assert "The arms of `tiny-qwen` against `dpo`, tested over runs" in defended and "cats" in defended
    assert "xstest-safe" in page.split("Step `over-refusal`")[1]
    code, text = _run("refresh-tables", str(out / "report" / "study.md"), "--check")
    assert code == 0, text


def test_windows_and_scale_settings_resolve_per_model():
    from safestress.studies.spec import substitute
    from safestress.studies.steps import window_sites

    # a quarter of the depth, at least one block; "all" is every block whatever the depth
    assert window_sites(["first", "middle", "last", "all"], 30, "resid_post", 0.25) == [
        "blocks.0-7.resid_post",
        "blocks.11-18.resid_post",
        "blocks.22-29.resid_post",
        "blocks.*.resid_post",
    ]
    assert window_sites(["first", "last"], 2, "mlp.act", 0.25) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    with pytest.raises(SafestressError, match="unknown layer window 'top'; known: first, middle, last, all"):
        window_sites(["top"], 8, "resid_post", 0.25)
    assert substitute({"a": "$n", "b": ["$n", "x"], "c": "$"}, {"n": 3, "": 0}, "here") == {
        "a": 3,
        "b": [3, "x"],
        "c": 0,
    }
    with pytest.raises(SafestressError, match=r"here: setting '\$m' is not given by the scale"):
        substitute({"a": "$m"}, {"n": 3}, "here")


_TWO_STEPS = """
name: two-steps
title: two sweeps
requires: [chat]
scales:
  test: {tokens: 4}
steps:
  - name: first
    kind: sweep
    with: {dataset: jbb, limit: 2, strengths: [0, 0.5], sites: [blocks.0.resid_post], max_new_tokens: $tokens}
  - name: second
    kind: sweep
    with: {dataset: advbench, limit: 60, strengths: [0, 0.5, 1.0], sites: [blocks.0.resid_post],
           max_new_tokens: 24, batch_size: 1}
"""


def _stored(out: Path) -> int:
    """Rows in a running study's store (read-only, beside the writer)."""
    import sqlite3

    db = out / "study.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_study_killed_in_its_second_step_resumes_there(family, tmp_path):
    study = tmp_path / "two.yaml"
    study.write_text(_TWO_STEPS)
    out = tmp_path / "two"
    cmd = [sys.executable, "-c", "from safestress.cli import main; main()"]
    args = ["study", "run", str(study), "--model", family[0], "--scale", "test", "--out", str(out)]
    proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 240
    try:
        while _stored(out) <= 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # until the second step has stored rows of its own
        assert proc.poll() is None, "the study finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    first = next(out.glob("steps/first-*/done.json"))
    assert not list(out.glob("steps/second-*/done.json"))
    stamp = first.stat().st_mtime_ns
    with Store.open_existing(out / "study.db") as st:
        partial = st.count()
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "step first: finished before, skipped" in done.stderr
    assert first.stat().st_mtime_ns == stamp
    with Store.open_existing(out / "study.db") as st:
        assert st.count() == 2 * 2 + 60 * 3
    kept = [line for line in done.stderr.splitlines() if "already stored" in line]
    assert partial > 4 and int(kept[0].split(", ")[1].split()[0]) == partial - 4  # resumed from its own rows


def test_bad_input_is_one_line_and_leaves_finished_steps_intact(family, tmp_path, run_cli):
    study = tmp_path / "two.yaml"
    study.write_text(_TWO_STEPS.replace("limit: 60", "limit: 2").replace(", batch_size: 1", ""))
    out = tmp_path / "two"
    run = _main(run_cli)
    code, text = run("study", "run", str(study), "--model", family[0], "--scale", "test", "--out", str(out))
    assert code == 0, text
    before = _snapshot(out)

    code, text = run("study", "run", "nosuch", "--model", family[0], "--out", str(out))
    known = "known: approximations, budget, family, noise, units"
    assert code == 2 and "unknown study 'nosuch'" in text and known in text

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        _TWO_STEPS.replace("kind: sweep\n    with: {dataset: advbench", "kind: sweeep\n    with: {dataset: advbench")
    )
    code, text = run("study", "run", str(bad), "--model", family[0], "--scale", "test", "--out", str(out))
    assert code == 2 and "unknown kind 'sweeep'" in text and "known: drift, finetune, mva, prefer, sweep, units" in text

    bare = tmp_path / "bare"
    shutil.copytree(family[0], bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in bare.glob("chat_template.*"):
        extra.unlink()
    code, text = run("study", "run", str(study), "--model", str(bare), "--scale", "test", "--out", str(out))
    assert code == 2 and "cannot run study 'two-steps'" in text and "no chat template" in text

    code, text = run("study", "run", str(study), "--model", family[0], "--scale", "huge", "--out", str(out))
    assert code == 2 and "no scale 'huge'" in text

    settings = tmp_path / "settings.yaml"
    settings.write_text("prompts: 20\n")
    code, text = run(
        "study", "run", str(study), "-m", family[0], "--scale", "test", "-c", str(settings), "--out", str(out)
    )
    assert code == 2 and "has no setting prompts; its settings: tokens" in text

    code, text = run(
        "study", "run", str(study), "-m", family[0], "--scale", "test", "--redo", "third", "--out", str(out)
    )
    assert code == 2 and "has no step third; its steps: first, second" in text

    code, text = run("study", "run", "noise", "--model", family[0], "--scale", "test", "--out", str(out))
    assert code == 2 and "holds study 'two-steps'" in text
    assert _snapshot(out) == before


def test_an_arm_at_the_mva_takes_its_models_record_or_says_why_it_cannot(tmp_path):
    """at_mva reads the mva step's record for the starting model or the study model it descends
    from; a model with no admissible strength, or a step that is not a need, is a one-line error."""
    from safestress.studies.mva_step import mva_options
    from safestress.studies.spec import StepSpec
    from safestress.studies.steps import StepContext

    found = tmp_path / "mva-abc"
    found.mkdir()
    record = {
        "tiny-llama": {"perturb": "gaussian", "scale": "relative", "sites": "blocks.0.resid_post", "strength": 0.4},
        "tiny-qwen": {"perturb": "gaussian", "scale": "relative", "sites": "blocks.0.resid_post", "strength": None},
    }
    (found / "done.json").write_text(json.dumps({"record": {"models": record}}))
    step = StepSpec.model_validate({"name": "defend", "kind": "prefer", "needs": ["mva"]})
    ctx = StepContext(step, [], tmp_path, tmp_path / "s.db", {"mva": found}, 0)
    want = {"perturb": "gaussian", "sigma": 0.4, "scale": "relative", "sites": "blocks.0.resid_post"}
    assert mva_options(ctx, "mva", "/runs/tiny-llama") == want
    assert mva_options(ctx, "mva", "/runs/steps/chat-1/tiny-llama-chat-s0") == want  # a run of that model
    with pytest.raises(SafestressError, match="no strength of gaussian kept tiny-qwen's perplexity within"):
        mva_options(ctx, "mva", "tiny-qwen")
    with pytest.raises(SafestressError, match="found no MVA for tiny-gpt2"):
        mva_options(ctx, "mva", "tiny-gpt2")
    with pytest.raises(SafestressError, match="at_mva 'other' must be one of its needs"):
        mva_options(ctx, "other", "tiny-llama")


def test_a_step_key_covers_the_contents_of_the_data_it_reads(tmp_path, data_dir):
    """Changing a data file changes the key of every step that reads it (so it reruns, into a new
    folder), and a step that names no dataset is keyed by its kind's defaults."""
    from safestress.studies.runner import step_data, step_key
    from safestress.studies.spec import StepSpec, StudySpec

    csv = tmp_path / "p.csv"
    csv.write_text("prompt\nhello\nworld\n")
    other = tmp_path / "q.csv"
    other.write_text("prompt\nagain\n")
    spec = {"dataset": [f"csv:{csv}:prompt"], "variants": [{}, {"dataset": f"csv:{other}:prompt"}]}
    study = StudySpec(name="t", title="t", scales={"test": {}}, steps=[{"name": "s", "kind": "sweep", "with": spec}])
    step = study.steps[0]

    def key() -> str:
        return step_key(study, step, "test", [], [], step_data(step, str(data_dir)))

    first = key()
    assert key() == first  # the same contents, the same key
    csv.write_text("prompt\nhello\nthere\n")
    changed = key()
    other.write_text("prompt\nonce more\n")  # a variant's own dataset counts too
    assert len({first, changed, key()}) == 3
    units = StepSpec(name="u", kind="units")
    assert set(step_data(units, str(data_dir))) == {"harmful:harmful-train", "benign:harmless-val[-512:]"}
    assert set(step_data(StepSpec(name="m", kind="mva"), str(data_dir))) == {"dataset:advbench", "ppl:harmless-val"}
    with pytest.raises(SafestressError, match="not found"):
        step_data(StepSpec(name="s", kind="sweep", settings={"dataset": "csv:/no/such.csv:prompt"}))
