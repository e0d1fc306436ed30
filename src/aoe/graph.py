"""Lineage graphs laid out in lanes, as ``git log --graph`` draws history: one row per
run, newest first (every run above the runs it came from), each in a column (a lane)
that its line runs down until it reaches its first parent; other parents branch off.

Only the layout lives here: the command line draws it in text, the web page in SVG.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Row(Generic[Key]):
    """One run's row: its column, the lanes running through the row (the columns that
    hold a line, its own included), and the columns its parents continue in."""

    key: Key
    column: int
    lanes: tuple[int, ...]
    parent_columns: tuple[int, ...]
    joining: tuple[int, ...] = ()
    """Other lanes that were waiting for this run (it is the parent of runs in several
    lanes): they end here, joining its column."""


def ordered(keys: Sequence[Key], parents: Mapping[Key, Sequence[Key]]) -> list[Key]:
    """``keys`` (given newest first) in an order where every run comes before the runs it
    came from, and otherwise as given (a run's id is its time, but a run started earlier
    than its parent, as a caller may say, must still be drawn above it)."""
    place = {key: index for index, key in enumerate(keys)}
    waiting = {key: 0 for key in keys}  # how many children of each are not placed yet
    for key in keys:
        for parent in set(parents.get(key, ())):
            if parent in waiting and parent != key:
                waiting[parent] += 1
    ready = [(place[key], key) for key in keys if waiting[key] == 0]
    heapq.heapify(ready)
    out: list[Key] = []
    while ready:
        _, key = heapq.heappop(ready)
        out.append(key)
        for parent in set(parents.get(key, ())):
            if parent in waiting and parent != key:
                waiting[parent] -= 1
                if waiting[parent] == 0:
                    heapq.heappush(ready, (place[parent], parent))
    if len(out) != len(keys):  # a cycle (manifests cannot make one: a parent exists before); as given
        out += [key for key in keys if key not in set(out)]
    return out


def layout(keys: Sequence[Key], parents: Mapping[Key, Sequence[Key]]) -> list[Row[Key]]:
    """Rows of the graph of ``keys`` (newest first) and the parents of each (those not in
    ``keys`` are left out), in :func:`ordered` order."""
    present = set(keys)
    lanes: list[Key | None] = []
    rows: list[Row[Key]] = []
    for key in ordered(keys, parents):
        waiting = [index for index, lane in enumerate(lanes) if lane == key]
        if waiting:
            column = waiting[0]
        else:
            column = lanes.index(None) if None in lanes else len(lanes)
            if column == len(lanes):
                lanes.append(key)
            lanes[column] = key
        for index in waiting[1:]:
            lanes[index] = None
        through = tuple(index for index, lane in enumerate(lanes) if lane is not None)
        own = [parent for parent in dict.fromkeys(parents.get(key, ())) if parent in present and parent != key]
        parent_columns = []
        lanes[column] = own[0] if own else None
        if own:
            parent_columns.append(column)
        for parent in own[1:]:
            if parent in lanes:
                parent_columns.append(lanes.index(parent))
                continue
            slot = lanes.index(None) if None in lanes else len(lanes)
            if slot == len(lanes):
                lanes.append(parent)
            lanes[slot] = parent
            parent_columns.append(slot)
        while lanes and lanes[-1] is None:
            lanes.pop()
        rows.append(Row(key, column, through, tuple(parent_columns), tuple(waiting[1:])))
    return rows


def text_lines(rows: Sequence[Row[Key]], label: Mapping[Key, str], marks: Mapping[Key, str] | None = None) -> list[str]:
    """The graph in text, one line per run (``*`` in its column, ``|`` for lanes passing
    by) followed by its label, and, where lanes join or branch, a line of ``/`` and ``\\``."""
    marks = marks or {}
    lines = []
    for row in rows:
        width = max([*row.lanes, *row.parent_columns, *row.joining, row.column]) + 1
        if row.joining:
            cells = [("|" if index in row.lanes else " ") for index in range(width)]
            for index in row.joining:
                cells[index] = "/"
            lines.append(" ".join(cells).rstrip())
        cells = [("|" if index in row.lanes else " ") for index in range(width)]
        for index in row.joining:
            cells[index] = " "
        cells[row.column] = marks.get(row.key, "*")
        lines.append(" ".join(cells) + "  " + label[row.key])
        branches = [index for index in row.parent_columns if index != row.column]
        if branches:
            after = set(row.lanes) - set(row.joining)
            cells = [("|" if index in after or index in row.parent_columns else " ") for index in range(width)]
            for index in branches:
                cells[index] = "\\" if index > row.column else "/"
            lines.append(" ".join(cells).rstrip())
    return lines
