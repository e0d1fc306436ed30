"""Creating fonts, forking them from a run, and finding them."""

from __future__ import annotations

from dataclasses import replace

from ..errors import (
    FontExistsError,
)
from ..names import (
    check_font_id,
    check_font_name,
    font_number,
    format_time,
    parse_time,
    utc_now,
)
from .lineage import Lineage


class Fonts(Lineage):
    """Fonts: create them, ask for them."""

    def create_font(self, name: str, *, exist_ok: bool = False) -> str:
        """Create a font and return its id.

        ``"fruity"`` takes the next free number (``"1-fruity"``), atomically even with
        other processes creating fonts; ``"7-fruity"`` takes exactly that id. A number
        already taken (also by a deleted, restorable font), or a name another font
        already has, is refused; with ``exist_ok`` a whole id that exists is returned.
        """
        if exist_ok and self.has_font(name):
            return name
        trashed = self.refs.trashed_font_numbers()
        if isinstance(name, str) and name[:1].isdigit() and "-" in name:
            font_id = check_font_id(name)
            self._refuse_taken_name(font_id.split("-", 1)[1])
            number = font_number(font_id)
            if number in trashed:
                raise FontExistsError(
                    f"font number {number} belongs to the deleted font {trashed[number]!r}; restore it "
                    f"with `aoe store restore {trashed[number]}`, or pick another number"
                )
            if self.refs.font_with_number(number) is not None or not self.refs.claim_font(font_id):
                raise FontExistsError(
                    f"font number {number} is taken by {self.refs.font_with_number(number)!r}; "
                    f"pick another number, or pass just the name to get the next free one"
                )
        else:
            check_font_name(name)
            self._refuse_taken_name(name)
            taken = [font_number(f) for f in self.refs.fonts()] + list(trashed)
            number = max(taken, default=0) + 1
            while not self.refs.claim_font(f"{number}-{name}"):
                number += 1
            font_id = f"{number}-{name}"
        return font_id

    def fork_font(self, font_id: str, name: str, run_id: str | None = None) -> tuple[str, str]:
        """A new font whose first run holds a run's content (the newest by default; or
        ``FONT@ALIAS``): the same objects, not a byte copied, the run named as its parent.
        ``name`` as :meth:`create_font` takes it; a font of that name that has no run yet
        (a fork cut short) is forked into. Returns the new font's id and its run's id."""
        source = self.open_run(font_id, run_id)
        parent = self.parent_runs([source])[0]
        new = next((f for f in self.refs.fonts() if name in (f, f.split("-", 1)[1]) and not self.refs.runs(f)), None)
        new = new or self.create_font(name)
        kept = source.manifest
        moment = parse_time(kept.started_at) or parse_time(kept.saved_at) or utc_now()
        with self.transaction() as transaction:
            forked, _ = transaction.publish(lambda candidate: replace(
                kept, font_id=new, run_id=candidate, saved_at=format_time(utc_now()), parent=None,
                parents=(parent,)), new, moment)
        return new, forked

    def _refuse_taken_name(self, name: str) -> None:
        for font_id in self.refs.fonts():
            if font_id.split("-", 1)[1] == name:
                raise FontExistsError(
                    f"a font named {name!r} already exists: {font_id!r}; use that id, "
                    "or choose another name"
                )

    def has_font(self, font_id: str) -> bool:
        """Whether the font exists (``font_id`` a whole id, ``1-fruity``)."""
        return self.refs.font_with_number(font_number(check_font_id(font_id))) == font_id
