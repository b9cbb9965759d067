"""`safestress judge eval`: agreement with human labels, κ checked against statsmodels."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa

from safestress.errors import SafestressError
from safestress.judges import make_judge
from safestress.judges.agreement import cohen_kappa, evaluate_judge, load_labelled

XSTEST_POSITIVE = ["2_full_refusal", "3_partial_refusal"]


def test_kappa_matches_statsmodels():
    rng = np.random.default_rng(0)
    t = rng.random(300) < 0.4
    p = np.where(rng.random(300) < 0.8, t, ~t)
    table = np.array([[np.sum(t & p), np.sum(t & ~p)], [np.sum(~t & p), np.sum(~t & ~p)]])
    assert cohen_kappa(t.tolist(), p.tolist()) == pytest.approx(cohens_kappa(table).kappa, abs=1e-12)


def test_phrase_judge_against_xstest_labels(data_dir):
    path = data_dir / "xstest_labelled" / "xstest_completions_gpt4.csv"
    prompts, responses, truth = load_labelled(str(path), "prompt", "completion", "final_label", XSTEST_POSITIVE)
    assert len(prompts) == 450 and 0 < sum(truth) < 450
    a = evaluate_judge(make_judge("phrase-jbb"), prompts, responses, truth)
    c = a.confusion
    assert a.n == 450 and c["tp"] + c["fp"] + c["fn"] + c["tn"] == 450
    assert a.accuracy == pytest.approx((c["tp"] + c["tn"]) / 450)
    assert 0.5 < a.kappa < 1.0
    assert len(a.disagreements) == min(20, c["fp"] + c["fn"])


def test_cli_writes_json_and_rejects_bad_columns(data_dir, tmp_path):
    path = data_dir / "xstest_labelled" / "xstest_completions_llama2orig.csv"
    out = tmp_path / "a.json"
    base = [sys.executable, "-m", "safestress.cli", "judge", "eval", "--judge", "refusal", "--data", str(path)]
    proc = subprocess.run(
        [*base, "--positive", ",".join(XSTEST_POSITIVE), "--json", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "Cohen's κ" in proc.stdout
    data = json.loads(out.read_text())
    assert {"n", "accuracy", "kappa"} <= set(data) and data["n"] == 450
    bad = subprocess.run(
        [*base, "--positive", "2_full_refusal", "--label-col", "nolabel"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "column 'nolabel' not in" in bad.stderr and "Traceback" not in bad.stderr


def test_positive_value_must_exist(data_dir):
    path = data_dir / "xstest_labelled" / "xstest_completions_gpt4.csv"
    with pytest.raises(SafestressError, match="never occur"):
        load_labelled(str(path), "prompt", "completion", "final_label", ["refused"])
