"""The backend protocol: bytes under ``/``-separated keys, and nothing else.

A backend knows no hashes, codecs or runs; everything content-addressed lives above it,
so a local folder, an object store and memory sit under the same store logic. It says
what it supports with capability flags (``folders``, ``atomic_touch``, ``round_trips``)
and the layers above ask those, never "am I remote?". Implementations: ``local`` (a
folder), ``s3`` (an S3-compatible bucket), ``memory`` (for tests); wrappers: ``cache``
(a local read cache of a remote backend), ``wrappers`` (read-only, fault injection).
Every implementation passes ``tests/test_backend_contract.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from ..errors import InvalidNameError
from ..layout import TEMP_PREFIX
from ..limits import MAX_OBJECT_BYTES, MAX_STORED_OVERHEAD

Buffer = bytes | bytearray | memoryview

BatchWrite = Callable[[str, Sequence[Buffer]], bool]
"""A create-only write inside :meth:`Backend.write_batch`: False if the key existed (its
mtime is refreshed then, and nothing is written)."""

MAX_KEY_BYTES = MAX_OBJECT_BYTES + MAX_STORED_OVERHEAD
"""No key holds more than this (the largest stored object); a larger file is refused
unread, so a damaged or hostile store cannot make a reader allocate without bound."""


class Backend(Protocol):
    """What the layers above need from storage: a flat map of keys to bytes."""

    folders: bool
    """Whether folders exist apart from their keys (a local folder: yes; an object store:
    no, a folder is there while a key is below it)."""

    atomic_touch: bool
    """Whether :meth:`touch` refreshes an mtime and :meth:`delete_if_untouched` works;
    gc sweeps in two phases on backends without."""

    round_trips: bool
    """Whether each call is a network round trip (an object store): callers then keep
    many in flight. On a local folder small calls are cheap and threads only cost."""

    location: str | Path
    """Where the store is, as a user names it (a folder, or a URL)."""

    missing_hint: str
    """What to check when the store is not found (the part of the message that differs)."""

    def read(self, key: str, *, fresh: bool = False) -> bytes:
        """The bytes under ``key``; :class:`NotFoundError` when there are none.
        ``fresh`` reads the storage's own copy, past (and without filling) any local
        cache a wrapper keeps."""
        ...

    def readinto(self, key: str, buffers: Sequence[memoryview]) -> bool:
        """Fill ``buffers`` in order with the bytes under ``key`` if it holds exactly as many
        as they do (False otherwise, the buffers then holding anything); the checks and
        errors of :meth:`read`. A backend that cannot read in place returns False: callers
        then :meth:`read`."""
        ...

    def forget(self, key: str) -> None:
        """Drop any local copy of ``key`` a cache keeps (one that failed its check);
        nothing to do for a backend without a cache."""
        ...

    def created(self) -> bool:
        """Whether the store exists (its first write creates it)."""
        ...

    def local_path(self, name: str) -> Path | None:
        """A local file for data derived from this store (its catalog index), in the user's
        cache folder (never inside the store), one folder per store; None: keep it in memory."""
        ...

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool, durable: bool = True) -> bool:
        """Store the concatenation of ``parts`` under ``key``, all or nothing.

        ``exclusive`` makes it create-only: when the key exists nothing is written,
        its mtime is refreshed and False is returned. Otherwise the key is replaced
        atomically and True is returned. ``durable`` False allows a crash of the machine
        to lose the key (never to show part of it): for what matters only while its
        writer lives, a save marker; a backend whose writes are durable anyway ignores it.
        """
        ...

    def write_batch(self) -> AbstractContextManager[BatchWrite]:
        """Many create-only writes made durable together (git's batched fsync): a key
        written in the block is never visible before its bytes are durable, and every
        one is visible and durable once the block ends without an error; when it ends
        with one, what is not visible yet is discarded. Backends whose writes are durable
        as they land write at once (:func:`direct_batch`)."""
        ...

    def touch(self, key: str) -> bool:
        """Refresh the key's mtime (a gc grace period relies on it); False if absent."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the key holds bytes."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key below the folder ``prefix`` (recursively), in sorted order."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the key; False if it was already gone."""
        ...

    def stat(self, key: str) -> tuple[int, float] | None:
        """The key's size and mtime (when last written or touched, seconds since the
        epoch); None if absent."""
        ...

    def compare_and_swap(self, key: str, expected: bytes | None, parts: Sequence[Buffer] | None) -> bool:
        """Replace the key only if it still holds ``expected`` (None: only if absent);
        ``parts`` None deletes it. False when the key held something else."""
        ...

    def delete_unchanged(self, items: Sequence[tuple[str, bytes]]) -> Sequence[bool]:
        """:meth:`compare_and_swap` deletions of many keys at once, each removed only if it
        still holds its bytes; all the removals durable on return (a local folder's lock
        taken and the folder fsynced once for its keys). Whether each key was removed."""
        ...

    def lock(self, name: str, *, wait: bool) -> AbstractContextManager[bool]:
        """An exclusive lock that a crashed holder never leaves stuck; yields whether
        it was acquired (always True when ``wait``)."""
        ...

    def delete_if_untouched(self, key: str, cutoff: float) -> bool:
        """Delete the key unless its mtime is at or after ``cutoff``, atomically with
        respect to :meth:`touch`: a touch either lands first and keeps the key, or
        finds it gone and the writer stores it again."""
        ...

    def temp_files(self) -> Iterator[tuple[str, float]]:
        """Leftover temporary files (interrupted writes): relative path and mtime."""
        ...

    def remove_temp(self, name: str) -> None:
        """Remove one leftover temporary file named by :meth:`temp_files`."""
        ...

    def folder_version(self, prefix: str) -> int | None:
        """A number that changes whenever keys are added to, removed from or replaced
        in the folder (a local folder's mtime in ns); None if the backend cannot tell."""
        ...

    def list_versions(self, prefix: str, same_file: Mapping[str, str] | None = None) -> dict[str, str]:
        """The names of the keys directly in a folder, each mapped to a token that changes
        when the key is written again: a cheap way to see what changed without reading anything.

        ``same_file`` maps names to tokens the caller got earlier and knows still hold
        while the key is the same file (nothing rewrites a key in place; a replaced key is
        a new file). A backend whose listing tells files apart for free (a local folder's
        inode numbers) hands those tokens back without a stat."""
        ...

    def holds(self, token: str, content: bytes) -> bool:
        """Whether a key listed with ``token`` (:meth:`list_versions`) is known to hold
        exactly ``content``, from the token alone (an object store's ETag is the MD5 of
        what a single PUT wrote); False when the token cannot tell."""
        ...

    def make_folder(self, prefix: str) -> None:
        """Make sure a folder exists where the store wants one visible."""
        ...

    def has_folder(self, prefix: str) -> bool:
        """Whether a folder made by :meth:`make_folder` is still there."""
        ...



@contextmanager
def direct_batch(backend: Backend) -> Iterator[BatchWrite]:
    """A write batch for a backend whose every write is durable when it returns."""
    yield lambda key, parts: backend.write(key, parts, exclusive=True)


_BAD_KEY_PART = re.compile(r"(^|/)(\.{1,2})?(/|$)|[\x00-\x1f\x7f\\]|(^|/)" + re.escape(TEMP_PREFIX))


def check_key(key: str) -> str:
    """Refuse keys that could escape the root or clash with temporary files."""
    if not isinstance(key, str) or not key or _BAD_KEY_PART.search(key):
        raise InvalidNameError(
            f"invalid storage key {key!r}: each '/'-separated part must be non-empty, "
            "not '.' or '..', without backslashes or control characters"
        )
    return key
