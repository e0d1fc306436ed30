"""Backend: bytes under ``/``-separated keys, and nothing else.

The backend knows no hashes, codecs or runs; everything content-addressed lives
above it, so an object store can later sit under the same store logic. The one
implementation today, :class:`LocalBackend`, keeps each key as a file under a root
folder and makes every write crash-safe the same way: a temporary file in the
destination folder, written and fsynced, then linked (create-only) or renamed
(replace) into place, then the folder fsynced. A reader therefore sees a key
whole or not at all, after kill -9 or a full disk as much as after success.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from .errors import InvalidNameError, NotFoundError, StorageError, StorageFullError, UnexpectedFileError
from .limits import MAX_OBJECT_BYTES, MAX_STORED_OVERHEAD

Buffer = bytes | bytearray | memoryview

TEMP_PREFIX = ".tmp-"
"""Names starting with this are in-flight writes; they are never keys."""

LOCKS_FOLDER = ".locks"
"""Lock files live here; they are never keys and never removed while a store is in use."""

TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETXTBSY, errno.EINTR})
"""Errors of a file briefly locked or unavailable: retried with backoff."""

RETRY_DELAYS = (0.05, 0.2, 0.8)
"""Exponential backoff between the at most three retries of a transient error."""

MAX_KEY_BYTES = MAX_OBJECT_BYTES + MAX_STORED_OVERHEAD
"""No key holds more than this (the largest stored object); a larger file is refused
unread, so a damaged or hostile store cannot make a reader allocate without bound."""

T = TypeVar("T")


class Backend(Protocol):
    """What the layers above need from storage: a flat map of keys to bytes."""

    folders: bool
    """Whether folders exist apart from their keys (a local folder: yes; an object store:
    no, a folder is there while a key is below it)."""

    atomic_touch: bool
    """Whether :meth:`touch` refreshes an mtime and :meth:`delete_if_untouched` works;
    gc sweeps in two phases on backends without."""

    def read(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`NotFoundError` when there are none."""
        ...

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool) -> bool:
        """Store the concatenation of ``parts`` under ``key``, all or nothing.

        ``exclusive`` makes it create-only: when the key exists nothing is written,
        its mtime is refreshed and False is returned. Otherwise the key is replaced
        atomically and True is returned.
        """
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

    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """The keys directly in a folder, each with a token that changes when the key is
        written again: a cheap way to see what changed without reading anything."""
        ...

    def make_folder(self, prefix: str) -> None:
        """Make sure a folder exists where the store wants one visible."""
        ...

    def has_folder(self, prefix: str) -> bool:
        """Whether a folder made by :meth:`make_folder` is still there."""
        ...


def open_backend(location: str | os.PathLike[str], *, endpoint: str | None = None) -> Backend:
    """The backend for a store location: ``s3://bucket/prefix`` or a folder."""
    if isinstance(location, str) and location.startswith("s3://"):
        from .s3 import S3Backend

        return S3Backend(location, endpoint=endpoint)
    return LocalBackend(location)


_BAD_KEY_PART = re.compile(r"(^|/)(\.{1,2})?(/|$)|[\x00-\x1f\x7f\\]|(^|/)" + re.escape(TEMP_PREFIX))


def check_key(key: str) -> str:
    """Refuse keys that could escape the root or clash with temporary files."""
    if not isinstance(key, str) or not key or _BAD_KEY_PART.search(key):
        raise InvalidNameError(
            f"invalid storage key {key!r}: each '/'-separated part must be non-empty, "
            "not '.' or '..', without backslashes or control characters"
        )
    return key


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


class LocalBackend:
    """Keys as files under a root folder, written crash-safely."""

    folders = True
    atomic_touch = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._known_dirs: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root.joinpath(*check_key(key).split("/"))

    def read(self, key: str) -> bytes:
        """The file's bytes: only a regular file (never through a symlink at its own name,
        never a FIFO or device) of at most :data:`MAX_KEY_BYTES`, read to its size."""
        path = self.path(key)

        def read_file() -> bytes:
            fd = os.open(path, os.O_RDONLY | _O_BINARY | _O_NOFOLLOW | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise UnexpectedFileError(f"{key} under {self.root} is not a regular file; aoe reads only files")
                if info.st_size > MAX_KEY_BYTES:
                    raise UnexpectedFileError(
                        f"{key} under {self.root} holds {info.st_size:,} bytes, more than aoe ever writes there")
                data = os.read(fd, info.st_size + 1) if info.st_size else b""
                while len(data) <= info.st_size:  # a short read: read on to the size seen
                    more = os.read(fd, info.st_size + 1 - len(data))
                    if not more:
                        break
                    data += more
                return data[: info.st_size]
            finally:
                os.close(fd)

        try:
            return with_retries(read_file, f"reading {path}")
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise NotFoundError(f"{key} not found under {self.root}") from None
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ELOOP:
                raise UnexpectedFileError(f"{key} under {self.root} is a symlink; aoe does not follow them") from None
            raise

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def touch(self, key: str) -> bool:
        path = self.path(key)
        return _unless_missing(lambda: os.utime(path, follow_symlinks=False), f"refreshing {path}")

    def delete(self, key: str) -> bool:
        path = self.path(key)
        if not _unless_missing(lambda: os.unlink(path), f"deleting {path}"):
            return False
        with_retries(lambda: fsync_dir(path.parent), f"deleting {path}")
        return True

    def stat(self, key: str) -> tuple[int, float] | None:
        try:
            info = self.path(key).stat()
        except FileNotFoundError:
            return None
        return info.st_size, info.st_mtime

    def compare_and_swap(self, key: str, expected: bytes | None, parts: Sequence[Buffer] | None) -> bool:
        with self.lock("ref-" + key.replace("/", "%"), wait=True):
            try:
                current: bytes | None = self.read(key)
            except NotFoundError:
                current = None
            if current != expected:
                return False
            if parts is None:
                return self.delete(key)
            return self.write(key, parts, exclusive=expected is None)

    @contextmanager
    def lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        check_key(name)
        folder = self.root / LOCKS_FOLDER
        self._ensure_dir(folder)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock, as a crash would

    def delete_if_untouched(self, key: str, cutoff: float) -> bool:
        path = self.path(key)
        aside = path.with_name(f"{TEMP_PREFIX}gc-{secrets.token_hex(4)}-{path.name}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            if os.stat(aside).st_mtime < cutoff:
                os.unlink(aside)
                fsync_dir(path.parent)
                return True
            try:
                os.link(aside, path)  # touched while we looked: put it back
            except FileExistsError:
                pass  # stored again meanwhile: that copy stands
            return False
        finally:
            try:
                os.unlink(aside)
            except FileNotFoundError:
                pass

    def temp_files(self) -> Iterator[tuple[str, float]]:
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    path = Path(folder, name)
                    try:
                        yield path.relative_to(self.root).as_posix(), path.stat().st_mtime
                    except FileNotFoundError:  # finished meanwhile
                        continue

    def remove_temp(self, name: str) -> None:
        path = self.root.joinpath(*name.split("/"))
        if not path.name.startswith(TEMP_PREFIX) or ".." in name.split("/"):
            raise InvalidNameError(f"{name!r} is not a temporary file of this store")
        path.unlink(missing_ok=True)

    def folder_version(self, prefix: str) -> int | None:
        try:
            return self.path(prefix).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        try:
            entries = list(os.scandir(self.path(prefix)))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) or entry.is_dir(follow_symlinks=False):
                continue  # a symlink or special file is listed: reading it is refused, so it is seen
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since listed
                continue
            yield f"{prefix}/{entry.name}", f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"

    def make_folder(self, prefix: str) -> None:
        self._ensure_dir(self.path(prefix))

    def has_folder(self, prefix: str) -> bool:
        return self.path(prefix).is_dir()

    def list(self, prefix: str) -> Iterator[str]:
        top = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        base = prefix.strip("/")
        yield from self._walk(top, base)

    def _walk(self, folder: Path, key_prefix: str) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise storage_error(exc, f"listing {folder}") from exc
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            key = f"{key_prefix}/{entry.name}" if key_prefix else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            else:  # files, and what should not be there (symlinks, FIFOs): reading those is refused
                yield key

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool) -> bool:
        path = self.path(key)
        if exclusive and self.touch(key):
            return False
        return with_retries(lambda: self._write_once(path, parts, exclusive), f"writing {path}")

    def _write_once(self, path: Path, parts: Sequence[Buffer], exclusive: bool) -> bool:
        temp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}-{path.name}")
        self._ensure_dir(path.parent)  # once per folder: it is real, not a symlink
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileNotFoundError:  # the folder is new, or was removed under us
            self._known_dirs.clear()
            self._ensure_dir(path.parent)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        try:
            try:
                for part in parts:
                    _write_all(fd, part)
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(temp, path)
                except FileExistsError:
                    os.utime(path)
                    return False
            else:
                os.replace(temp, path)
            fsync_dir(path.parent)
            return True
        finally:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass

    def _ensure_dir(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, fsyncing each new entry. A folder
        inside the store that is a symlink is refused: aoe never writes through one."""
        if folder in self._known_dirs:
            return
        inside = self.root in folder.parents
        if folder.parent != folder and (inside or not folder.exists()):
            self._ensure_dir(folder.parent)
        try:
            info: os.stat_result | None = os.lstat(folder)
        except FileNotFoundError:
            info = None
        if info is not None and inside and not stat.S_ISDIR(info.st_mode):
            raise UnexpectedFileError(
                f"{folder} is a symlink or file where the store keeps a folder; aoe does not write "
                "through symlinks: replace it with a real folder")
        if info is None:
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            fsync_dir(folder.parent)
        self._known_dirs.add(folder)


_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _unless_missing(action: Callable[[], object], what: str) -> bool:
    """Run a file operation with retries; False when the file is not there."""
    try:
        with_retries(action, what)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return False
        raise
    return True


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
