"""The store's foundation: where it is, its backend, objects, refs, transactions and
catalog, whether it exists, and a handle on one run. The other parts of :class:`aoe.Store`
(fonts, saving, history, reading) build on :class:`StoreBase`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from .. import inputs, vectors
from ..aliases import Aliases, split_alias
from ..backends import Backend, open_backend
from ..backends.wrappers import ReadOnlyBackend
from ..catalog import Catalog
from ..errors import (
    FontFolderMissingError,
    FormatError,
    InvalidInputError,
    NotFoundError,
    RunNotFoundError,
    StorageError,
    StoreError,
    StoreMissingError,
)
from ..layout import CATALOG, FONTS, looks_like_plain_folders
from ..limits import parse_json
from ..manifests import EXTRA_LEVEL, FEEDBACK_SCHEMA, TensorRecord, check_location, unpack
from ..names import check_alias, check_name, parse_digest
from ..objects import ObjectStore
from ..refs import Refs
from ..runinfo import feedback_metrics
from ..segments import PendingRows
from ..transaction import Transaction, Transactions

if TYPE_CHECKING:
    from ..weights import PreparedTrees
    from .background import BackgroundSaves

from .run import Run

DEFAULT_ROOT = "networks"
PUBLISHED_KEPT = 64
MAX_MOVE_ATTEMPTS = 10
T = TypeVar("T")


def default_root() -> Path | str:
    """``$AOE_STORE`` if set (a folder, or an ``s3://`` URL), else ``./networks``."""
    location = os.environ.get("AOE_STORE") or DEFAULT_ROOT
    return location if location.startswith("s3://") else Path(location)

class StoreBase:
    """What every part of a store shares; see :class:`aoe.Store`."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        workers: int | None = None,
        endpoint: str | None = None,
        cache_bytes: int | None = None,
        read_only: bool = False,
        backend: Backend | None = None,
        compress_floats: bool | None = None,
    ) -> None:
        """``endpoint`` (or ``$AOE_S3_ENDPOINT``) names an S3-compatible server;
        ``cache_bytes`` bounds the local cache of a remote store's objects (0: none;
        default ``$AOE_CACHE_BYTES``, else 10 GiB). ``read_only`` refuses every change and
        keeps the catalog index in memory (seeded from the one on disk): a browser of a
        store never writes to it. ``backend`` gives the storage itself (a wrapper, say),
        instead of a location. ``compress_floats`` splits float tensors into compressed
        byte planes (smaller, slower on few cores; default: on with 4 cores or more, or
        ``$AOE_COMPRESS_FLOATS``; see ``objects.FLOAT_PLANES_MIN_CORES``)."""
        if backend is None:
            location = root if root is not None else default_root()
            backend = open_backend(location, endpoint=endpoint, cache_bytes=cache_bytes)
        self.backend: Backend = ReadOnlyBackend(backend) if read_only else backend
        self.read_only = read_only
        self.root: Any = self.backend.location
        """The store's folder (a Path), or its URL (a str) for an object store."""
        self.backend_endpoint: str | None = getattr(self.backend, "endpoint", None) or endpoint
        self.objects = ObjectStore(self.backend, workers=workers, compress_floats=compress_floats)
        self.refs = Refs(self.backend)
        self.aliases = Aliases(self.backend)
        self.transactions = Transactions(self.objects, self.refs)
        self._background: BackgroundSaves | None = None
        self._catalog: Catalog | None = None
        self._published: dict[str, tuple[Any, TensorRecord | None]] = {}
        """The RunInfo and vector record of manifests this Store published lately, by
        address (see ``Catalog.published``); the newest :data:`PUBLISHED_KEPT`."""
        self.pending_rows = PendingRows(self.backend) if self.backend.round_trips and not read_only else None
        """Rows of the runs this Store published on object storage, shared in listing
        segments as it goes (see ``segments.py``)."""
        self.training_heads: dict[str, Any] = {}
        """Per font, the run a training in this process goes on from (a ParentRun): set by
        a resume path that loads a run (the DCP reader), moved by each save that names it
        as its parent (the DCP writer), so a resumed training's runs keep their lineage."""
        self._tensor_versions: dict[Any, int] = {}
        """Each saved tensor's version counter (see ``weights.PreparedTrees.versions``)."""

    @property
    def catalog(self) -> Catalog:
        """The derived index behind listing and search (in memory if it cannot be kept on
        disk). A remote store's index lives in the local cache folder."""
        if self._catalog is None:
            path = self.backend.local_path(CATALOG)
            if self.read_only or path is None:
                catalog = Catalog(None, self.refs, self.objects, seed=path.absolute() if path else None,
                                  published=self._published)
            else:
                catalog = Catalog(path, self.refs, self.objects, published=self._published)
                try:
                    catalog.open()
                except (OSError, sqlite3.Error):  # a store we may not write: keep the index in memory
                    catalog = Catalog(None, self.refs, self.objects, published=self._published)
            self._catalog = catalog
        return self._catalog

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def background(self) -> BackgroundSaves:
        """The store's background saves (a worker thread, started on first use)."""
        if self._background is None:
            from .background import BackgroundSaves  # its thread pool: imported only by a trainer that uses it

            self._background = BackgroundSaves()
        return self._background

    def close(self) -> None:
        """Wait for background saves, then release what the store holds open (its catalog
        index); it may be used again afterwards, and reopens what it needs."""
        if self._background is not None:
            self._background.close()
            self._background = None
        if self.pending_rows is not None:
            self.pending_rows.flush()
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exists(self) -> bool:
        """Whether the store has been created (by its first write)."""
        return self.backend.created()

    def require_root(self) -> None:
        """Raise :class:`StoreMissingError` (or, for a folder of the old plain layout, a
        FormatError saying how to import it) unless the store exists."""
        if self.backend.has_folder(FONTS):  # an aoe store: one look (one request on S3)
            return
        if self._plain_folder_layout():
            raise FormatError(
                f"{self.root} is a plain-folder store of the old layout (<font>/runs/<time>/weights), "
                f"not an aoe store: import it with `aoe store --root NEW_ROOT import {self.root}`, "
                "which keeps every run and its time"
            )
        if not self.backend.created():
            raise StoreMissingError(
                f"no store at {self.root}: {self.backend.missing_hint}; a new store is created by its "
                "first write (create_font / `aoe store create-font`)"
            )

    def _plain_folder_layout(self) -> bool:
        try:
            return looks_like_plain_folders(self.backend.list(""))
        except StoreError:  # an unreadable folder is not evidence of anything
            return False

    def _require_font(self, font_id: str) -> None:
        """The font exists, and so does its runs folder (it may be removed outside aoe)."""
        self.require_root()
        self.refs.require_font(font_id)
        if not self.refs.has_runs_folder(font_id):
            raise FontFolderMissingError(
                f"the folder {font_id}/runs is missing from {self.root} (removed outside aoe?): "
                f"the runs of {font_id} cannot be listed. Restore it from a backup if you have "
                "one; the next save recreates it empty, and `aoe store fsck` lists the runs "
                "whose data is still in the store"
            )

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction for as long as the block runs (see :mod:`aoe.transaction`):
        gc spares what it writes, and it publishes, moves and restores refs."""
        return self.transactions.open()

    def list_fonts(self) -> list[str]:
        """Every font id, by number."""
        self.require_root()
        return self.refs.fonts()

    def newest_run(self, font_id: str) -> str:
        """The id of a font's most recent run."""
        self._require_font(font_id)
        runs = self.refs.runs(font_id)
        if not runs:
            raise NotFoundError(f"font {font_id!r} has no runs yet; save one first")
        return runs[-1]

    def run_named(self, font_id: str, run_id: str | None = None) -> tuple[str, str]:
        """The font and run a run's name means: ``FONT`` with a run id; ``FONT@ALIAS``, or
        ``FONT`` with ``"@ALIAS"``, where the alias points; ``FONT`` alone: its newest run.
        Every method that takes a font and a run takes all of these."""
        font_id, alias = split_alias(font_id)
        if run_id is not None and run_id.startswith("@"):
            if alias is not None:
                raise InvalidInputError(f"{font_id}@{alias} names a run already; give no other run")
            alias = check_alias(run_id[1:])
        elif alias is not None and run_id is not None:
            raise InvalidInputError(f"{font_id}@{alias} names a run already; give no run id too")
        self._require_font(font_id)
        if alias is None:
            return font_id, run_id or self.newest_run(font_id)
        move = self.aliases.newest(font_id, alias)
        if move is None:
            known = ", ".join(self.aliases.names(font_id)) or "none yet"
            raise NotFoundError(f"font {font_id} has no alias {alias!r} (aliases: {known}); set one with "
                                f"`aoe store alias {font_id} {alias} RUN_ID`")
        if move.run_id is None:
            raise NotFoundError(f"alias {alias} of {font_id} was removed at {move.at}; see "
                                f"`aoe store log {font_id}@{alias}`")
        return font_id, move.run_id

    def open_run(self, font_id: str, run_id: str | None = None) -> Run:
        """A handle on one run (the newest by default; see :meth:`run_named`): its manifest
        is read and verified once, its assets are read when asked for."""
        asked = font_id if run_id is None else f"{font_id}{run_id}"
        font_id, run_id = self.run_named(font_id, run_id)
        try:
            digest = self.refs.read_run(font_id, run_id)
        except RunNotFoundError as exc:
            if "@" not in asked:
                raise
            raise RunNotFoundError(f"{asked} is run {run_id}, which is not in the font (deleted? "
                                   f"see `aoe store trash {font_id}`; `aoe store restore` brings it back)") from exc
        try:
            manifest = check_location(unpack(self.objects.get(digest)), font_id, run_id)
        except StoreError as exc:
            named = type(exc)(f"{exc} (the manifest of run {run_id} of {font_id})")
            named.__dict__.update(exc.__dict__)
            raise named from None
        return Run(self.objects, manifest, digest)

    def _vector_bytes(self, where: tuple[str, TensorRecord | None]) -> bytes | None:
        """A manifest's personality vector as float64 bytes, for charts: read where the
        index noted it (else from the manifest); empty when it has none to chart; None
        when it cannot be read now."""
        manifest, record = where
        try:
            if record is None:
                record = unpack(self.objects.get(parse_digest(manifest))).personality
            if not vectors.chartable(record):
                return b""
            return vectors.values(record, self.objects.get_blob(record.blob)).astype("<f8").tobytes()
        except StoreError:
            return None

    def _keep_vectors(self, found: Mapping[str, bytes | None]) -> None:
        """Keep manifests' vectors (None: not read) in the index; an index busy or full
        costs only reading them again next time, never the answer or the save."""
        try:
            self.catalog.keep_vectors((m, v) for m, v in found.items() if v is not None)
        except StorageError:
            pass

    def prepare_trees(self, recall_of_copies: Mapping[int, bool] | None = None) -> PreparedTrees:
        """Trees of tensors to save into this store, which remembers the tensors it saved:
        those torch has counted no write to since are recognized by fingerprint
        (``weights.note_version``). ``recall_of_copies``: a snapshot's, when the tensors
        are its copies (``weights.Snapshot``)."""
        from ..weights import PreparedTrees

        return PreparedTrees(versions=self._tensor_versions, recall_of_copies=recall_of_copies or {})

    def write_assets(
        self,
        weights: Any = None,
        personality_vector: Any = None,
        sample_image: Any = None,
        eval_glyphs: Any = None,
        feedback: Any = None,
        extras: Mapping[str, Any] | None = None,
        feedback_schema: str | None = None,
        recall_of_copies: Mapping[int, bool] | None = None,
    ) -> dict[str, Any]:
        """Validate, then write the blobs of a run; returns its manifest fields. The first
        half of every save (saving, amending, ``start_run``'s saves as training goes);
        nothing is published until a transaction publishes these fields. ``recall_of_copies``:
        a snapshot's (``weights.Snapshot``), when the tensors are its copies."""
        sample = inputs.image_bytes(sample_image, "sample image") if sample_image is not None else None
        glyphs = inputs.glyph_images(eval_glyphs) if eval_glyphs is not None else {}
        feedback_data = inputs.feedback_bytes(feedback) if feedback is not None else None
        inputs.feedback_schema(feedback_schema)
        if extras is not None and not isinstance(extras, Mapping):
            raise InvalidInputError(f"extras must be a mapping of names to state, not a {type(extras).__name__}")
        extras = dict(extras or {})
        parts: dict[str, Any] = {}
        if weights is not None or personality_vector is not None or extras:
            from .. import weights as tensors

            prepared = self.prepare_trees(recall_of_copies)
            if weights is not None:
                prepared.add("weights", weights)
            if personality_vector is not None:
                prepared.add("personality", tensors.as_tensor(personality_vector))
            for extra_name, value in extras.items():
                prepared.add(f"extra/{check_name(extra_name, 'extra name')}", value, level=EXTRA_LEVEL)
            trees = prepared.store(self.objects)
            parts["weights"] = trees.pop("weights", None)
            parts["personality"] = trees.pop("personality", None)
            parts["extras"] = {k.removeprefix("extra/"): v for k, v in trees.items()}
        files = [(data, group) for data, group in ((sample, "sample"), *((g, "glyphs") for g in glyphs.values()),
                                                   (feedback_data, "feedback")) if data is not None]
        blobs = iter(self.objects.put_blobs([data for data, _ in files], groups=[group for _, group in files]))
        parts["sample"] = next(blobs) if sample is not None else None
        parts["glyphs"] = {glyph: next(blobs) for glyph in glyphs}
        if feedback_data is not None:
            parts["feedback"] = next(blobs)
            parts["feedback_schema"] = feedback_schema or _feedback_schema(feedback_data)
            parts["metrics"] = feedback_metrics(feedback_data)
        return parts


def _feedback_schema(data: bytes) -> str:
    """The schema a feedback file declares (``"feedback_schema"``), else the current one."""
    parsed = parse_json(data)
    declared = parsed.get("feedback_schema") if isinstance(parsed, dict) else None
    return declared if isinstance(declared, str) else FEEDBACK_SCHEMA
