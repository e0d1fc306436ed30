"""The catalog's SQLite file: opened only as aoe lays it out, started afresh otherwise.

The index is derived data, so it is never trusted beyond what it can show to be its own:

- It lives in the user's cache folder (``$AOE_CACHE_DIR/stores/<store identity>/``), never
  inside the store, so a store someone hands you (a tarball, a shared folder, a bucket)
  cannot bring an index that lists runs it does not have.
- It is opened only if its schema is exactly the one below: a table, view, trigger or
  index aoe did not create (SQL that would run inside aoe's own statements) makes it a
  file to remove and write again, and ``PRAGMA trusted_schema=OFF`` is set first.
- Each row an answer shows carries a checksum written with it (``codec.row_check``): a
  damaged row fails it when read and the index is rebuilt, never shown.
- ``aoe store reindex`` writes a new file from the refs and manifests alone.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..codec import row_check

SCHEMA_VERSION = 11
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
SCHEMA = META + """
CREATE TABLE IF NOT EXISTS fonts (
    font_id TEXT PRIMARY KEY, version INTEGER, synced_ns INTEGER, generation INTEGER, changes TEXT,
    changed_ns INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, token TEXT, manifest TEXT,
    status TEXT, time TEXT, saved_at TEXT, started_at TEXT, ended_at TEXT,
    name TEXT, description TEXT, tags TEXT, params TEXT, metrics TEXT, parents TEXT, generation INTEGER,
    PRIMARY KEY (font_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_time ON runs (font_id, time);
CREATE INDEX IF NOT EXISTS runs_generation ON runs (font_id, generation);
CREATE TABLE IF NOT EXISTS run_info (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, info BLOB, checked INTEGER,
    PRIMARY KEY (font_id, run_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_json (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, json TEXT, checked INTEGER,
    PRIMARY KEY (font_id, run_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vectors (manifest TEXT PRIMARY KEY, record TEXT, vector BLOB, checked INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packed (
    font_id TEXT NOT NULL, kind TEXT NOT NULL, generation INTEGER, runs INTEGER, value BLOB, checked INTEGER,
    PRIMARY KEY (font_id, kind));
"""
"""``runs`` holds what queries filter and sort on, narrow so a scan of 10,000 rows reads
little, with the font generation that wrote each row; each run's RunInfo row and its JSON
(``ls --json``) live apart, read only for the runs an answer returns. ``vectors`` keeps,
for charts, each manifest's personality vector: where it is (its tensor record as JSON,
noted when a sync reads the manifest) and, once read, its values (float64; empty when it
has none that can be charted). A manifest never changes, so a row never goes stale.
``packed`` holds, for a font whose rows have not changed for a while, all its ref tokens
(kind ``tokens``: msgpack of the run ids, then the tokens), ``run_info`` rows (kind
``info``: the same, with the rows) or ``run_json`` texts (kind ``json``: joined by ", ",
UTF-8) in one value, in run id order, with the generation and number of runs they are of:
a new process lists the font from one value instead of 10,000 rows. ``checked`` is the
row's checksum (:func:`check`)."""

TABLES = ("runs", "run_info", "run_json")
"""The tables of per-run rows (``vectors`` is by manifest, not by run)."""
DERIVED = ("fonts", "vectors", "packed")
"""The other tables."""

BUSY_TIMEOUT_MS = 30_000
"""How long a process waits for another's transaction on the index."""
MMAP_BYTES = 1 << 30
"""The index file is read through memory mapping up to this size: a font's packed copy
(70 MB at 100,000 runs) is then copied out of the page cache, not read 4 KB page by page
(13 ms instead of 1.7 ms at 10,000 runs). The file is never truncated under a reader: a
new index is a new file."""

NOT_DAMAGE = frozenset({3, 5, 6, 7, 8, 10, 13, 14})
"""SQLite's primary result codes for a database that is fine but cannot be used now (PERM,
BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN): rebuilding would not help."""


class DamagedRow(sqlite3.DatabaseError):
    """A row that fails its checksum, or rows that do not add up: the index is damaged."""


def check(*parts: Any) -> int:
    """The checksum kept beside a row (``checked``): of its values, in order."""
    return row_check(*parts)


def verified(value: Any, checked: Any, *more: Any) -> Any:
    """``value``, if its row's checksum (over it and ``more``) is ``checked``; else the
    index is damaged (:class:`DamagedRow`, and it is rebuilt)."""
    if not isinstance(value, (bytes, str)) or check(value, *more) != checked:
        raise DamagedRow("a row of the catalog index fails its check")
    return value


@functools.cache
def _expected_schema() -> frozenset[tuple[Any, ...]]:
    """Every entry of ``sqlite_master`` a catalog index has: its tables and indexes."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return _schema_of(db)
    finally:
        db.close()


def _schema_of(db: sqlite3.Connection) -> frozenset[tuple[Any, ...]]:
    return frozenset(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())


class IndexFile:
    """The database of a catalog: at ``path``, or in memory (``path`` None), then starting
    from a copy of the index at ``seed`` if there is one (read, never written)."""

    def __init__(self, path: Path | None, seed: Path | None = None) -> None:
        self.path = path
        self.seed = seed
        self._connection: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def start_afresh(self) -> None:
        """An empty index in place of this one (a new file; a new memory database)."""
        self.close()
        if self.path is not None:
            self._remove_files()
        else:
            self.seed = None
        self.connection()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            if self.seed is not None and self.seed.is_file():
                self._copy_seed(memory)
            return self._prepared(memory)
        self._remove_symlinks()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._prepared(self._connect())
        except sqlite3.DatabaseError:  # damaged, or not laid out by aoe: it is only a cache, so write it again
            self._remove_files()
            return self._prepared(self._connect())

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)

    def _prepared(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """``db`` with aoe's schema. One of another schema version, or holding anything aoe
        did not create, is not used: replaced by an empty one (a file: removed, made again)."""
        db.isolation_level = None  # explicit transactions
        db.execute("PRAGMA trusted_schema=OFF")
        schema = _schema_of(db)
        if schema and (schema != _expected_schema() or db.execute(
                "SELECT value FROM meta WHERE key = 'schema'").fetchone() != (str(SCHEMA_VERSION),)):
            db.close()
            if self.path is not None:
                self._remove_files()
            return self._prepared(self._connect() if self.path is not None else
                                  sqlite3.connect(":memory:", check_same_thread=False))
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        if not schema:  # in one transaction: another process never sees half of it (and takes it for foreign)
            db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR REPLACE INTO meta VALUES ('schema', "
                             f"'{SCHEMA_VERSION}'); COMMIT;")
        return db

    def _copy_seed(self, memory: sqlite3.Connection) -> None:
        """Start from the on-disk index, opened as immutable: no lock, no -shm, nothing
        written. A copy torn by a concurrent writer, or stale, is harmless: every ref's
        token is checked on sync, each row shown against its checksum, and a copy that
        cannot be read (or holds what aoe does not write) is dropped."""
        try:
            source = sqlite3.connect(f"{self.seed.as_uri()}?immutable=1", uri=True)  # type: ignore[union-attr]
            try:
                source.execute("PRAGMA trusted_schema=OFF")
                source.backup(memory)
            finally:
                source.close()
            memory.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.Error:
            for kind, name in memory.execute("SELECT type, name FROM sqlite_master").fetchall():
                if kind in ("table", "view"):
                    memory.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')

    def _remove_symlinks(self) -> None:
        """A symlink where the index or its folder should be is removed (the link, never
        what it points at): SQLite would follow it and write into another database."""
        assert self.path is not None
        for path in (self.path.parent, *(Path(f"{self.path}{s}") for s in ("", "-wal", "-shm", "-journal"))):
            if path.is_symlink():
                path.unlink()

    def _remove_files(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Reads that see one state of the index (a read transaction), so that a sync another
    process commits meanwhile cannot pair one state's generation or runs with another's
    rows. A packed copy written inside is written at its end, if the index has not moved."""
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
