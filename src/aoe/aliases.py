"""Aliases: names of runs that move (``best``, ``production``), every move kept.

An alias is a folder ``<font>/aliases/<name>/`` of create-only files, one per move,
numbered from 1 (``0000000001``, ``0000000002``...). Each holds what the alias points at
from then on (a run, and the manifest the run had then; or nothing: removed), when, and
why. An alias points where its highest-numbered move says.

Moving is a compare-and-swap by construction: a mover reads the newest move n and creates
move n+1, create-only; of two movers that read the same n, one creates n+1 and the other
finds it there and gets a :class:`ConflictError`. Nothing is rewritten or removed, so the
history is whole (``aoe store log FONT@best``, like git's reflog), a crash leaves a move
whole or absent, and a move is durable when ``move`` returns (the one atomic write).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from .backends import Backend
from .errors import ConflictError, FormatError, InvalidInputError, InvalidNameError, NotFoundError, StoreError
from .layout import ALIAS_HINT as HINT
from .layout import MOVE_DIGITS, alias_folder, alias_move_at, alias_move_key, aliases_folder
from .limits import parse_json
from .names import Digest, check_alias, check_font_id, check_run_id, check_text, check_time, parse_digest

MAX_NOTE_LENGTH = 1000
MAX_MOVE_BYTES = 4096
"""A move's file is a few hundred bytes; a larger one is refused unread."""


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: from ``at`` on, it points at ``run_id`` (None: removed)."""

    font_id: str
    alias: str
    move: int
    run_id: str | None
    manifest: Digest | None
    at: str
    note: str = ""

    @property
    def key(self) -> str:
        return alias_move_key(self.font_id, self.alias, self.move)

    def to_bytes(self) -> bytes:
        fields = {"font_id": self.font_id, "alias": self.alias, "move": self.move, "run": self.run_id,
                  "manifest": self.manifest, "at": self.at, "note": self.note}
        return (json.dumps(fields, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def to_dict(self) -> dict[str, object]:
        return {"font_id": self.font_id, "alias": self.alias, "move": self.move, "run_id": self.run_id,
                "manifest": self.manifest, "at": self.at, "note": self.note}

    @classmethod
    def parse(cls, key: str, data: bytes) -> AliasMove:
        """A move read from ``key``, every field checked (and that it is where it says
        it is: a move copied to another alias or font is refused)."""
        try:
            if len(data) > MAX_MOVE_BYTES:
                raise ValueError
            fields = parse_json(data)
            run_id, manifest = fields["run"], fields["manifest"]
            if (run_id is None) != (manifest is None) or not isinstance(fields["move"], int):
                raise ValueError
            move = cls(check_font_id(fields["font_id"]), check_alias(fields["alias"]), fields["move"],
                       None if run_id is None else check_run_id(run_id),
                       None if manifest is None else parse_digest(manifest),
                       fields["at"], _note(fields.get("note", "")))
            check_time(move.at, "time")
        except (ValueError, TypeError, KeyError):  # InvalidNameError and InvalidInputError are ValueErrors
            raise FormatError(f"alias move {key} is malformed; run `aoe store fsck`") from None
        if move.key != key:
            raise FormatError(f"alias move {key} says it is {move.key}; run `aoe store fsck`")
        return move


def _note(value: object) -> str:
    text = check_text(value, "an alias move's note") or ""
    if len(text) > MAX_NOTE_LENGTH:
        raise InvalidInputError(f"an alias move's note is longer than {MAX_NOTE_LENGTH:,} characters")
    return text


class Aliases:
    """Every alias of every font, on a backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def names(self, font_id: str) -> list[str]:
        """The font's aliases that were ever set (removed ones too), by name."""
        return sorted(self._numbers(self.backend.list(aliases_folder(font_id))))

    def newest_number(self, font_id: str, alias: str) -> int:
        """The number of the alias's newest move (0: never set). On a local folder the
        ``HEAD`` hint a mover leaves is tried first, and taken only if its move is there
        and the next is not (moves are made one after another, never removed): two looks,
        however long the history; anything else lists the alias's moves."""
        if not self.backend.round_trips:
            hinted = self._hinted(font_id, alias)
            if hinted is not None:
                return hinted
        return max(self._numbers(self.backend.list(alias_folder(font_id, alias))).get(alias, [0]))

    def _hinted(self, font_id: str, alias: str) -> int | None:
        try:
            text = self.backend.read(f"{alias_folder(font_id, alias)}/{HINT}")
        except (NotFoundError, FormatError):
            return None
        number = int(text) if len(text) <= 16 and text.strip().isdigit() else 0
        if 0 < number < 10**MOVE_DIGITS - 1 and self.backend.exists(alias_move_key(font_id, alias, number)) \
                and not self.backend.exists(alias_move_key(font_id, alias, number + 1)):
            return number
        return None

    def newest(self, font_id: str, alias: str) -> AliasMove | None:
        """The alias's newest move (None: never set). Raises FormatError when that move
        cannot be read: the alias is unreadable, never silently older."""
        number = self.newest_number(font_id, alias)
        return self.read(font_id, alias, number) if number else None

    def newest_of_font(self, font_id: str) -> dict[str, AliasMove | FormatError]:
        """Each alias's newest move, by name (one listing of the font's aliases): a move
        that cannot be read is given as the error, so one bad alias hides no other."""
        found: dict[str, AliasMove | FormatError] = {}
        for alias, numbers in sorted(self._numbers(self.backend.list(aliases_folder(font_id))).items()):
            try:
                move = self.read(font_id, alias, max(numbers))
            except FormatError as exc:
                found[alias] = exc
                continue
            except NotFoundError:  # pragma: no cover - moves are never removed by aoe
                continue
            found[alias] = move
        return found

    def history(self, font_id: str, alias: str) -> list[AliasMove]:
        """Every move of the alias, oldest first; FormatError names a move that cannot be
        read (fsck does too)."""
        numbers = self._numbers(self.backend.list(alias_folder(font_id, alias))).get(alias, [])
        return [self.read(font_id, alias, number) for number in sorted(numbers)]

    def move(self, font_id: str, alias: str, run_id: str | None, manifest: Digest | None, at: str, *,
             after: int, note: str = "") -> AliasMove:
        """Point the alias at ``run_id`` (None: remove it), if its newest move is still
        the ``after``-th (0: it was never set); a ConflictError if another moved it first."""
        number = after + 1
        move = AliasMove(check_font_id(font_id), check_alias(alias), number,
                         None if run_id is None else check_run_id(run_id),
                         None if manifest is None else parse_digest(manifest), at, _note(note))
        if not self.backend.write(move.key, [move.to_bytes()], exclusive=True):
            raise ConflictError(
                f"alias {alias} of {font_id} was moved by another process meanwhile (its move {number} exists); "
                f"nothing was changed: see `aoe store log {font_id}@{alias}` and try again")
        if not self.backend.round_trips:  # the hint for readers; a lost or stale one only costs them a listing
            try:
                self.backend.write(f"{alias_folder(font_id, alias)}/{HINT}", [f"{number}\n".encode()],
                                   exclusive=False, durable=False)
            except StoreError:
                pass
        return move

    def read(self, font_id: str, alias: str, number: int) -> AliasMove:
        key = alias_move_key(font_id, alias, number)
        return AliasMove.parse(key, self.backend.read(key))

    @staticmethod
    def _numbers(keys: Iterable[str]) -> dict[str, list[int]]:
        """The move numbers of each alias among listed keys (other files are fsck's)."""
        found: dict[str, list[int]] = {}
        for key in keys:
            place = alias_move_at(key)
            if place is not None:
                found.setdefault(place[0], []).append(place[1])
        return found


def split_alias(text: str) -> tuple[str, str | None]:
    """``FONT@NAME`` -> (FONT, NAME); ``FONT`` -> (FONT, None). Each part checked."""
    font_id, at, alias = text.partition("@")
    check_font_id(font_id)
    if not at:
        return font_id, None
    try:
        return font_id, check_alias(alias)
    except InvalidNameError as exc:
        raise InvalidNameError(f"{exc} (in {text!r})") from None
