"""Saving runs: validate everything, write the blobs, then publish the manifest and the
ref in one transaction; and recording a run around a training loop (``start_run``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from datetime import datetime
from types import TracebackType
from typing import Any

from .. import inputs, vectors
from ..errors import (
    InvalidInputError,
    StoreError,
)
from ..manifests import Manifest, ParentRun
from ..names import (
    check_font_id,
    check_status,
    check_tags,
    check_text,
    format_time,
    parse_time,
    utc_now,
)
from ..runinfo import COMPLETED, RunInfo
from ..transaction import Transaction
from .background import PendingSave
from .base import PUBLISHED_KEPT
from .bulk import collection_paused
from .forgetting import Forgetting
from .lineage import Lineage, ParentSpec
from .run import LoadedModel, Run

FAILED = "failed"
INTERRUPTED = "interrupted"
RUNNING = "running"


class Saving(Forgetting, Lineage):
    """Saving runs."""

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
        parents: Iterable[ParentSpec] | None = None,
    ) -> str:
        """Store one run and return its run id.

        Everything is validated before anything is written; the run becomes visible
        only when complete. ``weights`` is a state_dict or an ``nn.Module``; ``extras``
        bundles auxiliary components (``{"vocoder": state_dict}``) stored the same way;
        ``parents`` names the runs its weights came from (``"FONT@best"``, a loaded run:
        see :meth:`parent_runs`), kept in its manifest as its lineage.
        """
        self.require_root()
        self.refs.require_font(font_id)
        self.background.raise_failures()
        metadata = run_metadata(params, started_at, ended_at, status, name, description, tags)
        metadata["parents"] = self.parent_runs(parents)
        with collection_paused(), self.transaction() as transaction:
            parts = self.write_assets(
                weights, personality_vector, sample_image, eval_glyphs, feedback, extras, feedback_schema
            )
            return self._publish(transaction, font_id, metadata, parts)

    def save_in_background(
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
        parents: Iterable[ParentSpec] | None = None,
    ) -> PendingSave:
        """:meth:`save_model`, with the training loop blocked only while the tensors are
        copied: the rest (hash, compress, write, publish) runs on the store's worker thread.
        Returns a handle; ``handle.result()`` is the run id. See :mod:`aoe.store.background`."""
        self.require_root()
        self.refs.require_font(font_id)
        metadata = run_metadata(params, started_at, ended_at, status, name, description, tags)
        metadata["parents"] = self.parent_runs(parents)
        inputs.feedback_schema(feedback_schema)
        files = {  # small, read and checked now: errors in them reach the caller at once
            "sample_image": inputs.image_bytes(sample_image, "sample image") if sample_image is not None else None,
            "eval_glyphs": inputs.glyph_images(eval_glyphs) if eval_glyphs is not None else None,
            "feedback": inputs.feedback_bytes(feedback) if feedback is not None else None,
        }
        from .. import weights as tensors

        with collection_paused():
            taken = tensors.snapshot({"weights": weights, "personality": personality_vector, "extras": extras},
                                     self._tensor_versions)
        trees = taken.tree

        def save() -> str:
            with collection_paused(), self.transaction() as transaction:
                parts = self.write_assets(trees["weights"], trees["personality"], extras=trees["extras"],
                                          feedback_schema=feedback_schema, recall_of_copies=taken.recall_of_copies, **files)
                return self._publish(transaction, font_id, metadata, parts)

        return self.background.submit(font_id, save)

    def import_run(self, font_id: str, run_id: str, source: dict[str, Any], **run: Any) -> str:
        """Store one run under exactly ``run_id`` (an import of a run made elsewhere, whose
        time its id keeps), recording ``source``; ``run`` takes :meth:`save_model`'s
        arguments. :class:`RunExistsError` if that run exists; nothing is published then."""
        self.require_root()
        self.refs.require_font(font_id)
        metadata = run_metadata(run.pop("params", None), run.pop("started_at", None), run.pop("ended_at", None),
                                run.pop("status", COMPLETED), run.pop("name", None), run.pop("description", None),
                                run.pop("tags", ()))
        with collection_paused(), self.transaction() as transaction:
            parts = self.write_assets(**run)
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
        from .. import weights as tensors

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


    def publish_stored(self, font_id: str, weights: Any, *, extras: Mapping[str, Any] | None = None,
                       **run: Any) -> str:
        """Publish a run whose tensors are stored already: ``weights`` (and ``extras``) are
        trees of tensor records other processes wrote, as the ranks of a sharded checkpoint
        do (:mod:`aoe.dcp`); ``run`` takes the fields of :meth:`save_model` that describe a
        run (:data:`RUN_FIELDS`). The manifest is checked as any other; the transaction
        touches every object it names, failing with nothing published if one is gone, then
        creates the ref. Returns the run id."""
        self.require_root()
        self.refs.require_font(font_id)
        metadata = checked_run_fields({k: v for k, v in run.items() if k != "parents"})
        metadata["parents"] = self.parent_runs(run.get("parents"))
        with self.transaction() as transaction:
            return self._publish(transaction, font_id, metadata, {"weights": weights, "extras": dict(extras or {})})

    def _publish(self, transaction: Transaction, font_id: str, metadata: dict[str, Any], parts: dict[str, Any],
                 *, run_id: str | None = None, source: dict[str, Any] | None = None) -> str:
        """The manifest of a run from its metadata and stored parts, published; then the
        font's retention policy applied (not to an import)."""
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
        run_id, digest = transaction.publish(lambda candidate: Manifest(run_id=candidate, **fields), font_id, moment,
                                             run_id)
        record = fields.get("personality")
        info = RunInfo.from_manifest(Manifest(run_id=run_id, **fields), digest, fields.get("metrics") or {})
        self._published[digest] = (info, record)
        if self.pending_rows is not None:
            self.pending_rows.add([info])
        while len(self._published) > PUBLISHED_KEPT:
            del self._published[next(iter(self._published))]
        if self.backend.folders and vectors.chartable(record):  # read back from the page cache: microseconds
            self._keep_vectors({digest: self._vector_bytes((digest, record))})
        if source is None:  # a run saved, not imported: the font's stored retention policy applies
            self.apply_retention(font_id)
        return run_id

    def start_run(
        self,
        font_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        resume_from: ParentSpec | None = None,
        parents: Iterable[ParentSpec] | None = None,
        map_location: Any = "cpu",
    ) -> RunRecorder:
        """A context manager for a training loop; see :class:`RunRecorder`. ``resume_from``
        (``"FONT@best"``, ``"FONT/RUN_ID"``, a run) loads that run: ``run.resumed`` holds its
        weights, vector and metadata, and the new run names it as its parent (before
        ``parents``)."""
        self.require_root()
        self.refs.require_font(font_id)
        resumed = None if resume_from is None else self._resumed(resume_from, map_location)
        lineage = self.parent_runs([*([resumed] if resumed else []), *self.parent_runs(parents)])
        return RunRecorder(self, font_id, params, name=name, description=description, tags=tags, parents=lineage,
                           resumed=resumed)

    def _resumed(self, spec: ParentSpec, map_location: Any) -> LoadedModel:
        """The run a training resumes from, loaded (its metadata the very version read)."""
        if isinstance(spec, LoadedModel):
            return spec
        if isinstance(spec, Run):
            return spec.load(map_location)
        parent = self.parent_runs([spec])[0]
        return self.load_model(parent.font_id, parent.run_id, map_location)


RUN_FIELDS: dict[str, Any] = {"params": None, "started_at": None, "ended_at": None, "status": COMPLETED,
                              "name": None, "description": None, "tags": ()}
"""The keyword arguments of a save that describe a run, with their defaults."""


def checked_run_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`run_metadata` of keyword arguments (:data:`RUN_FIELDS`); TypeError for others."""
    unknown = set(run) - set(RUN_FIELDS)
    if unknown:
        raise TypeError(f"unexpected run fields: {', '.join(sorted(unknown))}")
    return run_metadata(**{**RUN_FIELDS, **run})


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




class RunRecorder:
    """Records a training run around a ``with`` block.

    ``run.save(...)`` writes the given assets at once (later calls add to or replace
    earlier ones); the run is published when the block ends: ``completed`` when it
    ends normally, ``failed`` (or ``interrupted`` on Ctrl-C) with whatever was saved
    when it raises, and the exception goes on. ``run.run_id`` is set once published.
    """

    def __init__(
        self,
        store: Saving,
        font_id: str,
        params: Mapping[str, Any] | None,
        *,
        name: str | None,
        description: str | None,
        tags: tuple[str, ...] | list[str],
        parents: tuple[ParentRun, ...] = (),
        resumed: LoadedModel | None = None,
    ) -> None:
        self.store = store
        self.font_id = font_id
        self.parents = parents
        self.resumed = resumed
        """What the run resumed from holds (``start_run(resume_from=...)``), else None."""
        self.params = dict(params or {})
        self.meta: dict[str, Any] = {"name": name, "description": description, "tags": tags}
        run_metadata(self.params, None, None, COMPLETED, **self.meta)  # refuse bad input now
        self.parts: dict[str, Any] = {}
        self._open = ExitStack()  # the transaction, from the first save to publication
        self._transaction: Transaction | None = None
        self.started_at: datetime | None = None
        self.run_id: str | None = None
        """The run's id, once the block has ended and the run is published (None until then)."""

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
        new = self.store.write_assets(
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
            metadata = {**run_metadata(self.params, self.started_at, None, status, **self.meta),
                        "parents": self.parents}
            with self._open:
                transaction = self._transaction or self._open.enter_context(self.store.transaction())
                self.run_id = self.store._publish(transaction, self.font_id, metadata, self.parts)
        except StoreError as publish_error:
            if exc is None:
                raise
            exc.add_note(f"aoe could not record this run as {status}: {publish_error}")
