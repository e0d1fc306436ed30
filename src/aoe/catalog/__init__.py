"""Catalog: a derived SQLite index of every run's metadata, so listing, filtering and
searching 10,000 runs reads one small database instead of 10,000 refs and manifests.

Refs and manifests stay the only truth; the index is a cache that can be deleted at
any time (`aoe store reindex` rebuilds it), kept in the user's cache folder, never in the
store (``database``). Before answering about a font, the catalog brings it up to date:
one ``stat`` of the font's ``runs/`` folder tells whether any ref was added, removed or
replaced since the last sync. If so, one listing of the folder finds what changed, and
only those refs and manifests are read. The listing's inode numbers come free with the
names; a ref is stat'ed only when its file is new, or when the font's change note
(``runs/.changes``, rewritten before any ref is moved or removed) is not what the last
sync saw: so adding one run to a font of 10,000 costs a listing about one run's work. A
folder that changed less than two seconds before the last sync is listed again every
time, since a second change within the same clock tick may not move its mtime (git's
"racy clean" rule). So a run saved by another process appears in the next listing, and a
removed one disappears. Every row an answer shows is checked against the checksum written
with it (``rows``); a damaged index is rebuilt, never believed.

Why SQLite: filters on JSON fields, sorting and counting happen in C, the index updates
one row at a time, and concurrent processes are serialised by its locks (WAL mode).
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .. import segments, vectors
from ..errors import StorageError, StoreError
from ..layout import run_id_at, runs_folder
from ..manifests import TensorRecord, check_location, tensor_from_map, tensor_map, unpack
from ..names import format_time, parse_time
from ..objects import ObjectStore
from ..query import Query, build_query
from ..refs import Refs, run_time
from ..runinfo import FontSummary, RunInfo
from .database import NOT_DAMAGE, TABLES, IndexFile, check, snapshot, verified
from .rows import RACY_NS, by_font, font_state, joined_json, rows_of, updated, whole_font

T = TypeVar("T")
RELIST_NS = 60_000_000_000
"""On object storage, the refs are listed whole at least this often even when the change
note says nothing changed (writers older than aoe 0.5 do not write it)."""
LISTING_MIN = 100
"""On object storage, a sync with this many runs to read looks for a listing snapshot,
and one that read this many from refs and manifests writes one."""


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


def _unusable(catalog: Catalog, exc: sqlite3.Error) -> StorageError:
    return StorageError(
        f"the catalog index {catalog.path or '(in memory)'} cannot be used ({exc}); "
        "retry, or remove it: it is only a cache, rebuilt by `aoe store reindex`"
    )


def parents_text(parents: Iterable[dict[str, str]]) -> str:
    """The index's ``parents`` column: `` FONT/RUN FONT/RUN `` (spaces around each), so a
    run's children are the rows ``LIKE '% FONT/RUN %'`` (no id holds ``%``, ``_`` or a space)."""
    return "".join(f" {parent['font_id']}/{parent['run_id']}" for parent in parents) + " "


def index_json(value: Any) -> str:
    """JSON for the index's filter and sort columns. SQLite's JSON has no NaN or
    Infinity: NaN becomes null (it matches no comparison and sorts last) and an
    infinity the largest float of its sign (it sorts beyond every finite number). The
    exact values stay in the RunInfo row, for display."""
    try:
        return json.dumps(value, allow_nan=False)  # the usual case, in C
    except ValueError:
        pass

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

    def __init__(self, path: Path | None, refs: Refs, objects: ObjectStore, *, seed: Path | None = None,
                 published: dict[str, tuple[RunInfo, TensorRecord | None]] | None = None) -> None:
        self.file = IndexFile(path, seed)
        self.published = published if published is not None else {}
        """Manifests this process just published, by address: their RunInfo and vector
        record, so the sync that follows a save does not read back what it wrote (an
        address names one content: a ref that names it names exactly this)."""
        self.refs = refs
        self.objects = objects
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

    @property
    def path(self) -> Path | None:
        """The index's file (None: in memory)."""
        return self.file.path

    def open(self) -> None:
        """Open (or create) the index now, so a caller learns at once if it cannot."""
        self._db()

    def _db(self) -> sqlite3.Connection:
        return self.file.connection()

    def close(self) -> None:
        self.file.close()

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
            with snapshot(db):
                known_generation, settled = font_state(db, font_id)
                known = whole_font(db, "tokens", font_id, known_generation, settled, self.path is not None)
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
            db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           [(*row[:15], generation) for row in rows])
            db.executemany("INSERT OR REPLACE INTO run_info VALUES (?,?,?,?)",
                           [(*row[:2], row[15], check(row[15])) for row in rows])
            db.executemany("INSERT OR REPLACE INTO run_json VALUES (?,?,?,?)",
                           [(*row[:2], row[16], check(row[16])) for row in rows])
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
            self.share_listing(font_id)
        if known_generation >= 0 and before == known_generation:  # nobody else changed the rows: keep what was built
            self._tokens[font_id] = (generation, tokens)
            cached = self._built.get(font_id)
            if cached is not None and cached[0] == before:
                built = ((row[1], RunInfo.from_row(row[15])) for row in rows)
                self._built[font_id] = (generation, updated(cached[1], built, gone), cached[2])
        else:
            self._tokens.pop(font_id, None)

    def _rows(self, font_id: str, run_ids: list[str], tokens: dict[str, str]
              ) -> tuple[list[tuple[Any, ...]], list[tuple[str, TensorRecord | None]]]:
        """Index rows of these runs: from the font's shared listing (snapshot, segments)
        where it holds them (object storage, many runs to read), else from refs and manifests;
        and, for each run read from its ref and manifest, (manifest, personality record)."""
        shared: dict[str, RunInfo] = {}
        if self.refs.backend.round_trips and self.use_listings and len(run_ids) >= LISTING_MIN:
            listing = segments.SharedListing(self.refs.backend, font_id)
            shared = listing.rows_for({r: tokens[r] for r in run_ids})
        unshared = [r for r in run_ids if r not in shared]
        read = self._read_runs(font_id, unshared)
        infos = {**shared, **{run_id: info for run_id, (info, _) in zip(unshared, read)}}
        return [(
            font_id, run_id, tokens[run_id], info.manifest, info.status,
            data["started_at"] or format_time(run_time(run_id)),
            data["saved_at"], data["started_at"], data["ended_at"],
            info.name, info.description, json.dumps(data["tags"]), index_json(info.params),
            index_json(info.metrics), parents_text(info.parents), RunInfo.row_of(data), json.dumps(data),
        ) for run_id, info, data in ((r, infos[r], infos[r].to_dict()) for r in run_ids)
        ], [(i.manifest, p) for i, p in read if i.manifest]

    def share_listing(self, font_id: str) -> None:
        """Write a listing snapshot of the font as the index has it (for machines that have
        not listed it), then remove the listing segments it makes useless."""
        db = self._db()
        synced = db.execute("SELECT synced_ns FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
        rows = [(token, RunInfo.from_row(info)) for token, info in db.execute(
            "SELECT r.token, i.info FROM runs r JOIN run_info i USING (font_id, run_id) WHERE r.font_id = ?",
            (font_id,)).fetchall()]
        segments.share(self.refs.backend, font_id, rows,
                       None if synced is None else datetime.fromtimestamp(synced[0] / 1e9, UTC))

    def share_listings(self) -> None:
        """Leave every font a listing snapshot of its runs as the index has them (gc does,
        on object storage, so a machine that never listed a font reads a few objects; fsck
        writes its own from what it read); a font that cannot be listed now only stays
        slower to list."""
        for font_id in self.refs.fonts():
            try:
                self.sync([font_id])
                self.share_listing(font_id)
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
                known = self.published.get(digest)
                if known is not None and (known[0].font_id, known[0].run_id) == (font_id, run_id):
                    return known
                manifest = check_location(unpack(self.objects.get(digest)), font_id, run_id)
                info = RunInfo.read(manifest, digest, self.objects)
            except StoreError as exc:
                return RunInfo.unreadable(font_id, run_id, str(exc)), None
            return info, manifest.personality

        if self.refs.backend.folders:  # small local files: threads would only slow this
            return [read(run_id) for run_id in run_ids]
        return list(self.objects.parallel(read, run_ids))

    def rebuild(self) -> None:
        """Forget everything: a new, empty index (a new file), so the next query reads
        every ref and manifest again, and nothing of the old file is kept or run."""
        with self._lock:
            self._built.clear()
            self._tokens.clear()
            self.use_listings = False  # every ref and manifest: not what a snapshot says
            self.file.start_afresh()

    def _start_afresh(self) -> None:
        """A damaged index is removed and built again for every font it had synced."""
        with self._lock:
            self._built.clear()
            self._tokens.clear()
            self.file.start_afresh()
            for font_id in sorted(self._synced):
                self._sync_font(font_id)

    # -- answering --

    @_rebuilt_if_damaged
    def runs(self, query: Query) -> list[RunInfo]:
        font = query.whole_font
        with self._lock, snapshot(self._db()) as db:
            if font is not None:  # every run of a font in id order: the RunInfo table's own order
                return list(self._built_runs(db, font, None).values())
            sql, args = build_query(query, "font_id, run_id")
            found = db.execute(sql, args).fetchall()
            built = {font_id: self._built_runs(db, font_id, run_ids) for font_id, run_ids in by_font(found).items()}
        return [built[font_id][run_id] for font_id, run_id in found]

    def _built_runs(self, db: sqlite3.Connection, font_id: str, run_ids: list[str] | None) -> dict[str, RunInfo]:
        """RunInfo objects of a font's runs, these among them (None: all, in run id order),
        kept until its rows change (immutable, so shared by every answer). Built from their
        rows as first needed: a page of 50 runs reads 50 rows, a listing of all reads them
        in one scan."""
        generation, settled = font_state(db, font_id)
        cached = self._built.get(font_id)
        if cached is None or cached[0] != generation or (run_ids is None and cached[2] is False):
            if run_ids is None:  # all of them: a new dict, filled in run id order
                old = cached[1] if cached is not None and cached[0] == generation else {}
                rows = whole_font(db, "info", font_id, generation, settled, self.path is not None)
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
        for run_id, info in rows_of(db, "info", font_id, missing):
            if run_id not in infos:
                infos[run_id] = RunInfo.from_row(info)
        if any(run_id not in infos for run_id in missing):
            raise sqlite3.DatabaseError("a run listed in the index has no RunInfo row")  # damaged: rebuilt
        return infos

    @_rebuilt_if_damaged
    def children(self, font_id: str, run_id: str) -> list[RunInfo]:
        """The runs (of the fonts synced) that name this run as a parent, by font and run
        id; each one's own RunInfo row says so (a row found by a damaged column that does
        not is passed over)."""
        with self._lock, snapshot(self._db()) as db:
            found = db.execute("SELECT font_id, run_id FROM runs WHERE parents LIKE ? ORDER BY font_id, run_id",
                               (f"% {font_id}/{run_id} %",)).fetchall()
            built = {font: self._built_runs(db, font, run_ids) for font, run_ids in by_font(found).items()}
        children = (built[font][run] for font, run in found)
        return [info for info in children
                if any((p["font_id"], p["run_id"]) == (font_id, run_id) for p in info.parents)]

    @_rebuilt_if_damaged
    def runs_json(self, query: Query) -> str:
        """The JSON of each run :meth:`runs` would answer (``RunInfo.to_dict``), joined by
        ", ", as the index keeps it: a listing for a program builds no RunInfo at all."""
        font = query.whole_font
        with self._lock, snapshot(self._db()) as db:
            if font is not None:  # every run of a font in id order: the JSON table's own order
                return joined_json(db, font, *font_state(db, font), self.path is not None)
            sql, args = build_query(query, "font_id, run_id")
            found = db.execute(sql, args).fetchall()
            by_run = {(font_id, run_id): text for font_id, run_ids in by_font(found).items()
                      for run_id, text in rows_of(db, "json", font_id, run_ids)}
        if any(key not in by_run for key in found):
            raise sqlite3.DatabaseError("a run listed in the index has no JSON row")  # damaged: rebuilt
        return ", ".join(by_run[key] for key in found)

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
                "SELECT r.run_id, r.manifest, v.record, v.vector, v.checked FROM runs r LEFT JOIN vectors v "
                "USING (manifest) WHERE r.font_id = ? AND r.manifest IS NOT NULL ORDER BY r.run_id",
                (font_id,)).fetchall()
        return [(run_id, manifest, _record(verified(record, checked, manifest)) if record is not None and vector is None
                 else None, None if vector is None else verified(vector, checked, manifest))
                for run_id, manifest, record, vector, checked in rows]

    @_rebuilt_if_damaged
    def keep_vectors(self, vectors: Iterable[tuple[str, bytes]]) -> None:
        """Remember manifests' personality vectors (float64 bytes; empty: none to chart)."""
        rows = list(vectors)
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")  # one transaction: 10,000 rows in milliseconds, not one commit each
            try:
                db.executemany("INSERT INTO vectors (manifest, vector, checked) VALUES (?, ?, ?) ON CONFLICT (manifest) "
                               "DO UPDATE SET vector = excluded.vector, checked = excluded.checked",
                               [(manifest, vector, check(vector, manifest)) for manifest, vector in rows])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _note_vectors(self, records: list[tuple[str, TensorRecord | None]]) -> None:
        """Note where manifests' personality vectors are (those a chart can draw; the others
        are known to have none), so a chart reads the vector and not the manifest again;
        part of a sync's transaction."""
        rows: list[tuple[str, str | None, bytes | None, int]] = []
        for manifest, record in records:
            if vectors.chartable(record):
                text = json.dumps(tensor_map(record))
                rows.append((manifest, text, None, check(text, manifest)))
            else:
                rows.append((manifest, None, b"", check(b"", manifest)))
        self._db().executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?)", rows)

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

