"""Run a sweep: models × site selections × perturbation strengths × seeds over a dataset.

The plan is built and validated completely (datasets, judges, perturbation parameters, models'
configs and site patterns) before the store is opened, so bad input never touches stored
results. Then, per model, rows already in the store are skipped (a re-run does no work and
loads no weights), the rest are generated in batches — rows with different σ share a batch,
since σ is a per-row parameter — and each batch is written together with its verdicts in one
transaction.

Greedy decoding without perturbation does not depend on the seed, so the clean run is generated
once (seed 0) and serves every seed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from safestress.condition_spec import ConditionSpec
from safestress.config import SweepConfig
from safestress.datasets import Dataset, load_dataset
from safestress.errors import SafestressError
from safestress.generation import GenerationSettings, iter_generate, row_key
from safestress.judges import Judge, make_judge
from safestress.judges.fluency import MAX_NLL as FLUENCY_MAX_NLL
from safestress.models import LoadedModel, load_model
from safestress.perturb import PERTURBATIONS, Identity, Perturbation
from safestress.perturb.base import perturbed
from safestress.store import GenerationRow, Lease, Store, content_hash
from safestress.store import row_key as store_key

NOISE_KEY_SCHEME = "rowkey-v1"
SHARD_BATCHES = 4  # batches per claimed shard: full batches, yet two processes on one store can split a sweep
DEFAULT_STRENGTHS = [0.0, 0.05, 0.1, 0.2]  # bump if the way rows are keyed for noise changes


@dataclass
class Condition:
    """One configuration: a model, a perturbation at a site selection, with a strength."""

    lm: LoadedModel
    perturbation: Perturbation
    site_pattern: str
    sites: list[str]
    strength: float
    spec: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""

    @property
    def clean(self) -> bool:
        return self.perturbation.is_identity()

    def group(self) -> str:
        """Conditions with the same group key can share a batch (they differ in row parameters only)."""
        return content_hash([id(self.lm), self.perturbation.group_fingerprint(), self.sites])


@dataclass
class Task:
    condition: Condition
    dataset: str
    item_id: str
    prompt: str
    seed: int
    key: str


@dataclass
class SweepPlan:
    config: SweepConfig
    datasets: list[Dataset]
    judges: list[Judge]
    models: list[LoadedModel]
    conditions: list[Condition]
    tasks: list[Task]
    settings: GenerationSettings
    ppl_metric: str | None = None  # the perplexity metric's name in the store, set by execute
    ppl_text: str | None = None  # the perplexity corpus, read while planning

    @cached_property
    def specs(self) -> dict[str, dict[str, Any]]:
        """Each condition's specification by its configuration hash (built once, read per batch)."""
        return {c.config_hash: c.spec for c in self.conditions}

    @property
    def config_hashes(self) -> list[str]:
        return sorted({c.config_hash for c in self.conditions})

    def frame(self, store: Store) -> Any:
        """This sweep's rows (and no others: a configuration shared with a larger earlier sweep
        has more rows in the store) with their verdicts, as a DataFrame."""
        df = store.frame(self.config_hashes)
        return df[df["key"].isin({t.key for t in self.tasks})].reset_index(drop=True)


def _label(p: Perturbation, strength: float, pattern: str) -> str:
    """The condition's label in reports. It is part of the condition's spec, so of its config hash:
    changing how it is written (even to match ``report.labels.condition_labels``' display of values) would
    make every stored result of such a condition unreachable to a resumed run. Keep it stable."""
    if p.is_identity():
        return "clean"
    name = p.strength_param()
    if name is None:  # no strength: name the parameters (files by their name only)
        args = " ".join(
            f"{k}={Path(v).name if isinstance(v, str) and ('/' in v or '.' in v) else v}"
            for k, v in p.params.model_dump().items()
        )
        return f"{p.name} {args} @ {pattern}".replace("  ", " ")
    extra = "" if getattr(p.params, "scale", "absolute") == "absolute" else " rel"
    return f"{p.name} {'σ' if name == 'sigma' else name}={strength:g}{extra} @ {pattern}"


def _perturbations(cfg: SweepConfig) -> dict[float, Perturbation]:
    """The perturbation at each strength of the sweep (the perturbation's own defaults, else
    DEFAULT_STRENGTHS); one without a strength gives the clean run and itself, at "strength" 1."""
    cls = PERTURBATIONS.get(cfg.perturb)
    defaults = {"scale": cfg.scale, "positions": cfg.positions}
    if cls.strength_param() is None and cls is not Identity:
        if cfg.strengths not in (None, [0.0]):
            raise SafestressError(f"perturbation '{cfg.perturb}' has no strength parameter; drop --sigma/--strength")
        return {0.0: Identity(), 1.0: cls.at_strength(None, cfg.params, defaults)}
    strengths = cfg.strengths or cls.default_strengths or DEFAULT_STRENGTHS
    return {s: cls.at_strength(s, cfg.params, defaults) for s in strengths}


def _conditions(
    models: list[LoadedModel],
    patterns: list[str],
    perturbations: dict[float, Perturbation],
    settings: GenerationSettings,
) -> list[Condition]:
    """Every model × site selection × strength, each keyed by its typed spec; the clean run once
    per model (a σ = 0 condition is the clean run, whatever the sites)."""
    conditions: dict[str, Condition] = {}
    for lm in models:
        for pattern in patterns:
            resolved = lm.sites(pattern)
            for strength, pert in perturbations.items():
                if pert.is_identity():
                    cond = Condition(lm, Identity(), "", [], 0.0)
                else:
                    cond = Condition(lm, pert, pattern, resolved, strength)
                spec = ConditionSpec(
                    model=lm.fingerprint(),
                    model_name=lm.name,
                    perturbation=cond.perturbation.fingerprint(),
                    strength=cond.strength,
                    site_pattern=cond.site_pattern,
                    sites=cond.sites,
                    generation=settings.model_dump(),
                    noise_keys=NOISE_KEY_SCHEME,
                    label=_label(cond.perturbation, cond.strength, cond.site_pattern),
                )
                cond.spec, cond.config_hash = spec.record(), spec.hash()
                conditions.setdefault(cond.config_hash, cond)
    return list(conditions.values())


def _attach_fluency(judges: Sequence[Judge], ref: str, max_nll: float) -> None:
    """One reference LM for every refusal and harm judge (it remembers the texts it has read, so
    two judges cost one pass). Not for toxicity judges: fluent hateful text is what a chat model
    finds unlikely (docs/judges.md: 5 of 34 clean ToxiGen continuations of Qwen went over the
    threshold), so the check would hide toxicity instead of salad."""
    from safestress.judges.fluency import Fluency

    readers = [j for j in judges if j.applies_coherence and j.outcome != "toxic"]
    if not readers:
        raise SafestressError(
            "--fluency-ref extends the coherence criterion of refusal and harm judges; none of "
            f"the judges {', '.join(j.name for j in judges)} is one"
        )
    check = Fluency(ref, max_nll=max_nll)
    check.prepare()
    for judge in readers:
        judge.fluency = check


def plan_sweep(cfg: SweepConfig, *, worker: bool = False) -> SweepPlan:
    """Validate everything a run needs and enumerate the tasks; touches no store.

    Every resource is resolved here, before the first generation: datasets, judges (and their
    heads), the perplexity corpus, models' configs, templates and devices. ``worker=True`` plans
    the generation only (a Ray worker: the driver judges and measures perplexity, so a worker
    needs neither the judges' weights nor an LLM judge's key)."""
    datasets = [load_dataset(d, limit=cfg.limit, data_dir=cfg.data_dir) for d in cfg.datasets()]
    made = [] if worker else [make_judge(j) for j in dict.fromkeys(cfg.judge)]
    for judge in made:
        judge.prepare(cfg.data_dir)
    if cfg.fluency_max_nll != FLUENCY_MAX_NLL and not cfg.fluency_ref:  # a threshold for nothing
        raise SafestressError("--fluency-max-nll sets the threshold of --fluency-ref's check; give --fluency-ref too")
    if cfg.fluency_ref and made:
        _attach_fluency(made, cfg.fluency_ref, cfg.fluency_max_nll)
    ppl_text = None
    if cfg.ppl and not worker:
        from safestress.utility import load_corpus

        ppl_text = load_corpus(cfg.ppl)
    settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
    )
    perturbations = _perturbations(cfg)  # built now, so bad parameters fail before anything loads
    template = cfg.template or next((d.template for d in datasets if d.template), None) or "chat"

    models = []
    for spec in cfg.models:
        models.append(
            load_model(
                spec,
                dtype=cfg.dtype,
                device=cfg.device,
                template=template,
                chat_template=cfg.chat_template,
                system_prompt=cfg.system_prompt,
                trust_remote_code=cfg.trust_remote_code,
                weights=False,
            )
        )
    conditions = _conditions(models, cfg.sites, perturbations, settings)
    if cfg.sequential and not any(c.clean for c in conditions):
        raise SafestressError(
            "--sequential compares each condition with the clean run, which this sweep lacks; "
            "add strength 0 (--sigma 0,…)"
        )
    tasks = []
    for cond in conditions:
        seeds = [0] if (cond.clean and not cfg.do_sample) else list(range(cfg.seeds))
        for ds in datasets:
            for item in ds.items:
                for seed in seeds:
                    key = store_key(cond.config_hash, ds.name, item.id, item.prompt, seed)
                    tasks.append(Task(cond, ds.name, item.id, item.prompt, seed, key))
    return SweepPlan(cfg, datasets, made, models, conditions, tasks, settings, ppl_text=ppl_text)


ProgressFn = Callable[[int, int], None]


def generate_group(plan: SweepPlan, tasks: list[Task]) -> Iterator[list[GenerationRow]]:
    """Generate ``tasks`` (one condition group of one model) batch by batch, as store rows.

    The one generation path of a sweep, local or on a Ray worker (:mod:`safestress.distributed`):
    noise is keyed by each row's (prompt, seed), so a row's text does not depend on which worker
    or batch produced it.
    """
    # the clean run may ride in a noise group's batches as σ = 0 rows (:func:`pending_groups`)
    head = next((t.condition for t in tasks if not t.condition.clean), tasks[0].condition)
    lm = head.lm
    lm.ensure_weights()
    strength_param = head.perturbation.row_params[0] if head.perturbation.row_params else None
    row_params = {strength_param: [t.condition.strength for t in tasks]} if strength_param else None
    shared = [
        head.perturbation.leaves_prompt({strength_param: t.condition.strength} if strength_param else {}) for t in tasks
    ]
    settled_by = ",".join(j.key for j in plan.judges)
    stop = None
    if plan.config.early_exit and plan.judges:

        def stop(rows: Sequence[int], texts: Sequence[str]) -> list[bool]:
            return settled_by_all(plan.judges, [tasks[i].prompt for i in rows], texts)

    with perturbed(lm, head.perturbation, head.sites):
        stream = iter_generate(
            lm,
            [t.prompt for t in tasks],
            seeds=[t.seed for t in tasks],
            settings=plan.settings,
            batch_size=plan.config.rows_per_batch(),
            keys=[row_key(t.prompt, t.seed) for t in tasks],
            row_params=row_params,
            shared_prefill=shared,
            stop=stop,
        )
        for idx, gens in stream:
            rows = []
            for i, g in zip(idx, gens):
                t = tasks[i]
                rows.append(
                    GenerationRow(
                        t.key,
                        t.condition.config_hash,
                        lm.name,
                        t.dataset,
                        t.item_id,
                        t.seed,
                        t.prompt,
                        g.text,
                        g.n_tokens,
                        g.stopped,
                        settled_by if g.settled else None,
                    )
                )
            yield rows


def settled_by_all(judges: Sequence[Judge], prompts: Sequence[str], texts: Sequence[str]) -> list[bool]:
    """Rows whose verdicts every judge has settled on the text so far (early exit). Each judge is
    asked only about the rows the judges before it settled."""
    todo = list(range(len(prompts)))
    for judge in judges:
        if not todo:
            break
        verdicts = judge.settled([prompts[i] for i in todo], [texts[i] for i in todo])
        todo = [i for i, ok in zip(todo, verdicts) if ok]
    out = [False] * len(prompts)
    for i in todo:
        out[i] = True
    return out


def judge_and_store(plan: SweepPlan, store: Store, rows: list[GenerationRow], lease: Lease | None = None) -> None:
    """Judge a batch of generations with every judge of the plan and store rows, their
    configurations and verdicts in one transaction; a failing judge never costs the generations
    (they are stored, then it raises)."""
    specs = plan.specs
    configs = [specs[h] for h in dict.fromkeys(r.config_hash for r in rows)]
    verdicts = []
    try:
        for judge in plan.judges:
            judged = judge.judge([r.prompt for r in rows], [r.response for r in rows])
            verdicts.extend((row.key, judge.key, v) for row, v in zip(rows, judged))
    except BaseException:
        store.put_batch(rows, [], configs, lease)
        raise
    store.put_batch(rows, verdicts, configs, lease)


def to_regenerate(plan: SweepPlan, store: Store) -> set[str]:
    """Keys of this plan's stored rows that stopped early on text one of its judges cannot settle
    on (a judge added since): they are regenerated to full length, never judged on the prefix."""
    early = store.early_stopped([t.key for t in plan.tasks])
    if not early:
        return set()
    keys = [k for k, _, _ in early]
    ok = settled_by_all(plan.judges, [p for _, p, _ in early], [r for _, _, r in early])
    return {k for k, settled in zip(keys, ok) if not settled}


def pending_groups(plan: SweepPlan, store: Store) -> tuple[list[list[Task]], int]:
    """The tasks not yet stored (or to be regenerated, :func:`to_regenerate`), by model and
    condition group, and how many are stored. Writes nothing: configurations are stored with their
    first rows (:meth:`Store.put_batch`).

    A model's clean run joins its first noise group whose perturbation is exact identity at
    strength 0, as σ = 0 rows: the clean rows then share batches, and with noise on generated
    positions only, prompt forwards too (:mod:`safestress.decoding`)."""
    done = store.existing_keys(t.key for t in plan.tasks) - to_regenerate(plan, store)
    by_group: dict[str, list[Task]] = defaultdict(list)
    for t in plan.tasks:
        if t.key not in done:
            by_group[t.condition.group()].append(t)
    groups = []
    for lm in plan.models:
        mine = [g for g in by_group.values() if g[0].condition.lm is lm]
        clean = next((g for g in mine if g[0].condition.clean), None)
        host = next((g for g in mine if _takes_clean_rows(g[0].condition)), None)
        if clean is not None and host is not None:
            host.extend(clean)
            mine.remove(clean)
        groups.extend(mine)
    return groups, len(done)


def _takes_clean_rows(cond: Condition) -> bool:
    """A condition whose batches can carry clean rows as rows at strength 0 (exactly unperturbed)."""
    p = cond.perturbation
    if cond.clean or not p.row_params or p.row_params[0] != p.strength_param():
        return False
    return type(p).at_strength(0.0, p.params.model_dump()).is_identity()


def load_pending_weights(groups: list[list[Task]]) -> None:
    """Load the weights of every model that has rows to generate, before anything is written: a
    damaged weights file, a device without memory or a missing GPU then fails with the store
    untouched. Models whose rows are all stored are never loaded."""
    for group in groups:
        group[0].condition.lm.ensure_weights()  # a no-op once loaded


def claimed_shards(
    store: Store, groups: list[list[Task]], lease: Lease, shard: int, poll: float = 1.0, redo: Collection[str] = ()
) -> Iterator[list[Task]]:
    """Shards of at most ``shard`` tasks of one condition group that this process has claimed.

    Tasks another live process has claimed are skipped, then waited for once everything else is
    done: they are taken over if that process dies before storing them, and never generated twice.
    Claiming lazily (shard by shard) lets two processes on one store split a sweep between them.
    """
    waiting: dict[str, Task] = {}
    for group in groups:
        for start in range(0, len(group), shard):
            tasks = group[start : start + shard]
            claimed, others = lease.claim(store.conn, [t.key for t in tasks], redo)
            waiting.update((t.key, t) for t in tasks if t.key in others)
            mine = set(claimed)
            if mine:
                yield [t for t in tasks if t.key in mine]
    while waiting:
        time.sleep(poll)
        lease.renew(store.conn)
        claimed, others = lease.claim(store.conn, list(waiting), redo)
        mine = set(claimed)
        taken = [waiting.pop(k) for k in list(waiting) if k not in others]  # ours now, or stored by the other
        by_group: dict[str, list[Task]] = defaultdict(list)
        for t in taken:
            if t.key in mine:
                by_group[t.condition.group()].append(t)
        for tasks in by_group.values():
            for start in range(0, len(tasks), shard):
                yield tasks[start : start + shard]


def finish(plan: SweepPlan, store: Store, generated: int, stored_before: int) -> dict[str, int]:
    judged = judge_missing(plan, store)
    measured = measure_perplexity(plan, store)
    return {"generated": generated, "judged_late": judged, "stored_before": stored_before, "ppl_measured": measured}


class BatchSource(Protocol):
    """Where a sweep's rows are generated: here (:class:`LocalSource`) or on Ray workers
    (:class:`safestress.distributed.RaySource`). :func:`drive` owns everything else — pending
    groups, leases, judging, storing, progress and the finish — so that loop exists once."""

    def batches(
        self, plan: SweepPlan, groups: list[list[Task]], shards: Iterator[list[Task]]
    ) -> AbstractContextManager[Iterator[list[GenerationRow]]]:
        """Generated rows for the claimed ``shards``, batch by batch; leaving the context stops
        generation and frees what it holds (hooks, workers)."""
        ...


class LocalSource:
    """Generation in this process, one model group at a time."""

    @contextmanager
    def batches(
        self, plan: SweepPlan, groups: list[list[Task]], shards: Iterator[list[Task]]
    ) -> Iterator[Iterator[list[GenerationRow]]]:
        load_pending_weights(groups)  # a model that does not load fails before the first row

        def rows() -> Iterator[list[GenerationRow]]:
            for tasks in shards:
                # closing(): a failing judge closes the generator at once, so its perturbation
                # hooks are removed before the error propagates, not whenever it is collected
                with closing(generate_group(plan, tasks)) as generated:
                    yield from generated

        with closing(rows()) as stream:
            yield stream


def drive(plan: SweepPlan, store: Store, source: BatchSource, progress: ProgressFn | None = None) -> dict[str, int]:
    """Generate (through ``source``) and judge every task not yet in ``store``; returns counts of
    the work done. The one driver loop of a sweep, local or distributed."""
    groups, stored_before = pending_groups(plan, store)
    total = sum(len(g) for g in groups)
    if progress:
        progress(0, total)
    if not total:
        return finish(plan, store, 0, stored_before)
    lease = Lease()
    generated = 0
    # pending rows that are stored are the ones to_regenerate chose; the claim takes only those
    # still marked as stopped early, so passing every pending key needs no second query
    redo = {t.key for g in groups for t in g}
    shards = claimed_shards(store, groups, lease, plan.config.rows_per_batch() * SHARD_BATCHES, redo=redo)
    try:
        with source.batches(plan, groups, shards) as batches:
            for rows in batches:
                judge_and_store(plan, store, rows, lease)
                generated += len(rows)
                if progress:
                    progress(generated, total)
    finally:
        shards.close()
        lease.release_all(store.conn)
    if progress:
        progress(total, total)  # rows another process generated meanwhile count as done
    return finish(plan, store, generated, stored_before)


PPL_WINDOW = 512


def measure_perplexity(plan: SweepPlan, store: Store) -> int:
    """Store the corpus perplexity of every condition that lacks it (``ppl`` in the config)."""
    cfg = plan.config
    if not cfg.ppl:
        return 0
    from safestress.utility import corpus_id, load_corpus, perplexity

    text = plan.ppl_text if plan.ppl_text is not None else load_corpus(cfg.ppl)
    name = plan.ppl_metric = corpus_id(cfg.ppl, text, cfg.ppl_tokens, PPL_WINDOW)
    have = store.metrics(name)
    n = 0
    for cond in plan.conditions:
        if (cond.config_hash, name) in have:
            continue
        cond.lm.ensure_weights()
        with perturbed(cond.lm, cond.perturbation, cond.sites):
            value = perplexity(cond.lm, text, max_tokens=cfg.ppl_tokens, window=PPL_WINDOW)
        store.put_metric(cond.config_hash, name, value, cond.spec)
        n += 1
    return n


def judge_missing(plan: SweepPlan, store: Store, batch: int = 256) -> int:
    """Judge stored generations of this plan that lack a verdict of one of its judges (no regeneration)."""
    keys = [t.key for t in plan.tasks]
    n = 0
    for judge in plan.judges:
        todo = store.unjudged(keys, judge.key)
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            verdicts = judge.judge([p for _, p, _ in chunk], [r for _, _, r in chunk])
            store.put_verdicts([(k, judge.key, v) for (k, _, _), v in zip(chunk, verdicts)])
            n += len(chunk)
    return n
