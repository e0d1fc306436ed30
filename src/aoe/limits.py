"""Limits on what aoe decodes: nesting depth, sizes, and JSON that cannot exhaust a stack.

A store may hold bytes written by a buggy or hostile writer, and a trainer may pass a
document nested a thousand deep. Every decoder in aoe stays within these bounds, so no
input can overflow the C stack, raise RecursionError, or make aoe allocate more than
the input's own size allows. They are part of the format (docs/format.md, *Limits*):
aoe refuses to write what it would refuse to read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

MAX_SMALL_FILE_BYTES = 64 * 1024
"""Largest ref, font claim, trash record or save marker."""


class TooDeepError(ValueError):
    """A document nests deeper than :data:`MAX_DEPTH`."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (plain containers) nests deeper than ``limit``: iterative, so it
    never recurses itself."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        elif isinstance(item, Mapping):
            children = item.values()
        else:
            nested = getattr(item, "children", None)
            if nested is None:
                continue
            children = nested()
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list, tuple, Mapping)) or hasattr(child, "children"))
    return False


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
