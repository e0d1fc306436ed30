"""Backends: where a store's bytes live, behind one protocol (see ``base``).

:func:`open_backend` picks one by the location's scheme from :data:`LOCATIONS`, the way
restic's ``location`` registry does: a folder by default, ``s3://`` for S3-compatible
object storage (wrapped in a local read cache), ``memory://`` for tests. A new kind of
storage is one module and one line here; nothing above this package asks which kind a
store is, only what it supports (``Backend.folders``, ``atomic_touch``, ``round_trips``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .base import MAX_KEY_BYTES, Backend, BatchWrite, Buffer, check_key

Opener = Callable[[str, "str | None", "int | None"], Backend]


def _open_s3(location: str, endpoint: str | None, cache_limit: int | None) -> Backend:
    from .cache import CachingBackend, ObjectCache, cache_bytes, cache_folder
    from .s3 import S3Backend

    backend = S3Backend(location, endpoint=endpoint)
    limit = cache_bytes(os.environ.get("AOE_CACHE_BYTES")) if cache_limit is None else cache_limit
    return CachingBackend(backend, ObjectCache(cache_folder() / "objects", limit)) if limit else backend


def _open_memory(location: str, endpoint: str | None, cache_limit: int | None) -> Backend:
    from .memory import MemoryBackend

    return MemoryBackend.named(location)


LOCATIONS: dict[str, Opener] = {"s3": _open_s3, "memory": _open_memory}
"""URL scheme -> how to open a store there; anything else is a folder."""


def open_backend(location: str | os.PathLike[str], *, endpoint: str | None = None,
                 cache_bytes: int | None = None) -> Backend:
    """The backend for a store location: ``s3://bucket/prefix``, ``memory://name`` or a
    folder. ``cache_bytes`` bounds a remote store's local object cache (0: none; default
    ``$AOE_CACHE_BYTES``, else 10 GiB)."""
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0]
        if scheme in LOCATIONS:
            return LOCATIONS[scheme](location, endpoint, cache_bytes)
    from .local import LocalBackend

    return LocalBackend(Path(location))


__all__ = ["LOCATIONS", "MAX_KEY_BYTES", "Backend", "BatchWrite", "Buffer", "check_key", "open_backend"]
