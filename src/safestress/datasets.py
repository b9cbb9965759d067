"""Prompt datasets: a registry of named benchmarks plus any local CSV / JSON / JSONL file.

Named datasets resolve, in order, to (1) a local copy in ``SAFESTRESS_DATA_DIR`` (or
``data_dir=``) under the file name the benchmark publishes, (2) a copy cached by an earlier
download, (3) the benchmark's public URL, downloaded once into the cache. So an offline machine
works from a local folder and an online one needs nothing at all.

A local file is named ``csv:PATH:COLUMN``, ``jsonl:PATH:COLUMN`` or ``json:PATH:COLUMN`` (or just a
path ending in .csv/.jsonl/.json, with column ``prompt``), or given in YAML as
``{path: ..., column: ..., id_column: ...}``.

Any of these may end in a slice, ``NAME[START:STOP]`` with Python's meaning (``harmless-val[-512:]``
is its last 512 prompts), taken before ``--limit``. Sweeps take a dataset's *first* items, so a
calibration that takes its last ones (:data:`CALIBRATION_BENIGN`) is never scored on the prompts
it is then measured on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.paths import cache_dir
from safestress.registry import Registry
from safestress.textfile import decode, read_text


@dataclass(frozen=True)
class Item:
    """One prompt of a dataset; ``id`` is stable across runs (row index or the file's id column)."""

    id: str
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[Item]
    template: str | None = None  # "raw" for continuation benchmarks such as ToxiGen

    def __len__(self) -> int:
        return len(self.items)


DATASETS: Registry[Callable[[Path | None], Dataset]] = Registry("dataset")

# What a prompt set is for, registered with it (``kind=``) and read by the report without loading
# it: "harmful" requests a safe model refuses; "benign" ones it should answer, where a refusal
# judge's "not refused" is the answer rate (100 − over-refusal), not a harmful-output rate;
# "mixed" sets of both (XSTest); "task" sets scored for correctness; "toxic" continuations.
KINDS = ("harmful", "benign", "mixed", "task", "toxic")


# Benign prompts that fit a model-specific quantity (unit scores, a refusal direction): the last
# 512 of harmless-val's 6,264, apart from the first items every sweep and study evaluates on
CALIBRATION_BENIGN = "harmless-val[-512:]"

_SLICE = re.compile(r"^(?P<base>.+)\[(?P<start>[+-]?\d*):(?P<stop>[+-]?\d*)\]$")


def split_slice(spec: str) -> tuple[str, slice | None]:
    """``NAME[START:STOP]`` → (``NAME``, the slice); a spec without one → (spec, None)."""
    m = _SLICE.match(spec.strip())
    if not m:
        return spec, None
    if m["start"] in ("+", "-") or m["stop"] in ("+", "-"):
        raise SafestressError(f"dataset slice '{spec}' is not [START:STOP] with whole numbers")
    return m["base"], slice(*(int(v) if v else None for v in (m["start"], m["stop"])))


def dataset_kind(name: str) -> str:
    """The registered kind of a dataset; "harmful" for a file given as csv:/jsonl:… (the use
    safestress is built for), as before kinds were registered."""
    return DATASETS.fact(split_slice(name)[0], "kind", "harmful")


# Comment lines before a CSV header ("# dataset_version=1.2", PyRIT's scorer-evaluation files):
# "#" then a space or the end of the line, so that a header whose first column is named "#" stays.
_CSV_COMMENT = re.compile(r"#(?:[ \t].*)?$")


def _strip_leading_comments(text: str) -> str:
    lines = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and _CSV_COMMENT.match(lines[skip].rstrip("\r\n")):
        skip += 1
    return "".join(lines[skip:]) if skip else text


def read_rows(text: str, fmt: str, source: str) -> list[dict[str, Any]]:
    """Rows of a CSV/JSONL/JSON/TXT text; a CSV may open with ``# …`` comment lines.

    Every row is a mapping of column to value: a JSON file of another shape (a number, a list of
    strings, a JSONL line holding ``5``) is a one-line error naming the shape expected.
    """
    try:
        if fmt == "csv":
            return list(csv.DictReader(io.StringIO(_strip_leading_comments(text))))
        if fmt == "jsonl":
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise SafestressError(
                            f"line {n} of {source} holds a JSON {_kind(row)}; expected one object per line, "
                            'e.g. {"prompt": "..."}'
                        )
                    rows.append(row)
            return rows
        if fmt == "json":
            return _json_rows(json.loads(text), source)
    except (json.JSONDecodeError, csv.Error) as exc:
        raise SafestressError(f"cannot parse {source} as {fmt}: {exc}") from None
    if fmt == "txt":
        return [{"prompt": line} for line in text.splitlines() if line.strip()]
    raise SafestressError(f"unknown dataset format '{fmt}'; known: csv, json, jsonl, txt")


_JSON_SHAPE = 'a list of objects, e.g. [{"prompt": "..."}]'


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _json_rows(data: Any, source: str) -> list[dict[str, Any]]:
    """A JSON file's rows: a list of objects, or an object holding one (``{"data": [...]}``) or itself one row."""
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        raise SafestressError(f"{source} holds a JSON {_kind(data)}; expected {_JSON_SHAPE}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise SafestressError(f"item {i} of {source} is a JSON {_kind(row)}; expected {_JSON_SHAPE}")
    return data


def require_columns(rows: list[dict[str, Any]], columns: list[str], source: str) -> None:
    """One-line error naming the first missing column and the columns the file has."""
    for col in columns:
        if col not in rows[0]:
            raise SafestressError(f"column '{col}' not in {source}; columns: {', '.join(map(str, rows[0]))}")


def read_rows_file(path: str | Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local CSV/JSON/JSONL/TXT file; one-line errors for a missing or empty file."""
    p = Path(path).expanduser()
    rows = read_rows(read_text(p, "dataset file"), fmt or p.suffix.lstrip(".").lower(), str(p))
    if not rows:
        raise SafestressError(f"dataset {p} is empty")
    return rows


def rows_to_items(rows: list[dict[str, Any]], column: str, source: str, id_column: str | None = None) -> list[Item]:
    if not rows:
        raise SafestressError(f"dataset {source} is empty")
    require_columns(rows, [column] if id_column is None else [column, id_column], source)
    items = []
    for i, row in enumerate(rows):
        prompt = row.get(column)
        if prompt is None or not str(prompt).strip():
            continue
        ident = str(row[id_column]) if id_column else str(i)
        meta = {k: v for k, v in row.items() if k != column and k is not None}
        items.append(Item(ident, str(prompt), meta))
    if not items:
        raise SafestressError(f"dataset {source} has no non-empty '{column}' values")
    return items


def load_file(
    path: str | Path,
    column: str = "prompt",
    fmt: str | None = None,
    id_column: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a local CSV/JSON/JSONL/TXT file as a dataset."""
    rows = read_rows_file(path, fmt)
    return Dataset(name or Path(path).stem, rows_to_items(rows, column, str(path), id_column))


def local_data_dir(data_dir: Path | None) -> Path | None:
    """The local data folder: ``data_dir`` when given, else ``$SAFESTRESS_DATA_DIR``, else none."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("SAFESTRESS_DATA_DIR")
    return Path(env) if env else None


def fetch_text(filename: str, url: str, data_dir: Path | None) -> str:
    """A benchmark file's text: local copy, cached download, or download now (then cached)."""
    local = local_data_dir(data_dir)
    if local is not None and (local / filename).is_file():
        return read_text(local / filename, "dataset file")
    cached = cache_dir("datasets") / filename
    if cached.is_file():
        return read_text(cached, "cached dataset file")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = decode(resp.read(), url)
    except OSError as exc:
        where = f"{local}/{filename}" if local else f"$SAFESTRESS_DATA_DIR/{filename}"
        raise SafestressError(
            f"cannot fetch {filename}: no local copy at {where} and download failed ({exc})"
        ) from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(cached.suffix + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(cached)
    return text


def _named(
    name: str,
    filename: str,
    url: str,
    column: str,
    fmt: str,
    id_column: str | None = None,
    template: str | None = None,
    kind: str = "harmful",
) -> None:
    def loader(data_dir: Path | None = None) -> Dataset:
        rows = read_rows(fetch_text(filename, url, data_dir), fmt, filename)
        return Dataset(name, rows_to_items(rows, column, filename, id_column), template)

    loader.__doc__ = f"{name}: column '{column}' of {url}"
    DATASETS.register(name, loader, kind=kind)


_GH = "https://raw.githubusercontent.com"
_named(
    "advbench", "advbench.csv", f"{_GH}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv", "goal", "csv"
)
_named(
    "jbb",
    "jbb_harmful.csv",
    "https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors/resolve/main/data/harmful-behaviors.csv",
    "Goal",
    "csv",
)
_named(
    "harmbench",
    "harmbench_behaviors_text_all.csv",
    f"{_GH}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
    "Behavior",
    "csv",
    id_column="BehaviorID",
)
_named(
    "strongreject",
    "strongreject_dataset.csv",
    f"{_GH}/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",
    "forbidden_prompt",
    "csv",
)
_named(
    "xstest",
    "xstest_prompts.csv",
    f"{_GH}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
    "prompt",
    "csv",
    id_column="id",
    kind="mixed",
)
_named(
    "gsm8k",
    "gsm8k_test.jsonl",
    f"{_GH}/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
    "question",
    "jsonl",
    kind="task",
)
_named(
    "harmful-train",
    "harmful_train.json",
    f"{_GH}/andyrdt/refusal_direction/main/dataset/splits/harmful_train.json",
    "instruction",
    "json",
)
_named(
    "harmful-val",
    "harmful_val.json",
    f"{_GH}/andyrdt/refusal_direction/main/dataset/splits/harmful_val.json",
    "instruction",
    "json",
)
_named(
    "harmless-val",
    "harmless_val.json",
    f"{_GH}/andyrdt/refusal_direction/main/dataset/splits/harmless_val.json",
    "instruction",
    "json",
    kind="benign",
)

TOXIGEN_GROUPS = ("asian", "black", "jewish", "lgbtq", "muslim", "women")


def _toxigen(data_dir: Path | None = None) -> Dataset:
    """ToxiGen continuation prompts: few-shot lists of hateful or neutral statements about a group.

    Each file line holds statements separated by a literal ``\\n``; the prompt is that list, one
    statement per line, ending in an open item (``\n-``) so that a model continues it (use
    ``--template raw``). The files' lines already end that way; a second ``-`` made models
    continue with empty items.

    The items are ordered round-robin over the twelve files (hate and neutral × six groups): the
    first of each file, then the second of each, and so on. ``--limit N`` then takes every group
    and both kinds in equal shares; in file order the first 50 were all hateful statements about
    one group.
    """
    strata = []
    for kind in ("hate", "neutral"):
        for group in TOXIGEN_GROUPS:
            filename = f"{kind}_{group}_1k.txt"
            text = fetch_text(f"toxigen/{filename}", f"{_GH}/microsoft/TOXIGEN/main/prompts/{filename}", data_dir)
            stratum = []
            for i, line in enumerate(text.splitlines()):
                if line.strip():
                    prompt = line.replace("\\n", "\n").rstrip()
                    if not prompt.endswith("\n-"):  # the files' lines already end in an open item
                        prompt += "\n-"
                    stratum.append(Item(f"{kind}_{group}:{i}", prompt, {"group": group, "label": kind, "line": i}))
            strata.append(stratum)
    items = [s[i] for i in range(max(map(len, strata), default=0)) for s in strata if i < len(s)]
    return Dataset("toxigen", items, template="raw")


DATASETS.register("toxigen", _toxigen, kind="toxic")

GSM8K_URL = f"{_GH}/openai/grade-school-math/master/grade_school_math/data/test.jsonl"
# Appended to each GSM8K question by ``gsm8k-cot``; the ``gsm8k`` judge reads the final line.
COT_INSTRUCTION = "Think step by step, then give the final answer on its own line as: The answer is <number>."


def gsm8k_rows(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """GSM8K test rows (``question``, ``answer`` with the reference after ``####``)."""
    return read_rows(fetch_text("gsm8k_test.jsonl", GSM8K_URL, data_dir), "jsonl", "gsm8k_test.jsonl")


def _gsm8k_cot(data_dir: Path | None = None) -> Dataset:
    """GSM8K test questions with a chain-of-thought instruction (judge: ``gsm8k``)."""
    items = [
        Item(str(i), f"{row['question']}\n\n{COT_INSTRUCTION}", {"answer": row["answer"].split("####")[-1].strip()})
        for i, row in enumerate(gsm8k_rows(data_dir))
    ]
    return Dataset("gsm8k-cot", items)


def _xstest_safe(data_dir: Path | None = None) -> Dataset:
    """XSTest's 250 safe prompts (its ``contrast_*`` unsafe ones left out): refusing them is over-refusal."""
    url = f"{_GH}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv"
    rows = read_rows(fetch_text("xstest_prompts.csv", url, data_dir), "csv", "xstest_prompts.csv")
    require_columns(rows, ["prompt", "type"], "xstest_prompts.csv")
    safe = [r for r in rows if not str(r["type"]).startswith("contrast")]
    return Dataset("xstest-safe", rows_to_items(safe, "prompt", "xstest_prompts.csv", "id"))


DATASETS.register("gsm8k-cot", _gsm8k_cot, kind="task")
DATASETS.register("xstest-safe", _xstest_safe, kind="benign")
DATASETS.register("harmful-refusals", "safestress.alignment_data:harmful_refusals", kind="harmful")
DATASETS.register("chat-answers", "safestress.alignment_data:chat_answers", kind="benign")
DATASETS.register("safety-sft", "safestress.alignment_data:safety_sft", kind="mixed")
DATASETS.register("lab-harmful", "safestress.lab.data:lab_harmful", kind="harmful")
DATASETS.register("lab-benign", "safestress.lab.data:lab_benign", kind="benign")
DATASETS.register("lab-chain", "safestress.lab.data:lab_chain", kind="task")
DATASETS.register("lab-calib-harmful", "safestress.lab.data:lab_calib_harmful", kind="harmful")
DATASETS.register("lab-calib-benign", "safestress.lab.data:lab_calib_benign", kind="benign")


def load_dataset(spec: str | dict[str, Any], *, limit: int | None = None, data_dir: Path | None = None) -> Dataset:
    """Load a registered dataset by name, a ``csv:PATH:COLUMN``-style spec, or a YAML mapping,
    each optionally sliced (``NAME[START:STOP]``), then cut to its first ``limit`` items."""
    if isinstance(spec, str):
        whole, cut = split_slice(spec)
        if cut is not None:
            ds = load_dataset(whole, data_dir=data_dir)
            items = ds.items[cut]
            if not items:
                raise SafestressError(f"dataset slice '{spec}' is empty ({whole} has {len(ds.items)} items)")
            return load_limited(Dataset(spec.strip(), items, ds.template), limit)
    if isinstance(spec, dict):
        known = {"path", "column", "format", "id_column", "name"}
        unknown = set(spec) - known
        if unknown or "path" not in spec:
            raise SafestressError(
                f"dataset entry needs 'path' and may have {', '.join(sorted(known))}; got {sorted(spec)}"
            )
        ds = load_file(
            spec["path"], spec.get("column", "prompt"), spec.get("format"), spec.get("id_column"), spec.get("name")
        )
    elif spec.split(":", 1)[0] in ("csv", "json", "jsonl", "txt") and ":" in spec:
        fmt, rest = spec.split(":", 1)
        path, column = rest.rsplit(":", 1) if ":" in rest else (rest, "prompt")
        ds = load_file(path, column, fmt, name=Path(path).stem)
    elif spec in DATASETS:
        ds = DATASETS.get(spec)(data_dir)
    elif Path(spec).suffix.lower() in (".csv", ".json", ".jsonl", ".txt") and Path(spec).expanduser().exists():
        ds = load_file(spec)
    else:
        raise SafestressError(
            DATASETS.unknown_message(spec) + " (or csv:PATH:COLUMN, jsonl:PATH:COLUMN; any may end in [START:STOP])"
        )
    return load_limited(ds, limit)


def content_digest(spec: str | dict[str, Any], data_dir: Path | None = None) -> str:
    """A digest of everything a dataset hands a step: each item's id, prompt and fields (a
    training step reads targets, refusals and answers from them). A study keys its steps by it,
    so a changed data file reruns the steps that read it."""
    import hashlib

    items = load_dataset(spec, data_dir=data_dir).items
    rows = [[i.id, i.prompt, i.meta] for i in items]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_limited(ds: Dataset, limit: int | None) -> Dataset:
    """``ds`` cut to its first ``limit`` items (None: all)."""
    if limit is None:
        return ds
    if limit < 1:
        raise SafestressError(f"--limit must be at least 1, got {limit}")
    return Dataset(ds.name, ds.items[:limit], ds.template)
