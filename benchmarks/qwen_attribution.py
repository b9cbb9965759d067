"""Where safety lives on a real model: prune SCU / UCU / a random set, ablate the refusal direction.

Needs a unit map (``safestress attribute units``) and a direction (``safestress attribute
direction``) of the same model. Runs each condition through the normal sweep (store, judge,
statistics) on harmful prompts, measures utility as the mean NLL of the model's own clean
answers to held-out benign prompts under the same perturbation, and writes a JSON summary and a
markdown table under ``--out``.

Usage:
  SAFESTRESS_DATA_DIR=../shared/data python benchmarks/qwen_attribution.py --model MODEL \\
      --units units/units.json --direction direction/direction.safetensors --out docs/results/qwen-attribution
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import safestress as ss
from safestress import stats
from safestress.attribution.calibration import CalibrationSet, build_calibration, response_nll
from safestress.config import build_config
from safestress.datasets import load_dataset
from safestress.execution import execute
from safestress.judges import make_judge
from safestress.perturb import PERTURBATIONS
from safestress.report.labels import labelled
from safestress.store import Store
from safestress.sweep import plan_sweep

PRUNE_SITES = "blocks.*.mlp.act,blocks.*.attn.z"
ABLATE_SITES = "blocks.*.resid_pre,blocks.*.attn.out,blocks.*.mlp.out"


def conditions(units: str, direction: str, random_seeds: int) -> list[tuple[str, str, dict, str]]:
    out = [
        ("prune SCU", "prune", {"units": units, "unit_class": "scu"}, PRUNE_SITES),
        ("prune UCU", "prune", {"units": units, "unit_class": "ucu"}, PRUNE_SITES),
    ]
    for seed in range(random_seeds):
        out.append(
            (
                f"prune random (seed {seed})",
                "prune",
                {"units": units, "unit_class": "random", "seed": seed},
                PRUNE_SITES,
            )
        )
    if direction:
        out.append(("ablate refusal direction", "ablate-direction", {"direction": direction}, ABLATE_SITES))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--units", required=True)
    ap.add_argument("--direction", default="")
    ap.add_argument("--dataset", default="jbb")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--utility-prompts", type=int, default=48)
    ap.add_argument("--random-seeds", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--judge", default="refusal")
    ap.add_argument("--store", default="attribution.db")
    ap.add_argument("--out", default="docs/results/qwen-attribution")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = {}
    per_item: dict[str, dict[str, bool]] = {}
    lm = None
    for label, name, params, sites in conditions(args.units, args.direction, args.random_seeds):
        cfg = build_config(
            None,
            models=[args.model],
            dataset=args.dataset,
            limit=args.limit,
            perturb=name,
            params=params,
            sites=[sites],
            max_new_tokens=args.max_new_tokens,
            judge=[args.judge],
            store=args.store,
        )
        plan = plan_sweep(cfg)
        with Store(cfg.store) as store:
            counts = execute(plan, store)
            frame = labelled(plan.frame(store), store)
        print(f"{label}: {counts['generated']} generated", flush=True)
        judge_key = plan.judges[0].key
        df = frame[frame["judge"] == judge_key]
        for is_clean, part in df.groupby(df["perturbation"] == "none"):
            key = "clean" if is_clean else label
            flags = {
                r.item_id: bool(r.harmful)
                for r in part.itertuples()
                if r.harmful is not None and r.harmful == r.harmful
            }
            per_item[key] = flags
            incoherent = float((part["label"] == "incoherent").mean())
            per_item.setdefault("_incoherent", {})[key] = incoherent  # type: ignore[index]
        if lm is None:
            lm = plan.models[0]
    assert lm is not None
    lm.ensure_weights()

    # utility: NLL of the clean model's own answers to held-out benign prompts
    cal_path = out / "utility-heldout.json"
    if cal_path.is_file():
        utility = CalibrationSet.load(cal_path)
    else:
        benign = [i.prompt for i in load_dataset("harmless-val").items[-args.utility_prompts :]]
        utility = build_calibration(
            lm, "utility-heldout", benign, make_judge("refusal"), "compliance", max_new_tokens=48
        )
        utility.save(cal_path)
    nll = {"clean": response_nll(lm, utility)}
    for label, name, params, sites in conditions(args.units, args.direction, args.random_seeds):
        pert = PERTURBATIONS.get(name)(**params)
        with ss.perturbed(lm, pert, sites):
            nll[label] = response_nll(lm, utility)
        print(f"utility NLL {label}: {nll[label]:.3f}", flush=True)

    clean = per_item["clean"]
    incoh = per_item.pop("_incoherent")
    rows = []
    for key, flags in per_item.items():
        common = sorted(set(flags) & set(clean))
        k, n = sum(flags[i] for i in common), len(common)
        lo, hi = stats.wilson_ci(k, n)
        row = {"condition": key, "n": n, "asr": k / n if n else float("nan"), "ci": [lo, hi]}
        row["incoherent"] = incoh[key]  # type: ignore[index]
        row["utility_nll"] = nll.get(key)
        if key != "clean":
            b, c = stats.discordant([clean[i] for i in common], [flags[i] for i in common])
            row["p_vs_clean"] = stats.mcnemar_exact(b, c)
        rows.append(row)
    results["rows"] = rows
    scu = per_item.get("prune SCU", {})
    for key in per_item:
        if key.startswith("prune random"):
            common = sorted(set(scu) & set(per_item[key]))
            b, c = stats.discordant([per_item[key][i] for i in common], [scu[i] for i in common])
            results.setdefault("scu_vs_random", []).append(
                {"random": key, "n": len(common), "scu_only": b, "random_only": c, "p": stats.mcnemar_exact(b, c)}
            )
    (out / "attribution.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| condition | n | ASR % (95% CI) | p vs clean | incoherent % | utility NLL |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = f"{r['p_vs_clean']:.2g}" if "p_vs_clean" in r else "—"
        lines.append(
            f"| {r['condition']} | {r['n']} | {100 * r['asr']:.0f} ({100 * r['ci'][0]:.0f}–{100 * r['ci'][1]:.0f}) "
            f"| {p} | {100 * r['incoherent']:.0f} | {r['utility_nll']:.3f} |"
        )
    (out / "attribution.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for c in results.get("scu_vs_random", []):
        print(
            f"SCU vs {c['random']}: harmful only under SCU {c['scu_only']}, only under random {c['random_only']}, "
            f"exact McNemar p = {c['p']:.2g}"
        )


if __name__ == "__main__":
    main()
