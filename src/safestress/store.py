"""The results store: one SQLite file (WAL), one row per (model, dataset item, configuration, seed).

Each generation row is keyed by a content hash of everything that determines its output (model
content, template, perturbation and parameters, resolved sites, decoding settings, prompt,
seed), so re-running a sweep finds its rows and skips them, a crash loses at most the batch in
flight (each batch is one transaction), and a row can never be stored twice (``INSERT OR
IGNORE`` on the key). Verdicts live in their own table keyed by (generation, judge@version): a
new judge re-judges stored text and never regenerates.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_hash TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL REFERENCES configs(config_hash),
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    stopped INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_config ON generations(config_hash);
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT NOT NULL REFERENCES generations(key),
    judge TEXT NOT NULL,
    score REAL,
    label TEXT NOT NULL,
    harmful INTEGER,
    created REAL NOT NULL,
    PRIMARY KEY (key, judge)
);
CREATE TABLE IF NOT EXISTS metrics (
    config_hash TEXT NOT NULL REFERENCES configs(config_hash),
    name TEXT NOT NULL,
    value REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, name)
);
"""


def content_hash(obj: Any) -> str:
    """SHA-256 (hex, 32 chars) of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    """The parameters a condition's name may need: the perturbation's and the decoding settings."""
    out = {k: v for k, v in spec.get("perturbation", {}).items() if k not in ("name", "version")}
    out.update(spec.get("generation", {}))
    return out


def condition_labels(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A distinct display name per configuration.

    A stored label names a strength perturbation by its strength only (``quant bits=4 @ …``), so two
    configurations that differ in another parameter (per-token vs per-tensor quantization, a
    different token budget) would share it and be merged by every table. Where labels collide
    (same model), the parameters whose values differ are appended; stored labels and hashes stay
    as they are, so existing stores keep resuming.
    """
    labels = {h: str(spec.get("label", "")) for h, spec in specs.items()}
    groups: dict[tuple[str, str], list[str]] = {}
    for h, spec in specs.items():
        groups.setdefault((str(spec.get("model_name", "")), labels[h]), []).append(h)
    for (_, label), hashes in groups.items():
        if len(hashes) < 2:
            continue
        flats = {h: _flat(specs[h]) for h in hashes}
        keys = sorted({k for f in flats.values() for k in f})
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
        for h in hashes:
            extra = " ".join(f"{k}={_short(flats[h].get(k))}" for k in differ)
            labels[h] = f"{label} [{extra}]" if extra else label
    return labels


def _short(value: Any) -> str:
    if isinstance(value, str) and "/" in value:
        return Path(value).name
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def row_key(config_hash: str, dataset: str, item_id: str, prompt: str, seed: int) -> str:
    return content_hash([config_hash, dataset, item_id, prompt, seed])


@dataclass
class GenerationRow:
    key: str
    config_hash: str
    model: str
    dataset: str
    item_id: str
    seed: int
    prompt: str
    response: str
    n_tokens: int
    stopped: bool


class Store:
    """A safestress results database. Opening creates it (and its folder) if needed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise SafestressError(f"store path {path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.commit()
        except sqlite3.DatabaseError as exc:
            raise SafestressError(f"{path} is not a safestress store ({exc})") from None

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        if not Path(path).is_file():
            raise SafestressError(f"no store at {path}")
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configurations -------------------------------------------------------------------------
    def put_config(self, spec: dict[str, Any]) -> str:
        h = content_hash(spec)
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO configs VALUES (?, ?, ?)", (h, json.dumps(spec, sort_keys=True), time.time())
            )
        return h

    def config(self, config_hash: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT spec FROM configs WHERE config_hash = ?", (config_hash,)).fetchone()
        if row is None:
            raise SafestressError(f"unknown configuration {config_hash}")
        return json.loads(row[0])

    def configs(self) -> dict[str, dict[str, Any]]:
        return {h: json.loads(s) for h, s in self.conn.execute("SELECT config_hash, spec FROM configs")}

    # -- per-configuration metrics (perplexity, …) ---------------------------------------------------
    def put_metric(self, config_hash: str, name: str, value: float) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)", (config_hash, name, float(value), time.time())
            )

    def metrics(self, name_prefix: str = "") -> dict[tuple[str, str], float]:
        """``{(config_hash, name): value}`` of every stored metric whose name starts with ``name_prefix``."""
        rows = self.conn.execute("SELECT config_hash, name, value FROM metrics WHERE name LIKE ?", (name_prefix + "%",))
        return {(h, n): v for h, n, v in rows}

    # -- generations ----------------------------------------------------------------------------
    def existing_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT key FROM generations WHERE key IN ({marks})", chunk))
        return found

    def put_batch(self, rows: Sequence[GenerationRow], verdicts: Sequence[tuple[str, str, Any]] = ()) -> None:
        """Store generations and their verdicts atomically (one transaction)."""
        now = time.time()
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO generations VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.key,
                        r.config_hash,
                        r.model,
                        r.dataset,
                        r.item_id,
                        r.seed,
                        r.prompt,
                        r.response,
                        r.n_tokens,
                        int(r.stopped),
                        now,
                    )
                    for r in rows
                ],
            )
            self._put_verdicts(verdicts, now)

    def put_verdicts(self, verdicts: Sequence[tuple[str, str, Any]]) -> None:
        with self.conn:
            self._put_verdicts(verdicts, time.time())

    def _put_verdicts(self, verdicts: Sequence[tuple[str, str, Any]], now: float) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO verdicts VALUES (?,?,?,?,?,?)",
            [
                (key, judge, v.score, v.label, None if v.harmful is None else int(v.harmful), now)
                for key, judge, v in verdicts
            ],
        )

    def unjudged(self, keys: Sequence[str], judge: str) -> list[tuple[str, str, str]]:
        """(key, prompt, response) of stored generations among ``keys`` without a verdict by ``judge``."""
        out = []
        for start in range(0, len(keys), 900):
            chunk = list(keys[start : start + 900])
            marks = ",".join("?" * len(chunk))
            out.extend(
                self.conn.execute(
                    f"SELECT g.key, g.prompt, g.response FROM generations g WHERE g.key IN ({marks}) "
                    "AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.key = g.key AND v.judge = ?)",
                    [*chunk, judge],
                ).fetchall()
            )
        return out

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def frame(self, config_hashes: Sequence[str] | None = None) -> Any:
        """All generations with their verdicts and configuration columns, as a pandas DataFrame."""
        import pandas as pd

        query = (
            "SELECT g.key, g.config_hash, g.model, g.dataset, g.item_id, g.seed, g.prompt, g.response, "
            "g.n_tokens, g.stopped, v.judge, v.score, v.label, v.harmful "
            "FROM generations g LEFT JOIN verdicts v ON v.key = g.key"
        )
        params: list[Any] = []
        if config_hashes is not None:
            marks = ",".join("?" * len(config_hashes))
            query += f" WHERE g.config_hash IN ({marks})"
            params = list(config_hashes)
        df = pd.read_sql_query(query, self.conn, params=params)
        specs = self.configs()
        labels = condition_labels({h: specs[h] for h in df["config_hash"].unique()})
        df["condition"] = df["config_hash"].map(labels)
        df["perturbation"] = df["config_hash"].map(lambda h: specs[h]["perturbation"]["name"])
        df["strength"] = df["config_hash"].map(lambda h: specs[h].get("strength", 0.0))
        df["sites"] = df["config_hash"].map(lambda h: specs[h].get("site_pattern", ""))
        return df

    def export(self, out: str | Path) -> int:
        """Write every row (generation × judge) to ``.parquet`` or ``.csv``; returns the row count."""
        out = Path(out)
        df = self.frame()
        if out.suffix == ".parquet":
            df.to_parquet(out, index=False)
        elif out.suffix == ".csv":
            df.to_csv(out, index=False)
        else:
            raise SafestressError(f"export format of {out.name} unknown; use .parquet or .csv")
        return len(df)
