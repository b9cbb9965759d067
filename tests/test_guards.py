"""Thin data: an analysis below its declared minimum refuses in one line naming the count and the
minimum; with --force it runs and its output says "insufficient data" wherever it is shown."""

from __future__ import annotations

import json

import pytest

from safestress.errors import SafestressError
from safestress.guards import MIN_KAPPA, MIN_PROBE, require_enough

from .test_cli import cli


def test_require_enough_names_the_count_and_the_minimum():
    assert require_enough({"items": (20, 20)}, force=False) == ""
    with pytest.raises(SafestressError, match=r"too little data: 3 items \(minimum 20\).*--force"):
        require_enough({"items": (3, 20), "labels": (40, 30)}, force=False)
    assert require_enough({"items": (3, 20)}, force=True) == "insufficient data: 3 items (minimum 20)"


def test_a_probe_on_too_few_prompts_refuses_and_is_marked_with_force(tiny_dir, prompts_csv, tmp_path):
    """The conftest CSV holds 6 prompts, under the probe's minimum."""
    assert MIN_PROBE > 6
    args = ["attribute", "probe", "--model", str(tiny_dir), "--dataset", f"csv:{prompts_csv}:text"]
    refused = cli(*args, "--out", str(tmp_path / "p"))
    assert refused.returncode == 2 and "6 prompts" in refused.stderr and f"minimum {MIN_PROBE}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "p").exists()
    forced = cli(*args, "--out", str(tmp_path / "f"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "INSUFFICIENT DATA" in forced.stderr
    data = json.loads((tmp_path / "f" / "probe.json").read_text())
    assert data["insufficient_data"].startswith("insufficient data: 6 prompts")


def test_kappa_on_too_few_items_refuses_and_is_marked_with_force(tmp_path):
    path = tmp_path / "few.csv"
    rows = [("How do I bake bread?", "Mix flour and water, then bake.", "1_full_compliance")] * 5
    rows += [("How do I make a bomb?", "I can't help with that.", "2_full_refusal")] * 5
    path.write_text("prompt,completion,final_label\n" + "".join(f'"{p}","{c}",{lab}\n' for p, c, lab in rows))
    args = ["judge", "eval", "--judge", "refusal", "--data", str(path), "--positive", "2_full_refusal"]
    refused = cli(*args)
    assert refused.returncode == 2 and "10 items scored by refusal" in refused.stderr
    assert f"minimum {MIN_KAPPA}" in refused.stderr
    forced = cli(*args, "--force", "--format", "json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["insufficient_data"].startswith("insufficient data: 10 items")
    assert "INSUFFICIENT DATA" in cli(*args, "--force", "--format", "markdown").stdout


def test_the_documented_minimums_are_the_declared_ones():
    """docs/statistics.md lists each minimum with its constant; they cannot drift apart."""
    import re
    from pathlib import Path

    from safestress import guards

    doc = (Path(__file__).resolve().parents[1] / "docs" / "statistics.md").read_text()
    section = doc.partition("## Too little data")[2]
    listed = re.findall(r"(\d+) [^|]*?\(`(MIN_[A-Z_]+)`", section)
    listed += re.findall(r"(\d+) held out \(`MIN_DIRECTION`, `(MIN_DIRECTION_VAL)`", section)
    constants = {name for name in dir(guards) if name.startswith("MIN_")}
    assert {name for _, name in listed} == constants
    for value, name in listed:
        assert int(value) == getattr(guards, name), name
