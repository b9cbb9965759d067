"""The kinds of step a study may declare, each over machinery that exists on its own.

A step kind has two halves: ``run`` does the work (generations go into the study's store, files
into the step's own folder) and returns a small record; ``report`` turns that record back into
the tables of the study's page. Records are JSON, so ``study report`` needs no model.

* ``sweep``: one ordinary sweep per model (``SweepConfig`` settings), optionally over symbolic
  layer ``windows`` (first, middle, last, all; resolved per model) and ``variants``: a pruned
  class and its random draws, or one approximation operator after another, each with its own
  strengths and sites. The store keys every row by content, so a killed
  sweep step resumes where it stopped.
* ``units``: SSAH unit scores and the SCU/UCU/CU/RU classes of each model
  (``safestress attribute units``), with the share of units each class takes.
* ``drift``: harmful→benign drift of the last-token states under one perturbation, with its
  paired test (``safestress analyze drift``'s measurement).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safestress.analysis.drift import change_text
from safestress.errors import SafestressError
from safestress.studies.spec import StepSpec

WINDOWS = ("first", "middle", "last", "all")


@dataclass
class StepContext:
    """What a running step may read and where it may write."""

    step: StepSpec
    models: list[str]
    folder: Path
    store: Path
    needs: dict[str, Path]
    seed: int
    log: Callable[[str], None] = print
    progress: Callable[[int, int], None] | None = None
    data_dir: str | None = None


@dataclass
class ReportContext:
    """What a step's report may read: its record and folder, the study's store, and the folder
    of the study's page (``page_dir``), under which the step writes its tables and exports."""

    step: StepSpec
    record: dict[str, Any]
    store: Any
    folder: Path
    page_dir: Path
    baseline: str | None
    fresh: bool = False  # rewrite the step's files even where they were written from this step


def slug(name: str) -> str:
    """A model name as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)


def window_sites(windows: list[str], n_layers: int, site: str, share: float) -> list[str]:
    """Symbolic layer windows as site patterns for a model with ``n_layers`` blocks: ``first``,
    ``middle`` and ``last`` are ``share`` of the depth (at least one block), ``all`` every block.
    Models of one family have one depth, so their windows (and condition labels) match."""
    k = max(1, min(n_layers, round(n_layers * share)))
    starts = {"first": 0, "middle": (n_layers - k) // 2, "last": n_layers - k}
    out = []
    for w in windows:
        if w == "all":
            out.append(f"blocks.*.{site}")
        elif w in starts:
            a = starts[w]
            out.append(f"blocks.{a}.{site}" if k == 1 else f"blocks.{a}-{a + k - 1}.{site}")
        else:
            raise SafestressError(f"unknown layer window '{w}'; known: {', '.join(WINDOWS)}")
    return list(dict.fromkeys(out))


def fill(value: Any, needs: dict[str, Path], model: str) -> Any:
    """``{needs.STEP}`` (an earlier step's folder) and ``{model}`` (the model's folder name) in
    a step's settings, written in for one model."""
    if isinstance(value, str):
        for name, folder in needs.items():
            value = value.replace("{needs." + name + "}", str(folder))
        return value.replace("{model}", slug(model))
    if isinstance(value, dict):
        return {k: fill(v, needs, model) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, needs, model) for v in value]
    return value


def _with_variant(settings: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """A sweep's settings with one variant written over them: a sweep setting (``perturb``,
    ``strengths``, ``sites``, …) replaces the step's, anything else is a perturbation parameter."""
    from safestress.config import SweepConfig

    top = {k: v for k, v in variant.items() if k in SweepConfig.model_fields or k == "sigma"}
    params = {k: v for k, v in variant.items() if k not in top}
    base = settings if "perturb" not in top else {k: v for k, v in settings.items() if k != "params"}
    return {**base, **top, "params": {**base.get("params", {}), **params}}


# written into a run's folder when ``study run --drop-weights`` deleted its weights (runner.py)
DROPPED = "weights-dropped.json"


def run_paths(folder: Path, listing: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """A training step's listing (base model → arm → run folder names) with each run's path.

    Listings hold names, resolved against the step's folder here, so a study folder can be moved
    or resumed from another working directory (older listings held paths: their last part is used)."""
    return {
        base: {arm: [str(folder / Path(f).name) for f in runs] for arm, runs in by_arm.items()}
        for base, by_arm in listing.items()
    }


def trained_models(ctx: StepContext, step: str, setting: str = "models_from") -> dict[str, dict[str, list[str]]]:
    """The runs an earlier training step published: base model → arm → folders."""
    if step not in ctx.needs:
        raise SafestressError(f"step '{ctx.step.name}': {setting} '{step}' must be one of its needs")
    listing = ctx.needs[step] / "models.json"
    if not listing.is_file():
        raise SafestressError(f"step '{ctx.step.name}': {setting} '{step}' is not a training step (no models.json)")
    runs = run_paths(ctx.needs[step], json.loads(listing.read_text()))
    dropped = [
        f for by_arm in runs.values() for folders in by_arm.values() for f in folders if (Path(f) / DROPPED).is_file()
    ]
    if dropped:
        raise SafestressError(
            f"step '{ctx.step.name}': the weights of {len(dropped)} run(s) of step '{step}' were dropped "
            f"(--drop-weights; e.g. {Path(dropped[0]).name}); run with --redo {step} to train them again"
        )
    return runs


class SweepStep:
    """Sweeps, one per model (and per variant), into the study's store."""

    # ``models_from: STEP`` (or a list of steps): evaluate the runs earlier training steps made instead of the
    # study's models; the page then compares that step's arms over runs. ``with_base: true``
    # evaluates the study's models beside them (what the training started from: "refusals
    # gained" is against it)
    _OWN = ("windows", "site", "window_share", "variants", "models_from", "with_base")

    @staticmethod
    def data_defaults() -> dict[str, Any]:
        """The dataset a sweep reads where it names none."""
        from safestress.config import SweepConfig

        return {"dataset": SweepConfig.model_fields["dataset"].default}

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from safestress.config import build_config
        from safestress.execution import execute
        from safestress.models import load_model
        from safestress.store import Store
        from safestress.sweep import plan_sweep

        s = dict(ctx.step.settings)
        own = {k: s.pop(k) for k in self._OWN if k in s}
        keys: list[str] = []
        judges: list[str] = []
        ppl_metric = None
        models, arms = ctx.models, None
        bases: dict[str, str] = {}  # with_base: a base model's folder name → its name in the store
        if own.get("models_from"):
            sources = own["models_from"] if isinstance(own["models_from"], list) else [own["models_from"]]
            trained = {base: by_arm for step in sources for base, by_arm in trained_models(ctx, step).items()}
            arms = {
                base: {arm: [Path(f).name for f in runs] for arm, runs in by_arm.items()}
                for base, by_arm in trained.items()
            }
            runs_made = [f for by_arm in trained.values() for runs in by_arm.values() for f in runs]
            models = [*(models if own.get("with_base") else []), *runs_made]
        for model in models:
            sites = s.get("sites")
            if own.get("windows"):
                n = load_model(model, weights=False).n_layers
                sites = window_sites(own["windows"], n, own.get("site", "resid_post"), own.get("window_share", 0.25))
            for variant in own.get("variants") or [{}]:
                settings = fill(_with_variant(s, variant), ctx.needs, model)
                if sites is not None and "sites" not in variant:
                    settings["sites"] = sites
                settings.setdefault("data_dir", ctx.data_dir)
                cfg = build_config(None, models=[model], store=str(ctx.store), plot=False, **settings)
                plan = plan_sweep(cfg)
                with Store(ctx.store) as store:
                    counts = execute(plan, store, ctx.progress)
                ctx.log(
                    f"  {plan.models[0].name}: {counts['generated']} rows generated, "
                    f"{counts['stored_before']} already stored"
                )
                if arms is not None and model in ctx.models:
                    bases[slug(model)] = plan.models[0].name
                keys += [t.key for t in plan.tasks]
                judges += [j.key for j in plan.judges if j.key not in judges]
                ppl_metric = plan.ppl_metric or ppl_metric
        (ctx.folder / "rows.json").write_text(json.dumps(sorted(set(keys))) + "\n")
        record = {"judges": judges, "rows": len(set(keys)), "ppl_metric": ppl_metric, "margin": s.get("margin")}
        return {**record, "arms": arms, "bases": bases} if arms else record

    def report(self, ctx: ReportContext) -> str:
        from safestress.config import margin_share
        from safestress.report import summarize_judges
        from safestress.report.doc_tables import render
        from safestress.report.emit import write_outputs
        from safestress.report.labels import labelled
        from safestress.report.summary import with_perplexity
        from safestress.store import read_export

        out = ctx.page_dir / ctx.step.name
        export = out / "per-prompt.parquet"
        judges = ctx.record["judges"]
        margin = ctx.record.get("margin")
        made = out / ".step"  # the step run these files were written from: its folder and done.json
        done = ctx.folder / "done.json"
        run = f"{ctx.folder.name} {hashlib.sha256(done.read_bytes()).hexdigest()[:16] if done.is_file() else ''}"
        current = export.is_file() and made.is_file() and made.read_text() == run
        if ctx.fresh or not current:
            keys = set(json.loads((ctx.folder / "rows.json").read_text()))
            frame = ctx.store.frame()
            # named among this step's conditions only: another step's token budget is no difference
            frame = labelled(frame[frame["key"].isin(keys)].reset_index(drop=True), ctx.store)
            if ctx.record.get("ppl_metric"):  # each condition's perplexity on its rows, for the page's tables
                frame = with_perplexity(frame, ctx.store, ctx.record["ppl_metric"])
            out.mkdir(parents=True, exist_ok=True)
            made.unlink(missing_ok=True)
            ctx.store.export(export, frame)
            baseline = ctx.baseline if ctx.baseline in set(frame["model"]) else None
            summaries, contrasts = summarize_judges(
                frame, judges, ctx.store, baseline, ctx.record.get("ppl_metric"), margin_share(margin)
            )
            specs = {h: spec for h, spec in ctx.store.configs().items() if h in set(frame["config_hash"])}
            write_outputs(out, summaries, contrasts, frame, specs, plot=True, title=f"study step {ctx.step.name}")
            made.write_text(run)
        models = set(read_export(export)["model"])
        baseline = ctx.baseline if ctx.baseline in models else None
        rel = export.relative_to(ctx.page_dir).as_posix()
        extra = f" margin={margin:g}" if margin else ""
        classes = {v.get("unit_class") for v in ctx.step.settings.get("variants") or [] if "unit_class" in v}
        classified = sorted(classes - {"random"}) if "random" in classes else []
        parts = []
        for judge in judges:
            opening = f"rates export={rel} judge={judge}{extra}"
            parts.append(f"Judge `{judge}`:\n\n{_block(opening, render(_spec(opening, ctx.page_dir)))}")
            for name in classified:  # pruned classes against the random draws of their size, as a distribution
                opening = f"draws export={rel} judge={judge} classified=unit_class={name} draws=unit_class=random"
                parts.append(
                    f"{name.upper()} among the random draws of its size, judge `{judge}`:\n\n"
                    + _block(opening, render(_spec(opening, ctx.page_dir)))
                )
            bases = ctx.record.get("bases") or {}
            for base, by_arm in (ctx.record.get("arms") or {}).items():
                if len(by_arm) >= 2:  # one arm: nothing to compare over runs
                    spec = ";".join(f"{arm}={','.join(runs)}" for arm, runs in by_arm.items())
                    opening = f"runs export={rel} judge={judge} arms={shlex.quote(spec)}"
                    parts.append(
                        f"The arms of `{base}` against `{next(iter(by_arm))}`, tested over runs, judge `{judge}`:\n\n"
                        + _block(opening, render(_spec(opening, ctx.page_dir)))
                    )
                if base in bases:  # each run against the model it was trained from
                    members = ",".join([bases[base], *(r for runs in by_arm.values() for r in runs)])
                    opening = (
                        f"contrasts export={rel} judge={judge} baseline={shlex.quote(bases[base])} "
                        f"models={shlex.quote(members)}{extra}"
                    )
                    parts.append(
                        f"Each run of `{base}` against the model before training (one run each: prompt-level "
                        f"tests of a trained model, not of its method), judge `{judge}`:\n\n"
                        + _block(opening, render(_spec(opening, ctx.page_dir)))
                    )
            if baseline and len(models) > 1 and not bases:
                opening = f"contrasts export={rel} judge={judge} baseline={shlex.quote(baseline)}{extra}"
                parts.append(
                    f"Each model against `{baseline}` (Δ effect = its Δ minus the baseline's), judge `{judge}`:\n\n"
                    + _block(opening, render(_spec(opening, ctx.page_dir)))
                )
        return "\n".join(parts)


def _spec(opening: str, base: Path) -> Any:
    from safestress.report.doc_tables import parse_spec

    return parse_spec(opening, base)


def _block(opening: str, body: str) -> str:
    """A table block ``safestress refresh-tables`` can recompute from its per-prompt file."""
    return f"<!-- safestress-table {opening} -->\n{body}<!-- /safestress-table -->\n"


def option_defaults(command: Callable[..., Any]) -> dict[str, Any]:
    """A typer command's declared option defaults, so a step that calls the command's function
    gets the same defaults as the command line instead of a restated copy of them."""
    import inspect

    params = inspect.signature(command).parameters
    return {name: getattr(p.default, "default", p.default) for name, p in params.items()}


class UnitsStep:
    """SSAH unit classes per model (``safestress attribute units`` into the step's folder)."""

    @staticmethod
    def data_defaults() -> dict[str, Any]:
        """The calibration sets the command reads where the step names none."""
        from safestress.attribution.cli import units

        declared = option_defaults(units)
        return {k: declared[k] for k in ("harmful", "benign")}

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from safestress.attribution.cli import units

        declared = option_defaults(units)
        known = [k for k in declared if k not in ("model", "out", "data_dir")]  # the study gives these
        unknown = sorted(set(ctx.step.settings) - set(known))
        if unknown:
            raise SafestressError(
                f"step '{ctx.step.name}': unknown setting {', '.join(unknown)}; known: {', '.join(known)}"
            )
        made = {}
        for model in ctx.models:
            out = ctx.folder / slug(model)
            data_dir = Path(ctx.data_dir) if ctx.data_dir else None
            units(**{**declared, **ctx.step.settings, "model": model, "out": out, "data_dir": data_dir})
            made[slug(model)] = json.loads((out / "summary.json").read_text())
        return {"models": made}

    def report(self, ctx: ReportContext) -> str:
        lines = [
            "| model | kind | SCU | UCU | CU | RU | units | calibration (refusals / answers) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, summary in ctx.record["models"].items():
            cal = summary["calibration"]
            for kind, counts in summary["units"].items():
                n = sum(counts.values())
                shares = " | ".join(f"{counts[c]} ({100 * counts[c] / n:.1f}%)" for c in ("scu", "ucu", "cu", "ru"))
                refusals = "—" if cal["safety"] is None else cal["safety"]
                lines.append(f"| {name} | {kind} | {shares} | {n} | {refusals} / {cal['utility']} |")
        first = next(iter(ctx.record["models"].values()))
        ratios = first["ratios"]
        if first.get("classified_by", "").startswith("utility"):
            head = (
                f"Unit classes from the utility score alone (the model is scored as one that does not refuse yet): "
                f"RU the {100 * ratios['ru']:g}% of units least important for answering, UCU the "
                f"{100 * ratios['ucu']:g}% most important, CU the rest, no SCU:\n\n"
            )
        else:
            head = (
                f"Unit classes at the thresholds SCU {100 * ratios['scu']:g}%, UCU {100 * ratios['ucu']:g}%, "
                f"RU {100 * ratios['ru']:g}% of units (CU: the rest, important for both safety and utility):\n\n"
            )
        return head + "\n".join(lines) + "\n"


class DriftStep:
    """Harmful→benign drift of each model under one perturbation (``safestress analyze drift``'s
    measurement), with its paired test, into the step's folder."""

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from dataclasses import asdict

        from safestress.analysis.drift import measure_drift, plot_drift
        from safestress.datasets import load_dataset
        from safestress.models import load_model
        from safestress.perturb import PERTURBATIONS

        s = dict(ctx.step.settings)
        limit = int(s.get("limit", 64))
        prompts = {
            kind: [i.prompt for i in load_dataset(s[kind], limit=limit, data_dir=ctx.data_dir).items]
            for kind in ("harmful", "benign")
        }
        pert = PERTURBATIONS.get(s["perturb"]).at_strength(float(s["strength"]), s.get("params", {}), {})
        made = {}
        for model in ctx.models:
            lm = load_model(model)
            result, states = measure_drift(
                lm, pert, lm.sites(s["sites"]), int(s.get("layer", -1)), prompts["harmful"], prompts["benign"]
            )
            plot_drift(result, states, ctx.folder / f"drift-{slug(lm.name)}.png", f"{lm.name}: {pert!r} @ {s['sites']}")
            made[lm.name] = asdict(result)
            ctx.log(f"  {slug(lm.name)}: harmful called benign {change_text(result)} pts, p {result.drift_p:.3g}")
            del lm
        return {"perturbation": repr(pert), "sites": s["sites"], "models": made}

    def report(self, ctx: ReportContext) -> str:
        from safestress.analysis.drift import DriftResult
        from safestress.report import md_cell
        from safestress.stats.equivalence import verdict
        from safestress.stats.multiplicity import holm

        models = ctx.record["models"]
        results = {name: DriftResult(**{**r, "drift_ci": tuple(r["drift_ci"])}) for name, r in models.items()}
        adjusted = holm([r.drift_p for r in results.values()])
        lines = [
            f"Last-token states at the last block under {md_cell(ctx.record['perturbation'])} @ "
            f"`{ctx.record['sites']}`: "
            "the share of harmful prompts a probe fitted on the clean states calls benign, clean → perturbed, "
            "tested on the same prompts (exact McNemar; Holm over the models of this table).",
            "",
            "| model | n harmful / benign | centroid distance clean → perturbed | harmful called benign % "
            "clean → perturbed | change pts [95% CI] | p (Holm) | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for (name, r), p in zip(results.items(), adjusted):
            lines.append(
                f"| {md_cell(name)} | {r.n_harmful} / {r.n_benign} | {r.centroid_distance_clean:.2f} → "
                f"{r.centroid_distance_perturbed:.2f} | {100 * r.harmful_called_benign_clean:.1f} → "
                f"{100 * r.harmful_called_benign_perturbed:.1f} | {change_text(r)} | {p:.3g} | {verdict(p)} |"
            )
        return "\n".join(lines) + "\n"
