"""Turn what trainers pass (paths, dicts, PIL images, datetimes) into exact bytes and
plain values, validating everything before a single byte is written.

Torch-free on purpose: the personality vector is converted in :mod:`aoe.weights`.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InvalidInputError
from .limits import MAX_DEPTH, MAX_FILE_BYTES, parse_json
from .names import check_name, format_time, shown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | Any
"""PNG bytes, a path to a PNG file, or a PIL image."""


def image_bytes(value: ImageInput, what: str, within: Path | None = None) -> bytes:
    """The PNG bytes of an image given as bytes, a path or a PIL image (a path: inside
    ``within``, if given; see :func:`open_input`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        data = read_file(Path(value), what, within)
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
    return bounded(data, what)


def bounded(data: bytes, what: str) -> bytes:
    """A run's file (an image, the feedback) of at most :data:`MAX_FILE_BYTES`, which is
    all a reader accepts."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInputError(f"{what} is {len(data):,} bytes; a run's files hold at most {MAX_FILE_BYTES:,}")
    return data


def glyph_images(value: Mapping[str, ImageInput] | str | os.PathLike[str],
                 within: Path | None = None) -> dict[str, bytes]:
    """Eval glyphs from a mapping of glyph name to image, or a folder of ``<glyph>.png``
    (its files inside ``within``, if given)."""
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
        by_glyph: dict[str, Path] = {}
        for path in files:
            if path.stem in by_glyph:  # A.png and A.PNG: which one is glyph A?
                raise InvalidInputError(
                    f"eval glyphs folder {folder} holds both {by_glyph[path.stem].name} and {path.name}, "
                    f"two images for glyph {path.stem!r}; keep one")
            by_glyph[path.stem] = path
        value = by_glyph
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"eval glyphs: cannot use a {type(value).__name__}; pass a mapping of glyph name to "
            "image or a folder of <glyph>.png files"
        )
    return {
        check_name(name, "glyph name"): image_bytes(image, f"eval glyph {name!r}", within)
        for name, image in value.items()
    }


def feedback_bytes(value: Mapping[str, Any] | str | os.PathLike[str] | bytes, within: Path | None = None) -> bytes:
    """Feedback as JSON bytes: a file's bytes kept exactly (inside ``within``, if given), a
    dict serialised."""
    if isinstance(value, (str, os.PathLike)):
        data = read_file(Path(value), "feedback file", within)
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, Mapping):
        try:
            data = json.dumps(value, indent=2, ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(f"feedback cannot be written as JSON: {exc}") from None
    else:
        raise InvalidInputError(
            f"feedback: cannot use a {type(value).__name__}; pass a dict or a path to a JSON file"
        )
    bounded(data, "feedback")
    try:
        parse_json(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"feedback is not valid JSON: {exc}") from None
    return data


def feedback_schema(value: Any) -> str | None:
    """A feedback schema version given with a save: text such as ``"1.0"``, or None."""
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"feedback_schema must be text such as '1.0', not {type(value).__name__}")
    return value


def read_file(path: Path, what: str, within: Path | None = None) -> bytes:
    """A file's bytes (see :func:`open_input`), up to one more than any run's file may
    hold (so a huge file is refused without reading it all)."""
    with open_input(path, what, within) as file:
        try:
            return file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidInputError(f"{what} {path} cannot be read: {exc.strerror}") from None


def open_input(path: Path, what: str, within: Path | None = None) -> BinaryIO:
    """A file a save reads, opened: only a regular file (a FIFO would block the read
    forever, a device never end), and with ``within`` only one inside that folder once
    every symlink is resolved: a folder someone hands you (``aoe store import``) must not
    make aoe read, and store, a file elsewhere on this machine."""
    if within is not None:
        real, root = os.path.realpath(path), os.path.realpath(within)
        if os.path.commonpath([real, root]) != root:
            raise InvalidInputError(
                f"{what} {path} is a symlink to {real}, outside {within}; aoe reads only files inside the folder "
                "it imports (copy the file in, or pass --follow-symlinks if you trust where it points)")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInputError(f"{what} {path} is not a regular file (a FIFO, device or folder); aoe reads only files")
    return os.fdopen(fd, "rb")


def plain_json(value: Any, path: str, depth: int = 0) -> Any:
    """A JSON-like copy of ``value`` (tuples become lists), or an error naming the key."""
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise InvalidInputError(f"{path}: the integer {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{path}: key {key!r} is not a string; params use string keys")
            out[key] = plain_json(item, f"{path}[{key!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [plain_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return plain_json(value.item(), path, depth)
    raise InvalidInputError(
        f"{path}: a {type(value).__name__} is not a plain value; params hold strings, numbers, "
        "bools, None, and lists and mappings of those"
    )


def params(value: Any) -> dict[str, Any]:
    """Run params: a mapping of names to plain values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"params must be a mapping of names to values, not a {type(value).__name__}")
    result: dict[str, Any] = plain_json(value, "params")
    return result


def timestamp(value: datetime | str | None, what: str) -> str | None:
    """ISO 8601 UTC text with microseconds; naive datetimes are taken as local time."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{what} {shown(value)} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{what} must be a datetime or ISO 8601 text, not {type(value).__name__}")
    try:
        return format_time(value)
    except (OverflowError, ValueError):  # year 1 an hour east of UTC is before year 1 in UTC
        raise InvalidInputError(f"{what} {value.isoformat()} cannot be expressed in UTC") from None
