"""The ``best`` alias as a training moves it: to each checkpoint its framework calls best,
by compare-and-swap from where this training last put it. If another process moved it
meanwhile, that process owns it: a warning says so and this training leaves it alone (a
training never fails for it)."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import ConflictError
from ..store import Store
from ..store.aliasing import UNCHECKED


class BestAlias:
    """An alias of a font that one training moves (None: it moves none)."""

    def __init__(self, store: Store, font_id: str, name: str | None) -> None:
        self.store, self.font_id, self.name = store, font_id, name
        self._at: Any = UNCHECKED  # where this training last put it (None once it gave up)

    def move(self, run_id: str, note: str) -> None:
        """Point the alias at ``run_id``, the training's best so far."""
        if self.name is None or self._at is None:
            return
        try:
            self.store.set_alias(self.font_id, self.name, run_id, expected_run=self._at, note=note)
        except ConflictError as exc:
            warnings.warn(f"{exc}; this training no longer moves it", stacklevel=3)
            self._at = None
            return
        self._at = run_id
