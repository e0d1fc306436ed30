"""Wrappers around any backend: read-only access, and faults injected for tests.

A wrapper keeps the protocol and forwards every call it does not change, so it sits
under the same store logic as what it wraps (zarr-python's wrapper stores).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import StorageError
from .base import Backend, BatchWrite, Buffer
from .files import storage_error


class Wrapper:
    """Forwards everything to ``inner``; subclasses change what they need."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.folders = inner.folders
        self.atomic_touch = inner.atomic_touch
        self.round_trips = inner.round_trips
        self.location: str | Path = inner.location
        self.missing_hint = inner.missing_hint

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"




class ReadOnlyBackend(Wrapper):
    """Refuses every change (``Store(read_only=True)``: a browser of a store never writes)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise StorageError(f"{self.location} is open read-only; nothing was changed")

    write = write_batch = touch = delete = compare_and_swap = delete_if_untouched = remove_temp = make_folder = delete_unchanged = _refuse

    @contextmanager
    def lock(self, name: str, *, wait: bool) -> Iterator[bool]:
        raise StorageError(f"{self.location} is open read-only; nothing was changed")
        yield False  # pragma: no cover


class FaultyBackend(Wrapper):
    """Fails chosen calls, for tests: ``fail("write", after=3, error=ENOSPC)`` makes the
    fourth write and every one after it fail as a full disk would."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: dict[str, int] = {}
        self._faults: dict[str, tuple[int, int, Callable[[str], bool]]] = {}

    def fail(self, method: str, *, after: int = 0, error: int = errno.EIO,
             when: Callable[[str], bool] = lambda key: True) -> None:
        """From the ``after``-th call of ``method`` on (on keys ``when`` accepts), raise the
        StorageError that an OSError ``error`` becomes."""
        self._faults[method] = (after, error, when)

    def heal(self) -> None:
        self._faults.clear()

    def _maybe_fail(self, method: str, key: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        fault = self._faults.get(method)
        if fault is not None and self.calls[method] > fault[0] and fault[2](key):
            raise storage_error(OSError(fault[1], f"injected {errno.errorcode.get(fault[1], fault[1])}"),
                                f"{method} {key}")

    def read(self, key: str, *, fresh: bool = False) -> bytes:
        self._maybe_fail("read", key)
        return self.inner.read(key, fresh=fresh)

    def readinto(self, key: str, buffers: Sequence[memoryview]) -> bool:
        self._maybe_fail("read", key)
        return self.inner.readinto(key, buffers)

    def write(self, key: str, parts: Sequence[Buffer], *, exclusive: bool, durable: bool = True) -> bool:
        self._maybe_fail("write", key)
        return self.inner.write(key, parts, exclusive=exclusive, durable=durable)

    @contextmanager
    def write_batch(self) -> Iterator[BatchWrite]:
        with self.inner.write_batch() as write:
            def faulty(key: str, parts: Sequence[Buffer]) -> bool:
                self._maybe_fail("write", key)
                return write(key, parts)

            yield faulty

    def touch(self, key: str) -> bool:
        self._maybe_fail("touch", key)
        return self.inner.touch(key)

    def delete(self, key: str) -> bool:
        self._maybe_fail("delete", key)
        return self.inner.delete(key)

    def compare_and_swap(self, key: str, expected: bytes | None, parts: Sequence[Buffer] | None) -> bool:
        self._maybe_fail("compare_and_swap", key)
        return self.inner.compare_and_swap(key, expected, parts)

    def delete_unchanged(self, items: Sequence[tuple[str, bytes]]) -> Sequence[bool]:
        for key, _ in items:
            self._maybe_fail("compare_and_swap", key)
        return self.inner.delete_unchanged(items)

    def lock(self, name: str, *, wait: bool) -> AbstractContextManager[bool]:
        self._maybe_fail("lock", name)
        return self.inner.lock(name, wait=wait)
