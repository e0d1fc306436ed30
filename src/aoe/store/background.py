"""Saving without stopping training: the caller's thread only copies the tensors, and a
worker thread of the store hashes, compresses, writes and publishes the run.

A background save is the same transaction as any save (kill -9 at any moment leaves the
whole run or none); at most :data:`MAX_PENDING` wait or run at once, so a trainer that
saves faster than the disk can take is slowed down instead of filling memory with
copies. A failure surfaces on the handle (:meth:`PendingSave.result`) and, if nobody
looked at it, on the store's next save. The process exiting waits for the saves still
pending (the worker is a ``concurrent.futures`` thread, which Python joins at exit).
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StoreError

if TYPE_CHECKING:
    from concurrent.futures import Future

MAX_PENDING = 2
"""Background saves of one store that may be waiting or running at once."""


class PendingSave:
    """A save running in the background: ``result()`` waits for its run id (or raises
    what made it fail)."""

    def __init__(self, font_id: str, future: Future[str], owner: BackgroundSaves) -> None:
        self.font_id = font_id
        self._future = future
        self._owner = owner

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "pending"
        return f"PendingSave({self.font_id!r}, {state})"

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> str:
        """The run id, once published; raises the save's error (and then no later save
        raises it again)."""
        self._owner.observed(self)
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._owner.observed(self)
        return self._future.exception(timeout)


class BackgroundSaves:
    """The background saves of one store: one worker, at most ``limit`` pending."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        from concurrent.futures import ThreadPoolExecutor  # here, not at import: 5 ms of every command's start

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aoe-save")
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._unobserved: list[PendingSave] = []
        self._inflight: set[Future[str]] = set()
        # Python stops every thread pool from taking work as it exits, and a save needs
        # pools of its own: so wait at the same moment, before that (a later atexit
        # handler would be too late), through the hook the thread pools themselves use.
        getattr(threading, "_register_atexit", atexit.register)(self._finish_at_exit)

    def _finish_at_exit(self) -> None:
        pending = len(self._inflight)
        if pending:
            print(f"aoe: waiting for {pending} background save(s) to finish before exiting", file=sys.stderr)
        self.wait()

    def submit(self, font_id: str, save: Callable[[], str]) -> PendingSave:
        """Run ``save`` on the worker; waits first while ``limit`` saves are pending."""
        self.raise_failures()
        self._slots.acquire()
        try:
            future = self._pool.submit(save)
        except BaseException:
            self._slots.release()
            raise
        pending = PendingSave(font_id, future, self)
        with self._lock:
            self._unobserved.append(pending)
            self._inflight.add(future)
        future.add_done_callback(self._finished)
        return pending

    def _finished(self, future: Future[str]) -> None:
        with self._lock:
            self._inflight.discard(future)
        self._slots.release()

    def observed(self, pending: PendingSave) -> None:
        with self._lock:
            if pending in self._unobserved:
                self._unobserved.remove(pending)

    def raise_failures(self) -> None:
        """Raise the error of a background save that failed unseen (once)."""
        with self._lock:
            failed = [p for p in self._unobserved if p.done() and p._future.exception() is not None]
            self._unobserved = [p for p in self._unobserved if not p.done()]
        if failed:
            error = failed[0]._future.exception()
            raise StoreError(
                f"an earlier background save into {failed[0].font_id} failed: {error}; nothing of it was "
                f"published{f' ({len(failed) - 1} more failed too)' if len(failed) > 1 else ''}"
            ) from error

    def wait(self) -> None:
        """Wait until every pending save has finished (failed ones included)."""
        with self._lock:
            inflight = list(self._inflight)
        from concurrent import futures

        futures.wait(inflight)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

