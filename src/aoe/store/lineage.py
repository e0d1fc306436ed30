"""Lineage: which runs a run's weights came from (a resume, a fine-tune from another
font, a merge), kept in its immutable manifest (``parents``); the runs that came from a
run (its children, found in the index); a font's whole graph for ``log --graph``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError, StoreError
from ..manifests import MAX_PARENTS, ParentRun
from ..names import parse_digest, shown
from ..runinfo import RunInfo
from .reading import Reading
from .run import LoadedModel, Run

ParentSpec = Any
"""A run named as a parent: ``"FONT@ALIAS"``, ``"FONT"`` (its newest run),
``"FONT/RUN_ID"``, a ``(font, run)`` pair, or a :class:`Run`, :class:`RunInfo` or
:class:`LoadedModel` (the very version that was loaded)."""


@dataclass(frozen=True)
class LineageNode:
    """A run in a lineage graph: what it is (None: not in the store: deleted, or never
    here), and the runs it came from."""

    font_id: str
    run_id: str
    info: RunInfo | None
    parents: tuple[tuple[str, str], ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.font_id, self.run_id


class Lineage(Reading):
    """Parents named at save time; children and graphs read from the index."""

    def parent_runs(self, parents: Iterable[ParentSpec] | None) -> tuple[ParentRun, ...]:
        """The runs ``parents`` name, each with the manifest it has now (or, for a run
        object, the version it was loaded as), checked: distinct, at most 64."""
        if parents is None:
            return ()
        if isinstance(parents, (str, Run, RunInfo, LoadedModel, ParentRun)) or (
                isinstance(parents, tuple) and len(parents) == 2 and all(isinstance(p, str) for p in parents)):
            parents = [parents]  # one parent, not a sequence of them
        found = tuple(self._parent_run(spec) for spec in parents)
        if len(found) > MAX_PARENTS:
            raise InvalidInputError(f"a run names at most {MAX_PARENTS} parents, not {len(found)}")
        if len({(p.font_id, p.run_id) for p in found}) != len(found):
            raise InvalidInputError("a parent run is named twice")
        return found

    def _parent_run(self, spec: ParentSpec) -> ParentRun:
        if isinstance(spec, ParentRun):
            return spec
        if isinstance(spec, Run):
            return ParentRun(spec.manifest.font_id, spec.manifest.run_id, spec.digest)
        info = spec.metadata if isinstance(spec, LoadedModel) else spec
        if isinstance(info, RunInfo):
            return ParentRun(info.font_id, info.run_id, parse_digest(info.manifest))
        if isinstance(spec, str):
            font_id, _, run_id = spec.partition("/")
            spec = (font_id, run_id or None)
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
                and isinstance(spec[1], (str, type(None)))):
            raise InvalidInputError(f"a parent is a run (FONT@ALIAS, FONT/RUN_ID, (font, run) or a loaded run), "
                                    f"not {shown(spec)}")
        font_id, run_id = self.run_named(*spec)
        return ParentRun(font_id, run_id, self.refs.read_run(font_id, run_id))

    def children_of(self, font_id: str, run_id: str | None = None) -> list[RunInfo]:
        """The runs, of every font, that name this run as a parent."""
        font_id, run_id = self.run_named(font_id, run_id)
        self.catalog.sync(self.refs.fonts())
        return self.catalog.children(font_id, run_id)

    def lineage(self, font_id: str) -> list[LineageNode]:
        """A font's runs, newest first, each with the runs it came from; and those parents
        from elsewhere (other fonts, deleted runs), after them, so a graph can be drawn
        (``aoe store log --graph``, the web's lineage view)."""
        runs = list(reversed(self.list_runs(font_id)))
        nodes = [LineageNode(font_id, info.run_id, info, _parent_keys(info)) for info in runs]
        have = {node.key for node in nodes}
        outside = sorted({key for node in nodes for key in node.parents if key not in have}, reverse=True)
        for parent_font, parent_run in outside:
            info = self._info_or_none(parent_font, parent_run)
            nodes.append(LineageNode(parent_font, parent_run, info, _parent_keys(info) if info else ()))
        return nodes

    def _info_or_none(self, font_id: str, run_id: str) -> RunInfo | None:
        """A run outside the graph's font, as the index has it; None if it is not there."""
        try:
            found = self.list_runs(font_id, where=[("run_id", "=", run_id)])
        except StoreError:  # no such font (any more)
            return None
        return found[0] if found else None


def _parent_keys(info: RunInfo) -> tuple[tuple[str, str], ...]:
    return tuple((parent["font_id"], parent["run_id"]) for parent in info.parents)
