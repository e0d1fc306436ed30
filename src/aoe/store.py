"""The public API: a store of fonts and their training runs.

A save validates every input first, writes blobs, then the manifest, then creates
the run's ref: a run is all there or not there, whatever happens in between. Every
read verifies the hashes of what it returns.

Torch is imported only by the calls that build or return tensors, so browsing a store
(``list_runs``, ``get_run_info``, ``read_object``...) starts fast.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

from . import inputs, reachability
from .backends import Backend, open_backend
from .backends.files import atomic_write, fsync_dir, with_retries
from .backends.wrappers import ReadOnlyBackend
from .catalog import Catalog
from .errors import (
    CorruptObjectError,
    FontExistsError,
    FontFolderMissingError,
    FontNotFoundError,
    FormatError,
    InvalidInputError,
    NotFoundError,
    ObjectNotFoundError,
    RunExistsError,
    RunNotFoundError,
    StoreError,
    StoreMissingError,
)
from .layout import CATALOG, FONTS, OBJECTS, TEMP_PREFIX, digest_at, looks_like_plain_folders
from .limits import parse_json
from .manifests import FEEDBACK_SCHEMA, Manifest, check_location, unpack
from .names import (
    Digest,
    check_font_id,
    check_font_name,
    check_name,
    check_status,
    check_tags,
    check_text,
    font_number,
    format_time,
    parse_digest,
    parse_time,
    utc_now,
)
from .objects import ObjectStore
from .query import Query
from .refs import Refs, TrashRecord
from .runinfo import COMPLETED, FontSummary, RunInfo, feedback_metrics
from .transaction import Transaction, Transactions

if TYPE_CHECKING:
    import torch

DEFAULT_ROOT = "networks"
FAILED = "failed"
INTERRUPTED = "interrupted"
RUNNING = "running"

T = TypeVar("T")
MAX_MOVE_ATTEMPTS = 10

FEEDBACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "1.0": {"final_loss": None, "val_loss": None, "epochs": None, "glyph_loss": {}, "notes": ""},
}
"""The optional fields of each feedback schema, with the values a run that lacks them gets."""

def default_root() -> Path | str:
    """``$AOE_STORE`` if set (a folder, or an ``s3://`` URL), else ``./networks``."""
    location = os.environ.get("AOE_STORE") or DEFAULT_ROOT
    return location if location.startswith("s3://") else Path(location)


class LoadedModel(NamedTuple):
    """What :meth:`Store.load_model` returns; unpacks as ``weights, vector, metadata``."""

    weights: Any
    personality_vector: torch.Tensor | None
    metadata: RunInfo


class Store:
    """Fonts and runs under one root: a folder, or ``s3://bucket/prefix`` on an
    S3-compatible object store (created on first write)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        workers: int | None = None,
        endpoint: str | None = None,
        cache_bytes: int | None = None,
        read_only: bool = False,
        backend: Backend | None = None,
    ) -> None:
        """``endpoint`` (or ``$AOE_S3_ENDPOINT``) names an S3-compatible server;
        ``cache_bytes`` bounds the local cache of a remote store's objects (0: none;
        default ``$AOE_CACHE_BYTES``, else 10 GiB). ``read_only`` refuses every change and
        keeps the catalog index in memory (seeded from the one on disk): a browser of a
        store never writes to it. ``backend`` gives the storage itself (a wrapper, say),
        instead of a location."""
        if backend is None:
            location = root if root is not None else default_root()
            backend = open_backend(location, endpoint=endpoint, cache_bytes=cache_bytes)
        self.backend: Backend = ReadOnlyBackend(backend) if read_only else backend
        self.read_only = read_only
        self.root: Any = self.backend.location
        """The store's folder (a Path), or its URL (a str) for an object store."""
        self.backend_endpoint: str | None = getattr(self.backend, "endpoint", None) or endpoint
        self.objects = ObjectStore(self.backend, workers=workers)
        self.refs = Refs(self.backend)
        self.transactions = Transactions(self.objects, self.refs)
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        """The derived index behind listing and search (in memory if it cannot be kept on
        disk). A remote store's index lives in the local cache folder."""
        if self._catalog is None:
            path = self.backend.local_path(CATALOG)
            if self.read_only or path is None:
                catalog = Catalog(None, self.refs, self.objects, seed=path.absolute() if path else None)
            else:
                catalog = Catalog(path, self.refs, self.objects)
                try:
                    catalog.open()
                except (OSError, sqlite3.Error):  # a store we may not write: keep the index in memory
                    catalog = Catalog(None, self.refs, self.objects)
            self._catalog = catalog
        return self._catalog

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def close(self) -> None:
        """Release what the store holds open (its catalog index); it may be used again
        afterwards, and reopens what it needs."""
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- fonts ------------------------------------------------------------------

    def create_font(self, name: str, *, exist_ok: bool = False) -> str:
        """Create a font and return its id.

        ``"fruity"`` takes the next free number (``"1-fruity"``), atomically even with
        other processes creating fonts; ``"7-fruity"`` takes exactly that id. A number
        already taken (also by a deleted, restorable font), or a name another font
        already has, is refused; with ``exist_ok`` a whole id that exists is returned.
        """
        if exist_ok and self.has_font(name):
            return name
        trashed = self.refs.trashed_font_numbers()
        if isinstance(name, str) and name[:1].isdigit() and "-" in name:
            font_id = check_font_id(name)
            self._refuse_taken_name(font_id.split("-", 1)[1])
            number = font_number(font_id)
            if number in trashed:
                raise FontExistsError(
                    f"font number {number} belongs to the deleted font {trashed[number]!r}; restore it "
                    f"with `aoe store restore {trashed[number]}`, or pick another number"
                )
            if not self.refs.claim_font(font_id):
                raise FontExistsError(
                    f"font number {number} is taken by {self.refs.font_with_number(number)!r}; "
                    f"pick another number, or pass just the name to get the next free one"
                )
        else:
            check_font_name(name)
            self._refuse_taken_name(name)
            taken = [font_number(f) for f in self.refs.fonts()] + list(trashed)
            number = max(taken, default=0) + 1
            while not self.refs.claim_font(f"{number}-{name}"):
                number += 1
            font_id = f"{number}-{name}"
        self.refs.make_runs_folder(font_id)
        return font_id

    def _refuse_taken_name(self, name: str) -> None:
        for font_id in self.refs.fonts():
            if font_id.split("-", 1)[1] == name:
                raise FontExistsError(
                    f"a font named {name!r} already exists: {font_id!r}; use that id, "
                    "or choose another name"
                )

    def has_font(self, font_id: str) -> bool:
        """Whether the font exists (``font_id`` a whole id, ``1-fruity``)."""
        return self.refs.font_with_number(font_number(check_font_id(font_id))) == font_id

    def list_fonts(self) -> list[str]:
        """Every font id, by number."""
        self.require_root()
        return self.refs.fonts()

    def exists(self) -> bool:
        """Whether the store has been created (by its first write)."""
        return self.backend.created()

    def require_root(self) -> None:
        """Raise :class:`StoreMissingError` (or, for a folder of the old plain layout, a
        FormatError saying how to import it) unless the store exists."""
        if not self.backend.has_folder(FONTS) and self._plain_folder_layout():
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

    # -- saving -----------------------------------------------------------------

    def save_model(
        self,
        font_id: str,
        weights: Any,
        personality_vector: Any = None,
        sample_image: inputs.ImageInput | None = None,
        eval_glyphs: Mapping[str, inputs.ImageInput] | str | os.PathLike[str] | None = None,
        feedback: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        params: Mapping[str, Any] | None = None,
        started_at: datetime | str | None = None,
        ended_at: datetime | str | None = None,
        status: str = COMPLETED,
        name: str | None = None,
        description: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        extras: Mapping[str, Any] | None = None,
        feedback_schema: str | None = None,
    ) -> str:
        """Store one run and return its run id.

        Everything is validated before anything is written; the run becomes visible
        only when complete. ``weights`` is a state_dict or an ``nn.Module``; ``extras``
        bundles auxiliary components (``{"vocoder": state_dict}``) stored the same way.
        """
        self.require_root()
        self.refs.require_font(font_id)
        metadata = run_metadata(params, started_at, ended_at, status, name, description, tags)
        with self.transaction() as transaction:
            parts = self._write_assets(
                weights, personality_vector, sample_image, eval_glyphs, feedback, extras, feedback_schema
            )
            return self._publish(transaction, font_id, metadata, parts)

    def import_run(self, font_id: str, run_id: str, source: dict[str, Any], **run: Any) -> str:
        """Store one run under exactly ``run_id`` (an import of a run made elsewhere, whose
        time its id keeps), recording ``source``; ``run`` takes :meth:`save_model`'s
        arguments. :class:`RunExistsError` if that run exists; nothing is published then."""
        self.require_root()
        self.refs.require_font(font_id)
        metadata = run_metadata(run.pop("params", None), run.pop("started_at", None), run.pop("ended_at", None),
                                run.pop("status", COMPLETED), run.pop("name", None), run.pop("description", None),
                                run.pop("tags", ()))
        with self.transaction() as transaction:
            parts = self._write_assets(**run)
            return self._publish(transaction, font_id, metadata, parts, run_id=run_id, source=source)

    def save_model_from_checkpoint(
        self,
        font_id: str,
        checkpoint: Mapping[str, Any] | str | os.PathLike[str],
        personality_vector: Any = None,
        sample_image: inputs.ImageInput | None = None,
        eval_glyphs: Mapping[str, inputs.ImageInput] | str | os.PathLike[str] | None = None,
        feedback: Mapping[str, Any] | None = None,
        *,
        keep_training_state: bool = False,
        params: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        """Store a training checkpoint as a finished run.

        The model's state_dict becomes the weights; optimizer, scheduler and grad-scaler
        state are dropped (about half a checkpoint's size) unless ``keep_training_state``,
        which bundles them as extras for resuming. Epoch and step counters become params,
        losses become feedback fields, a ``personality_vector`` entry the run's vector,
        other tensor-holding entries extras and other plain entries params.
        ``checkpoint`` is a mapping or a path read with ``torch.load(weights_only=True)``.
        """
        from . import weights as tensors

        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = tensors.load_tensor_file(checkpoint, "checkpoint")
        parts = tensors.split_checkpoint(checkpoint)  # type: ignore[arg-type]  # a mapping by now
        if feedback is not None and not isinstance(feedback, Mapping):
            raise InvalidInputError("with a checkpoint, pass feedback as a dict (its losses are added to it)")
        extras = dict(parts.other_state)
        if keep_training_state:
            extras.update(parts.training_state)
        merged_feedback = {**parts.losses, **(feedback or {})}
        return self.save_model(
            font_id,
            parts.weights,
            personality_vector if personality_vector is not None else parts.personality_vector,
            sample_image,
            eval_glyphs,
            merged_feedback or None,
            params={**parts.other_values, **parts.counters, **(params or {})},
            extras={**extras, **fields.pop("extras", {})} or None,
            **fields,
        )

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction for as long as the block runs (see :mod:`aoe.transaction`):
        gc spares what it writes, and it publishes, moves and restores refs."""
        return self.transactions.open()

    def _write_assets(
        self,
        weights: Any = None,
        personality_vector: Any = None,
        sample_image: Any = None,
        eval_glyphs: Any = None,
        feedback: Any = None,
        extras: Mapping[str, Any] | None = None,
        feedback_schema: str | None = None,
    ) -> dict[str, Any]:
        """Validate, then write the blobs of a run; returns its manifest fields."""
        sample = inputs.image_bytes(sample_image, "sample image") if sample_image is not None else None
        glyphs = inputs.glyph_images(eval_glyphs) if eval_glyphs is not None else {}
        feedback_data = inputs.feedback_bytes(feedback) if feedback is not None else None
        if feedback_schema is not None and not isinstance(feedback_schema, str):
            raise InvalidInputError(f"feedback_schema must be text such as '1.0', not {type(feedback_schema).__name__}")
        if extras is not None and not isinstance(extras, Mapping):
            raise InvalidInputError(f"extras must be a mapping of names to state, not a {type(extras).__name__}")
        extras = dict(extras or {})
        parts: dict[str, Any] = {}
        if weights is not None or personality_vector is not None or extras:
            from . import weights as tensors

            prepared = tensors.PreparedTrees()
            if weights is not None:
                prepared.add("weights", weights)
            if personality_vector is not None:
                prepared.add("personality", tensors.as_tensor(personality_vector))
            for extra_name, value in extras.items():
                prepared.add(f"extra/{check_name(extra_name, 'extra name')}", value)
            trees = prepared.store(self.objects)
            parts["weights"] = trees.pop("weights", None)
            parts["personality"] = trees.pop("personality", None)
            parts["extras"] = {k.removeprefix("extra/"): v for k, v in trees.items()}
        files = [f for f in (sample, *glyphs.values(), feedback_data) if f is not None]
        blobs = iter(self.objects.put_blobs(files))
        parts["sample"] = next(blobs) if sample is not None else None
        parts["glyphs"] = {glyph: next(blobs) for glyph in glyphs}
        if feedback_data is not None:
            parts["feedback"] = next(blobs)
            parts["feedback_schema"] = feedback_schema or _feedback_schema(feedback_data)
            parts["metrics"] = feedback_metrics(feedback_data)
        return parts

    def _publish(self, transaction: Transaction, font_id: str, metadata: dict[str, Any], parts: dict[str, Any],
                 *, run_id: str | None = None, source: dict[str, Any] | None = None) -> str:
        """The manifest of a run from its metadata and stored parts, published."""
        now = utc_now()
        fields = {
            "font_id": check_font_id(font_id),
            "saved_at": format_time(now),
            **metadata,
            "ended_at": metadata["ended_at"] or format_time(now),
            **{k: v for k, v in parts.items() if v is not None},
            **({"source": source} if source else {}),
        }
        self.refs.require_font(font_id)
        moment = parse_time(fields["started_at"]) or now
        return transaction.publish(lambda candidate: Manifest(run_id=candidate, **fields), font_id, moment, run_id)

    def start_run(
        self,
        font_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
    ) -> RunRecorder:
        """A context manager for a training loop; see :class:`RunRecorder`."""
        self.require_root()
        self.refs.require_font(font_id)
        return RunRecorder(self, font_id, params, name=name, description=description, tags=tags)

    # -- changing published runs ------------------------------------------------

    def amend_run(
        self,
        font_id: str,
        run_id: str,
        *,
        sample_image: inputs.ImageInput | None = None,
        eval_glyphs: Mapping[str, inputs.ImageInput] | str | os.PathLike[str] | None = None,
        feedback: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        personality_vector: Any = None,
        name: str | None = None,
        description: str | None = None,
        tags: tuple[str, ...] | list[str] | None = None,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
    ) -> Run:
        """Add or replace a published run's assets or descriptions.

        The run stays immutable: a new manifest is written that names the old one as
        its ``parent``, and the ref moves to it by compare-and-swap, so two editors at
        once never lose each other's change (``add_tags``/``remove_tags`` apply to the
        tags the run has at that moment; ``tags`` replaces them). Given glyphs are added
        to (or replace) the run's glyphs. Returns the amended run.
        """
        self._require_font(font_id)
        texts = {"name": check_text(name, "name"),
                 "description": check_text(description, "description", lines=True)}
        new_tags = check_tags(tags) if tags is not None else None
        adding, removing = check_tags(add_tags), set(check_tags(remove_tags))
        with self.transaction() as transaction:
            parts = self._write_assets(None, personality_vector, sample_image, eval_glyphs, feedback)
            for _ in range(MAX_MOVE_ATTEMPTS):
                current = self.open_run(font_id, run_id)
                old = current.manifest
                changes: dict[str, Any] = {k: v for k, v in parts.items() if v and k != "extras"}
                if "feedback" in changes:  # new feedback, new metrics (maybe none)
                    changes["metrics"] = parts["metrics"]
                if "glyphs" in changes:
                    changes["glyphs"] = {**old.glyphs, **changes["glyphs"]}
                changes.update({k: v for k, v in texts.items() if v is not None})
                if new_tags is not None or adding or removing:
                    base = new_tags if new_tags is not None else old.tags
                    changes["tags"] = tuple(t for t in dict.fromkeys((*base, *adding)) if t not in removing)
                new = replace(old, **changes, parent=current.digest, saved_at=format_time(utc_now()))
                digest = transaction.move(font_id, run_id, current.digest, new)
                if digest is not None:
                    return Run(self, new, digest)
        raise StoreError(  # pragma: no cover - needs 10 editors racing on one run
            f"run {run_id} of {font_id} kept changing under this amend; try again"
        )

    def tag_run(self, font_id: str, run_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> RunInfo:
        """Add and remove tags of a published run (a new version; history kept)."""
        return self.amend_run(font_id, run_id, add_tags=add, remove_tags=remove).info

    def describe_run(
        self, font_id: str, run_id: str, *, name: str | None = None, description: str | None = None
    ) -> RunInfo:
        """Set a published run's name and/or description (a new version; history kept)."""
        return self.amend_run(font_id, run_id, name=name, description=description).info

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

    def run_history(self, font_id: str, run_id: str | None = None) -> list[RunInfo]:
        """A run and the versions it amended, newest first."""
        run = self.open_run(font_id, run_id)
        return [Run(self, manifest, digest).info for digest, manifest in self.versions(run.digest)]

    def versions(self, digest: Digest) -> Iterator[tuple[Digest, Manifest]]:
        """A manifest and the ones it amended (its ``parent`` chain), newest first, each
        read and verified (see :func:`aoe.reachability.versions`)."""
        return reachability.versions(self.objects, digest)

    def delete_run(self, font_id: str, run_id: str) -> TrashRecord:
        """Remove a run; it stays recoverable with :meth:`restore_run` until a gc.

        The record of what was removed, and when, is kept even after the gc.
        """
        self._require_font(font_id)
        for _ in range(MAX_MOVE_ATTEMPTS):
            digest = self.refs.read_run(font_id, run_id)
            record = TrashRecord(font_id, run_id, digest, format_time(utc_now()))
            if self.refs.trash_run(font_id, run_id, digest, record.deleted_at):
                return record
        raise StoreError(  # pragma: no cover - needs 10 editors racing on one run
            f"run {run_id} of {font_id} kept changing while being deleted; try again"
        )

    def delete_font(self, font_id: str) -> list[TrashRecord]:
        """Remove a font and all its runs, recoverable with :meth:`restore_font` until a gc."""
        self._require_font(font_id)
        self.refs.begin_font_deletion(font_id, format_time(utc_now()))  # saves into it now fail cleanly
        records = [self.delete_run(font_id, run_id) for run_id in self.refs.runs(font_id)]
        self.refs.end_font_deletion(font_id)
        return records

    def trashed(self, font_id: str | None = None) -> list[TrashRecord]:
        """What was deleted (of one font or all), with when, and whether gc purged it."""
        self.require_root()
        return self.refs.trashed(font_id)

    def restore_run(self, font_id: str, run_id: str) -> RunInfo:
        """Bring back a deleted run, if no gc has purged its data since."""
        self._require_font(font_id)
        records = [r for r in self.refs.trashed(font_id) if r.run_id == run_id]
        if not records:
            raise RunNotFoundError(f"no deleted run {run_id!r} of {font_id}; see `aoe store trash`")
        record = records[0]
        if record.purged_at or record.manifest is None:
            raise RunNotFoundError(
                f"run {run_id} of {font_id} was deleted on {record.deleted_at} and its data purged "
                f"by a gc on {record.purged_at}; it cannot be restored"
            )
        with self.transaction() as transaction:  # like a save: gc spares what the ref is about to need
            try:
                manifest: Manifest | None = unpack(self.objects.get(record.manifest))
            except FormatError:  # set aside by fsck as unreadable: it comes back as it was
                manifest = None
            if not transaction.create(font_id, run_id, record.manifest, manifest.digests() if manifest else ()):
                raise RunExistsError(f"a run {run_id} of {font_id} exists again; nothing was restored")
        self.refs.forget_trashed(record)
        if manifest is None:
            return RunInfo.unreadable(font_id, run_id, "restored as it was set aside: its manifest cannot be read")
        return Run(self, manifest, record.manifest).info

    def restore_font(self, font_id: str) -> list[str]:
        """Bring back a deleted font and every run of it that can still be restored."""
        self.require_root()
        check_font_id(font_id)
        records = self.refs.trashed(font_id)
        claim = [r for r in records if r.run_id is None]
        if not claim:
            raise FontNotFoundError(f"no deleted font {font_id!r}; see `aoe store trash`")
        if not self.refs.claim_font(font_id):
            raise FontExistsError(
                f"font number {font_number(font_id)} is in use again; nothing was restored"
            )
        self.refs.forget_trashed(claim[0])
        self.refs.make_runs_folder(font_id)
        return [self.restore_run(font_id, r.run_id).run_id for r in records if r.run_id and not r.purged_at]

    # -- reading ----------------------------------------------------------------

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

    def count_runs(self, font_id: str | None = None, **filters: Any) -> int:
        """How many runs match (of one font, or of all): the filters of :meth:`list_runs`,
        and ``text`` as in :meth:`search`; counted in the index, none of them built."""
        fonts = self._synced_fonts(font_id)
        return self.catalog.count(Query(fonts, **filters))

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
        """Rebuild the catalog index from the refs and manifests; returns the runs indexed."""
        self.catalog.rebuild()
        return self.count_runs()

    def newest_run(self, font_id: str) -> str:
        """The id of a font's most recent run."""
        self._require_font(font_id)
        runs = self.refs.runs(font_id)
        if not runs:
            raise NotFoundError(f"font {font_id!r} has no runs yet; save one first")
        return runs[-1]

    def open_run(self, font_id: str, run_id: str | None = None) -> Run:
        """A handle on one run (the newest by default): its manifest is read and
        verified once, its assets are read when asked for."""
        self._require_font(font_id)
        run_id = run_id or self.newest_run(font_id)
        digest = self.refs.read_run(font_id, run_id)
        try:
            manifest = check_location(unpack(self.objects.get(digest)), font_id, run_id)
        except StoreError as exc:
            named = type(exc)(f"{exc} (the manifest of run {run_id} of {font_id})")
            named.__dict__.update(exc.__dict__)
            raise named from None
        return Run(self, manifest, digest)

    def get_run_info(self, font_id: str, run_id: str | None = None) -> RunInfo:
        return self.open_run(font_id, run_id).info

    def load_model(
        self, font_id: str, run_id: str | None = None, map_location: Any = "cpu", keys: Iterable[Any] | None = None
    ) -> LoadedModel:
        """Weights, personality vector and metadata of a run (the newest by default).

        ``keys`` loads only those top-level entries of the weights. Every tensor is
        rebuilt from verified bytes; nothing stored is executed.
        """
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


def run_metadata(
    params: Mapping[str, Any] | None,
    started_at: datetime | str | None,
    ended_at: datetime | str | None,
    status: str,
    name: str | None,
    description: str | None,
    tags: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """Validated manifest fields describing a run (checked before any blob is written)."""
    return {
        "status": check_status(status),
        "started_at": inputs.timestamp(started_at, "started_at"),
        "ended_at": inputs.timestamp(ended_at, "ended_at"),
        "params": inputs.params(params),
        "name": check_text(name, "name"),
        "description": check_text(description, "description", lines=True),
        "tags": check_tags(tags),
    }


def _feedback_schema(data: bytes) -> str:
    """The schema a feedback file declares (``"feedback_schema"``), else the current one."""
    parsed = parse_json(data)
    declared = parsed.get("feedback_schema") if isinstance(parsed, dict) else None
    return declared if isinstance(declared, str) else FEEDBACK_SCHEMA


def _naming_the_run(method: Callable[..., T]) -> Callable[..., T]:
    """Add the run to errors about its objects, so a damaged blob names what it breaks."""

    @functools.wraps(method)
    def wrapper(self: Run, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (CorruptObjectError, ObjectNotFoundError) as exc:
            named = type(exc)(f"{exc} (needed by run {self.manifest.run_id} of {self.manifest.font_id})")
            named.__dict__.update(exc.__dict__)
            raise named from None

    return wrapper


class Run:
    """One published run: its verified manifest, and its assets read on demand."""

    def __init__(self, store: Store, manifest: Manifest, digest: Digest) -> None:
        self.store = store
        self.manifest = manifest
        self.digest = digest

    @functools.cached_property
    def info(self) -> RunInfo:
        metrics = self.manifest.metrics
        if metrics is None:  # written before manifests kept them
            metrics = feedback_metrics(self.feedback_bytes()) if self.manifest.feedback else {}
        return RunInfo.from_manifest(self.manifest, self.digest, metrics)

    def __repr__(self) -> str:
        return f"Run({self.manifest.font_id!r}, {self.manifest.run_id!r})"

    @property
    def logical_bytes(self) -> int:
        """Everything the run holds, uncompressed and counted as if stored alone."""
        return self.manifest.logical_bytes

    @_naming_the_run
    def load(self, map_location: Any = "cpu", keys: Iterable[Any] | None = None) -> LoadedModel:
        """Weights (only the top-level entries ``keys``, if given) and personality vector,
        all tensors read in parallel."""
        from . import weights as tensors

        weights = self._need(self.manifest.weights, "weights")
        if keys is not None:
            weights = tensors.select(weights, keys)
        weights, vector = tensors.load_trees(self.store.objects, [weights, self.manifest.personality], map_location)
        return LoadedModel(weights, vector, self.info)

    def open_weights(self, map_location: Any = "cpu") -> Any:
        """The weights as a mapping that reads a tensor only when it is accessed."""
        from . import weights as tensors

        return tensors.LazyWeights(self.store.objects, self._need(self.manifest.weights, "weights"), map_location)

    @_naming_the_run
    def personality_vector(self, map_location: Any = "cpu") -> torch.Tensor:
        from . import weights as tensors

        record = self._need(self.manifest.personality, "personality vector")
        vector: torch.Tensor = tensors.load_trees(self.store.objects, [record], map_location)[0]
        return vector

    @_naming_the_run
    def extra(self, name: str, map_location: Any = "cpu") -> Any:
        from . import weights as tensors

        if name not in self.manifest.extras:
            known = ", ".join(self.manifest.extras) or "none"
            raise NotFoundError(f"{self._what} has no extra {name!r} (extras: {known})")
        return tensors.load_trees(self.store.objects, [self.manifest.extras[name]], map_location)[0]

    @_naming_the_run
    def sample(self) -> bytes:
        return self.store.objects.get_blob(self._need(self.manifest.sample, "sample image"))

    @_naming_the_run
    def glyphs(self) -> dict[str, bytes]:
        return {name: self.store.objects.get_blob(blob) for name, blob in self.manifest.glyphs.items()}

    @_naming_the_run
    def feedback_bytes(self) -> bytes:
        """The feedback JSON exactly as it was saved."""
        return self.store.objects.get_blob(self._need(self.manifest.feedback, "feedback"))

    def feedback(self, with_defaults: bool = False) -> Any:
        """The feedback; ``with_defaults`` fills the optional fields its schema
        defines (:data:`FEEDBACK_DEFAULTS`) that an older trainer left out."""
        try:
            feedback = parse_json(self.feedback_bytes())
        except ValueError as exc:  # verified bytes, but not what a save accepts
            raise FormatError(f"the feedback of {self._what} is not readable JSON ({exc})") from None
        if with_defaults and isinstance(feedback, dict):
            defaults = FEEDBACK_DEFAULTS.get(self.manifest.feedback_schema or FEEDBACK_SCHEMA, {})
            feedback = {**json.loads(json.dumps(defaults)), **feedback}
        return feedback

    def export_personality(self, path: str | os.PathLike[str]) -> Path:
        """The personality vector in a file of its own: ``.pt``, ``.json`` or ``.npy``."""
        path = Path(path)
        if path.suffix not in (".pt", ".json", ".npy"):
            raise InvalidInputError(f"cannot export to {path.name}: use a .pt, .json or .npy file name")
        vector = self.personality_vector()

        def write(file: BinaryIO) -> None:
            if path.suffix == ".json":
                data = {"dtype": str(vector.dtype).removeprefix("torch."), "shape": list(vector.shape),
                        "values": vector.tolist()}
                file.write(json.dumps(data).encode())
            elif path.suffix == ".npy":
                import numpy

                numpy.save(file, vector.numpy(), allow_pickle=False)
            else:
                import torch

                torch.save(vector, file)

        with_retries(lambda: atomic_write(path, write, exclusive=False), f"writing {path}")
        return path

    def export(self, dest: str | os.PathLike[str]) -> Path:
        """Write the run as a folder in the spec's layout, every blob verified on the way.

        ``weights.pt``, ``personality_vector.pt``, ``extras/<name>.pt`` (torch files that
        ``torch.load(weights_only=True)`` reads), ``sample.png``, ``eval-glyphs/<glyph>.png``,
        ``feedback.json`` (byte for byte as saved) and ``run.json`` (the metadata). The
        folder is built beside ``dest`` and renamed into place: it appears whole or not at
        all. Every file is new (two names one file system takes as the same, glyphs ``A``
        and ``a`` where case is ignored, are an error, not one overwriting the other), and
        nothing is written through a symlink.
        """
        import torch

        dest = Path(dest)
        if dest.is_symlink():
            raise InvalidInputError(f"{dest} is a symlink; export writes only into a real, new folder")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidInputError(f"{dest} already exists and is not empty; choose a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest
        files: list[tuple[str, Any]] = []
        if manifest.weights is not None:
            files.append(("weights.pt", lambda f: torch.save(self.load().weights, f)))
        if manifest.personality is not None:
            files.append(("personality_vector.pt", lambda f: torch.save(self.personality_vector(), f)))
        files += [(f"extras/{name}.pt", lambda f, name=name: torch.save(self.extra(name), f))
                  for name in manifest.extras]
        if manifest.sample is not None:
            files.append(("sample.png", [self.sample()]))
        files += [(f"eval-glyphs/{glyph}.png", [data]) for glyph, data in self.glyphs().items()]
        if manifest.feedback is not None:
            files.append(("feedback.json", [self.feedback_bytes()]))
        meta = {k: v for k, v in self.info.to_dict().items() if v not in (None, [], {})}
        files.append(("run.json", [(json.dumps(meta, indent=2) + "\n").encode()]))
        temp = dest.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{dest.name}")
        temp.mkdir()
        try:
            for name, content in files:
                path = temp / name
                path.parent.mkdir(exist_ok=True)
                if not with_retries(lambda: atomic_write(path, content, exclusive=True), f"writing {path}"):
                    raise InvalidInputError(
                        f"{name} would overwrite another file of this run (a file system that ignores "
                        "case?); export to a case-sensitive file system")
            for folder in (temp / "extras", temp / "eval-glyphs", temp):
                if folder.is_dir():
                    fsync_dir(folder)
            if dest.exists():
                dest.rmdir()
            os.replace(temp, dest)
            fsync_dir(dest.parent)
        finally:
            if temp.exists():
                shutil.rmtree(temp)
        return dest

    @property
    def _what(self) -> str:
        return f"run {self.manifest.run_id} of {self.manifest.font_id} ({self.manifest.status})"

    def _need(self, value: Any, what: str) -> Any:
        if value is None:
            raise NotFoundError(
                f"{self._what} has no {what}; pick another run from "
                f"`aoe store ls {self.manifest.font_id}`"
            )
        return value


class RunRecorder:
    """Records a training run around a ``with`` block.

    ``run.save(...)`` writes the given assets at once (later calls add to or replace
    earlier ones); the run is published when the block ends: ``completed`` when it
    ends normally, ``failed`` (or ``interrupted`` on Ctrl-C) with whatever was saved
    when it raises, and the exception goes on. ``run.run_id`` is set once published.
    """

    def __init__(
        self,
        store: Store,
        font_id: str,
        params: Mapping[str, Any] | None,
        *,
        name: str | None,
        description: str | None,
        tags: tuple[str, ...] | list[str],
    ) -> None:
        self.store = store
        self.font_id = font_id
        self.params = dict(params or {})
        self.meta: dict[str, Any] = {"name": name, "description": description, "tags": tags}
        run_metadata(self.params, None, None, COMPLETED, **self.meta)  # refuse bad input now
        self.parts: dict[str, Any] = {}
        self._open = ExitStack()  # the transaction, from the first save to publication
        self._transaction: Transaction | None = None
        self.started_at: datetime | None = None
        self.run_id: str | None = None

    def __enter__(self) -> RunRecorder:
        self.started_at = utc_now()
        return self

    def save(
        self,
        weights: Any = None,
        personality_vector: Any = None,
        sample_image: Any = None,
        eval_glyphs: Any = None,
        feedback: Any = None,
        *,
        extras: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        feedback_schema: str | None = None,
    ) -> None:
        """Write these assets now; they are published with the run when the block ends."""
        if self._transaction is None:
            self._transaction = self._open.enter_context(self.store.transaction())
        else:
            self._transaction.keep_alive()
        new = self.store._write_assets(
            weights, personality_vector, sample_image, eval_glyphs, feedback, extras, feedback_schema
        )
        for key, value in new.items():
            if key in ("glyphs", "extras"):
                self.parts[key] = {**self.parts.get(key, {}), **value}
            elif value is not None:
                self.parts[key] = value
        if params:
            self.params.update(params)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = COMPLETED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = INTERRUPTED
        else:
            status = FAILED
        try:
            metadata = run_metadata(self.params, self.started_at, None, status, **self.meta)
            with self._open:
                transaction = self._transaction or self._open.enter_context(self.store.transaction())
                self.run_id = self.store._publish(transaction, self.font_id, metadata, self.parts)
        except StoreError as publish_error:
            if exc is None:
                raise
            exc.add_note(f"aoe could not record this run as {status}: {publish_error}")
