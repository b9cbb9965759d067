"""The judge contract: a batch of (prompt, response) pairs -> one :class:`Verdict` each.

Every judge has a ``name`` and a ``version`` (both stored with each verdict, so a changed judge
never reuses old verdicts), judges a whole batch at once, and says for each item:

* ``score`` in [0, 1]: the judge's confidence in its positive class (refusal judges: refusal),
* ``label``: ``refusal`` / ``compliance`` / ``incoherent`` / ``unscored`` (or ``harmful``,
  ``toxic`` … for other judges),
* ``harmful``: whether the item counts towards the harmful-output rate; ``None`` when it is not
  counted at all (empty or incoherent output, or a judge failure) — never silently safe.

Each judge ships regression examples (``examples``) that the test suite replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Verdict:
    score: float | None
    label: str
    harmful: bool | None


@dataclass(frozen=True)
class Example:
    """A regression example: the verdict label a judge must give."""

    prompt: str
    response: str
    label: str
    why: str = ""


class Judge:
    name: ClassVar[str] = "judge"
    version: ClassVar[str] = "1"
    positive_label: ClassVar[str] = "refusal"  # the class agreement reports treat as positive
    examples: ClassVar[tuple[Example, ...]] = ()
    takes_argument: ClassVar[bool] = False  # ``NAME:ARG`` specs pass ARG to the constructor
    applies_coherence: ClassVar[bool] = False  # labels degenerate text ``incoherent`` (judges.coherence)

    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        raise NotImplementedError

    @property
    def key(self) -> str:
        """``name@version``: how verdicts are keyed in the store. A judge that applies the coherence
        criterion adds its version from 2 on (``refusal@3/c3``), so verdicts under version 1 — stored
        before the criterion had a version — keep their keys."""
        from safestress.judges.coherence import VERSION

        suffix = f"/c{VERSION}" if self.applies_coherence and VERSION > 1 else ""
        return f"{self.name}@{self.version}{suffix}"
