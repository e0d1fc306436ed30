"""gc: remove the objects no run needs, never one that a run or a save in progress needs.

Mark: every object reachable from a run ref, and from the manifests those runs amended
(their history). Sweep: every other object whose mtime is older than the cutoff, where

    cutoff = min(gc start - grace, start of the oldest save still in progress)

Why no save can lose an object: a save announces itself (``.inflight/``) before it
writes or touches any object, writing refreshes the mtime of an object that already
exists, and the save touches every object again right before creating its ref. So an
object a save relies on either has an mtime at or after the save's start (kept by the
cutoff), or was touched after gc started (kept too). Each removal is atomic against a
concurrent touch (:meth:`Backend.delete_if_untouched`). Deleted runs (``aoe store rm``)
are not marked, but for those an alias points at: gc is what makes a deletion final, and
it records that in the trash.

One gc at a time: a lock that the operating system releases if gc crashes (on object
storage, a lease that expires). Writers never wait for gc.

**On object storage**, where an mtime cannot be refreshed cheaply nor a delete made
atomic against a refresh, gc sweeps in two phases, and nothing depends on clocks but
the server's (see ``docs/object-storage.md`` for the whole argument):

1. *Set aside*: an unreachable object older than the grace period is copied to
   ``.gc-pending/`` and deleted from ``.objects/``; then a stamp
   (``.gc-pending/<aa>/<digest>.moved``) records, by its server mtime, a moment after
   the delete. A save that finds the object gone stores it again; one that had already
   found it present gets it back: readers look in ``.gc-pending/`` too, and a save
   puts every object it needs back into ``.objects/`` right before creating its ref.
2. *Purge or restore*, in a later run: a set-aside object that is reachable again is
   put back; one still unreachable is deleted for good only once its stamp is older
   than the grace period and older than every save still in progress (their
   ``.inflight/`` markers are listed before marking). Any save that could have relied
   on the object began before the stamp, so while one of them runs nothing is purged,
   and once it has published, marking sees its run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import reachability
from .errors import FormatError, GcRunningError, InvalidInputError, StoreError
from .fsck import TEMP_MIN_AGE
from .layout import OBJECTS, PENDING, STAMP_SUFFIX, digest_at, lock_key, object_key, pending_key
from .names import Digest, format_time, parse_digest, utc_now
from .store import Store
from .transaction import live_markers

DEFAULT_GRACE = 3600.0
"""Objects younger than this (seconds) are never swept."""


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    cutoff: float
    reachable: int = 0
    kept_young: int = 0
    set_aside: int = 0
    restored: int = 0
    swept: int = 0
    freed_bytes: int = 0
    temp_files_removed: int = 0
    runs_purged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def collect_garbage(
    store: Store,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GcReport:
    """Sweep unreachable objects older than the grace period; see the module docstring."""
    if not 0 <= grace < float("inf"):
        raise InvalidInputError(f"the grace period must be a number of seconds, 0 or more, not {grace}")
    store.require_root()
    with store.backend.lock("gc", wait=False) as acquired:
        if not acquired:
            raise GcRunningError("another gc is running on this store; wait for it to finish")
        started = _storage_now(store)
        saves = [mtime for _, mtime in live_markers(store.backend)]
        cutoff = min([started - grace, *saves])
        report = GcReport(dry_run=dry_run, grace=grace, cutoff=cutoff)
        try:
            reachable: set[Digest] = reachability.reachable(store.refs, store.objects, store.aliases)
        except FormatError as exc:
            raise FormatError(f"gc stopped before removing anything: {exc}") from None
        report.reachable = len(reachable)
        if not store.backend.atomic_touch:
            _sweep_in_two_phases(store, report, reachable, started, min([float("inf"), *saves]), progress)
        else:
            _sweep(store, report, reachable, cutoff, progress)
        if not dry_run:
            _record_purges(store, report)
            if store.backend.round_trips:
                store.catalog.share_listings()  # rows of runs since removed leave the segments
            for name, mtime in list(store.backend.temp_files()):
                if mtime < min(cutoff, started - TEMP_MIN_AGE):
                    store.backend.remove_temp(name)
                    report.temp_files_removed += 1
        return report


def _storage_now(store: Store) -> float:
    """Now, by the storage's own clock, which stamps the mtimes gc compares with it: the
    mtime of the gc lock, refreshed (a local folder) or just written (an object store).
    time.time() would not do: Linux stamps files with a coarse clock unless the file was
    looked at since its last change, up to 8 ms behind time.time() here (measured), so a
    zero-grace gc could sweep an object touched just after it started (it did, in 1 run
    of 6 of the racing-writers test, before this)."""
    key = lock_key("gc")
    if store.backend.atomic_touch:
        store.backend.touch(key)
    stat = store.backend.stat(key)
    return stat[1] if stat is not None else time.time()


def _sweep(store: Store, report: GcReport, reachable: set[Digest], cutoff: float,
           progress: Callable[[int], None] | None) -> None:
    """Delete unreachable objects older than the cutoff, each atomically against a touch;
    the deleted runs that loses are recorded as purged first."""
    doomed: list[tuple[str, int]] = []
    for key in list(store.backend.list(OBJECTS)):
        if progress:
            progress(1)
        if digest_at(key) in reachable:  # a stray file (None) is garbage too
            continue
        stat = store.backend.stat(key)
        if stat is None:
            continue
        size, mtime = stat
        if mtime >= cutoff:
            report.kept_young += 1
            continue
        doomed.append((key, size))
    if not report.dry_run:
        _purge_first(store, report, {digest for key, _ in doomed if (digest := digest_at(key)) is not None})
    for key, size in doomed:
        if report.dry_run or store.backend.delete_if_untouched(key, cutoff):
            report.swept += 1
            report.freed_bytes += size


def _purge_first(store: Store, report: GcReport, doomed: set[Digest]) -> None:
    """Record as purged, durably, each deleted run some of whose objects are about to go,
    before the first goes: a gc cut short (a crash, a power cut) then leaves orphans for
    the next one, never a trash record offering to restore a run that is half gone. A run
    whose object survives after all (a save stored it again meanwhile) stays purged: it
    could not be restored whole anyway."""
    if not doomed:
        return
    when = format_time(utc_now())
    for record in store.refs.trashed():
        if not record.run_id or not record.manifest or record.purged_at:
            continue
        try:
            needs = {digest for digest, manifest in reachability.versions(store.objects, parse_digest(record.manifest))
                     for digest in (digest, *manifest.digests())}
        except StoreError:  # a manifest gone already: nothing of it can be restored
            needs = {parse_digest(record.manifest)}
        if needs & doomed:
            store.refs.mark_purged(record, when)
            report.runs_purged.append(f"{record.font_id}/{record.run_id}")


def _sweep_in_two_phases(store: Store, report: GcReport, reachable: set[Digest], now: float,
                         oldest_save: float, progress: Callable[[int], None] | None) -> None:
    """Purge or restore what earlier runs set aside, then set aside what is unreachable
    now; see the module docstring."""
    backend, dry_run = store.backend, report.dry_run
    keys = set(backend.list(PENDING))
    decided = []  # (key, digest, what to do with it)
    for key in sorted(k for k in keys if not k.endswith(STAMP_SUFFIX)):
        if progress:
            progress(1)
        digest = digest_at(key)
        if digest is None:
            continue  # not something gc set aside
        stamp = backend.stat(key + STAMP_SUFFIX) if key + STAMP_SUFFIX in keys else None
        if digest in reachable:
            decided.append((key, digest, "restore"))
        elif stamp is None:  # the run that set it aside stopped before stamping it: stamp it now
            decided.append((key, digest, "stamp"))
        elif stamp[1] < now - report.grace and stamp[1] < oldest_save:
            decided.append((key, digest, "purge"))
        else:
            report.kept_young += 1
    if not dry_run:  # the deleted runs this gc will lose objects of are recorded as purged first
        _purge_first(store, report, {digest for _, digest, action in decided if action == "purge"})
    for key, digest, action in decided:
        if action == "restore":
            if not dry_run:
                store.objects.touch(digest)  # puts it back into .objects/ if it is not there
                backend.delete(key + STAMP_SUFFIX)
                backend.delete(key)
            report.restored += 1
        elif action == "stamp":
            if not dry_run:
                backend.write(key + STAMP_SUFFIX, [b""], exclusive=False)
            report.kept_young += 1
        else:
            size = (backend.stat(key) or (0, 0.0))[0]
            if not dry_run:
                backend.delete(key)
                backend.delete(key + STAMP_SUFFIX)
            report.swept += 1
            report.freed_bytes += size
    for key in list(backend.list(OBJECTS)):
        if progress:
            progress(1)
        name = digest_at(key)
        if name is None or name in reachable:
            continue
        stat = backend.stat(key)
        if stat is None:
            continue
        if stat[1] >= now - report.grace:
            report.kept_young += 1
            continue
        report.set_aside += 1
        if not dry_run:
            _set_aside(store, name)


def _set_aside(store: Store, digest: Digest) -> None:
    """Copy an object to .gc-pending/, delete it from .objects/, then stamp the copy."""
    backend = store.backend
    try:
        stored = backend.read(object_key(digest))
    except StoreError:  # gone meanwhile
        return
    pending = pending_key(digest)
    backend.write(pending, [stored], exclusive=False)
    backend.delete(object_key(digest))
    backend.write(pending + STAMP_SUFFIX, [b""], exclusive=False)


def _record_purges(store: Store, report: GcReport) -> None:
    """Deleted runs whose manifest is gone otherwise (not by this gc) can no longer be
    restored: say so in the trash."""
    when = format_time(utc_now())
    for record in store.refs.trashed():
        if record.run_id and record.manifest and not record.purged_at:
            if not store.objects.has(parse_digest(record.manifest)):
                store.refs.mark_purged(record, when)
                report.runs_purged.append(f"{record.font_id}/{record.run_id}")
