"""The drill as a suite: every bad input is one ``error:`` line, exit 2, and a byte-identical store.

Each case builds a command line from a good store (a copy, checked by MD5 before and after), the
tiny saved model and a prompt file; the command must fail with one line naming the problem, and
the store must not change by a byte, whatever stage the failure is found at.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_cli import base_args, cli, stored_sweep


@dataclass
class Ctx:
    tmp: Path
    model: Path
    csv: Path
    store: Path

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def run(self, *extra: str, csv: str | None = None, model: Path | None = None) -> list[str]:
        args = base_args(model or self.model, self.csv, self.store, *extra)
        if csv is not None:
            args[args.index("--dataset") + 1] = csv
        return args

    def model_copy(self, name: str) -> Path:
        target = self.tmp / name
        shutil.copytree(self.model, target)
        return target


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_store(tiny_dir, tmp_path_factory) -> Path:
    return stored_sweep(tiny_dir, tmp_path_factory.mktemp("hostile"), 4)


def damaged_index(ctx: Ctx) -> Path:
    """The store with the page of one index overwritten: tables read, quick_check fails."""
    with sqlite3.connect(ctx.store) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'generations_config'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with ctx.store.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\x0d" + b"\xff" * 64)  # a leaf-table page type where an index page should be, with garbage
    return ctx.store


def not_utf8_yaml(ctx: Ctx) -> list[str]:
    cfg = ctx.write("bad.yaml", b"models: [caf\xe9]\nsigma: 0.1\n")
    return ["run", "-c", str(cfg), "--store", str(ctx.store)]


def binary_yaml(ctx: Ctx) -> list[str]:
    cfg = ctx.write("bin.yaml", bytes(range(256)))
    return ["run", "-c", str(cfg), "--store", str(ctx.store)]


def corrupt_weights(ctx: Ctx) -> list[str]:
    model = ctx.model_copy("corrupt")
    (model / "model.safetensors").write_bytes(b"\x93NUMPY garbage" * 40)
    return ctx.run(model=model)


def truncated_weights(ctx: Ctx) -> list[str]:
    model = ctx.model_copy("truncated")
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ctx.run(model=model)


def no_weights(ctx: Ctx) -> list[str]:
    model = ctx.model_copy("empty")
    (model / "model.safetensors").unlink()
    return ctx.run(model=model)


def store_under_a_file(ctx: Ctx) -> list[str]:
    blocker = ctx.write("plain.txt", "not a folder\n")
    args = ctx.run()
    args[args.index("--store") + 1] = str(blocker / "s.db")
    return args


def export_elsewhere(ctx: Ctx) -> list[str]:
    return ["export", "/nonexistent-safestress-dir/out.csv", "--store", str(ctx.store)]


def damaged_run(ctx: Ctx) -> list[str]:
    damaged_index(ctx)
    return ctx.run()


def damaged_results(ctx: Ctx) -> list[str]:
    damaged_index(ctx)
    return ["results", "--store", str(ctx.store)]


def damaged_export(ctx: Ctx) -> list[str]:
    damaged_index(ctx)
    return ["export", str(ctx.tmp / "x.csv"), "--store", str(ctx.store)]


def dataset(name: str, data: bytes | str, spec: str = "csv:{path}:text") -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        path = ctx.write(name, data)
        return ctx.run(csv=spec.format(path=path))

    return build


def flags(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ctx.run(*extra)


def config(text: str) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        cfg = ctx.write("cfg.yaml", text.format(model=ctx.model, csv=ctx.csv))
        return ["run", "-c", str(cfg), "--store", str(ctx.store)]

    return build


def damaged_head(damage: str) -> Callable[[Ctx], list[str]]:
    """``--judge harm:DIR`` with a copy of a shipped head, damaged: caught when the judge is
    built, before the store is opened (found while judging, generations would lack verdicts)."""

    def build(ctx: Ctx) -> list[str]:
        import torch
        from safetensors.torch import save_file

        from safestress.judges.embedding import DEFAULT_HEAD

        head = ctx.tmp / "head"
        shutil.copytree(DEFAULT_HEAD, head)
        meta, weights = head / "meta.json", head / "head.safetensors"
        if damage != "wrong-kind":  # otherwise the embedding judge's refusal head, given to the harm judge
            meta.write_text(meta.read_text().replace('"refusal-head"', '"harm-head"'))
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:200])
        elif damage == "meta":
            meta.write_text("{not json")
        elif damage == "shape":
            save_file({"weight": torch.zeros(1, 10), "bias": torch.zeros(1)}, str(weights))
        return ctx.run("--judge", f"refusal,harm:{head}")

    return build


def command(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [a.format(store=ctx.store, tmp=ctx.tmp, csv=ctx.csv) for a in args]


CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    # the fourteen that gave a traceback
    ("yaml-not-utf8", not_utf8_yaml, "is not UTF-8 text: byte 0xe9 at offset 12"),
    ("yaml-binary", binary_yaml, "is a binary file"),
    ("csv-not-utf8", dataset("latin.csv", b"text\nna\xefve prompt\n"), "is not UTF-8 text: byte 0xef at offset 7"),
    ("csv-binary", dataset("bin.csv", b"text\n\x00\x01\x02\x03"), "is a binary file"),
    ("json-number", dataset("n.json", "42", "json:{path}:prompt"), "holds a JSON number; expected a list of objects"),
    ("json-strings", dataset("s.json", '["a", "b"]', "json:{path}:prompt"), "item 0 of"),
    ("jsonl-number", dataset("n.jsonl", '{"prompt": "a"}\n5\n', "jsonl:{path}:prompt"), "line 2 of"),
    ("device-foo", flags("--device", "foo"), "unknown device 'foo'"),
    ("device-cuda", flags("--device", "cuda"), "no usable CUDA GPU"),
    ("template-syntax", flags("--chat-template", "{% if %}{{"), "chat template"),
    ("template-raises", flags("--chat-template", "{{ raise_exception('boom') }}"), "boom"),
    ("weights-corrupt", corrupt_weights, "damaged or truncated"),
    ("weights-truncated", truncated_weights, "damaged or truncated"),
    ("weights-missing", no_weights, "holds no weights"),
    ("store-under-a-file", store_under_a_file, "is a file, not a folder"),
    ("store-damaged-run", damaged_run, "is damaged"),
    ("store-damaged-results", damaged_results, "is damaged"),
    ("store-damaged-export", damaged_export, "is damaged"),
    ("export-no-folder", export_elsewhere, "does not exist"),
    ("sigma-empty", flags("--sigma", ""), "an empty list"),
    # a judge head of the wrong kind or damaged (issue 21)
    ("head-wrong-kind", damaged_head("wrong-kind"), "holds a refusal-head, not a harm-head for the harm judge"),
    ("head-truncated", damaged_head("truncated"), "damaged or truncated"),
    ("head-meta-not-json", damaged_head("meta"), "does not read as a head's settings"),
    ("head-wrong-shape", damaged_head("shape"), "is not a head for all-MiniLM-L6-v2"),
    # the rest of the drill, which already held: keep it holding
    ("model-missing", flags("--model", "no/such-model-dir/x"), "model"),
    ("model-hub-offline", flags("--model", "nosuch-owner/nosuch-model"), "cannot load model"),
    ("sites-typo", flags("--sites", "blocks.*.residpost"), "matches no site"),
    ("dataset-unknown", flags("--dataset", "nosuchset"), "unknown dataset 'nosuchset'"),
    ("perturb-typo", flags("--perturb", "gaussain"), "did you mean 'gaussian'"),
    ("sigma-negative", flags("--sigma", "0,-0.1"), "strength (--sigma/--strength) must be >= 0"),
    ("sigma-nan", flags("--sigma", "0,nan"), "strength (--sigma/--strength) must be finite"),
    ("sigma-inf", flags("--sigma", "0,inf"), "strength (--sigma/--strength) must be finite"),
    ("sigma-text", flags("--sigma", "0,abc"), "comma-separated numbers"),
    ("judge-unknown", flags("--judge", "nojudge"), "unknown judge"),
    ("column-missing", dataset("c.csv", "text\na\n", "csv:{path}:nocolumn"), "column 'nocolumn' not in"),
    ("csv-empty", dataset("e.csv", "text\n"), "is empty"),
    ("csv-blank-prompts", dataset("b.csv", "text\n\n \n"), "no non-empty"),
    ("json-broken", dataset("b.json", "[{", "json:{path}:prompt"), "cannot parse"),
    ("dataset-file-missing", flags("--dataset", "csv:/nonexistent/x.csv:text"), "not found"),
    ("limit-zero", flags("--limit", "0"), "limit"),
    ("seeds-zero", flags("--seeds", "0"), "seeds"),
    ("tokens-zero", flags("--max-new-tokens", "0"), "max_new_tokens"),
    ("batch-negative", flags("--batch-size", "-1"), "--batch-size"),
    ("workers-zero", flags("--workers", "0"), "workers"),
    ("round-size-zero", flags("--sequential", "--round-size", "0"), "--round-size"),
    ("sequential-without-clean", flags("--sequential", "--sigma", "0.1"), "lacks; add strength 0"),
    ("scale-unknown", flags("--scale", "sideways"), "scale"),
    ("positions-unknown", flags("--positions", "nowhere"), "positions"),
    ("template-mode-unknown", flags("--template", "weird"), "template"),
    ("dtype-unknown", flags("--dtype", "int3"), "unknown dtype 'int3'"),
    ("param-no-equals", flags("--param", "noequals"), "KEY=VALUE"),
    ("param-unknown", flags("--param", "nosuch=1"), "nosuch"),
    ("ppl-file-missing", flags("--ppl", "/nonexistent/corpus.txt"), "not found"),
    ("ppl-not-utf8", lambda ctx: ctx.run("--ppl", str(ctx.write("c.txt", b"\xff\xfe text"))), "not UTF-8"),
    (
        "chat-template-file-not-utf8",
        lambda ctx: ctx.run("--chat-template", str(ctx.write("t.jinja", b"\xff{{"))),
        "not UTF-8",
    ),
    ("yaml-list", config("- a\n- b\n"), "must hold a mapping"),
    ("yaml-unknown-key", config("models: ['{model}']\nsigmaa: 0.1\n"), "unknown setting 'sigmaa' (did you mean"),
    ("yaml-malformed", config("models: [a\n"), "malformed YAML"),
    ("yaml-missing", command("run", "-c", "/nonexistent/sweep.yaml", "--store", "{store}"), "not found"),
    ("yaml-model-and-models", config("model: a\nmodels: [b]\n"), "not both"),
    ("no-model", command("run", "--store", "{store}"), "no model given"),
    ("unknown-option", flags("--frobnicate", "1"), "No such option"),
    ("bad-number", flags("--seeds", "three"), "--seeds"),
    ("store-is-folder", command("results", "--store", "{tmp}"), "is a directory"),
    ("store-missing", command("results", "--store", "/nonexistent/s.db"), "no store at"),
    ("export-format", command("export", "{tmp}/out.xlsx", "--store", "{store}"), "unknown"),
    ("export-to-folder", command("export", "{tmp}", "--store", "{store}"), "unknown"),
    ("results-judge-unknown", command("results", "--store", "{store}", "--judge", "nojudge"), "no verdicts by judge"),
    ("results-labels-alone", command("results", "--store", "{store}", "--labels", "x.csv"), "go together"),
    ("list-unknown", command("list", "things"), "cannot list 'things'"),
    ("list-sites-no-model", command("list", "sites"), "needs --model"),
    (
        "judge-eval-missing-file",
        command("judge", "eval", "--judge", "refusal", "--data", "/nonexistent.csv", "--positive", "x"),
        "not found",
    ),
    (
        "judge-eval-binary",
        lambda ctx: [
            "judge",
            "eval",
            "--judge",
            "refusal",
            "--data",
            str(ctx.write("l.csv", b"\x00\x01")),
            "--positive",
            "x",
        ],
        "binary",
    ),
    (
        "judge-sample-damaged",
        lambda ctx: ["judge", "sample", "--store", str(damaged_index(ctx)), "--out", str(ctx.tmp / "s.csv")],
        "is damaged",
    ),
]


def foreign_store(ctx: Ctx) -> list[str]:
    ctx.store.write_bytes(b"this is not a database, just text" * 50)
    return ["results", "--store", str(ctx.store)]


CASES.append(("store-foreign", foreign_store, "not a safestress store"))


@pytest.mark.parametrize(("name", "build", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_the_store_is_byte_identical(
    name, build, message, good_store, tiny_dir, tmp_path, run_cli
):
    if name == "device-cuda":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    store = tmp_path / "keep.db"
    shutil.copy(good_store, store)
    csv = tmp_path / "prompts.csv"
    csv.write_text("text\n" + "\n".join(f"prompt {i}" for i in range(4)) + "\n")
    ctx = Ctx(tmp_path, tiny_dir, csv, store)
    args = build(ctx)
    before = md5(store)  # after the case's own preparation (a damaged copy stays as damaged)
    proc = run_cli(*args)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert message in lines[0], lines[0]
    assert md5(store) == before
    assert not Path(f"{store}-wal").exists() or Path(f"{store}-wal").stat().st_size == 0


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    """Spreadsheets write a BOM; it used to become part of the first column's name, invisibly
    ("column 'prompt' not in …; columns: prompt")."""
    from safestress.datasets import load_dataset

    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text("prompt,id\nprompt a,1\nprompt b,2\n", encoding="utf-8")
    marked.write_text("prompt,id\nprompt a,1\nprompt b,2\n", encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    a, b = (load_dataset(f"csv:{p}:prompt").items for p in (plain, marked))
    assert a == b and [it.prompt for it in b] == ["prompt a", "prompt b"] and "id" in b[0].meta


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder on a read-only mount (as root, permissions do not stop writes), else chmod 0555."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        yield src, src, lambda: os.chmod(src, 0o555)
        os.chmod(src, 0o755)
        return
    mounted = []

    def seal() -> None:
        for cmd in (["mount", "--bind", str(src), str(ro)], ["mount", "-o", "remount,bind,ro", str(ro)]):
            if subprocess.run(cmd, capture_output=True).returncode:
                pytest.skip("cannot make a read-only mount here")
            mounted.append(cmd)

    yield src, ro, seal
    if mounted:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_a_store_on_read_only_media_reads_and_refuses_writes_in_one_line(read_only_folder, good_store, tiny_dir):
    src, ro, seal = read_only_folder
    shutil.copy(good_store, src / "s.db")
    csv = src / "p.csv"
    csv.write_text("text\nnew prompt\n")
    seal()
    store = ro / "s.db"
    before = md5(store)
    res = cli("results", "--store", str(store))
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr
    proc = cli(*base_args(tiny_dir, ro / "p.csv", store))
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "read-only" in lines[0] or "not writable" in lines[0], lines[0]
    assert md5(store) == before


def test_a_run_that_fails_after_opening_the_store_adds_nothing_to_it(good_store, tiny_dir, tmp_path):
    """The drill's case: a run that fails after validation (here, weights whose header reads but
    whose shapes do not fit the model, found only when they load) used to add two configuration
    rows with no generations, which 'results' then listed as empty conditions."""
    from safetensors.torch import load_file, save_file

    store = tmp_path / "s.db"
    shutil.copy(good_store, store)
    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    tensors = load_file(model / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = tensors[name][:, :3].contiguous()
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    csv = tmp_path / "p.csv"
    csv.write_text("text\nsomething new\n")
    before = md5(store)
    proc = cli(*base_args(model, csv, store, "--sigma", "0,0.7"))
    assert proc.returncode == 2 and "cannot load the weights" in proc.stderr, proc.stderr
    assert md5(store) == before
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM configs").fetchone()[0] == 3  # clean, σ 0.5, σ 2
