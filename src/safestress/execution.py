"""Run a planned sweep: choose where its rows are generated, then run the one driver loop.

Local generation and Ray workers are two batch sources (:class:`safestress.sweep.LocalSource`,
:class:`safestress.distributed.RaySource`) behind :func:`safestress.sweep.drive`. The choice
lives here, above both, so that the sweep never imports the distributed module that builds on it.
"""

from __future__ import annotations

from safestress.store import Store
from safestress.sweep import BatchSource, LocalSource, ProgressFn, SweepPlan, drive


def execute(plan: SweepPlan, store: Store, progress: ProgressFn | None = None) -> dict[str, int]:
    """Generate and judge every task of ``plan`` not yet in ``store``; returns counts of the work
    done. With ``workers`` > 1 or a ``ray_address`` in the config, generation runs on Ray
    workers; judging and storing stay in this process."""
    source: BatchSource
    if plan.config.workers > 1 or plan.config.ray_address:
        from safestress.distributed import RaySource

        source = RaySource()
    else:
        source = LocalSource()
    return drive(plan, store, source, progress)
