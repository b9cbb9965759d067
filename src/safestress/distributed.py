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
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from safestress.errors import SafestressError
from safestress.store import GenerationRow

if TYPE_CHECKING:
    from safestress.sweep import SweepPlan, Task

# What workers are told through Ray's runtime env: where caches and data are, and whether to stay
# offline; never a credential. Ray writes the runtime env to its logs, and the driver does all the
# judging, so workers need no judge key. (A local Ray's processes inherit the driver's environment
# without those credentials, see _without_credentials; nodes of a joined cluster need their own
# hub credentials for gated models.)
FORWARDED_ENV = (
    "SAFESTRESS_CACHE_DIR",
    "SAFESTRESS_DATA_DIR",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_CACHE",
    "HF_DATASETS_OFFLINE",
    "HF_ENDPOINT",
    "HF_HUB_VERBOSITY",
    "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_VERBOSITY",
    "TOKENIZERS_PARALLELISM",
    "MPLCONFIGDIR",
)
# Variables a Ray process must never hold: the judges' keys and anything named like a credential.
# Hub tokens stay, so that workers can load gated models; they never enter a runtime env or a log.
# Any name holding a credential word (API_KEY, OPENAIKEY, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN); "TOKEN"
# as in a tokenizer setting (TOKENIZERS_PARALLELISM) is not one.
_CREDENTIAL = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|TOKEN(?!IZER))", re.IGNORECASE)
_KEEP = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"})


def forwarded_env(environ: dict[str, str]) -> dict[str, str]:
    """The variables workers get through Ray's runtime env (:data:`FORWARDED_ENV`, nothing else)."""
    return {k: environ[k] for k in FORWARDED_ENV if k in environ}


def credential_names(environ: dict[str, str]) -> list[str]:
    """Variables kept out of every Ray process: credentials that workers do not need."""
    return sorted(k for k in environ if _CREDENTIAL.search(k) and k not in _KEEP)


@contextmanager
def _without_credentials() -> Iterator[None]:
    """Hide credentials from the processes a local ``ray.init`` spawns (they copy our environment)."""
    hidden = {k: os.environ.pop(k) for k in credential_names(dict(os.environ))}
    try:
        yield
    finally:
        os.environ.update(hidden)


class SweepWorker:
    """Holds one re-planned copy of the sweep and its loaded model; generates shards of tasks."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        import torch

        from safestress.config import SweepConfig
        from safestress.sweep import plan_sweep

        if threads > 0:
            torch.set_num_threads(threads)
        self.plan = plan_sweep(SweepConfig(**config), worker=True)
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
    local Ray (which must then be shut down and the folder removed), else ``None``.

    A local Ray lives in a private folder (0700: Ray opens its folders to everyone, and its logs
    would be readable) watched by :mod:`safestress.ray_guard`, which kills Ray's processes and
    removes the folder when this process ends in any way, a SIGKILL included.
    """
    if ray.is_initialized():
        return None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": forwarded_env(dict(os.environ))},
        "log_to_driver": False,
        "logging_level": "ERROR",
    }
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SafestressError(f"cannot join the Ray cluster at '{address}': {exc}") from None
        return None
    from safestress.ray_guard import private_folder, start_guard

    # Ray opens its own folders to everyone (0777), so it works inside one of ours that only this
    # user can enter (0700). Short names: Ray's socket paths must stay under 108 bytes.
    temp = tempfile.mkdtemp(prefix="ssray-")
    private_folder(temp)
    start_guard(temp)
    with _without_credentials():
        ray.init(
            num_cpus=max(workers, os.cpu_count() or 1),
            include_dashboard=False,
            _temp_dir=os.path.join(temp, "r"),
            **kwargs,
        )
    return temp


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


class RaySource:
    """Generation on ``plan.config.workers`` Ray actors (a :class:`safestress.sweep.BatchSource`):
    each actor plans the sweep itself and generates the shards this process claims; rows come
    back here, where :func:`safestress.sweep.drive` judges and stores them."""

    @contextmanager
    def batches(self, plan: SweepPlan, groups: list[list[Task]], shards: Iterator[list[Task]]) -> Iterator[Any]:
        from safestress.sweep import SHARD_BATCHES

        cfg = plan.config
        ray = _ray()
        shard = cfg.rows_per_batch() * SHARD_BATCHES
        workers = min(cfg.workers, sum(math.ceil(len(g) / shard) for g in groups))
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
            yield self._rows(ray, actors, shards)
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()
                shutil.rmtree(started, ignore_errors=True)

    @staticmethod
    def _rows(ray: Any, actors: list[Any], shards: Iterator[list[Task]]) -> Iterator[list[GenerationRow]]:
        in_flight: dict[Any, Any] = {}

        def send(actor: Any) -> None:  # the next shard this process claims, if any, to this actor
            tasks = next(shards, None)
            if tasks:
                in_flight[actor.generate.remote([t.key for t in tasks])] = actor

        for actor in actors:
            send(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor = in_flight.pop(ref)
            try:
                rows = [GenerationRow(*r) for r in ray.get(ref)]
            except ray.exceptions.RayError as exc:
                raise SafestressError(f"a Ray worker failed: {_cause(exc)}") from None
            send(actor)  # keep the worker busy while this shard is judged and stored
            yield rows
