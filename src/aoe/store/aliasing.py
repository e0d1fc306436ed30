"""Aliases of runs (``best``, ``production``): set, moved by compare-and-swap, removed,
their history, and which runs they protect. The records themselves: :mod:`aoe.aliases`."""

from __future__ import annotations

from typing import Final

from ..aliases import AliasMove
from ..errors import ConflictError, FormatError, NotFoundError, ProtectedRunError
from ..names import check_alias, format_time, utc_now
from .base import StoreBase


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Final = _Unchecked()
"""``expected_run`` not given: the alias moves from wherever it points now."""


class Aliasing(StoreBase):
    """Named, movable pointers to runs, every move kept."""

    def set_alias(self, font_id: str, alias: str, run_id: str | None = None, *,
                  expected_run: str | _Unchecked | None = UNCHECKED, note: str = "") -> AliasMove:
        """Point ``alias`` of a font at a run (a run id, ``"@OTHER"`` for where another
        alias points, or None: the newest run). With ``expected_run`` (a run id, or None:
        not set now) it moves only if it points there now. Two processes moving one alias
        at once: one moves it, the other gets a :class:`ConflictError`, nothing written."""
        check_alias(alias)
        font_id, run_id = self.run_named(font_id, run_id)
        return self._move(font_id, alias, run_id, expected_run, note)

    def remove_alias(self, font_id: str, alias: str, *, expected_run: str | _Unchecked | None = UNCHECKED,
                     note: str = "") -> AliasMove:
        """Remove an alias (a move to nothing: its history is kept, and it may be set again)."""
        check_alias(alias)
        self._require_font(font_id)
        return self._move(font_id, alias, None, expected_run, note)

    def _move(self, font_id: str, alias: str, run_id: str | None, expected_run: str | _Unchecked | None,
              note: str) -> AliasMove:
        number = self.aliases.newest_number(font_id, alias)
        if not isinstance(expected_run, _Unchecked):
            now = self.aliases.read(font_id, alias, number).run_id if number else None
            if now != expected_run:
                raise ConflictError(f"alias {alias} of {font_id} points at {now or 'no run'}, not "
                                    f"{expected_run or 'no run'}; nothing was changed")
        elif run_id is None and (number == 0 or self.aliases.read(font_id, alias, number).run_id is None):
            raise NotFoundError(f"font {font_id} has no alias {alias!r} to remove (aliases: "
                                f"{', '.join(self.aliases_of(font_id)) or 'none'})")
        digest = self.refs.read_run(font_id, run_id) if run_id is not None else None
        return self.aliases.move(font_id, alias, run_id, digest, format_time(utc_now()), after=number, note=note)

    def aliases_of(self, font_id: str) -> dict[str, str]:
        """Each alias of a font that points at a run: name -> run id (removed aliases and
        those whose newest move cannot be read, which fsck names, left out)."""
        self._require_font(font_id)
        return {name: move.run_id for name, move in self.aliases.newest_of_font(font_id).items()
                if isinstance(move, AliasMove) and move.run_id is not None}

    def alias_history(self, font_id: str, alias: str) -> list[AliasMove]:
        """Every move of an alias, oldest first (like git's reflog)."""
        self._require_font(font_id)
        return self.aliases.history(font_id, alias)

    def protected_runs(self, font_id: str) -> dict[str, list[str]]:
        """Runs aliases point at: run id -> alias names. An alias whose newest move cannot
        be read protects every run (a FormatError naming it): what it points at is unknown."""
        runs: dict[str, list[str]] = {}
        for name, move in self.aliases.newest_of_font(font_id).items():
            if isinstance(move, FormatError):
                raise FormatError(f"{move}: it may name any run of {font_id}, so none is deleted without force")
            if move.run_id is not None:
                runs.setdefault(move.run_id, []).append(name)
        return runs

    def require_unprotected(self, font_id: str, run_id: str) -> None:
        """Refuse (ProtectedRunError) to delete a run an alias points at."""
        names = self.protected_runs(font_id).get(run_id)
        if names:
            shown = ", ".join(f"{font_id}@{name}" for name in names)
            raise ProtectedRunError(f"run {run_id} of {font_id} is {shown}: move or remove the alias first, "
                                    "or delete it anyway with force (`--force`)")
