"""The query language of listings: conditions (``metrics.final_loss<0.05``), filters,
sort and paging, turned into SQL over the catalog index (values always as parameters,
field names only from a fixed set).

A condition is ``FIELD OP VALUE`` (docs/commands.md, *Queries*). What a value is depends
on the field, and a comparison only ever holds between values of one type: numbers with
numbers, text with text, so ``metrics.final_loss<abc`` is an error, never "every run".

- ``metrics.NAME``: numbers (``0.05``, ``-3``, ``1e-4``, ``inf``) or ``null``;
- ``params.NAME`` (``params.opt.lr`` reaches into nested params): a number, ``true``,
  ``false``, ``null``, text in quotes (``'adam'``), or a bare word (``adam``);
- ``run_id``, ``font_id``, ``status``, ``name``, ``description``: text, quotes optional;
- ``time``, ``saved_at``, ``started_at``, ``ended_at``: a time (ISO 8601; without an
  offset, local time, as ``--since``).

``=`` (or ``==``) compares a number and a time at the precision written: ``0.002503``
matches what ``aoe store ls`` prints as 0.002503 (0.0025025 up to 0.0025035), ``2026-03-02``
the whole day; a whole number (``10``) is exact. ``!=`` is its opposite among runs that have
the field (with a value of that type); ``FIELD=null`` matches runs without it, ``!=null``
runs with it. ``true``/``false`` and ``null`` take ``=`` and ``!=`` only. A NaN metric is
kept as no value: it matches ``=null`` and no comparison.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from . import inputs
from .errors import InvalidInputError
from .names import format_time, shown
from .runinfo import COLUMNS

OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">")
MAX_PAGE = 2**62
"""The largest limit or offset a query takes (SQLite's integers end at 2**63)."""
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$", re.S)
_NUMBER = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)", re.I)
_WORD = re.compile(r"[^\s'\"<>=!]+")
"""A bare word: text without spaces, quotes or operator characters (``adam``, ``relu6``)."""
TEXT_COLUMNS = frozenset({"font_id", "run_id", "status", "name", "description"})
TIME_COLUMNS = frozenset({"time", "saved_at", "started_at", "ended_at"})
FIELDS_HELP = f"{', '.join(sorted(COLUMNS))}, params.NAME or metrics.NAME"
VALUES_HELP = "a number, true, false, null, or text in quotes ('adam')"


@dataclass(frozen=True)
class Condition:
    """One parsed condition: the field, the operator (``=`` for ``==`` too), the kind of
    value (``number``, ``text``, ``time``, ``bool``, ``null``), the value, and for ``=`` and
    ``!=`` of a number or time as written, the half-open range ``[low, high)`` it stands for."""

    field: str
    op: str
    kind: str
    value: Any
    span: tuple[Any, Any] | None = None


@dataclass
class Query:
    """What to list: all filters are ANDed."""

    fonts: Sequence[str] | None = None
    """The fonts to answer about (None: every font in the index)."""
    status: str | None = None
    tags: Sequence[str] = ()
    all_tags: bool = False
    since: datetime | str | None = None
    until: datetime | str | None = None
    where: Sequence[str | tuple[str, str, Any]] = ()
    text: str | None = None
    sort: str = "run_id"
    descending: bool = False
    limit: int | None = None
    offset: int = 0

    @property
    def whole_font(self) -> str | None:
        """The font whose every run this query asks for in run id order (``ls FONT``,
        the most common listing), which the index can answer in one scan; else None."""
        unfiltered = not (self.status or self.tags or self.since or self.until or self.where or self.text)
        in_id_order = self.sort == "run_id" and not self.descending and self.limit is None and not self.offset
        if self.fonts is not None and len(self.fonts) == 1 and unfiltered and in_id_order:
            return self.fonts[0]
        return None


def parse_condition(condition: str | tuple[str, str, Any]) -> Condition:
    """``"metrics.final_loss<0.1"``, or ``("params.lr", "=", 0.001)`` (a value given as a
    Python value: numbers compare exactly), as a :class:`Condition`; InvalidInputError
    naming the part that cannot be read."""
    if isinstance(condition, tuple):
        name, op, value = condition
        if op not in OPERATORS:
            raise InvalidInputError(f"unknown operator {shown(op)}: use one of {' '.join(OPERATORS)}")
        return _typed(name, "=" if op == "==" else op, *_python_value(name, value))
    match = _CONDITION.fullmatch(condition) if isinstance(condition, str) else None
    if not match:
        raise InvalidInputError(
            f"cannot read the condition {shown(condition)}: write FIELD OP VALUE, e.g. "
            "'metrics.final_loss<0.05', 'params.lr=0.001' or 'status!=failed'"
        )
    name, op, text = match.groups()
    check_field(name)
    op = "=" if op == "==" else op
    try:
        return _typed(name, op, *_text_value(name, text))
    except InvalidInputError as exc:
        raise InvalidInputError(f"in {shown(condition)}: {exc}") from None


Typed = tuple[str, Any, tuple[Any, Any] | None]
"""A value's kind, the value, and the range it stands for at the precision written (or None)."""


def _text_value(name: str, text: str) -> Typed:
    """A value as written after the operator."""
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
    inner = text[1:-1] if quoted else text
    if text == "null":
        return "null", None, None
    if name in TEXT_COLUMNS:
        if not quoted and not _WORD.fullmatch(text):
            raise InvalidInputError(f"{shown(text)} is not a value: write text in quotes")
        return "text", inner, None
    if name in TIME_COLUMNS:
        return "time", *_time_range(inner)
    if text in ("true", "false"):
        return "bool", text == "true", None
    if not quoted and _NUMBER.fullmatch(text):
        return "number", *_number_range(text)
    if name.startswith("metrics."):
        raise InvalidInputError(f"{name} is a number, and {shown(text)} is not one: write e.g. 0.05, 1e-3, "
                                "-inf, or null for runs without it")
    if quoted or _WORD.fullmatch(text):
        return "text", inner, None
    raise InvalidInputError(f"{shown(text)} is not a value: write {VALUES_HELP}")


def _python_value(name: str, value: Any) -> Typed:
    """A value given as a Python value (the API's tuples): compared exactly."""
    if value is None:
        return "null", None, None
    if isinstance(value, bool):
        return "bool", value, None
    if isinstance(value, datetime) or name in TIME_COLUMNS:
        return "time", inputs.timestamp(value, name), None
    if isinstance(value, (int, float)):
        if value != value:
            raise InvalidInputError(f"{name}: NaN matches no comparison; use null for runs without a value")
        return "number", value, None
    if isinstance(value, str):
        return "text", value, None
    raise InvalidInputError(f"{name}: cannot compare with a {type(value).__name__}; use {VALUES_HELP}")


def _typed(name: str, op: str, kind: str, value: Any, span: tuple[Any, Any] | None) -> Condition:
    """The condition, if its operator applies to its kind of value, and its field takes it."""
    check_field(name)
    if name.startswith("metrics.") and kind not in ("number", "null"):
        shown_value = str(value).lower() if kind == "bool" else shown(value)
        raise InvalidInputError(f"{name} is a number, and {shown_value} is not one")
    if kind in ("null", "bool") and op not in ("=", "!="):
        raise InvalidInputError(f"{name} {op} {str(value).lower() if kind == 'bool' else 'null'}: "
                                "true, false and null take = and != only")
    if kind in ("number", "bool") and name in TEXT_COLUMNS:  # the API's ("name", "=", 3)
        kind, value, span = "text", str(value), None
    if kind == "number" and isinstance(value, int) and not -(2**63) <= value < 2**63:
        value = float(value)  # beyond SQLite's integers: compare as a float
    if kind == "number" and value in (math.inf, -math.inf):
        value = math.copysign(sys.float_info.max, value)  # as the index keeps infinities (catalog.index_json)
    return Condition(name, op, kind, value, span if op in ("=", "!=") else None)


def _number_range(text: str) -> tuple[float | int, tuple[float, float] | None]:
    """A number as written, and for one with a point or an exponent the range it stands
    for at that precision (``0.0025`` -> [0.00245, 0.00255)); None: exact."""
    if text.lower().lstrip("+-") in ("inf", "infinity") or not re.search(r"[.eE]", text):
        return (float(text) if "inf" in text.lower() else int(text)), None
    try:
        decimal = Decimal(text)
    except InvalidOperation:  # pragma: no cover - _NUMBER admits only what Decimal reads
        raise InvalidInputError(f"{shown(text)} is not a number") from None
    half = Decimal(5).scaleb(int(decimal.as_tuple().exponent) - 1)
    return float(decimal), (float(decimal - half), float(decimal + half))


_TIME_PART = re.compile(r"[T ](\d\d):?(\d\d)?:?(\d\d)?(\.\d+)?")


def _time_range(text: str) -> tuple[str, tuple[str, str]]:
    """A time as written (ISO 8601) as stored times are (UTC text), and the range it
    stands for at its precision: a date, the day; ``T14:22``, the minute..."""
    start = inputs.timestamp(text, "time")
    assert start is not None
    part = _TIME_PART.search(text)
    if part is None:
        unit = timedelta(days=1)
    elif part[4]:
        unit = timedelta(seconds=10.0 ** -min(len(part[4]) - 1, 6))
    else:
        unit = timedelta(hours=1) if part[2] is None else timedelta(minutes=1) if part[3] is None else \
            timedelta(seconds=1)
    return start, (start, format_time(datetime.fromisoformat(start) + unit))


def check_field(name: str) -> str:
    """A field name queries and listings accept (a column, ``params.NAME``,
    ``metrics.NAME``); InvalidInputError naming the choices otherwise."""
    _field_sql(name)
    return name


def _field_sql(name: str) -> str:
    """The SQL expression for a field; only known names reach the SQL text."""
    if name in COLUMNS:
        return name
    column, path = _json_path(name)
    return f"json_extract({column}, '{path}')"


def _json_path(name: str) -> tuple[str, str]:
    """The JSON column and path of a ``params.`` or ``metrics.`` field."""
    for prefix in ("params.", "metrics."):
        key = name[len(prefix):]
        if name.startswith(prefix) and key and "'" not in key and '"' not in key:
            # params nest (params.opt.lr); metrics are flat, their names may hold dots (glyph_loss.A)
            parts = key.split(".") if prefix == "params." else [key]
            if all(parts):
                return prefix[:-1], "$" + "".join(f'."{part}"' for part in parts)
    raise InvalidInputError(f"unknown field {shown(name)}: use {FIELDS_HELP}")


def _condition_sql(condition: Condition) -> tuple[str, list[Any]]:
    """SQL for one condition: true only where the field holds a value of the condition's
    kind that compares as asked (never across types)."""
    expr, op, value, span = _field_sql(condition.field), condition.op, condition.value, condition.span
    if condition.field in COLUMNS:
        json_type, present = "", f"{expr} IS NOT NULL"
    else:
        column, path = _json_path(condition.field)
        json_type = f"json_type({column}, '{path}')"
        present = {"number": f"{json_type} IN ('integer', 'real')", "text": f"{json_type} = 'text'",
                   "bool": f"{json_type} IN ('true', 'false')"}.get(
            condition.kind, f"coalesce({json_type}, 'null') != 'null'")
    if condition.kind == "null":
        return (present if op == "!=" else f"NOT ({present})"), []
    if condition.kind == "bool":
        return f"({present} AND {json_type} {op} ?)", ["true" if value else "false"]
    if span is not None:
        return f"({present} AND {'NOT ' if op == '!=' else ''}({expr} >= ? AND {expr} < ?))", list(span)
    return f"({present} AND {expr} {op} ?)", [value]


def _like(text: str) -> str:
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def build_query(query: Query, select: str) -> tuple[str, list[Any]]:
    """SQL and its arguments for a query (never string-formatted user values)."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.fonts is not None:
        clauses.append(f"font_id IN ({','.join('?' * len(query.fonts))})" if query.fonts else "0")
        args += list(query.fonts)
    if query.status:
        clauses.append("status = ?")
        args.append(query.status)
    if query.tags:
        tags = list(dict.fromkeys(query.tags))
        marks = ",".join("?" * len(tags))
        matches = f"(SELECT count(DISTINCT value) FROM json_each(runs.tags) WHERE value IN ({marks}))"
        clauses.append(f"{matches} = ?" if query.all_tags else f"{matches} > 0")
        args += tags + ([len(tags)] if query.all_tags else [])
    for bound, op in ((query.since, ">="), (query.until, "<")):
        if bound is not None:
            clauses.append(f"time {op} ?")
            args.append(inputs.timestamp(bound, "time bound"))
    for condition in map(parse_condition, query.where):
        sql, values = _condition_sql(condition)
        clauses.append(sql)
        args += values
    if query.text:
        clauses.append("(lower(name) LIKE ? ESCAPE '\\' OR lower(description) LIKE ? ESCAPE '\\')")
        args += [_like(query.text)] * 2
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sort = query.sort[1:] if query.sort.startswith("-") else query.sort
    direction = "DESC" if query.descending != query.sort.startswith("-") else "ASC"
    order = _field_sql(sort)
    sql = f"SELECT {select} FROM runs{where} ORDER BY {order} IS NULL, {order} {direction}, font_id, run_id"
    for count, what in ((query.limit, "limit"), (query.offset, "offset")):
        if count is not None and not (isinstance(count, int) and 0 <= count <= MAX_PAGE):
            raise InvalidInputError(f"{what} {count!r}: use a whole number from 0 to {MAX_PAGE:,}")
    if query.limit is not None or query.offset:
        sql += " LIMIT ? OFFSET ?"
        args += [-1 if query.limit is None else query.limit, query.offset]
    return sql, args

