"""Changing published runs, which stay immutable: amends and edits (a new manifest whose
parent is the old one), deletion into the trash, and restoring from it."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import inputs, reachability
from ..errors import (
    FontExistsError,
    FontNotFoundError,
    FormatError,
    InvalidInputError,
    RunExistsError,
    RunNotFoundError,
    StoreError,
)
from ..manifests import Manifest, unpack
from ..names import (
    Digest,
    check_font_id,
    check_tags,
    check_text,
    font_number,
    format_time,
    utc_now,
)
from ..refs import TrashRecord
from ..runinfo import RunInfo

if TYPE_CHECKING:
    pass

from .aliasing import Aliasing
from .base import MAX_MOVE_ATTEMPTS
from .run import Run


class History(Aliasing):
    """Amend, delete and restore runs; their history."""

    def amend_run(
        self,
        font_id: str,
        run_id: str,
        *,
        sample_image: inputs.ImageInput | None = None,
        eval_glyphs: Mapping[str, inputs.ImageInput] | str | os.PathLike[str] | None = None,
        feedback: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        personality_vector: Any = None,
        name: str | None = None,
        description: str | None = None,
        tags: tuple[str, ...] | list[str] | None = None,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
    ) -> Run:
        """Add or replace a published run's assets or descriptions.

        The run stays immutable: a new manifest is written that names the old one as
        its ``parent``, and the ref moves to it by compare-and-swap, so two editors at
        once never lose each other's change (``add_tags``/``remove_tags`` apply to the
        tags the run has at that moment; ``tags`` replaces them). Given glyphs are added
        to (or replace) the run's glyphs. Returns the amended run.
        """
        font_id, run_id = self.run_named(font_id, run_id)
        texts = {"name": check_text(name, "name"),
                 "description": check_text(description, "description", lines=True)}
        new_tags = check_tags(tags) if tags is not None else None
        adding, removing = check_tags(add_tags), set(check_tags(remove_tags))
        with self.transaction() as transaction:
            parts = self.write_assets(None, personality_vector, sample_image, eval_glyphs, feedback)
            for _ in range(MAX_MOVE_ATTEMPTS):
                current = self.open_run(font_id, run_id)
                old = current.manifest
                changes: dict[str, Any] = {k: v for k, v in parts.items() if v and k != "extras"}
                if "feedback" in changes:  # new feedback, new metrics (maybe none)
                    changes["metrics"] = parts["metrics"]
                if "glyphs" in changes:
                    changes["glyphs"] = {**old.glyphs, **changes["glyphs"]}
                changes.update({k: v for k, v in texts.items() if v is not None})
                if new_tags is not None or adding or removing:
                    base = new_tags if new_tags is not None else old.tags
                    changes["tags"] = tuple(t for t in dict.fromkeys((*base, *adding)) if t not in removing)
                new = replace(old, **changes, parent=current.digest, saved_at=format_time(utc_now()))
                digest = transaction.move(font_id, run_id, current.digest, new)
                if digest is not None:
                    return Run(self.objects, new, digest)
        raise StoreError(  # pragma: no cover - needs 10 editors racing on one run
            f"run {run_id} of {font_id} kept changing under this amend; try again"
        )

    def tag_run(self, font_id: str, run_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> RunInfo:
        """Add and remove tags of a published run (a new version; history kept)."""
        return self.amend_run(font_id, run_id, add_tags=add, remove_tags=remove).info

    def describe_run(
        self, font_id: str, run_id: str, *, name: str | None = None, description: str | None = None
    ) -> RunInfo:
        """Set a published run's name and/or description (a new version; history kept)."""
        return self.amend_run(font_id, run_id, name=name, description=description).info

    def run_history(self, font_id: str, run_id: str | None = None) -> list[RunInfo]:
        """A run and the versions it amended, newest first: as far as they can be read (a
        parent missing or of another run ends the history; the last version's ``parent``
        then names what could not be read, and fsck reports it)."""
        run = self.open_run(font_id, run_id)
        history = [run.info]
        older = self.versions(run.digest)
        next(older)  # the run itself, read already
        try:
            history += [Run(self.objects, manifest, digest).info for digest, manifest in older]
        except StoreError:
            pass
        return history

    def versions(self, digest: Digest) -> Iterator[tuple[Digest, Manifest]]:
        """A manifest and the ones it amended (its ``parent`` chain), newest first, each
        read and verified (see :func:`aoe.reachability.versions`)."""
        return reachability.versions(self.objects, digest)

    def delete_run(self, font_id: str, run_id: str | None = None, *, force: bool = False) -> TrashRecord:
        """Remove a run; it stays recoverable with :meth:`restore_run` until a gc. A run an
        alias points at is refused (:class:`ProtectedRunError`) unless ``force``.

        The record of what was removed, and when, is kept even after the gc.
        """
        if run_id is None and "@" not in font_id:
            raise InvalidInputError("name the run to delete: a run id, or FONT@ALIAS")
        font_id, run_id = self.run_named(font_id, run_id)
        if not force:
            self.require_unprotected(font_id, run_id)
        for _ in range(MAX_MOVE_ATTEMPTS):
            digest = self.refs.read_run(font_id, run_id)
            record = TrashRecord(font_id, run_id, digest, format_time(utc_now()))
            if self.refs.trash_run(font_id, run_id, digest, record.deleted_at):
                return record
        raise StoreError(  # pragma: no cover - needs 10 editors racing on one run
            f"run {run_id} of {font_id} kept changing while being deleted; try again"
        )

    def delete_font(self, font_id: str) -> list[TrashRecord]:
        """Remove a font and all its runs, recoverable with :meth:`restore_font` until a gc."""
        self._require_font(font_id)
        self.refs.begin_font_deletion(font_id, format_time(utc_now()))  # saves into it now fail cleanly
        records = [self.delete_run(font_id, run_id, force=True) for run_id in self.refs.runs(font_id)]
        self.refs.end_font_deletion(font_id)
        return records

    def trashed(self, font_id: str | None = None) -> list[TrashRecord]:
        """What was deleted (of one font or all), with when, and whether gc purged it."""
        self.require_root()
        return self.refs.trashed(font_id)

    def restore_run(self, font_id: str, run_id: str) -> RunInfo:
        """Bring back a deleted run, if no gc has purged its data since."""
        self._require_font(font_id)
        records = [r for r in self.refs.trashed(font_id) if r.run_id == run_id]
        if not records:
            raise RunNotFoundError(f"no deleted run {run_id!r} of {font_id}; see `aoe store trash`")
        record = records[0]
        if record.purged_at or record.manifest is None:
            raise RunNotFoundError(
                f"run {run_id} of {font_id} was deleted on {record.deleted_at} and its data purged "
                f"by a gc on {record.purged_at}; it cannot be restored"
            )
        with self.transaction() as transaction:  # like a save: gc spares what the ref is about to need
            try:
                manifest: Manifest | None = unpack(self.objects.get(record.manifest))
            except FormatError:  # set aside by fsck as unreadable: it comes back as it was
                manifest = None
            if not transaction.create(font_id, run_id, record.manifest, manifest.digests() if manifest else ()):
                raise RunExistsError(f"a run {run_id} of {font_id} exists again; nothing was restored")
        self.refs.forget_trashed(record)
        if manifest is None:
            return RunInfo.unreadable(font_id, run_id, "restored as it was set aside: its manifest cannot be read")
        return Run(self.objects, manifest, record.manifest).info

    def restore_font(self, font_id: str) -> list[str]:
        """Bring back a deleted font and every run of it that can still be restored."""
        self.require_root()
        check_font_id(font_id)
        records = self.refs.trashed(font_id)
        claim = [r for r in records if r.run_id is None]
        if not claim:
            raise FontNotFoundError(f"no deleted font {font_id!r}; see `aoe store trash`")
        if not self.refs.claim_font(font_id):
            raise FontExistsError(
                f"font number {font_number(font_id)} is in use again; nothing was restored"
            )
        self.refs.forget_trashed(claim[0])
        return [self.restore_run(font_id, r.run_id).run_id for r in records if r.run_id and not r.purged_at]
