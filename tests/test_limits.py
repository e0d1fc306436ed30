"""Bounds on what a store's bytes may make a reader do: how deep a document nests."""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

import pytest

from aoe.limits import MAX_DEPTH, TooDeepError, depth_exceeds, parse_json
from aoe.manifests import Shape, StateDict, TensorRecord
from aoe.objects import Blob

RECORD = TensorRecord("float32", (1,), Blob(4, ("0" * 64,)))


def nested(levels: int, wrap: Any) -> Any:
    """A value in ``levels`` containers made by ``wrap``, one inside the other."""
    value: Any = 1
    for _ in range(levels):
        value = wrap(value)
    return value


WRAPS = {  # a container around a value, and how many of them fit in a limit
    "dict": (lambda v: {"k": v}, lambda limit: limit),
    "list": (lambda v: [v], lambda limit: limit),
    "tuple": (lambda v: (v,), lambda limit: limit),
    "OrderedDict": (lambda v: OrderedDict(k=v), lambda limit: limit),
    "state dict": (lambda v: StateDict({"k": v}, None), lambda limit: limit // 2),  # itself, then its mapping
    "state dict's metadata": (lambda v: StateDict({}, {"k": v}), lambda limit: limit // 2),
    "list beside a torch.Size": (lambda v: [v, Shape((1, 2))], lambda limit: limit - 1),  # the Size: a level more
    "dict beside a Counter": (lambda v: {"c": Counter(a=1), "k": v}, lambda limit: limit - 1),
}


@pytest.mark.parametrize("kind", WRAPS)
def test_a_value_nested_exactly_to_the_limit_passes_and_one_more_level_does_not(kind: str) -> None:
    wrap, fits = WRAPS[kind]
    for limit in (MAX_DEPTH, 6):
        assert not depth_exceeds(nested(fits(limit), wrap), limit)
        assert depth_exceeds(nested(fits(limit) + 1, wrap), limit)


def test_values_that_hold_nothing_do_not_nest() -> None:
    for leaf in (1, "text", 2.5, None, b"bytes", True, RECORD, complex(1, 2), {1, 2}):
        assert not depth_exceeds(leaf, limit=0)
    assert depth_exceeds([], limit=0)  # an empty container is a level all the same
    assert not depth_exceeds([], limit=1)


def test_a_wide_tree_is_walked_whole() -> None:
    wide = {f"t{i}": RECORD for i in range(5000)}
    assert not depth_exceeds({"weights": wide}, limit=2)
    wide["last"] = [[1]]  # deep only at its very end, after 5,000 records of one type
    assert depth_exceeds({"weights": wide}, limit=3)


def test_json_nested_too_deep_is_refused_as_such() -> None:
    deepest: Any = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) == deepest
    with pytest.raises(TooDeepError):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
