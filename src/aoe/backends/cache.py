"""A local cache of a remote store's objects, as a backend wrapper.

Reads of objects (``.objects/`` and ``.gc-pending/`` keys) are served from a bounded
folder on the local disk when it has them, and kept there when it does not; every other
call goes to the wrapped backend. Objects are immutable under their address, so an entry
is never stale; the layers above verify every object they read, and a copy that fails
its check is dropped with :meth:`CachingBackend.forget` and read again ``fresh``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..layout import digest_at
from ..names import Digest
from .base import Backend, Buffer
from .files import atomic_write

DEFAULT_CACHE_BYTES = 10 * 1024**3


def cache_folder() -> Path:
    """Where remote stores keep local copies of objects, and their catalogs:
    ``$AOE_CACHE_DIR``, else ``$XDG_CACHE_HOME/aoe``, else ``~/.cache/aoe``."""
    explicit = os.environ.get("AOE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aoe"


def derived_path(identity: str, name: str) -> Path:
    """Where data derived from the store ``identity`` names (its catalog index) is kept:
    in the cache folder, one folder per store."""
    import hashlib  # on first use: most commands never need it

    return cache_folder() / "stores" / hashlib.sha256(identity.encode()).hexdigest()[:24] / name


def cache_bytes(text: str | None) -> int:
    """``$AOE_CACHE_BYTES``: a byte count, or a number with K, M, G or T (powers of 1024)."""
    if not text:
        return DEFAULT_CACHE_BYTES
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    try:
        value = int(float(number) * unit)
    except (ValueError, OverflowError):  # not a number, NaN, infinity
        value = -1
    if value < 0:
        raise InvalidInputError(f"AOE_CACHE_BYTES={text!r} is not a size: use bytes or e.g. 500M, 10G (0: no cache)")
    return value


class CachingBackend:
    """``inner`` with its objects cached in ``cache``; the same protocol."""

    def __init__(self, inner: Backend, cache: ObjectCache) -> None:
        self.inner = inner
        self.cache = cache
        self.folders = inner.folders
        self.atomic_touch = inner.atomic_touch
        self.round_trips = inner.round_trips
        self.location = inner.location
        self.missing_hint = inner.missing_hint

    def __repr__(self) -> str:
        return f"CachingBackend({self.inner!r})"

    def __getattr__(self, name: str) -> Any:  # every other call: the wrapped backend's
        return getattr(self.inner, name)

    def read(self, key: str, *, fresh: bool = False) -> bytes:
        digest = digest_at(key)
        if digest is None or fresh:
            return self.inner.read(key, fresh=fresh)
        stored = self.cache.get(digest)
        if stored is None:
            stored = self.inner.read(key)
            self.cache.put(digest, stored)
        return stored

    def readinto(self, key: str, buffers: Sequence[memoryview]) -> bool:
        return False  # reads go through the cache

    def forget(self, key: str) -> None:
        digest = digest_at(key)
        if digest is not None:
            self.cache.discard(digest)


class ObjectCache:
    """A remote store's objects kept on local disk, as stored (compressed), bounded in
    size; the least recently used go first.

    Objects are immutable under their address, so an entry is never stale, and every
    read verifies it like any object: a damaged entry is dropped and fetched again.
    Entries are written to a temporary file and renamed, without fsync (a cache may
    lose entries, never hand out wrong ones), and any number of processes may share a
    folder: each tolerates the others' evictions.
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._size: int | None = None  # bytes in the folder, counted on first put
        self._lock = threading.Lock()

    def _path(self, digest: Digest) -> Path:
        return self.folder / digest[:2] / digest

    def get(self, digest: Digest) -> bytes | None:
        path = self._path(digest)
        try:
            data = path.read_bytes()
            os.utime(path)  # most recently used
        except OSError:
            return None
        return data

    def put(self, digest: Digest, stored: Buffer) -> None:
        size = memoryview(stored).nbytes
        if size > self.max_bytes // 4:
            return  # one object must not flush the rest
        path = self._path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, [stored], exclusive=False, durable=False)
        except OSError:  # a full or read-only cache disk costs speed, never correctness
            return
        with self._lock:
            self._size = (self._size if self._size is not None else self._measure()) + size
            if self._size > self.max_bytes:
                self._evict()

    def discard(self, digest: Digest) -> None:
        self._path(digest).unlink(missing_ok=True)

    def _measure(self) -> int:
        return sum(size for _, _, size in self._entries())

    def _entries(self) -> list[tuple[float, Path, int]]:
        entries = []
        for path in self.folder.glob("*/*"):
            try:
                info = path.stat()
            except OSError:  # evicted by another process meanwhile
                continue
            entries.append((info.st_mtime, path, info.st_size))
        return entries

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache is at 80% of its bound."""
        entries = sorted(self._entries(), key=lambda entry: entry[0])
        total = sum(size for _, _, size in entries)
        for _, path, size in entries:
            if total <= self.max_bytes * 0.8:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._size = total
