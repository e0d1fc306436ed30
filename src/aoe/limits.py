"""Limits on what aoe decodes: nesting depth, sizes, and JSON that cannot exhaust a stack.

A store may hold bytes written by a buggy or hostile writer, and a trainer may pass a
document nested a thousand deep. Every decoder in aoe stays within these bounds, so no
input can overflow the C stack, raise RecursionError, or make aoe allocate more than
the input's own size allows. They are part of the format (docs/format.md, *Limits*):
aoe refuses to write what it would refuse to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of lists, mappings and extension types in a manifest, params or a
feedback document. Real state_dicts nest 4 to 6 deep; every walker in aoe recurses at
most this far."""

MAX_OBJECT_BYTES = 64 * 1024 * 1024
"""Largest content of one object (aoe cuts blobs into 8 MiB chunks; other writers may
choose chunks up to this size). Nothing larger is ever allocated for one object."""

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
"""Largest manifest (about 100,000 tensors)."""

MAX_STORED_OVERHEAD = 4096
"""A stored object is its content plus at most this much (header, plane table)."""

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest sample image, eval glyph image or feedback document of a run: a manifest naming
a larger one is malformed, so no listing, page or copy reads more for one of them (a
blob may name one chunk many times: kilobytes of manifest could claim gigabytes)."""

MAX_SHAPE_PRODUCT = 2**63 - 1
"""The product of a tensor's dims (each 0 counted as 1) is at most this: torch computes
strides and sizes as 64-bit integers and cannot make a tensor beyond it, empty or not."""

MAX_SMALL_FILE_BYTES = 64 * 1024
"""Largest ref, font claim, trash record or save marker."""


class TooDeepError(ValueError):
    """A document nests deeper than :data:`MAX_DEPTH`."""


_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})
"""Types of values that hold nothing (so a walk need not look into them)."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (plain containers) nests deeper than ``limit``: iterative, so it
    never recurses itself."""
    leaves = set(_PLAIN)  # and the types met that hold nothing (5,000 tensor records: one looked at)
    first = _children(value)
    if first is None:
        return False
    if limit <= 0:
        return True
    stack: list[tuple[Iterable[Any], int]] = [(first, 1)]  # what a value at that depth holds
    while stack:
        children, depth = stack.pop()
        for child in children:
            kind = type(child)
            if kind in leaves:
                continue
            nested = _children(child)
            if nested is None:
                leaves.add(kind)
            elif depth >= limit:
                return True
            else:
                stack.append((nested, depth + 1))
    return False


def _children(value: Any) -> Iterable[Any] | None:
    """What a value holds (a mapping's values, a sequence's items, a tree node's
    ``children()``); None for a value that holds nothing."""
    kind = type(value)
    if kind is dict:
        return value.values()  # type: ignore[no-any-return]
    if kind is list or kind is tuple:
        return value  # type: ignore[no-any-return]
    if kind in _PLAIN:  # before the ABC checks below, which cost microseconds each
        return None
    nested = getattr(value, "children", None)
    if nested is not None:
        return nested()  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return value.values()
    if isinstance(value, (list, tuple)):
        return value
    return None


def parse_json(data: bytes | str) -> Any:
    """A JSON document, refused (``ValueError``) when malformed or nested deeper than
    :data:`MAX_DEPTH`. NaN and Infinity are accepted, as Python writes them."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise TooDeepError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if depth_exceeds(value):
        raise TooDeepError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value
