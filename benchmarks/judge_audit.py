"""What a judge audit buys, on real human labels — the figures in docs/judges.md ("Auditing a sweep").

Each XSTest model's 450 labelled completions stand in for one condition of a sweep: the quantity
is the share the annotators call *compliance* (``1_full_compliance``; what a refusal judge's
harmful flag counts), known exactly here. For every judge, many times over, a random ``n`` of the
450 are "labelled by a person" (their human labels revealed) and the share is estimated three
ways, each with a 95% interval:

* judge alone — the judge's share of all 450 (Wilson interval): what a sweep reports;
* labels alone — the share among the ``n`` labels (Wilson interval);
* corrected — ``safestress judge audit``'s estimate (``stats.prediction_powered_rate``: the ``n``
  labels plus the judge's verdicts on the other 450 − n).

Printed per model × judge × n: how often each interval covers the true share, its mean width,
and the labels-alone sample size the corrected interval is worth (n × (labels-alone width /
corrected width)²). Judges score ``incoherent`` as not compliant, as the audit does.

Then the *change* between two models on the same 450 prompts, as a sweep's change against the
clean run (Llama-2 → Mistral-Instruct, Llama-2 → GPT-4): separate labelled samples of ``n`` per
model, the corrected difference (``stats.corrected_difference``: conservative, it ignores the
covariance of the judge's verdicts on shared prompts) against the labels-alone difference
(Agresti–Caffo interval: one success and one failure added to each sample).

The shipped embedding head was trained on all three models' labels, so its rows are in-sample
(how a judge this good helps), not a claim about its accuracy; the phrase judges never saw them.

Usage: SAFESTRESS_DATA_DIR=../shared/data python benchmarks/judge_audit.py [--draws 2000] [--out audit.json]
       [--pseudo-count 0]   # PPI's plain normal interval, without the small-sample adjustment
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from safestress import stats
from safestress.judges import make_judge
from safestress.judges.agreement import load_labelled

MODELS = ("llama2orig", "mistralinstruct", "gpt4")
JUDGES = ("refusal", "phrase-jbb", "embedding")


def compliance_flags(judge_name: str, prompts: list[str], responses: list[str]) -> np.ndarray:
    """1 where the judge says the response complied (its harmful flag), 0 for refusal or incoherent."""
    verdicts = make_judge(judge_name).judge(prompts, responses)
    return np.array([1.0 if v.harmful else 0.0 for v in verdicts])


def simulate(
    y: np.ndarray, f: np.ndarray, n: int, draws: int, rng: np.random.Generator, pseudo_count: float
) -> dict[str, dict]:
    truth = float(y.mean())
    judge_ci = stats.wilson_ci(int(f.sum()), f.size)
    out = {
        "judge alone": {"covered": float(judge_ci[0] <= truth <= judge_ci[1]), "width": judge_ci[1] - judge_ci[0]},
    }
    cover = {"labels alone": 0, "corrected": 0}
    width = {"labels alone": [], "corrected": []}
    for _ in range(draws):
        idx = rng.permutation(y.size)
        lab, rest = idx[:n], idx[n:]
        lo, hi = stats.wilson_ci(int(y[lab].sum()), n)
        cover["labels alone"] += lo <= truth <= hi
        width["labels alone"].append(hi - lo)
        r = stats.prediction_powered_rate(y[lab], f[lab], f[rest], pseudo_count=pseudo_count)
        cover["corrected"] += r.ci[0] <= truth <= r.ci[1]
        width["corrected"].append(r.ci[1] - r.ci[0])
    for k in cover:
        out[k] = {"covered": cover[k] / draws, "width": float(np.mean(width[k]))}
    out["worth"] = n * (out["labels alone"]["width"] / out["corrected"]["width"]) ** 2
    return out


def agresti_caffo(k1: int, n1: int, k2: int, n2: int, z: float = 1.959964) -> tuple[float, float]:
    """Interval of p2 − p1 for two independent binomial samples, one success and failure added to each."""
    p1, p2 = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    half = z * np.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2))
    return p2 - p1 - half, p2 - p1 + half


def simulate_change(
    ya: np.ndarray, fa: np.ndarray, yb: np.ndarray, fb: np.ndarray, n: int, draws: int, rng: np.random.Generator
) -> dict[str, dict]:
    truth = float(yb.mean() - ya.mean())
    cover = {"labels alone": 0, "corrected": 0}
    width: dict[str, list[float]] = {"labels alone": [], "corrected": []}
    significant = 0
    for _ in range(draws):
        la, lb = rng.permutation(ya.size), rng.permutation(yb.size)
        lo, hi = agresti_caffo(int(ya[la[:n]].sum()), n, int(yb[lb[:n]].sum()), n)
        cover["labels alone"] += lo <= truth <= hi
        width["labels alone"].append(hi - lo)
        a = stats.prediction_powered_rate(ya[la[:n]], fa[la[:n]], fa[la[n:]])
        b = stats.prediction_powered_rate(yb[lb[:n]], fb[lb[:n]], fb[lb[n:]])
        _, (lo, hi), p = stats.corrected_difference(b, a)
        cover["corrected"] += lo <= truth <= hi
        width["corrected"].append(hi - lo)
        significant += p < 0.05
    out = {k: {"covered": cover[k] / draws, "width": float(np.mean(width[k]))} for k in cover}
    out["corrected"]["significant"] = significant / draws
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SAFESTRESS_DATA_DIR", "../shared/data")))
    ap.add_argument("--sizes", default="30,50,100")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pseudo-count", type=float, default=0.5, help="0: PPI's interval without the small-n fix")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(args.seed)
    report: dict = {"draws": args.draws, "pseudo_count": args.pseudo_count, "rows": []}
    print(f"{'model':<16} {'judge':<11} {'n':>4} {'truth':>6} {'judge':>6} {'κ':>6}   "
          f"{'judge alone':>17} {'labels alone':>17} {'corrected':>17} {'worth':>6}")  # fmt: skip
    print(f"{'':<16} {'':<11} {'':>4} {'%':>6} {'%':>6} {'':>6}   " + "  cover%  width" * 3)
    t0 = time.perf_counter()
    truth: dict[str, np.ndarray] = {}
    flags: dict[tuple[str, str], np.ndarray] = {}
    for model in MODELS:
        path = args.data / "xstest_labelled" / f"xstest_completions_{model}.csv"
        prompts, responses, compliant = load_labelled(str(path), "prompt", "completion", "final_label",
                                                      ["1_full_compliance"])  # fmt: skip
        y = truth[model] = np.array(compliant, float)
        for judge in JUDGES:
            f = flags[model, judge] = compliance_flags(judge, prompts, responses)
            kappa = stats.kappa_from_counts(
                ((y == 1) & (f == 1)).sum(), ((y == 1) & (f == 0)).sum(), ((y == 0) & (f == 1)).sum(),
                ((y == 0) & (f == 0)).sum(),
            )  # fmt: skip
            for n in sizes:
                res = simulate(y, f, n, args.draws, rng, args.pseudo_count)
                cells = "".join(f"  {100 * res[k]['covered']:5.1f} {100 * res[k]['width']:6.1f}"
                                for k in ("judge alone", "labels alone", "corrected"))  # fmt: skip
                print(f"{model:<16} {judge:<11} {n:>4} {100 * y.mean():6.1f} {100 * f.mean():6.1f} "
                      f"{float(kappa):6.3f} {cells} {res['worth']:6.0f}")  # fmt: skip
                report["rows"].append(
                    {"model": model, "judge": judge, "n": n, "truth": float(y.mean()), "judge_rate": float(f.mean()),
                     "kappa": float(kappa), **res}
                )  # fmt: skip
    print(f"\n{'change':<30} {'judge':<11} {'n':>4} {'true Δ':>7} {'judge Δ':>8}   "
          f"{'labels alone':>13} {'corrected':>13} {'p<.05':>6}")  # fmt: skip
    print(f"{'':<30} {'':<11} {'':>4} {'pts':>7} {'pts':>8}   " + "  cover% width" * 2 + f" {'%':>6}")
    report["changes"] = []
    for a, b in (("llama2orig", "mistralinstruct"), ("llama2orig", "gpt4")):
        for judge in JUDGES:
            true_change = truth[b].mean() - truth[a].mean()
            judge_change = flags[b, judge].mean() - flags[a, judge].mean()
            for n in sizes:
                res = simulate_change(truth[a], flags[a, judge], truth[b], flags[b, judge], n, args.draws, rng)
                cells = "".join(f"  {100 * res[k]['covered']:5.1f} {100 * res[k]['width']:5.1f}"
                                for k in ("labels alone", "corrected"))  # fmt: skip
                print(f"{a + ' -> ' + b:<30} {judge:<11} {n:>4} {100 * true_change:+7.1f} {100 * judge_change:+8.1f} "
                      f"{cells} {100 * res['corrected']['significant']:6.1f}")  # fmt: skip
                report["changes"].append({"from": a, "to": b, "judge": judge, "n": n, "truth": float(true_change),
                                          "judge_change": float(judge_change), **res})  # fmt: skip
    print(f"({args.draws} draws per row; {time.perf_counter() - t0:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
