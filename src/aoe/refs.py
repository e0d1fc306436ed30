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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from .backend import Backend
from .errors import FontNotFoundError, FormatError, InvalidNameError, NotFoundError, RunNotFoundError, StoreError
from .objects import Digest, parse_digest

FONTS_PREFIX = ".fonts"
TRASH_PREFIX = ".trash"
FONT_RECORD = "font"
FONT_ID_RE = re.compile(r"([1-9][0-9]{0,8})-([a-z0-9]+(?:-[a-z0-9]+)*)")
FONT_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
RUN_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9]{4}")
MAX_NAME_LENGTH = 100
SEQUENCE_LIMIT = 10_000
FONT_ID_FORM = (
    "'{number}-{name}', with a number from 1 and a name of lowercase letters, digits "
    "and single hyphens (e.g. '1-fruity', '3-aggressive-sans')"
)


def check_font_id(font_id: str) -> str:
    """Refuse anything that is not ``{number}-{name}`` in lowercase."""
    if not isinstance(font_id, str) or len(font_id) > MAX_NAME_LENGTH or not FONT_ID_RE.fullmatch(font_id):
        raise InvalidNameError(f"invalid font id {font_id!r}: expected {FONT_ID_FORM}")
    return font_id


def check_font_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not FONT_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid font name {name!r}: use lowercase letters, digits and single hyphens "
            f"(e.g. 'fruity'), or a whole font id {FONT_ID_FORM}"
        )
    return name


def font_number(font_id: str) -> int:
    return int(check_font_id(font_id).split("-", 1)[0])


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise InvalidNameError(
            f"invalid run id {run_id!r}: expected a UTC time and a sequence number, "
            "like '20260111T083000.123456Z-0000' (see `aoe store ls FONT_ID`)"
        )
    return run_id


def run_id_for(moment: datetime, sequence: int = 0) -> str:
    """A run id: UTC ISO 8601 basic format with microseconds, then a 4-digit sequence.

    Sortable as a string, chronological, and a valid file name everywhere (no colons).
    """
    utc = moment.astimezone(timezone.utc)
    return f"{utc:%Y%m%dT%H%M%S.%f}Z-{sequence:04d}"


def run_time(run_id: str) -> datetime:
    """The moment a run id was made from."""
    return datetime.fromisoformat(check_run_id(run_id)[:22] + "+00:00")


def check_name(name: str, what: str) -> str:
    """A name that becomes a path part (glyph, extra): no separators, dots-only or control chars."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or name in (".", "..")
        or name.startswith(".")
        or any(c in '/\\:*?"<>|' or ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1 to {MAX_NAME_LENGTH} characters, not starting with "
            "'.', without path separators, control characters or any of :*?\"<>|"
        )
    return name


def run_key(font_id: str, run_id: str) -> str:
    return f"{check_font_id(font_id)}/runs/{check_run_id(run_id)}"


def runs_folder(font_id: str) -> str:
    return f"{check_font_id(font_id)}/runs"


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
        return f"{TRASH_PREFIX}/{self.font_id}/{self.run_id or FONT_RECORD}"

    def to_bytes(self) -> bytes:
        return (json.dumps({k: v for k, v in self.__dict__.items() if v is not None}, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, key: str, data: bytes) -> TrashRecord:
        try:
            fields = json.loads(data)
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
        ids = (self._font_at(key) for key in self.backend.list(FONTS_PREFIX))
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
        if f"{FONTS_PREFIX}/{font_number(font_id)}" != key:
            raise FormatError(f"font claim {key} names {font_id}; run `aoe store fsck`")
        return font_id

    def font_with_number(self, number: int) -> str | None:
        """The font that holds ``number``, if any."""
        return self._font_at(f"{FONTS_PREFIX}/{number}")

    def claim_font(self, font_id: str) -> bool:
        """Create the font atomically; False when its number is already taken."""
        key = f"{FONTS_PREFIX}/{font_number(font_id)}"
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
        names = (key.rsplit("/", 1)[1] for key in self.backend.list(runs_folder(font_id)))
        return [n for n in names if RUN_ID_RE.fullmatch(n)]

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
        durable), the ref is taken back, so a failed save never leaves a run.
        """
        key, content = run_key(font_id, run_id), _ref_bytes(digest)
        try:
            return self.backend.write(key, [content], exclusive=True)
        except StoreError:
            try:
                if self.backend.read(key) == content:  # ours: no other manifest has this digest
                    self.backend.delete(key)
            except StoreError:
                pass  # the error being raised says what matters
            raise

    def move_run(self, font_id: str, run_id: str, old: Digest, new: Digest) -> bool:
        """Point a run at a new manifest if it still points at ``old`` (compare-and-swap)."""
        return self.backend.compare_and_swap(run_key(font_id, run_id), _ref_bytes(old), [_ref_bytes(new)])

    def make_runs_folder(self, font_id: str) -> None:
        self.backend.make_folder(runs_folder(font_id))

    def has_runs_folder(self, font_id: str) -> bool:
        """Whether the font's runs/ folder is there (on an object store, where folders
        are not things, always)."""
        return not self.backend.folders or self.backend.has_folder(runs_folder(font_id))

    # -- deleting, with a record --

    def trash_run(self, font_id: str, run_id: str, digest: Digest, when: str) -> bool:
        """Remove a run's ref, keeping a record of it; False if the ref moved or vanished."""
        record = TrashRecord(font_id, run_id, digest, when)
        self.backend.write(record.key, [record.to_bytes()], exclusive=False)
        if self.backend.compare_and_swap(run_key(font_id, run_id), _ref_bytes(digest), None):
            return True
        self.backend.delete(record.key)
        return False

    def trash_font(self, font_id: str, when: str) -> None:
        """Remove a font's claim (its runs first), keeping a record that holds its number."""
        record = TrashRecord(font_id, None, None, when)
        self.backend.write(record.key, [record.to_bytes()], exclusive=False)
        self.backend.delete(f"{FONTS_PREFIX}/{font_number(font_id)}")

    def trashed(self, font_id: str | None = None) -> list[TrashRecord]:
        """Records of deleted runs and fonts (of one font, or all), oldest run id first."""
        prefix = f"{TRASH_PREFIX}/{check_font_id(font_id)}" if font_id else TRASH_PREFIX
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

    def all_refs(self) -> Iterator[tuple[str, str, str]]:
        """Every file under a font's ``runs/`` folder: (font id, file name, key)."""
        for font_id in self.fonts():
            for key in self.backend.list(runs_folder(font_id)):
                yield font_id, key.rsplit("/", 1)[1], key


def _ref_bytes(digest: Digest) -> bytes:
    return f"{digest}\n".encode()
