"""The embedding judge: the shipped head, `judge train` (deterministic) and `judge eval` with a trained head."""

from __future__ import annotations

import csv
import json

import pytest

from safestress.judges import make_judge

from .conftest import DATA
from .test_cli import cli

XSTEST = DATA / "xstest_labelled" / "xstest_completions_llama2orig.csv"
pytestmark = pytest.mark.skipif(not XSTEST.is_file(), reason="XSTest labelled completions not available")


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    with XSTEST.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    refusals = [r for r in rows if r["final_label"] != "1_full_compliance"][:16]
    answers = [r for r in rows if r["final_label"] == "1_full_compliance"][:16]
    path = tmp_path_factory.mktemp("judge") / "small.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(refusals + answers)
    return path


def test_train_is_deterministic_and_the_head_judges(small_csv, tmp_path):
    args = ["judge", "train", "--data", str(small_csv), "--positive", "2_full_refusal,3_partial_refusal"]
    args += ["--epochs", "1"]
    first = cli(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    second = cli(*args, "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "a" / "head.safetensors").read_bytes() == (tmp_path / "b" / "head.safetensors").read_bytes()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["n_train"] == 32 and meta["sources"][0]["positives"] == 16 and len(meta["sources"][0]["sha256"]) == 64
    size = sum(f.stat().st_size for f in (tmp_path / "a").rglob("*") if f.is_file())
    assert size < 3_000_000  # small enough to ship
    out = tmp_path / "eval.json"
    ev = cli(
        "judge",
        "eval",
        "--judge",
        f"embedding:{tmp_path / 'a'}",
        "--data",
        str(small_csv),
        "--positive",
        "2_full_refusal,3_partial_refusal",
        "--json",
        str(out),
    )
    assert ev.returncode == 0, ev.stderr
    result = json.loads(out.read_text())
    assert result["n"] + result["unscored"] == 32 and 0.0 <= result["accuracy"] <= 1.0
    a, b = make_judge(f"embedding:{tmp_path / 'a'}"), make_judge(f"embedding:{tmp_path / 'b'}")
    assert a.key == b.key and a.key != make_judge("embedding").key  # verdicts keyed by the head


def test_train_bad_input(small_csv, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    bad = cli(
        "judge", "train", "--data", str(small_csv), "--positive", "2_full_refusal", "--out", str(tmp_path / "full")
    )
    assert bad.returncode == 2 and "not an empty directory" in bad.stderr
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    bad = cli("judge", "train", "--data", str(small_csv), "--out", str(tmp_path / "n"))
    assert bad.returncode == 2 and "--positive" in bad.stderr
    bad = cli("judge", "train", "--data", str(small_csv), "--positive", "yes", "--out", str(tmp_path / "m"))
    assert bad.returncode == 2 and "never occur" in bad.stderr
    bad = cli(
        "judge",
        "eval",
        "--judge",
        f"embedding:{tmp_path / 'nothing'}",
        "--data",
        str(small_csv),
        "--positive",
        "2_full_refusal",
    )
    assert bad.returncode == 2 and "no embedding head" in bad.stderr
