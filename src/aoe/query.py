"""The query language of listings: conditions (``metrics.final_loss<0.05``), filters,
sort and paging, turned into SQL over the catalog index (values always as parameters,
field names only from a fixed set)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import inputs
from .errors import InvalidInputError
from .runinfo import COLUMNS

OPERATORS = ("<=", ">=", "!=", "=", "<", ">")
MAX_PAGE = 2**62
"""The largest limit or offset a query takes (SQLite's integers end at 2**63)."""
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.S)


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


def parse_condition(condition: str | tuple[str, str, Any]) -> tuple[str, str, Any]:
    """``"metrics.final_loss<0.1"`` or ``("params.lr", "=", 0.001)`` -> (field, op, value)."""
    if isinstance(condition, tuple):
        name, op, value = condition
    else:
        match = _CONDITION.fullmatch(condition)
        if not match:
            raise InvalidInputError(
                f"cannot read the condition {condition!r}: write FIELD OP VALUE, e.g. "
                "'metrics.final_loss<0.05', 'params.lr=0.001' or 'status!=failed'"
            )
        name, op, text = match.groups()
        value = _value(text)
    if op not in OPERATORS:
        raise InvalidInputError(f"unknown operator {op!r}: use one of {' '.join(OPERATORS)}")
    _field_sql(name)
    return name, op, value


def _value(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text, text)


def check_field(name: str) -> str:
    """A field name queries and listings accept (a column, ``params.NAME``,
    ``metrics.NAME``); InvalidInputError naming the choices otherwise."""
    _field_sql(name)
    return name


def _field_sql(name: str) -> str:
    """The SQL expression for a field; only known names reach the SQL text."""
    if name in COLUMNS:
        return name
    for prefix in ("params.", "metrics."):
        key = name[len(prefix):]
        if name.startswith(prefix) and key and "'" not in key and '"' not in key:
            # params nest (params.opt.lr); metrics are flat, their names may hold dots (glyph_loss.A)
            parts = key.split(".") if prefix == "params." else [key]
            path = "".join(f'."{part}"' for part in parts)
            return f"json_extract({prefix[:-1]}, '${path}')"
    raise InvalidInputError(
        f"unknown field {name!r}: use {', '.join(sorted(COLUMNS))}, params.NAME or metrics.NAME"
    )


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
    for name, op, value in map(parse_condition, query.where):
        expr = _field_sql(name)
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            value = float(value)  # beyond SQLite's integers: compare as a float
        if value is None:
            clauses.append(f"{expr} IS {'NOT ' if op == '!=' else ''}NULL")
        else:
            clauses.append(f"{expr} {op} ?")
            args.append(value)
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
