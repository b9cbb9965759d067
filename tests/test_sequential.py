"""Sequential sweeps: the confidence sequence's guarantees, and a sweep that stops conditions early,
resumes after a kill where an uninterrupted run stops, and reports where each stopped."""

from __future__ import annotations

import math

import numpy as np
import pytest

import safestress as ss
from safestress.execution import execute
from safestress.sequential import looks, prompt_order, replay, run_sequential
from safestress.stats.sequential import (
    PRIOR_MEAN,
    PRIOR_VARIANCE,
    TRUNCATION,
    confidence_sequence,
    interim_decision,
    log_capital,
    rejected,
)
from safestress.store import read_export


def _capital_by_hand(values, mean, alpha):
    """The hedged capital written as the definition reads, one observation at a time."""
    x_all = [(v + 1) / 2 for v in values]
    m = (mean + 1) / 2
    up = down = 1.0
    mu, var, out = PRIOR_MEAN, PRIOR_VARIANCE, []
    total = sq = 0.0
    for t, x in enumerate(x_all, start=1):
        bet = math.sqrt(2 * math.log(2 / alpha) / (var * t * math.log(1 + t)))
        up *= 1 + min(bet, TRUNCATION / m if m > 0 else math.inf) * (x - m)
        down *= 1 - min(bet, TRUNCATION / (1 - m) if m < 1 else math.inf) * (x - m)
        out.append(math.log((up + down) / 2))
        sq += (x - mu) ** 2
        total += x
        mu, var = (PRIOR_MEAN + total) / (t + 1), (PRIOR_VARIANCE + sq) / (t + 1)
    return out


def test_capital_matches_its_definition():
    rng = np.random.default_rng(1)
    values = rng.choice([-1.0, 0.0, 0.0, 1.0, 0.5], size=40)
    for mean in (-0.9, -0.2, 0.0, 0.3, 1.0):
        np.testing.assert_allclose(
            log_capital(values, [mean], 0.01)[:, 0], _capital_by_hand(values, mean, 0.01), atol=1e-12
        )


def test_confidence_sequence_covers_at_every_sample_size_at_once():
    """Time-uniform coverage: over whole sequences, the true mean is ever excluded in ≤ α of them
    (within binomial error), although every prefix is looked at."""
    rng = np.random.default_rng(7)
    alpha, runs, n = 0.1, 400, 150
    for p_up, p_down in ((0.1, 0.1), (0.35, 0.05), (0.0, 0.0)):
        truth = p_up - p_down
        misses = 0
        for _ in range(runs):
            u = rng.random(n)
            values = np.where(u < p_up, 1.0, np.where(u < p_up + p_down, -1.0, 0.0))
            misses += bool(rejected(values, [truth], alpha)[0])
        assert misses / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), (p_up, p_down, misses)


def test_interim_decisions_and_interval():
    effect = np.array([1.0, 0.0, 1.0, 0.0, 0.0] * 40)  # +40 points
    assert interim_decision(effect[:5], 0.05) is None  # five prompts decide nothing
    assert interim_decision(effect, 0.05) == "different"
    low, high = confidence_sequence(effect, 0.05)
    assert 0 < low < 0.4 < high < 1
    same = np.zeros(200)
    assert interim_decision(same, 0.05) is None  # no margin: no equivalence claim
    assert interim_decision(same, 0.05, margin=0.1) == "equivalent"
    assert interim_decision(same[:10], 0.05, margin=0.1) is None
    # a mean just beyond the margin is never called equivalent, however many prompts
    beyond = np.array([1.0] + [0.0] * 7)  # +12.5 points
    assert interim_decision(np.tile(beyond, 60), 0.05, margin=0.1) != "equivalent"
    with pytest.raises(ValueError):
        log_capital([2.0], [0.0], 0.05)


def test_a_stopped_row_shows_the_interval_behind_its_word():
    """After a data-chosen stop a fixed-sample interval undercovers: a row the confidence sequence
    decided shows the sequence's 95% interval (wider, and agreeing with the word); a row the final
    test decided keeps the fixed-sample interval of that test."""
    from safestress.report.summary import RateRow
    from safestress.report.tables import rate_cells
    from safestress.sequential import Decision, SequentialResult, annotate

    values = [1.0] * 14 + [0.0] * 6  # 20 pairs, 14 changed upwards
    low, high = confidence_sequence(values, 0.05)
    assert 0 < low < 0.7 < high <= 1 and interim_decision(values, 0.05 / 2 / 2) == "different"

    def row(condition):
        return RateRow(
            model="m", dataset="d", judge="j", metric="complied", condition=condition, perturbation="gaussian",
            sites="s", strength=1.0, n=20, n_prompts=20, seeds=1, value=0.8, ci_low=0.6, ci_high=0.9,
            incoherent=0.0, unscored=0.0, delta=0.7, p=1e-4, p_holm=1e-4, test="x", delta_ci_low=0.45,
            delta_ci_high=0.83,
        )  # fmt: skip

    rows = [row("a"), row("b")]
    decided = [
        Decision("m", "d", "ha", "j", "different", 1, 20, 100, 20, 0.7, low, high, "confidence sequence"),
        Decision("m", "d", "hb", "j", "different", 5, 100, 100, 20, 0.7, low, high, "final test"),
    ]
    annotate(rows, SequentialResult(plan=None, decisions=decided, contrasts=2), {"ha": "a", "hb": "b"})
    by_cs, by_final = rows
    assert (by_cs.delta_ci_low, by_cs.delta_ci_high) == (low, high) and low < 0.45
    assert (by_final.delta_ci_low, by_final.delta_ci_high) == (0.45, 0.83)
    cells = rate_cells(by_cs)
    assert cells[5] == f"+70.0 [{100 * low:+.1f}–{100 * high:+.1f}]" and "stopped at 20/100" in cells[7]
    assert math.isnan(by_cs.p_holm) and math.isnan(by_final.p_holm)


def test_rounds_take_a_fixed_random_order():
    ds = ss.load_dataset("lab-harmful", limit=30)
    order = prompt_order(ds)
    assert sorted(order) == sorted(i.id for i in ds.items) and order != [i.id for i in ds.items]
    assert order == prompt_order(ss.load_dataset("lab-harmful", limit=30))
    assert looks(45, 20) == [20, 40, 45] and looks(20, 20) == [20] and looks(5, 20) == [5]


def _config(lab_path, store, **kw):
    args = dict(
        models=[str(lab_path)],
        dataset=["lab-harmful"],
        limit=60,
        sigma=[0, 0.05, 3.0],
        scale="relative",
        sites=["blocks.*.resid_post"],
        judge=["lab"],
        max_new_tokens=16,
        sequential=True,
        round_size=10,
        margin=30,
        store=str(store),
        plot=False,
    )
    args.update(kw)
    return ss.build_config(**args)


def _run(cfg, execute_fn=execute):
    plan = ss.plan_sweep(cfg)
    with ss.Store(cfg.store) as st:
        result = run_sequential(plan, st, execute_fn)
        keys = st.existing_keys(t.key for t in plan.tasks)
    return result, keys


class Killed(Exception):
    pass


def test_sequential_sweep_stops_early_and_resumes_where_it_would_have_stopped(lab_path, tmp_path):
    full, full_keys = _run(_config(lab_path, tmp_path / "a.db"))
    stops = {(d.config_hash, d.judge): (d.word, d.look, d.prompts, d.by) for d in full.decisions}
    assert len(stops) == 2
    # σ 0.05 (relative) changes no verdict: equivalent within ±30 points after a few rounds
    # σ 3 breaks most answers: too few coherent pairs to decide before the prompts run out
    assert sorted((w, by) for w, _, _, by in stops.values()) == [
        ("equivalent within ±30 pts", "confidence sequence"),
        ("inconclusive", "final test"),
    ], stops
    assert sorted(p for _, _, p, _ in stops.values())[0] < 60
    assert full.generated == len(full_keys) < 3 * 60
    # the stored rows alone, through an export (what a documented table reads), give the same stops
    plan = ss.plan_sweep(_config(lab_path, tmp_path / "a.db"))
    with ss.Store(tmp_path / "a.db") as st:
        st.export(tmp_path / "rows.csv", full.plan.frame(st))
    rows = read_export(tmp_path / "rows.csv")
    order = {ds.name: prompt_order(ds) for ds in plan.datasets}
    replayed = replay(rows, order, 10, 30)
    assert {(d.config_hash, d.judge): (d.word, d.look, d.prompts, d.by) for d in replayed} == stops

    # killed in the second round: the rerun replays round one from the store and stops alike
    calls = {"n": 0}

    def dies_in_round_two(plan, store, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:

            def kill(done, total):
                if done > 0:
                    raise Killed

            return execute(plan, store, kill)
        return execute(plan, store, progress)

    cfg = _config(lab_path, tmp_path / "b.db", batch_size=4)
    with pytest.raises(Killed):
        _run(cfg, dies_in_round_two)
    resumed, keys = _run(cfg)
    assert {(d.config_hash, d.judge): (d.word, d.look, d.prompts, d.by) for d in resumed.decisions} == stops
    assert keys == full_keys
    again, _ = _run(cfg)
    assert again.generated == 0 and len(again.plan.tasks) == len(full.plan.tasks)


def test_sequential_run_reports_where_each_condition_stopped(lab_path, tmp_path, run_cli):
    store = tmp_path / "s.db"
    args = ["run", "--model", str(lab_path), "--dataset", "lab-harmful", "--limit", "40", "--judge", "lab"]
    args += ["--sigma", "0,0.05", "--scale", "relative", "--max-new-tokens", "12", "--no-plot", "--format", "csv"]
    args += ["--sequential", "--round-size", "10", "--margin", "30", "--store", str(store)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    row = [line for line in proc.stdout.splitlines() if "gaussian" in line]
    assert row and "equivalent within ±30 pts" in row[0] and "confidence sequence" in row[0]
    # `results` reads the store with fixed-sample tests, and says why they do not hold here
    shown = run_cli("results", "--store", str(store), "--format", "csv")
    assert shown.returncode == 0 and "sequential sweep stopped 1 condition" in shown.stderr
    # without the clean run there is nothing to stop against: refused before a store exists
    bad = [a if a != "0,0.05" else "0.05" for a in args[:-1]] + [str(tmp_path / "t.db")]
    proc = run_cli(*bad)
    assert proc.returncode != 0 and "clean run" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "t.db").exists()
