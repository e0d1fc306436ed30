"""RunInfo: what a run is, without reading its weights or images; and the numbers of a
feedback document that listings filter and sort by."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgpack

from .limits import parse_json
from .manifests import Manifest
from .names import format_time, parse_time
from .refs import run_time

if TYPE_CHECKING:
    from .objects import ObjectStore

COMPLETED = "completed"
ASSETS = ("weights", "personality_vector", "sample", "eval_glyphs", "feedback")
EXPECTED_ASSETS = ("weights", "sample", "eval_glyphs", "feedback")
"""The spec's files of a run; a completed run without one of them is incomplete. (The
personality vector may live inside the weights, so it is not required on its own.)"""

UNREADABLE = "unreadable"
"""The status listed for a run whose ref or manifest cannot be read (see `aoe store fsck`)."""


@dataclass(frozen=True)
class RunInfo:
    """What a run is, without reading its weights or images."""

    font_id: str
    run_id: str
    status: str
    saved_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    params: dict[str, Any]
    name: str | None
    description: str | None
    tags: tuple[str, ...]
    weights_version: str | None
    feedback_schema: str | None
    manifest: str
    assets: tuple[str, ...]
    glyphs: tuple[str, ...]
    extras: tuple[str, ...]
    parent: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    """Numeric fields of the feedback (``final_loss``, ``glyph_loss.A``...), for filtering and sorting."""
    parents: tuple[dict[str, str], ...] = ()
    """The runs its weights came from: ``{"font_id", "run_id", "manifest"}`` each (lineage)."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected assets a completed run lacks (empty for other statuses)."""
        if self.status != COMPLETED:
            return ()
        return tuple(a for a in EXPECTED_ASSETS if a not in self.assets)

    @property
    def incomplete(self) -> bool:
        return bool(self.missing)

    def value(self, field: str) -> Any:
        """A field as queries name it: a column (``status``), ``params.NAME`` (params
        nest: ``params.opt.lr``) or ``metrics.NAME`` (flat: names may hold dots, as in
        ``glyph_loss.A``); None where the run has none."""
        kind, _, key = field.partition(".")
        if kind == "metrics" and key:
            return self.metrics.get(key)
        if kind == "params" and key:
            value: Any = self.params
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        if field == "time":  # the run's time: its start, else the time its id was made of
            return self.started_at or run_time(self.run_id)
        return getattr(self, field, None) if field in COLUMNS else None

    @classmethod
    def from_manifest(cls, manifest: Manifest, digest: str, metrics: dict[str, float] | None = None) -> RunInfo:
        present = {
            "weights": manifest.weights is not None,
            "personality_vector": manifest.personality is not None,
            "sample": manifest.sample is not None,
            "eval_glyphs": bool(manifest.glyphs),
            "feedback": manifest.feedback is not None,
        }
        return cls(
            font_id=manifest.font_id,
            run_id=manifest.run_id,
            status=manifest.status,
            saved_at=parse_time(manifest.saved_at),  # type: ignore[arg-type]
            started_at=parse_time(manifest.started_at),
            ended_at=parse_time(manifest.ended_at),
            params=manifest.params,
            name=manifest.name,
            description=manifest.description,
            tags=manifest.tags,
            weights_version=manifest.weights_version,
            feedback_schema=manifest.feedback_schema,
            manifest=digest,
            assets=tuple(a for a in ASSETS if present[a]),
            glyphs=tuple(manifest.glyphs),
            extras=tuple(manifest.extras),
            parent=manifest.parent,
            metrics=metrics or {},
            parents=tuple(parent.to_dict() for parent in manifest.parents),
        )

    @classmethod
    def read(cls, manifest: Manifest, digest: str, objects: ObjectStore) -> RunInfo:
        """A run's RunInfo from its manifest, with its metrics: kept in the manifest, or (one
        written before manifests kept them) read from its feedback, verified."""
        metrics = manifest.metrics
        if metrics is None:
            metrics = feedback_metrics(objects.get_blob(manifest.feedback)) if manifest.feedback else {}
        return cls.from_manifest(manifest, digest, metrics)

    @classmethod
    def unreadable(cls, font_id: str, run_id: str, why: str) -> RunInfo:
        """A stand-in for a run whose ref or manifest cannot be read: listed, not hidden."""
        return cls(font_id, run_id, UNREADABLE, run_time(run_id), None, None, {}, None,
                   f"{why}; run `aoe store fsck`", (), None, None, "", (), (), ())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (times as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            value = getattr(self, key)
            if isinstance(value, datetime):
                value = format_time(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        out["missing"] = list(self.missing)
        return out

    @staticmethod
    def row_of(data: dict[str, Any]) -> bytes:
        """The compact form the index keeps of a RunInfo's :meth:`to_dict`: the fields in
        order, times as text (:meth:`from_row` reads it back)."""
        row: bytes = msgpack.packb([data[name] for name in _FIELDS], use_bin_type=True)
        return row

    @classmethod
    def from_row(cls, row: bytes) -> RunInfo:
        """A RunInfo from its index row, decoded when a field is first read: a listing of
        10,000 runs costs milliseconds, and a page that shows 50 of them decodes 50."""
        info = _new(cls)
        info.__dict__["_row"] = row  # not through the frozen __setattr__: a third of the time, by thousands
        return info

    def __getattr__(self, name: str) -> Any:
        """Only called for a field not decoded yet (see :meth:`from_row`)."""
        row = self.__dict__.get("_row")
        if row is None or name.startswith("__"):
            raise AttributeError(name)
        data = dict(zip(_FIELDS, msgpack.unpackb(row, raw=False)))
        data["saved_at"] = _fromiso(data["saved_at"])
        if data["started_at"]:
            data["started_at"] = _fromiso(data["started_at"])
        if data["ended_at"]:
            data["ended_at"] = _fromiso(data["ended_at"])
        for key in ("tags", "assets", "glyphs", "extras", "parents"):
            data[key] = tuple(data[key])
        self.__dict__.update(data)
        self.__dict__.pop("_row", None)  # another thread may have decoded it too: the same values
        if name not in data:
            raise AttributeError(name)
        return data[name]


_FIELDS = tuple(RunInfo.__dataclass_fields__)
for _name in ("parent", "parents"):  # a default left on the class would hide a row's value from __getattr__
    delattr(RunInfo, _name)
_new = object.__new__
_fromiso = datetime.fromisoformat


def feedback_metrics(data: bytes) -> dict[str, float]:
    """The numbers in a feedback document: top-level fields, and one level down as
    ``outer.inner`` (per-glyph losses). Booleans are not numbers here."""
    try:
        feedback = parse_json(data)
    except ValueError:  # malformed, or nested too deep (a reader never crashes on a feedback)
        return {}
    metrics: dict[str, float] = {}
    if not isinstance(feedback, dict):
        return metrics
    for key, value in feedback.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = value
        elif isinstance(value, dict):
            for inner, number in value.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    metrics[f"{key}.{inner}"] = number
    return metrics


@dataclass(frozen=True)
class FontSummary:
    font_id: str
    runs: int
    newest_run: str | None
    newest_saved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"font_id": self.font_id, "runs": self.runs, "newest_run": self.newest_run,
                "newest_saved_at": format_time(self.newest_saved_at) if self.newest_saved_at else None}


def fields_of(runs: Iterable[RunInfo]) -> set[str]:
    """Every ``params.`` and ``metrics.`` field at least one of these runs has (nested params
    at every level: ``params.opt`` and ``params.opt.lr``), for saying which a query named
    in vain."""
    found: set[str] = set()
    for info in runs:
        found.update(f"metrics.{name}" for name in info.metrics)
        stack: list[tuple[str, Any]] = [("params", info.params)]
        while stack:
            prefix, params = stack.pop()
            for key, value in params.items():
                found.add(f"{prefix}.{key}")
                if isinstance(value, dict):
                    stack.append((f"{prefix}.{key}", value))
    return found


COLUMNS = {"font_id", "run_id", "status", "saved_at", "started_at", "ended_at", "name", "description", "time"}
"""Fields to filter and sort on besides ``params.*`` and ``metrics.*``; ``time`` is the
run's time (its start, else when it was saved), the one its run id is made of."""
