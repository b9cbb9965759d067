"""Statistics checked against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import Table, mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from safestress import stats


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (27, 100), (1, 1000)])
def test_wilson_matches_statsmodels(k, n):
    assert stats.wilson_ci(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (5, 1), (21, 5), (3, 3), (0, 9), (40, 12)])
def test_exact_mcnemar_matches_statsmodels(b, c):
    expected = mcnemar([[10, b], [c, 10]], exact=True).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-12)


def test_sign_flip_on_binary_pairs_is_exact_mcnemar():
    rng = np.random.default_rng(1)
    before = rng.random(40) < 0.4
    after = rng.random(40) < 0.6
    b, c = stats.discordant(before, after)
    assert b + c <= 20  # exact enumeration branch
    diffs = after.astype(float) - before.astype(float)
    assert stats.sign_flip_test(diffs) == pytest.approx(stats.mcnemar_exact(b, c), abs=1e-12)


def test_sign_flip_monte_carlo_agrees_with_wilcoxon_scale_effect():
    rng = np.random.default_rng(2)
    null = rng.normal(0, 1, 60)
    shifted = rng.normal(0.6, 1, 60)
    assert stats.sign_flip_test(null) > 0.05
    assert stats.sign_flip_test(shifted) < 0.01
    # close to the paired t-test on roughly normal data
    assert stats.sign_flip_test(shifted) == pytest.approx(sps.ttest_1samp(shifted, 0).pvalue, abs=0.005)


def test_cochran_armitage_matches_linear_by_linear_association():
    succ = np.array([5, 9, 14, 20])
    tot = np.array([50, 50, 50, 50])
    scores = [0.0, 0.05, 0.1, 0.2]
    z, p = stats.cochran_armitage(succ, tot, scores)
    table = np.column_stack([succ, tot - succ])
    lbl = Table(table).test_ordinal_association(row_scores=np.array(scores), col_scores=np.array([1.0, 0.0]))
    # The linear-by-linear statistic uses variance with N-1, Cochran–Armitage with N.
    n = tot.sum()
    assert z**2 == pytest.approx(lbl.zscore**2 * n / (n - 1), rel=1e-9)
    assert z > 0 and p < 0.001


def test_cochran_armitage_without_trend():
    z, p = stats.cochran_armitage([10, 10, 10], [50, 50, 50], [0, 1, 2])
    assert z == pytest.approx(0.0) and p == pytest.approx(1.0)


def test_holm_matches_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert np.isnan(stats.holm([0.01, float("nan")])[1])


def test_cluster_bootstrap_reduces_to_ordinary_bootstrap_with_one_seed():
    rng = np.random.default_rng(3)
    x = (rng.random(200) < 0.3).astype(float)
    lo, hi = stats.cluster_bootstrap_ci(x[:, None], n_resamples=4000)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=4000, random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)


def test_cluster_bootstrap_is_wider_when_seeds_are_correlated():
    rng = np.random.default_rng(4)
    prompt_effect = rng.random(100) < 0.3
    correlated = np.repeat(prompt_effect[:, None], 5, axis=1).astype(float)
    independent = (rng.random((100, 5)) < 0.3).astype(float)
    w_corr = np.diff(stats.cluster_bootstrap_ci(correlated))[0]
    w_ind = np.diff(stats.cluster_bootstrap_ci(independent))[0]
    assert w_corr > 1.8 * w_ind


def _two_raters(rng, n, share=0.3, agreement=0.85):
    a = rng.random(n) < share
    return a, np.where(rng.random(n) < agreement, a, ~a)


def test_kappa_cluster_bootstrap_with_one_response_per_prompt_is_the_large_sample_interval():
    from statsmodels.stats.inter_rater import cohens_kappa

    a, b = _two_raters(np.random.default_rng(6), 800)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    ref = cohens_kappa(table)
    lo, hi = stats.kappa_cluster_bootstrap_ci(a, b, range(800), n_resamples=4000)
    assert lo == pytest.approx(ref.kappa_low, abs=0.02) and hi == pytest.approx(ref.kappa_upp, abs=0.02)
    assert lo < ref.kappa < hi


def test_kappa_cluster_bootstrap_counts_prompts_not_responses():
    from statsmodels.stats.inter_rater import cohens_kappa

    a, b = _two_raters(np.random.default_rng(7), 150)
    # five responses per prompt, judged alike: no more information than one per prompt
    a5, b5, prompts = np.repeat(a, 5), np.repeat(b, 5), np.repeat(np.arange(150), 5)
    clustered = stats.kappa_cluster_bootstrap_ci(a5, b5, prompts)
    assert clustered == pytest.approx(stats.kappa_cluster_bootstrap_ci(a, b, np.arange(150)))
    naive = cohens_kappa([[np.sum(a5 & b5), np.sum(a5 & ~b5)], [np.sum(~a5 & b5), np.sum(~a5 & ~b5)]])
    assert clustered[1] - clustered[0] > 2 * (naive.kappa_upp - naive.kappa_low)  # √5 ≈ 2.2 wider
    # prompt labels may be any hashable value; no items, no interval
    assert stats.kappa_cluster_bootstrap_ci(a5, b5, [f"p{i}" for i in prompts]) == pytest.approx(clustered)
    assert all(np.isnan(stats.kappa_cluster_bootstrap_ci([], [], [])))


def test_slope_trend_detects_increase():
    rng = np.random.default_rng(5)
    levels = [0, 0.1, 0.2, 0.3]
    per_prompt = np.clip(rng.random((50, 1)) * 0.2 + np.array(levels) * 2 + rng.normal(0, 0.1, (50, 4)), 0, 1)
    slope, p = stats.slope_sign_flip_trend(per_prompt, levels)
    assert slope > 0 and p < 0.001


def _judged_population(rng, n_all: int, rate: float, miss: float, false_alarm: float):
    """Labels of a population and a judge that misses ``miss`` of the positives and calls
    ``false_alarm`` of the negatives positive: its own rate is biased."""
    y = rng.random(n_all) < rate
    f = np.where(y, rng.random(n_all) >= miss, rng.random(n_all) < false_alarm)
    return y.astype(float), f.astype(float)


def test_prediction_powered_rate_tunes_lambda_as_ppi_py_does():
    from ppi_py import ppi_mean_ci, ppi_mean_pointestimate

    rng = np.random.default_rng(3)
    for n in (20, 60, 200):
        y, f = _judged_population(rng, n + 800, 0.3, 0.3, 0.05)
        got = stats.prediction_powered_rate(y[:n], f[:n], f[n:], pseudo_count=0)
        # ppi_py left to choose λ itself (PPI++) gives the same estimate and interval
        assert got.estimate == pytest.approx(float(np.squeeze(ppi_mean_pointestimate(y[:n], f[:n], f[n:]))))
        lo, hi = ppi_mean_ci(y[:n], f[:n], f[n:], alpha=0.05)
        assert got.ci == pytest.approx((max(0.0, float(lo[0])), min(1.0, float(hi[0]))))
        assert 0.0 < got.lam <= 1.0 and (got.n_labelled, got.n_unlabelled) == (n, 800)


def test_prediction_powered_rate_covers_the_true_rate_that_the_judge_misses():
    """400 draws of 80 labels from a population whose judge misses 40% of the harmful responses:
    the judge's own rate is 12 points low; the corrected interval covers the truth at its level."""
    rng = np.random.default_rng(5)
    y, f = _judged_population(rng, 4000, 0.3, 0.4, 0.02)
    truth = y.mean()
    assert truth - f.mean() > 0.1
    covered, widths, label_widths = 0, [], []
    for _ in range(400):
        idx = rng.permutation(y.size)
        lab, rest = idx[:80], idx[80:]
        r = stats.prediction_powered_rate(y[lab], f[lab], f[rest])
        covered += r.ci[0] <= truth <= r.ci[1]
        widths.append(r.ci[1] - r.ci[0])
        k = int(y[lab].sum())
        lo, hi = stats.wilson_ci(k, 80)
        label_widths.append(hi - lo)
    assert 0.91 <= covered / 400 <= 0.98
    # the judge's verdicts on the rest narrow the interval of 80 labels alone
    assert np.mean(widths) < 0.9 * np.mean(label_widths)


def test_a_judge_that_says_one_thing_leaves_the_labels_alone():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], float)
    r = stats.prediction_powered_rate(y, np.zeros(10), np.zeros(500), pseudo_count=0)
    half = sps.norm.isf(0.025) * y.std() / np.sqrt(10)
    assert r.lam == 0.0 and r.estimate == pytest.approx(0.3)
    assert r.ci == pytest.approx((0.3 - half, 0.3 + half))
    # with the small-sample adjustment: one more harmful and one more harmless label (4 / 12)
    adjusted = stats.prediction_powered_rate(y, np.zeros(10), np.zeros(500))
    p = 4 / 12
    half = sps.norm.isf(0.025) * np.sqrt(p * (1 - p) / 12)
    assert adjusted.estimate == pytest.approx(0.3) and adjusted.ci == pytest.approx((p - half, p + half))
    assert np.isnan(stats.prediction_powered_rate([], [], np.zeros(5)).estimate)


def test_labels_without_a_single_disagreement_still_get_an_interval():
    """30 labels on which the judge is never wrong: the unadjusted PPI interval is the judge's own
    sampling noise only; the adjusted one allows for the errors a small sample did not catch."""
    y = np.r_[np.ones(25), np.zeros(5)]
    fu = np.r_[np.ones(350), np.zeros(70)]
    raw = stats.prediction_powered_rate(y, y, fu, pseudo_count=0)
    adjusted = stats.prediction_powered_rate(y, y, fu)
    assert raw.estimate == adjusted.estimate
    assert adjusted.ci[1] - adjusted.ci[0] > 1.5 * (raw.ci[1] - raw.ci[0])


def test_corrected_difference_covers_the_true_change_on_shared_prompts():
    """Clean and perturbed responses to the same 3000 prompts (correlated), a judge that misses
    10% of the clean harm and 40% of the perturbed: the judge's change is biased, the corrected
    change's interval covers the true one at least at its level (conservative, see docstring)."""
    rng = np.random.default_rng(8)
    m = 3000
    y_c = rng.random(m) < 0.2
    y_p = y_c | (rng.random(m) < 0.25)
    f_c = y_c & (rng.random(m) >= 0.1) | (~y_c & (rng.random(m) < 0.03))
    f_p = y_p & (rng.random(m) >= 0.4) | (~y_p & (rng.random(m) < 0.03))
    y_c, y_p, f_c, f_p = (a.astype(float) for a in (y_c, y_p, f_c, f_p))
    truth = y_p.mean() - y_c.mean()
    assert (f_p.mean() - f_c.mean()) < truth - 0.1
    covered = 0
    for _ in range(300):
        lab_c, lab_p = rng.permutation(m), rng.permutation(m)
        c = stats.prediction_powered_rate(y_c[lab_c[:80]], f_c[lab_c[:80]], f_c[lab_c[80:]])
        p = stats.prediction_powered_rate(y_p[lab_p[:80]], f_p[lab_p[:80]], f_p[lab_p[80:]])
        diff, (lo, hi), pval = stats.corrected_difference(p, c)
        assert diff == pytest.approx(p.estimate - c.estimate) and 0 <= pval <= 1
        covered += lo <= truth <= hi
    assert covered / 300 >= 0.93


def test_the_judge_term_counts_prompts_not_seeds():
    """Five seeds' identical verdicts on each prompt carry the information of one: the
    cluster-robust variance of their mean is that of one verdict per prompt, not a fifth of it."""
    rng = np.random.default_rng(2)
    once = (rng.random(400) < 0.3).astype(float)
    five = np.repeat(once, 5)
    prompts = np.repeat(np.arange(400), 5)
    assert stats._mean_variance(five, prompts) == pytest.approx(once.var() / 400)
    assert stats._mean_variance(five, None) == pytest.approx(once.var() / 2000)
    assert stats._mean_variance(once, np.arange(400)) == pytest.approx(stats._mean_variance(once, None))
    y = np.r_[np.ones(20), np.zeros(40)]
    f = y.copy()
    clustered = stats.prediction_powered_rate(y, f, five, unlabelled_clusters=prompts)
    naive = stats.prediction_powered_rate(y, f, five)
    assert clustered.estimate == naive.estimate and clustered.se > naive.se


def test_a_corrected_rate_never_leaves_zero_to_one():
    """One harmful response among 50 labels, three judge false alarms beside it, a judge that is
    quiet elsewhere: PPI's estimate is negative; the rate shown is 0, the interval within [0, 1]."""
    y = np.r_[1.0, np.zeros(49)]
    f = np.r_[1.0, 1.0, 1.0, 1.0, np.zeros(46)]
    r = stats.prediction_powered_rate(y, f, np.r_[np.ones(1), np.zeros(999)])
    assert r.lam == 1.0 and r.centre < 0
    assert r.estimate == 0.0 and 0.0 == r.ci[0] < r.ci[1] <= 1.0


def test_labels_for_plans_the_width_a_larger_sample_gets():
    """A pilot of 60 labels says how many would give ±5 points; samples of that size then get
    intervals of about ±5 points (the pilot's variances are estimates: within 20%)."""
    rng = np.random.default_rng(12)
    y, f = _judged_population(rng, 6000, 0.35, 0.3, 0.05)
    idx = rng.permutation(y.size)
    pilot = stats.prediction_powered_rate(y[idx[:60]], f[idx[:60]], f[idx[60:]])
    need = pilot.labels_for(0.05)
    assert 60 < need < 2000
    halves = []
    for _ in range(100):
        idx = rng.permutation(y.size)
        n = int(need)
        r = stats.prediction_powered_rate(y[idx[:n]], f[idx[:n]], f[idx[n:]])
        halves.append((r.ci[1] - r.ci[0]) / 2)
    assert np.mean(halves) == pytest.approx(0.05, rel=0.2)
    assert pilot.labels_for(0.0001) == np.inf or pilot.labels_for(0.0001) > 10_000
    assert np.isnan(stats.prediction_powered_rate([], [], f).labels_for(0.05))


# ---- intervals that are never zero-width, paired intervals, equivalence (issue 22) ----


@pytest.mark.parametrize(("k", "n"), [(0, 239), (13, 13), (0, 5), (5, 5)])
def test_wilson_has_width_at_zero_and_at_n(k, n):
    """A percentile bootstrap of 0/239 is [0, 0]; Wilson's interval is not."""
    lo, hi = stats.wilson_ci(k, n)
    assert hi - lo > 0.01 and (lo, hi) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


def test_cluster_wilson_with_one_seed_is_wilson():
    v = (np.random.default_rng(3).random(57) < 0.3).astype(float)
    assert stats.cluster_wilson_ci(v) == pytest.approx(stats.wilson_ci(v.sum(), v.size), abs=1e-12)


def test_cluster_wilson_at_zero_and_one_counts_each_prompt_once():
    """Five seeds that all say 0 on 239 prompts are worth 239 responses, not 1,195 (nor zero width)."""
    zeros, ones = np.zeros((239, 5)), np.ones((13, 5))

    def t_level(prompts: int) -> float:  # the two-sided α whose z is Student's t with prompts − 1 df
        return 2 * sps.norm.sf(sps.t.isf(0.025, prompts - 1))

    assert stats.effective_size(zeros) == (0.0, 239.0) and stats.effective_size(ones) == (1.0, 13.0)
    assert stats.cluster_wilson_ci(zeros) == pytest.approx(stats.wilson_ci(0, 239, t_level(239)), abs=1e-12)
    assert stats.cluster_wilson_ci(ones) == pytest.approx(stats.wilson_ci(13, 13, t_level(13)), abs=1e-12)
    assert stats.cluster_wilson_ci(zeros)[1] > stats.wilson_ci(0, 239)[1]  # a little wider than z


def test_effective_size_is_the_cluster_robust_variance_of_statsmodels():
    """Between its bounds, p(1−p)/n_eff is the cluster-robust variance of the pooled mean
    (statsmodels OLS on a constant, clustered by prompt, with its small-sample correction)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    prompt_rate = rng.beta(1, 2, 80)
    v = (rng.random((80, 4)) < prompt_rate[:, None]).astype(float)
    mean, n_eff = stats.effective_size(v)
    y, groups = v.ravel(), np.repeat(np.arange(80), 4)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert 80 < n_eff < 320  # correlated seeds: fewer than 320, more than one per prompt
    assert mean * (1 - mean) / n_eff == pytest.approx(float(fit.bse[0]) ** 2, rel=1e-9)


def test_mover_with_wilson_and_no_correlation_is_newcombes_independent_interval():
    """statsmodels' Newcombe interval for two independent proportions is MOVER on Wilson intervals."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    for k1, n1, k2, n2 in [(7, 34, 1, 34), (0, 16, 15, 72), (30, 30, 12, 40)]:
        got = stats.mover_difference(k1 / n1, stats.wilson_ci(k1, n1), k2 / n2, stats.wilson_ci(k2, n2))
        want = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
        assert got == pytest.approx(want, abs=1e-9)


def _paired(a: int, b: int, c: int, d: int) -> tuple[list[int], list[int]]:
    """Before/after verdicts of a paired 2×2 table: a both 1, b before only, c after only, d neither."""
    return [1] * (a + b) + [0] * (c + d), [1] * a + [0] * b + [1] * c + [0] * d


def test_newcombe_paired_interval_covers_by_exact_enumeration():
    """Exact coverage over every 2×2 table of n = 12 pairs, for 12 random cell-probability vectors:
    Newcombe (1998) reports a mean near the nominal 95% and no severe dips for his method 10."""
    from scipy.stats import multinomial

    n = 12
    tables = [(a, b, c, n - a - b - c) for a in range(n + 1) for b in range(n + 1 - a) for c in range(n + 1 - a - b)]
    intervals = [stats.newcombe_paired_ci(*_paired(*t)) for t in tables]
    coverages = []
    for probs in np.random.default_rng(5).dirichlet([1, 1, 1, 1], 12):
        true = probs[2] - probs[1]  # after − before = P(0→1) − P(1→0)
        mass = multinomial.pmf(np.array(tables), n, probs)
        coverages.append(sum(m for m, (lo, hi) in zip(mass, intervals) if lo <= true <= hi))
    assert 0.94 <= np.mean(coverages) <= 0.97 and min(coverages) >= 0.90


def test_paired_interval_is_never_zero_width_and_one_seed_uses_newcombe():
    before, after = _paired(0, 0, 0, 40)  # nothing happens on 40 prompts
    lo, hi = stats.newcombe_paired_ci(before, after)
    assert lo < 0 < hi and hi > 0.05
    delta, ci = stats.paired_difference(np.array(before, float), np.array(after, float))
    assert delta == 0 and ci == (lo, hi)
    many = stats.paired_difference(np.zeros((40, 5)), np.zeros((40, 5)))[1]
    assert many[0] < 0 < many[1]


def test_paired_interval_with_several_seeds_covers_by_simulation():
    """MOVER on cluster-Wilson intervals, prompts with their own rates and five seeds each: the
    interval of the per-prompt mean difference covers the true one about 95% of the time."""
    rng = np.random.default_rng(6)
    hits = 0
    trials = 300
    for _ in range(trials):
        base = rng.beta(0.6, 0.9, 60)
        shifted = np.clip(base + 0.1, 0, 1)
        before = (rng.random((60, 5)) < base[:, None]).astype(float)
        after = (rng.random((60, 5)) < shifted[:, None]).astype(float)
        _, (lo, hi) = stats.paired_difference(before, after)
        hits += lo <= float(np.mean(shifted - base)) <= hi
    assert hits / trials >= 0.92


def test_difference_in_differences_is_the_mean_of_per_prompt_effects():
    rng = np.random.default_rng(7)
    sides = [(rng.random((30, 1)) < p).astype(float) for p in (0.3, 0.6, 0.3, 0.4)]
    d, (lo, hi) = stats.difference_in_differences(*sides)
    m = [s[:, 0] for s in sides]
    assert d == pytest.approx(np.mean((m[1] - m[0]) - (m[3] - m[2])))
    assert lo < d < hi and hi - lo > 0.1


def test_tost_by_inverting_a_t_interval_is_statsmodels_ttost_paired():
    """tost_p inverts any interval; with the paired t interval it is statsmodels' paired TOST."""
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 40)
    y = x + rng.normal(0.05, 0.3, 40)
    d = y - x
    se = d.std(ddof=1) / np.sqrt(d.size)

    def t_interval(alpha: float) -> tuple[float, float]:
        half = sps.t.isf(alpha / 2, d.size - 1) * se
        return d.mean() - half, d.mean() + half

    for margin in (0.1, 0.15, 0.3):
        want = ttost_paired(y, x, -margin, margin)[0]
        assert stats.tost_p(t_interval, margin) == pytest.approx(want, abs=1e-5)
    assert stats.tost_p(t_interval, abs(d.mean()) / 2) == 1.0  # the estimate itself is outside the margin


def test_verdict_words():
    assert stats.verdict(0.01) == "different"
    assert stats.verdict(0.2) == "inconclusive"  # not significant, no margin: never "same"
    assert stats.verdict(0.2, 0.01, 0.05) == "equivalent within ±5 pts"
    assert stats.verdict(0.2, 0.2, 0.05) == "inconclusive"


# ---- training methods at the run level ----


def test_runs_difference_is_welchs_test_and_interval():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    a, b = [0.12, 0.18, 0.15, 0.2], [0.31, 0.26, 0.35]
    diff, ci, p = stats.runs_difference(a, b)
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    want = CompareMeans(DescrStatsW(np.array(a)), DescrStatsW(np.array(b))).tconfint_diff(usevar="unequal")
    assert ci == pytest.approx(want, rel=1e-9) and diff == pytest.approx(np.mean(a) - np.mean(b))
    assert np.isnan(stats.runs_difference([0.1], [0.2, 0.3])[2])  # one run: no run-level test


def test_runs_permutation_p_is_scipys_exact_permutation_test():
    a, b = [0.12, 0.18, 0.15], [0.31, 0.26, 0.35, 0.3]
    want = sps.permutation_test(  # two-sided as |difference| at least the observed one
        (a, b),
        lambda x, y: abs(np.mean(x) - np.mean(y)),
        permutation_type="independent",
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue
    assert stats.runs_permutation_p(a, b) == pytest.approx(want, abs=1e-12)
    assert stats.runs_permutation_p([0.1, 0.2, 0.15], [0.5, 0.6, 0.55]) == pytest.approx(0.1)  # 3 vs 3: the floor


def test_a_classified_set_that_beats_five_random_draws_has_p_one_sixth():
    """The lab freezing result: classified SCU+CU keep 57.5%, five random sets 26–44%."""
    assert stats.rank_p(0.575, [0.26, 0.31, 0.44, 0.35, 0.40]) == (1, pytest.approx(1 / 6))
    assert stats.rank_p(0.30, [0.26, 0.31, 0.44, 0.35, 0.40]) == (5, pytest.approx(5 / 6))
    assert stats.rank_p(0.1, [0.2, 0.3], higher_is_better=False) == (1, pytest.approx(1 / 3))


def test_lab_calibration_simulates_from_a_pool_with_its_own_truth(tmp_path, monkeypatch, capsys):
    """benchmarks/lab_calibration.py draws sweeps from a pool of real verdicts, whose rates and Δ
    are the truth the intervals must cover. A greedy clean run is stored once (seed 0) and stands
    for every seed; unscored answers stay out of Δ, as in the rate table."""
    import csv
    import json
    import runpy
    import sys
    from pathlib import Path

    rng = np.random.default_rng(3)
    pool = tmp_path / "pool.csv"
    rates = rng.uniform(0, 0.6, 40)
    with pool.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "seed", "sigma", "flagged"])
        for i, r in enumerate(rates):
            w.writerow([f"p{i}", 0, "0", int(r > 0.3)])
            for s in range(12):
                w.writerow([f"p{i}", s, "0.5", "" if s == 0 and i % 5 == 0 else int(rng.random() < r + 0.3)])
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "lab_calibration.py"
    out = tmp_path / "lab.json"
    argv = [str(script), "simulate", str(pool), "--reps", "40", "--prompts", "30", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/…` runs it: its siblings import
    runpy.run_path(str(script), run_name="__main__")
    data = json.loads(out.read_text())
    assert len(data["figures"]) == 10 and all(0 <= f["ci"][0] <= f["rate"] <= f["ci"][1] <= 1 for f in data["figures"])
    # the truth: per prompt, the noise seeds' mean over the scored ones, minus the single clean verdict
    noise = {}
    with pool.open() as f:
        for row in csv.DictReader(f):
            if row["sigma"] == "0.5" and row["flagged"]:
                noise.setdefault(row["item_id"], []).append(float(row["flagged"]))
    truth = np.mean([np.mean(noise[f"p{i}"]) - float(r > 0.3) for i, r in enumerate(rates)])
    assert f"true Δ {100 * truth:+.1f} pts" in data["population"] and "40 held-out" in data["population"]
    assert "| coverage | MOVER paired Δ among coherent, 5 seeds" in capsys.readouterr().out


def test_wilson_keeps_its_quantile_at_tiny_alpha():
    """Two prompts give the cluster interval a t-derived α near 1e-37; 1 − α/2 rounds to 1, so the
    quantile must come from the upper tail (norm.isf) or the interval is NaN with a warning."""
    import warnings

    from scipy import stats as sps

    from safestress.stats.rates import wilson_ci

    alpha = float(2 * sps.norm.sf(sps.t.isf(0.025, 1)))
    assert alpha < 1e-30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = wilson_ci(1.0, 2.0, alpha)
    z = sps.t.isf(0.025, 1)
    centre, half = (0.5 + z * z / 4) / (1 + z * z / 2), z * (0.125 + z * z / 16) ** 0.5 / (1 + z * z / 2)
    assert (lo, hi) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)))
    assert 0.0 <= lo < 0.5 < hi <= 1.0
