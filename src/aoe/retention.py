"""Retention: which runs of a font a policy keeps, with restic's semantics (``restic
forget``): a run is kept if any rule keeps it, and each rule says why.

- ``keep_last N``: the N newest runs;
- ``keep_hourly/daily/weekly/monthly/yearly N``: for the N newest hours (days, ISO weeks,
  months, years) that have runs, the newest run of each (times in UTC);
- ``keep_within``: every run within that long of the newest run (``7d``, ``2w``, ``1y6m``);
- ``keep_best (N, FIELD)``: the N runs first when sorted by FIELD (``metrics.loss``: the
  lowest; ``-metrics.accuracy``: the highest), among those that have it;
- ``keep_tags``: every run with one of these tags;

and whatever the rules: the newest run, every run an alias points at (with
``keep_ancestors``, the runs it came from, recursively), and every run that cannot be
read (what it is is unknown). Nothing here touches a store: :func:`decide` is given the
runs and answers; ``Store.forget`` acts on the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import InvalidInputError
from .names import check_tags, shown
from .query import check_field
from .runinfo import UNREADABLE, RunInfo

BUCKETS = {"hourly": "%Y-%m-%d %H:00", "daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m", "yearly": "%Y"}
"""How each calendar rule names the period a run falls in (UTC)."""
WITHIN_UNITS = {"y": timedelta(days=365), "m": timedelta(days=30), "w": timedelta(weeks=1), "d": timedelta(days=1),
                "h": timedelta(hours=1)}
"""``keep_within``'s units, as restic's: ``m`` is a month (30 days)."""
WITHIN_RE = re.compile(r"(?:[0-9]{1,6}[ymwdh])+")
MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep of a font's runs; see the module doc. Every count is 1 or more, or None."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: str | None = None
    keep_best: tuple[tuple[int, str], ...] = ()
    keep_tags: tuple[str, ...] = ()
    keep_ancestors: bool = False

    def __post_init__(self) -> None:
        for name in ("keep_last", *(f"keep_{kind}" for kind in BUCKETS)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 1 <= value <= MAX_COUNT):
                raise InvalidInputError(f"{name} must be a whole number from 1, not {shown(value)}")
        if self.keep_within is not None:
            within(self.keep_within)
        best = tuple(self.keep_best)
        for rule in best:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], int)
                    and not isinstance(rule[0], bool) and 1 <= rule[0] <= MAX_COUNT and isinstance(rule[1], str)):
                raise InvalidInputError(f"keep_best takes (count, field) pairs, not {shown(rule)}")
            check_field(rule[1].removeprefix("-"))
        object.__setattr__(self, "keep_best", tuple((int(n), str(f)) for n, f in best))
        object.__setattr__(self, "keep_tags", check_tags(self.keep_tags))
        if not isinstance(self.keep_ancestors, bool):
            raise InvalidInputError("keep_ancestors is true or false")

    @property
    def empty(self) -> bool:
        """Whether no rule is given (forgetting by it would keep only the newest run)."""
        return self == RetentionPolicy(keep_ancestors=self.keep_ancestors)

    def to_dict(self) -> dict[str, Any]:
        """The rules given (JSON-ready): what ``policy`` prints and the store keeps."""
        return {k: (list(map(list, v)) if k == "keep_best" else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if v not in (None, (), False)}

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> RetentionPolicy:
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"unknown retention rules: {', '.join(sorted(unknown))}")
        values = dict(fields)
        if "keep_best" in values:
            values["keep_best"] = tuple(tuple(rule) if isinstance(rule, list) else rule for rule in values["keep_best"])
        if "keep_tags" in values and isinstance(values["keep_tags"], list):
            values["keep_tags"] = tuple(values["keep_tags"])
        return cls(**values)

    def describe(self) -> str:
        """The rules as ``forget``'s options say them."""
        parts = [f"--{k.replace('_', '-')} {v}" for k, v in self.to_dict().items() if k not in ("keep_best",
                                                                                                "keep_tags", "keep_ancestors")]
        parts += [f"--keep-best {n} {f}" for n, f in self.keep_best]
        parts += [f"--keep-tag {t}" for t in self.keep_tags]
        return " ".join(parts + (["--keep-ancestors"] if self.keep_ancestors else [])) or "(no rule)"


def within(text: str) -> timedelta:
    """``7d``, ``2w``, ``1y6m``, ``36h`` as a duration (restic's units: ``m`` is a month)."""
    if not isinstance(text, str) or not WITHIN_RE.fullmatch(text):
        raise InvalidInputError(f"invalid duration {shown(text)} for keep_within: a number and a unit, y, m "
                                "(months), w, d or h, repeated as needed (7d, 2w, 1y6m)")
    return sum((int(n) * WITHIN_UNITS[unit] for n, unit in re.findall(r"([0-9]+)([ymwdh])", text)), timedelta())


@dataclass
class Decisions:
    """Why each run is kept (its reasons, in the order of the rules), run id -> reasons;
    a run with none is forgotten."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def keep(self, run_id: str, why: str) -> None:
        self.reasons[run_id].append(why)

    @property
    def kept(self) -> list[str]:
        return [run_id for run_id, why in self.reasons.items() if why]

    @property
    def forgotten(self) -> list[str]:
        return [run_id for run_id, why in self.reasons.items() if not why]


def decide(runs: Sequence[RunInfo], policy: RetentionPolicy, aliases: Mapping[str, Sequence[str]]) -> Decisions:
    """Which of a font's ``runs`` (oldest first) the policy keeps, and why; ``aliases``
    maps each run an alias points at to the alias names."""
    decisions = Decisions({info.run_id: [] for info in runs})
    newest_first = list(reversed(runs))
    if newest_first:
        decisions.keep(newest_first[0].run_id, "newest")
    for info in runs:
        if info.status == UNREADABLE:
            decisions.keep(info.run_id, "unreadable (see `aoe store fsck`)")
    if policy.keep_last:
        for info in newest_first[:policy.keep_last]:
            decisions.keep(info.run_id, f"last {policy.keep_last}")
    times = {info.run_id: _time(info) for info in runs}
    for kind, form in BUCKETS.items():
        count = getattr(policy, f"keep_{kind}")
        seen: list[str] = []
        for info in newest_first if count else ():
            period = times[info.run_id].strftime(form)
            if period not in seen:
                if len(seen) == count:
                    break
                seen.append(period)
                decisions.keep(info.run_id, f"{kind} {period}")
    if policy.keep_within and newest_first:
        since = times[newest_first[0].run_id] - within(policy.keep_within)
        for info in newest_first:
            if times[info.run_id] >= since:
                decisions.keep(info.run_id, f"within {policy.keep_within}")
    for count, name in policy.keep_best:
        for rank, info in enumerate(_best(runs, name)[:count], start=1):
            decisions.keep(info.run_id, f"best {name} #{rank}")
    for info in runs:
        for tag in policy.keep_tags:
            if tag in info.tags:
                decisions.keep(info.run_id, f"tag {tag}")
    for run_id, names in aliases.items():
        if run_id in decisions.reasons:
            decisions.keep(run_id, "alias " + ", ".join(names))
    if policy.keep_ancestors:
        _keep_ancestors(runs, aliases, decisions)
    return decisions


def _time(info: RunInfo) -> datetime:
    moment: datetime = info.value("time")
    return moment.astimezone(UTC)


def _best(runs: Sequence[RunInfo], name: str) -> list[RunInfo]:
    """Runs that have the field as a number, best first (``-`` before it: the highest)."""
    field_name = name.removeprefix("-")
    scored = [(value, info) for info in runs
              if isinstance(value := info.value(field_name), (int, float)) and not isinstance(value, bool)
              and not math.isnan(value)]
    scored.sort(key=lambda pair: pair[0], reverse=name.startswith("-"))
    return [info for _, info in scored]


def _keep_ancestors(runs: Sequence[RunInfo], aliases: Mapping[str, Sequence[str]], decisions: Decisions) -> None:
    """Every run an aliased run came from, through its parents, in this font."""
    by_id = {info.run_id: info for info in runs}
    for run_id, names in aliases.items():
        todo = [run_id]
        seen = {run_id}
        while todo:
            info = by_id.get(todo.pop())
            for parent in info.parents if info is not None else ():
                ancestor = parent["run_id"]
                if ancestor in by_id and ancestor not in seen and parent["font_id"] == by_id[ancestor].font_id:
                    seen.add(ancestor)
                    decisions.keep(ancestor, "ancestor of " + ", ".join(f"@{name}" for name in names))
                    todo.append(ancestor)
