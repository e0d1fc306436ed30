"""Catalog: a derived SQLite index of every run's metadata, so listing, filtering and
searching 10,000 runs reads one small database instead of 10,000 refs and manifests.

Refs and manifests stay the only truth; the index is a cache that can be deleted at
any time (`aoe store reindex` rebuilds it). Before answering about a font, the catalog
brings it up to date: one ``stat`` of the font's ``runs/`` folder tells whether any ref
was added, removed or replaced since the last sync. If so, one listing of the folder
finds what changed, and only those refs and manifests are read. The listing's inode
numbers come free with the names; a ref is stat'ed only when its file is new, or when the
font's change note (``runs/.changes``, rewritten before any ref is moved or removed) is
not what the last sync saw: so adding one run to a font of 10,000 costs a listing about
one run's work. A folder that changed less than two seconds before the last sync is
listed again every time, since a second change within the same clock tick may not move
its mtime (git's "racy clean" rule). So a run saved by another process appears in the
next listing, and a removed one disappears.

Why SQLite: filters on JSON fields, sorting and counting happen in C, the index updates
one row at a time, and concurrent processes are serialised by its locks (WAL mode).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from . import listings, vectors
from .errors import StorageError, StoreError
from .layout import run_id_at, runs_folder
from .manifests import TensorRecord, check_location, tensor_from_map, tensor_map, unpack
from .names import format_time, parse_time
from .objects import ObjectStore
from .query import Query, build_query
from .refs import Refs, run_time
from .runinfo import FontSummary, RunInfo, feedback_metrics

SCHEMA_VERSION = 9
T = TypeVar("T")
RACY_NS = 2_000_000_000
RELIST_NS = 60_000_000_000
"""On object storage, the refs are listed whole at least this often even when the change
note says nothing changed (writers older than aoe 0.5 do not write it)."""
LISTING_MIN = 100
"""On object storage, a sync with this many runs to read looks for a listing snapshot,
and one that read this many from refs and manifests writes one."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS fonts (
    font_id TEXT PRIMARY KEY, version INTEGER, synced_ns INTEGER, generation INTEGER, changes TEXT,
    changed_ns INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, token TEXT, manifest TEXT,
    status TEXT, time TEXT, saved_at TEXT, started_at TEXT, ended_at TEXT,
    name TEXT, description TEXT, tags TEXT, params TEXT, metrics TEXT, generation INTEGER,
    PRIMARY KEY (font_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_time ON runs (font_id, time);
CREATE INDEX IF NOT EXISTS runs_generation ON runs (font_id, generation);
CREATE TABLE IF NOT EXISTS run_info (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, info BLOB, PRIMARY KEY (font_id, run_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_json (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, json TEXT, PRIMARY KEY (font_id, run_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vectors (manifest TEXT PRIMARY KEY, record TEXT, vector BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packed (
    font_id TEXT NOT NULL, kind TEXT NOT NULL, generation INTEGER, runs INTEGER, value BLOB,
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
a new process lists the font from one value instead of 10,000 rows. Each is read with the
rows written by later generations (a save writes one), as long as no run was removed since
(the joined JSON: as long as the runs added since all sort after its own, the usual case,
a save adding the newest run)."""

TABLES = ("runs", "run_info", "run_json")
"""The tables of per-run rows (``vectors`` is by manifest, not by run)."""
DERIVED = ("fonts", "vectors", "packed")
"""The other tables, emptied with them when the index is rebuilt."""

BUSY_TIMEOUT_MS = 30_000
"""How long a process waits for another's transaction on the index."""
SETTLED_NS = RACY_NS
"""A font whose rows have not changed for this long gets a packed copy of them when a
process reads them all (``packed``); one being trained, saving every few seconds,
does not rewrite 10,000 rows for each listing."""
MAX_INFO_BYTES = 1 << 20
"""No RunInfo row of the packed copy is larger (a bound on what decoding it allocates)."""

FETCH_ALL_ABOVE = 500
"""Answers with more runs of a font than this read all its RunInfo rows in one scan; fewer
are looked up one by one."""


def _rebuilt_if_damaged(method: Callable[..., T]) -> Callable[..., T]:
    """Run a catalog method; if the database turns out damaged or of a foreign layout,
    start it afresh (it is only a cache), sync again every font it knew, and run the
    method once more. Any other database error is one clear StorageError: an index
    that cannot answer never answers "no runs"."""

    @functools.wraps(method)
    def wrapper(self: Catalog, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in NOT_DAMAGE:  # busy, full, read-only...
                raise _unusable(self, exc) from None
        try:
            self._start_afresh()
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:  # still failing (a locked or unwritable file): say so plainly
            raise _unusable(self, exc) from None

    return wrapper


NOT_DAMAGE = frozenset({3, 5, 6, 7, 8, 10, 13, 14})
"""SQLite's primary result codes for a database that is fine but cannot be used now (PERM,
BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN): rebuilding would not help."""


def _unusable(catalog: Catalog, exc: sqlite3.Error) -> StorageError:
    return StorageError(
        f"the catalog index {catalog.path or '(in memory)'} cannot be used ({exc}); "
        "retry, or remove it: it is only a cache, rebuilt by `aoe store reindex`"
    )


def index_json(value: Any) -> str:
    """JSON for the index's filter and sort columns. SQLite's JSON has no NaN or
    Infinity: NaN becomes null (it matches no comparison and sorts last) and an
    infinity the largest float of its sign (it sorts beyond every finite number). The
    exact values stay in the RunInfo row, for display."""
    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None if math.isnan(item) else math.copysign(sys.float_info.max, item)
        if isinstance(item, dict):
            return {k: finite(v) for k, v in item.items()}
        if isinstance(item, list):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value))


class Catalog:
    """The derived index of run metadata; ``path`` None keeps it in memory, starting
    from a copy of the index at ``seed`` if there is one (read, never written)."""

    def __init__(self, path: Path | None, refs: Refs, objects: ObjectStore, *, seed: Path | None = None) -> None:
        self.path = path
        self.seed = seed
        self.refs = refs
        self.objects = objects
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._synced: set[str] = set()
        self.use_listings = True
        """Whether a sync may take rows from listing snapshots (not after :meth:`rebuild`)."""
        self._tokens: dict[str, tuple[int, dict[str, str]]] = {}
        """Per font: the generation of its rows and each ref's token in them, so a sync
        after one save does not read 10,000 tokens back from the database."""
        self._built: dict[str, tuple[int, dict[str, RunInfo], bool]] = {}
        """Per font: the generation of its rows, the RunInfo objects built from them
        (immutable, so shared by every answer until the font's rows change), and whether
        they are all of its runs, in run id order."""

    def open(self) -> None:
        """Open (or create) the index now, so a caller learns at once if it cannot."""
        self._db()

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            if self.seed is not None and self.seed.is_file():
                self._copy_seed(memory)
            return self._prepare(memory)
        self._remove_symlinks()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._prepare(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False))
        except sqlite3.DatabaseError:  # damaged: it is only a cache, so start it again
            self._remove_files()
            return self._prepare(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False))

    def _prepare(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.isolation_level = None  # explicit transactions
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None or version[0] != str(SCHEMA_VERSION):  # another layout: start afresh
            db.executescript("".join(f"DROP TABLE IF EXISTS {t};" for t in (*TABLES, *DERIVED)))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.executescript(SCHEMA)
        return db

    def _copy_seed(self, memory: sqlite3.Connection) -> None:
        """Start from the on-disk index, opened as immutable: no lock, no -shm, nothing
        written. A copy torn by a concurrent writer, or stale, is harmless: every ref's
        token is checked on sync, and a copy that cannot be read is dropped."""
        try:
            source = sqlite3.connect(f"{self.seed.as_uri()}?immutable=1", uri=True)  # type: ignore[union-attr]
            try:
                source.backup(memory)
            finally:
                source.close()
            memory.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.Error:
            memory.executescript("".join(f"DROP TABLE IF EXISTS {t};" for t in (*TABLES, *DERIVED, "meta")))

    def _remove_symlinks(self) -> None:
        """A symlink where the index or its folder should be is removed (the link, never
        what it points at): SQLite would follow it and write into another database."""
        assert self.path is not None
        for path in (self.path.parent, *(Path(f"{self.path}{s}") for s in ("", "-wal", "-shm", "-journal"))):
            if path.is_symlink():
                path.unlink()

    def _remove_files(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- keeping up with the refs --

    @_rebuilt_if_damaged
    def sync(self, font_ids: Iterable[str]) -> None:
        """Bring the index up to date with the refs of these fonts (see the module doc)."""
        with self._lock:
            for font_id in font_ids:
                self._sync_font(font_id)
                self._synced.add(font_id)

    def _sync_font(self, font_id: str) -> None:
        folder = runs_folder(font_id)
        version = self.refs.backend.folder_version(folder)
        db = self._db()
        last = db.execute("SELECT version, synced_ns, changes, generation FROM fonts WHERE font_id = ?",
                          (font_id,)).fetchone()
        if version is not None and last is not None and last[0] == version and last[1] - version > RACY_NS:
            return
        synced_ns = time.time_ns()
        changes = self.refs.ref_changes(font_id)  # read before the listing: a later move is seen next time
        if version is None and last is not None and changes and last[2] == changes and \
                synced_ns - last[1] < RELIST_NS:
            return  # object storage: no ref changed since the last listing (the note is rewritten after each)
        cached_tokens = self._tokens.get(font_id)
        if last is not None and cached_tokens is not None and cached_tokens[0] == last[3]:
            known_generation, known = cached_tokens
        else:
            with _snapshot(db):
                known_generation, settled = self._font_state(db, font_id)
                known = self._whole_font(db, "tokens", font_id, known_generation, settled)
            if known_generation >= 0:
                self._tokens[font_id] = (known_generation, known)
        same_file = known if last is not None and last[2] == changes else None  # no ref moved since
        tokens = self.refs.backend.list_versions(folder, same_file)
        for name in tokens.keys() - known.keys():
            if run_id_at(name) is None:  # a file in runs/ that is not a ref is skipped
                del tokens[name]
        was = known.get
        changed = sorted(name for name, token in tokens.items() if was(name) != token)
        gone = sorted(known.keys() - tokens.keys())
        if not changed and not gone and last is not None and last[0] == version and last[2] == changes:
            if version is None or synced_ns - version > RACY_NS:  # settled now, or listed whole just now
                db.execute("UPDATE fonts SET synced_ns = ? WHERE font_id = ?", (synced_ns, font_id))
            return  # a racy rescan that found nothing new: no rows to write
        rows, personalities = self._rows(font_id, changed, tokens)
        db.execute("BEGIN IMMEDIATE")
        try:
            previous = db.execute("SELECT generation, changed_ns FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
            before, changed_ns = previous or (0, 0)
            generation = before + (1 if gone or rows else 0)
            for table in TABLES:
                db.executemany(f"DELETE FROM {table} WHERE font_id = ? AND run_id = ?", [(font_id, r) for r in gone])
            db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           [(*row[:14], generation) for row in rows])
            db.executemany("INSERT OR REPLACE INTO run_info VALUES (?,?,?)", [(*row[:2], row[14]) for row in rows])
            db.executemany("INSERT OR REPLACE INTO run_json VALUES (?,?,?)", [(*row[:2], row[15]) for row in rows])
            self._note_vectors(personalities)
            db.execute("INSERT OR REPLACE INTO fonts VALUES (?, ?, ?, ?, ?, ?)",
                       (font_id, version, synced_ns, generation, changes,
                        synced_ns if generation != before else changed_ns))
            if gone:  # its packed copies list runs that are no more: no use now (new rows are read with them)
                db.execute("DELETE FROM packed WHERE font_id = ?", (font_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self.refs.backend.round_trips and len(personalities) >= LISTING_MIN:
            self._share_listing(font_id)
        if known_generation >= 0 and before == known_generation:  # nobody else changed the rows: keep what was built
            self._tokens[font_id] = (generation, tokens)
            cached = self._built.get(font_id)
            if cached is not None and cached[0] == before:
                built = ((row[1], RunInfo.from_row(row[14])) for row in rows)
                self._built[font_id] = (generation, _updated(cached[1], built, gone), cached[2])
        else:
            self._tokens.pop(font_id, None)

    def _rows(self, font_id: str, run_ids: list[str], tokens: dict[str, str]
              ) -> tuple[list[tuple[Any, ...]], list[tuple[str, TensorRecord | None]]]:
        """Index rows of these runs: from the font's listing snapshot for refs it was
        written for (object storage, many runs to read), else from refs and manifests;
        and, for each run read from its ref and manifest, (manifest, personality record)."""
        shared: dict[str, RunInfo] = {}
        if self.refs.backend.round_trips and self.use_listings and len(run_ids) >= LISTING_MIN:
            snapshot = listings.newest(self.refs.backend, font_id)
            shared = {r: snapshot[r][1] for r in run_ids if r in snapshot and snapshot[r][0] == tokens[r]}
        unshared = [r for r in run_ids if r not in shared]
        read = self._read_runs(font_id, unshared)
        infos = {**shared, **{run_id: info for run_id, (info, _) in zip(unshared, read)}}
        return [(
            font_id, run_id, tokens[run_id], info.manifest, info.status,
            data["started_at"] or format_time(run_time(run_id)),
            data["saved_at"], data["started_at"], data["ended_at"],
            info.name, info.description, json.dumps(data["tags"]), index_json(info.params),
            index_json(info.metrics), RunInfo.row_of(data), json.dumps(data),
        ) for run_id, info, data in ((r, infos[r], infos[r].to_dict()) for r in run_ids)
        ], [(i.manifest, p) for i, p in read if i.manifest]

    def _share_listing(self, font_id: str) -> None:
        """Write a listing snapshot of the font for machines that have not listed it; a
        store that refuses it (read-only) or a failed write costs nothing but this try."""
        rows = self._db().execute(
            "SELECT r.token, i.info FROM runs r JOIN run_info i USING (font_id, run_id) WHERE r.font_id = ?",
            (font_id,)).fetchall()
        try:
            listings.write(self.refs.backend, font_id, [(token, RunInfo.from_row(info)) for token, info in rows])
        except StoreError:
            pass

    def read_infos(self, font_id: str, run_ids: list[str]) -> list[RunInfo]:
        """RunInfo of runs straight from their refs and manifests (and feedback, for the
        metrics); a run that cannot be read is listed as unreadable. On an object store,
        where each read is a round trip, many are in flight at once."""
        return [info for info, _ in self._read_runs(font_id, run_ids)]

    def _read_runs(self, font_id: str, run_ids: list[str]) -> list[tuple[RunInfo, TensorRecord | None]]:
        """:meth:`read_infos`, each with its manifest's personality vector record."""

        def read(run_id: str) -> tuple[RunInfo, TensorRecord | None]:
            try:
                digest = self.refs.read_run(font_id, run_id)
                manifest = check_location(unpack(self.objects.get(digest)), font_id, run_id)
                metrics = manifest.metrics
                if metrics is None:  # written before manifests kept them
                    metrics = feedback_metrics(self.objects.get_blob(manifest.feedback)) if manifest.feedback else {}
            except StoreError as exc:
                return RunInfo.unreadable(font_id, run_id, str(exc)), None
            return RunInfo.from_manifest(manifest, digest, metrics), manifest.personality

        if self.refs.backend.folders:  # small local files: threads would only slow this
            return [read(run_id) for run_id in run_ids]
        return list(self.objects.parallel(read, run_ids))

    def rebuild(self) -> None:
        """Forget everything; the next query reads every ref and manifest again. A
        database that cannot even be read is removed and started afresh."""
        with self._lock:
            self._built.clear()
            self._tokens.clear()
            self.use_listings = False  # every ref and manifest: not what a snapshot says
            try:
                self._db().executescript("".join(f"DELETE FROM {t};" for t in (*TABLES, *DERIVED)))
            except sqlite3.DatabaseError:
                self._start_afresh()

    def _start_afresh(self) -> None:
        """A damaged index is removed and built again for every font it had synced."""
        with self._lock:
            self.close()
            self._built.clear()
            self._tokens.clear()
            if self.path is not None:
                self._remove_files()
            self._db()
            for font_id in sorted(self._synced):
                self._sync_font(font_id)

    # -- answering --

    @_rebuilt_if_damaged
    def runs(self, query: Query) -> list[RunInfo]:
        font = query.whole_font
        with self._lock, _snapshot(self._db()) as db:
            if font is not None:  # every run of a font in id order: the RunInfo table's own order
                return list(self._built_runs(db, font, None).values())
            sql, args = build_query(query, "font_id, run_id")
            found = db.execute(sql, args).fetchall()
            built = {font_id: self._built_runs(db, font_id, run_ids) for font_id, run_ids in _by_font(found).items()}
        return [built[font_id][run_id] for font_id, run_id in found]

    def _built_runs(self, db: sqlite3.Connection, font_id: str, run_ids: list[str] | None) -> dict[str, RunInfo]:
        """RunInfo objects of a font's runs, these among them (None: all, in run id order),
        kept until its rows change (immutable, so shared by every answer). Built from their
        rows as first needed: a page of 50 runs reads 50 rows, a listing of all reads them
        in one scan."""
        generation, settled = self._font_state(db, font_id)
        cached = self._built.get(font_id)
        if cached is None or cached[0] != generation or (run_ids is None and cached[2] is False):
            if run_ids is None:  # all of them: a new dict, filled in run id order
                old = cached[1] if cached is not None and cached[0] == generation else {}
                rows = self._whole_font(db, "info", font_id, generation, settled)
                from_row = RunInfo.from_row
                infos = {run_id: old.get(run_id) or from_row(info) for run_id, info in rows.items()} if old else \
                    {run_id: from_row(info) for run_id, info in rows.items()}
                self._built[font_id] = (generation, infos, True)
                return infos
            cached = self._built[font_id] = (generation, {}, False)
        infos = cached[1]
        if run_ids is None:
            return infos
        missing = [run_id for run_id in run_ids if run_id not in infos] if infos else run_ids
        for run_id, info in self._rows_of(db, "info", font_id, missing):
            if run_id not in infos:
                infos[run_id] = RunInfo.from_row(info)
        if any(run_id not in infos for run_id in missing):
            raise sqlite3.DatabaseError("a run listed in the index has no RunInfo row")  # damaged: rebuilt
        return infos

    @staticmethod
    def _font_state(db: sqlite3.Connection, font_id: str) -> tuple[int, bool]:
        """A font's generation (-1: never synced), and whether its rows are settled (have
        not changed for :data:`SETTLED_NS`)."""
        row = db.execute("SELECT generation, changed_ns FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
        if row is None:
            return -1, False
        return row[0], _settled(row[1])

    def _whole_font(self, db: sqlite3.Connection, kind: str, font_id: str, generation: int,
                    settled: bool) -> dict[str, Any]:
        """Every run's value of a kind (``tokens``: its ref token; ``info``: its RunInfo
        row) by run id, in run id order, as of this generation: from the font's packed copy
        and the rows later generations wrote (a save writes one), else from all its rows.
        A settled font's values are packed again when its copy lacks some."""
        count, copy = self._copy(db, kind, font_id, generation)
        values = _unpacked(copy.value, copy.runs, str if kind == "tokens" else bytes) if copy else None
        if copy is not None and values is not None:
            values = _updated(values, copy.later) if copy.later else values
            if len(values) == count and (not copy.later or not settled):
                return values
            if len(values) != count:  # the copy is damaged: read the rows
                values = None
        if values is None:
            values = dict(self._all_rows(db, kind, font_id, count))
        if settled:
            self._pack(db, kind, font_id, generation, len(values),
                       msgpack.packb([list(values), list(values.values())], use_bin_type=True))
        return values

    @staticmethod
    def _copy(db: sqlite3.Connection, kind: str, font_id: str, generation: int) -> tuple[int, _Copy | None]:
        """How many runs the index holds of a font, and its packed copy of a kind of this
        generation or an older one, with the rows later generations wrote (None: no copy)."""
        count: int = db.execute("SELECT count(*) FROM runs WHERE font_id = ?", (font_id,)).fetchone()[0]
        found = db.execute("SELECT generation, runs, value FROM packed WHERE font_id = ? AND kind = ? "
                           "AND generation <= ?", (font_id, kind, generation)).fetchone()
        if found is None:
            return count, None
        later = db.execute(whole_font_sql(kind, later=True), {"font": font_id, "since": found[0]}).fetchall()
        return count, _Copy(found[0], found[1], found[2], later)

    @staticmethod
    def _all_rows(db: sqlite3.Connection, kind: str, font_id: str, count: int) -> list[tuple[str, Any]]:
        """Every run's value of a kind, in run id order; as many as the index's runs, or the
        index is damaged (and rebuilt)."""
        rows: list[tuple[str, Any]] = db.execute(whole_font_sql(kind), {"font": font_id}).fetchall()
        if len(rows) != count:
            raise sqlite3.DatabaseError(f"the index's {kind} rows do not match its runs")
        return rows

    def _pack(self, db: sqlite3.Connection, kind: str, font_id: str, generation: int, runs: int, value: bytes) -> None:
        """Keep a packed copy of a settled font's rows, if they are still of this
        generation. Not waited for: an index busy or read-only costs only this try. (An
        index in memory keeps none: its process keeps what it built.)"""
        if self.path is None:
            return
        db.execute("PRAGMA busy_timeout = 0")
        try:
            db.execute("INSERT OR REPLACE INTO packed SELECT ?, ?, ?, ?, ? WHERE "
                       "(SELECT generation FROM fonts WHERE font_id = ?) = ?",
                       (font_id, kind, generation, runs, value, font_id, generation))
        except sqlite3.OperationalError:
            pass
        finally:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @_rebuilt_if_damaged
    def runs_json(self, query: Query) -> str:
        """The JSON of each run :meth:`runs` would answer (``RunInfo.to_dict``), joined by
        ", ", as the index keeps it: a listing for a program builds no RunInfo at all."""
        font = query.whole_font
        with self._lock, _snapshot(self._db()) as db:
            if font is not None:  # every run of a font in id order: the JSON table's own order
                return self._joined_json(db, font, *self._font_state(db, font))
            sql, args = build_query(query, "font_id, run_id")
            found = db.execute(sql, args).fetchall()
            by_run = {(font_id, run_id): text for font_id, run_ids in _by_font(found).items()
                      for run_id, text in self._rows_of(db, "json", font_id, run_ids)}
        if any(key not in by_run for key in found):
            raise sqlite3.DatabaseError("a run listed in the index has no JSON row")  # damaged: rebuilt
        return ", ".join(by_run[key] for key in found)

    def _joined_json(self, db: sqlite3.Connection, font_id: str, generation: int, settled: bool) -> str:
        """Every run's JSON joined by ", ", in run id order: the packed copy with the runs
        added since appended, when they all sort after it (a save adds one at the end),
        else every row. A settled font's is packed again when its copy lacks some."""
        count, copy = self._copy(db, "json", font_id, generation)
        text = None
        if copy is not None and isinstance(copy.value, bytes) and copy.runs + len(copy.later) == count and not (
                copy.later and db.execute(  # none replaced (the counts add up), none sorting before the copy's
                    "SELECT 1 FROM runs WHERE font_id = ? AND run_id > ? AND generation <= ? LIMIT 1",
                    (font_id, copy.later[0][0], copy.generation)).fetchone()):
            try:
                packed = [copy.value.decode()] if copy.runs else []
                text = ", ".join(packed + [row[1] for row in copy.later])
            except UnicodeDecodeError:
                pass  # damaged: the rows are read
            if text is not None and (not copy.later or not settled):
                return text
        if text is None:
            text = ", ".join(row[1] for row in self._all_rows(db, "json", font_id, count))
        if settled:
            self._pack(db, "json", font_id, generation, count, text.encode())
        return text

    @staticmethod
    def _rows_of(db: sqlite3.Connection, kind: str, font_id: str, run_ids: list[str]) -> list[tuple[str, Any]]:
        """(run id, value of a kind) of these runs: one scan of the font's rows for many, a
        lookup each for few (a page)."""
        table, column = VALUES[kind]
        if len(run_ids) > FETCH_ALL_ABOVE:
            return db.execute(f"SELECT run_id, {column} FROM {table} WHERE font_id = ?", (font_id,)).fetchall()
        return [row for run_id in run_ids for row in db.execute(
            f"SELECT run_id, {column} FROM {table} WHERE font_id = ? AND run_id = ?", (font_id, run_id))]

    @_rebuilt_if_damaged
    def count(self, query: Query) -> int:
        unpaged = Query(**{**query.__dict__, "limit": None, "offset": 0})
        sql, args = build_query(unpaged, "count(*)")
        sql = sql.split(" ORDER BY ")[0]
        with self._lock:
            return int(self._db().execute(sql, args).fetchone()[0])

    @_rebuilt_if_damaged
    def vector_rows(self, font_id: str) -> list[tuple[str, str, TensorRecord | None, bytes | None]]:
        """(run id, manifest, where its personality vector is, its values) of each readable
        run of the font, in run id order: the values None until :meth:`keep_vectors`, and
        then no record; the record None when no sync noted it (a run listed from a
        snapshot, say)."""
        with self._lock:
            rows = self._db().execute(
                "SELECT r.run_id, r.manifest, v.record, v.vector FROM runs r LEFT JOIN vectors v USING (manifest) "
                "WHERE r.font_id = ? AND r.manifest IS NOT NULL ORDER BY r.run_id", (font_id,)).fetchall()
        return [(run_id, manifest, _record(record) if vector is None else None, vector)
                for run_id, manifest, record, vector in rows]

    @_rebuilt_if_damaged
    def keep_vectors(self, vectors: Iterable[tuple[str, bytes]]) -> None:
        """Remember manifests' personality vectors (float64 bytes; empty: none to chart)."""
        rows = list(vectors)
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")  # one transaction: 10,000 rows in milliseconds, not one commit each
            try:
                db.executemany("INSERT INTO vectors (manifest, vector) VALUES (?, ?) ON CONFLICT (manifest) DO UPDATE "
                               "SET vector = excluded.vector", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _note_vectors(self, records: list[tuple[str, TensorRecord | None]]) -> None:
        """Note where manifests' personality vectors are (those a chart can draw; the others
        are known to have none), so a chart reads the vector and not the manifest again;
        part of a sync's transaction."""
        rows = [(manifest, json.dumps(tensor_map(record)), None) if vectors.chartable(record) else (manifest, None, b"")
                for manifest, record in records]
        self._db().executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", rows)

    @_rebuilt_if_damaged
    def summaries(self, font_ids: Sequence[str]) -> list[FontSummary]:
        with self._lock:
            rows = self._db().execute(
                "SELECT font_id, count(*), max(run_id) FROM runs GROUP BY font_id"
            ).fetchall()
            newest = {r[0]: (r[1], r[2]) for r in rows}
            saved = dict(self._db().execute(
                "SELECT font_id, saved_at FROM runs WHERE (font_id, run_id) IN "
                "(SELECT font_id, max(run_id) FROM runs GROUP BY font_id)"
            ).fetchall())
        return [
            FontSummary(f, newest.get(f, (0, None))[0], newest.get(f, (0, None))[1], parse_time(saved.get(f)))
            for f in font_ids
        ]

    def mismatches(self, font_ids: Iterable[str]) -> list[str]:
        """Index rows that claim to be current (their ref is unchanged) but name another
        manifest than the ref does: a damaged index. Stale rows are normal: a sync fixes them."""
        problems = []
        with self._lock:
            db = self._db()
            for font_id in font_ids:
                tokens = self.refs.backend.list_versions(runs_folder(font_id))
                for run_id, token, manifest in db.execute(
                    "SELECT run_id, token, manifest FROM runs WHERE font_id = ?", (font_id,)
                ):
                    if tokens.get(run_id) == token and manifest:
                        try:
                            actual = self.refs.read_run(font_id, run_id)
                        except StoreError:
                            continue
                        if actual != manifest:
                            problems.append(f"{font_id}/{run_id}")
        return problems


def _record(text: str | None) -> TensorRecord | None:
    """A tensor record as :meth:`Catalog._note_vectors` wrote it, checked as a manifest's
    would be; None when absent or not valid (then the manifest is read instead)."""
    if text is None:
        return None
    try:
        record = tensor_from_map(json.loads(text))
    except (ValueError, KeyError, TypeError, StoreError):  # BadManifest is a ValueError
        return None
    return record if vectors.chartable(record) else None


VALUES = {"tokens": ("runs", "token"), "info": ("run_info", "info"), "json": ("run_json", "json")}
"""Where each kind of per-run value lives: its table and column."""


def whole_font_sql(kind: str, *, later: bool = False) -> str:
    """The SQL reading a font's values of a kind (``:font``) in run id order: all of them,
    or (``later``) those written by generations after ``:since``."""
    table, column = VALUES[kind]
    since = (" AND run_id IN (SELECT run_id FROM runs WHERE font_id = :font AND generation > :since)"
             if later else "")
    return f"SELECT run_id, {column} FROM {table} WHERE font_id = :font{since} ORDER BY run_id"


@contextlib.contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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


@dataclass(frozen=True)
class _Copy:
    """A packed copy as the index holds it (see ``packed``), and the rows written since."""

    generation: int
    runs: int
    value: Any  # bytes unless the index is damaged
    later: list[tuple[str, Any]]


def _settled(changed_ns: int | None) -> bool:
    """Whether a font whose rows last changed then has been still for :data:`SETTLED_NS`."""
    return time.time_ns() - (changed_ns or 0) > SETTLED_NS


def _unpacked(value: Any, runs: int, kind: type) -> dict[str, Any] | None:
    """The values of a packed copy of so many runs by run id, decoded within bounds; None
    if it is not one (damaged: the rows are read instead)."""
    if not isinstance(value, bytes):
        return None
    try:
        run_ids, values = msgpack.unpackb(value, raw=False, max_str_len=MAX_INFO_BYTES, max_bin_len=MAX_INFO_BYTES)
    except (ValueError, TypeError, msgpack.ExtraData):
        return None
    if not (isinstance(run_ids, list) and isinstance(values, list) and len(run_ids) == len(values)
            and set(map(type, run_ids)) <= {str} and set(map(type, values)) <= {kind}):
        return None
    unpacked = dict(zip(run_ids, values))
    return unpacked if len(unpacked) == len(run_ids) == runs else None  # a run id twice, or runs missing


def _updated(values: dict[str, T], changes: Iterable[tuple[str, T]], gone: Iterable[str] = ()) -> dict[str, T]:
    """Values by run id with changes applied, still in run id order (new runs usually
    come last, so the order is mended only when one does not)."""
    for run_id in gone:
        values.pop(run_id, None)
    in_order = True
    for run_id, value in changes:
        if in_order and run_id not in values and values and run_id < next(reversed(values)):
            in_order = False
        values[run_id] = value
    return values if in_order else dict(sorted(values.items()))


def _by_font(found: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The run ids of an answer's (font, run) rows, by font, in the answer's order."""
    grouped: dict[str, list[str]] = {}
    for font_id, run_id in found:
        grouped.setdefault(font_id, []).append(run_id)
    return grouped
