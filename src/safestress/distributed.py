"""A sweep's generation on Ray workers: many GPUs, or many nodes, one store.

``safestress run … --workers N`` (or ``--ray-address auto`` to join a running cluster) starts
N Ray actors. Each re-plans the same sweep from its configuration — so it holds the same tasks
under the same content keys — loads the model once, and generates the shards of tasks the
driver sends it, through the same code path as a local run
(:func:`safestress.sweep.generate_group`). The driver keeps the only connection to the SQLite
store: it judges each returned shard and stores rows and verdicts in one transaction, so the
store's guarantees (resume, no duplicates, WAL) are those of a local run. Noise is keyed by each
row's (prompt, seed), so a row's text does not depend on the worker or batch that produced it;
the tests compare a two-worker run with a local one row by row.

Each actor asks Ray for one GPU where the driver sees CUDA, else an equal share of the CPUs.
Datasets, models and calibration caches are read by each worker: on several nodes they must be
reachable from every node (hub ids, a shared file system, or ``SAFESTRESS_DATA_DIR`` copies).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from collections import deque
from typing import TYPE_CHECKING, Any

from safestress.errors import SafestressError
from safestress.store import GenerationRow, Store

if TYPE_CHECKING:
    from safestress.sweep import ProgressFn, SweepPlan

SHARD_BATCHES = 4  # batches per shard: large enough to keep a worker's batches full, small enough to balance
FORWARDED_ENV = ("SAFESTRESS_", "HF_", "TRANSFORMERS_", "MPLCONFIGDIR")


class SweepWorker:
    """Holds one re-planned copy of the sweep and its loaded model; generates shards of tasks."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        import torch

        from safestress.config import SweepConfig
        from safestress.sweep import plan_sweep

        if threads > 0:
            torch.set_num_threads(threads)
        self.plan = plan_sweep(SweepConfig(**config))
        self.tasks = {t.key: t for t in self.plan.tasks}

    def generate(self, keys: list[str]) -> list[tuple]:
        from safestress.sweep import generate_group

        missing = [k for k in keys if k not in self.tasks]
        if missing:  # the driver and this worker planned different sweeps (e.g. a dataset changed)
            raise SafestressError(f"worker does not know task {missing[0][:12]}; do all nodes see the same data?")
        tasks = [self.tasks[k] for k in keys]
        return [dataclasses.astuple(row) for rows in generate_group(self.plan, tasks) for row in rows]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SafestressError("--workers and --ray-address need Ray: pip install 'safestress[distributed]'") from None
    return ray


def _init(ray: Any, address: str | None, workers: int) -> str | None:
    """Connect to (or start) Ray. Returns the session's temporary folder when this call started a
    local Ray (which must then be shut down and the folder removed), else ``None``."""
    if ray.is_initialized():
        return None
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SafestressError(f"cannot join the Ray cluster at '{address}': {exc}") from None
        return None
    # a short private folder: Ray's socket paths must stay under 108 bytes
    temp = tempfile.mkdtemp(prefix="ssray-")
    ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, _temp_dir=temp, **kwargs)
    return temp


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


def execute_distributed(plan: SweepPlan, store: Store, progress: ProgressFn | None = None) -> dict[str, int]:
    """:func:`safestress.sweep.execute` with generation on ``plan.config.workers`` Ray actors."""
    from safestress.sweep import finish, judge_and_store, pending_groups

    cfg = plan.config
    ray = _ray()
    groups, stored_before = pending_groups(plan, store)
    total = sum(len(g) for g in groups)
    if progress:
        progress(0, total)
    if not total:
        return finish(plan, store, 0, stored_before)
    shard = cfg.batch_size * SHARD_BATCHES
    shards = deque(group[i : i + shard] for group in groups for i in range(0, len(group), shard))
    workers = min(cfg.workers, len(shards))
    started = _init(ray, cfg.ray_address, workers)
    actors: list[Any] = []
    try:
        import torch

        if torch.cuda.is_available():
            resources, threads = {"num_gpus": 1, "num_cpus": 1}, 0
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            per = max(1, math.floor(cpus / workers))
            resources, threads = {"num_cpus": per}, per
        remote = ray.remote(**resources)(SweepWorker)
        config = cfg.model_dump() | {"workers": 1, "ray_address": None}
        actors = [remote.remote(config, threads) for _ in range(workers)]
        in_flight: dict[Any, Any] = {}

        def send(actor: Any) -> None:  # the next shard, if any, to this actor
            if shards:
                in_flight[actor.generate.remote([t.key for t in shards.popleft()])] = actor

        for actor in actors:
            send(actor)
        finished = 0
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor = in_flight.pop(ref)
            try:
                rows = [GenerationRow(*r) for r in ray.get(ref)]
            except ray.exceptions.RayError as exc:
                raise SafestressError(f"a Ray worker failed: {_cause(exc)}") from None
            send(actor)  # keep the worker busy while this shard is judged and stored
            judge_and_store(plan, store, rows)
            finished += len(rows)
            if progress:
                progress(finished, total)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
            shutil.rmtree(started, ignore_errors=True)
    return finish(plan, store, total, stored_before)
