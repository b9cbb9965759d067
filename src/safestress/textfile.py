"""Reading a user's text file: the one place that decides how bytes become text.

Every file a user hands us (a sweep's YAML, a dataset, a labelled sample, a chat template, a
perplexity corpus) is read through :func:`read_text`, so the same rules hold everywhere: UTF-8,
a leading byte-order mark dropped (spreadsheet programs write one, and it would otherwise become
part of the first column's name, invisibly), and an undecodable or binary file is one line that
names the file and the first bad byte instead of a ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError

BOM = "\ufeff"


def decode(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text without a leading BOM; a one-line error naming ``source`` otherwise."""
    if b"\x00" in data[:8192]:  # text formats never hold NUL; a binary file would decode as garbage
        raise SafestressError(f"{source} is a binary file, not UTF-8 text (NUL byte at offset {data.index(0)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafestressError(
            f"{source} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded; "
            "save it as UTF-8"
        ) from None
    return text.removeprefix(BOM)


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a user's file, decoded by :func:`decode`; one-line errors for a missing file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SafestressError(f"{what} not found: {path}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SafestressError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return decode(data, str(path))


def write_rows(path: Path, header: list[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV file the project writes for later use (training pairs and preference rows that
    ``finetune``/``defend quada`` read, a judge's per-item verdicts that a document's table reads),
    written beside and then renamed: a kill never leaves half a file that a later run would trust.
    A folder or a missing parent is a one-line error."""
    import csv

    if path.is_dir():
        raise SafestressError(f"{path} is a folder; give a .csv file to write")
    if not path.parent.is_dir():
        raise SafestressError(f"cannot write {path}: no folder {path.parent}")
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
