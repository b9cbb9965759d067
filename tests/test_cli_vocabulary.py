"""One vocabulary across commands: the same option name for the same thing everywhere."""

from __future__ import annotations

from typing import Any

import typer

from safestress.cli import app

# each group names one thing; at most one spelling may appear across all commands
SYNONYMS = [
    {"--benign", "--harmless"},
    {"--limit", "--n", "--num", "--max-items"},
    {"--out", "--output", "--out-dir", "--output-dir"},
    {"--store", "--db", "--database"},
    {"--data-dir", "--datadir", "--data-folder"},
    {"--judge", "--judges"},
    {"--model", "--models"},
]
# options that name a dataset the command loads: such a command must also take --data-dir
DATASET_OPTIONS = {"--dataset", "--harmful", "--benign"}


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    if hasattr(group, "commands"):  # a group (typer may bring its own click classes)
        for name, sub in group.commands.items():
            out.update(_commands(sub, f"{prefix} {name}".strip()))
    else:
        out[prefix] = group
    return out


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def test_no_command_spells_a_shared_option_differently():
    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 20  # the walk reaches the sub-commands (judge, lab, attribute, analyze …)
    used = {name: _options(cmd) for name, cmd in commands.items()}
    for group in SYNONYMS:
        spellings = {o: sorted(c for c, opts in used.items() if o in opts) for o in group}
        present = {o: cs for o, cs in spellings.items() if cs}
        assert len(present) <= 1, f"one thing, several names: {present}"


def test_every_command_that_loads_a_named_dataset_takes_data_dir():
    for name, cmd in _commands(typer.main.get_command(app)).items():
        opts = _options(cmd)
        if opts & DATASET_OPTIONS:
            assert "--data-dir" in opts, name
