"""A backend in memory: fast, deterministic tests of everything above the backends.

``Store("memory://name")`` opens the same in-memory store for every caller in this
process. Times come from an injectable clock (``clock``), so a test of gc's grace
period moves time forward instead of sleeping. It keeps the backend contract
(``tests/test_backend_contract.py``) except that its locks hold within one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

from ..errors import NotFoundError, UnexpectedFileError
from ..layout import FONTS, lock_key
from .base import MAX_KEY_BYTES, BatchWrite, Buffer, check_key, direct_batch


class MemoryBackend:
    """Keys in a dictionary, with mtimes from ``clock``."""

    folders = True
    atomic_touch = True
    round_trips = False
    missing_hint = "a memory:// store lives only as long as its process"
    _named: ClassVar[dict[str, MemoryBackend]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, location: str = "memory://", clock: Callable[[], float] = time.time) -> None:
        self.location: str | Path = location
        self.clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._folders: set[str] = set()
        self._versions: dict[str, int] = {}
        self._lock = threading.RLock()
        self._locks: dict[str, threading.Lock] = {}

    @classmethod
    def named(cls, location: str) -> MemoryBackend:
        """The one memory store of this name in this process."""
        with cls._named_lock:
            if location not in cls._named:
                cls._named[location] = cls(location)
            return cls._named[location]

    def __repr__(self) -> str:
        return f"MemoryBackend({self.location!r})"

    def _changed(self, key: str) -> None:
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        self._versions[folder] = self._versions.get(folder, 0) + 1

    # -- the protocol --

    def created(self) -> bool:
        return bool(self._data) or FONTS in self._folders

    def local_path(self, name: str) -> Path | None:
        return None  # nothing on disk: the catalog stays in memory

    def forget(self, key: str) -> None:
        """Nothing is cached here."""

    def read(self, key: str, *, fresh: bool = False) -> bytes:
        with self._lock:
            entry = self._data.get(check_key(key))
        if entry is None:
            raise NotFoundError(f"{key} not found in {self.location}")
        if len(entry[0]) > MAX_KEY_BYTES:
            raise UnexpectedFileError(f"{key} holds more than aoe ever writes there")
        return entry[0]

    def readinto(self, key: str, buffers: Sequence[memoryview]) -> bool:
        return False  # nothing to save: the bytes arrive in a buffer of their own

    def write_batch(self) -> AbstractContextManager[BatchWrite]:
        return direct_batch(self)  # each write is durable as it lands

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool, durable: bool = True) -> bool:
        data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        with self._lock:
            if exclusive and check_key(key) in self._data:
                self._data[key] = (self._data[key][0], self.clock())
                return False
            self._data[check_key(key)] = (data, self.clock())
            self._changed(key)
            return True

    def touch(self, key: str) -> bool:
        with self._lock:
            if check_key(key) not in self._data:
                return False
            self._data[key] = (self._data[key][0], self.clock())
            return True

    def exists(self, key: str) -> bool:
        return check_key(key) in self._data

    def list(self, prefix: str) -> Iterator[str]:
        base = prefix.strip("/")
        with self._lock:
            keys = sorted(k for k in self._data if not base or k.startswith(base + "/"))
        yield from keys

    def delete(self, key: str) -> bool:
        with self._lock:
            if self._data.pop(check_key(key), None) is None:
                return False
            self._changed(key)
            return True

    def stat(self, key: str) -> tuple[int, float] | None:
        entry = self._data.get(check_key(key))
        return None if entry is None else (len(entry[0]), entry[1])

    def delete_unchanged(self, items: Sequence[tuple[str, bytes]]) -> Sequence[bool]:
        return [self.compare_and_swap(key, expected, None) for key, expected in items]

    def compare_and_swap(self, key: str, expected: bytes | None, parts: Sequence[Buffer] | None) -> bool:
        with self._lock:
            current = self._data.get(check_key(key))
            if (current[0] if current else None) != expected:
                return False
            if parts is None:
                return self.delete(key)
            return self.write(key, parts, exclusive=expected is None)

    @contextmanager
    def lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        with self._lock:
            lock = self._locks.setdefault(check_key(name), threading.Lock())
            self.write(lock_key(name), [b""], exclusive=True)  # a lock file, as on a disk (gc reads its mtime)
        acquired = lock.acquire(blocking=wait)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    def delete_if_untouched(self, key: str, cutoff: float) -> bool:
        with self._lock:
            entry = self._data.get(check_key(key))
            if entry is None or entry[1] >= cutoff:
                return False
            return self.delete(key)

    def temp_files(self) -> Iterator[tuple[str, float]]:
        return iter(())  # writes are atomic in memory: none is ever left over

    def remove_temp(self, name: str) -> None:
        raise NotFoundError(f"{name} is not a temporary file of {self.location}")

    def folder_version(self, prefix: str) -> int | None:
        return self._versions.get(prefix.strip("/"))

    def list_versions(self, prefix: str, same_file: Mapping[str, str] | None = None) -> dict[str, str]:
        base = prefix.strip("/") + "/"
        with self._lock:
            return {k[len(base):]: f"{id(v[0])}:{v[1]}" for k, v in self._data.items()
                    if k.startswith(base) and "/" not in k[len(base):]}

    def holds(self, token: str, content: bytes) -> bool:
        return False  # a token tells the file apart (inode, time), not what it holds

    def make_folder(self, prefix: str) -> None:
        with self._lock:
            self._folders.add(check_key(prefix.strip("/")))
            self._versions.setdefault(prefix.strip("/"), 0)

    def has_folder(self, prefix: str) -> bool:
        base = prefix.strip("/")
        return base in self._folders or any(k.startswith(base + "/") for k in self._data)
