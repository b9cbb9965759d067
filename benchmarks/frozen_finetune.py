"""SSAH's frozen-unit fine-tuning, measured exactly on the lab model.

The deep-aligned lab model is scored (``ssah``) on its own refusals and answers to calibration
prompts (a seed stream disjoint from training and evaluation), its units are classified
SCU / UCU / CU / RU, and it is then fine-tuned on a *fine-tuning attack*: harmful requests carried
out, mixed with as many benign examples. Each condition starts from the same aligned weights:

* nothing frozen;
* SCU frozen; SCU + CU frozen (SSAH's recipe);
* as many random units of each type frozen as each of those (``--random-seeds`` draws).

Every fine-tuned model is evaluated on the held-out ``lab-harmful`` / ``lab-benign`` sets with
the exact lab judges: refusal of harmful requests, benign accuracy. Each freezing condition is
compared with "nothing frozen" on the same 120 harmful prompts (exact McNemar, Holm-adjusted).

Usage:
  SAFESTRESS_CACHE_DIR=/tmp/cache python benchmarks/frozen_finetune.py --out docs/results/lab-frozen-finetune
  python benchmarks/frozen_finetune.py --ranks docs/results/lab-frozen-finetune/attack-60  # ranks only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import safestress as ss
from safestress import stats
from safestress.attribution.calibration import build_calibration
from safestress.attribution.scores import compute_scores
from safestress.attribution.units import Ratios, UnitMap
from safestress.lab import language as L
from safestress.lab.data import lab_benign, lab_harmful
from safestress.lab.judges import LabJudge, LabTaskJudge
from safestress.lab.model import LabSettings, lab_model_path
from safestress.train import FinetuneSettings, UnitFreeze, finetune

CALIBRATION_SEED = 20_000
ATTACK_SEED = 30_000


def outcomes(path: Path) -> dict:
    """Per-prompt refusal on lab-harmful and correctness on lab-benign (greedy, 24 tokens)."""
    lm = ss.load_model(str(path))
    settings = ss.GenerationSettings(max_new_tokens=24)
    hp = [it.prompt for it in lab_harmful().items]
    bp = [it.prompt for it in lab_benign().items]
    ht = [g.text for g in ss.generate(lm, hp, settings=settings, batch_size=128)]
    bt = [g.text for g in ss.generate(lm, bp, settings=settings, batch_size=128)]
    return {
        "refused": [v.label == "refusal" for v in LabJudge().judge(hp, ht)],
        "correct": [v.score == 1.0 for v in LabTaskJudge().judge(bp, bt)],
    }


def rank_lines(rows: list[dict]) -> list[str]:
    """Each classified set's rank among itself and its random draws of the same size, by harmful
    refusal (1 = refuses most): the run-level reading of SSAH's control. Each draw is one trained
    model, so the comparison is over draws (stats.rank_p), not over prompts."""
    by_name = {row["condition"]: row["harmful_refused"] for row in rows}
    lines = []
    for name, value in by_name.items():
        if not name.endswith(" frozen") or name == "nothing frozen":
            continue
        label = name.removesuffix(" frozen")
        draws = [v for m, v in by_name.items() if m.startswith(f"random like {label} (")]
        if draws:
            rank, p = stats.rank_p(value, draws)
            spread = ", ".join(f"{100 * v:.1f}" for v in sorted(draws))
            lines.append(
                f"- {name}: {100 * value:.1f}% refused; its {len(draws)} random draws {spread}%: rank {rank} of "
                f"{len(draws) + 1}, one-sided p = {p:.2f} over draws"
            )
    return lines


def write_rank_lines(results: Path) -> None:
    """Append the rank lines to an existing results.md from its results.json (no retraining)."""
    rows = json.loads((results / "results.json").read_text())["rows"]
    md = results / "results.md"
    text = md.read_text().split("\nRank among random draws", 1)[0].rstrip("\n")
    md.write_text(text + "\n\nRank among random draws (run level):\n\n" + "\n".join(rank_lines(rows)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--calibration", type=int, default=96, help="calibration prompts per set")
    ap.add_argument("--harmful", type=int, default=64, help="harmful requests carried out (the attack)")
    ap.add_argument("--benign", type=int, default=64, help="benign requests answered")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--scu", type=float, default=0.013)
    ap.add_argument("--ru", type=float, default=0.20)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    base = lab_model_path(LabSettings())
    lm = ss.load_model(str(base))
    judge = LabJudge()
    harm = [e.prompt for e in L.split("calibration", args.calibration, True, CALIBRATION_SEED)]
    good = [e.prompt for e in L.split("calibration", args.calibration, False, CALIBRATION_SEED)]
    safety = build_calibration(lm, "safety", harm, judge, "refusal", max_new_tokens=24)
    utility = build_calibration(lm, "utility", good, judge, "compliance", max_new_tokens=24)
    umap = UnitMap.build(
        lm.name,
        compute_scores(lm, safety, "ssah", cache=False),
        compute_scores(lm, utility, "ssah", cache=False),
        Ratios(scu=args.scu, ucu=args.scu, ru=args.ru),
    )
    umap.save(args.out / "units.json")

    attack = L.split("attack", args.harmful, True, ATTACK_SEED) + L.split("attack", args.benign, False, ATTACK_SEED)
    pairs = [(e.prompt, e.answer) for e in attack]  # harmful requests carried out, benign ones answered
    settings = FinetuneSettings(steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size)

    conditions: list[tuple[str, list[str] | None, int | None]] = [("nothing frozen", None, None)]
    for classes in (["scu"], ["scu", "cu"]):
        label = "+".join(c.upper() for c in classes)
        conditions.append((f"{label} frozen", classes, None))
        for seed in range(args.random_seeds):
            conditions.append((f"random like {label} (seed {seed})", classes, seed))

    results = {"aligned (before fine-tuning)": {**outcomes(base), "frozen": None, "seconds": 0.0}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, classes, seed) in enumerate(conditions):
            t0 = time.perf_counter()
            lm = ss.load_model(str(base))
            torch.manual_seed(0)
            freeze = None
            if classes:
                freeze = UnitFreeze.from_unit_map(lm.ensure_weights(), umap, classes, random_seed=seed)
            out = Path(tmp) / f"c{i}"
            summary = finetune(lm, pairs, out, settings, freeze, log=lambda _: None)
            results[name] = {**outcomes(out), "frozen": summary["frozen"], "seconds": time.perf_counter() - t0}
            r = results[name]
            print(
                f"{name:32s} harmful refused {sum(r['refused']):3d}/{len(r['refused'])}"
                f"  benign correct {sum(r['correct']):3d}/{len(r['correct'])}  ({r['seconds']:.0f} s)",
                flush=True,
            )

    ref = results["nothing frozen"]["refused"]
    names = [n for n in results if n not in ("aligned (before fine-tuning)", "nothing frozen")]
    raw = []
    for n in names:
        b, c = stats.discordant(ref, results[n]["refused"])
        raw.append(stats.mcnemar_exact(b, c))
    adjusted = stats.holm(raw)
    rows = []
    for n, r in results.items():
        k, total = sum(r["refused"]), len(r["refused"])
        lo, hi = stats.wilson_ci(k, total)
        row = {
            "condition": n,
            "harmful_refused": k / total,
            "ci95": [lo, hi],
            "benign_accuracy": sum(r["correct"]) / len(r["correct"]),
            "frozen_units": r["frozen"]["units"] if r["frozen"] else None,
            "frozen_share": r["frozen"]["share_of_parameters"] if r["frozen"] else 0.0,
        }
        if n in names:
            j = names.index(n)
            row["p_vs_nothing_frozen"] = raw[j]
            row["p_holm"] = adjusted[j]
        rows.append(row)
    meta = {
        "model": str(base),
        "units": {kind: {c: len(umap.units(kind, c)) for c in ("scu", "ucu", "cu", "ru")} for kind in ("mlp", "heads")},
        "calibration": {"safety": len(safety.prompts), "utility": len(utility.prompts)},
        "attack_pairs": len(pairs),
        "settings": vars(args) | {"out": str(args.out)},
    }
    # the question SSAH's control answers: do the classified units protect more than as many random ones?
    versus_random = []
    for n in names:
        if n.startswith("random"):
            continue
        label = n.removesuffix(" frozen")
        for m in names:
            if m.startswith(f"random like {label} ("):
                b, c = stats.discordant(results[m]["refused"], results[n]["refused"])
                # b: refused with the classified units frozen only; c: with the random ones only
                versus_random.append(
                    {"frozen": n, "control": m, "only_classified": b, "only_random": c, "p": stats.mcnemar_exact(b, c)}
                )
    meta["versus_random"] = versus_random
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "| condition | frozen (MLP neurons / heads; share of weights) | harmful refused (95% CI) "
        "| p vs nothing frozen (Holm) | benign accuracy |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        fu = row["frozen_units"]
        frozen = f"{fu['mlp']} / {fu['heads']}; {100 * row['frozen_share']:.1f}%" if fu else "—"
        p = f"{row['p_vs_nothing_frozen']:.2g} ({row['p_holm']:.2g})" if "p_holm" in row else ""
        lines.append(
            f"| {row['condition']} | {frozen} | {100 * row['harmful_refused']:.1f}% "
            f"({100 * row['ci95'][0]:.0f}–{100 * row['ci95'][1]:.0f}) | {p} | {100 * row['benign_accuracy']:.1f}% |"
        )
    lines.append("")
    for v in versus_random:
        lines.append(
            f"- {v['frozen']} vs {v['control']}: {v['only_classified']} prompts refused only with the classified "
            f"units frozen, {v['only_random']} only with the random ones; exact McNemar p = {v['p']:.2g}"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    write_rank_lines(args.out)
    print((args.out / "results.md").read_text())
    print(json.dumps(meta["units"]))


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--ranks":  # rank lines for a finished run's folder
        write_rank_lines(Path(sys.argv[2]))
    else:
        main()
