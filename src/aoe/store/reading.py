"""Reading: listing, searching and counting runs through the catalog, loading what a run
holds (every byte verified), exporting it, and what the store takes on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import listings, reachability, segments
from ..layout import OBJECTS, digest_at
from ..names import (
    Digest,
    parse_digest,
)
from ..query import Query
from ..runinfo import FontSummary, RunInfo

if TYPE_CHECKING:
    import numpy as np
    import torch

from .base import StoreBase
from .bulk import collection_paused
from .run import LoadedModel


class Reading(StoreBase):
    """Listing, searching, loading and exporting runs."""

    def disk_usage(self) -> dict[str, Any]:
        """Logical bytes (what the runs hold, counting shared data once per run) against
        stored bytes (the compressed objects on disk, each once), per font and in all."""
        fonts: dict[str, dict[str, Any]] = {}
        everything: set[Digest] = set()
        for font_id in self.list_fonts():
            runs = list(reachability.walk(self.refs, self.objects, [font_id]))
            if not runs and not self.refs.has_runs_folder(font_id):
                continue
            digests = set().union(*(run.digests() for run in runs))
            logical = sum(run.head.logical_bytes for run in runs if run.head is not None)  # runs as they are now
            stored = sum(self.objects.stored_size(d) for d in digests)
            fonts[font_id] = {"runs": len(runs), "logical_bytes": logical, "stored_bytes": stored,
                              "dedup_ratio": round(logical / stored, 3) if stored else None}
            everything |= digests
        all_objects = [d for d in map(digest_at, self.backend.list(OBJECTS)) if d is not None]
        logical = sum(f["logical_bytes"] for f in fonts.values())
        stored = sum(self.objects.stored_size(d) for d in all_objects)
        return {
            "fonts": fonts,
            "logical_bytes": logical,
            "stored_bytes": stored,
            "dedup_ratio": round(logical / stored, 3) if stored else None,
            "objects": len(all_objects),
            "unreferenced_objects": len(set(all_objects) - everything),
        }

    def list_runs(
        self,
        font_id: str,
        *,
        status: str | None = None,
        tags: Sequence[str] = (),
        all_tags: bool = False,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        where: Sequence[str | tuple[str, str, Any]] = (),
        sort: str = "run_id",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RunInfo]:
        """Runs of a font, oldest first unless sorted otherwise.

        Filters combine: ``status``; ``tags`` (any of them, or all with ``all_tags``);
        ``since``/``until`` on the run's time; ``where`` conditions such as
        ``"metrics.final_loss<0.05"``, ``"params.lr=0.001"`` or ``("status", "!=", "failed")``.
        ``sort`` is a field (``metrics.final_loss``, ``params.lr``, ``saved_at``...),
        ``-field`` for descending; ``limit`` and ``offset`` page through the result.
        """
        self._require_font(font_id)
        self.catalog.sync([font_id])
        return self.catalog.runs(Query([font_id], status, tags, all_tags, since, until, where,
                                       None, sort, descending, limit, offset))

    def list_runs_json(self, font_id: str, **filters: Any) -> str:
        """:meth:`list_runs` as a JSON array of ``RunInfo.to_dict()`` (what ``aoe store ls
        FONT --json`` prints), straight from the index: no RunInfo is built."""
        fonts = self._synced_fonts(font_id)
        return "[" + self.catalog.runs_json(Query(fonts, **filters)) + "]"

    def count_runs(self, font_id: str | None = None, **filters: Any) -> int:
        """How many runs match (of one font, or of all): the filters of :meth:`list_runs`,
        and ``text`` as in :meth:`search`; counted in the index, none of them built."""
        fonts = self._synced_fonts(font_id)
        return self.catalog.count(Query(fonts, **filters))

    def personality_series(self, font_id: str) -> dict[str, np.ndarray | None]:
        """For charts: each readable run's personality vector as float64 values, by run id
        (in run id order); None where a run has none that can be charted (none, not a real
        number type, or more than ``vectors.MAX_DIMS`` numbers) or it cannot be read now.
        Each vector is read and verified once, then kept in the index; one that cannot be
        read is tried again next time."""
        import numpy as np

        self._synced_fonts(font_id)
        rows = self.catalog.vector_rows(font_id)
        unknown = list({manifest: record for _, manifest, record, vector in rows if vector is None}.items())
        reads = map if self.backend.folders else self.objects.parallel  # local reads: threads only contend
        found = dict(zip((m for m, _ in unknown), reads(self._vector_bytes, unknown)))
        self._keep_vectors(found)
        series: dict[str, np.ndarray | None] = {}
        for run_id, manifest, _, vector in rows:
            data = found.get(manifest) if vector is None else vector
            series[run_id] = np.frombuffer(data, "<f8") if data else None
        return series

    def search(
        self,
        text: str = "",
        *,
        tags: Sequence[str] = (),
        all_tags: bool = False,
        font: str | None = None,
        status: str | None = None,
        where: Sequence[str | tuple[str, str, Any]] = (),
        sort: str = "run_id",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RunInfo]:
        """Runs of every font (or one) whose name or description contains ``text``,
        case-insensitively, filtered and sorted as in :meth:`list_runs`."""
        fonts = self._synced_fonts(font)
        return self.catalog.runs(Query(fonts, status, tags, all_tags, None, None, where,
                                       text or None, sort, descending, limit, offset))

    def _synced_fonts(self, font_id: str | None) -> list[str]:
        if font_id is not None:
            self._require_font(font_id)
            fonts = [font_id]
        else:
            fonts = [f for f in self.list_fonts() if self.refs.has_runs_folder(f)]
        self.catalog.sync(fonts)
        return fonts

    def font_summaries(self) -> list[FontSummary]:
        """Every font with its run count and newest run, from the index (fast at any size)."""
        fonts = self.list_fonts()
        self.catalog.sync(f for f in fonts if self.refs.has_runs_folder(f))
        return self.catalog.summaries(fonts)

    def reindex(self) -> int:
        """Rebuild the catalog index from the refs and manifests alone; returns the runs
        indexed. On object storage it then removes every listing snapshot and segment that
        says other than those manifests (or a snapshot named in the future), so what a
        forger wrote is no longer read by any machine."""
        self.catalog.rebuild()
        count = self.count_runs()
        if self.backend.round_trips and not self.read_only:
            for font_id in self.list_fonts():
                truth = {info.run_id: info for info in self.list_runs(font_id)}
                listings.remove_untrue(self.backend, font_id, truth)
                segments.remove_untrue(self.backend, font_id, truth)
        return count

    def get_run_info(self, font_id: str, run_id: str | None = None) -> RunInfo:
        return self.open_run(font_id, run_id).info

    def load_model(
        self, font_id: str, run_id: str | None = None, map_location: Any = "cpu", keys: Iterable[Any] | None = None
    ) -> LoadedModel:
        """Weights, personality vector and metadata of a run (the newest by default).

        ``keys`` loads only those top-level entries of the weights. Every tensor is
        rebuilt from verified bytes; nothing stored is executed.
        """
        with collection_paused():
            return self.open_run(font_id, run_id).load(map_location, keys)

    def open_weights(self, font_id: str, run_id: str | None = None, map_location: Any = "cpu") -> Any:
        """A run's weights as a lazy mapping (:class:`aoe.weights.LazyWeights`): a
        tensor is read, and verified, only when accessed."""
        return self.open_run(font_id, run_id).open_weights(map_location)

    def load_personality(self, font_id: str, run_id: str | None = None, map_location: Any = "cpu") -> torch.Tensor:
        """A run's personality vector alone, exact dtype and shape."""
        return self.open_run(font_id, run_id).personality_vector(map_location)

    def export_personality(self, font_id: str, run_id: str | None, path: str | os.PathLike[str]) -> Path:
        """Write a run's personality vector on its own: ``.pt`` (a tensor), ``.json`` or ``.npy``."""
        return self.open_run(font_id, run_id).export_personality(path)

    def export_run(self, font_id: str, run_id: str | None, dest: str | os.PathLike[str]) -> Path:
        """Write a run as a folder in the spec's layout; see :meth:`Run.export`."""
        return self.open_run(font_id, run_id).export(dest)

    def export_weights(self, font_id: str, run_id: str | None, dest: str | os.PathLike[str],
                       format: str | None = None, key: str | None = None) -> tuple[Path, list[tuple[str, str]]]:
        """A run's weights in one ``.pt`` or ``.safetensors`` file; see :meth:`Run.export_weights`."""
        return self.open_run(font_id, run_id).export_weights(dest, format, key)

    def load_extra(self, font_id: str, run_id: str | None, name: str, map_location: Any = "cpu") -> Any:
        """An auxiliary component bundled with a run, by name."""
        return self.open_run(font_id, run_id).extra(name, map_location)

    def load_sample(self, font_id: str, run_id: str | None = None) -> bytes:
        """A run's sample image as PNG bytes."""
        return self.open_run(font_id, run_id).sample()

    def load_glyphs(self, font_id: str, run_id: str | None = None) -> dict[str, bytes]:
        """A run's eval glyphs: glyph name to PNG bytes."""
        return self.open_run(font_id, run_id).glyphs()

    def load_feedback(self, font_id: str, run_id: str | None = None, *, with_defaults: bool = False) -> Any:
        """A run's feedback, parsed from its JSON; see :meth:`Run.feedback`."""
        return self.open_run(font_id, run_id).feedback(with_defaults)

    def read_object(self, digest: str) -> bytes:
        """An object's verified raw content, by its hex digest."""
        return self.objects.get(parse_digest(digest))
