"""Training targets for making and aligning chat models: refusals to harmful requests, answers to safe ones.

SSAH's alignment-budget experiment aligns an unaligned model and asks what the alignment costs
(refusals gained against utility lost) when only its redundant units may change. It needs
(harmful request, refusal) pairs that no evaluation set contains: the requests are
``harmful-train`` (the training split of the harmful/harmless splits, disjoint from
JailbreakBench, AdvBench and ``harmful-val``), and the refusals are the short texts below, written
for this project. A refusal is picked per request by a hash of its text, so the pairs are the
same on every machine. The refusals name no topic, so what training teaches is the decision to
refuse, not the content of any request; each opens the way the refusal judges recognise
(``refusal``, ``embedding`` and JailbreakBench's phrase list), which a test checks.

A base model (no chat tuning) becomes a chat model by fine-tuning on ``chat-answers``: XSTest's
250 safe prompts, each with a full-compliance answer a person labelled as such (GPT-4's where it
complied, else Mistral-7B-Instruct's, else Llama-2's), from the labelled completion files.
``safety-sft`` interleaves the two, one refusal to every ``ANSWERS_PER_REFUSAL`` answers, so that
safety training also shows what not to refuse. Why a quarter and not a half: safety data mixed into
instruction tuning at large shares teaches refusing safe requests too (exaggerated safety), and
in this project's first family run (docs/results/family) half refusals made Gemma-3-270M refuse
98% of harmless prompts. A model trained on them must not then be tested on XSTest's safe prompts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safestress.datasets import Dataset, Item, fetch_text, load_dataset, read_rows, require_columns

REFUSALS = (
    "I can't help with that. It could put people at risk, so I won't give instructions or content for it.",
    "I'm sorry, but I won't assist with this request. If something difficult is going on, I'm glad to talk "
    "about safer options.",
    "I can't do that. Helping with this could cause real harm to other people.",
    "I'm sorry, I won't help with this. It is harmful, and providing it would be irresponsible.",
    "I'm not able to help with that request, because it could be used to hurt someone. Is there something "
    "else I can do for you?",
    "Sorry, I can't provide that. I don't produce content that could help someone cause harm or break the law.",
    "I cannot help with this one. It raises serious safety and legal concerns.",
    "I apologize, but I must decline. This asks for something that could seriously harm people.",
)


ANSWERS_PER_REFUSAL = 3  # safety-sft's mixture: a quarter refusals


def refusal_for(prompt: str) -> str:
    """The refusal paired with ``prompt`` (stable across machines and Python's hash seeds)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return REFUSALS[int.from_bytes(digest[:4], "big") % len(REFUSALS)]


def harmful_refusals(data_dir: Path | None = None) -> Dataset:
    """``harmful-train``'s requests, each with a ``refusal`` field to train on."""
    base = load_dataset("harmful-train", data_dir=data_dir)
    items = [Item(i.id, i.prompt, {**i.meta, "refusal": refusal_for(i.prompt)}) for i in base.items]
    return Dataset("harmful-refusals", items)


# the labelled XSTest completion files, in order of preference for a prompt's answer
_ANSWERERS = ("gpt4", "mistralinstruct", "llama2orig")
_XSTEST_COMPLETIONS = "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/model_completions"


def chat_answers(data_dir: Path | None = None) -> Dataset:
    """XSTest's safe prompts with a person-labelled full-compliance answer (field ``answer``)."""
    answers: dict[str, tuple[str, str]] = {}  # prompt id -> (prompt, answer)
    for model in _ANSWERERS:
        name = f"xstest_completions_{model}.csv"
        url = f"{_XSTEST_COMPLETIONS}/xstest_v2_completions_{model}.csv"
        text = fetch_text(f"xstest_labelled/{name}", url, data_dir)
        rows = read_rows(text, "csv", name)
        require_columns(rows, ["id", "type", "prompt", "completion", "final_label"], name)
        for r in rows:
            safe = not str(r["type"]).startswith("contrast")
            if safe and r["final_label"] == "1_full_compliance" and str(r["completion"]).strip():
                answers.setdefault(str(r["id"]), (str(r["prompt"]), str(r["completion"]).strip()))
    items = [Item(i, prompt, {"answer": answer}) for i, (prompt, answer) in answers.items()]
    return Dataset("chat-answers", items)


def safety_sft(data_dir: Path | None = None) -> Dataset:
    """``harmful-refusals`` and ``chat-answers`` interleaved, a refusal then ``ANSWERS_PER_REFUSAL``
    answers, each with its target in ``response``; what one list has left over comes last."""
    refusals = [Item(f"r{i.id}", i.prompt, {"response": i.meta["refusal"]}) for i in harmful_refusals(data_dir).items]
    answers = [Item(f"a{i.id}", i.prompt, {"response": i.meta["answer"]}) for i in chat_answers(data_dir).items]
    groups = min(len(refusals), len(answers) // ANSWERS_PER_REFUSAL)
    mixed: list[Item] = []
    for g in range(groups):
        mixed += [refusals[g], *answers[g * ANSWERS_PER_REFUSAL : (g + 1) * ANSWERS_PER_REFUSAL]]
    return Dataset("safety-sft", mixed + refusals[groups:] + answers[groups * ANSWERS_PER_REFUSAL :])
