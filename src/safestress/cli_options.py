"""Options that several commands share, defined once so that one name means one thing everywhere
(tests/test_cli_vocabulary.py walks every command and fails on synonyms)."""

from __future__ import annotations

import typer

from safestress.errors import SafestressError

MODEL = typer.Option(..., "--model", "-m", help="hub id, local directory or .gguf file")
PARAM = typer.Option(None, "--param", help="further perturbation parameter KEY=VALUE (repeatable)")
DATA_DIR = typer.Option(
    None, "--data-dir", help="folder with local copies of benchmark files (default: $SAFESTRESS_DATA_DIR)"
)

MARGIN = typer.Option(
    None,
    "--margin",
    min=0.01,
    max=99.0,
    help="equivalence margin in points: contrasts become different, equivalent within ±m, or inconclusive",
)
FORCE = typer.Option(
    False,
    "--force",
    help="go on below the analysis's minimum data (safestress/guards.py), marking the output 'insufficient data'",
)
FORMAT = typer.Option(
    None,
    "--format",
    help="table | markdown | csv | json: how results are printed (default: table on a terminal, markdown piped)",
)


def parse_params(items: list[str] | None) -> dict[str, str] | None:
    """``--param KEY=VALUE`` items as a dict (``None`` when none were given)."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SafestressError(f"--param expects KEY=VALUE, got '{item}'")
        out[key.strip()] = value.strip()
    return out


def batch_size_option(value: str | None) -> int | str | None:
    """``--batch-size``: a number of rows or ``auto``; anything else is a usage error."""
    if value is None or value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise typer.BadParameter(f"'{value}' is not a number of rows (1 or more) or 'auto'")
