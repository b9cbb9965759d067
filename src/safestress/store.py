"""The results store: one SQLite file (WAL), one row per (model, dataset item, configuration, seed).

Each generation row is keyed by a content hash of everything that determines its output (model
content, template, perturbation and parameters, resolved sites, decoding settings, prompt,
seed), so re-running a sweep finds its rows and skips them, a crash loses at most the batch in
flight (each batch is one transaction), and a row can never be stored twice (``INSERT OR
IGNORE`` on the key). Verdicts live in their own table keyed by (generation, judge@version): a
new judge re-judges stored text and never regenerates — except a row that stopped early
(``early_stops``: its judges had settled their verdicts on the text so far): a new judge that cannot
settle on that text has it regenerated to full length, and the row and its verdicts are replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
    loop_cut INTEGER,
    PRIMARY KEY (key, judge)
);
CREATE TABLE IF NOT EXISTS early_stops (
    key TEXT PRIMARY KEY REFERENCES generations(key),
    token INTEGER NOT NULL,
    judges TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    config_hash TEXT NOT NULL REFERENCES configs(config_hash),
    name TEXT NOT NULL,
    value REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, name)
);
"""


_STORE_TABLES = frozenset({"configs", "generations", "verdicts"})  # what makes a file a safestress store


def content_hash(obj: Any) -> str:
    """SHA-256 (hex, 32 chars) of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


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
    settled_by: str | None = None  # judge keys that settled the verdicts when it stopped early


LEASE_SECONDS = 900.0  # a lease held by a process on another host lapses after this long without renewal

_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
)
"""


def _chunks(keys: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """``keys`` in chunks under SQLite's limit on bound parameters, each with its ``?,?,…`` marks."""
    for start in range(0, len(keys), 900):
        chunk = list(keys[start : start + 900])
        yield chunk, ",".join("?" * len(chunk))


def _stored_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` that have a stored generation."""
    found: set[str] = set()
    for chunk, marks in _chunks(keys):
        found.update(r[0] for r in conn.execute(f"SELECT key FROM generations WHERE key IN ({marks})", chunk))
    return found


def _table_names(conn: sqlite3.Connection) -> set[str]:
    """The names of the file's tables (what tells a store from someone else's database)."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the store has table ``name`` (stores written before it existed do not)."""
    return name in _table_names(conn)


def _early_stopped(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` whose stored generation stopped early (none in a store from before early exit)."""
    if not _has_table(conn, "early_stops"):
        return set()
    found: set[str] = set()
    for chunk, marks in _chunks(keys):
        found.update(r[0] for r in conn.execute(f"SELECT key FROM early_stops WHERE key IN ({marks})", chunk))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass
class Lease:
    """One process's claim on rows it is about to generate, so that a second process sweeping the
    same store skips them instead of generating them too (the store would keep one copy, but the
    work would be done twice).

    A claim dies with its process: on this host, when the owner's pid is gone (a SIGKILLed run's
    rows are free for the re-run at once); in any case after :data:`LEASE_SECONDS` without renewal
    (another host's process, a reused pid). Each stored batch renews the owner's claims and
    releases those on its rows, in the transaction that stores them.
    """

    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}")
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def claim(
        self, conn: sqlite3.Connection, keys: Sequence[str], redo: Collection[str] = ()
    ) -> tuple[list[str], set[str]]:
        """Claim those of ``keys`` that are neither stored nor claimed by a live process; of
        ``redo``, those stored but stopped early count as not stored (they are to be regenerated).
        Returns (claimed, held by others). One immediate transaction, so two processes never both win."""
        now = time.time()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_LEASES)
            for owner, host, pid in conn.execute("SELECT DISTINCT owner, host, pid FROM leases").fetchall():
                if owner != self.owner and host == self.host and not _pid_alive(pid):
                    conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM leases WHERE expires < ?", (now,))  # a pid reused, or another host's
            stored, others = _stored_keys(conn, keys), set()
            if redo:
                stored -= _early_stopped(conn, [k for k in keys if k in redo])
            for chunk, marks in _chunks(keys):
                others.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT key FROM leases WHERE key IN ({marks}) AND owner != ?", [*chunk, self.owner]
                    )
                )
            claimed = [k for k in keys if k not in stored and k not in others]
            conn.executemany(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                [(k, self.owner, self.host, self.pid, now + LEASE_SECONDS) for k in claimed],
            )
        return claimed, others

    def renew(self, conn: sqlite3.Connection) -> None:
        with conn:
            self._renew_in(conn)

    def _renew_in(self, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE leases SET expires = ? WHERE owner = ?", (time.time() + LEASE_SECONDS, self.owner))

    def release_in(self, conn: sqlite3.Connection, keys: Sequence[str]) -> None:
        """Drop this lease's claims on ``keys`` and renew the rest (inside the caller's transaction)."""
        self._renew_in(conn)
        for chunk, marks in _chunks(keys):
            conn.execute(f"DELETE FROM leases WHERE owner = ? AND key IN ({marks})", [self.owner, *chunk])

    def release_all(self, conn: sqlite3.Connection) -> None:
        """Drop every claim of this lease (a run that ends, finished or failed)."""
        if _has_table(conn, "leases"):
            with conn:
                conn.execute("DELETE FROM leases WHERE owner = ?", (self.owner,))


class Store:
    """A safestress results database. Opening creates it (and its folder) if needed.

    ``readonly=True`` (the reading commands: results, export, judge sample/audit) never writes,
    so it works on read-only media and cannot damage a store it only reads. The guarantees a
    user can rely on (kills, two writers, failed runs, secrets) are stated in docs/store.md.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._loop_cut_column = False
        if self.path.exists() and self.path.is_dir():
            raise SafestressError(f"store path {path} is a directory")
        if readonly:
            self.conn = _connect_readonly(self.path)
            return
        _require_writable(self.path)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60)
        except sqlite3.DatabaseError as exc:
            raise SafestressError(_database_error(path, exc)) from None
        try:
            _refuse_foreign(self.conn, self.path)  # a read: WAL would rewrite a foreign file's header
            _use_wal(self.conn)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            _create_schema(self.conn, self.path)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise SafestressError(_database_error(path, exc)) from None
        except SafestressError:
            self.conn.close()
            raise

    @classmethod
    def for_writing(cls, path: str | Path) -> Store:
        """Open (creating it if needed) and ``check`` before anything is added, so that a run never
        writes rows into a damaged store. Safe for several runs starting on one new store at once."""
        return cls(path)._checked()

    @classmethod
    def open_existing(cls, path: str | Path, *, readonly: bool = True, check: bool = True) -> Store:
        """An existing store, by default read-only and checked (``PRAGMA quick_check``) so that a
        damaged file is refused in one line instead of giving tables from whatever pages still read."""
        if Path(path).is_dir():
            raise SafestressError(f"store path {path} is a directory")
        if not Path(path).is_file():
            raise SafestressError(f"no store at {path}")
        store = cls(path, readonly=readonly)
        return store._checked() if check else store

    def _checked(self) -> Store:
        """This store once :meth:`check` passes; closed (and the error raised) when it fails."""
        try:
            self.check()
        except SafestressError:
            self.close()
            raise
        return self

    def check(self) -> None:
        """``PRAGMA quick_check``: a one-line error if the file is damaged (a page, an index)."""
        try:
            problems = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise SafestressError(_database_error(self.path, exc)) from None
        if problems != ["ok"]:
            raise SafestressError(
                f"store {self.path} is damaged ({problems[0]}; {len(problems)} problem(s) found by SQLite's "
                "quick_check); restore it from a copy, or export what still reads with the sqlite3 tool's .recover"
            )

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
            self._put_configs([spec])
        return h

    def _put_configs(self, specs: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        self.conn.executemany(
            "INSERT OR IGNORE INTO configs VALUES (?, ?, ?)",
            [(content_hash(spec), json.dumps(spec, sort_keys=True), now) for spec in specs],
        )

    def config(self, config_hash: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT spec FROM configs WHERE config_hash = ?", (config_hash,)).fetchone()
        if row is None:
            raise SafestressError(f"unknown configuration {config_hash}")
        return json.loads(row[0])

    def configs(self) -> dict[str, dict[str, Any]]:
        return {h: json.loads(s) for h, s in self.conn.execute("SELECT config_hash, spec FROM configs")}

    # -- per-configuration metrics (perplexity, …) ---------------------------------------------------
    def put_metric(self, config_hash: str, name: str, value: float, spec: dict[str, Any] | None = None) -> None:
        with self.conn:
            if spec is not None:
                self._put_configs([spec])
            self.conn.execute(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)", (config_hash, name, float(value), time.time())
            )

    def metrics(self, name_prefix: str = "") -> dict[tuple[str, str], float]:
        """``{(config_hash, name): value}`` of every stored metric whose name starts with ``name_prefix``."""
        rows = self.conn.execute("SELECT config_hash, name, value FROM metrics WHERE name LIKE ?", (name_prefix + "%",))
        return {(h, n): v for h, n, v in rows}

    # -- generations ----------------------------------------------------------------------------
    def existing_keys(self, keys: Iterable[str]) -> set[str]:
        return _stored_keys(self.conn, list(keys))

    def put_batch(
        self,
        rows: Sequence[GenerationRow],
        verdicts: Sequence[tuple[str, str, Any]] = (),
        configs: Iterable[dict[str, Any]] = (),
        lease: Lease | None = None,
    ) -> None:
        """Store generations, their configurations and their verdicts atomically (one transaction),
        and release ``lease``'s claim on these rows in the same transaction.

        A configuration is written with its first rows, never before: a run that fails before it
        generates anything leaves no trace, and no condition is listed that has no rows.
        """
        now = time.time()
        with self.conn:
            self._put_configs(configs)
            self._replace_early_stops(rows)
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
            self.conn.executemany(
                "INSERT OR IGNORE INTO early_stops VALUES (?,?,?,?)",
                [(r.key, r.n_tokens, r.settled_by, now) for r in rows if r.settled_by],
            )
            self._put_verdicts(verdicts, now)
            if lease is not None:
                lease.release_in(self.conn, [r.key for r in rows])

    def _replace_early_stops(self, rows: Sequence[GenerationRow]) -> None:
        """Rows that are stored but stopped early are regenerations: drop the old generation, its
        verdicts (given on the shorter text) and its early-stop record, inside the caller's transaction."""
        old = _early_stopped(self.conn, [r.key for r in rows])
        for chunk, marks in _chunks(sorted(old)):
            for table in ("verdicts", "early_stops", "generations"):
                self.conn.execute(f"DELETE FROM {table} WHERE key IN ({marks})", chunk)

    def early_stopped(self, keys: Sequence[str]) -> list[tuple[str, str, str]]:
        """(key, prompt, response) of stored generations among ``keys`` that stopped early."""
        found = _early_stopped(self.conn, keys)
        out = []
        for chunk, marks in _chunks(sorted(found)):
            out.extend(
                self.conn.execute(f"SELECT key, prompt, response FROM generations WHERE key IN ({marks})", chunk)
            )
        return out

    def put_verdicts(self, verdicts: Sequence[tuple[str, str, Any]]) -> None:
        with self.conn:
            self._put_verdicts(verdicts, time.time())

    def _put_verdicts(self, verdicts: Sequence[tuple[str, str, Any]], now: float) -> None:
        if not verdicts:
            return
        self._add_loop_cut_column()
        self.conn.executemany(
            "INSERT OR IGNORE INTO verdicts (key, judge, score, label, harmful, created, loop_cut) "
            "VALUES (?,?,?,?,?,?,?)",
            [
                (key, judge, v.score, v.label, None if v.harmful is None else int(v.harmful), now, v.loop_cut)
                for key, judge, v in verdicts
            ],
        )

    def _has_loop_cut_column(self) -> bool:
        """Whether ``verdicts`` has the column. Once seen outside a transaction it stays, so the
        schema is read once per connection, not per batch (a column added in a transaction that is
        still open could yet be rolled back)."""
        if self._loop_cut_column:
            return True
        found = any(row[1] == "loop_cut" for row in self.conn.execute("PRAGMA table_info(verdicts)"))
        self._loop_cut_column = found and not self.conn.in_transaction
        return found

    def _add_loop_cut_column(self) -> None:
        """Stores written before verdicts recorded where a loop was cut get the column with their
        first new verdict (inside its transaction), not when opened: opening never writes."""
        if not self._has_loop_cut_column():
            self.conn.execute("ALTER TABLE verdicts ADD COLUMN loop_cut INTEGER")

    def unjudged(self, keys: Sequence[str], judge: str) -> list[tuple[str, str, str]]:
        """(key, prompt, response) of stored generations among ``keys`` without a verdict by ``judge``."""
        out = []
        for chunk, marks in _chunks(keys):
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
        """All generations with their verdicts and raw configuration columns, as a pandas DataFrame.

        Display names of conditions are the report's business (``report.labels.labelled``), so
        the store returns only what it holds."""
        import pandas as pd

        early = _has_table(self.conn, "early_stops")
        query = (
            "SELECT g.key, g.config_hash, g.model, g.dataset, g.item_id, g.seed, g.prompt, g.response, "
            "g.n_tokens, g.stopped, v.judge, v.score, v.label, v.harmful, "
            f"{'v.loop_cut' if self._has_loop_cut_column() else 'NULL'} AS loop_cut, "
            f"{'e.token' if early else 'NULL'} AS early_stop "
            "FROM generations g LEFT JOIN verdicts v ON v.key = g.key"
            + (" LEFT JOIN early_stops e ON e.key = g.key" if early else "")
        )
        params: list[Any] = []
        if config_hashes is not None:
            marks = ",".join("?" * len(config_hashes))
            query += f" WHERE g.config_hash IN ({marks})"
            params = list(config_hashes)
        df = pd.read_sql_query(query, self.conn, params=params)
        specs = self.configs()
        df["perturbation"] = df["config_hash"].map(lambda h: specs[h]["perturbation"]["name"])
        df["strength"] = df["config_hash"].map(lambda h: specs[h].get("strength", 0.0))
        df["sites"] = df["config_hash"].map(lambda h: specs[h].get("site_pattern", ""))
        return df

    def export(self, out: str | Path, frame: Any = None) -> int:
        """Write ``frame`` (by default every row, generation × judge) to ``.parquet`` or ``.csv``;
        returns the row count.

        The file is written beside its target and renamed into place, so a failed export never
        leaves a half-written file where a complete one was."""
        out = Path(out)
        if out.suffix not in (".parquet", ".csv"):
            raise SafestressError(f"export format of {out.name} unknown; use .parquet or .csv")
        if not out.parent.is_dir():
            raise SafestressError(f"cannot write {out}: folder {out.parent} does not exist")
        if out.is_dir():
            raise SafestressError(f"cannot write {out}: it is a folder")
        df = self.frame() if frame is None else frame
        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            if out.suffix == ".parquet":
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False)
            os.replace(tmp, out)
        except OSError as exc:
            raise SafestressError(f"cannot write {out}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return len(df)


def _database_error(path: str | Path, exc: sqlite3.DatabaseError) -> str:
    """One line for an SQLite failure, naming what the user can do about it."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"store {path} is read-only here; copy it somewhere writable to add to it (reading it works)"
    if "unable to open" in text:
        return f"cannot open store {path}: its folder is missing or not writable"
    if "malformed" in text or "corrupt" in text:
        return f"store {path} is damaged ({text}); restore it from a copy"
    if "not a database" in text or "file is encrypted" in text:
        return f"{path} is not a safestress store ({text})"
    return f"store {path}: {text}"


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """A file that holds tables but not a store's is someone else's database: refused before
    anything is written to it. A new, empty file passes (a store being made is invisible until
    its one transaction commits), and so does a store with tables a user added."""
    names = _table_names(conn)
    if names and _STORE_TABLES - names:
        held = ", ".join(sorted(names))
        raise SafestressError(f"{path} is not a safestress store (it holds other tables: {held})")


def _use_wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Switch a new file to WAL. SQLite answers "database is locked" at once, without waiting,
    to a switch that races another connection's (runs starting together on one new store), so
    the switch is retried until it is made or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Make the tables in one transaction under SQLite's write lock, so that two runs starting on
    one new store cannot see each other's half-made file: the second waits for the lock and then
    finds a whole store (every statement is ``IF NOT EXISTS``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _refuse_foreign(conn, path)  # again under the lock
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _require_writable(path: Path) -> None:
    """Say why a store cannot be written before SQLite says something vaguer."""
    parent = path.parent
    for folder in [parent, *parent.parents]:
        if folder.exists():
            if not folder.is_dir():
                raise SafestressError(f"cannot create store {path}: {folder} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafestressError(f"cannot create the folder of store {path}: {exc.strerror or exc}") from None
    if path.exists():
        if not os.access(path, os.W_OK):
            raise SafestressError(f"store {path} is read-only here; copy it somewhere writable to add to it")
        if not os.access(parent, os.W_OK | os.X_OK):  # SQLite's WAL needs its -wal and -shm files beside it
            raise SafestressError(f"store {path} is in a folder that is not writable ({parent}); copy it elsewhere")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise SafestressError(f"cannot create store {path}: folder {parent} is not writable")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open without ever writing. A WAL store on read-only media cannot create its shared-memory
    file, so then it is opened as immutable (nothing can change it there anyway)."""
    if not path.is_file():
        raise SafestressError(f"no store at {path}")
    uri = path.resolve().as_uri()
    last: sqlite3.DatabaseError | None = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=60)
            names = _table_names(conn)
        except sqlite3.DatabaseError as exc:
            last = exc
            continue
        if _STORE_TABLES - names:
            conn.close()
            raise SafestressError(f"{path} is not a safestress store (no safestress tables)")
        return conn
    assert last is not None
    raise SafestressError(_database_error(path, last))


def read_export(path: Path) -> Any:
    """A ``safestress export`` file (``Store.export``) as the store's frame: Parquet keeps its
    types; CSV is read with item ids as text, as the store holds them."""
    import pandas as pd

    if not path.is_file():
        raise SafestressError(f"per-prompt file {path} does not exist")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"item_id": str, "key": str, "config_hash": str})
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid, pandas' ParserError and bad UTF-8 are ValueErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SafestressError(f"cannot read per-prompt file {path}: {first}") from None
