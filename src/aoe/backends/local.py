"""A folder as a backend: each key a file under the root, written crash-safely.

Every write goes through :func:`files.atomic_write` (temporary file, fsync, link or
rename, folder fsync). Reads take only regular files of bounded size, never through a
symlink; writes never go through a symlinked folder inside the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidNameError, NotFoundError, StorageError, UnexpectedFileError
from ..layout import LOCKS, TEMP_PREFIX
from ..names import random_hex
from .base import MAX_KEY_BYTES, BatchWrite, Buffer, check_key
from .cache import derived_path
from .files import (
    O_BINARY,
    O_NOFOLLOW,
    atomic_write,
    fsync_dir,
    fsync_file,
    place,
    remove_quietly,
    storage_error,
    with_retries,
    write_temp,
)

T = TypeVar("T")

SYNC_THREADS = 16
"""fsyncs in flight at once when a batch is made durable: the filesystem commits its
journal once for all those waiting (group commit), so they cost about one."""


class LocalBackend:
    """Keys as files under a root folder, written crash-safely."""

    folders = True
    atomic_touch = True
    round_trips = False
    missing_hint = "check --root or $AOE_STORE (if it was moved or deleted, restore it from a backup)"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_text = os.fspath(self.root)
        self.location: str | Path = self.root
        self._known_dirs: set[Path] = set()

    def created(self) -> bool:
        return self.root.is_dir()

    def local_path(self, name: str) -> Path:
        """In the user's cache folder, never inside the store: a store handed over (a
        tarball, a shared folder) must not bring derived data aoe would believe. One
        folder per store, by its real path and its folder's identity (device and inode),
        so a store replaced at the same path starts a new index."""
        real = os.path.realpath(self.root)
        try:
            info = os.stat(real)
            identity = f"{info.st_dev}:{info.st_ino}"
        except OSError:  # not created yet
            identity = "-"
        return derived_path(f"folder {real} {identity}", name)

    def forget(self, key: str) -> None:
        """Nothing is cached here."""

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds ``key``."""
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """:meth:`path` as text, for the calls made once per object (no Path object made)."""
        return os.path.join(self._root_text, check_key(key))  # a checked key: relative, no '..'

    def read(self, key: str, *, fresh: bool = False) -> bytes:
        """The file's bytes: only a regular file (never through a symlink at its own name,
        never a FIFO or device) of at most :data:`MAX_KEY_BYTES`, read to its size."""

        def read_file(fd: int, size: int) -> bytes:
            data = os.read(fd, size + 1) if size else b""
            while len(data) < size:  # a short read: read on to the size seen
                more = os.read(fd, size + 1 - len(data))
                if not more:
                    break
                data += more
            return data[:size]

        return self._reading(key, read_file)

    def readinto(self, key: str, buffers: Sequence[memoryview]) -> bool:
        """Straight into ``buffers``, with the checks of :meth:`read`: no copy of the bytes
        in between (a load reads a raw tensor's bytes where the tensor lives)."""

        def fill(fd: int, size: int) -> bool:
            if size != sum(len(buffer) for buffer in buffers):
                return False
            for buffer in buffers:
                while buffer:
                    count = os.readv(fd, [buffer])
                    if not count:
                        return False  # shorter than it was a moment ago
                    buffer = buffer[count:]
            return True

        return self._reading(key, fill)

    def _reading(self, key: str, action: Callable[[int, int], T]) -> T:
        """``action(fd, size)`` on the file of ``key``, opened only if it is a regular file
        (not through a symlink, never a FIFO or device) of at most MAX_KEY_BYTES."""
        path = self._file(key)

        def read_file() -> T:
            fd = os.open(path, os.O_RDONLY | O_BINARY | O_NOFOLLOW | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise UnexpectedFileError(f"{key} under {self.root} is not a regular file; aoe reads only files")
                if info.st_size > MAX_KEY_BYTES:
                    raise UnexpectedFileError(
                        f"{key} under {self.root} holds {info.st_size:,} bytes, more than aoe ever writes there")
                return action(fd, info.st_size)
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
        with self.lock(_folder_lock(key), wait=True):
            try:
                current: bytes | None = self.read(key)
            except NotFoundError:
                current = None
            if current != expected:
                return False
            if parts is None:
                return self.delete(key)
            return self.write(key, parts, exclusive=expected is None)

    def delete_unchanged(self, items: Sequence[tuple[str, bytes]]) -> Sequence[bool]:
        removed = [False] * len(items)
        folders: dict[str, list[int]] = {}
        for index, (key, _) in enumerate(items):
            folders.setdefault(_folder_lock(key), []).append(index)
        for lock, indexes in folders.items():
            with self.lock(lock, wait=True):
                for index in indexes:
                    key, expected = items[index]
                    try:
                        current = self.read(key)
                    except NotFoundError:
                        continue
                    if current == expected:
                        removed[index] = _unlinked(self._file(key))
                if any(removed[index] for index in indexes):
                    _synced(self.path(items[indexes[0]][0]).parent)
        return removed

    @contextmanager
    def lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        check_key(name)
        folder = self.root / LOCKS
        with_retries(lambda: self._ensure_dir(folder), f"making {folder}")
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | O_NOFOLLOW, 0o666)
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
        aside = path.with_name(f"{TEMP_PREFIX}gc-{random_hex(4)}-{path.name}")
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

    def list_versions(self, prefix: str, same_file: Mapping[str, str] | None = None) -> dict[str, str]:
        found: dict[str, str] = {}
        known = (same_file or {}).get  # looked up once: the loop runs for every ref
        try:
            with os.scandir(self.path(prefix)) as entries:
                for entry in entries:
                    name = entry.name
                    token = known(name)
                    if token is not None and token.startswith(f"{entry.inode()}:"):  # the same file: no stat
                        found[name] = token
                    elif not name.startswith(TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                        try:  # a symlink or special file is listed: reading it is refused, so it is seen
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:  # removed since listed
                            continue
                        found[name] = f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"
        except FileNotFoundError:
            pass
        return found

    def holds(self, token: str, content: bytes) -> bool:
        return False  # a token tells the file apart (inode, time), not what it holds

    def make_folder(self, prefix: str) -> None:
        folder = self.path(prefix)
        with_retries(lambda: self._ensure_dir(folder), f"making {folder}")

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

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool, durable: bool = True) -> bool:
        path = self.path(key)
        if exclusive and self.touch(key):
            return False
        return with_retries(lambda: self._in_folder(path, lambda: atomic_write(path, parts, exclusive=exclusive,
                                                                               durable=durable)),
                            f"writing {path}")

    @contextmanager
    def write_batch(self) -> Iterator[BatchWrite]:
        """Each write goes to a temporary file, unsynced; when the block ends they are
        fsynced together, linked into place, and their folders fsynced together: the
        steps of :func:`files.atomic_write`, each done once for the batch."""
        staged: list[tuple[Path, Path]] = []
        unsynced: set[Path] = set()  # folders written into, whose parents the batch fsyncs at its end

        def write(key: str, parts: Sequence[Buffer]) -> bool:
            path = self.path(key)
            if self.touch(key):
                return False
            temp = with_retries(lambda: self._in_folder(
                path, lambda: write_temp(path, parts, durable=False, start_writeback=True), unsynced), f"writing {path}")
            staged.append((temp, path))
            return True

        try:
            yield write
            if staged:
                with_retries(lambda: self._publish(staged, unsynced), f"writing {len(staged)} files under {self.root}")
        finally:
            for temp, _ in staged:
                remove_quietly(temp)

    def _publish(self, staged: Sequence[tuple[Path, Path]], unsynced: set[Path]) -> None:
        """Make a batch durable: its files fsynced together, linked into place, then their
        folders and the parents of the folders it made (or found) fsynced together; every
        folder those parents held before is then known durable."""
        folders = {folder.parent for folder in unsynced}
        trusted = [folder for parent in folders for folder in _folders_in(parent)]
        from concurrent.futures import ThreadPoolExecutor  # on first use: 5 ms of every start otherwise

        with ThreadPoolExecutor(min(SYNC_THREADS, len(staged))) as pool:
            for _ in pool.map(fsync_file, [temp for temp, _ in staged]):
                pass
            for temp, path in staged:
                if place(temp, path, exclusive=True):
                    folders.add(path.parent)
            for _ in pool.map(fsync_dir, folders):
                pass
        self._known_dirs.update(trusted)

    def _in_folder(self, path: Path, action: Callable[[], T], unsynced: set[Path] | None = None) -> T:
        """``action``, which writes into ``path``'s folder, after making sure the folder is
        there (once per folder: it is real, not a symlink); once more if it was removed."""
        self._ensure_dir(path.parent, unsynced)
        try:
            return action()
        except FileNotFoundError:  # the folder was removed under us: make it again, once
            self._known_dirs.clear()
            if unsynced is not None:
                unsynced.difference_update(path.parents)
            self._ensure_dir(path.parent, unsynced)
            return action()

    def _ensure_dir(self, folder: Path, unsynced: set[Path] | None = None) -> None:
        """Make sure ``folder`` and its parents are there, and durable in their parents,
        before what is written into it counts: a folder made here is fsynced into its
        parent; one found there is trusted once its parent is fsynced (its maker's batch
        may not have done it yet), one fsync for every folder the parent holds. A write
        batch (``unsynced``) leaves those fsyncs to its end, made with its files'
        (:meth:`_publish`): a first save into a new store makes dozens of folders. A folder
        inside the store that is a symlink is refused: aoe never writes through one."""
        if folder in self._known_dirs or (unsynced is not None and folder in unsynced):
            return
        inside = self.root in folder.parents
        if folder.parent != folder and (inside or not folder.exists()):
            self._ensure_dir(folder.parent, unsynced)
        try:
            info: os.stat_result | None = os.lstat(folder)
        except FileNotFoundError:
            info = None
        if info is not None and inside and not stat.S_ISDIR(info.st_mode):
            raise UnexpectedFileError(
                f"{folder} is a symlink or file where the store keeps a folder; aoe does not write "
                "through symlinks: replace it with a real folder")
        if info is not None and not inside:  # the store's own folder and those above it: as they are
            self._known_dirs.add(folder)
        elif unsynced is not None:
            if info is None:
                _make_folder(folder)
            unsynced.add(folder)
        elif info is None:
            _make_folder(folder)
            fsync_dir(folder.parent)
            self._known_dirs.add(folder)
        else:
            self._trust_folders_in(folder.parent)
            self._known_dirs.add(folder)

    def _trust_folders_in(self, parent: Path) -> None:
        """Fsync ``parent``: every folder it held before is then durable in it."""
        folders = _folders_in(parent)
        fsync_dir(parent)
        self._known_dirs.update(folders)


def _folders_in(parent: Path) -> list[Path]:
    """The real folders (not symlinks) in ``parent``."""
    with os.scandir(parent) as entries:
        return [Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)]


def _make_folder(folder: Path) -> None:
    try:
        os.mkdir(folder)
    except FileExistsError:  # made meanwhile by another writer
        pass


def _unless_missing(action: Callable[[], object], what: str) -> bool:
    """Run a file operation with retries; False when the file is not there."""
    try:
        with_retries(action, what)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return False
        raise
    return True


def _folder_lock(key: str) -> str:
    """The lock of a key's folder (``ref-1-fruity%runs``): a compare-and-swap of a ref holds
    its font's, so one lock covers many removals (docs/format.md, *Writing* 6)."""
    return "ref-" + key.rpartition("/")[0].replace("/", "%")


def _unlinked(path: str) -> bool:
    return _unless_missing(lambda: os.unlink(path), f"deleting {path}")


def _synced(folder: Path) -> None:
    with_retries(lambda: fsync_dir(folder), f"deleting from {folder}")
