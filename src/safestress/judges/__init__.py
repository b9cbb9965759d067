"""Judges: a registry of classes behind one contract (see :mod:`safestress.judges.base`)."""

from __future__ import annotations

from safestress.judges.base import Example, Judge, Verdict
from safestress.registry import Registry

JUDGES: Registry[type[Judge]] = Registry("judge")
JUDGES.register("refusal", "safestress.judges.phrase:OpeningRefusalJudge")
JUDGES.register("phrase-gcg", "safestress.judges.phrase:GCGPhraseJudge")
JUDGES.register("phrase-jbb", "safestress.judges.phrase:JBBPhraseJudge")
JUDGES.register("phrase-quada", "safestress.judges.phrase:QuadAJudge")
JUDGES.register("lab", "safestress.lab.judges:LabJudge")
JUDGES.register("lab-task", "safestress.lab.judges:LabTaskJudge")
JUDGES.register("lab-cot", "safestress.lab.judges:LabCoTJudge")


def make_judge(name: str) -> Judge:
    return JUDGES.get(name)()


__all__ = ["JUDGES", "Example", "Judge", "Verdict", "make_judge"]
