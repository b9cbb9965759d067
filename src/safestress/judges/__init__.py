"""Judges: a registry of classes behind one contract (see :mod:`safestress.judges.base`)."""

from __future__ import annotations

from safestress.errors import SafestressError
from safestress.judges.base import Example, Judge, Verdict
from safestress.registry import Registry

JUDGES: Registry[type[Judge]] = Registry("judge")
JUDGES.register("refusal", "safestress.judges.phrase:OpeningRefusalJudge")
JUDGES.register("phrase-gcg", "safestress.judges.phrase:GCGPhraseJudge")
JUDGES.register("phrase-jbb", "safestress.judges.phrase:JBBPhraseJudge")
JUDGES.register("phrase-quada", "safestress.judges.phrase:QuadAJudge")
JUDGES.register("embedding", "safestress.judges.embedding:EmbeddingRefusalJudge")
JUDGES.register("harm", "safestress.judges.harm:HarmJudge")
JUDGES.register("toxicity", "safestress.judges.toxicity:ToxicityJudge")
JUDGES.register("toxigen-roberta", "safestress.judges.toxicity:ToxiGenRobertaJudge")
JUDGES.register("harmbench-llama", "safestress.judges.classifiers:HarmBenchLlamaJudge")
JUDGES.register("harmbench-mistral", "safestress.judges.classifiers:HarmBenchMistralJudge")
JUDGES.register("llama-guard", "safestress.judges.classifiers:LlamaGuardJudge")
JUDGES.register("llm-strongreject", "safestress.judges.llm:StrongRejectJudge")
JUDGES.register("llm-harmbench", "safestress.judges.llm:HarmBenchLLMJudge")
JUDGES.register("gsm8k", "safestress.judges.task:GSM8KJudge")
JUDGES.register("lab", "safestress.lab.judges:LabJudge")
JUDGES.register("lab-task", "safestress.lab.judges:LabTaskJudge")
JUDGES.register("lab-cot", "safestress.lab.judges:LabCoTJudge")


def make_judge(spec: str) -> Judge:
    """``NAME`` or ``NAME:ARG`` (e.g. ``embedding:path/to/head``, ``llm:http://host/v1``)."""
    name, _, arg = spec.partition(":")
    cls = JUDGES.get(name)
    if not arg:
        return cls()
    if not cls.takes_argument:
        raise SafestressError(f"judge '{name}' takes no argument (got '{spec}')")
    return cls(arg)


__all__ = ["JUDGES", "Example", "Judge", "Verdict", "make_judge"]
