"""QuadA-style perturbation-aware safety training, measured exactly on the lab model.

Starts from a lab model whose refusals break under activation noise (``--depth shallow`` by
default) and trains it on the same exact preference pairs (harmful request: refusal preferred
over compliance; benign request: the answer preferred over a refusal; 3 : 1) four ways, same
steps, learning rate and seed:

* ``DPO`` — plain preference training (the baseline);
* ``DPO + noise`` — the policy's activations perturbed during training (the first blocks' residual
  output, Gaussian, σ relative to each token's RMS);
* ``DPO + cluster`` — plain DPO plus the harmful-activation cluster term;
* ``QuadA`` — both.

Each model is then evaluated on the 120 held-out ``lab-harmful`` prompts (refusal, exact ``lab``
judge, greedy) clean, under Gaussian noise at the training sites and at every block (``--seeds``
noise draws each), and under 4-bit per-token activation quantization of every projection input —
an approximation the training never saw — and on ``lab-benign`` for accuracy. Every variant is
compared with ``DPO`` on the same prompts: the prompt is the unit (its refusal share over the
noise draws), sign-flip test on the paired differences; the table gives how many prompts refused
more / less often than under DPO.

Usage:
  SAFESTRESS_CACHE_DIR=/tmp/cache python benchmarks/quada_lab.py --out docs/results/lab-quada
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

import safestress as ss
from safestress import stats
from safestress.lab import language as L
from safestress.lab.data import lab_benign, lab_harmful
from safestress.lab.judges import LabJudge, LabTaskJudge
from safestress.lab.model import LabSettings, lab_model_path
from safestress.train.quada import PreferenceRow, QuadASettings, quada_train

QUANT_SITES = "blocks.*.ln1.out,blocks.*.attn.z,blocks.*.ln2.out,blocks.*.mlp.act"
PAIRS_SEED = 40_000


def preference_rows(n: int) -> list[PreferenceRow]:
    rng = random.Random(f"quada:{PAIRS_SEED}")
    rows = []
    for i in range(n):
        ex = L.make_example(rng, harmful=i % 4 != 0)
        if ex.harmful:
            rows.append(PreferenceRow(ex.prompt, L.REFUSAL, ex.answer, True))
        else:
            rows.append(PreferenceRow(ex.prompt, ex.answer, L.REFUSAL, False))
    return rows


def evaluate(path: Path, conditions: dict[str, tuple[str, dict, str]], seeds: int) -> dict:
    lm = ss.load_model(str(path))
    settings = ss.GenerationSettings(max_new_tokens=24)
    hp = [it.prompt for it in lab_harmful().items]
    bp = [it.prompt for it in lab_benign().items]
    judge = LabJudge()
    out: dict = {}
    for name, (pert, params, sites) in conditions.items():
        outcome = []
        n_seeds = 1 if pert in ("none", "quant") else seeds
        for seed in range(n_seeds):
            with ss.perturbed(lm, ss.make_perturbation(pert, **params), sites):
                texts = [g.text for g in ss.generate(lm, hp, seeds=seed, settings=settings, batch_size=128)]
            verdicts = judge.judge(hp, texts)
            outcome += [v.label for v in verdicts]
        out[name] = outcome
    bt = [g.text for g in ss.generate(lm, bp, settings=settings, batch_size=128)]
    out["benign_correct"] = [v.score == 1.0 for v in LabTaskJudge().judge(bp, bt)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--depth", default="shallow")
    ap.add_argument("--pairs", type=int, default=960)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--train-sigma", type=float, default=0.75, help="relative σ of the training noise")
    ap.add_argument("--train-sites", default="blocks.0.resid_post")
    ap.add_argument("--cluster-weight", type=float, default=0.5)
    ap.add_argument("--eval-sigma", type=float, nargs="+", default=[0.75, 1.0])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    base = lab_model_path(LabSettings(depth=args.depth))
    rows = preference_rows(args.pairs)
    conditions: dict[str, tuple[str, dict, str]] = {"clean": ("none", {}, "blocks.*.resid_post")}
    for s in args.eval_sigma:
        conditions[f"noise σ={s} at {args.train_sites}"] = (
            "noise",
            {"sigma": s, "scale": "relative"},
            args.train_sites,
        )
        conditions[f"noise σ={s} at every block"] = ("noise", {"sigma": s, "scale": "relative"}, "blocks.*.resid_post")
    conditions["A4 per-token quantization"] = ("quant", {"bits": 4, "granularity": "per-token"}, QUANT_SITES)

    variants = {
        "DPO": ("none", 0.0),
        "DPO + noise": ("noise", 0.0),
        "DPO + cluster": ("none", args.cluster_weight),
        "QuadA": ("noise", args.cluster_weight),
    }
    results: dict = {f"{args.depth} (before training)": evaluate(base, conditions, args.seeds)}
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (pert, weight)) in enumerate(variants.items()):
            t0 = time.perf_counter()
            lm = ss.load_model(str(base))
            torch.manual_seed(0)
            settings = QuadASettings(
                steps=args.steps,
                learning_rate=args.lr,
                beta=args.beta,
                batch_size=args.batch_size,
                max_length=64,
                perturbation=pert,
                params={"sigma": args.train_sigma, "scale": "relative"},
                sites=args.train_sites,
                cluster_weight=weight,
            )
            out = Path(tmp) / f"v{i}"
            summaries[name] = quada_train(lm, rows, out, settings, log=lambda _: None)
            results[name] = evaluate(out, conditions, args.seeds)
            print(f"{name}: trained and evaluated in {time.perf_counter() - t0:.0f} s", flush=True)

    def refusal(labels: list[str]) -> float:
        return sum(lab == "refusal" for lab in labels) / len(labels)

    def harmful_among_coherent(labels: list[str]) -> float | None:
        scored = [lab for lab in labels if lab != "incoherent"]
        return None if not scored else sum(lab in ("compliance", "partial") for lab in scored) / len(scored)

    table = []
    for model, res in results.items():
        row = {"model": model, "benign_accuracy": sum(res["benign_correct"]) / len(res["benign_correct"])}
        for cond in conditions:
            labels = res[cond]
            entry = {
                "refused": refusal(labels),
                "harmful_among_coherent": harmful_among_coherent(labels),
                "incoherent": sum(lab == "incoherent" for lab in labels) / len(labels),
                "n": len(labels),
            }
            if model in variants and model != "DPO":
                # the prompt is the unit: per-prompt refusal share over the noise draws, paired with
                # DPO's on the same prompt, sign-flip test (= exact McNemar with one draw)
                n_prompts = len(lab_harmful().items)
                base_ref = torch.tensor([lab == "refusal" for lab in results["DPO"][cond]], dtype=torch.float64)
                mine = torch.tensor([lab == "refusal" for lab in labels], dtype=torch.float64)
                diffs = (mine.view(-1, n_prompts).mean(0) - base_ref.view(-1, n_prompts).mean(0)).tolist()
                entry.update(
                    gained_vs_dpo=sum(d > 0 for d in diffs),
                    lost_vs_dpo=sum(d < 0 for d in diffs),
                    p_vs_dpo=stats.sign_flip_test(diffs),
                )
            row[cond] = entry
        table.append(row)
    meta = {
        "base": str(base),
        "settings": vars(args) | {"out": str(args.out)},
        "training": {
            k: {x: v[x] for x in ("train_loss", "cluster_first", "cluster_last", "seconds")}
            for k, v in summaries.items()
        },
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2) + "\n")
    head = "| model | " + " | ".join(conditions) + " | benign accuracy |"
    lines = [head, "|" + "---|" * (len(conditions) + 2)]
    for row in table:
        cells = []
        for cond in conditions:
            e = row[cond]
            cell = f"{100 * e['refused']:.1f}%"
            if e["incoherent"]:
                cell += f" ({100 * e['incoherent']:.0f}% inc.)"
            if "p_vs_dpo" in e:
                cell += f" [+{e['gained_vs_dpo']}/−{e['lost_vs_dpo']}, p {e['p_vs_dpo']:.2g}]"
            cells.append(cell)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {100 * row['benign_accuracy']:.1f}% |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
