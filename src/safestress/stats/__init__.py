"""Statistics for rates, paired contrasts, trends, equivalence and judge agreement: pure functions
of counts and arrays, each checked against scipy/statsmodels or exact enumeration in
``tests/test_stats.py`` and calibrated by simulation in ``benchmarks/stat_calibration.py``.

Conventions, and why (details in ``docs/statistics.md``):

* The unit of analysis is the **prompt**. With one seed, observations are independent across
  prompts: rates get Wilson intervals, clean-vs-perturbed pairs an exact McNemar test and
  Newcombe's paired interval, and the trend across σ a Cochran–Armitage test.
* With several seeds, the observations of one prompt are correlated, so those would be
  anti-conservative. Then a rate's interval is Wilson on the effective sample size, the paired
  test a sign-flip test on per-prompt mean differences (with one seed exactly the exact McNemar
  test), and the paired interval MOVER on the two cluster-Wilson intervals.
* No interval is zero-width: 0/239 and 13/13 have honest intervals.
* p-values are Holm-corrected within a family that each table declares; "equivalent" needs a
  TOST within a declared margin (:mod:`safestress.stats.equivalence`).
"""

from safestress.stats.agreement import kappa_cluster_bootstrap_ci, kappa_from_counts
from safestress.stats.equivalence import equivalent_within, rejects, tost_p, verdict
from safestress.stats.multiplicity import holm
from safestress.stats.paired import (
    difference_in_differences,
    discordant,
    mcnemar_exact,
    mover_difference,
    newcombe_paired_ci,
    paired_difference,
    paired_test,
    sign_flip_test,
)
from safestress.stats.ppi import (
    CorrectedRate,
    _mean_variance,
    corrected_difference,
    ppi_power,
    prediction_powered_rate,
)
from safestress.stats.rates import cluster_bootstrap_ci, cluster_wilson_ci, effective_size, wilson_ci
from safestress.stats.runs import rank_p, runs_difference, runs_permutation_p
from safestress.stats.trend import cochran_armitage, slope_sign_flip_trend

__all__ = [
    "CorrectedRate",
    "_mean_variance",
    "cluster_bootstrap_ci",
    "cluster_wilson_ci",
    "cochran_armitage",
    "corrected_difference",
    "difference_in_differences",
    "discordant",
    "effective_size",
    "equivalent_within",
    "holm",
    "kappa_cluster_bootstrap_ci",
    "kappa_from_counts",
    "mcnemar_exact",
    "mover_difference",
    "newcombe_paired_ci",
    "paired_difference",
    "paired_test",
    "ppi_power",
    "prediction_powered_rate",
    "rank_p",
    "rejects",
    "runs_difference",
    "runs_permutation_p",
    "sign_flip_test",
    "slope_sign_flip_trend",
    "tost_p",
    "verdict",
    "wilson_ci",
]
