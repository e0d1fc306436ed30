"""A font's per-run values as the index keeps them (ref tokens, RunInfo rows, JSON), read
whole or for a page, each row checked against its checksum; and the packed copies that
let a new process read a settled font's 10,000 values as one.

A packed copy is of one generation of the font's rows; it is read with the rows later
generations wrote (a save writes one), as long as no run was removed since (the joined
JSON: as long as the runs added since all sort after its own, the usual case, a save
adding the newest run). One that fails its checksum, or does not add up to the runs the
index holds, is passed over: the rows are read instead.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from .database import BUSY_TIMEOUT_MS, DamagedRow, check

T = TypeVar("T")

RACY_NS = 2_000_000_000
"""A folder changed less than this before a sync is listed again by the next one (two
changes within one tick of the filesystem clock can leave its mtime the same)."""
SETTLED_NS = RACY_NS
"""A font whose rows have not changed for this long gets a packed copy of them when a
process reads them all (``packed``); one being trained, saving every few seconds,
does not rewrite 10,000 rows for each listing."""
MAX_INFO_BYTES = 1 << 20
"""No RunInfo row of the packed copy is larger (a bound on what decoding it allocates)."""
FETCH_ALL_ABOVE = 500
"""Answers with more runs of a font than this read all its RunInfo rows in one scan; fewer
are looked up one by one."""

VALUES = {"tokens": ("runs", "token"), "info": ("run_info", "info"), "json": ("run_json", "json")}
"""Where each kind of per-run value lives: its table and column. Tokens carry no
checksum: each is compared with the ref's own token at every sync."""


def whole_font_sql(kind: str, *, later: bool = False) -> str:
    """The SQL reading a font's values of a kind (``:font``) in run id order, each with its
    checksum: all of them, or (``later``) those written by generations after ``:since``."""
    table, column = VALUES[kind]
    checked = "NULL" if kind == "tokens" else "checked"
    since = (" AND run_id IN (SELECT run_id FROM runs WHERE font_id = :font AND generation > :since)"
             if later else "")
    return f"SELECT run_id, {column}, {checked} FROM {table} WHERE font_id = :font{since} ORDER BY run_id"


def _checked(kind: str, rows: Iterable[tuple[str, Any, Any]]) -> list[tuple[str, Any]]:
    """(run id, value) of rows read with their checksums, every value verified (10,000
    rows: a few milliseconds, so it is done in one comprehension)."""
    if kind == "tokens":
        return [(run_id, value) for run_id, value, _ in rows]
    rows = list(rows)
    found = [(run_id, value) for run_id, value, checked in rows
             if isinstance(value, (bytes, str)) and check(value) == checked]
    if len(found) != len(rows):
        raise DamagedRow("a row of the catalog index fails its check")
    return found


def font_state(db: sqlite3.Connection, font_id: str) -> tuple[int, bool]:
    """A font's generation (-1: never synced), and whether its rows are settled (have not
    changed for :data:`SETTLED_NS`)."""
    row = db.execute("SELECT generation, changed_ns FROM fonts WHERE font_id = ?", (font_id,)).fetchone()
    if row is None:
        return -1, False
    return row[0], settled(row[1])


def settled(changed_ns: int | None) -> bool:
    """Whether a font whose rows last changed then has been still for :data:`SETTLED_NS`."""
    return time.time_ns() - (changed_ns or 0) > SETTLED_NS


@dataclass(frozen=True)
class Copy:
    """A packed copy as the index holds it (its checksum verified), and the rows written since."""

    generation: int
    runs: int
    value: bytes
    later: list[tuple[str, Any]]


def copy_of(db: sqlite3.Connection, kind: str, font_id: str, generation: int) -> tuple[int, Copy | None]:
    """How many runs the index holds of a font, and its packed copy of a kind of this
    generation or an older one, with the rows later generations wrote (None: no copy, or
    one that fails its checksum)."""
    count: int = db.execute("SELECT count(*) FROM runs WHERE font_id = ?", (font_id,)).fetchone()[0]
    found = db.execute("SELECT generation, runs, value, checked FROM packed WHERE font_id = ? AND kind = ? "
                       "AND generation <= ?", (font_id, kind, generation)).fetchone()
    if found is None or not isinstance(found[2], bytes) or check(found[2]) != found[3]:
        return count, None
    later = _checked(kind, db.execute(whole_font_sql(kind, later=True), {"font": font_id, "since": found[0]}))
    return count, Copy(found[0], found[1], found[2], later)


def all_rows(db: sqlite3.Connection, kind: str, font_id: str, count: int) -> list[tuple[str, Any]]:
    """Every run's value of a kind, in run id order; as many as the index's runs, each
    passing its check, or the index is damaged (and rebuilt)."""
    rows = _checked(kind, db.execute(whole_font_sql(kind), {"font": font_id}))
    if len(rows) != count:
        raise DamagedRow(f"the index's {kind} rows do not match its runs")
    return rows


def rows_of(db: sqlite3.Connection, kind: str, font_id: str, run_ids: list[str]) -> list[tuple[str, Any]]:
    """(run id, value of a kind) of these runs: one scan of the font's rows for many, a
    lookup each for few (a page); every value checked."""
    table, column = VALUES[kind]
    checked = "NULL" if kind == "tokens" else "checked"
    if len(run_ids) > FETCH_ALL_ABOVE:
        return _checked(kind, db.execute(f"SELECT run_id, {column}, {checked} FROM {table} WHERE font_id = ?",
                                         (font_id,)))
    return _checked(kind, (row for run_id in run_ids for row in db.execute(
        f"SELECT run_id, {column}, {checked} FROM {table} WHERE font_id = ? AND run_id = ?", (font_id, run_id))))


def whole_font(db: sqlite3.Connection, kind: str, font_id: str, generation: int, is_settled: bool,
               keep: bool) -> dict[str, Any]:
    """Every run's value of a kind (``tokens``: its ref token; ``info``: its RunInfo row)
    by run id, in run id order, as of this generation: from the font's packed copy and the
    rows later generations wrote, else from all its rows. A settled font's values are
    packed again when its copy lacks some (if ``keep``: an index on disk)."""
    count, copy = copy_of(db, kind, font_id, generation)
    values = unpacked(copy.value, copy.runs, str if kind == "tokens" else bytes) if copy else None
    if copy is not None and values is not None:
        values = updated(values, copy.later) if copy.later else values
        if len(values) == count and (not copy.later or not is_settled):
            return values
        if len(values) != count:  # the copy is of other runs: read the rows
            values = None
    if values is None:
        values = dict(all_rows(db, kind, font_id, count))
    if is_settled and keep:
        keep_packed(db, kind, font_id, generation, len(values),
                    msgpack.packb([list(values), list(values.values())], use_bin_type=True))
    return values


def joined_json(db: sqlite3.Connection, font_id: str, generation: int, is_settled: bool, keep: bool) -> str:
    """Every run's JSON joined by ", ", in run id order: the packed copy with the runs
    added since appended, when they all sort after it (a save adds one at the end), else
    every row. A settled font's is packed again when its copy lacks some (if ``keep``)."""
    count, copy = copy_of(db, "json", font_id, generation)
    text = None
    if copy is not None and copy.runs + len(copy.later) == count and not (
            copy.later and db.execute(  # none replaced (the counts add up), none sorting before the copy's
                "SELECT 1 FROM runs WHERE font_id = ? AND run_id > ? AND generation <= ? LIMIT 1",
                (font_id, copy.later[0][0], copy.generation)).fetchone()):
        try:
            packed = [copy.value.decode()] if copy.runs else []
            text = ", ".join(packed + [row[1] for row in copy.later])
        except UnicodeDecodeError:
            pass  # not what aoe packs: the rows are read
        if text is not None and (not copy.later or not is_settled):
            return text
    if text is None:
        text = ", ".join(row[1] for row in all_rows(db, "json", font_id, count))
    if is_settled and keep:
        keep_packed(db, "json", font_id, generation, count, text.encode())
    return text


def keep_packed(db: sqlite3.Connection, kind: str, font_id: str, generation: int, runs: int, value: bytes) -> None:
    """Keep a packed copy of a settled font's rows, if they are still of this generation.
    Not waited for: an index busy or read-only costs only this try."""
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("INSERT OR REPLACE INTO packed SELECT ?, ?, ?, ?, ?, ? WHERE "
                   "(SELECT generation FROM fonts WHERE font_id = ?) = ?",
                   (font_id, kind, generation, runs, value, check(value), font_id, generation))
    except sqlite3.OperationalError:
        pass
    finally:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def unpacked(value: bytes, runs: int, kind: type) -> dict[str, Any] | None:
    """The values of a packed copy of so many runs by run id, decoded within bounds; None
    if it is not one (the rows are read instead)."""
    try:
        run_ids, values = msgpack.unpackb(value, raw=False, max_str_len=MAX_INFO_BYTES, max_bin_len=MAX_INFO_BYTES)
    except (ValueError, TypeError, msgpack.ExtraData):
        return None
    if not (isinstance(run_ids, list) and isinstance(values, list) and len(run_ids) == len(values)
            and set(map(type, run_ids)) <= {str} and set(map(type, values)) <= {kind}):
        return None
    found = dict(zip(run_ids, values))
    return found if len(found) == len(run_ids) == runs else None  # a run id twice, or runs missing


def updated(values: dict[str, T], changes: Iterable[tuple[str, T]], gone: Iterable[str] = ()) -> dict[str, T]:
    """Values by run id with changes applied, still in run id order (new runs usually
    come last, so the order is mended only when one does not)."""
    for run_id in gone:
        values.pop(run_id, None)
    in_order = True
    for run_id, value in changes:
        if in_order and run_id not in values and values and run_id < next(reversed(values)):
            in_order = False
        values[run_id] = value
    return values if in_order else dict(sorted(values.items()))


def by_font(found: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The run ids of an answer's (font, run) rows, by font, in the answer's order."""
    grouped: dict[str, list[str]] = {}
    for font_id, run_id in found:
        grouped.setdefault(font_id, []).append(run_id)
    return grouped
