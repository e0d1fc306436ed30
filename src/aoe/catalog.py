"""Catalog: a derived SQLite index of every run's metadata, so listing, filtering and
searching 10,000 runs reads one small database instead of 10,000 refs and manifests.

Refs and manifests stay the only truth; the index is a cache that can be deleted at
any time (`aoe store reindex` rebuilds it). Before answering about a font, the catalog
brings it up to date: one ``stat`` of the font's ``runs/`` folder tells whether any ref
was added, removed or replaced since the last sync. If so, one scan of the folder
(names and inode/mtime/size of each ref, nothing read) finds what changed, and only
those refs and manifests are read. A folder that changed less than two seconds before
the last sync is scanned again every time, since a second change within the same clock
tick may not move its mtime (git's "racy clean" rule). So a run saved by another process
appears in the next listing, and a removed one disappears.

Why SQLite: filters on JSON fields, sorting and counting happen in C, the index updates
one row at a time, and concurrent processes are serialised by its locks (WAL mode).
"""

from __future__ import annotations

import functools
import json
import math
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from . import inputs
from .errors import InvalidInputError, StorageError, StoreError
from .layout import name_in_folder, run_id_at, runs_folder
from .limits import parse_json
from .manifests import Manifest, check_location, unpack
from .names import format_time, parse_time
from .objects import ObjectStore
from .refs import Refs, run_time

COMPLETED = "completed"
ASSETS = ("weights", "personality_vector", "sample", "eval_glyphs", "feedback")
EXPECTED_ASSETS = ("weights", "sample", "eval_glyphs", "feedback")
"""The spec's files of a run; a completed run without one of them is incomplete. (The
personality vector may live inside the weights, so it is not required on its own.)"""

SCHEMA_VERSION = 3
T = TypeVar("T")
RACY_NS = 2_000_000_000
UNREADABLE = "unreadable"
"""The status listed for a run whose ref or manifest cannot be read (see `aoe store fsck`)."""


@dataclass(frozen=True)
class RunInfo:
    """What a run is, without reading its weights or images."""

    font_id: str
    run_id: str
    status: str
    saved_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    params: dict[str, Any]
    name: str | None
    description: str | None
    tags: tuple[str, ...]
    weights_version: str | None
    feedback_schema: str | None
    manifest: str
    assets: tuple[str, ...]
    glyphs: tuple[str, ...]
    extras: tuple[str, ...]
    parent: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    """Numeric fields of the feedback (``final_loss``, ``glyph_loss.A``...), for filtering and sorting."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected assets a completed run lacks (empty for other statuses)."""
        if self.status != COMPLETED:
            return ()
        return tuple(a for a in EXPECTED_ASSETS if a not in self.assets)

    @property
    def incomplete(self) -> bool:
        return bool(self.missing)

    def value(self, field: str) -> Any:
        """A field as queries name it: a column (``status``), ``params.NAME`` (params
        nest: ``params.opt.lr``) or ``metrics.NAME`` (flat: names may hold dots, as in
        ``glyph_loss.A``); None where the run has none."""
        kind, _, key = field.partition(".")
        if kind == "metrics" and key:
            return self.metrics.get(key)
        if kind == "params" and key:
            value: Any = self.params
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        return getattr(self, field, None) if field in COLUMNS else None

    @classmethod
    def from_manifest(cls, manifest: Manifest, digest: str, metrics: dict[str, float] | None = None) -> RunInfo:
        present = {
            "weights": manifest.weights is not None,
            "personality_vector": manifest.personality is not None,
            "sample": manifest.sample is not None,
            "eval_glyphs": bool(manifest.glyphs),
            "feedback": manifest.feedback is not None,
        }
        return cls(
            font_id=manifest.font_id,
            run_id=manifest.run_id,
            status=manifest.status,
            saved_at=parse_time(manifest.saved_at),  # type: ignore[arg-type]
            started_at=parse_time(manifest.started_at),
            ended_at=parse_time(manifest.ended_at),
            params=manifest.params,
            name=manifest.name,
            description=manifest.description,
            tags=manifest.tags,
            weights_version=manifest.weights_version,
            feedback_schema=manifest.feedback_schema,
            manifest=digest,
            assets=tuple(a for a in ASSETS if present[a]),
            glyphs=tuple(manifest.glyphs),
            extras=tuple(manifest.extras),
            parent=manifest.parent,
            metrics=metrics or {},
        )

    @classmethod
    def unreadable(cls, font_id: str, run_id: str, why: str) -> RunInfo:
        """A stand-in for a run whose ref or manifest cannot be read: listed, not hidden."""
        return cls(font_id, run_id, UNREADABLE, run_time(run_id), None, None, {}, None,
                   f"{why}; run `aoe store fsck`", (), None, None, "", (), (), ())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (times as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, datetime):
                value = format_time(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        out["missing"] = list(self.missing)
        return out

    def _row(self) -> bytes:
        """The compact form the index keeps: the fields in order, times as text."""
        data = self.to_dict()
        row: bytes = msgpack.packb([data[name] for name in _FIELDS], use_bin_type=True)
        return row

    @classmethod
    def _from_row(cls, row: bytes) -> RunInfo:
        data = dict(zip(_FIELDS, msgpack.unpackb(row, raw=False)))
        data["saved_at"] = _fromiso(data["saved_at"])
        if data["started_at"]:
            data["started_at"] = _fromiso(data["started_at"])
        if data["ended_at"]:
            data["ended_at"] = _fromiso(data["ended_at"])
        for name in ("tags", "assets", "glyphs", "extras"):
            data[name] = tuple(data[name])
        info = cls.__new__(cls)  # fast path: 10,000 of these must take milliseconds
        object.__setattr__(info, "__dict__", data)
        return info


_FIELDS = tuple(RunInfo.__dataclass_fields__)
_fromiso = datetime.fromisoformat


def feedback_metrics(data: bytes) -> dict[str, float]:
    """The numbers in a feedback document: top-level fields, and one level down as
    ``outer.inner`` (per-glyph losses). Booleans are not numbers here."""
    try:
        feedback = parse_json(data)
    except ValueError:  # malformed, or nested too deep (a reader never crashes on a feedback)
        return {}
    metrics: dict[str, float] = {}
    if not isinstance(feedback, dict):
        return metrics
    for key, value in feedback.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = value
        elif isinstance(value, dict):
            for inner, number in value.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    metrics[f"{key}.{inner}"] = number
    return metrics


@dataclass(frozen=True)
class FontSummary:
    font_id: str
    runs: int
    newest_run: str | None
    newest_saved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"font_id": self.font_id, "runs": self.runs, "newest_run": self.newest_run,
                "newest_saved_at": format_time(self.newest_saved_at) if self.newest_saved_at else None}


# -- queries ---------------------------------------------------------------------------

COLUMNS = {"font_id", "run_id", "status", "saved_at", "started_at", "ended_at", "name", "description", "time"}
"""Fields to filter and sort on besides ``params.*`` and ``metrics.*``; ``time`` is the
run's time (its start, else when it was saved), the one its run id is made of."""
OPERATORS = ("<=", ">=", "!=", "=", "<", ">")
MAX_PAGE = 2**62
"""The largest limit or offset a query takes (SQLite's integers end at 2**63)."""
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.S)


@dataclass
class Query:
    """What to list: all filters are ANDed."""

    fonts: Sequence[str] | None = None
    """The fonts to answer about (None: every font in the index)."""
    status: str | None = None
    tags: Sequence[str] = ()
    all_tags: bool = False
    since: datetime | str | None = None
    until: datetime | str | None = None
    where: Sequence[str | tuple[str, str, Any]] = ()
    text: str | None = None
    sort: str = "run_id"
    descending: bool = False
    limit: int | None = None
    offset: int = 0


def parse_condition(condition: str | tuple[str, str, Any]) -> tuple[str, str, Any]:
    """``"metrics.final_loss<0.1"`` or ``("params.lr", "=", 0.001)`` -> (field, op, value)."""
    if isinstance(condition, tuple):
        name, op, value = condition
    else:
        match = _CONDITION.fullmatch(condition)
        if not match:
            raise InvalidInputError(
                f"cannot read the condition {condition!r}: write FIELD OP VALUE, e.g. "
                "'metrics.final_loss<0.05', 'params.lr=0.001' or 'status!=failed'"
            )
        name, op, text = match.groups()
        value = _value(text)
    if op not in OPERATORS:
        raise InvalidInputError(f"unknown operator {op!r}: use one of {' '.join(OPERATORS)}")
    _field_sql(name)
    return name, op, value


def _value(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text, text)


def _field_sql(name: str) -> str:
    """The SQL expression for a field; only known names reach the SQL text."""
    if name in COLUMNS:
        return name
    for prefix in ("params.", "metrics."):
        key = name[len(prefix):]
        if name.startswith(prefix) and key and "'" not in key and '"' not in key:
            # params nest (params.opt.lr); metrics are flat, their names may hold dots (glyph_loss.A)
            parts = key.split(".") if prefix == "params." else [key]
            path = "".join(f'."{part}"' for part in parts)
            return f"json_extract({prefix[:-1]}, '${path}')"
    raise InvalidInputError(
        f"unknown field {name!r}: use {', '.join(sorted(COLUMNS))}, params.NAME or metrics.NAME"
    )


def _like(text: str) -> str:
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def build_query(query: Query, select: str) -> tuple[str, list[Any]]:
    """SQL and its arguments for a query (never string-formatted user values)."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.fonts is not None:
        clauses.append(f"font_id IN ({','.join('?' * len(query.fonts))})" if query.fonts else "0")
        args += list(query.fonts)
    if query.status:
        clauses.append("status = ?")
        args.append(query.status)
    if query.tags:
        tags = list(dict.fromkeys(query.tags))
        marks = ",".join("?" * len(tags))
        matches = f"(SELECT count(DISTINCT value) FROM json_each(runs.tags) WHERE value IN ({marks}))"
        clauses.append(f"{matches} = ?" if query.all_tags else f"{matches} > 0")
        args += tags + ([len(tags)] if query.all_tags else [])
    for bound, op in ((query.since, ">="), (query.until, "<")):
        if bound is not None:
            clauses.append(f"time {op} ?")
            args.append(inputs.timestamp(bound, "time bound"))
    for name, op, value in map(parse_condition, query.where):
        expr = _field_sql(name)
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            value = float(value)  # beyond SQLite's integers: compare as a float
        if value is None:
            clauses.append(f"{expr} IS {'NOT ' if op == '!=' else ''}NULL")
        else:
            clauses.append(f"{expr} {op} ?")
            args.append(value)
    if query.text:
        clauses.append("(lower(name) LIKE ? ESCAPE '\\' OR lower(description) LIKE ? ESCAPE '\\')")
        args += [_like(query.text)] * 2
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sort = query.sort[1:] if query.sort.startswith("-") else query.sort
    direction = "DESC" if query.descending != query.sort.startswith("-") else "ASC"
    order = _field_sql(sort)
    sql = f"SELECT {select} FROM runs{where} ORDER BY {order} IS NULL, {order} {direction}, font_id, run_id"
    for count, what in ((query.limit, "limit"), (query.offset, "offset")):
        if count is not None and not (isinstance(count, int) and 0 <= count <= MAX_PAGE):
            raise InvalidInputError(f"{what} {count!r}: use a whole number from 0 to {MAX_PAGE:,}")
    if query.limit is not None or query.offset:
        sql += " LIMIT ? OFFSET ?"
        args += [-1 if query.limit is None else query.limit, query.offset]
    return sql, args


# -- the index ---------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS fonts (font_id TEXT PRIMARY KEY, version INTEGER, synced_ns INTEGER, generation INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    font_id TEXT NOT NULL, run_id TEXT NOT NULL, token TEXT, manifest TEXT,
    status TEXT, time TEXT, saved_at TEXT, started_at TEXT, ended_at TEXT,
    name TEXT, description TEXT, tags TEXT, params TEXT, metrics TEXT, info BLOB,
    PRIMARY KEY (font_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_time ON runs (font_id, time);
"""


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
        self._built: dict[str, tuple[int, dict[str, RunInfo]]] = {}
        """Per font: the generation of its rows, and the RunInfo objects built from them
        (immutable, so shared by every answer until the font's rows change)."""

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
            return self._prepare(sqlite3.connect(self.path, timeout=30, check_same_thread=False))
        except sqlite3.DatabaseError:  # damaged: it is only a cache, so start it again
            self._remove_files()
            return self._prepare(sqlite3.connect(self.path, timeout=30, check_same_thread=False))

    def _prepare(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.isolation_level = None  # explicit transactions
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None or version[0] != str(SCHEMA_VERSION):  # another layout: start afresh
            db.executescript("DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS fonts;")
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
            memory.executescript("DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS fonts; DROP TABLE IF EXISTS meta;")

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
        known_version = db.execute("SELECT version, synced_ns FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
        if version is not None and known_version is not None:
            if known_version[0] == version and known_version[1] - version > RACY_NS:
                return
        synced_ns = time.time_ns()
        tokens = {run_id: token for key, token in self.refs.backend.list_versions(folder)
                  if (run_id := run_id_at(key)) is not None}  # files in runs/ that are not refs are skipped
        known = dict(db.execute("SELECT run_id, token FROM runs WHERE font_id = ?", (font_id,)).fetchall())
        changed = sorted(name for name, token in tokens.items() if known.get(name) != token)
        gone = sorted(set(known) - set(tokens))
        rows = list(self._rows(font_id, changed, tokens))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM runs WHERE font_id = ? AND run_id = ?", [(font_id, r) for r in gone])
            db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            generation = db.execute("SELECT generation FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
            generation = (generation[0] if generation else 0) + (1 if gone or rows else 0)
            db.execute("INSERT OR REPLACE INTO fonts VALUES (?, ?, ?, ?)", (font_id, version, synced_ns, generation))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _rows(self, font_id: str, run_ids: list[str], tokens: dict[str, str]) -> Iterator[tuple[Any, ...]]:
        for run_id, info in zip(run_ids, self.read_infos(font_id, run_ids)):
            yield (
                font_id, run_id, tokens[run_id], info.manifest, info.status,
                format_time(info.started_at or run_time(run_id)),
                format_time(info.saved_at), _text(info.started_at), _text(info.ended_at),
                info.name, info.description, json.dumps(list(info.tags)), index_json(info.params),
                index_json(info.metrics), info._row(),
            )

    def read_infos(self, font_id: str, run_ids: list[str]) -> list[RunInfo]:
        """RunInfo of runs straight from their refs and manifests (and feedback, for the
        metrics); a run that cannot be read is listed as unreadable. On an object store,
        where each read is a round trip, many are in flight at once."""

        def read(run_id: str) -> RunInfo:
            try:
                digest = self.refs.read_run(font_id, run_id)
                manifest = check_location(unpack(self.objects.get(digest)), font_id, run_id)
                metrics = manifest.metrics
                if metrics is None:  # written before manifests kept them
                    metrics = feedback_metrics(self.objects.get_blob(manifest.feedback)) if manifest.feedback else {}
            except StoreError as exc:
                return RunInfo.unreadable(font_id, run_id, str(exc))
            return RunInfo.from_manifest(manifest, digest, metrics)

        if self.refs.backend.folders:  # small local files: threads would only slow this
            return [read(run_id) for run_id in run_ids]
        return list(self.objects.parallel(read, run_ids))

    def rebuild(self) -> None:
        """Forget everything; the next query reads every ref and manifest again. A
        database that cannot even be read is removed and started afresh."""
        with self._lock:
            self._built.clear()
            try:
                self._db().executescript("DELETE FROM runs; DELETE FROM fonts;")
            except sqlite3.DatabaseError:
                self._start_afresh()

    def _start_afresh(self) -> None:
        """A damaged index is removed and built again for every font it had synced."""
        with self._lock:
            self.close()
            self._built.clear()
            if self.path is not None:
                self._remove_files()
            self._db()
            for font_id in sorted(self._synced):
                self._sync_font(font_id)

    # -- answering --

    @_rebuilt_if_damaged
    def runs(self, query: Query) -> list[RunInfo]:
        sql, args = build_query(query, "font_id, run_id")
        with self._lock:
            db = self._db()
            found = db.execute(sql, args).fetchall()
            built = {font_id: self._built_runs(db, font_id) for font_id in {f for f, _ in found}}
        return [built[font_id][run_id] for font_id, run_id in found]

    def _built_runs(self, db: sqlite3.Connection, font_id: str) -> dict[str, RunInfo]:
        """RunInfo objects of every run of a font, built again only when its rows changed."""
        row = db.execute("SELECT generation FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
        generation = row[0] if row else -1
        cached = self._built.get(font_id)
        if cached is None or cached[0] != generation:
            rows = db.execute("SELECT run_id, info FROM runs WHERE font_id = ?", (font_id,)).fetchall()
            cached = (generation, {run_id: RunInfo._from_row(info) for run_id, info in rows})
            self._built[font_id] = cached
        return cached[1]

    @_rebuilt_if_damaged
    def count(self, query: Query) -> int:
        unpaged = Query(**{**query.__dict__, "limit": None, "offset": 0})
        sql, args = build_query(unpaged, "count(*)")
        sql = sql.split(" ORDER BY ")[0]
        with self._lock:
            return int(self._db().execute(sql, args).fetchone()[0])

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
                tokens = {name_in_folder(k): t for k, t in self.refs.backend.list_versions(runs_folder(font_id))}
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


def _text(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None
