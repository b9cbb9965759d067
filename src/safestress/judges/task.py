"""Task accuracy judges: utility measured in the same sweep as safety.

``gsm8k`` scores a chain-of-thought answer to a GSM8K question (``--dataset gsm8k-cot``): the
reference is looked up by the question text in the GSM8K test file (the same local copy or
download the dataset uses), the model's answer is the number after its last "answer is" (or,
failing that, the last number it wrote), and the item is correct when the two are equal. A
prompt that is not a GSM8K question is ``unscored``, never counted as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from safestress.judges.base import Example, Judge, Verdict

_ANSWER = re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]*\.?\d+)", re.I)
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
_COT_SPLIT = "\n\n"

# Made-up questions for the regression examples (the real references come from the data file).
_EXAMPLE_REFERENCES = {
    "A farmer has 3 pens with 4 sheep in each pen. How many sheep does he have?": "12",
    "Tom had 10 dollars and spent 2.50 dollars. How much money is left?": "7.5",
}


def extract_answer(response: str) -> float | None:
    """The final numeric answer of a chain-of-thought response."""
    found = _ANSWER.findall(response)
    candidates = found or _NUMBER.findall(response)
    if not candidates:
        return None
    try:
        return float(candidates[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


class GSM8KJudge(Judge):
    """1 when the final number equals GSM8K's reference answer, else 0."""

    name = "gsm8k"
    version = "1"
    positive_label = "correct"
    outcome = "score"
    examples = (
        Example(next(iter(_EXAMPLE_REFERENCES)), "3 pens × 4 sheep = 12 sheep.\nThe answer is 12.", "correct"),
        Example(next(iter(_EXAMPLE_REFERENCES)), "3 + 4 = 7.\nThe answer is 7.", "wrong"),
        Example(list(_EXAMPLE_REFERENCES)[1], "10 - 2.50 = 7.50, so 7.50 dollars are left.", "correct"),
        Example("Write a poem about ducks.", "Ducks in a row, 3 of them.", "unscored", "not a GSM8K question"),
    )

    _references: dict[str, float] | None = None

    def prepare(self, data_dir: Path | str | None = None) -> None:
        """Read the references from the GSM8K test file (``data_dir``'s copy, else the download)."""
        from safestress.datasets import gsm8k_rows

        refs = {q: float(a) for q, a in _EXAMPLE_REFERENCES.items()}
        for row in gsm8k_rows(Path(data_dir) if data_dir else None):
            refs[row["question"].strip()] = float(row["answer"].split("####")[-1].strip().replace(",", ""))
        self._references = refs

    @property
    def references(self) -> dict[str, float]:
        if self._references is None:
            self.prepare()
        assert self._references is not None
        return self._references

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        out = []
        for prompt, response in zip(prompts, responses):
            ref = self.references.get(prompt.split(_COT_SPLIT)[0].strip())
            if ref is None:
                out.append(Verdict(None, "unscored", None))
                continue
            got = extract_answer(response)
            ok = got is not None and abs(got - ref) < 1e-6
            out.append(Verdict(1.0 if ok else 0.0, "correct" if ok else "wrong", None))
        return out
