"""Names and short texts: the rules every font id, run id, glyph, tag and time must follow.

One set of rules for both directions: a save checks what a trainer passes, and every
reader checks the same things in what it reads from a store, which may have been
written by a buggy or hostile writer. A name becomes part of a path only after it
passed here.

This is the bottom layer beside ``errors``: it knows nothing of storage. The checks
raise :class:`InvalidNameError` / :class:`InvalidInputError`; readers turn those into
format errors naming what they read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NewType

from .errors import InvalidInputError, InvalidNameError

Digest = NewType("Digest", str)
"""64 lowercase hex characters: the BLAKE3-256 of an object's uncompressed content."""

FONT_ID_RE = re.compile(r"([1-9][0-9]{0,8})-([a-z0-9]+(?:-[a-z0-9]+)*)")
FONT_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
RUN_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9]{4}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
STATUS_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_NAME_LENGTH = 100
MAX_TAG_LENGTH = 100
MAX_TEXT_LENGTH = 10_000
"""Names and descriptions of runs: long enough for notes, short enough for a listing."""
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL: what a terminal would act on."""
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
FONT_ID_FORM = (
    "'{number}-{name}', with a number from 1 and a name of lowercase letters, digits "
    "and single hyphens (e.g. '1-fruity', '3-aggressive-sans')"
)


def parse_digest(text: Any) -> Digest:
    """Validate an object's address before it is used to build any path."""
    if not isinstance(text, str) or not DIGEST_RE.fullmatch(text):
        raise InvalidNameError(
            f"invalid object id {shown(text)}: expected 64 lowercase hex characters (a BLAKE3 digest)"
        )
    return Digest(text)


def check_font_id(font_id: Any) -> str:
    """Refuse anything that is not ``{number}-{name}`` in lowercase."""
    if not isinstance(font_id, str) or len(font_id) > MAX_NAME_LENGTH or not FONT_ID_RE.fullmatch(font_id):
        raise InvalidNameError(f"invalid font id {shown(font_id)}: expected {FONT_ID_FORM}")
    return font_id


def check_font_name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not FONT_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid font name {shown(name)}: use lowercase letters, digits and single hyphens "
            f"(e.g. 'fruity'), or a whole font id {FONT_ID_FORM}"
        )
    return name


def font_number(font_id: str) -> int:
    return int(check_font_id(font_id).split("-", 1)[0])


def is_run_id(text: Any) -> bool:
    """Whether ``text`` is a run id: the form of :data:`RUN_ID_RE` holding a real UTC
    time (``20261399T...`` has the form but names no moment: it is not a run id)."""
    if not isinstance(text, str) or not RUN_ID_RE.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text[:22] + "+00:00")
    except ValueError:
        return False
    return True


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not is_run_id(run_id):
        raise InvalidNameError(
            f"invalid run id {shown(run_id)}: expected a UTC time and a sequence number, "
            "like '20260111T083000.123456Z-0000' (see `aoe store ls FONT_ID`)"
        )
    return run_id


def check_alias(name: Any) -> str:
    """An alias's name (``best``, ``production``): lowercase, so that it means one folder
    on every filesystem, case-folding or not."""
    if not isinstance(name, str) or not ALIAS_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid alias {shown(name)}: use 1 to 64 lowercase letters, digits, '-' and '_', "
            "starting with a letter (e.g. 'best', 'production')")
    return name


def check_name(name: Any, what: str) -> str:
    """A name that becomes a path part (glyph, extra): no separators, dots-only or control chars."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or name.startswith(".")
        or any(c in '/\\:*?"<>|' for c in name)
        or CONTROL.search(name)
    ):
        raise InvalidNameError(
            f"invalid {what} {shown(name)}: use 1 to {MAX_NAME_LENGTH} characters, not starting with "
            "'.', without path separators, control characters or any of :*?\"<>|"
        )
    return name


def check_status(value: Any) -> str:
    if not isinstance(value, str) or not STATUS_RE.fullmatch(value):
        raise InvalidInputError(
            f"invalid status {shown(value)}: use a short lowercase word such as 'completed', "
            "'failed' or 'running'"
        )
    return value


def check_tags(values: Any) -> tuple[str, ...]:
    """Tags without duplicates, in the order given; each 1 to 100 printable characters."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Iterable) or isinstance(values, (bytes, dict)):
        raise InvalidInputError(f"tags must be a list of texts, not {type(values).__name__}")
    out: list[str] = []
    for tag in values:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_LENGTH or CONTROL.search(tag):
            raise InvalidInputError(f"invalid tag {shown(tag)}: use 1 to {MAX_TAG_LENGTH} printable characters")
        if tag.strip() not in out:
            out.append(tag.strip())
    return tuple(out)


def check_text(value: Any, what: str, *, lines: bool = False) -> str | None:
    """Optional text (a run's name or description): no control characters but, where
    ``lines``, newlines and tabs."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be text, not {type(value).__name__}")
    found = CONTROL.search(value.replace("\n", "").replace("\t", "") if lines else value)
    if found or len(value) > MAX_TEXT_LENGTH:
        raise InvalidInputError(
            f"{what} {shown(value)} holds control characters or is longer than {MAX_TEXT_LENGTH:,}"
            if found else f"{what} is longer than {MAX_TEXT_LENGTH:,} characters"
        )
    return value


def utc_now() -> datetime:
    """Now, in UTC (one place to read the clock for times written into a store)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``2026-01-11T08:30:00.000000Z``: UTC, microseconds, a Z."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_time(value: Any, what: str) -> datetime:
    """An ISO 8601 time with its offset, as stored; a clear error for anything else."""
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        moment.astimezone(UTC)  # times near year 1 or 9999 may not fit in UTC
    except (ValueError, OverflowError):
        raise InvalidInputError(f"{what} {shown(value)} is not an ISO 8601 time with an offset") from None
    return moment


def parse_time(text: str | None) -> datetime | None:
    """A stored time (checked when its manifest was read), or None."""
    return None if text is None else datetime.fromisoformat(text)


def shown(value: Any, limit: int = 80) -> str:
    """A value in an error message: repr (so control characters are escaped), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every character that is not printable
    (escape sequences, bidi overrides, line breaks) shown as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def random_hex(nbytes: int) -> str:
    """Random hex for temporary names, markers and change notes: ``os.urandom``, exactly as
    ``secrets.token_hex`` makes it, without importing ``secrets`` (6 ms of every start)."""
    return os.urandom(nbytes).hex()
