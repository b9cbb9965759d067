"""Judge agreement with human labels and judge speed — the figures in docs/judges.md.

1. XSTest rotation: for each of the three models, train the embedding judge's refusal head on the
   other two (``train_head``, the recipe of ``safestress judge train``) and measure Cohen's κ of
   every refusal judge against the held-out model's human ``final_label``, with κ's 95% interval,
   and the embedding judge's κ against each phrase judge's by a paired bootstrap (difference,
   interval, p-value) — "higher than every phrase judge" is a claim about a difference.
2. Toxicity head: accuracy and κ on the ToxiGen statements, leaving one target group out at a time.
3. Speed: judging 1,000 responses with the embedding judge (model load excluded, then included).

Per-item scores go to ``--out`` (JSON) for inspection.

Usage: SAFESTRESS_DATA_DIR=../shared/data python benchmarks/judge_agreement.py [--out judge-agreement.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from safestress.judges import make_judge
from safestress.judges.agreement import Agreement, cohen_kappa, compare_kappa, evaluate_judge, load_labelled
from safestress.judges.embedding import EmbeddingRefusalJudge, HeadSettings, encode_texts, train_head
from safestress.judges.toxicity import fit_logistic, toxigen_statements
from safestress.judges.training_data import LabelledSet, compliant_answers, labelled_set

MODELS = ("llama2orig", "mistralinstruct", "gpt4")
POSITIVE = ("2_full_refusal", "3_partial_refusal")
PHRASE_JUDGES = ("refusal", "phrase-gcg", "phrase-jbb", "phrase-quada")


def xstest(data: Path, model: str) -> tuple[list[str], list[str], list[bool]]:
    return load_labelled(
        str(data / "xstest_labelled" / f"xstest_completions_{model}.csv"),
        "prompt",
        "completion",
        "final_label",
        POSITIVE,
    )


def rotation(
    data: Path,
    settings: HeadSettings,
    workdir: Path,
    report: dict,
    held_out: list[str],
    compliant: list[str],
    extra_data: list[str],
) -> None:
    print(f"{'held out':<16} " + " ".join(f"{j:>13}" for j in (*PHRASE_JUDGES, "embedding", "head only")))
    # training data beside the two XSTest models, read once: ``--extra`` (e.g. pyrit-objective) and
    # ``--compliant`` answers, as ``safestress judge train`` reads them
    extra = [labelled_set(spec, "", "", "", []) for spec in extra_data] + [compliant_answers(s) for s in compliant]
    report["training_sources"] = [part.source for part in extra]
    for test in held_out:
        train = LabelledSet()
        for part in [LabelledSet(*xstest(data, m)) for m in MODELS if m != test] + extra:
            train.add(part)
        head = workdir / f"head-without-{test}"
        t0 = time.perf_counter()
        train_head(train.prompts, train.responses, train.positive, head, settings)
        train_s = time.perf_counter() - t0
        p, r, t = xstest(data, test)
        judge = EmbeddingRefusalJudge(head)
        row = agreement_row(
            t, [evaluate_judge(make_judge(name), p, r, t) for name in PHRASE_JUDGES], evaluate_judge(judge, p, r, t)
        )
        row["embedding"]["train_seconds"] = train_s
        row["embedding"]["scores"] = judge.refusal_probability(p, r)
        report[test] = row
        print_row(test, row, data)
        print(f"{'':<16} (head trained in {train_s:.0f} s)", flush=True)


def agreement_row(truth: list[bool], phrase: list[Agreement], embedding: Agreement) -> dict:
    """One held-out model's agreement figures: every judge's, and the embedding judge against each
    phrase judge on the same items (``vs_<judge>``: κ difference, paired-bootstrap interval, p)."""
    row = {a.judge.split("@")[0]: a.as_dict() for a in phrase}
    row["embedding"] = embedding.as_dict()
    for a in phrase:
        row["embedding"][f"vs_{a.judge.split('@')[0]}"] = compare_kappa(truth, embedding.verdicts, a.verdicts).as_dict()
    return row


def head_only_kappa(data: Path, model: str, scores: list[float]) -> float:
    """κ of the head's own decision (P ≥ 0.5), without the explicit-opening rule."""
    _, r, t = xstest(data, model)
    from safestress.judges.coherence import incoherence

    keep = [i for i, text in enumerate(r) if not incoherence(text)]
    return cohen_kappa([t[i] for i in keep], [scores[i] >= 0.5 for i in keep])


def print_row(test: str, row: dict, data: Path) -> None:
    head = head_only_kappa(data, test, row["embedding"]["scores"])
    row["embedding"]["kappa_head_only"] = head
    kappas = " ".join(f"{row[j]['kappa']:>13.3f}" for j in (*PHRASE_JUDGES, "embedding"))
    print(f"{test:<16} {kappas} {head:>13.3f}", flush=True)
    e = row["embedding"]
    low, high = e["kappa_ci"]
    print(f"{'':<16} embedding κ 95% CI [{low:.3f}, {high:.3f}]", flush=True)
    for j in PHRASE_JUDGES:
        d = e.get(f"vs_{j}")
        if d:
            print(
                f"{'':<16} embedding − {j}: {d['kappa_difference']:+.3f} "
                f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p {d['p_value']:.2g}",
                flush=True,
            )


def rescore(data: Path, path: Path, report: dict) -> None:
    """Recompute the agreement table from stored per-item head scores (no retraining)."""
    old = json.loads(path.read_text())
    print(f"{'held out':<16} " + " ".join(f"{j:>13}" for j in (*PHRASE_JUDGES, "embedding", "head only")))
    for test in MODELS:
        p, r, t = xstest(data, test)
        scores = old[test]["embedding"]["scores"]
        judge = make_judge("refusal")
        opening = [v.label == "refusal" for v in judge.judge(p, r)]

        stored = {(a, b): sc for a, b, sc in zip(p, r, scores)}

        class Stored(EmbeddingRefusalJudge):  # the stored head scores under the judge's decision rule
            def __init__(self, stored: dict, opening: object) -> None:
                self.meta = {"threshold": 0.5}
                self.opening_rule = old.get("opening_rule", True)
                self._opening = opening
                self.stored = stored

            def refusal_probability(self, prompts: list[str], responses: list[str]) -> list[float]:
                return [self.stored[(a, b)] for a, b in zip(prompts, responses)]

        phrase = [evaluate_judge(make_judge(name), p, r, t) for name in PHRASE_JUDGES]
        row = agreement_row(t, phrase, evaluate_judge(Stored(stored, judge), p, r, t))
        row["embedding"].update({"scores": scores, "opening_refusals": sum(opening)})
        report[test] = row
        print_row(test, row, data)


def toxicity(report: dict) -> None:
    texts, toxic, groups = toxigen_statements()
    x = encode_texts(texts)
    y = torch.tensor([float(v) for v in toxic])
    pred, truth = [], []
    for g in sorted(set(groups)):
        train = [i for i, v in enumerate(groups) if v != g]
        test = [i for i, v in enumerate(groups) if v == g]
        head = fit_logistic(x[train], y[train], 1e-3)
        with torch.no_grad():
            pred += (torch.sigmoid(head(x[test]).squeeze(-1)) >= 0.5).tolist()
        truth += [toxic[i] for i in test]
    acc = sum(a == b for a, b in zip(pred, truth)) / len(truth)
    kappa = cohen_kappa(truth, pred)
    report["toxicity_leave_one_group_out"] = {"n": len(truth), "accuracy": acc, "kappa": kappa}
    print(f"toxicity head, leave one target group out: n={len(truth)} accuracy {acc:.3f} κ {kappa:.3f}")


def speed(data: Path, report: dict) -> None:
    """Seconds to judge 1,000 responses, and the ratio to a same-process baseline: the frozen
    encoder alone embedding the same 1,000 (prompt, response) texts."""
    prompts, responses = [], []
    for m in MODELS:
        p, r, _ = xstest(data, m)
        prompts += p
        responses += r
    prompts, responses = prompts[:1000], responses[:1000]
    t0 = time.perf_counter()
    judge = make_judge("embedding")
    judge.judge(prompts[:1], responses[:1])  # loads the encoder
    load_s = time.perf_counter() - t0
    encode_texts([f"{p} {r}" for p, r in zip(prompts[:1], responses[:1])])  # loads the frozen encoder
    t1 = time.perf_counter()
    verdicts = judge.judge(prompts, responses)
    judge_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    encode_texts([f"{p} {r}" for p, r in zip(prompts, responses)])
    base_s = time.perf_counter() - t2
    report["speed"] = {
        "n": len(verdicts),
        "load_seconds": load_s,
        "judge_seconds": judge_s,
        "encoder_only_seconds": base_s,
        "ratio_to_encoder_only": judge_s / base_s,
        "threads": torch.get_num_threads(),
    }
    print(
        f"embedding judge: 1,000 responses in {judge_s:.1f} s (+{load_s:.1f} s to load), "
        f"{judge_s / base_s:.2f}x the frozen encoder alone ({base_s:.1f} s), {torch.get_num_threads()} threads"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("SAFESTRESS_DATA_DIR", "../shared/data"))
    ap.add_argument("--epochs", type=int, default=HeadSettings().epochs)
    ap.add_argument("--parts", default="rotation,toxicity,speed")
    ap.add_argument("--held-out", default=",".join(MODELS), help="rotation: the XSTest models to hold out")
    ap.add_argument("--augment", action="store_true", help="rotation: train with refusals minus refusal sentences")
    ap.add_argument("--opening-rule", action="store_true", help="rotation: explicit refusal openings decide")
    ap.add_argument(
        "--compliant", action="append", default=[], help="rotation: FILE[:P:R] of answers taken as compliance"
    )
    ap.add_argument(
        "--extra", action="append", default=[], help="rotation: more training data, e.g. pyrit-objective[:DIR]"
    )
    ap.add_argument("--rescore", default="", help="recompute the rotation table from this JSON's head scores")
    ap.add_argument("--out", default="judge-agreement.json")
    args = ap.parse_args()
    data = Path(args.data)
    os.environ.setdefault("SAFESTRESS_DATA_DIR", str(data))
    report: dict = {}
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if args.rescore:
            rescore(data, Path(args.rescore), report)
        elif "rotation" in parts:
            settings = HeadSettings(epochs=args.epochs, augment=args.augment, opening_rule=args.opening_rule)
            report["opening_rule"] = args.opening_rule
            held_out = [m for m in args.held_out.split(",") if m]
            rotation(data, settings, Path(tmp), report, held_out, args.compliant, args.extra)
    if "toxicity" in parts:
        toxicity(report)
    if "speed" in parts:
        speed(data, report)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
