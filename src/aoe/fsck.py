"""fsck: find every kind of damage in a store, name what it affects, repair what is safe.

A structural pass (the default) reads every ref, verifies every manifest, and checks
that every object a run needs exists. ``read_data`` also decodes and re-hashes every
object (or a deterministic share of them, ``subset=(n, m)``, so a big store can be
checked a part per night). Every finding is reported; nothing stops at the first.

Repair touches only what is safe to touch: leftover temporary files, markers of saves
whose process is gone, refs whose manifest is gone (recorded in the trash first), and
corrupt objects, which are moved aside to ``.damaged/`` so that storing the same
content again heals every run that needs it.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from . import reachability, segments
from .errors import (
    CorruptObjectError,
    FormatError,
    InvalidNameError,
    MismatchedManifestError,
    NewerFormatError,
    NotFoundError,
    StoreError,
)
from .findings import ERROR, INFO, WARNING, Report, runs_text
from .layout import (
    ALIAS_HINT,
    DAMAGED,
    FONTS,
    INFLIGHT,
    OBJECTS,
    REF_CHANGES,
    alias_folder,
    alias_move_at,
    alias_move_key,
    aliases_folder,
    claim_key,
    damaged_key,
    digest_at,
    name_in_folder,
    object_key,
    pending_key,
    ref_changes_key,
    run_id_at,
    run_key,
    runs_folder,
)
from .listing_checks import check_listings
from .manifests import unpack
from .names import Digest, check_font_id, font_number, format_time, parse_digest, utc_now
from .refs import TrashRecord
from .runinfo import RunInfo
from .store import Store
from .transaction import marker_is_stale

TEMP_MIN_AGE = 3600.0
"""Temporary files younger than this may be writes in progress: repair leaves them."""


def fsck(
    store: Store,
    *,
    read_data: bool = False,
    subset: tuple[int, int] | None = None,
    repair: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check a store; see the module docstring. ``progress`` gets a count per object."""
    store.require_root()
    report = Report()
    needed: dict[Digest, list[str]] = defaultdict(list)  # object -> runs that need it
    heads: dict[str, dict[str, RunInfo]] = defaultdict(dict)  # font -> run -> the run as its manifest says
    listed = _check_refs(store, report, needed, heads)
    _check_trash(store, report, needed)
    present = _check_objects(store, report, needed, read_data, subset, progress)
    for digest in sorted(set(needed) - present):
        runs = tuple(sorted(set(needed[digest])))
        if store.backend.exists(pending_key(digest)):
            if all(run.endswith("(deleted)") for run in runs):
                continue  # a deleted run's objects, set aside by gc's first phase: restorable until its second
            report.add(
                WARNING, "set-aside-object",
                f"object {digest} was set aside by gc's first phase but is needed by {runs_text(runs)} "
                "(a save that reused it finished after gc looked); reads find it there, and the next "
                "`aoe store gc` puts it back",
                object=digest, runs=runs,
            )
            continue
        report.add(
            ERROR, "missing-object",
            f"object {digest} is missing; it is needed by {runs_text(runs)}. Storing the same "
            "content again heals them (save or put the original data); otherwise restore "
            f"{object_key(digest)} from a backup",
            object=digest, runs=runs,
        )
    _check_leftovers(store, report, repair)
    check_listings(store, report, repair, heads)
    _check_catalog(store, report, repair)
    if repair:
        _repair(store, report)
    for font_id, (listed_at, tokens) in listed.items():  # the next machine lists from these
        segments.share(store.backend, font_id, [(tokens[r], info) for r, info in heads[font_id].items() if r in tokens],
                       listed_at)
    return report


def _check_catalog(store: Store, report: Report, repair: bool) -> None:
    """The catalog index is a cache: rows may be behind the refs (a listing catches up),
    but a row that claims to be current and names another manifest means it is damaged.
    An index inside the store (aoe 0.5 kept it there) is no longer read: a notice."""
    old_index = list(store.backend.list(OLD_CATALOG)) if store.backend.folders else []
    if old_index:
        report.add(INFO, "old-index", f"{OLD_CATALOG}/ is the catalog index aoe 0.5 kept inside the store; aoe "
                   "no longer reads it (the index lives in your cache folder): `aoe store fsck --repair` removes it",
                   ref=OLD_CATALOG)
        if repair:
            for key in old_index:
                store.backend.delete(key)
            report.repaired.append(f"removed the old catalog index {OLD_CATALOG}/")
    try:
        fonts = [f for f in store.refs.fonts() if store.refs.has_runs_folder(f)]
    except FormatError:  # a malformed claim, reported already; the index can wait for its fix
        return
    try:
        wrong = store.catalog.mismatches(fonts)
    except sqlite3.Error as exc:
        wrong, problem = [], f"the catalog index cannot be read ({exc})"
    else:
        problem = f"the catalog index disagrees with the refs of {runs_text(wrong)}" if wrong else ""
    if not problem:
        return
    report.add(WARNING, "stale-index", f"{problem}; listings may be wrong until `aoe store reindex` "
               "(or `aoe store fsck --repair`) rebuilds it from the refs", ref=".catalog", runs=tuple(wrong))
    if repair:
        store.catalog.close()
        store.catalog.rebuild()
        report.repaired.append("rebuilt the catalog index")


def _check_refs(store: Store, report: Report, needed: dict[Digest, list[str]],
                heads: dict[str, dict[str, RunInfo]]) -> dict[str, tuple[datetime, dict[str, str]]]:
    """Check every font's refs and the runs they name, keeping each run as its manifest
    says in ``heads``. On object storage, returns each font's refs as listed (when, and
    their tokens) before they were read, for a snapshot of what fsck read: listed before,
    so a row never pairs a ref's newer token with what an older manifest said."""
    listed: dict[str, tuple[datetime, dict[str, str]]] = {}
    for key in store.backend.list(FONTS):
        try:
            font_id = check_font_id(store.backend.read(key).decode("utf-8", "replace").strip())
            if claim_key(font_id) != key:
                raise InvalidNameError(font_id)
        except (InvalidNameError, NotFoundError):
            report.add(ERROR, "malformed-claim",
                       f"font claim {key} does not hold a valid font id of its number; fix its "
                       "content by hand (e.g. '1-fruity') or remove it", ref=key)
            continue
        report.fonts += 1
        if not store.refs.has_runs_folder(font_id):
            report.add(ERROR, "missing-runs-folder",
                       f"the folder {font_id}/runs is missing (removed outside aoe?): the runs of "
                       f"{font_id} are lost unless it is restored from a backup; the next save "
                       "recreates it", ref=runs_folder(font_id))
            continue
        if store.backend.round_trips:
            listed[font_id] = (utc_now(), store.backend.list_versions(runs_folder(font_id)))
        for ref_key in store.backend.list(runs_folder(font_id)):
            _check_run(store, report, needed, font_id, ref_key, heads[font_id])
        _check_change_note(store, report, font_id)
        _check_aliases(store, report, font_id, set(store.refs.runs(font_id)))
    return listed


def _check_aliases(store: Store, report: Report, font_id: str, runs: set[str]) -> None:
    """Every move of every alias reads as what it says; the newest points at a run that is
    there; the moves are numbered without a gap (aoe never removes one)."""
    moves: dict[str, list[int]] = defaultdict(list)
    for key in store.backend.list(aliases_folder(font_id)):
        place = alias_move_at(key)
        if place is None and name_in_folder(key) == ALIAS_HINT:
            continue  # the newest move's number, a hint readers verify
        if place is None:
            report.add(WARNING, "unknown-file", f"{key} is not an alias move; move it out of {font_id}/aliases/",
                       ref=key)
        else:
            moves[place[0]].append(place[1])
    for name, numbers in sorted(moves.items()):
        numbers.sort()
        if numbers != list(range(1, len(numbers) + 1)):
            report.add(WARNING, "alias-history-gap", f"alias {font_id}@{name} lacks some of moves 1 to "
                       f"{numbers[-1]} (removed outside aoe?): its history has a gap", ref=alias_folder(font_id, name))
        for number in numbers:
            try:
                move = store.aliases.read(font_id, name, number)
            except (FormatError, NotFoundError) as exc:
                newest = number == numbers[-1]
                report.add(ERROR if newest else WARNING, "malformed-alias-move",
                           f"{exc}" + (": the alias cannot be resolved, and no run of the font is deleted or "
                                       "forgotten without --force; set it again with `aoe store alias`"
                                       if newest else ": its history has a move that cannot be read"),
                           ref=alias_move_key(font_id, name, number))
                continue
            if number == numbers[-1] and move.run_id is not None and move.run_id not in runs:
                report.add(WARNING, "dangling-alias",
                           f"alias {font_id}@{name} points at run {move.run_id}, which is not there (deleted with "
                           f"--force?): `aoe store restore {font_id} {move.run_id}` brings it back (a gc keeps it "
                           "restorable while the alias points at it), or move the alias",
                           ref=alias_move_key(font_id, name, number), runs=(f"{font_id}/{move.run_id}",))


def _check_change_note(store: Store, report: Report, font_id: str) -> None:
    """The font's change note is a small regular file, or absent."""
    key = ref_changes_key(font_id)
    try:
        store.backend.read(key)
    except NotFoundError:
        return
    except FormatError as exc:
        report.add(WARNING, "bad-change-note",
                   f"{key} is not the small file aoe writes there ({exc}): listings of {font_id} check every ref "
                   f"each time (slower, never wrong) and, if it is a folder, amending, tagging or deleting its runs "
                   f"fails: `aoe store fsck --repair` removes a file or symlink; a folder, remove by hand",
                   ref=key)


def _check_run(store: Store, report: Report, needed: dict[Digest, list[str]], font_id: str, key: str,
               heads: dict[str, RunInfo]) -> None:
    run_id = run_id_at(key)
    if run_id is None and name_in_folder(key) == REF_CHANGES:
        return  # the font's change note (docs/format.md, Names 6)
    if run_id is None:
        report.add(WARNING, "unknown-file", f"{key} is not a run ref (not a run id); move it out of runs/",
                   ref=key)
        return
    report.runs += 1
    where = f"{font_id}/{run_id}"
    run = reachability.history(store.refs, store.objects, font_id, run_id)
    for digest in run.digests():
        needed[digest].append(where)
    if run.problem is not None:
        _report_unreadable(report, run, key, where)
    head = run.head
    if head is not None:
        try:
            info = heads[run_id] = RunInfo.read(head, run.versions[0][0], store.objects)
        except StoreError:  # a feedback that cannot be read now: its object is reported
            info = RunInfo.from_manifest(head, run.versions[0][0])
        if info.missing:
            report.add(WARNING, "incomplete-run",
                       f"completed run {where} has no {', '.join(info.missing)}; it still loads for what "
                       f"it has. Add what is missing with `aoe store amend {font_id} {run_id} ...`",
                       ref=key, runs=(where,))


def _report_unreadable(report: Report, run: reachability.RunHistory, key: str, where: str) -> None:
    """The finding for a run the walk could not read whole, by what stopped it."""
    problem, digest = run.problem, run.at
    if digest is None:
        report.add(ERROR, "malformed-ref",
                   f"run ref {key} does not hold a manifest id; the run cannot be loaded. Restore the file "
                   f"from a backup, or delete the run with `aoe store rm {run.font_id} {run.run_id}`",
                   ref=key, runs=(where,))
    elif isinstance(problem, NotFoundError):
        if not run.versions:  # an older version that is missing is reported as a missing object
            report.add(ERROR, "dangling-ref",
                       f"run ref {key} names manifest {digest}, which is missing: the run is gone. Restore "
                       "the object from a backup, or drop the ref with `aoe store fsck --repair`",
                       object=digest, ref=key, runs=(where,))
    elif isinstance(problem, CorruptObjectError):
        report.add(ERROR, "corrupt-object",
                   f"object {digest} is corrupt: {problem.why}; it is a manifest of {where}, which cannot be "
                   "loaded. Restore the object from a backup, or `aoe store fsck --repair` moves it aside",
                   object=digest, ref=key, runs=(where,))
    elif isinstance(problem, MismatchedManifestError):
        report.add(ERROR, "mismatched-manifest", f"run ref {key}: {problem}", object=digest, ref=key, runs=(where,))
    else:
        kind = "unknown-version" if isinstance(problem, NewerFormatError) else "malformed-manifest"
        report.add(ERROR, kind, f"manifest {digest} of {where}: {problem}", object=digest, ref=key, runs=(where,))


def _check_trash(store: Store, report: Report, needed: dict[Digest, list[str]]) -> None:
    """Deleted runs keep their objects until a gc; they are not orphans meanwhile. A
    record of a run or font that is still there is a deletion that was interrupted."""
    try:
        records = store.refs.trashed()
    except FormatError as exc:
        report.add(WARNING, "malformed-trash", f"{exc}", ref=".trash")
        return
    for record in records:
        if _still_there(store, record):
            what = f"run {record.font_id}/{record.run_id}" if record.run_id else f"font {record.font_id}"
            report.add(WARNING, "interrupted-delete",
                       f"{what} is listed as deleted but is still there (a deletion that stopped midway); "
                       "`aoe store fsck --repair` drops the record and keeps it, `aoe store rm` deletes it",
                       ref=record.key, runs=(f"{record.font_id}/{record.run_id}",) if record.run_id else ())
        if record.manifest is None or record.purged_at:
            continue
        holder = f"{record.font_id}/{record.run_id} (deleted)"
        try:
            manifest = unpack(store.objects.get(record.manifest))
        except StoreError as exc:  # nothing of it to keep, but say so: restoring it will fail
            report.add(WARNING, "unrestorable-deleted-run",
                       f"deleted run {record.font_id}/{record.run_id} can no longer be restored: its manifest "
                       f"{record.manifest} cannot be read ({exc}); a gc will drop what is left of it",
                       object=record.manifest, ref=record.key, runs=(f"{record.font_id}/{record.run_id}",))
            continue
        for digest in (record.manifest, *manifest.digests()):
            needed.setdefault(digest, [])
            if holder not in needed[digest]:
                needed[digest].append(holder)


def _still_there(store: Store, record: TrashRecord) -> bool:
    if record.run_id is None:
        return store.refs.font_with_number(font_number(record.font_id)) == record.font_id
    return store.backend.exists(run_key(record.font_id, record.run_id))


def _check_objects(
    store: Store,
    report: Report,
    needed: dict[Digest, list[str]],
    read_data: bool,
    subset: tuple[int, int] | None,
    progress: Callable[[int], None] | None,
) -> set[Digest]:
    present: set[Digest] = set()
    to_read: list[Digest] = []
    sizes: list[int] = []
    for key in store.backend.list(OBJECTS):
        digest = digest_at(key)
        if digest is None:
            report.add(WARNING, "stray-file", f"{key} is not an object of this store; move it out of .objects/",
                       ref=key)
            continue
        present.add(digest)
        report.objects += 1
        if read_data and (subset is None or int(digest[:8], 16) % subset[1] == subset[0] - 1):
            to_read.append(digest)
            if store.objects.inline_below:  # sizes decide what runs inline; remote: nothing does
                stat = store.backend.stat(key)
                sizes.append(stat[0] if stat else 0)
        elif progress:
            progress(1)
        if digest not in needed:
            report.add(INFO, "orphan-object",
                       f"object {digest} is not needed by any run; `aoe store gc` removes it",
                       object=digest)

    def verify(digest: Digest) -> tuple[Digest, int, str | None]:
        try:
            return digest, store.objects.verify(digest, fresh=True), None
        except CorruptObjectError as exc:
            return digest, 0, f"object {digest} is corrupt: {exc.why}"
        except StoreError as exc:  # removed meanwhile, or unreadable
            return digest, 0, str(exc)

    known = {f.object for f in report.findings if f.kind == "corrupt-object"}  # manifests, seen already
    for digest, size, problem in store.objects.parallel(verify, to_read, sizes or None):
        report.objects_read += 1
        report.bytes_read += size
        if progress:
            progress(1)
        if problem is not None and digest not in known:
            runs = tuple(sorted(set(needed.get(digest, ()))))
            report.add(ERROR, "corrupt-object",
                       f"{problem}; it is needed by {runs_text(runs)}. `aoe store fsck --repair` "
                       "moves it aside so that storing the same content again heals those runs",
                       object=digest, runs=runs)
    return present


def _check_leftovers(store: Store, report: Report, repair: bool) -> None:
    now = time.time()
    for name, mtime in store.backend.temp_files():
        age = now - mtime
        old = age >= TEMP_MIN_AGE
        report.add(INFO, "temp-file",
                   f"{name} is left from an interrupted write ({age / 60:.0f} min old); "
                   + ("`aoe store fsck --repair` removes it" if old else "it may be a write in progress"),
                   ref=name)
        if repair and old:
            store.backend.remove_temp(name)
            report.repaired.append(f"removed temporary file {name}")
    for key in list(store.backend.list(INFLIGHT)):
        if marker_is_stale(store.backend, key):
            report.add(INFO, "stale-save-marker",
                       f"{key} marks a save whose process is gone; `aoe store fsck --repair` removes it",
                       ref=key)
            if repair:
                store.backend.delete(key)
                report.repaired.append(f"removed stale save marker {key}")


OLD_CATALOG = ".catalog"
"""Where aoe 0.5 kept a folder store's catalog index."""

UNREADABLE_RUN = ("malformed-manifest", "mismatched-manifest")
"""Findings of a run whose manifest is there but breaks the format: repair sets it aside."""


def _repair(store: Store, report: Report) -> None:
    when = format_time(utc_now())
    for finding in report.findings:
        if finding.kind == "interrupted-delete" and finding.ref:
            record = next((r for r in store.refs.trashed() if r.key == finding.ref), None)
            if record is not None and _still_there(store, record):
                store.refs.forget_trashed(record)
                report.repaired.append(f"dropped the record of the interrupted deletion {finding.ref}")
    for finding in report.findings:
        if finding.kind == "bad-change-note" and finding.ref:
            try:
                store.backend.delete(finding.ref)
            except StoreError as exc:
                report.repaired.append(f"could not remove {finding.ref} ({exc}): remove it by hand")
            else:
                report.repaired.append(f"removed {finding.ref}, which was not a change note")
    for finding in report.errors:
        if finding.kind in UNREADABLE_RUN and finding.ref and finding.object:
            font_id, _, run_id = finding.ref.split("/")
            if store.refs.trash_run(font_id, run_id, parse_digest(finding.object), when):
                report.repaired.append(
                    f"set aside run {font_id}/{run_id}, whose manifest cannot be read (in the trash: "
                    f"`aoe store restore {font_id} {run_id}` brings it back as it is)")
        if finding.kind == "dangling-ref" and finding.ref and finding.object:
            font_id, _, run_id = finding.ref.split("/")
            if store.refs.trash_run(font_id, run_id, parse_digest(finding.object), when, purged=True):
                report.repaired.append(f"dropped ref {finding.ref} (its manifest is gone; recorded in the trash)")
        elif finding.kind == "corrupt-object" and finding.object:
            digest = parse_digest(finding.object)
            key = object_key(digest)
            try:
                data = store.backend.read(key)
            except NotFoundError:
                continue
            store.backend.write(damaged_key(digest), [data], exclusive=False)
            store.backend.delete(key)
            report.repaired.append(f"moved corrupt object {digest} to {DAMAGED}/")
