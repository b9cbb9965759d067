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
