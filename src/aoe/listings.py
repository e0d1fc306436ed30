"""Listing snapshots: a font's catalog rows, shared through the store, so a machine that
has never listed a font on object storage reads one file instead of every ref and
manifest (git's packed-refs, restic's index files).

A snapshot ``.listings/<font>/<time>-<digest>`` holds, for each run of the font when it
was written, the run's ref token (what a folder listing tells of the ref: on S3 its
ETag, Last-Modified and size) and its RunInfo. Refs stay the truth: a reader takes a
row only for a ref whose token, in its own listing of the refs, is the one the row was
written for; every other ref is read as before. A snapshot is untrusted input like any
file of a store: it is named by the BLAKE3 of its content and verified against it,
decoded within bounds, and each row is checked by the rules a manifest's fields obey.

Writers: a catalog that had to read many runs from their refs and manifests writes a
snapshot afterwards (when the store is writable), and keeps the newest few.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import msgpack

from .backends import Backend
from .codec import decode, encode, hash_bytes
from .errors import FormatError, InvalidInputError, InvalidNameError, NotFoundError, StoreError
from .layout import listing_at, listing_key, listings_folder
from .manifests import PARENT_KEYS, BadManifest, Manifest, ParentRun, check
from .names import Digest, parse_digest, parse_time, utc_now
from .runinfo import ASSETS, UNREADABLE, RunInfo

FORMAT = "aoe-listing"
VERSION = 1
KEEP = 2
"""Snapshots of a font kept: the newest, and the one before for readers that listed it."""
MAX_RUNS = 1_000_000


def write(backend: Backend, font_id: str, runs: Iterable[tuple[str, RunInfo]]) -> str:
    """Write a snapshot of ``runs`` (ref token, RunInfo) of a font; then remove all but the
    newest :data:`KEEP`, and any named in the future (:func:`by_time`). Returns its key.
    Unreadable runs are left out (read again)."""
    rows = [[info.run_id, token, *row_fields(info)] for token, info in runs if info.status != UNREADABLE]
    content = file_content(FORMAT, font_id, rows)
    key = listing_key(font_id, utc_now(), hash_bytes(content))
    backend.write(key, encode(content), exclusive=True)
    usable, future = by_time(_keys(backend, font_id))
    for old in usable[:-KEEP] + future:
        try:
            backend.delete(old)
        except StoreError:
            pass  # another writer removed it first, or it will go next time
    return key


def newest(backend: Backend, font_id: str, keys: Iterable[str] | None = None) -> dict[str, tuple[str, RunInfo]]:
    """The runs of the font's newest snapshot not named in the future (run id -> ref
    token, RunInfo), every row checked; {} when there is none. A snapshot that cannot be
    read or breaks a rule is passed over for the one before it (and fsck reports it).
    ``keys``: a listing of the font's ``.listings/`` folder the caller made already."""
    found = _keys(backend, font_id) if keys is None else [key for key in keys if listing_at(key) is not None]
    for key in reversed(by_time(found)[0]):
        try:
            return read(backend, key, font_id)
        except (NotFoundError, FormatError):  # removed by a newer writer since it was listed, or bad
            continue
    return {}


FUTURE = timedelta(minutes=10)
"""A snapshot named more than this after the reader's clock is never used, and writers
remove it: a name from the far future would stay "the newest" for ever, keep honest
snapshots out (they keep the newest two), and carry whatever it says to every new machine.
Ten minutes covers clocks that disagree; a writer whose clock runs further ahead only
makes others read refs until the time comes (slower, never wrong)."""


def by_time(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """Snapshot keys in time order, those a reader may use (named at most :data:`FUTURE`
    after now), and those named later."""
    latest = (utc_now() + FUTURE).strftime("%Y%m%dT%H%M%S.%fZ")
    named = sorted((where[0], key) for key in keys if (where := listing_at(key)) is not None)
    return [key for moment, key in named if moment <= latest], [key for moment, key in named if moment > latest]


def disagreements(rows: Mapping[str, tuple[str, RunInfo]], truth: Mapping[str, RunInfo]) -> list[str]:
    """The runs whose row says other things (names, tags, metrics, any field) than the
    run as read from the manifest the row names: ``truth`` (run id -> RunInfo), for the
    runs whose manifest it holds. A snapshot with such a row lies: a writer with the
    bucket's keys wrote it, or a buggy one."""
    return sorted(run_id for run_id, (_, info) in rows.items()
                  if (known := truth.get(run_id)) is not None and known.manifest == info.manifest
                  and msgpack.packb(row_fields(known)) != msgpack.packb(row_fields(info)))


def read(backend: Backend, key: str, font_id: str) -> dict[str, tuple[str, RunInfo]]:
    """One snapshot, verified against its name and checked row by row (FormatError)."""
    where = listing_at(key)
    if where is None:
        raise FormatError(f"{key} is not a listing snapshot's name")
    rows = file_rows(backend, key, where[1], FORMAT, font_id)
    try:
        return {row[0]: (row[1], _checked(font_id, row)) for row in rows}
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise FormatError(f"listing snapshot {key} is malformed ({exc}); run `aoe store fsck --repair`") from None


def file_content(format_name: str, font_id: str, rows: list[Any]) -> bytes:
    """The content of a listing file (a snapshot, or a segment: ``format_name``): a
    msgpack map of its format, version and font, and its rows."""
    content: bytes = msgpack.packb({"format": format_name, "version": VERSION, "font_id": font_id, "runs": rows},
                                   use_bin_type=True)
    return content


def file_rows(backend: Backend, key: str, digest: Digest, format_name: str, font_id: str) -> list[Any]:
    """The rows of a listing file, verified against its address and decoded within
    bounds; FormatError when it is damaged or not a file of this format, version and
    font (NotFoundError passes: removed since it was listed)."""
    what = "listing snapshot" if format_name == FORMAT else "listing segment"
    try:
        content = bytes(decode(backend.read(key), digest))
        data = msgpack.unpackb(content, raw=False, strict_map_key=True, max_array_len=MAX_RUNS)
    except NotFoundError:
        raise
    except (StoreError, ValueError, msgpack.ExtraData) as exc:
        raise FormatError(f"{what} {key} is damaged ({exc}); run `aoe store fsck --repair`") from None
    if not isinstance(data, dict) or data.get("format") != format_name or data.get("font_id") != font_id:
        raise FormatError(f"{key} is not a {what} of {font_id}; run `aoe store fsck --repair`")
    if data.get("version") != VERSION or not isinstance(data.get("runs"), list):
        raise FormatError(f"{what} {key} is not of version {VERSION}; run `aoe store fsck --repair`")
    return data["runs"]  # type: ignore[no-any-return]


def remove_untrue(backend: Backend, font_id: str, truth: Mapping[str, RunInfo]) -> list[str]:
    """Remove the font's snapshots that are named in the future, cannot be read, or say
    of a run what ``truth`` (the runs as their manifests say, by run id) does not; the
    keys removed. (``aoe store reindex``: a snapshot a forger wrote stays no longer.)"""
    usable, future = by_time(_keys(backend, font_id))
    removed = []
    for key in future + usable:
        try:
            untrue = key in future or bool(disagreements(read(backend, key, font_id), truth))
        except NotFoundError:
            continue
        except FormatError:
            untrue = True
        if untrue:
            try:
                backend.delete(key)
                removed.append(key)
            except StoreError:
                pass  # removed meanwhile
    return removed


def _keys(backend: Backend, font_id: str) -> list[str]:
    return [key for key in backend.list(listings_folder(font_id)) if listing_at(key) is not None]


ROW_FIELDS = ("status", "saved_at", "started_at", "ended_at", "params", "name", "description", "tags",
        "weights_version", "feedback_schema", "manifest", "assets", "glyphs", "extras", "parent", "metrics",
        "parents")
"""A row: run id, ref token, then these RunInfo fields (times as text, tuples as arrays);
``parents`` (revision 2.5) may be absent, in rows older writers wrote."""


def row_fields(info: RunInfo) -> list[Any]:
    """A run's fields as a row holds them (after its run id and, in a snapshot, token)."""
    data = info.to_dict()
    return [data[name] for name in ROW_FIELDS]


def _checked(font_id: str, row: Any) -> RunInfo:
    """A snapshot row's RunInfo (see :func:`checked_info`)."""
    if not isinstance(row, list) or len(row) < 2 or not isinstance(row[1], str):
        raise ValueError("a row is [run id, token, fields...]")
    return checked_info(font_id, row[0], row[2:])


def checked_info(font_id: str, run_id: Any, fields: Any) -> RunInfo:
    """The RunInfo of a row's fields (:func:`row_fields`), checked by the rules of a
    manifest (the same code); ValueError for a row that breaks one."""
    if not isinstance(fields, list) or len(fields) not in (len(ROW_FIELDS) - 1, len(ROW_FIELDS)):
        raise ValueError(f"a row of run {run_id!r} does not hold the fields of a run")
    data = {"parents": [], **dict(zip(ROW_FIELDS, fields))}
    if not isinstance(data["parents"], list) or not all(isinstance(p, dict) and p.keys() == PARENT_KEYS
                                                        for p in data["parents"]):
        raise ValueError(f"a row of run {run_id!r} has parents that are not maps of a run")
    if not all(isinstance(data[k], list) for k in ("tags", "glyphs", "extras", "assets")):
        raise ValueError(f"a row of run {run_id!r} has tags, glyphs, extras or assets that are not arrays")
    glyphs, extras, assets = (tuple(data[k]) for k in ("glyphs", "extras", "assets"))
    try:
        manifest = check(Manifest(
            font_id=font_id, run_id=run_id, status=data["status"], saved_at=data["saved_at"],
            started_at=data["started_at"], ended_at=data["ended_at"], params=data["params"], name=data["name"],
            description=data["description"], tags=tuple(data["tags"]), weights_version=data["weights_version"],
            feedback_schema=data["feedback_schema"], parent=data["parent"], metrics=data["metrics"],
            glyphs=dict.fromkeys(glyphs), extras=dict.fromkeys(extras),  # type: ignore[arg-type]  # names only
            parents=tuple(ParentRun(**p) for p in data["parents"])))
        if manifest.run_id == "" or not set(assets) <= set(ASSETS) or len(set(assets)) != len(assets):
            raise ValueError(f"a row of run {run_id!r} names unknown assets or no run")
        digest = parse_digest(data["manifest"])
    except (BadManifest, InvalidNameError, InvalidInputError) as exc:
        raise ValueError(f"run {run_id!r}: {exc}") from None
    return RunInfo(font_id, manifest.run_id, manifest.status, parse_time(manifest.saved_at),  # type: ignore[arg-type]
                   parse_time(manifest.started_at), parse_time(manifest.ended_at), manifest.params, manifest.name,
                   manifest.description, manifest.tags, manifest.weights_version, manifest.feedback_schema, digest,
                   assets, glyphs, extras, manifest.parent, manifest.metrics or {},
                   tuple(p.to_dict() for p in manifest.parents))
