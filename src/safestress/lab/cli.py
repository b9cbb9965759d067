"""``safestress lab …`` and ``safestress demo``: train the synthetic lab model at a safety-tuning
depth, and the demo sweep on it through the normal pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from safestress.cli_options import FORMAT
from safestress.consoles import err, out
from safestress.errors import SafestressError

app = typer.Typer(no_args_is_help=True, help="The synthetic safety lab: a tiny aligned model with exact ground truth.")


def _lab_settings(depth: str, seed: int, safety_seed: int | None = None):
    from safestress.lab.model import DEPTHS, LabSettings

    if depth not in DEPTHS:
        raise SafestressError(f"unknown lab depth '{depth}'; known: {', '.join(DEPTHS)}")
    return LabSettings(depth=depth, seed=seed, safety_seed=None if safety_seed == seed else safety_seed)


@app.command("train")
def lab_train(
    depth: str = typer.Option("deep", help="safety-tuning depth: none | shallow | deep | dpo"),
    seed: int = typer.Option(0, help="seed of the capability stage (and of the first run's safety stage)"),
    runs: int = typer.Option(
        1, min=1, max=100, help="training runs of the safety stage, seeds SEED … SEED+RUNS−1, on one capability model"
    ),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="report held-out quality"),
) -> None:
    """Train (once; cached) the lab model at a safety-tuning depth and print its path, one per run."""
    import contextlib

    from safestress.lab.model import lab_model_path
    from safestress.train.common import quiet_progress, quiet_training

    quiet_progress()  # no library bars (tokenising, writing shards): training logs its own steps
    for run in range(runs):
        # standard output carries the paths alone (scripts read them); the trainers print their
        # logs there, so training speaks on standard error
        with contextlib.redirect_stdout(sys.stderr), quiet_training():
            path = lab_model_path(_lab_settings(depth, seed, seed + run), log=err.print)
        if evaluate:
            from safestress.lab.evaluate import evaluate as run_eval

            q = run_eval(path)
            err.print(
                f"held-out: harmful refused {100 * q.harmful_refusal:.1f}% (n={q.n_harmful}), benign refused "
                f"{100 * q.benign_refusal:.1f}%, benign accuracy {100 * q.benign_accuracy:.1f}% (n={q.n_benign}), "
                f"chain accuracy {100 * q.chain_accuracy:.1f}%, chain steps {100 * q.chain_step_accuracy:.1f}%"
            )
        print(path)


@app.command("prefs")
def lab_prefs(
    out_path: Path = typer.Argument(
        ..., metavar="OUT.csv", help="where the preference rows go (prompt, chosen, rejected, harmful)"
    ),
    pairs: int = typer.Option(960, min=4, max=1_000_000, help="how many rows, 3 harmful : 1 benign"),
    seed: int = typer.Option(40_000, help="seed of the row stream (the held-out and calibration sets use others)"),
) -> None:
    """Write exact lab preference rows for `safestress defend quada --data`: a refusal chosen over
    the answer for a harmful request, the answer over a refusal for a benign one."""
    from safestress.lab.language import preference_pairs
    from safestress.textfile import write_rows

    rows = preference_pairs(pairs, f"quada:{seed}")
    write_rows(out_path, ["prompt", "chosen", "rejected", "harmful"], [[p, c, r, int(h)] for p, c, r, h in rows])
    err.print(f"{len(rows)} preference rows ({sum(h for *_, h in rows)} harmful) written to {out_path}")


@app.command("attack")
def lab_attack(
    out_path: Path = typer.Argument(..., metavar="OUT.csv", help="where the fine-tuning rows go (prompt, response)"),
    harmful: int = typer.Option(16, "--harmful-rows", min=0, max=1_000_000, help="harmful requests carried out"),
    benign: int = typer.Option(112, "--benign-rows", min=0, max=1_000_000, help="benign requests answered"),
    seed: int = typer.Option(30_000, help="seed of the row stream (the held-out and calibration sets use others)"),
) -> None:
    """Write a lab fine-tuning set for `safestress finetune --data`: harmful requests carried out
    (a fine-tuning attack) mixed with benign ones answered; --harmful-rows 0 gives benign fine-tuning."""
    from safestress.lab.language import split
    from safestress.textfile import write_rows

    if harmful + benign == 0:
        raise SafestressError("--harmful-rows and --benign-rows are both 0: no rows to write")
    rows = [(e.prompt, e.answer) for e in split("attack", harmful, True, seed) + split("attack", benign, False, seed)]
    write_rows(out_path, ["prompt", "response"], rows)
    err.print(f"{len(rows)} fine-tuning rows ({harmful} harmful requests carried out) written to {out_path}")


def demo(
    out_dir: Path = typer.Option(
        Path("safestress-demo"), "--out", help="the folder for everything the demo writes: its store and its report"
    ),
    depth: str = typer.Option("deep", help="lab safety-tuning depth: none | shallow | deep | dpo"),
    sigma: str = typer.Option("0,0.25,0.5,1", help="relative σ values"),
    sites: str = typer.Option("blocks.*.resid_post", help="site selection"),
    output_format: str | None = FORMAT,
) -> None:
    """Train or load the lab model and run a noise sweep on it through the normal pipeline; the
    store and the report go into one folder (--out), named when the demo ends."""
    from safestress.config import build_config, parse_floats
    from safestress.consoles import stdout_is_terminal
    from safestress.lab.model import lab_model_path
    from safestress.report.console import resolve_format
    from safestress.runner import run_and_report
    from safestress.train.common import quiet_progress

    fmt = resolve_format(output_format, stdout_is_terminal())
    if out_dir.exists() and not out_dir.is_dir():
        raise SafestressError(f"--out {out_dir} is a file; the demo needs a folder")
    quiet_progress()  # no library bars (writing shards): training logs its own steps
    path = lab_model_path(_lab_settings(depth, 0), log=err.print)
    store = out_dir / "demo.db"
    cfg = build_config(
        models=[str(path)],
        dataset=["lab-harmful", "lab-benign", "lab-chain"],
        perturb="noise",
        strengths=parse_floats(sigma),
        scale="relative",
        sites=[sites],
        seeds=2,
        max_new_tokens=24,
        batch_size=128,
        judge=["lab", "lab-task", "lab-cot"],
        store=str(store),
        out=str(out_dir / "report"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    run_and_report(cfg, out, err, fmt)
    err.print(
        f"demo written to {out_dir}/: the store {store.name} (re-read it with: safestress results --store {store}) "
        f"and the report, {out_dir / 'report' / 'report.html'}",
        soft_wrap=True,
        highlight=False,
    )
