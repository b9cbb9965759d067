"""Report summaries: exact incoherent/unscored shares, strict JSON (no NaN) in summary.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from safestress.errors import SafestressError
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
        # on harmful prompts a refusal judge still sees refusal, not harm: its rate is "complied"
        ("refusal@3/c4", "jbb", "complied", "Complied rate"),
        ("embedding@2+abc/c4", "advbench", "complied", "Complied rate"),
        # a harm classifier's flag means harm on any prompt set, and so does the lab's exact judge
        ("harmbench-llama@1/c4", "xstest-safe", "harmful", "Harmful-output rate"),
        ("lab@1", "lab-benign", "harmful", "Harmful-output rate"),
        ("toxicity@1+abc/c4", "toxigen", "toxic", "Toxic-output rate"),
        # a judge no registered class has (a plugin's store): its flag is read as harm
        ("j@1", "jbb", "harmful", "Harmful-output rate"),
    ],
)
def test_each_judge_names_what_its_rate_measures(judge, dataset, metric, title, tmp_path):
    """A refusal judge's rate counts answers not refused, which is not harm: tables, summary.md
    and summary.json call it "complied" (on prompts a model should answer, the answer rate),
    harm judges "harmful", toxicity judges "toxic", with the same numbers."""
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
    assert f"{metric} %" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == {judge: [metric]}


def _two_seed_frame() -> pd.DataFrame:
    """A clean run and one perturbed condition, two seeds, two judges; items 0–3 as below."""
    rows = []

    def add(cond, pert, item, seed, judge, label, response):
        harmful = {"compliance": 1.0, "refusal": 0.0}.get(label)
        rows.append(
            {
                "key": f"{cond}-{item}-{seed}",
                "config_hash": cond,
                "model": "m",
                "dataset": "d",
                "item_id": str(item),
                "seed": seed,
                "prompt": f"prompt {item}",
                "response": response,
                "judge": judge,
                "score": None if harmful is None else harmful,
                "label": label,
                "harmful": harmful,
                "condition": "" if pert == "none" else "gaussian σ=1 @ blocks.0.resid_post",
                "perturbation": pert,
                "strength": 0.0 if pert == "none" else 1.0,
                "sites": "" if pert == "none" else "blocks.0.resid_post",
            }
        )

    for seed in (0, 1):
        for judge in ("a@1", "b@1"):
            add("clean", "none", 0, seed, judge, "refusal", f"clean refusal 0/{seed}")
            add("clean", "none", 1, seed, judge, "refusal", f"clean refusal 1/{seed}")
            add("clean", "none", 2, seed, judge, "compliance", f"clean answer 2/{seed}")
            add("clean", "none", 3, seed, judge, "refusal" if seed == 0 else "compliance", f"clean mixed 3/{seed}")
    # item 0 complies under noise in seed 1 only; item 1 is word salad; item 2 now refuses; item 3
    # changes but was not unanimous when clean, so it counts for neither direction
    noisy = {
        0: ["refusal", "compliance"],
        1: ["incoherent", "incoherent"],
        2: ["refusal", "refusal"],
        3: ["compliance", "compliance"],
    }
    for item, labels in noisy.items():
        for seed, label in enumerate(labels):
            add("noisy", "gaussian", item, seed, "a@1", label, f"<script>alert({item})</script> noisy {item}/{seed}")
            other = "refusal" if item == 0 else label  # judge b disagrees with a on item 0 only
            add("noisy", "gaussian", item, seed, "b@1", other, f"<script>alert({item})</script> noisy {item}/{seed}")
    return pd.DataFrame(rows)


def test_changed_verdicts_pairs_each_flip_with_the_clean_response_of_its_seed():
    from safestress.report.html_report import changed_verdicts

    (change,) = changed_verdicts(_two_seed_frame(), "a@1")
    assert (change.became_positive, change.became_negative, change.incoherent) == (1, 1, 2)
    (up,) = change.examples_positive
    assert (up.item_id, up.seed, up.label) == ("0", 1, "compliance")
    assert up.clean_response == "clean refusal 0/1" and up.clean_label == "refusal"  # the same seed's clean answer
    (down,) = change.examples_negative
    assert down.item_id == "2" and down.clean_response == "clean answer 2/0"
    assert [(e.item_id, e.seed) for e in change.examples_incoherent] == [("1", 0)]  # one example per prompt
    assert changed_verdicts(_two_seed_frame(), "a@1", limit=0)[0].examples_incoherent == []


def test_judge_agreement_is_cohens_kappa_on_the_rows_both_judges_scored():
    from statsmodels.stats.inter_rater import cohens_kappa, to_table

    from safestress.report.html_report import judge_agreement
    from safestress.stats import kappa_cluster_bootstrap_ci

    frame = _two_seed_frame()
    (pair,) = judge_agreement(frame)
    wide = frame.dropna(subset=["harmful"]).pivot_table(index="key", columns="judge", values="harmful")
    assert pair.n == len(wide) == 14  # the two incoherent rows are scored by neither
    assert pair.agreement == pytest.approx(13 / 14)
    expected = cohens_kappa(to_table(wide.to_numpy().astype(int))[0]).kappa
    assert pair.kappa == pytest.approx(expected)
    # the interval resamples prompts (each holds several responses here), not responses
    prompts = frame.drop_duplicates("key").set_index("key").loc[wide.index, "prompt"]
    assert prompts.nunique() < len(prompts)
    x, y = (wide.iloc[:, 0] > 0.5).tolist(), (wide.iloc[:, 1] > 0.5).tolist()
    assert pair.kappa_ci == pytest.approx(kappa_cluster_bootstrap_ci(x, y, prompts.tolist()))
    assert pair.kappa_ci[0] <= pair.kappa <= pair.kappa_ci[1]
    (disagreement,) = pair.examples  # item 0, seed 1: a reads compliance, b refusal
    assert (disagreement.label_a, disagreement.label_b) == ("compliance", "refusal")
    assert disagreement.response.endswith("noisy 0/1") and disagreement.prompt == "prompt 0"
    assert judge_agreement(frame, limit=0)[0].examples == []


def test_the_html_page_escapes_model_output_and_is_reproducible(tmp_path):
    from html.parser import HTMLParser

    from safestress.report.html_report import judge_agreement, render, write_html

    frame = _two_seed_frame()
    summaries = {j: summarize(frame, j) for j in ("a@1", "b@1")}
    specs = {"clean": {"label": "", "model_name": "m"}, "noisy": {"label": "gaussian", "model_name": "m", "x": "<b>"}}
    page = render(frame, summaries, specs, examples=3, plots=True)
    assert "<script" not in page and "&lt;script&gt;alert(0)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2  # one plot per judge
    assert page == render(frame, summaries, specs, examples=3, plots=True)  # no timestamp, same bytes
    (pair,) = judge_agreement(frame)
    cells = f'<td class="n">{pair.kappa:.3f}</td><td class="n">{pair.kappa_ci[0]:.2f} – {pair.kappa_ci[1]:.2f}</td>'
    assert cells in page  # κ and its interval in the judges' agreement table

    class Balance(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.void = {"meta", "img", "br", "hr", "link", "input"}

        def handle_starttag(self, tag, attrs):
            if tag not in self.void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"

    parser = Balance()
    parser.feed(page)
    assert parser.stack == []
    sections = [line for line in page.splitlines() if line.startswith("<h2>")]
    assert sections[:2] == ["<h2>Harmful-output rate — judge a@1</h2>", "<h2>Harmful-output rate — judge b@1</h2>"]
    path = write_html(tmp_path / "r" / "report.html", frame, summaries, specs, plots=False)
    assert path.read_text() == render(frame, summaries, specs, plots=False) and not list(path.parent.glob("*.tmp"))


def test_latest_keys_keeps_the_newest_version_of_each_judge():
    from safestress.judges.base import latest_keys

    stored = ["refusal@2", "refusal@3/c3", "refusal@3/c4", "embedding@2+aa/c3", "embedding@2+aa/c4"]
    assert latest_keys([*stored, "embedding@2+bb/c4", "lab@1", "gsm8k@1"]) == [
        "embedding@2+aa/c4",
        "embedding@2+bb/c4",  # another trained head: another judge
        "gsm8k@1",
        "lab@1",
        "refusal@3/c4",
    ]


def _model_frame(harmful_under_noise: dict[str, list[int]], seeds: int = 1) -> pd.DataFrame:
    """Models that refuse all 8 prompts when clean; under noise, the listed items become harmful."""
    rows = []
    for model, items in harmful_under_noise.items():
        for cond, pert in (("clean", "none"), ("noisy", "gaussian")):
            for item in range(8):
                for seed in range(1 if pert == "none" else seeds):
                    harmful = float(pert != "none" and item in items and seed == 0)
                    rows.append(
                        {
                            "key": f"{model}-{cond}-{item}-{seed}",
                            "config_hash": f"{model}-{cond}",
                            "model": model,
                            "dataset": "d",
                            "item_id": str(item),
                            "seed": seed,
                            "prompt": f"p{item}",
                            "response": "r",
                            "judge": "j@1",
                            "score": harmful,
                            "label": "compliance" if harmful else "refusal",
                            "harmful": harmful,
                            "condition": "" if pert == "none" else "gaussian σ=1 @ blocks.0.resid_post",
                            "perturbation": pert,
                            "strength": 0.0 if pert == "none" else 1.0,
                            "sites": "" if pert == "none" else "blocks.0.resid_post",
                        }
                    )
    return pd.DataFrame(rows)


def test_model_contrasts_pair_the_models_on_the_same_prompts():
    """Under noise the base model answers 6 of 8 harmful prompts, the defended one 2 (both among
    the base's 6): 4 discordant prompts, all one way."""
    from statsmodels.stats.contingency_tables import mcnemar

    from safestress.report import model_contrasts

    frame = _model_frame({"base": [0, 1, 2, 3, 4, 5], "defended": [0, 1]})
    clean, noisy = model_contrasts(frame, "j@1", baseline="base")
    assert (clean.model, clean.baseline, clean.perturbation, clean.delta, clean.p) == ("defended", "base", "none", 0, 1)
    assert (noisy.n_prompts, noisy.value, noisy.baseline_value) == (8, 0.25, 0.75)
    assert noisy.delta == pytest.approx(-0.5) and noisy.test == "exact McNemar"
    assert noisy.p == pytest.approx(mcnemar([[2, 0], [4, 2]], exact=True).pvalue)  # = 2 · 0.5⁴
    # the noise's effect on the defended model minus its effect on the base: −1 on 4 prompts
    assert noisy.effect_delta == pytest.approx(-0.5) and noisy.n_effect == 8
    assert noisy.effect_p == pytest.approx(2 / 16)  # exact sign flips: 2 of 16 sign patterns as extreme
    assert [clean.p_holm, noisy.p_holm] == pytest.approx([1.0, 0.25])  # Holm over the column
    # the default baseline is the first name; a single model or a judge without the baseline: nothing
    assert [r.model for r in model_contrasts(frame, "j@1")] == ["defended", "defended"]
    assert model_contrasts(frame[frame["model"] == "base"], "j@1") == []
    assert model_contrasts(frame, "j@1", baseline="other") == []


def test_model_contrasts_with_several_seeds_use_per_prompt_means():
    from safestress.report import model_contrasts

    _, noisy = model_contrasts(_model_frame({"a": [0, 1, 2, 3], "b": []}, seeds=2), "j@1", baseline="a")
    assert noisy.test == "sign-flip" and noisy.n_prompts == 8
    assert noisy.value == 0 and noisy.baseline_value == pytest.approx(4 * 0.5 / 8)  # harmful in seed 0 of 2
    assert noisy.p == pytest.approx(2 / 16)


def test_markdown_tables_escape_names_and_html_tables_scroll_in_their_own_box(tmp_path):
    """Model, dataset and condition names come from users and hubs: in summary.md they are text,
    never live HTML, emphasis or a column break; in report.html a wide table scrolls by itself."""
    from safestress.report import RateRow, md_cell
    from safestress.report.html_report import _table

    payload = "<img src=x onerror=alert(1)>"
    row = RateRow(
        model=f"evil{payload}", dataset="a|b", judge="refusal@9", metric="harmful", condition="σ=1 @ blocks.*.mlp.act",
        perturbation="gaussian", sites="blocks.*.mlp.act|blocks.0.attn.z", strength=1.0, n=4, n_prompts=4, seeds=1,
        value=0.5, ci_low=0.1, ci_high=0.9, incoherent=0.0, unscored=0.0, delta=0.25, p=0.5, p_holm=0.5, test="x",
    )  # fmt: skip
    write_report([row], [], tmp_path, plot=False)
    md = (tmp_path / "summary.md").read_text()
    assert "evil\\<img src=x onerror=alert(1)>" in md and md.count("<img") == md.count("\\<img")  # no live tag
    head, _, body = md.splitlines()[:3]  # the table; its notes follow
    unescaped = lambda line: line.replace("\\|", "").count("|")  # noqa: E731
    assert unescaped(body) == unescaped(head)  # the union's and the dataset's '|' do not add columns
    assert "a\\|b" in body and "blocks.\\*.mlp.act" in body
    assert md_cell("line\nbreak") == "line break"
    assert md_cell("<0.001") == "<0.001" and md_cell("&lt;") == "\\&lt;"  # read raw, it stays readable
    assert _table(["a"], [["1"]]).startswith('<div class="wide"><table>')


def test_a_difference_that_rounds_to_zero_prints_as_zero():
    """A mean of paired differences leaves residue (-1.1e-16) that used to print as "-0.0"."""
    from safestress.report.tables import fmt_pts

    assert fmt_pts(-1.1e-16) == "0.0" and fmt_pts(-0.0004) == "0.0" and fmt_pts(0.0) == "0.0"
    assert fmt_pts(0.009) == "+0.9" and fmt_pts(-0.293) == "-29.3" and fmt_pts(float("nan")) == "—"


def test_delta_is_the_difference_of_the_paired_rates_shown_beside_it():
    """Δ is taken over the prompts both conditions scored, so the table shows those two rates
    (issue 26): on a crafted store they differ from the conditions' own rates, and Δ is their
    difference; the three outcomes over all responses add up to 1."""
    from safestress.report.tables import rate_cells

    rates, _ = summarize(_frame(), "j@1")
    clean, noisy = sorted(rates, key=lambda r: r.strength)
    assert noisy.n_paired == 7 and noisy.paired_clean == pytest.approx(3 / 7)  # prompts 3–9; 7–9 complied clean
    assert noisy.paired_value == pytest.approx(4 / 7) and clean.value == pytest.approx(0.3)
    assert noisy.delta == pytest.approx(noisy.paired_value - noisy.paired_clean)
    assert noisy.delta_ci_low < noisy.delta < noisy.delta_ci_high
    cells = rate_cells(noisy)
    assert "42.9 → 57.1" in cells and any(c.startswith("+14.3 [") for c in cells)
    assert (noisy.share_flagged, noisy.share_safe) == (0.4, 0.3)  # 0.3 left: incoherent 0.1 + unscored 0.2
    assert "40.0/30.0/30.0" in cells


def test_a_verdict_that_depends_on_counting_incoherent_answers_is_marked():
    """20 prompts complied clean and turn incoherent under noise; 20 refuse in both. Among coherent
    answers nothing changed; counting incoherent as not harmful, 20 of 40 went down."""
    from safestress.report.tables import SENSITIVE, rate_cells, rate_notes

    frame = pd.DataFrame(
        _rows("clean", "none", 0.0, ["compliance"] * 20 + ["refusal"] * 20)
        + _rows("noisy", "gaussian", 0.5, ["incoherent"] * 20 + ["refusal"] * 20)
    )
    rates, _ = summarize(frame, "j@1")
    noisy = next(r for r in rates if r.perturbation != "none")
    assert noisy.p_holm == 1.0 and noisy.p_all_holm < 1e-5 and noisy.delta_all == pytest.approx(-0.5)
    assert noisy.incoherent_sensitive and noisy.verdict == "inconclusive"
    assert f"inconclusive{SENSITIVE}" in rate_cells(noisy)
    assert any(SENSITIVE in line for line in rate_notes(rates))


def test_a_margin_turns_a_small_difference_into_equivalence_and_the_family_is_declared():
    """400 prompts, 2 change each way: with ±10 points the contrast is equivalent, without a
    margin inconclusive; the table names its Holm family."""
    from safestress.report.summary import holm_family

    clean = ["compliance"] * 2 + ["refusal"] * 2 + ["compliance"] * 100 + ["refusal"] * 296
    noisy = ["refusal"] * 2 + ["compliance"] * 2 + ["compliance"] * 100 + ["refusal"] * 296
    frame = pd.DataFrame(_rows("clean", "none", 0.0, clean) + _rows("noisy", "gaussian", 0.5, noisy))
    plain = next(r for r in summarize(frame, "j@1")[0] if r.perturbation != "none")
    assert plain.verdict == "inconclusive" and plain.p_tost != plain.p_tost  # NaN: no margin, no TOST
    rates, _ = summarize(frame, "j@1", margin=0.10)
    noisy_row = next(r for r in rates if r.perturbation != "none")
    assert noisy_row.p_tost_holm < 0.001 and noisy_row.verdict == "equivalent within ±10 pts"
    assert holm_family(rates).startswith("Holm family: the 1 contrasts with the clean run")


def test_methods_are_compared_with_the_run_as_the_unit():
    """Two arms of three trained models each: the table lists every run's rate, and Δ, its test
    and the effect's test are computed from the runs' rates (Welch), not from prompts."""
    from scipy import stats as sps

    from safestress.report.runs import arm_rows, parse_arms
    from safestress.report.tables import arm_cells

    def model_rows(model: str, clean_k: int, noisy_k: int) -> list[dict]:
        rows = _rows("clean", "none", 0.0, ["compliance"] * clean_k + ["refusal"] * (20 - clean_k))
        rows += _rows("noisy", "gaussian", 0.5, ["compliance"] * noisy_k + ["refusal"] * (20 - noisy_k))
        return [{**r, "model": model, "key": f"{model}-{r['key']}"} for r in rows]

    runs = {"a0": (2, 10), "a1": (3, 12), "a2": (1, 9), "b0": (2, 4), "b1": (1, 3), "b2": (3, 6)}
    frame = pd.DataFrame([r for m, (c, n) in runs.items() for r in model_rows(m, c, n)])
    arms = parse_arms(["base=a0,a1,a2", "robust=b0,b1,b2"])
    rows = arm_rows(frame, "j@1", arms)
    noisy = next(r for r in rows if r.arm == "robust" and r.perturbation != "none")
    assert noisy.run_rates == [0.2, 0.15, 0.3]
    a_noisy, b_noisy = [0.5, 0.6, 0.45], [0.2, 0.15, 0.3]
    assert noisy.delta == pytest.approx(np.mean(b_noisy) - np.mean(a_noisy))
    assert noisy.p == pytest.approx(sps.ttest_ind(b_noisy, a_noisy, equal_var=False).pvalue)
    effects_b = [0.2 - 0.1, 0.15 - 0.05, 0.3 - 0.15]
    effects_a = [0.5 - 0.1, 0.6 - 0.15, 0.45 - 0.05]
    assert noisy.effect_p == pytest.approx(sps.ttest_ind(effects_b, effects_a, equal_var=False).pvalue)
    assert noisy.p_perm == pytest.approx(0.1) and noisy.verdict in ("different", "inconclusive")
    assert "20.0, 15.0, 30.0" in arm_cells(noisy)
    with pytest.raises(SafestressError, match="no verdicts"):
        arm_rows(frame, "j@1", parse_arms(["base=a0", "other=zz"]))


def test_run_level_outcomes_count_every_response_where_asked():
    """A method that keeps answers coherent under a perturbation moves the shares of all responses,
    not the rate among coherent ones: each outcome's per-run rate, counted by hand."""
    from safestress.report.runs import arm_rows, parse_arms
    from safestress.report.summary import outcome_values
    from safestress.report.tables import arm_notes

    def model_rows(model: str, noisy: list[str]) -> list[dict]:
        rows = _rows("clean", "none", 0.0, ["refusal"] * 10) + _rows("noisy", "gaussian", 0.5, noisy)
        return [{**r, "model": model, "key": f"{model}-{r['key']}"} for r in rows]

    # base: 2 compliance, 3 refusals, 5 incoherent; robust: 2 compliance, 7 refusals, 1 incoherent
    base = ["compliance"] * 2 + ["refusal"] * 3 + ["incoherent"] * 5
    robust = ["compliance"] * 2 + ["refusal"] * 7 + ["incoherent"]
    frame = pd.DataFrame([r for i in range(3) for r in model_rows(f"a{i}", base) + model_rows(f"b{i}", robust)])
    arms = parse_arms(["base=a0,a1,a2", "robust=b0,b1,b2"])
    expected = {"rate": (2 / 5, 2 / 9), "all": (0.2, 0.2), "safe": (0.3, 0.7), "incoherent": (0.5, 0.1)}
    for outcome, (a, b) in expected.items():
        noisy = [r for r in arm_rows(frame, "j@1", arms, outcome) if r.perturbation != "none"]
        assert [r.run_rates for r in noisy] == [[pytest.approx(a)] * 3, [pytest.approx(b)] * 3], outcome
        assert noisy[1].effect_delta == pytest.approx(b - a)  # both arms' clean shares are equal
        assert noisy[0].outcome == outcome and outcome_values(frame, outcome).notna().sum() >= 60
    assert "share of all responses that are coherent" in arm_notes(arm_rows(frame, "j@1", arms, "safe"))[0]
    with pytest.raises(SafestressError, match="unknown outcome 'harm'; known: rate, all"):
        arm_rows(frame, "j@1", arms, "harm")


def test_results_refuses_an_unknown_outcome_before_reading_the_store(tmp_path):
    from tests.test_cli import cli

    proc = cli("results", "--store", str(tmp_path / "none.db"), "--outcome", "harm")
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "error: unknown outcome 'harm'; known: rate, all, safe, incoherent"
    )
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_rate_table_reads_at_80_and_120_columns(width):
    """No line is wider than the terminal and no number is cut: what every row shares (the model,
    the perturbation and sites) is in the title, numbers never break, and below 130 and 100
    columns the terminal leaves out the all-response shares and the paired rates, saying so."""
    from rich.console import Console

    from safestress.report.tables import rate_table

    rates, _ = summarize(_frame(), "j@1")
    for r in rates:
        r.model = "qwen2.5-coder-0.5b-instruct"
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(rate_table(rates, width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for cell in ("30.0 [10.8–60.3]", "57.1 [25.0–84.2]", "+14.3 [-49.9–+68.4]", "inconclusive"):
        assert cell in text, (cell, text)
    assert "qwen2.5-coder-0.5b-instruct" in text.replace("\n", "")  # the model named once, in the title
    assert ("42.9 → 57.1" in text) == (width >= 100) and ("40.0/30.0/30.0" in text) == (width >= 130)
    assert ("leaves out" in text) == (width < 130)


def _wide_blocks() -> dict[str, object]:
    """One block of each wide table, with the long names real sweeps have."""
    from safestress.judges.agreement import Agreement, KappaDifference
    from safestress.judges.audit import AuditRow, JudgeAudit
    from safestress.report import model_contrasts
    from safestress.report.agreement_tables import agreement_block
    from safestress.report.runs import arm_rows, parse_arms
    from safestress.report.tables import arm_block, audit_block, contrast_block

    names = {"base": "qwen2.5-coder-0.5b-instruct", "defended": "qwen2.5-coder-0.5b-instruct-quada-s3"}
    frame = _model_frame({"base": [0, 1, 2, 3, 4, 5], "defended": [0, 1]})
    frame["model"] = frame["model"].map(names)
    contrasts = model_contrasts(frame, "j@1", baseline=names["base"])
    arm_frame = pd.concat([frame.assign(model=frame["model"] + f"-r{i}") for i in range(3)])
    arms = parse_arms(
        [f"{a}={','.join(f'{m}-r{i}' for i in range(3))}" for a, m in zip(("dpo", "quada"), names.values())]
    )
    nan2 = (float("nan"), float("nan"))
    audit_rows = [
        AuditRow(
            "refusal@3/c5",
            names["base"],
            "jbb",
            "" if s == 0 else f"gaussian σ={s:g} @ blocks.0-3.resid_post",
            "none" if s == 0 else "gaussian",
            "" if s == 0 else "blocks.0-3.resid_post",
            s,
            100,
            40,
            2,
            0.45,
            0.4,
            (0.26, 0.55),
            0.43,
            (0.31, 0.55),
            0.7,
            0.925,
            *((float("nan"), nan2) if s == 0 else (0.123, (0.02, 0.25))),
            0.01,
            0.03,
        )
        for s in (0.0, 0.1, 0.2)
    ]
    audit = JudgeAudit("refusal@3/c5", 120, 0.925, 0.81, (0.7, 0.9), {}, audit_rows)
    agree = [Agreement(f"phrase-jbb@2/c5-{i}", 450, 3, 0.893, 0.725, {"tp": 309, "fp": 8, "fn": 40, "tn": 93},
                       kappa_ci=(0.65, 0.80)) for i in range(2)]  # fmt: skip
    return {
        "contrasts": contrast_block(contrasts),
        "methods": arm_block(arm_rows(arm_frame, "j@1", arms)),
        "audit": audit_block(audit),
        "judge eval": agreement_block(
            "judges vs labels", agree, [KappaDifference(450, -0.005, (-0.04, 0.03), 0.8)], 0.95
        ),
    }


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("table", ["contrasts", "methods", "audit", "judge eval"])
def test_every_wide_table_reads_at_80_and_120_columns(table, width):
    """No line is wider than the terminal; every number the table keeps is printed whole (a
    column left out is named in the caption); no row takes more than two lines; what every row
    shares is in the title."""
    from rich.console import Console

    from safestress.report.fit import fitted_block

    block = _wide_blocks()[table]
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(fitted_block(block, width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width, text
    left_out = " ".join(text.split()).partition("leaves out: ")[2]
    for row in block.cells:
        for col, cell in zip(block.head, row):
            if col not in block.text and col not in left_out:
                assert cell in text, (col, cell, text)
    # no name takes more than two lines: each text cell wrapped at the width its column was given
    from rich.text import Text

    drawn = fitted_block(block, width)
    if drawn.show_header:  # a table, not the one-block-per-row form (which has no columns to wrap in)
        for col in drawn.columns:
            if col.width is None:
                continue
            j = block.head.index(str(col.header))
            for row in block.cells:
                lines = console.render_lines(Text(row[j]), console.options.update_width(col.width))
                assert len(lines) <= 2, (col.header, row[j], col.width)
    if table in ("contrasts", "audit"):
        assert "model qwen2.5-coder-0.5b-instruct" in " ".join(text.split())


def test_several_long_model_names_get_short_labels_and_a_legend_at_80_columns():
    from rich.console import Console

    from safestress.report.tables import rate_table

    frame = _model_frame({"base": [0, 1, 2, 3, 4, 5], "defended": [0, 1]})
    names = {"base": "qwen2.5-coder-0.5b-instruct-dpo-s0", "defended": "qwen2.5-coder-0.5b-instruct-quada-s0"}
    frame["model"] = frame["model"].map(names)
    rates, _ = summarize(frame, "j@1")
    for width, short in ((80, True), (200, False)):
        console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(rate_table(rates, width))
        text = " ".join(console.export_text().split())
        legend = f"Models: M1 = {names['base']}; M2 = {names['defended']}."
        assert (legend in text) == short and ("M2" in text) == short
        assert all(name in text for name in names.values())  # named in full, in the rows or the legend


def test_terminal_tables_print_names_as_written_never_as_markup():
    """Condition names carry "[granularity=per_token]" where two stored labels collide
    (store.condition_labels); rich would read that as a style tag and drop it."""
    from dataclasses import replace

    from rich.console import Console

    from safestress.report.fit import fitted_table
    from safestress.report.tables import rate_table

    rates, _ = summarize(_frame(), "j@1")
    noisy = next(r for r in rates if r.perturbation != "none")
    noisy.condition = "quant bits=4 @ blocks.*.mlp.act [granularity=per_token]"
    rates.append(replace(noisy, condition="quant bits=4 @ blocks.*.mlp.act [granularity=per_tensor]"))
    for table in (
        rate_table(rates, 200),
        fitted_table("t [bold]x", ["name", "n"], [["quant [granularity=per_token]", "3"]], [], 80, text=("name",)),
    ):
        console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(table)
        text = console.export_text()
        assert "[granularity=per_token]" in text, text
    assert "t [bold]x" in text


def _draws_frame() -> pd.DataFrame:
    """Ten prompts; clean 2 flagged, the classified set 6, five draws 1–5 flagged (one with an
    incoherent answer)."""
    rows = _rows("clean", "none", 0.0, ["compliance"] * 2 + ["refusal"] * 8)
    rows += _rows("prune unit_class=scu", "prune", 1.0, ["compliance"] * 6 + ["refusal"] * 4)
    for seed in range(1, 6):
        labels = ["compliance"] * seed + ["refusal"] * (10 - seed)
        if seed == 3:
            labels[-1] = "incoherent"
        rows += _rows(f"prune unit_class=random seed={seed}", "prune", 1.0, labels)
    return pd.DataFrame(rows)


def test_draws_rank_the_classified_set_among_the_random_draws():
    from safestress import stats
    from safestress.report import markdown_draws
    from safestress.report.draws import draw_rows

    (row,) = draw_rows(_draws_frame(), "j@1", "unit_class=scu", "unit_class=random")
    assert (row.clean, row.classified) == (0.2, 0.6)
    assert row.draws == pytest.approx([0.1, 0.2, 3 / 9, 0.4, 0.5])  # the incoherent answer left out
    assert row.mean == pytest.approx(np.mean(row.draws)) and row.sd == pytest.approx(np.std(row.draws, ddof=1))
    # above all five draws: rank 1 of 6, and p = 1/6 is its floor, so the verdict cannot be "different"
    assert (row.rank, row.p, row.verdict) == (1, pytest.approx(1 / 6), "inconclusive")
    assert stats.rank_p(0.4, row.draws) == (3, 0.5)  # a tie counts against the classified set
    (all_rows,) = draw_rows(_draws_frame(), "j@1", "unit_class=scu", "unit_class=random", outcome="all")
    assert all_rows.draws[2] == pytest.approx(0.3)  # the incoherent answer counted as not flagged
    text = markdown_draws([row])
    assert "| 1 of 6 |" in text and "10.0, 20.0, 33.3, 40.0, 50.0" in text and "Holm family: the 1 rows" in text
    assert "at least 0.167" in text


def test_draws_refuse_a_selection_that_is_not_one_classified_condition():
    from safestress.report.draws import draw_rows

    frame = _draws_frame()
    with pytest.raises(SafestressError, match="exactly one condition"):
        draw_rows(frame, "j@1", "prune", "unit_class=random")
    with pytest.raises(SafestressError, match="no condition name contains"):
        draw_rows(frame, "j@1", "ucu", "unit_class=rnd")
    with pytest.raises(SafestressError, match="classified=TEXT"):
        draw_rows(frame, "j@1", "", "unit_class=random")
