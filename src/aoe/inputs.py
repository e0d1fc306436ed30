"""Turn what trainers pass (paths, dicts, PIL images, datetimes) into exact bytes and
plain values, validating everything before a single byte is written.

Torch-free on purpose: the personality vector is converted in :mod:`aoe.weights`.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .refs import check_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATUS_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_TAG_LENGTH = 100

ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | Any
"""PNG bytes, a path to a PNG file, or a PIL image."""


def image_bytes(value: ImageInput, what: str) -> bytes:
    """The PNG bytes of an image given as bytes, a path or a PIL image."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        data = read_file(Path(value), what)
    elif type(value).__module__.startswith("PIL.") and hasattr(value, "save"):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise InvalidInputError(
            f"{what}: cannot use a {type(value).__name__}; pass PNG bytes, a path to a .png file, "
            "or a PIL image"
        )
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidInputError(
            f"{what} is not a PNG image (it starts with {data[:8]!r}); save it as PNG first"
        )
    return data


def glyph_images(value: Mapping[str, ImageInput] | str | os.PathLike[str]) -> dict[str, bytes]:
    """Eval glyphs from a mapping of glyph name to image, or a folder of ``<glyph>.png``."""
    if isinstance(value, (str, os.PathLike)):
        folder = Path(value)
        if not folder.is_dir():
            raise InvalidInputError(f"eval glyphs folder {folder} does not exist or is not a folder")
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        others = [p.name for p in files if p.suffix.lower() != ".png" or not p.is_file()]
        if others:
            raise InvalidInputError(
                f"eval glyphs folder {folder} holds entries that are not .png files: "
                f"{', '.join(others[:5])}; move them out so nothing is silently left behind"
            )
        value = {p.stem: p for p in files}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"eval glyphs: cannot use a {type(value).__name__}; pass a mapping of glyph name to "
            "image or a folder of <glyph>.png files"
        )
    return {
        check_name(name, "glyph name"): image_bytes(image, f"eval glyph {name!r}")
        for name, image in value.items()
    }


def feedback_bytes(value: Mapping[str, Any] | str | os.PathLike[str] | bytes) -> bytes:
    """Feedback as JSON bytes: a file's bytes kept exactly, a dict serialised."""
    if isinstance(value, (str, os.PathLike)):
        data = read_file(Path(value), "feedback file")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, Mapping):
        try:
            data = json.dumps(value, indent=2, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"feedback cannot be written as JSON: {exc}") from None
    else:
        raise InvalidInputError(
            f"feedback: cannot use a {type(value).__name__}; pass a dict or a path to a JSON file"
        )
    try:
        json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"feedback is not valid JSON: {exc}") from None
    return data


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"{what} {path} cannot be read: {exc.strerror}") from None


def plain_json(value: Any, path: str) -> Any:
    """A JSON-like copy of ``value`` (tuples become lists), or an error naming the key."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{path}: key {key!r} is not a string; params use string keys")
            out[key] = plain_json(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [plain_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return plain_json(value.item(), path)
    raise InvalidInputError(
        f"{path}: a {type(value).__name__} is not a plain value; params hold strings, numbers, "
        "bools, None, and lists and mappings of those"
    )


def timestamp(value: datetime | str | None, what: str) -> str | None:
    """ISO 8601 UTC text with microseconds; naive datetimes are taken as local time."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{what} {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{what} must be a datetime or ISO 8601 text, not {type(value).__name__}")
    return format_time(value)


def format_time(moment: datetime) -> str:
    """``2026-01-11T08:30:00.000000Z``: UTC, microseconds, a Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def status(value: str) -> str:
    if not isinstance(value, str) or not STATUS_RE.fullmatch(value):
        raise InvalidInputError(
            f"invalid status {value!r}: use a short lowercase word such as 'completed', "
            "'failed' or 'running'"
        )
    return value


def tags(values: Iterable[str]) -> tuple[str, ...]:
    """Tags without duplicates, in the order given."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for tag in values:
        if (
            not isinstance(tag, str)
            or not tag.strip()
            or len(tag) > MAX_TAG_LENGTH
            or any(ord(c) < 32 for c in tag)
        ):
            raise InvalidInputError(
                f"invalid tag {tag!r}: use 1 to {MAX_TAG_LENGTH} printable characters"
            )
        if tag.strip() not in out:
            out.append(tag.strip())
    return tuple(out)


def optional_text(value: str | None, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{what} must be text, not {type(value).__name__}")
    return value
