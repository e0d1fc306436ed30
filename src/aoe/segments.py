"""Listing segments (format revision 2.6): writers share the rows of the runs they publish
as they save, so a machine that has never listed a font on object storage reads a few
objects instead of every ref and manifest, even when nobody ever listed the font before
(only machines that list write snapshots, ``listings.py``; trainers only save).

A writer keeps the rows of the runs it published (:class:`PendingRows`) and writes them
as one segment ``.listings/<font>/segments/<level>-<time>-<digest>`` every
:data:`FLUSH_RUNS` runs of a font, and when its Store closes or its process exits.
Segments are merged as an LSM tree's files are: a writer that finds :data:`FAN_IN`
segments of one level merges them into one of the next level, then removes them. So a
font of n runs has O(log n) segments, and a row is rewritten O(log n) times.

A row is a snapshot's row without the token (``[run_id, *listings.row_fields(info)]``).
Refs stay the truth: a reader takes a row for a run only when its own listing of the ref
shows that the ref holds the manifest address the row names (``Backend.holds``: the ETag
of a single PUT is the MD5 of its bytes), after checking the row by the manifest rules.
A segment is verified against its name and decoded within bounds. A lost, damaged or
twice-merged segment only makes a listing read more refs: never a wrong answer.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

from . import listings
from .backends import Backend
from .codec import encode, hash_bytes
from .errors import FormatError, StoreError
from .layout import listings_folder, segment_at, segment_key, segments_folder
from .listings import ROW_FIELDS, checked_info, row_fields
from .names import Digest, utc_now
from .refs import ref_content
from .runinfo import UNREADABLE, RunInfo

FORMAT = "aoe-listing-segment"
FLUSH_RUNS = 16
"""Runs of a font a writer publishes before it writes them as a segment."""
FAN_IN = 8
"""Segments of one level merged into one of the next."""
MAX_LEVEL = 9
PARALLEL_READS = 8
Row = list[Any]


def level_for(rows: int) -> int:
    """The level whose segments hold about this many rows (:data:`FLUSH_RUNS` times
    :data:`FAN_IN` to the level): a big segment (a push's) is not merged again soon."""
    level = 0
    while level < MAX_LEVEL and rows >= FLUSH_RUNS * FAN_IN ** (level + 1):
        level += 1
    return level


def rows_of(infos: Iterable[RunInfo]) -> list[Row]:
    return [[info.run_id, *row_fields(info)] for info in infos if info.status != UNREADABLE]


def write(backend: Backend, font_id: str, rows: Sequence[Row], level: int | None = None) -> str:
    """Write ``rows`` as one segment (create-only); returns its key."""
    content = listings.file_content(FORMAT, font_id, list(rows))
    key = segment_key(font_id, level_for(len(rows)) if level is None else level, utc_now(), hash_bytes(content))
    backend.write(key, encode(content), exclusive=True)
    return key


def keys_among(keys: Iterable[str]) -> list[str]:
    """The segment keys among a listing of ``.listings/<font>/``, oldest first."""
    return sorted((key for key in keys if segment_at(key) is not None), key=lambda k: segment_at(k)[1])  # type: ignore[index]


def read(backend: Backend, key: str, font_id: str) -> list[Row]:
    """One segment's rows, verified against its name, each ``[run id, fields...]`` with
    its fields not yet checked (:func:`checked`); FormatError if damaged or malformed."""
    where = segment_at(key)
    if where is None:
        raise FormatError(f"{key} is not a listing segment's name")
    rows = listings.file_rows(backend, key, where[2], FORMAT, font_id)
    if not all(isinstance(row, list) and row and isinstance(row[0], str) for row in rows):
        raise FormatError(f"listing segment {key} holds a row that is not [run id, fields...]; "
                          "run `aoe store fsck --repair`")
    return rows


def read_all(backend: Backend, font_id: str, keys: Sequence[str]) -> dict[str, list[Row]]:
    """The rows of these segments (read several at once), by key; a segment removed
    meanwhile (merged by a writer) or damaged is left out: its runs are read from refs."""
    def one(key: str) -> list[Row] | None:
        try:
            return read(backend, key, font_id)
        except StoreError:  # gone, damaged, or not answered now
            return None

    if len(keys) > 1 and backend.round_trips:
        from concurrent.futures import ThreadPoolExecutor  # here: 5 ms of every start otherwise

        with ThreadPoolExecutor(min(PARALLEL_READS, len(keys))) as pool:
            found = list(pool.map(one, keys))
    else:
        found = [one(key) for key in keys]
    return {key: rows for key, rows in zip(keys, found) if rows is not None}


def checked(font_id: str, row: Row) -> RunInfo | None:
    """A row's RunInfo, checked by the manifest rules; None for a row that breaks one."""
    try:
        return checked_info(font_id, row[0], row[1:])
    except ValueError:
        return None


def by_run(segments: Iterable[list[Row]]) -> dict[str, list[Row]]:
    """Rows by run id, in the order given (newest segment first, when given so)."""
    rows: dict[str, list[Row]] = defaultdict(list)
    for segment in segments:
        for row in segment:
            rows[row[0]].append(row)
    return rows


def merged(segments: Iterable[list[Row]]) -> list[Row]:
    """The rows of several segments, each distinct row once."""
    seen: dict[bytes, Row] = {}
    for segment in segments:
        for row in segment:
            seen.setdefault(msgpack.packb(row, use_bin_type=True), row)
    return list(seen.values())


def compact(backend: Backend, font_id: str, keys: Sequence[str]) -> None:
    """Merge each level holding :data:`FAN_IN` or more of ``keys`` (a listing of the
    font's segments) into one segment of the next level, written before its inputs are
    removed: a crash or a second merger only leaves rows twice (harmless). The merger
    holds the font's merge lease, and lists the segments again under it: writers that
    found the same level full at once would each copy it (4 writers left 3.4 rows a run)."""
    if not _full_levels(keys):
        return
    with backend.lock(f"merge-{font_id}", wait=False) as mine:
        if not mine:
            return  # another writer is merging this font's segments now
        levels = _full_levels(list(backend.list(segments_folder(font_id))))
        for level in range(MAX_LEVEL):
            group = levels.get(level, [])
            if len(group) < FAN_IN:
                continue
            found = read_all(backend, font_id, group)
            levels[level + 1].append(write(backend, font_id, merged(found.values()), level + 1))
            for key in found:  # not one that could not be read now: it may be well
                try:
                    backend.delete(key)
                except StoreError:
                    pass  # another merger removed it, or the next merge will


def _full_levels(keys: Sequence[str]) -> dict[int, list[str]]:
    """Segment keys by level (oldest first), or {} when no level holds :data:`FAN_IN`."""
    levels: dict[int, list[str]] = defaultdict(list)
    for key in keys_among(keys):
        levels[segment_at(key)[0]].append(key)  # type: ignore[index]
    return levels if any(len(group) >= FAN_IN for group in levels.values()) else {}


def prune(backend: Backend, font_id: str, keys: Sequence[str], covered: dict[str, str], listed_at: datetime) -> None:
    """Remove the segments a snapshot just written makes useless: each of whose rows is
    in it (``covered``: run id -> manifest address) or is of a run that was not listed
    and older than the listing (by more than clocks may disagree: a row of a run saved
    after the listing stays)."""
    cutoff = (listed_at - timedelta(minutes=10)).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for key, rows in read_all(backend, font_id, keys_among(keys)).items():
        old = segment_at(key)[1] < cutoff  # type: ignore[index]
        if all(covered.get(row[0], "") == _manifest(row) or (old and row[0] not in covered) for row in rows):
            try:
                backend.delete(key)
            except StoreError:
                pass


def share(backend: Backend, font_id: str, rows: list[tuple[str, RunInfo]], listed_at: datetime | None) -> None:
    """Write a listing snapshot of these runs (each with its ref's token as listed at
    ``listed_at``), then remove the segments it makes useless (:func:`prune`; none when
    the listing's time is unknown). A store that refuses (read-only) or a failed write
    costs nothing but this try."""
    try:
        listings.write(backend, font_id, rows)
        if listed_at is not None:
            prune(backend, font_id, list(backend.list(segments_folder(font_id))),
                  {info.run_id: str(info.manifest) for _, info in rows}, listed_at)
    except StoreError:
        pass


def remove_untrue(backend: Backend, font_id: str, truth: Mapping[str, RunInfo]) -> list[str]:
    """Remove the font's segments that cannot be read, hold a row that breaks a rule, or
    say of a run what ``truth`` (the runs as their manifests say) does not; the keys
    removed (``aoe store reindex``)."""
    removed = []
    for key in keys_among(backend.list(segments_folder(font_id))):
        try:
            infos = [checked(font_id, row) for row in read(backend, key, font_id)]
            untrue = any(info is None or listings.disagreements({info.run_id: ("", info)}, truth) for info in infos)
        except FormatError:
            untrue = True
        except StoreError:
            continue  # merged away meanwhile, or not answered now
        if untrue:
            try:
                backend.delete(key)
                removed.append(key)
            except StoreError:
                pass
    return removed


_MANIFEST_AT = 1 + ROW_FIELDS.index("manifest")


def _manifest(row: Row) -> Any:
    return row[_MANIFEST_AT] if len(row) > _MANIFEST_AT else None


class SharedListing:
    """A font's shared listing as it is now: its newest snapshot's rows and its segments'
    rows (read when first needed), for a reader to take the rows of refs it listed
    (:meth:`rows_for`)."""

    def __init__(self, backend: Backend, font_id: str) -> None:
        self.backend = backend
        self.font_id = font_id
        self._keys = list(backend.list(listings_folder(font_id)))
        self.snapshot = listings.newest(backend, font_id, self._keys)
        self._segments: dict[str, list[Row]] | None = None

    def segment_rows(self) -> dict[str, list[Row]]:
        """Each run's segment rows, newest segment first (read on first use)."""
        if self._segments is None:
            keys = keys_among(self._keys)
            self._segments = by_run(reversed(list(read_all(self.backend, self.font_id, keys).values()))) \
                if keys else {}
        return self._segments

    def rows_for(self, tokens: Mapping[str, str]) -> dict[str, RunInfo]:
        """What a reader takes for refs it listed (run id -> token): the snapshot's row of a
        run, else a segment's (newest first), each only for a ref whose token is the row's
        or shows it holds the row's manifest address; every other run is read from its ref."""
        def names(token: str, info: RunInfo) -> bool:
            return self.backend.holds(token, ref_content(Digest(info.manifest)))

        found = {run_id: row[1] for run_id, row in self.snapshot.items()
                 if run_id in tokens and (row[0] == tokens[run_id] or names(tokens[run_id], row[1]))}
        if len(found) == len(tokens) or not keys_among(self._keys):
            return found
        candidates = self.segment_rows()
        for run_id in tokens.keys() - found.keys():
            for row in candidates.get(run_id, ()):
                info = checked(self.font_id, row)
                if info is not None and names(tokens[run_id], info):
                    found[run_id] = info
                    break
        return found


class PendingRows:
    """The rows of runs a Store published on object storage, not yet in a segment: one
    segment per :data:`FLUSH_RUNS` of a font, the rest when the Store is closed or
    collected, or the process exits (a process killed first loses only this help:
    readers read those refs)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._rows: dict[str, list[RunInfo]] = {}
        self._lock = threading.Lock()
        weakref.finalize(self, _share, backend, self._rows)

    def add(self, infos: Iterable[RunInfo]) -> None:
        """Keep these runs' rows; write them once a font has :data:`FLUSH_RUNS`."""
        full = []
        with self._lock:
            for info in infos:
                rows = self._rows.setdefault(info.font_id, [])
                rows.append(info)
                if len(rows) == FLUSH_RUNS:
                    full.append(info.font_id)
        for font_id in full:
            self.flush(font_id)

    def flush(self, font_id: str | None = None) -> None:
        """Write the rows kept (of one font, or all) as segments, then merge what a level
        holds too many of."""
        with self._lock:
            fonts = [font_id] if font_id is not None else list(self._rows)
            taken = {font: self._rows.pop(font) for font in fonts if self._rows.get(font)}
        _share(self.backend, taken)


def _share(backend: Backend, rows: dict[str, list[RunInfo]]) -> None:
    """Write each font's rows as a segment, then merge; a failed write costs only this help."""
    for font_id, infos in list(rows.items()):
        try:
            write(backend, font_id, rows_of(infos))
            compact(backend, font_id, list(backend.list(segments_folder(font_id))))
        except StoreError:
            pass
    rows.clear()
