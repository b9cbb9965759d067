"""Generation on Ray workers gives the rows of a local run, row for row, into the same store."""

from __future__ import annotations

import sqlite3
import sys

import pytest

import safestress as ss
from safestress.errors import SafestressError

QUERY = "SELECT key, response, n_tokens, stopped FROM generations ORDER BY key"
VERDICTS = "SELECT key, judge, score, label, harmful FROM verdicts ORDER BY key, judge"


def _cfg(tiny_dir, prompts_csv, store, **kw):
    return ss.build_config(models=[str(tiny_dir)], dataset=[f"csv:{prompts_csv}:text"], sigma=[0.0, 0.5],
                           seeds=2, max_new_tokens=6, batch_size=2, template="raw", judge=["refusal"],
                           store=str(store), **kw)  # fmt: skip


def test_two_ray_workers_store_exactly_the_local_rows_and_resume(tiny_dir, prompts_csv, tmp_path):
    pytest.importorskip("ray")
    local = _cfg(tiny_dir, prompts_csv, tmp_path / "local.db")
    with ss.Store(local.store) as store:
        ss.execute(ss.plan_sweep(local), store)
    dist = _cfg(tiny_dir, prompts_csv, tmp_path / "dist.db", workers=2)
    seen = []
    with ss.Store(dist.store) as store:
        counts = ss.execute(ss.plan_sweep(dist), store, progress=lambda done, total: seen.append((done, total)))
    # 6 prompts × (1 greedy clean row + 2 seeds at σ = 0.5), in shards of 2 × 4 rows
    assert counts["generated"] == 18 and seen[-1] == (18, 18) and len(seen) > 2
    a, b = sqlite3.connect(local.store), sqlite3.connect(dist.store)
    assert a.execute(QUERY).fetchall() == b.execute(QUERY).fetchall()
    assert a.execute(VERDICTS).fetchall() == b.execute(VERDICTS).fetchall()
    with ss.Store(dist.store) as store:  # a re-run generates nothing and starts no worker
        again = ss.execute(ss.plan_sweep(dist), store)
    assert again["generated"] == 0 and again["stored_before"] == 18


def test_workers_without_ray_is_one_line(tiny_dir, prompts_csv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    cfg = _cfg(tiny_dir, prompts_csv, tmp_path / "d.db", workers=2)
    with ss.Store(cfg.store) as store, pytest.raises(SafestressError, match=r"pip install 'safestress\[distributed\]'"):
        ss.execute(ss.plan_sweep(cfg), store)
    assert sqlite3.connect(cfg.store).execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0
