"""Minimum amounts of data, and one rule for what happens below them.

An analysis run on too little data still prints numbers that look like findings: a unit map from
one kept refusal, a κ from a handful of items, an audit interval from five labels. Each analysis
declares its minimum here, with why; below it the command refuses in one line naming the count
and the minimum, or, with ``--force``, goes on and marks its output "insufficient data"
wherever the output is shown (the terminal, the JSON, the plot's title).

These are floors below which the result is not interpretable, not sample sizes that make a
result sound; the docs give the sizes the published figures use.
"""

from __future__ import annotations

from safestress.errors import SafestressError

INSUFFICIENT = "insufficient data"
FIELD = "insufficient_data"  # the key that carries the mark in every JSON output

# unit classes: importance scores are means over the kept calibration set; with fewer than this
# many kept refusals (or answers) one prompt decides which units rank at the top
MIN_CALIBRATION = 8
# refusal direction: a difference of means over each kind (and selection on held-out prompts of
# each kind); fewer than this and one prompt moves the direction
MIN_DIRECTION = 8
MIN_DIRECTION_VAL = 4
# refuse/fulfil probe: distances averaged over prompts
MIN_PROBE = 8
# Cohen's κ against labels: its interval is not usable on fewer scored items
MIN_KAPPA = 20
# judge audit: labels per condition below which the corrected interval (a normal approximation)
# is too narrow (stats.prediction_powered_rate); judges.audit.FEW_LABELS says the same
MIN_AUDIT_LABELS = 30


def shortfalls(counts: dict[str, tuple[int, int]]) -> list[str]:
    """Each ``what: (count, minimum)`` whose count is under its minimum, as "N what (minimum M)"."""
    return [f"{count} {what} (minimum {minimum})" for what, (count, minimum) in counts.items() if count < minimum]


def require_enough(counts: dict[str, tuple[int, int]], force: bool) -> str:
    """Refuse (one line) when a count is under its minimum, unless ``force``; then return the
    mark to show with the output ("insufficient data: …"); "" when every count suffices."""
    short = shortfalls(counts)
    if not short:
        return ""
    if not force:
        raise SafestressError(f"too little data: {'; '.join(short)}; add data, or pass --force to mark the output")
    return f"{INSUFFICIENT}: {'; '.join(short)}"


def mark_field(mark: str) -> dict[str, str]:
    """The mark as a JSON field to merge into an output (nothing when the data sufficed)."""
    return {FIELD: mark} if mark else {}
