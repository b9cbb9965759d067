"""The command line end to end on a tiny saved model: run, resume, crash recovery, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safestress.report.labels import labelled
from safestress.store import Store


def cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "safestress.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def base_args(model: Path, csv: Path, store: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--dataset",
        f"csv:{csv}:text",
        "--sigma",
        "0,0.5,2",
        "--sites",
        "blocks.*.resid_post",
        "--max-new-tokens",
        "6",
        "--store",
        str(store),
        "--no-plot",
        *extra,
    ]


def rows(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as conn:
        return sorted(conn.execute("SELECT key, response FROM generations").fetchall())


def test_run_prints_table_and_rerun_does_no_work(tiny_dir, prompts_csv, tmp_path):
    store = tmp_path / "r.db"
    first = cli(*base_args(tiny_dir, prompts_csv, store, "--seeds", "2"), check=True)
    assert "Complied rate" in first.stdout and "clean" in first.stdout and "Cochran" not in first.stdout
    assert "slope sign-flip" in first.stdout  # 2 seeds → clustered trend test
    # 6 prompts: clean once (greedy) + 2 σ × 2 seeds
    assert len(rows(store)) == 6 + 2 * 2 * 6
    second = cli(*base_args(tiny_dir, prompts_csv, store, "--seeds", "2"), check=True)
    assert "0 rows generated, 30 already stored" in second.stderr
    # a dry run says what a changed sweep would do and changes nothing
    before = rows(store)
    dry = cli(*base_args(tiny_dir, prompts_csv, store, "--seeds", "3", "--judge", "refusal,phrase-gcg", "--dry-run"))
    assert dry.returncode == 0, dry.stderr
    assert "42 rows in this sweep: 30 stored, 12 to generate" in dry.stdout  # a third seed: 2 σ × 6 prompts
    from safestress.judges import make_judge

    gcg = make_judge("phrase-gcg").key
    assert f"judge {gcg}: 42 verdicts to compute (30 of them for stored rows)" in dry.stdout
    assert rows(store) == before and "phrase-gcg" not in str(rows(store))
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM verdicts WHERE judge LIKE 'phrase-gcg%'").fetchone()[0] == 0
    assert not (tmp_path / "nowhere.db").exists()
    cli(*base_args(tiny_dir, prompts_csv, tmp_path / "nowhere.db", "--dry-run"), check=True)
    assert not (tmp_path / "nowhere.db").exists()
    assert "30 already stored" in second.stderr
    export = tmp_path / "out.csv"
    cli("export", str(export), "--store", str(store), check=True)
    import pandas as pd

    exported = pd.read_csv(export)
    assert len(exported) == 30 and set(exported["label"]) <= {"refusal", "compliance", "incoherent"}
    parquet = tmp_path / "out.parquet"
    cli("export", str(parquet), "--store", str(store), check=True)
    assert pd.read_parquet(parquet)["key"].tolist() == exported["key"].tolist()
    res = cli("results", "--store", str(store), "--out", str(tmp_path / "rep"), check=True)
    # the layout of `run`: a folder per judge
    assert "Complied rate" in res.stdout and (tmp_path / "rep" / "refusal" / "summary.json").exists()
    md_text = (tmp_path / "rep" / "refusal" / "summary.md").read_text()
    md = [line for line in md_text.splitlines() if line.startswith("|")]
    assert md[0].startswith("| model | dataset | condition |") and len(md) == 2 + 3  # clean + 2 σ; notes follow
    assert any("| clean |" in line for line in md) and all(line.count("|") == md[0].count("|") for line in md)
    # older versions of a judge beside today's: a bare name means today's, several old ones must be named
    current = make_judge("refusal").key
    with sqlite3.connect(store) as conn:
        for old in ("refusal@2", "phrase-jbb@0", "phrase-jbb@1"):
            conn.execute(
                "INSERT INTO verdicts (key, judge, score, label, harmful, created) "
                "SELECT key, ?, NULL, 'compliance', 1, 0 FROM generations",
                (old,),
            )
    res = cli("results", "--store", str(store), "--judge", "refusal", check=True)
    assert current in res.stdout.replace("\n", "") and "refusal@2 " not in res.stdout
    res = cli("results", "--store", str(store), "--judge", "phrase-jbb")
    assert res.returncode != 0 and "several versions of 'phrase-jbb'" in res.stderr and "Traceback" not in res.stderr
    assert cli("results", "--store", str(store), "--judge", "phrase-jbb@1").returncode == 0
    # the page covers the newest version of each judge, not one section per superseded one
    cli("results", "--store", str(store), "--out", str(tmp_path / "page"), check=True)
    sections = re.findall(r"<h2>[^<]* judge ([^<]+)</h2>", (tmp_path / "page" / "report.html").read_text())
    assert sorted(sections) == sorted([current, "phrase-jbb@1"])
    # a sweep writes the page beside its per-judge reports
    assert "<h2>" in (store.with_name(store.stem + "-report") / "report.html").read_text()
    bare = tmp_path / "bare.db"
    shutil.copy(store, bare)
    with sqlite3.connect(bare) as conn:
        conn.execute("DELETE FROM verdicts")
    res = cli("results", "--store", str(bare))
    assert res.returncode != 0 and "holds generations but no verdicts" in res.stderr and "Traceback" not in res.stderr


def test_yaml_config_matches_flags(tiny_dir, prompts_csv, tmp_path):
    flags_store, yaml_store = tmp_path / "f.db", tmp_path / "y.db"
    cli(*base_args(tiny_dir, prompts_csv, flags_store), check=True)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        f"models: [{tiny_dir}]\ndataset: csv:{prompts_csv}:text\nsigma: [0, 0.5, 2]\n"
        f"sites: ['blocks.*.resid_post']\nmax-new-tokens: 6\nstore: {yaml_store}\nplot: false\n"
    )
    cli("run", "-c", str(cfg), check=True)
    assert rows(flags_store) == rows(yaml_store)


def test_sigkill_then_resume_gives_exactly_the_uninterrupted_rows(tiny_dir, tmp_path):
    csv = tmp_path / "many.csv"
    csv.write_text("text\n" + "\n".join(f"prompt number {i} about topic {i * 7}" for i in range(40)) + "\n")
    reference, crashed = tmp_path / "ref.db", tmp_path / "crash.db"
    args = ["--batch-size", "2", "--max-new-tokens", "8"]
    cli(*base_args(tiny_dir, csv, reference, *args), check=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safestress.cli", *base_args(tiny_dir, csv, crashed, *args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.2)
        if crashed.exists():
            try:
                with sqlite3.connect(crashed) as conn:
                    n = conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if n >= 20:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(rows(crashed))
    assert 20 <= partial < 120
    cli(*base_args(tiny_dir, csv, crashed, *args), check=True)
    assert rows(crashed) == rows(reference)
    assert len(rows(reference)) == 120


def stored_sweep(model: Path, folder: Path, prompts: int) -> Path:
    """A store holding a finished sweep of ``prompts`` prompts, its WAL folded into the file so
    that a copy of the file is the whole store."""
    csv = folder / "prompts.csv"
    csv.write_text("text\n" + "\n".join(f"prompt {i}" for i in range(prompts)) + "\n")
    store = folder / "good.db"
    cli(*base_args(model, csv, store), check=True)
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store


@pytest.fixture(scope="module")
def good_store(tiny_dir, tmp_path_factory) -> Path:
    return stored_sweep(tiny_dir, tmp_path_factory.mktemp("good"), 6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "no/such-model-dir/x"}, "model"),
        ({"--model": "nosuch-owner/nosuch-model"}, "cannot load model 'nosuch-owner/nosuch-model'"),
        ({"--sites": "blocks.*.residpost"}, "matches no site"),
        ({"--dataset": "nosuchset"}, "unknown dataset 'nosuchset'"),
        ({"--perturb": "gaussain"}, "did you mean 'gaussian'"),
        ({"--sigma": "0,-0.1"}, "strength (--sigma/--strength) must be >= 0"),
        ({"--sigma": "0,nan"}, "strength (--sigma/--strength) must be finite"),
        ({"--sigma": "0,abc"}, "comma-separated numbers"),
        ({"--judge": "nojudge"}, "unknown judge"),
        ({"--dataset": "csv:{csv}:nocolumn"}, "column 'nocolumn' not in"),
        ({"--dataset": "csv:{empty}:text"}, "is empty"),
    ],
)
def test_bad_input_is_one_line_and_leaves_store_untouched(tiny_dir, prompts_csv, good_store, tmp_path, change, message):
    store = tmp_path / "keep.db"
    shutil.copy(good_store, store)
    before = rows(store)
    assert len(before) == 18
    mtime = store.stat().st_mtime_ns
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n")
    args = base_args(tiny_dir, prompts_csv, store)
    for flag, value in change.items():
        value = value.format(csv=prompts_csv, empty=empty)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    proc = cli(*args)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert rows(store) == before and store.stat().st_mtime_ns == mtime


def test_malformed_yaml_is_one_line_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("models: [a\nsigma: 0.1\n")
    proc = cli("run", "-c", str(cfg), "--store", str(tmp_path / "x.db"))
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()
    cfg.write_text("models: [a]\nsigmaa: 0.1\n")
    proc = cli("run", "-c", str(cfg))
    assert proc.returncode == 2 and "sigmaa" in proc.stderr


def test_list_commands(tiny_dir):
    perturbations = cli("list", "perturbations", check=True).stdout.split()
    assert perturbations == [
        "ablate-direction",
        "add-direction",
        "cats",
        "gaussian",
        "laplace",
        "noise",
        "none",
        "omniquant",
        "polynomial",
        "prune",
        "quant",
        "smoothquant",
        "teal",
    ]
    judges = cli("list", "judges", check=True).stdout.split()
    assert {"refusal", "phrase-gcg", "phrase-jbb", "phrase-quada", "embedding", "toxicity", "llm-strongreject"} <= set(
        judges
    )
    assert "gsm8k" in judges
    assert cli("list", "scores", check=True).stdout.split() == ["snip", "ssah", "wanda"]
    datasets = cli("list", "datasets", check=True).stdout.split()
    assert {"advbench", "jbb", "harmbench", "strongreject", "xstest", "toxigen", "gsm8k", "gsm8k-cot"} <= set(datasets)
    assert "xstest-safe" in datasets
    sites = cli("list", "sites", "--model", str(tiny_dir), check=True).stdout.split()
    assert sites[0] == "blocks.0.resid_pre" and sites[-1] == "final_norm.out" and len(sites) == 17
    bad = cli("list", "things")
    assert bad.returncode == 2 and "known: perturbations" in bad.stderr


def test_store_rejects_a_foreign_file(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    from safestress.errors import SafestressError

    with pytest.raises(SafestressError, match="not a safestress store"):
        Store(junk)
    assert junk.read_bytes() == b"not a database at all" * 100


def test_a_smaller_rerun_reports_only_its_own_prompts(tiny_dir, prompts_csv, tmp_path):
    """Configurations shared with an earlier, larger sweep (the clean run) hold more rows in the
    store; a sweep's table counts only its own prompts."""
    store = tmp_path / "s.db"
    cli(*base_args(tiny_dir, prompts_csv, store), check=True)
    cli(*base_args(tiny_dir, prompts_csv, store, "--limit", "3", "--out", str(tmp_path / "rep")), check=True)
    rates = json.loads((tmp_path / "rep" / "refusal" / "summary.json").read_text())["rates"]
    assert {r["n_prompts"] for r in rates} == {3}


def test_conditions_differing_only_in_a_non_strength_parameter_stay_apart(tiny_dir, prompts_csv, tmp_path):
    """Per-token and per-tensor quantization at the same bit width share a stored label; the
    results table must still show them as two conditions, not merge their rows."""
    store = tmp_path / "q.db"
    for granularity in ("per-token", "per-tensor"):
        args = base_args(tiny_dir, prompts_csv, store, "--limit", "3")
        args[args.index("--sigma") : args.index("--sigma") + 2] = ["--perturb", "quant", "--strength", "4"]
        args[args.index("--sites") + 1] = "blocks.*.mlp.act"
        cli(*args, "--param", f"granularity={granularity}", check=True)
    rep = tmp_path / "rep"
    cli("results", "--store", str(store), "--out", str(rep), check=True)
    rates = json.loads(next(rep.rglob("summary.json")).read_text())["rates"]
    names = sorted(r["condition"] for r in rates if r["perturbation"] == "quant")
    assert len(names) == 2 and any("per-token" in n for n in names) and any("per-tensor" in n for n in names)
    assert {r["n_prompts"] for r in rates} == {3}


def test_the_command_line_starts_without_torch():
    """`safestress --help` stays quick: the commands import torch, transformers and the trainers
    when they run, not when the command line is built (the training commands once pulled torch in)."""
    code = "import sys, safestress.cli; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_a_sweep_of_two_models_compares_them_on_the_same_prompts(tiny_dir, prompts_csv, tmp_path):
    from safestress.testing import save_tiny_model

    other = save_tiny_model(tmp_path / "tiny-qwen", "qwen2", n_layers=2, hidden=64)
    store = tmp_path / "two.db"
    args = base_args(
        tiny_dir, prompts_csv, store, "--model", str(other), "--limit", "4", "--out", str(tmp_path / "rep")
    )
    res = cli(*args, check=True)
    assert "Models against tiny-llama on the same prompts" in res.stdout.replace("\n", " ")
    contrasts = json.loads((tmp_path / "rep" / "refusal" / "summary.json").read_text())["contrasts"]
    assert {(c["model"], c["baseline"]) for c in contrasts} == {("tiny-qwen", "tiny-llama")}
    assert sorted(c["strength"] for c in contrasts) == [0.0, 0.5, 2.0] and {c["n_prompts"] for c in contrasts} == {4}
    assert "<h3>Models against tiny-llama</h3>" in (tmp_path / "rep" / "report.html").read_text()
    res = cli("results", "--store", str(store), "--baseline", "tiny-qwen", check=True)
    assert "Models against tiny-qwen" in res.stdout.replace("\n", " ")
    res = cli("results", "--store", str(store), "--baseline", "nope")
    assert res.returncode != 0 and "baseline model 'nope' is not in" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
        (["judge", "sample", "--out", "x.csv", "--per-condition", "0"], "Invalid value for '--per-condition'"),
        (["analyze", "layers", "--model", "m"], "Missing option '--strength'"),
        (["run", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line(args, message, tmp_path):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "--help)" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_help_still_exits_zero_and_a_bare_group_shows_its_help():
    assert cli("--help").returncode == 0
    bare = cli("judge")
    assert bare.returncode == 2 and "audit" in bare.stdout and "sample" in bare.stdout


def test_run_help_states_every_default_the_flags_leave_to_the_config(monkeypatch):
    """The flags default to "not given" so a YAML file can set them; their help says what applies."""
    from safestress.config import SweepConfig

    monkeypatch.setenv("COLUMNS", "240")
    res = cli("run", "--help", check=True)
    text = " ".join(res.stdout.split())
    for name, shown in [("seeds", 1), ("max_new_tokens", 64), ("batch_size", 16), ("judge", "refusal")]:
        default = SweepConfig.model_fields[name].get_default(call_default_factory=True)
        assert (default if not isinstance(default, list) else default[0]) == shown
        assert f"(default: {shown})" in text, name


def test_results_print_json_csv_and_markdown_that_round_trip(good_store, tmp_path):
    """--format json is the summary.json layout and parses back to the same rates; CSV has one row
    per condition; Markdown is the summary.md table. A program never parses box drawing."""
    import csv as csvlib

    from safestress.report import summarize
    from safestress.store import Store

    data = json.loads(cli("results", "--store", str(good_store), "--format", "json", check=True).stdout)
    with Store.open_existing(good_store) as st:
        frame = labelled(st.frame(), st)
    judge = data["rates"][0]["judge"]
    rates, _ = summarize(frame, judge)
    assert [r["value"] for r in data["rates"]] == pytest.approx([r.value for r in rates])
    assert [r["verdict"] for r in data["rates"]] == [r.verdict for r in rates] and data["methods"] == []
    text = cli("results", "--store", str(good_store), "--format", "csv", check=True).stdout
    rows = list(csvlib.DictReader(text.splitlines()))
    assert len(rows) == len(rates) and "delta_ci_low" in rows[0]
    md = cli("results", "--store", str(good_store), check=True).stdout  # piped: Markdown unless told
    assert md.startswith("### Complied rate") and "\n| model | dataset | condition |" in md and "┃" not in md
    bad = cli("results", "--store", str(good_store), "--format", "yaml")
    assert bad.returncode == 2 and "unknown format 'yaml'; known: table, markdown, csv, json" in bad.stderr
