"""Layout: where each thing lives in a store, as backend keys, and back.

The one place that knows the store's key names (docs/format.md, *Layout*): objects,
font claims, run refs, trash records, save markers, locks, what gc and fsck set aside.
Every other module builds and parses keys with these functions, never by hand, so a
key read from a listing becomes a digest or a run id only after it was checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from .names import ALIAS_RE, Digest, check_alias, check_font_id, check_run_id, font_number, is_run_id, parse_digest

OBJECTS = ".objects"
PENDING = ".gc-pending"
"""Where gc on object storage keeps objects it found unreachable (see ``gc.py``)."""
DAMAGED = ".damaged"
"""Where ``fsck --repair`` moves corrupt objects."""
FONTS = ".fonts"
TRASH = ".trash"
INFLIGHT = ".inflight"
"""Saves in progress announce themselves here (see ``transaction.py``)."""
LOCKS = ".locks"
LISTINGS = ".listings"
"""Listing snapshots of each font (see ``listings.py``)."""
CATALOG = ".catalog/index.sqlite"
"""The catalog index of a folder store (a cache, not the format)."""
FONT_RECORD = "font"
"""The name of a deleted font's own trash record, beside its runs' records."""
STAMP_SUFFIX = ".moved"
"""gc's stamp beside an object it set aside on object storage."""


def object_key(digest: Digest) -> str:
    """Where an object lives: sharded by its first two hex characters."""
    return f"{OBJECTS}/{digest[:2]}/{digest}"


def pending_key(digest: Digest) -> str:
    """Where gc's first phase keeps an object it found unreachable."""
    return f"{PENDING}/{digest[:2]}/{digest}"


def damaged_key(digest: Digest) -> str:
    return f"{DAMAGED}/{digest}"


def digest_at(key: str) -> Digest | None:
    """The object an ``.objects/`` or ``.gc-pending/`` key holds; None for a file that is
    not one (a stray name, a stamp, an object in the wrong shard)."""
    name = key.rsplit("/", 1)[-1]
    try:
        digest = parse_digest(name)
    except ValueError:
        return None
    return digest if key in (object_key(digest), pending_key(digest)) else None


def claim_key(font_id_or_number: str | int) -> str:
    number = font_id_or_number if isinstance(font_id_or_number, int) else font_number(font_id_or_number)
    return f"{FONTS}/{number}"


def runs_folder(font_id: str) -> str:
    return f"{check_font_id(font_id)}/runs"


REF_CHANGES = ".changes"
"""The file in a font's ``runs/`` folder that a writer rewrites (with a new random value)
before it moves or removes one of the font's refs (docs/format.md, *Names* 6)."""


def ref_changes_key(font_id: str) -> str:
    return f"{runs_folder(font_id)}/{REF_CHANGES}"


def run_key(font_id: str, run_id: str) -> str:
    return f"{runs_folder(font_id)}/{check_run_id(run_id)}"


def name_in_folder(key: str) -> str:
    """The last part of a key (a run id in ``runs/``, a number in ``.fonts/``), unchecked."""
    return key.rsplit("/", 1)[-1]


def run_id_at(key: str) -> str | None:
    """The run id a ``<font>/runs/`` key names; None for a file that is not a ref."""
    name = name_in_folder(key)
    return name if is_run_id(name) else None


ALIASES = "aliases"
"""A font's folder of aliases: ``<font>/aliases/<name>/<move>``, one file per move."""
MOVE_DIGITS = 10
ALIAS_HINT = "HEAD"
"""A file beside an alias's moves holding the number of its newest (a hint to verify)."""


def aliases_folder(font_id: str) -> str:
    return f"{check_font_id(font_id)}/{ALIASES}"


def alias_folder(font_id: str, name: str) -> str:
    return f"{aliases_folder(font_id)}/{check_alias(name)}"


def alias_move_key(font_id: str, name: str, move: int) -> str:
    """The file of an alias's ``move``-th move (from 1): ten digits, so they sort."""
    if not 0 < move < 10**MOVE_DIGITS:
        raise ValueError(f"an alias's move number runs from 1 to {10**MOVE_DIGITS - 1}")
    return f"{alias_folder(font_id, name)}/{move:0{MOVE_DIGITS}d}"


def alias_move_at(key: str) -> tuple[str, int] | None:
    """(alias, move number) of a key under a font's ``aliases/``; None for any other file."""
    parts = key.split("/")
    if len(parts) != 4 or parts[1] != ALIASES or not ALIAS_RE.fullmatch(parts[2]):
        return None
    move = parts[3]
    if len(move) != MOVE_DIGITS or not move.isascii() or not move.isdigit() or int(move) == 0:
        return None
    return parts[2], int(move)


RETENTION = "retention"
"""A font's stored retention policy (JSON), applied after each save into it."""


def retention_key(font_id: str) -> str:
    return f"{check_font_id(font_id)}/{RETENTION}"


def trash_key(font_id: str, run_id: str | None) -> str:
    return f"{TRASH}/{check_font_id(font_id)}/{check_run_id(run_id) if run_id else FONT_RECORD}"


LISTING_NAME_RE = re.compile(r"([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-([0-9a-f]{64})")


def listings_folder(font_id: str) -> str:
    return f"{LISTINGS}/{check_font_id(font_id)}"


def listing_key(font_id: str, moment: datetime, digest: Digest) -> str:
    """``.listings/<font>/<UTC time>-<digest of its content>``: the newest sorts last."""
    return f"{listings_folder(font_id)}/{moment.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{parse_digest(digest)}"


def listing_at(key: str) -> tuple[str, Digest] | None:
    """(time, content digest) of a listing snapshot's key; None for any other file."""
    parts = key.split("/")
    found = LISTING_NAME_RE.fullmatch(parts[-1])
    if len(parts) != 3 or parts[0] != LISTINGS or found is None:
        return None
    return found[1], Digest(found[2])


SEGMENTS = "segments"
SEGMENT_NAME_RE = re.compile(r"([0-9])-([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-([0-9a-f]{64})")


def segments_folder(font_id: str) -> str:
    return f"{listings_folder(font_id)}/{SEGMENTS}"


def segment_key(font_id: str, level: int, moment: datetime, digest: Digest) -> str:
    """``.listings/<font>/segments/<level>-<UTC time>-<digest of its content>``."""
    if not 0 <= level <= 9:
        raise ValueError(f"a segment's level is a digit, not {level}")
    return f"{segments_folder(font_id)}/{level}-{moment.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{parse_digest(digest)}"


def segment_at(key: str) -> tuple[int, str, Digest] | None:
    """(level, time, content digest) of a listing segment's key; None for any other file."""
    parts = key.split("/")
    found = SEGMENT_NAME_RE.fullmatch(parts[-1])
    if len(parts) != 4 or parts[0] != LISTINGS or parts[2] != SEGMENTS or found is None:
        return None
    return int(found[1]), found[2], Digest(found[3])


def marker_key(token: str) -> str:
    return f"{INFLIGHT}/{token}"


def lock_key(name: str) -> str:
    return f"{LOCKS}/{name}"

TEMP_PREFIX = ".tmp-"
"""A file or folder whose name starts with this is a write in progress (or one a crash
interrupted): never a key, an object, a ref or a claim."""


def looks_like_plain_folders(keys: Iterable[str], limit: int = 10_000) -> bool:
    """Whether keys are those of the old plain-folder layout
    (``<font>/runs/<time>/<file>``) rather than an aoe store; looks at ``limit`` at most."""
    for count, key in enumerate(keys):
        parts = key.split("/")
        if len(parts) >= 4 and parts[1] == "runs" and not parts[0].startswith("."):
            return True
        if count >= limit:
            break
    return False
