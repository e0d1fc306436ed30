"""Refs: the names of fonts and runs, and the atomic step that publishes a run.

- A font is claimed by creating ``.fonts/<number>`` (create-only), holding its id.
  The number is the font's identity, so ``1-fruity`` and ``1-other`` cannot both
  exist, and two processes allocating "the next number" never get the same one.
- A run exists once ``<font-id>/runs/<run-id>`` exists: a create-only file holding
  the hex digest of its manifest. Creating it is the one atomic step of a save; two
  writers that pick the same run id find out here, and the later one takes the next
  sequence number.

Every name that becomes part of a path is validated here first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .backends import Backend
from .errors import (
    FontNotFoundError,
    FormatError,
    InvalidNameError,
    NotFoundError,
    RunNotFoundError,
    StoreError,
)
from .layout import FONTS, TRASH, claim_key, ref_changes_key, run_id_at, run_key, runs_folder, trash_key
from .limits import parse_json
from .names import Digest, check_font_id, check_run_id, font_number, parse_digest, random_hex

SEQUENCE_LIMIT = 10_000
PARALLEL_REQUESTS = 16
"""Requests in flight at once when many refs change on an object store."""


def run_id_for(moment: datetime, sequence: int = 0) -> str:
    """A run id: UTC ISO 8601 basic format with microseconds, then a 4-digit sequence.

    Sortable as a string, chronological, and a valid file name everywhere (no colons).
    """
    utc = moment.astimezone(UTC)
    return f"{utc:%Y%m%dT%H%M%S.%f}Z-{sequence:04d}"


def run_time(run_id: str) -> datetime:
    """The moment a run id was made from."""
    return datetime.fromisoformat(check_run_id(run_id)[:22] + "+00:00")


@dataclass(frozen=True)
class TrashRecord:
    """What ``delete_run`` / ``delete_font`` removed, and when; kept after gc."""

    font_id: str
    run_id: str | None  # None: the font's own claim
    manifest: Digest | None
    deleted_at: str
    purged_at: str | None = None

    @property
    def key(self) -> str:
        return trash_key(self.font_id, self.run_id)

    def to_bytes(self) -> bytes:
        return (json.dumps({k: v for k, v in self.__dict__.items() if v is not None}, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, key: str, data: bytes) -> TrashRecord:
        try:
            fields = parse_json(data)
            record = cls(fields["font_id"], fields.get("run_id"), fields.get("manifest"),
                         fields["deleted_at"], fields.get("purged_at"))
            if record.manifest is not None:
                parse_digest(record.manifest)
        except (ValueError, TypeError, KeyError, InvalidNameError):
            raise FormatError(f"trash record {key} is malformed; run `aoe store fsck`") from None
        if record.key != key:
            raise FormatError(f"trash record {key} names {record.key}; run `aoe store fsck`")
        return record


class Refs:
    """Font claims, run refs and the record of what was deleted, on a backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- fonts --

    def fonts(self) -> list[str]:
        """Every font id, by number."""
        ids = (self._font_at(key) for key in self.backend.list(FONTS))
        return sorted((i for i in ids if i), key=font_number)

    def _font_at(self, key: str) -> str | None:
        try:
            text = self.backend.read(key).decode("utf-8", "replace").strip()
        except NotFoundError:  # removed since listed
            return None
        try:
            font_id = check_font_id(text)
        except InvalidNameError:
            raise FormatError(f"font claim {key} is malformed ({text[:80]!r}); run `aoe store fsck`") from None
        if claim_key(font_id) != key:
            raise FormatError(f"font claim {key} names {font_id}; run `aoe store fsck`")
        return font_id

    def font_with_number(self, number: int) -> str | None:
        """The font that holds ``number``, if any."""
        return self._font_at(claim_key(number))

    def claim_font(self, font_id: str) -> bool:
        """Create the font atomically; False when its number is already taken. Its
        ``runs/`` folder is made durable first, so a claim that exists always has it: a
        crash between the two leaves an empty folder no claim names (not a font), never a
        font whose runs folder is missing (which means data lost)."""
        self.make_runs_folder(font_id)
        key = claim_key(font_id)
        return self.backend.write(key, [f"{font_id}\n".encode()], exclusive=True)

    def require_font(self, font_id: str) -> None:
        """Raise :class:`FontNotFoundError` naming the fonts that exist."""
        check_font_id(font_id)
        if self.font_with_number(font_number(font_id)) != font_id:
            fonts = self.fonts()
            nearby = ", ".join(fonts[:20]) or "none yet"
            raise FontNotFoundError(
                f"no font {font_id!r} in the store (fonts: {nearby}); "
                "create it with `aoe store create-font NAME` or store.create_font(NAME)"
            )

    # -- runs --

    def runs(self, font_id: str) -> list[str]:
        """Every run id of a font, oldest first (unknown files are skipped)."""
        names = (run_id_at(key) for key in self.backend.list(runs_folder(font_id)))
        return [n for n in names if n is not None]

    def read_run(self, font_id: str, run_id: str) -> Digest:
        """The manifest digest a run ref names."""
        key = run_key(font_id, run_id)
        try:
            text = self.backend.read(key)
        except NotFoundError:
            runs = self.runs(font_id)
            nearby = ", ".join(runs[-5:]) or "none"
            raise RunNotFoundError(
                f"no run {run_id!r} in font {font_id!r} (newest runs: {nearby}); "
                f"see `aoe store ls {font_id}`"
            ) from None
        try:
            return parse_digest(text.decode("ascii").strip())
        except (UnicodeDecodeError, InvalidNameError):
            raise FormatError(
                f"run ref {key} is malformed (it should hold one manifest id); run `aoe store fsck`"
            ) from None

    def publish_run(self, font_id: str, moment: datetime, write_manifest: Callable[[str], Digest]) -> str:
        """Create the run's ref, the step that makes it exist; returns its run id.

        ``write_manifest(run_id)`` stores the manifest for a candidate id and returns
        its digest. When another writer took that id first, the next sequence number
        is tried with a new manifest.
        """
        for sequence in range(SEQUENCE_LIMIT):
            run_id = run_id_for(moment, sequence)
            if self.backend.exists(run_key(font_id, run_id)):
                continue
            if self.create_run(font_id, run_id, write_manifest(run_id)):
                return run_id
        raise InvalidNameError(  # pragma: no cover - 10,000 runs in one microsecond
            f"more than {SEQUENCE_LIMIT} runs of {font_id} at {moment.isoformat()}"
        )

    def create_run(self, font_id: str, run_id: str, digest: Digest) -> bool:
        """Create a run ref with exactly this id; False if it exists.

        If the write fails after the ref appeared (its folder could not be made
        durable), the ref is taken back, so a failed save never leaves a run. A run
        published while its font is being deleted is taken back too (or, if the
        deletion already moved it to the trash, left there with its font), and the
        caller is told: nothing reported as saved is ever lost with a font.
        """
        key, content = run_key(font_id, run_id), ref_content(digest)
        try:
            created = self.backend.write(key, [content], exclusive=True)
        except StoreError:
            self._take_back(font_id, key, content)
            raise
        if created:
            self._announce(font_id)
        if created and self.font_being_deleted(font_id):
            if self._take_back(font_id, key, content):
                raise FontNotFoundError(
                    f"font {font_id} was deleted while run {run_id} was being saved; nothing was "
                    "published (restore the font with `aoe store restore`, then save again)")
            raise FontNotFoundError(
                f"font {font_id} was deleted while run {run_id} was being saved; the run went to the "
                f"trash with the font: `aoe store restore {font_id}` brings both back")
        return created

    def _take_back(self, font_id: str, key: str, content: bytes) -> bool:
        """Remove a ref this writer just created, if it still holds what it wrote. Taking
        back matters more than the change note: a note that cannot be written (a full disk)
        does not keep the ref."""
        try:
            self.note_ref_change(font_id)
        except StoreError:
            pass
        try:
            removed = self.backend.compare_and_swap(key, content, None)
        except StoreError:
            return False  # the error being raised says what matters
        self._announce(font_id)
        return removed

    def font_being_deleted(self, font_id: str) -> bool:
        """Whether a deletion of the font has begun (its trash record exists)."""
        return self.backend.exists(TrashRecord(font_id, None, None, "").key)

    def move_run(self, font_id: str, run_id: str, old: Digest, new: Digest) -> bool:
        """Point a run at a new manifest if it still points at ``old`` (compare-and-swap)."""
        self.note_ref_change(font_id)
        moved = self.backend.compare_and_swap(run_key(font_id, run_id), ref_content(old), [ref_content(new)])
        self._announce(font_id)
        return moved

    def note_ref_change(self, font_id: str) -> None:
        """Write a new random value to the font's change note, before one of its refs is
        moved or removed: a reader that finds the note as it last saw it knows that every
        ref still in the same file (a folder listing shows the same inode) holds what it
        held, so it need not stat each one (docs/format.md, *Names* 6)."""
        self.backend.write(ref_changes_key(font_id), [random_hex(16).encode() + b"\n"], exclusive=False)

    def _announce(self, font_id: str) -> None:
        """After a ref was created, moved or removed on object storage, write the note
        again: a reader that finds it as it was when it last listed the refs knows they
        are as that listing found them, and need not list them (docs/format.md, *Names*
        6). The change is made already; a note that cannot be written only makes other
        machines list the refs at their next minute's full listing."""
        if self.backend.folders:
            return  # folders tell it themselves (their mtime)
        try:
            self.note_ref_change(font_id)
        except StoreError:
            pass

    def ref_changes(self, font_id: str) -> str:
        """The font's change note as it is now ("" before any ref was moved or removed). A
        note that cannot be read (a folder or symlink where it should be: fsck names it)
        reads as a value never seen before, so every listing checks every ref: slower,
        never wrong."""
        try:
            return self.backend.read(ref_changes_key(font_id), fresh=True).decode("ascii", "replace").strip()
        except NotFoundError:
            return ""
        except FormatError:
            return f"unreadable {random_hex(8)}"

    def make_runs_folder(self, font_id: str) -> None:
        self.backend.make_folder(runs_folder(font_id))

    def has_runs_folder(self, font_id: str) -> bool:
        """Whether the font's runs/ folder is there (on an object store, where folders
        are not things, always)."""
        return not self.backend.folders or self.backend.has_folder(runs_folder(font_id))

    # -- deleting, with a record --

    def trash_run(self, font_id: str, run_id: str, digest: Digest, when: str, *, purged: bool = False) -> bool:
        """Remove a run's ref, keeping a record of it (``purged``: one saying at once that
        its data is gone, for a ref whose manifest is); False if the ref moved or vanished."""
        record = TrashRecord(font_id, run_id, digest, when, when if purged else None)
        self.backend.write(record.key, [record.to_bytes()], exclusive=False)
        self.note_ref_change(font_id)
        if self.backend.compare_and_swap(run_key(font_id, run_id), ref_content(digest), None):
            self._announce(font_id)
            return True
        self.backend.delete(record.key)
        return False

    def trash_runs(self, font_id: str, runs: Sequence[tuple[str, Digest]], when: str) -> list[str]:
        """:meth:`trash_run` for many runs of a font at once (``forget``): their records
        written and made durable together, then the change note, then each ref removed if
        it still names what it did, the removals made durable together. Returns the runs
        removed; a ref that moved or vanished meanwhile stays (and loses its record). A
        crash before the end leaves records beside live refs (an interrupted delete: the
        runs stay, fsck drops the records), never a removed ref without its record."""
        records = [TrashRecord(font_id, run_id, digest, when) for run_id, digest in runs]
        if self.backend.round_trips:  # an object store: many requests in flight
            from concurrent.futures import ThreadPoolExecutor  # here: 5 ms of every listing's start otherwise

            with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
                list(pool.map(lambda r: self.backend.write(r.key, [r.to_bytes()], exclusive=False), records))
        else:
            with self.backend.write_batch() as write:
                there = [record for record in records if not write(record.key, [record.to_bytes()])]
            for record in there:  # a record an interrupted deletion left: this one replaces it
                self.backend.write(record.key, [record.to_bytes()], exclusive=False)
        self.note_ref_change(font_id)
        removed = self.backend.delete_unchanged([(run_key(font_id, run_id), ref_content(digest))
                                                 for run_id, digest in runs])
        for record, gone in zip(records, removed):
            if not gone:
                self.backend.delete(record.key)
        self._announce(font_id)
        return [run_id for (run_id, _), gone in zip(runs, removed) if gone]

    def begin_font_deletion(self, font_id: str, when: str) -> None:
        """Record that the font is being deleted (holding its number), before any of its
        runs is trashed: from here on a run published into it is taken back."""
        record = TrashRecord(font_id, None, None, when)
        self.backend.write(record.key, [record.to_bytes()], exclusive=False)

    def end_font_deletion(self, font_id: str) -> None:
        """Remove the font's claim, once its runs are in the trash."""
        self.backend.delete(claim_key(font_id))

    def trashed(self, font_id: str | None = None) -> list[TrashRecord]:
        """Records of deleted runs and fonts (of one font, or all), oldest run id first."""
        prefix = f"{TRASH}/{check_font_id(font_id)}" if font_id else TRASH
        records = []
        for key in self.backend.list(prefix):
            try:
                records.append(TrashRecord.parse(key, self.backend.read(key)))
            except NotFoundError:  # restored meanwhile
                continue
        return records

    def forget_trashed(self, record: TrashRecord) -> None:
        self.backend.delete(record.key)

    def mark_purged(self, record: TrashRecord, when: str) -> None:
        purged = TrashRecord(record.font_id, record.run_id, record.manifest, record.deleted_at, when)
        self.backend.write(purged.key, [purged.to_bytes()], exclusive=False)

    def trashed_font_numbers(self) -> dict[int, str]:
        """Numbers held by deleted fonts (restorable, so never given to a new font)."""
        return {font_number(r.font_id): r.font_id for r in self.trashed() if r.run_id is None}



def ref_content(digest: Digest) -> bytes:
    """What a run's ref holds: its manifest's address and a newline."""
    return f"{digest}\n".encode()
