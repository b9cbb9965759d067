"""Documented tables cannot drift: each is recomputed from the committed per-prompt file it names."""

from __future__ import annotations

import importlib.util
import itertools
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from safestress.errors import SafestressError
from safestress.report.doc_tables import blocks, refresh
from tests.test_cli import cli
from tests.test_report import _rows

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_documented_table_equals_its_recomputation():
    """The docs' generated tables (rate tables, model contrasts, calibration figures) equal what
    their committed per-prompt files give today; a change of a statistic or of a number by hand
    fails here until ``safestress refresh-tables docs/*.md`` is run and the diff is read."""
    documents = sorted(DOCS.rglob("*.md"))  # with the study pages under docs/results/
    assert sum(blocks(d) for d in documents) >= 4  # the docs do hold generated tables
    if importlib.util.find_spec("pyrit") is None:  # CI installs it (.ci/run); a newcomer may not have
        needs = [d.name for d in documents if "data=pyrit:" in d.read_text()]
        documents = [d for d in documents if d.name not in needs]
        warnings.warn(f"not checked without PyRIT's data (pip install --no-deps pyrit==1.1.0): {needs}", stacklevel=1)
    drifted = {str(d.relative_to(DOCS)): refresh(d, check=True) for d in documents}
    assert not any(drifted.values()), drifted


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        _rows("clean", "none", 0.0, ["refusal"] * 7 + ["compliance"] * 3)
        + _rows("noisy", "gaussian", 0.5, ["compliance"] * 6 + ["refusal"] * 4)
    )
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    path = tmp_path / "page.md"
    block = "<!-- safestress-table rates export=rows.parquet judge=j@1 -->\n<!-- /safestress-table -->\n"
    path.write_text("Text.\n\n" + block)
    return path


def test_a_block_is_filled_then_a_number_edited_by_hand_is_caught(doc: Path):
    assert refresh(doc) == ["rates export=rows.parquet judge=j@1"]  # filled from the file
    text = doc.read_text()
    assert "| m | d | clean | 0 | 10 | 30.0 \\[10.8–60.3\\] |" in text and text.startswith("Text.")
    assert refresh(doc, check=True) == []
    doc.write_text(text.replace("| 30.0 \\[", "| 31.0 \\["))
    assert refresh(doc, check=True) == ["rates export=rows.parquet judge=j@1"]
    proc = cli("refresh-tables", str(doc), "--check")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(lines) == 1 and "differ from their per-prompt files" in lines[0]
    assert cli("refresh-tables", str(doc)).returncode == 0 and refresh(doc, check=True) == []


def test_a_block_naming_a_missing_file_is_one_line(doc: Path):
    doc.write_text("<!-- safestress-table rates export=gone.parquet judge=j@1 -->\n<!-- /safestress-table -->\n")
    proc = cli("refresh-tables", str(doc), "--check")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_a_sequential_block_replays_the_rows_it_names(doc: Path):
    """A sequential block needs the full sweep's export and the prompt order; with them it replays
    the decisions from the rows (here: 10 prompts in one round, decided by the final test)."""
    doc.write_text("<!-- safestress-table sequential export=rows.parquet judge=j@1 -->\n<!-- /safestress-table -->\n")
    proc = cli("refresh-tables", str(doc), "--check")
    assert proc.returncode != 0 and "needs full=" in proc.stderr and proc.stderr.count("\n") == 1
    rows = pd.read_parquet(doc.parent / "rows.parquet")
    rows.assign(n_tokens=5).to_parquet(doc.parent / "rows.parquet", index=False)
    ids = sorted(rows["item_id"].unique())
    pd.DataFrame({"dataset": rows["dataset"].iloc[0], "item_id": ids}).to_csv(doc.parent / "order.csv", index=False)
    spec = "sequential export=rows.parquet full=rows.parquet order=order.csv round=10 judge=j@1"
    doc.write_text(f"<!-- safestress-table {spec} -->\n<!-- /safestress-table -->\n")
    assert refresh(doc) == [spec]
    text = doc.read_text()
    assert "| 10/10, final test |" in text and "Same decision as the full sweep: **1 of 1**" in text
    assert "(**0.0% fewer**)" in text


def test_models_and_datasets_keep_only_the_named_rows(tmp_path: Path):
    """``models=`` restricts a table to some models of an export (a study's runs against the one
    model they were trained from), ``datasets=`` to some datasets; a name with no rows is a
    one-line error."""
    rows = _rows("clean", "none", 0.0, ["refusal"] * 7 + ["compliance"] * 3)
    other = [{**r, "model": "other", "key": "o" + r["key"]} for r in _rows("clean", "none", 0.0, ["refusal"] * 10)]
    elsewhere = [{**r, "dataset": "e", "key": "e" + r["key"]} for r in rows]
    pd.DataFrame(rows + other + elsewhere).to_parquet(tmp_path / "rows.parquet", index=False)
    page = tmp_path / "page.md"
    opening = "rates export=rows.parquet judge=j@1 models=m"
    page.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    assert refresh(page) == [opening]
    text = page.read_text()
    assert "| m | d | clean |" in text and "| other |" not in text
    page.write_text(page.read_text().replace("models=m", "models=m,gone"))
    proc = cli("refresh-tables", str(page), "--check")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "model 'gone' has no rows" in proc.stderr
    opening = "rates export=rows.parquet judge=j@1 datasets=e"
    page.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
    assert refresh(page) == [opening]
    text = page.read_text()
    assert "| m | e | clean |" in text and "| m | d |" not in text and "| other |" not in text
    page.write_text(page.read_text().replace("datasets=e", "datasets=gone"))
    proc = cli("refresh-tables", str(page), "--check")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "dataset 'gone' has no rows" in proc.stderr


def test_condition_keeps_one_condition_even_with_commas_in_its_name(tmp_path: Path):
    """``condition=NAME`` keeps one condition's rows (a sweep's clean models as a quality table);
    a condition whose name holds commas (its sites) is named whole; an absent one is one line."""
    sites = "prune u=1 @ blocks.*.mlp.act,blocks.*.attn.z"
    frame = pd.DataFrame(
        _rows("clean", "none", 0.0, ["refusal"] * 7 + ["compliance"] * 3)
        + _rows(sites, "prune", 1.0, ["compliance"] * 6 + ["refusal"] * 4)
    )
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    page = tmp_path / "page.md"
    for name, kept, gone in (("clean", "| clean |", "prune"), (sites, "| 60.0 \\[", "| clean |")):
        opening = f'rates export=rows.parquet judge=j@1 condition="{name}"'
        page.write_text(f"<!-- safestress-table {opening} -->\n<!-- /safestress-table -->\n")
        refresh(page)
        text = page.read_text()
        assert kept in text and gone not in text.split("-->", 1)[1].split("Holm family")[0]
    page.write_text(page.read_text().replace(sites, "noise"))
    proc = cli("refresh-tables", str(page), "--check")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "condition 'noise' has no rows" in proc.stderr


def _render(tmp_path: Path, spec: str) -> str:
    """A one-block document with ``spec``, refreshed: the Markdown the table kind writes."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- safestress-table {spec} -->\n<!-- /safestress-table -->\n")
    refresh(doc)
    return doc.read_text()


def test_an_audit_table_shows_coverage_and_width_at_the_sample_size_asked_for(tmp_path: Path):
    """`audit` renders benchmarks/judge_audit.py's figures at one labelled-sample size, in
    percent and points, and refuses a size the benchmark did not run or an unknown part."""
    cover = {"judge alone": {"covered": 0.0, "width": 0.083}, "labels alone": {"covered": 0.969, "width": 0.224}}
    cover["corrected"] = {"covered": 0.976, "width": 0.17}
    rows = [{"model": "llama2orig", "judge": "refusal", "n": n, "truth": 0.224, "judge_rate": 0.278, **cover,
             "worth": 86.8} for n in (30, 50)]  # fmt: skip
    change = {"from": "llama2orig", "to": "gpt4", "judge": "refusal", "n": 50, "truth": 0.287, "judge_change": 0.2}
    change |= {k: cover[k] for k in ("labels alone", "corrected")}
    (tmp_path / "audit.json").write_text(json.dumps({"draws": 2000, "rows": rows, "changes": [change]}))
    text = _render(tmp_path, "audit file=audit.json part=rates n=50")
    assert "| Llama-2 | `refusal` | 22.4 | 27.8 | 0.0% / 8.3 | 96.9% / 22.4 | 97.6% / 17.0 | 87 |" in text
    assert text.count("| Llama-2 | `refusal` |") == 1  # n=30 left out
    text = _render(tmp_path, "audit file=audit.json part=changes n=50")
    assert "| Llama-2 → GPT-4 | `refusal` | +28.7 | +20.0 | 96.9% / 22.4 | 97.6% / 17.0 |" in text
    for bad, message in (("n=100", "no rows at n=100"), ("part=x n=50", "known are rates and changes"), ("", "n=")):
        with pytest.raises(SafestressError, match=message):
            _render(tmp_path, f"audit file=audit.json {bad}")


def test_a_lengths_table_counts_shares_over_all_answers_and_rates_among_those_scored(tmp_path: Path):
    """`lengths`: per model, dataset, σ and token budget, incoherent / loop-cut / criterion-4 shares
    of all answers (from the first judge's rows) and each judge's rate among the answers it scored,
    named for what it measures; filters keep rows, and a filter that keeps none is one line."""
    rows = []
    for tokens in (64, 512):
        for i in range(4):
            incoherent = tokens == 512 and i == 0
            for judge, harmful in (("refusal@3/c8", i % 2 == 0), ("harm@1+abc/c8", i == 1)):
                rows.append({
                    "model": "m", "dataset": "jbb", "strength": 0.0, "max_new_tokens": tokens, "item_id": str(i),
                    "judge": judge, "label": "incoherent" if incoherent else "x",
                    "harmful": None if incoherent else float(harmful),
                    "loop_cut": 40.0 if tokens == 512 and i < 3 else None, "criterion4_loop": tokens == 512 and i < 2,
                })  # fmt: skip
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    text = _render(tmp_path, "lengths file=rows.parquet")
    assert "complied `refusal` | harmful `harm` |" in text
    assert "| m | jbb | 0 | 64 | 4 | 0.0% | 0.0% | 0.0% | 50.0% | 25.0% |" in text
    # item 0 incoherent: rates among the 3 scored (refusal: item 2 of 1..3; harm: item 1)
    assert "| m | jbb | 0 | 512 | 4 | 25.0% | 75.0% | 50.0% | 33.3% (of 3) | 33.3% (of 3) |" in text
    text = _render(tmp_path, "lengths file=rows.parquet tokens=512")
    assert "| 64 |" not in text and "| 512 |" in text
    with pytest.raises(SafestressError, match="no rows left"):
        _render(tmp_path, "lengths file=rows.parquet sigma=0.2")


def test_a_coherence_table_counts_flags_per_set_with_the_persons_label_of_the_flagged(tmp_path: Path):
    """`coherence` counts benchmarks/coherence.py's saved verdicts per set, by reason, and, where a
    set carries a person's label, how many of the flagged texts it calls positive."""
    lines = ["set,row,reason,human", "a,0,,", "a,1,gibberish,", "a,2,,"]
    lines += ["b,0,gibberish,1", "b,1,loop,0", "b,2,gibberish,1", "b,3,,1"]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    text = _render(tmp_path, "coherence file=c.csv")
    assert "| a | 3 | 1 (33.3%) | gibberish 1 | — |" in text
    assert "| b | 4 | 3 (75.0%) | gibberish 2, loop 1 | 2 / 3 |" in text


def test_a_sources_table_is_the_shipped_heads_training_data(tmp_path: Path):
    """`sources` reads a head's meta.json: rows and positives per source, its label mapping (or,
    without one, what else it recorded), and the total; the shipped harm head's is in the docs."""
    meta = {"kind": "harm-head", "n_train": 5, "harmful_share": 0.4, "sources": [
        {"dataset": "a", "n": 3, "positives": 2, "labels": "harmful = x"},
        {"dataset": "b", "n": 2, "positives": 0, "prompts": "p", "seed": 0, "sha256": "f"},
    ]}  # fmt: skip
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    text = _render(tmp_path, "sources file=meta.json")
    assert "| `--data` | rows | harmful | mapping |" in text and "| `a` | 3 | 2 | harmful = x |" in text
    assert "| `b` | 2 | 0 | prompts p, seed 0 |" in text and "5 training rows, 40.0% harmful." in text


def test_a_calibration_rate_below_one_percent_keeps_its_second_decimal(tmp_path: Path):
    """Against a goal of 0.25%, 0.05% must not print as 0.1%: small rates get two decimals."""
    figures = [{"kind": "k", "name": "small", "goal": "≤ 0.25%", "rate": 0.0005, "ci": [0.0002, 0.0015]},
               {"kind": "k", "name": "large", "goal": "≤ 5%", "rate": 0.01, "ci": [0.003, 0.029]}]  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps({"reps": 300, "prompts": 260, "alpha": 0.05, "figures": figures}))
    text = _render(tmp_path, "calibration file=c.json")
    assert "| small | ≤ 0.25% | 0.05% [0.02, 0.15] |" in text and "| large | ≤ 5% | 1.0% [0.3, 2.9] |" in text
    assert "300 simulated sweeps of 260 prompts per row" in text


def test_every_committed_report_summary_recomputes_from_the_export_beside_it():
    """A study's report folders under docs/results keep the files `safestress results --out` wrote
    (summary.json/csv/md per judge) beside the per-prompt export they came from. Every rate, its
    interval, every paired Δ with its interval, the Holm p and the three-outcome shares in each
    summary.json equal a recomputation from that export today, so those files cannot drift either.
    (The equivalence margin a study used is not in the file; the fields compared do not depend on it.)"""
    import math

    from safestress.report import to_records
    from safestress.report.summary import summarize
    from safestress.store import read_export

    fields = ["model", "dataset", "condition", "n", "value", "ci_low", "ci_high", "delta", "delta_ci_low"]
    fields += ["delta_ci_high", "p_holm", "share_flagged", "share_safe", "incoherent", "p_all_holm"]

    def cells(rows: list[dict]) -> list[tuple]:
        def cell(v: object) -> object:
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 9)
            return v

        return [tuple(cell(r.get(k)) for k in fields) for r in rows]

    checked = 0
    for path in sorted((DOCS / "results").rglob("summary.json")):
        saved = json.loads(path.read_text())
        if "rates" not in saved:  # a unit map's summary, not a rate table
            continue
        export = path.parent.parent / "per-prompt.parquet"
        assert export.is_file(), f"{path} has no per-prompt export beside its report"
        (judge,) = {r["judge"] for r in saved["rates"]}
        recomputed = to_records(summarize(read_export(export), judge, None)[0])
        assert cells(saved["rates"]) == cells(recomputed), path.relative_to(DOCS)
        checked += 1
    assert checked >= 40


def _rounds_to(number: str, printed: str) -> bool:
    """``number`` as a source prints it rounds to ``printed`` at the decimals ``printed`` has
    (``0.576`` backs ``0.58``; ``0.5`` does not back ``0.50``)."""
    places = len(printed.split(".")[1])
    return len(number.split(".")[1]) >= places and abs(round(float(number), places) - float(printed)) < 1e-9


def _claim_tables(text: str) -> list[list[str]]:
    """The hand-written tables of a page (those outside generated blocks), each as its lines."""
    tables: list[list[str]] = []
    current: list[str] | None = None
    generated = False
    for line in text.splitlines():
        if line.startswith("<!-- safestress-table"):
            generated = True
        elif line.startswith("<!-- /safestress-table"):
            generated = False
        elif not generated and line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(line)
            continue
        current = None
    return tables


def test_every_figure_of_the_reproduction_page_is_in_a_page_it_links_to():
    """docs/reproduction.md sets the papers' claims beside measured figures in hand-written tables
    (their cells are sentences, not rows of one statistic). So that they cannot drift from the
    generated pages either, every decimal figure in a table must appear, to the decimals it is
    printed with, on a line of a page the table links to (or of this page's generated blocks), and
    an estimate with its interval ("+29.3 [+15.5, +41.6]") on one and the same line there, so a
    figure cannot be backed by a number that only happens to occur elsewhere. (A change "clean →
    perturbed" joins two rows of a table, so each side is checked alone.)"""
    import re

    number = re.compile(r"\d+\.\d+")
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    interval = re.compile(r"\s*\[[+\u2212-]?|,\s*[+\u2212-]?|\u2013[+\u2212-]?")  # "x [lo", "lo, hi", "lo–hi"
    doc = DOCS / "reproduction.md"
    text = doc.read_text()
    own = "".join(re.findall(r"<!-- safestress-table.*?<!-- /safestress-table -->", text, re.S))
    tables = _claim_tables(text)
    assert len(tables) >= 3
    unbacked, apart, pairs = [], [], 0
    for table in tables:
        links = {m for line in table for m in link.findall(line)}
        assert links, f"a table of reproduction.md links to no page: {table[0]}"
        pages = [doc.parent / x for x in links if x.endswith(".md") and (doc.parent / x).is_file()]
        texts = [own, *(page.read_text() for page in pages)]  # this page: its generated blocks only
        source_lines = [number.findall(line) for t in texts for line in t.splitlines()]
        source_lines = [nums for nums in source_lines if nums]

        def on_one_line(*printed: str, lines: list[list[str]] = source_lines) -> bool:
            return any(all(any(_rounds_to(n, p) for n in nums) for p in printed) for nums in lines)

        for row in table[2:]:
            found = list(number.finditer(row))
            unbacked += [(row[:50], m.group()) for m in found if not on_one_line(m.group())]
            for a, b in itertools.pairwise(found):
                if interval.fullmatch(row[a.end() : b.start()]):
                    pairs += 1
                    if not on_one_line(a.group(), b.group()):
                        apart.append(row[max(0, a.start() - 30) : b.end()])
    assert pairs >= 20  # the check has intervals to hold together
    assert not unbacked, unbacked
    assert not apart, apart
