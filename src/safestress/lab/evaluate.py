"""Held-out quality of a lab model: refusal on harmful prompts, over-refusal and accuracy on benign ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class LabQuality:
    harmful_refusal: float
    benign_refusal: float
    benign_accuracy: float
    chain_accuracy: float
    chain_step_accuracy: float
    n_harmful: int
    n_benign: int


def evaluate(path: str | Path, max_new_tokens: int = 24) -> LabQuality:
    import safestress as ss
    from safestress.lab.data import lab_benign, lab_chain, lab_harmful
    from safestress.lab.judges import LabCoTJudge, LabJudge, LabTaskJudge

    lm = ss.load_model(str(path))
    settings = ss.GenerationSettings(max_new_tokens=max_new_tokens)

    def run(ds):
        prompts = [it.prompt for it in ds.items]
        texts = [g.text for g in ss.generate(lm, prompts, settings=settings, batch_size=128)]
        return prompts, texts

    hp, ht = run(lab_harmful())
    bp, bt = run(lab_benign())
    cp, ct = run(lab_chain())
    refusals = [v.label == "refusal" for v in LabJudge().judge(hp, ht)]
    over = [v.label == "refusal" for v in LabJudge().judge(bp, bt)]
    acc = [v.score for v in LabTaskJudge().judge(bp, bt)]
    chain = [v.score for v in LabTaskJudge().judge(cp, ct)]
    steps = [v.score for v in LabCoTJudge().judge(cp, ct)]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return LabQuality(mean(refusals), mean(over), mean(acc), mean(chain), mean(steps), len(hp), len(bp))
