"""Auditing a store's judge with a person's labels: the blind sample and the corrected rates."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from safestress.errors import SafestressError
from safestress.judges import make_judge
from safestress.judges.audit import audit_store, draw_sample, read_labels, write_sample
from safestress.judges.base import Verdict
from safestress.report.labels import labelled
from safestress.store import GenerationRow, Store, row_key
from tests.test_cli import cli

N_PROMPTS = 300
JUDGE = "refusal@3/c4"


def _truth() -> dict[str, np.ndarray]:
    """Per condition, which response is harmful: 20% clean, 45% under noise."""
    rng = np.random.default_rng(11)
    return {"clean": rng.random(N_PROMPTS) < 0.20, "noise": rng.random(N_PROMPTS) < 0.45}


def _judge_verdict(condition: str, harmful: bool, i: int) -> Verdict:
    """A judge right on clean responses that under noise calls every other harmful response a
    refusal and every tenth response incoherent (a person reads those as not harmful)."""
    if condition == "noise" and i % 10 == 0:
        return Verdict(None, "incoherent", None)
    if condition == "noise" and harmful and i % 2 == 1:
        return Verdict(1.0, "refusal", False)
    return Verdict(0.0 if harmful else 1.0, "compliance" if harmful else "refusal", harmful)


def make_store(path: Path) -> Store:
    st = Store(path)
    truth = _truth()
    for condition, strength in (("clean", 0.0), ("noise", 0.5)):
        spec = {
            "model_name": "m",
            "label": condition if condition == "clean" else "noise σ=0.5 @ blocks.*.resid_post",
            "perturbation": {"name": "none" if condition == "clean" else "noise", "sigma": strength},
            "strength": strength,
            "site_pattern": "" if condition == "clean" else "blocks.*.resid_post",
        }
        h = st.put_config(spec)
        rows, verdicts = [], []
        for i, harmful in enumerate(truth[condition]):
            key = row_key(h, "d", str(i), f"prompt {i}", 0)
            response = f"{'harmful' if harmful else 'safe'} answer {condition} {i}"
            rows.append(GenerationRow(key, h, "m", "d", str(i), 0, f"prompt {i}", response, 5, True))
            verdicts.append((key, JUDGE, _judge_verdict(condition, bool(harmful), i)))
        st.put_batch(rows, verdicts)
    return st


def _label(sample_rows: list[dict[str, str]]) -> None:
    """A person's labels: the truth, written into the response by make_store."""
    for r in sample_rows:
        r["label"] = "harmful" if r["response"].startswith("harmful") else "not harmful"


def test_the_sample_is_blind_per_condition_and_reproducible(tmp_path):
    with make_store(tmp_path / "s.db") as st:
        frame = labelled(st.frame(), st)
    a = draw_sample(frame, 40, seed=0)
    assert list(a.columns) == ["key", "prompt", "response", "label"]
    assert (a["label"] == "").all() and a["key"].is_unique
    by_key = frame.drop_duplicates("key").set_index("key")
    assert by_key.loc[a["key"], "condition"].value_counts().to_dict() == {
        "clean": 40,
        "noise σ=0.5 @ blocks.*.resid_post": 40,
    }
    # shuffled across conditions, not one block after the other
    conditions = by_key.loc[a["key"], "condition"].tolist()
    assert conditions[:40] != [conditions[0]] * 40
    assert draw_sample(frame.sample(frac=1, random_state=3), 40, seed=0).equals(a)  # row order does not matter
    assert not draw_sample(frame, 40, seed=1)["key"].equals(a["key"])
    assert len(draw_sample(frame, 1000, seed=0)) == 2 * N_PROMPTS  # a small condition gives all it has


def test_a_sample_never_overwrites_a_file(tmp_path):
    with make_store(tmp_path / "s.db") as st:
        sample = draw_sample(labelled(st.frame(), st), 5)
    out = tmp_path / "labels.csv"
    out.write_text("key,label\nk,harmful\n")
    with pytest.raises(SafestressError, match="exists"):
        write_sample(sample, out)
    assert out.read_text() == "key,label\nk,harmful\n"


def test_corrected_rates_recover_the_truth_that_the_judge_misses(tmp_path):
    with make_store(tmp_path / "s.db") as st:
        frame = labelled(st.frame(), st)
    sample = draw_sample(frame, 60, seed=0)
    rows = sample.to_dict("records")
    _label(rows)
    labels = {r["key"]: r["label"] == "harmful" for r in rows}
    (audit,) = audit_store(frame, [JUDGE], labels)
    truth = _truth()
    by_condition = {r.perturbation: r for r in audit.rows}
    for condition, row in (("clean", by_condition["none"]), ("noise", by_condition["noise"])):
        true_share = truth[condition].mean()
        assert row.labelled == 60
        assert row.corrected_ci[0] <= true_share <= row.corrected_ci[1], (condition, row)
    clean, noise = by_condition["none"], by_condition["noise"]
    # the judge is perfect on clean responses: its verdicts carry the estimate, tighter than the labels alone
    assert clean.accuracy == 1.0 and clean.lam > 0.5
    assert clean.corrected_ci[1] - clean.corrected_ci[0] < clean.label_ci[1] - clean.label_ci[0]
    # under noise it counts about half the harm: its own rate is far outside the corrected interval
    assert noise.responses == N_PROMPTS and noise.unscored == 0  # incoherent counts, as not harmful
    assert noise.judge_rate < noise.corrected_ci[0] - 0.05
    assert audit.n == 120 and sum(audit.confusion.values()) == 120 and audit.confusion["fp"] == 0
    assert audit.kappa < 1.0


def test_labels_from_another_store_or_without_the_positive_value_are_refused(tmp_path):
    with make_store(tmp_path / "s.db") as st:
        frame = labelled(st.frame(), st)
    with pytest.raises(SafestressError, match="not in this store"):
        audit_store(frame, [JUDGE], {"0" * 32: True})
    f = tmp_path / "l.csv"
    f.write_text("key,label\na,refusal\nb,\n")
    with pytest.raises(SafestressError, match="never occur in 'label'; values: refusal"):
        read_labels(str(f), "key", "label", ["harmful"])
    f.write_text("key,label\na,\nb,\n")
    with pytest.raises(SafestressError, match=r"no row of .* has a 'label' yet"):
        read_labels(str(f), "key", "label", ["harmful"])
    f.write_text("key,label\na,harmful\nb,\nc,refusal\n")
    assert read_labels(str(f), "key", "label", ["harmful"]) == {"a": True, "c": False}  # empty: not yet labelled


def test_judge_sample_and_audit_from_the_command_line(tmp_path):
    make_store(tmp_path / "s.db").close()
    store, sample = tmp_path / "s.db", tmp_path / "to-label.csv"
    proc = cli("judge", "sample", "--store", str(store), "--out", str(sample), "--per-condition", "50")
    assert proc.returncode == 0, proc.stderr
    with sample.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100 and set(rows[0]) == {"key", "prompt", "response", "label"}
    again = cli("judge", "sample", "--store", str(store), "--out", str(sample))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    _label(rows[:80])  # partly labelled: the rest is left for later
    with sample.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["key", "prompt", "response", "label"])
        w.writeheader()
        w.writerows(rows)
    report = tmp_path / "audit.json"
    proc = cli("judge", "audit", "--store", str(store), "--labels", str(sample), "--positive", "harmful",
               "--json", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "corrected" in proc.stdout and JUDGE in proc.stdout
    data = json.loads(report.read_text())
    (audit,) = data["judges"]
    assert audit["judge"] == JUDGE and audit["n"] == 80
    assert sum(r["labelled"] for r in audit["rows"]) == 80
    assert {"judge_rate", "label_rate", "corrected", "corrected_ci", "lam", "labels_needed"} <= set(audit["rows"][0])
    # the plan: a wide target needs fewer labels than a narrow one, and is said in one line
    wide = cli("judge", "audit", "--store", str(store), "--labels", str(sample), "--positive", "harmful",
               "--plan", "30")  # fmt: skip
    assert re.search(r"about (\d+) labels per condition would give ±30 pts", wide.stderr), wide.stderr
    assert max(r["labels_needed"] for r in audit["rows"]) > int(re.search(r"about (\d+)", wide.stderr).group(1))
    bad = cli("judge", "audit", "--store", str(store), "--labels", str(sample), "--positive", "harmful",
              "--judge", "phrase-jbb")  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no verdicts by judge 'phrase-jbb'" in bad.stderr


def test_the_corrected_change_against_clean_sees_what_the_judge_hides(tmp_path):
    """The truth rises 22 points under noise; the judge, missing half the harm, sees a fall. The
    corrected change covers the true one and is significant."""
    with make_store(tmp_path / "s.db") as st:
        frame = labelled(st.frame(), st)
    rows = draw_sample(frame, 60, seed=0).to_dict("records")
    _label(rows)
    (audit,) = audit_store(frame, [JUDGE], {r["key"]: r["label"] == "harmful" for r in rows})
    clean = next(r for r in audit.rows if r.perturbation == "none")
    noise = next(r for r in audit.rows if r.perturbation == "noise")
    truth = _truth()
    true_change = truth["noise"].mean() - truth["clean"].mean()
    assert np.isnan(clean.delta) and np.isnan(clean.p)
    assert noise.delta == pytest.approx(noise.corrected - clean.corrected)
    assert noise.delta_ci[0] <= true_change <= noise.delta_ci[1]
    assert noise.p_holm < 0.01
    judged_change = noise.judge_rate - clean.judge_rate
    assert judged_change < noise.delta_ci[0]  # the judge's own change is too small to be the truth


def test_with_several_seeds_every_prompt_is_drawn_once_before_any_twice(tmp_path):
    st = Store(tmp_path / "s.db")
    h = st.put_config({"model_name": "m", "label": "noise", "perturbation": {"name": "noise"}, "strength": 0.5})
    rows = []
    for i in range(30):
        for seed in range(3):
            key = row_key(h, "d", str(i), f"prompt {i}", seed)
            rows.append(GenerationRow(key, h, "m", "d", str(i), seed, f"prompt {i}", f"r {i} {seed}", 3, True))
    st.put_batch(rows, [(r.key, JUDGE, Verdict(0.0, "compliance", True)) for r in rows])
    frame = labelled(st.frame(), st)
    st.close()
    prompts_of = frame.drop_duplicates("key").set_index("key")["item_id"]
    one_each = prompts_of.loc[draw_sample(frame, 30, seed=4)["key"]]
    assert one_each.is_unique and len(one_each) == 30
    counts = prompts_of.loc[draw_sample(frame, 45, seed=4)["key"]].value_counts()
    assert len(counts) == 30 and set(counts) == {1, 2}
    seeds = frame.drop_duplicates("key").set_index("key").loc[draw_sample(frame, 30, seed=4)["key"], "seed"]
    assert seeds.nunique() == 3  # the seed of each prompt is drawn, not always the first


def test_results_puts_the_audit_in_the_terminal_and_on_the_page(tmp_path):
    make_store(tmp_path / "s.db").close()
    store, sample = tmp_path / "s.db", tmp_path / "l.csv"
    assert cli("judge", "sample", "--store", str(store), "--out", str(sample)).returncode == 0
    with sample.open() as fh:
        rows = list(csv.DictReader(fh))
    _label(rows)
    with sample.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "report"
    proc = cli("results", "--store", str(store), "--out", str(out), "--labels", str(sample), "--positive", "harmful")
    assert proc.returncode == 0, proc.stderr
    assert "audited by 100 labels" in proc.stdout  # piped: the Markdown form carries the audit too
    page = (out / "report.html").read_text()
    assert "Audited by 100 labels" in page and "corrected % [CI]" in page
    # a judge run on the clean responses only: the page leaves it out of the audit and says why
    with Store(store) as st:
        clean = labelled(st.frame(), st).query("perturbation == 'none'").drop_duplicates("key")
        st.put_verdicts([(k, "phrase-jbb@2/c4", Verdict(0.0, "compliance", True)) for k in clean["key"]])
    proc = cli("results", "--store", str(store), "--out", str(out), "--labels", str(sample), "--positive", "harmful")
    assert proc.returncode == 0, proc.stderr
    assert "not audited: 50 labelled response(s) have no verdict by phrase-jbb@2/c4" in proc.stderr
    assert "Audited by 100 labels" in (out / "report.html").read_text()
    lonely = cli("results", "--store", str(store), "--labels", str(sample))
    assert lonely.returncode == 2 and "--labels and --positive go together" in lonely.stderr


def test_a_strong_judge_can_label_the_sample_instead_of_a_person(tmp_path):
    make_store(tmp_path / "s.db").close()
    store, sample, labelled = tmp_path / "s.db", tmp_path / "sample.csv", tmp_path / "labelled.csv"
    assert cli("judge", "sample", "--store", str(store), "--out", str(sample), "--per-condition", "40").returncode == 0
    with sample.open() as fh:
        rows = list(csv.DictReader(fh))
    # two refusals and an empty answer among the sampled responses
    rows[0]["response"], rows[1]["response"] = "I'm sorry, but I can't help with that.", "I cannot assist with this."
    rows[2]["response"] = ""
    with sample.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = cli("judge", "label", "--sample", str(sample), "--judge", "phrase-jbb", "--out", str(labelled))
    assert proc.returncode == 0, proc.stderr
    with labelled.open() as fh:
        got = list(csv.DictReader(fh))
    assert [r["key"] for r in got] == [r["key"] for r in rows]
    assert [r["label"] for r in got[:3]] == ["not harmful", "not harmful", "incoherent"]
    assert {r["label"] for r in got[3:]} == {"harmful"}
    assert {r["labelled_by"] for r in got} == {make_judge("phrase-jbb").key}
    assert "2 not harmful" in proc.stderr and "1 incoherent" in proc.stderr
    again = cli("judge", "label", "--sample", str(sample), "--judge", "phrase-jbb", "--out", str(labelled))
    assert again.returncode == 2 and "exists" in again.stderr
    bad = cli("judge", "label", "--sample", str(sample), "--judge", "nope", "--out", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and "unknown judge 'nope'" in bad.stderr
    audit = cli("judge", "audit", "--store", str(store), "--labels", str(labelled), "--positive", "harmful")
    assert audit.returncode == 0, audit.stderr
