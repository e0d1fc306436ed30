"""A folder driven as object storage drives its backend: no atomic touch (gc sweeps in two
phases), each call a round trip (listings take rows from listing snapshots, and share
them), and its catalog index in memory (each Store a new machine). Shared by the crash
states (test_crashes.py) and the fuzzer of derived data (fuzz_derived.py)."""

from __future__ import annotations

from pathlib import Path

from aoe.backends.local import LocalBackend
from aoe.backends.wrappers import Wrapper


class LikeObjectStorage(Wrapper):
    def __init__(self, inner: LocalBackend) -> None:
        super().__init__(inner)
        self.atomic_touch = False
        self.round_trips = True

    def local_path(self, name: str) -> Path | None:
        return None
