"""`safestress judge eval`: agreement with human labels, κ checked against statsmodels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa

from safestress.errors import SafestressError
from safestress.judges import make_judge
from safestress.judges.agreement import cohen_kappa, compare_kappa, evaluate_judge, kappa_interval, load_labelled

XSTEST_POSITIVE = ["2_full_refusal", "3_partial_refusal"]


def test_kappa_matches_statsmodels():
    rng = np.random.default_rng(0)
    t = rng.random(300) < 0.4
    p = np.where(rng.random(300) < 0.8, t, ~t)
    table = np.array([[np.sum(t & p), np.sum(t & ~p)], [np.sum(~t & p), np.sum(~t & ~p)]])
    assert cohen_kappa(t.tolist(), p.tolist()) == pytest.approx(cohens_kappa(table).kappa, abs=1e-12)


def _confusion(t, p):
    return {"tp": int(np.sum(t & p)), "fp": int(np.sum(~t & p)), "fn": int(np.sum(t & ~p)), "tn": int(np.sum(~t & ~p))}


def _rater(rng, t, accuracy):
    return np.where(rng.random(t.size) < accuracy, t, ~t)


def test_kappa_interval_is_statsmodels_and_covers_the_true_kappa():
    rng = np.random.default_rng(1)
    t = rng.random(450) < 0.17  # XSTest Mistral-Instruct's refusal share
    p = _rater(rng, t, 0.92)
    c = _confusion(t, p)
    res = cohens_kappa([[c["tp"], c["fn"]], [c["fp"], c["tn"]]])
    assert kappa_interval(c) == pytest.approx((res.kappa_low, res.kappa_upp), abs=1e-9)
    low99, high99 = kappa_interval(c, 0.99)
    assert low99 < res.kappa_low < res.kappa < res.kappa_upp < high99
    # coverage: the true κ of this rater model (a huge sample) lies in about 95% of the intervals
    big_t = rng.random(2_000_000) < 0.17
    true_kappa = cohen_kappa(big_t, _rater(rng, big_t, 0.92))
    hits = 0
    for _ in range(400):
        t = rng.random(300) < 0.17
        low, high = kappa_interval(_confusion(t, _rater(rng, t, 0.92)))
        hits += low <= true_kappa <= high
    assert 0.91 <= hits / 400 <= 0.98
    # one rater with one class only: κ has no large-sample variance
    assert np.isnan(kappa_interval({"tp": 5, "fp": 0, "fn": 5, "tn": 0})).all()


def test_compare_kappa_is_a_paired_bootstrap_of_the_difference():
    rng = np.random.default_rng(2)
    t = rng.random(450) < 0.2
    good, poor = _rater(rng, t, 0.95), _rater(rng, t, 0.85)
    d = compare_kappa(t.tolist(), good.tolist(), poor.tolist(), resamples=1999, seed=3)
    assert d.n == 450
    assert d.difference == pytest.approx(cohen_kappa(t, good) - cohen_kappa(t, poor))
    assert 0 < d.ci[0] < d.difference < d.ci[1] and d.p_value < 0.01
    # the same percentile interval by hand: resample items, both judges and the label together
    idx = np.random.default_rng(4).integers(0, 450, size=(1999, 450))
    diffs = [cohen_kappa(t[i], good[i]) - cohen_kappa(t[i], poor[i]) for i in idx]
    assert d.ci == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=0.02)
    # reversed order: the mirrored result; same seed: the same result
    r = compare_kappa(t.tolist(), poor.tolist(), good.tolist(), resamples=1999, seed=3)
    assert r.difference == pytest.approx(-d.difference) and r.ci[1] < 0
    assert compare_kappa(t.tolist(), good.tolist(), poor.tolist(), resamples=1999, seed=3) == d
    # identical verdicts differ by nothing; items either judge left unscored are dropped from both
    assert compare_kappa(t.tolist(), good.tolist(), good.tolist()).as_dict() == {
        "n": 450,
        "kappa_difference": 0.0,
        "ci": [0.0, 0.0],
        "p_value": 1.0,
    }
    partial = [None] * 50 + poor[50:].tolist()
    dropped = compare_kappa(t.tolist(), good.tolist(), partial, resamples=999)
    assert dropped.n == 400
    assert dropped.difference == pytest.approx(cohen_kappa(t[50:], good[50:]) - cohen_kappa(t[50:], poor[50:]))
    with pytest.raises(SafestressError, match="at least two items"):
        compare_kappa([True, False], [None, True], [True, None])


def test_phrase_judge_against_xstest_labels(data_dir):
    path = data_dir / "xstest_labelled" / "xstest_completions_gpt4.csv"
    prompts, responses, truth = load_labelled(str(path), "prompt", "completion", "final_label", XSTEST_POSITIVE)
    assert len(prompts) == 450 and 0 < sum(truth) < 450
    a = evaluate_judge(make_judge("phrase-jbb"), prompts, responses, truth)
    c = a.confusion
    assert a.n == 450 and c["tp"] + c["fp"] + c["fn"] + c["tn"] == 450
    assert a.accuracy == pytest.approx((c["tp"] + c["tn"]) / 450)
    assert 0.5 < a.kappa < 1.0
    assert a.kappa_ci[0] < a.kappa < a.kappa_ci[1]
    assert len(a.verdicts) == 450 and sum(v is True for v in a.verdicts) == c["tp"] + c["fp"]
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
    assert {"n", "accuracy", "kappa", "kappa_ci"} <= set(data) and data["n"] == 450
    assert "compared" not in data
    # several judges: each later one against the first, on the same items
    both = out.with_name("both.json")
    proc = subprocess.run(
        [*base, "--judge", "phrase-jbb", "--positive", ",".join(XSTEST_POSITIVE), "--json", str(both)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "κ − first's" in proc.stdout and "phrase-jbb" in proc.stdout
    report = json.loads(both.read_text())
    assert report["kappa"] == data["kappa"] and len(report["compared"]) == 1
    # --format: JSON on standard output is the --json file; CSV has a row per judge; piped, Markdown
    args = [*base, "--judge", "phrase-jbb", "--positive", ",".join(XSTEST_POSITIVE)]
    printed = subprocess.run([*args, "--format", "json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == report
    printed = subprocess.run([*args, "--format", "csv"], capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(printed.splitlines()))
    assert [r["judge"] for r in rows] == [report["judge"], report["compared"][0]["judge"]]
    assert float(rows[1]["kappa_minus_first"]) == pytest.approx(report["compared"][0]["vs_first"]["kappa_difference"])
    piped = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert piped.startswith("### judges vs final\\_label") and "| phrase-jbb" in piped and "┃" not in piped
    other = report["compared"][0]
    assert other["vs_first"]["kappa_difference"] == pytest.approx(other["kappa"] - data["kappa"])
    low, high = other["vs_first"]["ci"]
    assert low <= other["vs_first"]["kappa_difference"] <= high and 0 < other["vs_first"]["p_value"] <= 1
    bad = subprocess.run(
        [*base, "--positive", "2_full_refusal", "--label-col", "nolabel"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "column 'nolabel' not in" in bad.stderr and "Traceback" not in bad.stderr


def test_positive_value_must_exist(data_dir):
    path = data_dir / "xstest_labelled" / "xstest_completions_gpt4.csv"
    with pytest.raises(SafestressError, match="never occur"):
        load_labelled(str(path), "prompt", "completion", "final_label", ["refused"])


def test_kappa_is_undefined_when_both_raters_use_one_class_throughout():
    """Both judges flag every response: chance agreement is 1 and κ is 0/0. It used to print as
    1.000 [1.00–1.00]; statsmodels gives NaN for the same table, and so do we, shown as undefined."""
    import math
    import warnings

    from safestress.report.tables import fmt_kappa
    from safestress.stats import kappa_cluster_bootstrap_ci

    flags = [True] * 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = cohens_kappa(np.array([[12, 0], [0, 0]])).kappa
    assert math.isnan(reference) and math.isnan(cohen_kappa(flags, flags))
    assert all(math.isnan(v) for v in kappa_cluster_bootstrap_ci(flags, flags, range(12)))
    assert fmt_kappa(cohen_kappa(flags, flags), (math.nan, math.nan)) == "undefined (one class only)"
    # one disagreement makes it defined again (and the bootstrap drops only the undefined resamples)
    other = [True] * 11 + [False]
    assert cohen_kappa(flags, other) == pytest.approx(0.0)
    lo, hi = kappa_cluster_bootstrap_ci([True] * 6 + [False] * 6, [True] * 5 + [False] * 7, range(12))
    assert -1 <= lo <= hi <= 1
    assert fmt_kappa(0.5, (0.2, 0.8)) == "0.500 [0.20, 0.80]"


def test_saved_verdicts_recompute_the_agreement_table_in_a_document(data_dir, tmp_path):
    """`judge eval --rows` saves each judge's verdict per item; a document's `agreement` table
    recomputes from that file and the labels alone the figures `judge eval` printed, and a file
    that no longer fits the labels is refused in one line."""
    from safestress.report.doc_tables import refresh

    path = data_dir / "xstest_labelled" / "xstest_completions_mistralinstruct.csv"
    rows, report = tmp_path / "v.csv", tmp_path / "r.json"
    args = [sys.executable, "-m", "safestress.cli", "judge", "eval", "--judge", "refusal", "--judge", "phrase-jbb"]
    args += ["--data", str(path), "--positive", ",".join(XSTEST_POSITIVE), "--rows", str(rows), "--json", str(report)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    saved = list(csv.DictReader(rows.read_text().splitlines()))
    assert len(saved) == 2 * 450 and saved[0]["row"] == "0" and {r["positive"] for r in saved} <= {"0", "1", ""}
    data = json.loads(report.read_text())
    doc = tmp_path / "doc.md"
    opening = f"agreement file=v.csv data={path} positive={','.join(XSTEST_POSITIVE)}"
    doc.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    refresh(doc)
    table = doc.read_text()
    first = data["compared"][0]
    assert f"| {data['judge']} | 450 | 0 | {data['accuracy']:.3f} | {data['kappa']:.3f}" in table
    assert f"| {first['judge']} | 450 | 0 | {first['accuracy']:.3f} | {first['kappa']:.3f}" in table
    assert f"{first['vs_first']['kappa_difference']:+.3f}" in table and "Holm family: the 1 comparison" in table
    assert refresh(doc, check=True) == []  # recomputed the same
    rows.write_text("\n".join(rows.read_text().splitlines()[:-1]) + "\n")  # one verdict lost
    with pytest.raises(SafestressError, match="449 verdicts for a labelled file of 450 rows"):
        refresh(doc, check=True)
    doc.write_text(doc.read_text().replace(f" positive={','.join(XSTEST_POSITIVE)}", ""))
    with pytest.raises(SafestressError, match="needs data=LABELLED_FILE and positive="):
        refresh(doc, check=True)


def test_an_accuracy_table_counts_published_columns_and_keeps_the_rows_asked_for(tmp_path):
    """`compare=accuracy`: each later judge's accuracy minus the first's on the items both scored,
    exact McNemar on the discordant items (statsmodels' binomial test), Holm over the table;
    `columns=` reads a published judge's labels from the labelled file (empty: not scored) and
    `where=` keeps the rows whose column starts with a prefix; typos are one-line errors."""
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests

    from safestress.judges.agreement import write_verdict_lists
    from safestress.report.doc_tables import refresh
    from safestress.report.tables import fmt_p

    rng = np.random.default_rng(3)
    n = 60
    truth = rng.random(n) < 0.5
    first = _rater(rng, truth, 0.9)
    second = _rater(rng, truth, 0.6)
    published = _rater(rng, truth, 0.7)
    kind = np.where(np.arange(n) % 3 == 0, "contrast_x", "safe_y")
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "type", "paper"])
        for i in range(n):
            w.writerow(["yes" if truth[i] else "no", kind[i], "" if i < 5 else str(bool(published[i]))])
    write_verdict_lists(tmp_path / "v.csv", {"a": first.tolist(), "b": [None, *second.tolist()[1:]]})
    doc = tmp_path / "doc.md"
    opening = "agreement file=v.csv data=labels.csv label=label positive=yes compare=accuracy columns=Paper:paper"
    doc.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    refresh(doc)
    table = doc.read_text()
    right = first == truth

    def line(other, keep):
        only_a = int(np.sum(right[keep] & ~(other == truth)[keep]))
        only_b = int(np.sum(~right[keep] & (other == truth)[keep]))
        p = mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue
        return only_a, only_b, p

    keep_b = np.arange(n) >= 1
    keep_paper = np.arange(n) >= 5
    (ab, bb, pb), (ap, bp, pp) = line(second, keep_b), line(published, keep_paper)
    row_b = next(r for r in table.splitlines() if r.startswith("| b |"))
    row_paper = next(r for r in table.splitlines() if r.startswith("| Paper |"))
    assert f"| {keep_b.sum()} | {100 * (bb - ab) / keep_b.sum():+.1f} pts" in row_b and f"| {ab} / {bb} |" in row_b
    assert f"| {keep_paper.sum()} | {100 * (bp - ap) / keep_paper.sum():+.1f} pts" in row_paper
    assert f"| {ap} / {bp} |" in row_paper and "| 55 | 5 |" in row_paper  # 5 rows the paper left unlabelled
    acc_a = float(np.mean(right))
    assert table.splitlines()[3].startswith(f"| a | {n} | 0 | {acc_a:.3f} \\[")
    assert "Holm family: the 2 comparison(s)" in table
    q_b, q_paper = multipletests([pb, pp], method="holm")[1]
    assert f"| {fmt_p(pb)} | {fmt_p(q_b)} |" in row_b and f"| {fmt_p(pp)} | {fmt_p(q_paper)} |" in row_paper
    assert refresh(doc, check=True) == []
    # where=: only the contrast rows
    doc.write_text(doc.read_text().replace("columns=Paper:paper", "where=type^contrast"))
    refresh(doc)
    assert f"| a | {int(np.sum(kind == 'contrast_x'))} | 0 |" in doc.read_text()
    doc.write_text(doc.read_text().replace("where=type^contrast", "where=type!^contrast"))
    refresh(doc)
    assert f"| a | {int(np.sum(kind != 'contrast_x'))} | 0 |" in doc.read_text()
    # positive_where=: a row is positive only where the condition holds too (all rows kept)
    doc.write_text(doc.read_text().replace("where=type!^contrast", "positive_where=type^contrast"))
    refresh(doc)
    row_a = next(r for r in doc.read_text().splitlines() if r.startswith("| a |"))
    positives = truth & (kind == "contrast_x")
    tp, fp = int(np.sum(positives & first)), int(np.sum(~positives & first))
    fn, tn = int(np.sum(positives & ~first)), int(np.sum(~positives & ~first))
    assert f"| {n} | 0 |" in row_a and f"| {tp}/{fp}/{fn}/{tn} |" in row_a
    for bad, message in (
        ("where=type^nothing", "keeps no row"),
        ("where=type~x", "write COL=VALUE"),
        ("columns=Paper:nope", "nope"),
        ("columns=Paper:type", "not true/false"),
        ("compare=f1", "known are kappa and accuracy"),
    ):
        spec = f"agreement file=v.csv data=labels.csv label=label positive=yes {bad}"
        doc.write_text(f"<!-- safestress-table {spec} -->\n<!-- /safestress-table -->\n")
        with pytest.raises(SafestressError, match=message):
            refresh(doc, check=True)
    # a verdict file's value is 1/0/empty (or true/false), never a silent "not positive"
    saved = (tmp_path / "v.csv").read_text().splitlines()
    (tmp_path / "v.csv").write_text("\n".join([saved[0], saved[1].rsplit(",", 1)[0] + ",maybe", *saved[2:]]) + "\n")
    doc.write_text("<!-- safestress-table agreement file=v.csv data=labels.csv label=label positive=yes -->\n"
                   "<!-- /safestress-table -->\n")  # fmt: skip
    with pytest.raises(SafestressError, match=r"v\.csv holds 'maybe', not true/false/1/0/empty"):
        refresh(doc, check=True)


def test_a_raters_mean_label_with_a_threshold_is_the_mean_of_their_columns(tmp_path):
    """`label=mean(A,B,C) positive=>=0.5`: positive exactly where the raters' mean score reaches
    the threshold (PyRIT's multi-rater harm scores), for training data and for documented tables
    alike; a non-numeric score or a missing rater column is one line, never "not positive"."""
    from safestress.judges.agreement import truth_of

    rng = np.random.default_rng(5)
    scores = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(40, 3))
    rows = [{"s1": str(a), "s2": str(b), "s3": str(c)} for a, b, c in scores]
    expected = (scores.mean(axis=1) >= 0.5).tolist()
    assert truth_of(rows, "mean(s1,s2,s3)", [">=0.5"], "f.csv") == expected
    assert 0 < sum(expected) < 40
    assert truth_of(rows, "s1", [">=0.75"], "f.csv") == (scores[:, 0] >= 0.75).tolist()
    with pytest.raises(SafestressError, match="column 's4' not in"):
        truth_of(rows, "mean(s1,s4)", [">=0.5"], "f.csv")
    with pytest.raises(SafestressError, match=r"'s2' of f\.csv holds 'n/a', not a number"):
        truth_of([{"s1": "1", "s2": "n/a"}], "mean(s1,s2)", [">=0.5"], "f.csv")
    with pytest.raises(SafestressError, match="threshold '>=half' holds 'half', not a number"):
        truth_of(rows, "s1", [">=half"], "f.csv")
    path = tmp_path / "scored.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["objective", "answer", "s1", "s2", "s3"])
        for i, (a, b, c) in enumerate(scores):
            w.writerow([f"q{i}", f"a{i}", a, b, c])
    _, _, truth = load_labelled(str(path), "objective", "answer", "mean(s1,s2,s3)", [">=0.5"])
    assert truth == expected


def test_toxigen_statements_are_labelled_rows_of_an_agreement_table(data_dir, tmp_path):
    """`data=toxigen-statements:DIR`: the distinct ToxiGen statements of DIR's files, built as the
    toxicity head's training builds them (never copied into the project), are the rows a saved
    verdict file is checked against; `where=group=…` keeps one target group."""
    from safestress.judges.agreement import write_verdict_lists
    from safestress.judges.toxicity import toxigen_statements
    from safestress.report.doc_tables import refresh

    texts, toxic, groups = toxigen_statements(data_dir)
    flipped = [not t if i % 4 == 0 else t for i, t in enumerate(toxic)]
    write_verdict_lists(tmp_path / "v.csv", {"exact": list(toxic), "flipped": flipped})
    doc = tmp_path / "doc.md"
    opening = f"agreement file=v.csv data=toxigen-statements:{data_dir} label=toxic positive=1"
    doc.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    refresh(doc)
    table = doc.read_text()
    n = len(texts)
    assert f"| exact | {n} | 0 | 1.000 | 1.000" in table
    wrong = sum(1 for i in range(n) if i % 4 == 0)
    assert f"| flipped | {n} | 0 | {(n - wrong) / n:.3f} |" in table and "of the ToxiGen statements" in table
    group = sorted(set(groups))[0]
    doc.write_text(doc.read_text().replace("positive=1", f"positive=1 where=group={group}"))
    refresh(doc)
    assert f"| exact | {groups.count(group)} | 0 | 1.000" in doc.read_text()


def test_a_kappas_table_sets_variants_of_a_run_against_each_labelled_file(tmp_path):
    """`kappas`: one judge's κ (statsmodels' Cohen's κ, with its interval) for each variant of a
    run (rows) on each labelled file (columns), from the verdict files each variant saved; a
    variant run on one fold only leaves the other cells and the mean empty; a file holding the
    judge twice is one line."""
    from safestress.judges.agreement import write_verdict_lists
    from safestress.report.doc_tables import refresh

    rng = np.random.default_rng(11)
    truth = {}
    for fold in ("f1", "f2"):
        truth[fold] = rng.random(80) < 0.4
        with (tmp_path / f"labels_{fold}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["final_label"])
            w.writerows(["ref"] if t else ["ok"] for t in truth[fold])
    made = {}
    for variant, folds in (("a", ("f1", "f2")), ("b", ("f1",))):
        (tmp_path / "runs" / variant).mkdir(parents=True)
        for fold in folds:
            made[variant, fold] = _rater(rng, truth[fold], 0.85 if variant == "a" else 0.7)
            lists = {f"emb, trained without {fold}": made[variant, fold].tolist(), "phrase": truth[fold].tolist()}
            write_verdict_lists(tmp_path / "runs" / variant / f"v-{fold}.csv", lists)
    doc = tmp_path / "doc.md"
    opening = (
        "kappas file=runs judge=emb pattern=v-{fold}.csv data=labels_{fold}.csv positive=ref "
        'folds=One:f1,Two:f2 variants="first=a;second=b"'
    )
    doc.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    refresh(doc)
    table = doc.read_text()

    def kappa(t, v):
        c = _confusion(t, v)
        return cohens_kappa([[c["tp"], c["fn"]], [c["fp"], c["tn"]]]).kappa

    k = {key: kappa(truth[key[1]], v) for key, v in made.items()}
    assert f"| first | {k['a', 'f1']:.3f} \\[" in table
    assert f"| {(k['a', 'f1'] + k['a', 'f2']) / 2:.3f} |" in table
    assert next(r for r in table.splitlines() if r.startswith("| second |")).endswith(" |  |  |")
    assert "One: κ \\[95% CI\\] | Two: κ \\[95% CI\\] | mean κ" in table
    doc.write_text(doc.read_text().replace("judge=emb ", "judge=e "))  # "emb…" and no other: still one
    refresh(doc)
    write_verdict_lists(tmp_path / "runs" / "b" / "v-f1.csv", {"emb x": [True] * 80, "emb y": [False] * 80})
    with pytest.raises(SafestressError, match="holds 2 verdict lists of judge 'e'"):
        refresh(doc)
