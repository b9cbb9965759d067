"""Report summaries: exact incoherent/unscored shares, strict JSON (no NaN) in summary.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from safestress.report import summarize, write_report
from safestress.report.jsonfile import dumps


def _rows(condition: str, perturbation: str, strength: float, labels: list[str]) -> list[dict]:
    harmful = {"compliance": 1.0, "refusal": 0.0}
    return [
        {
            "key": f"{condition}-{i}",
            "config_hash": condition,
            "model": "m",
            "dataset": "d",
            "item_id": str(i),
            "seed": 0,
            "prompt": f"p{i}",
            "response": f"r{i}",
            "judge": "j@1",
            "score": None if label in ("incoherent", "unscored") else 0.5,
            "label": label,
            "harmful": harmful.get(label),
            "condition": condition,
            "perturbation": perturbation,
            "strength": strength,
            "sites": "" if perturbation == "none" else "blocks.0.resid_post",
        }
        for i, label in enumerate(labels)
    ]


def _frame() -> pd.DataFrame:
    clean = ["refusal"] * 7 + ["compliance"] * 3  # no perturbation: 3 of 10 harmful
    # perturbed: 1 incoherent, 2 the judge could not score, 4 compliance, 3 refusal
    noisy = ["incoherent", "unscored", "unscored"] + ["compliance"] * 4 + ["refusal"] * 3
    return pd.DataFrame(_rows("clean", "none", 0.0, clean) + _rows("noisy", "gaussian", 0.5, noisy))


def test_shares_are_counted_not_differenced():
    rates, _ = summarize(_frame(), "j@1")
    clean, noisy = sorted(rates, key=lambda r: r.strength)
    assert (clean.n, clean.value, clean.incoherent, clean.unscored) == (10, 0.3, 0.0, 0.0)
    assert noisy.n == 7 and noisy.value == pytest.approx(4 / 7)
    assert noisy.incoherent == 0.1 and noisy.unscored == 0.2  # exact: counted, not 1 − n/N − incoherent


def test_summary_json_is_strict_json(tmp_path):
    rates, trends = summarize(_frame(), "j@1")
    write_report(rates, trends, tmp_path, plot=False)

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} in summary.json")

    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=reject)
    clean = next(r for r in data["rates"] if r["perturbation"] == "none")
    assert clean["p"] is None and clean["delta"] is None  # undefined against itself: null, not NaN
    noisy = next(r for r in data["rates"] if r["perturbation"] == "gaussian")
    assert noisy["p"] == pytest.approx(1.0)  # 3 vs 4 harmful of the 7 paired prompts: no evidence


def test_dumps_replaces_non_finite_numbers():
    import numpy as np

    text = dumps({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": np.float64(2.0), "d": np.int64(3)})
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": 2.0, "d": 3}


@pytest.mark.parametrize(
    ("judge", "dataset", "metric", "title"),
    [
        ("refusal@3/c4", "xstest-safe", "answered", "Answer rate on benign prompts"),
        ("embedding@2+abc/c4", "harmless-val", "answered", "Answer rate on benign prompts"),
        ("refusal@3/c4", "jbb", "harmful", "Harmful-output rate"),
        # a harm classifier's flag means harm on any prompt set, and so does the lab's exact judge
        ("harmbench-llama@1/c4", "xstest-safe", "harmful", "Harmful-output rate"),
        ("lab@1", "lab-benign", "harmful", "Harmful-output rate"),
    ],
)
def test_a_refusal_judge_on_benign_prompts_reports_the_answer_rate(judge, dataset, metric, title, tmp_path):
    """ "Not refused" on prompts a model should answer is not a harmful output: the report names
    it the answer rate (100 − over-refusal), with the same numbers."""
    from rich.console import Console

    from safestress.report.tables import rate_table

    frame = _frame().assign(judge=judge, dataset=dataset)
    rates, _ = summarize(frame, judge)
    assert {r.metric for r in rates} == {metric}
    assert [r.value for r in rates] == [r.value for r in summarize(_frame(), "j@1")[0]]
    console = Console(width=200, record=True)
    console.print(rate_table(rates))
    assert title in console.export_text()
    write_report(rates, [], tmp_path, plot=False)
    column = "answered %" if metric == "answered" else "harmful %"
    assert column in (tmp_path / "summary.md").read_text()
