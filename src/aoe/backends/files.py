"""Files on a local disk: the one atomic write, fsyncs, and retries of transient errors.

Every file aoe writes goes through :func:`atomic_write`: the store's keys (``local``), a
run exported as a folder, a personality vector exported alone, and the local object
cache. A temporary file in the destination folder is written (and fsynced), then linked
(create-only) or renamed (replace) into place, then the folder is fsynced: a reader sees
the file whole or not at all, after kill -9 or a full disk as much as after success.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..errors import StorageError, StorageFullError
from ..layout import TEMP_PREFIX
from ..names import random_hex
from .base import Buffer

TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETXTBSY, errno.EINTR})
"""Errors of a file briefly locked or unavailable: retried with backoff."""

RETRY_DELAYS = (0.05, 0.2, 0.8)
"""Exponential backoff between the at most three retries of a transient error."""

O_BINARY = getattr(os, "O_BINARY", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

T = TypeVar("T")

Content = Sequence[Buffer] | Callable[[BinaryIO], object]
"""What to write: buffers, or a function that writes into the open file (``torch.save``)."""


def atomic_write(path: Path, content: Content, *, exclusive: bool, durable: bool = True) -> bool:
    """Write ``path`` whole or not at all; see the module docstring.

    ``exclusive`` makes it create-only: when ``path`` exists nothing is written, its
    mtime is refreshed and False is returned. ``durable`` False skips the fsyncs (a cache:
    it may lose files after a crash, never show partial ones). The temporary file is
    created with ``O_EXCL | O_NOFOLLOW``, so a symlink planted at its name is never
    followed. Raises OSError; callers map it (see :func:`with_retries`).
    """
    temp = write_temp(path, content, durable=durable)
    try:
        placed = place(temp, path, exclusive=exclusive)
        if placed and durable:
            fsync_dir(path.parent)
        return placed
    finally:
        remove_quietly(temp)


def write_temp(path: Path, content: Content, *, durable: bool, start_writeback: bool = False) -> Path:
    """The first half of :func:`atomic_write`: ``content`` in a new temporary file beside
    ``path`` (fsynced if ``durable``), which the caller places or removes.
    ``start_writeback`` asks the kernel to start writing it out now, without waiting (a
    batch fsyncs it later, and then finds most of it on disk already)."""
    temp = path.with_name(f"{TEMP_PREFIX}{random_hex(8)}-{path.name}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY | O_NOFOLLOW, 0o666)
    try:
        if callable(content):
            with os.fdopen(os.dup(fd), "wb") as file:
                content(file)
        else:
            for part in content:
                _write_all(fd, part)
        if durable:
            os.fsync(fd)
        elif start_writeback:
            _start_writeback(fd)
    except BaseException:
        os.close(fd)
        remove_quietly(temp)
        raise
    os.close(fd)
    return temp


@functools.cache
def _sync_file_range() -> Callable[[int], object]:
    """Linux's ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`` (what git's batched
    fsync uses to start writeback), looked up on first use; elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            function = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (OSError, AttributeError):
            return lambda fd: None
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        return lambda fd: function(fd, 0, 0, 2)  # a hint: a failure is harmless, the fsync decides
    return lambda fd: None


def _start_writeback(fd: int) -> None:
    _sync_file_range()(fd)


def place(temp: Path, path: Path, *, exclusive: bool) -> bool:
    """The second half: a written temporary file becomes ``path``, linked (create-only:
    False, and ``path``'s mtime refreshed, when it exists) or renamed over it. The caller
    fsyncs the folder and removes ``temp``."""
    if exclusive:
        try:
            os.link(temp, path)
        except FileExistsError:
            os.utime(path, follow_symlinks=False)
            return False
    else:
        os.replace(temp, path)
    return True


def fsync_file(path: Path) -> None:
    """Make a file's data durable."""
    fd = os.open(path, os.O_RDONLY | O_BINARY | O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(folder: Path) -> None:
    """Make a folder's new or removed entries durable (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are journaled
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems that cannot fsync folders
            raise
    finally:
        os.close(fd)


def with_retries(action: Callable[[], T], what: str) -> T:
    """Run ``action``, retrying transient OS errors with backoff, mapping the rest."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return action()
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS and delay is not None:
                time.sleep(delay)
                continue
            raise storage_error(exc, what) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def storage_error(exc: OSError, what: str) -> StorageError:
    """Turn an OSError into the StorageError a user can act on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"disk full while {what}: nothing was published; free space and try again"
        )
    if exc.errno in TRANSIENT_ERRNOS:
        return StorageError(
            f"{what} failed: the file stayed locked or busy after "
            f"{len(RETRY_DELAYS)} retries ({exc.strerror}); close whatever holds it and try again"
        )
    return StorageError(f"{what} failed: {exc.strerror or exc} ({exc.filename or ''})".rstrip(" ()"))
