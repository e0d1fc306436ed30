"""Transactions: the one way anything becomes visible in a store.

Saving a run, recording one with ``start_run``, amending, restoring, importing and
copying runs between stores all do the same three things, in this order
(docs/format.md, *Writing*):

1. announce themselves with a **save marker** (``.inflight/<token>``) before they write
   or touch any object, so gc spares what they write before their ref exists;
2. touch every object the ref will need, right before the ref step, and fail,
   publishing nothing, if one is gone;
3. create the run's ref (the next free sequence number, or an exact id), or move it by
   compare-and-swap.

:class:`Transactions` owns all of it, including the marker's format and when a marker
counts as left by a dead process (which fsck and gc need to know).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from .backends import Backend
from .errors import NotFoundError, ObjectNotFoundError, RunExistsError, StoreError
from .layout import INFLIGHT, marker_key
from .limits import parse_json
from .manifests import Manifest, pack
from .names import Digest, format_time, random_hex, utc_now
from .objects import ObjectStore
from .refs import Refs

MARKER_MAX_AGE = 24 * 3600.0
"""A save marker from another host older than this is taken as left by a crash."""


def write_marker(backend: Backend, key: str) -> None:
    """Create the save marker ``key``: ``{"pid", "host", "started_at"}``. Not made durable
    (two fsyncs less per save): it guards a save only while its process lives, and one
    a crash leaves, or loses, means nothing."""
    marker = {"pid": os.getpid(), "host": platform.node(), "started_at": format_time(utc_now())}
    backend.write(key, [json.dumps(marker).encode()], exclusive=True, durable=False)


def marker_is_stale(backend: Backend, key: str) -> bool:
    """Whether a marker was left by a save that will never finish: its process is gone
    (on this host), it is older than :data:`MARKER_MAX_AGE` (on another), or it is not
    a marker at all."""
    try:
        marker = parse_json(backend.read(key))
        pid, host = int(marker["pid"]), str(marker["host"])
    except NotFoundError:
        return False  # finished meanwhile
    except (ValueError, KeyError, TypeError, StoreError):
        return True
    if host == platform.node():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    stat = backend.stat(key)
    return stat is not None and time.time() - stat[1] > MARKER_MAX_AGE


def live_markers(backend: Backend) -> list[tuple[str, float]]:
    """Saves in progress: (marker key, start time) of every marker whose writer lives."""
    live = []
    for key in backend.list(INFLIGHT):
        if not marker_is_stale(backend, key):
            stat = backend.stat(key)
            if stat is not None:
                live.append((key, stat[1]))
    return live


class Transactions:
    """The transactions of one store: :meth:`open` one, then publish through it."""

    def __init__(self, objects: ObjectStore, refs: Refs) -> None:
        self.objects = objects
        self.refs = refs
        self._local = threading.local()  # the marker of this thread's open transaction, if any

    @contextmanager
    def open(self) -> Iterator[Transaction]:
        """A transaction for as long as the block runs (one marker per thread: a block
        inside another shares the outer one's)."""
        outer: Transaction | None = getattr(self._local, "open", None)
        if outer is not None:
            yield outer
            return
        key = marker_key(random_hex(8))
        try:
            write_marker(self.objects.backend, key)  # inside: a marker whose write failed late goes too
            self._local.open = Transaction(self, key)
            yield self._local.open
        finally:
            self._local.open = None
            try:
                self.objects.backend.delete(key)
            except StoreError:
                pass  # left for fsck --repair; the error on its way says what happened


class Transaction:
    """One open transaction: its marker is live until the block that opened it ends."""

    def __init__(self, owner: Transactions, marker: str) -> None:
        self.objects = owner.objects
        self.refs = owner.refs
        self.marker = marker

    def keep_alive(self) -> None:
        """Refresh the marker (a long ``start_run`` that saves now and then)."""
        self.objects.backend.touch(self.marker)

    def touch(self, digests: Iterable[Digest]) -> None:
        """Refresh every object a ref is about to need, so no gc can sweep them first;
        fail, publishing nothing, if one is gone. (Many at once where each call is a
        round trip.)"""
        digests = sorted(set(digests))
        sizes = None if self.objects.backend.round_trips else [0] * len(digests)  # small local calls: inline
        for digest, present in zip(digests, self.objects.parallel(self.objects.touch, digests, sizes)):
            if not present:
                raise ObjectNotFoundError(
                    f"object {digest} vanished before the run was published (removed outside "
                    "aoe, or a gc that ignored this save?); nothing was published: save the run again"
                )

    def publish(self, build: Callable[[str], Manifest], font_id: str, moment: datetime,
                run_id: str | None = None) -> tuple[str, Digest]:
        """Write the manifest ``build(run_id)`` and create its ref: the one step that makes
        the run exist. Without ``run_id`` the run takes the next free sequence number of
        ``moment``; with one, exactly that id, or :class:`RunExistsError`. Returns the run
        id and its manifest's address."""
        self.touch(build("").digests())
        stored: list[Digest] = []

        def write_manifest(candidate: str) -> Digest:
            stored.append(self.objects.put(pack(build(candidate))))
            return stored[-1]

        if run_id is not None:
            if not self.refs.create_run(font_id, run_id, write_manifest(run_id)):
                raise RunExistsError(f"run {run_id} of {font_id} exists already; nothing was published")
            return run_id, stored[-1]
        return self.refs.publish_run(font_id, moment, write_manifest), stored[-1]

    def create(self, font_id: str, run_id: str, manifest: Digest, needs: Iterable[Digest]) -> bool:
        """Create a run's ref to a manifest already stored (a restore, a copy from another
        store); False if the run exists."""
        self.touch([manifest, *needs])
        return self.refs.create_run(font_id, run_id, manifest)

    def move(self, font_id: str, run_id: str, old: Digest, new: Manifest | Digest,
             needs: Iterable[Digest] = ()) -> Digest | None:
        """Point a run at a new manifest (stored here if given as one) if it still names
        ``old``; the new manifest's address, or None when the run changed meanwhile."""
        if isinstance(new, Manifest):
            self.touch(new.digests())
            digest = self.objects.put(pack(new))
        else:
            self.touch([new, *needs])
            digest = new
        return digest if self.refs.move_run(font_id, run_id, old, digest) else None
