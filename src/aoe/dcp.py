"""Sharded checkpoints from many ranks: aoe as storage for ``torch.distributed.checkpoint``.

``dcp.save(state, storage_writer=AoeStorageWriter(store, font_id, ...))`` makes one run:

- every rank writes the shards it holds as content-addressed objects, in parallel, with
  no gathering (a shard equal to one saved before is not written again); its save marker
  keeps gc away while it writes;
- the coordinator, once every rank's objects are durable (DCP gathers their results to
  it), publishes one manifest whose weights are the checkpoint's flattened entries: a
  tensor whole, or a :class:`~aoe.manifests.ShardedTensor` of the ranks' pieces; other
  values (steps, learning rates) as plain values. Its transaction touches every object
  first and creates the ref last, so the run is all there or not there.

``dcp.load(state, storage_reader=AoeStorageReader(store, font_id, run_id))`` reads it back
with any number of ranks (DCP's resharding: each rank reads the parts of pieces it
needs, each verified). ``store.load_model`` of such a run, in one process, returns every
tensor whole.

Never unpickle stored data: DCP hands non-tensor values over as ``torch.save`` bytes; the
writer reads them with ``torch.load(weights_only=True)`` and stores the values as any
weights tree, and the reader makes fresh bytes of the verified values for DCP's planner.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from .errors import FormatError, NotFoundError, UnsupportedValueError
from .manifests import ShardedTensor, TensorRecord
from .store import Store
from .store.saving import checked_run_fields
from .weights import dtype_from_name, dtype_name, load_trees

PLANNER_DATA = "dcp_planner_data"
"""The extra that keeps DCP's planner data (how flattened keys map to nested ones)."""


class AoeStorageWriter(StorageWriter):
    """DCP storage that saves one checkpoint as one aoe run of ``font_id``.

    ``run`` takes the fields of :meth:`Store.save_model` that describe a run (``params``,
    ``name``, ``description``, ``tags``, ``status``, ``started_at``, ``ended_at``,
    ``parents``), checked here, before any rank writes. Without ``parents``, a run follows
    the run this store last loaded (:class:`AoeStorageReader`) or saved here for the font:
    a resumed training keeps its lineage. After ``dcp.save`` returns, ``run_id`` names the
    run on the coordinator."""

    def __init__(self, store: Store, font_id: str, **run: Any) -> None:
        super().__init__()
        store.refs.require_font(font_id)
        checked_run_fields({k: v for k, v in run.items() if k != "parents"})  # before any rank writes
        if "parents" in run:
            run["parents"] = store.parent_runs(run["parents"])
        self.store, self.font_id, self.run = store, font_id, run
        self.is_coordinator = False
        self.run_id: str | None = None

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self.run_id = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return plans

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Write this rank's items as objects (small ones packed together), durable on
        return; each result carries the stored record for the coordinator's manifest."""
        values = {}
        for number, item in enumerate(plan.items):
            data = planner.resolve_data(item)
            if item.type == WriteItemType.BYTE_IO:
                values[number] = _value_of(item.index.fqn, data)
            else:
                values[number] = data.detach()
        prepared = self.store.prepare_trees()  # which remembers what this store saved before
        prepared.add("dcp", values)
        with self.store.transaction():  # a save marker while this rank writes: gc waits
            stored = prepared.store(self.store.objects)["dcp"]
        results = [WriteResult(index=item.index, size_in_bytes=_size(stored[number]), storage_data=stored[number])
                   for number, item in enumerate(plan.items)]
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Publish the run (coordinator only): the manifest, then its ref."""
        stored = {result.index: result.storage_data for rank in results for result in rank}
        weights: dict[str, Any] = {}
        for fqn, entry in metadata.state_dict_metadata.items():
            if isinstance(entry, BytesStorageMetadata):
                weights[fqn] = stored[MetadataIndex(fqn)]
                continue
            pieces = tuple((tuple(chunk.offsets), stored[MetadataIndex(fqn, chunk.offsets)]) for chunk in entry.chunks)
            whole = len(pieces) == 1 and pieces[0][1].shape == tuple(entry.size)
            weights[fqn] = pieces[0][1] if whole else ShardedTensor(
                dtype_name(entry.properties.dtype), tuple(entry.size), pieces)
        extras = {PLANNER_DATA: metadata.planner_data} if metadata.planner_data else {}
        head = self.store.training_heads.get(self.font_id)
        run = self.run if "parents" in self.run or head is None else {**self.run, "parents": [head]}
        self.run_id = self.store.publish_stored(self.font_id, weights, extras=extras, **run)
        self.store.training_heads[self.font_id] = self.store.parent_runs([(self.font_id, self.run_id)])[0]

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False  # chosen explicitly, never from a path


class AoeStorageReader(StorageReader):
    """DCP storage that loads a run of ``font_id`` (the newest without ``run_id``; or
    ``FONT@ALIAS``): one saved by :class:`AoeStorageWriter` with any number of ranks, or
    any run whose weights are a flat mapping of names to tensors and values (``save_model``
    of a state_dict). The font's next :class:`AoeStorageWriter` run of this store names it
    as its parent."""

    def __init__(self, store: Store, font_id: str, run_id: str | None = None) -> None:
        super().__init__()
        self.run = store.open_run(font_id, run_id)
        store.training_heads[self.run.manifest.font_id] = store.parent_runs([self.run])[0]
        weights = self.run.manifest.weights
        if not isinstance(weights, dict) or not all(isinstance(key, str) for key in weights):
            raise FormatError(f"{self.run}: its weights are not a mapping of names, so DCP cannot load them")
        self.entries: dict[str, Any] = weights
        self._pieces: dict[tuple[str, tuple[int, ...]], TensorRecord] = {}

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        pass

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        state: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
        for fqn, entry in self.entries.items():
            if isinstance(entry, TensorRecord):
                entry = ShardedTensor(entry.dtype, entry.shape, (((0,) * len(entry.shape), entry),))
            if isinstance(entry, ShardedTensor):
                properties = TensorProperties(dtype=dtype_from_name(entry.dtype))
                pieces = _holding_data(entry.pieces)
                chunks = [ChunkStorageMetadata(torch.Size(offsets), torch.Size(record.shape))
                          for offsets, record in pieces]
                state[fqn] = TensorStorageMetadata(properties, torch.Size(entry.shape), chunks)
                self._pieces.update({(fqn, offsets): record for offsets, record in pieces})
            else:
                state[fqn] = BytesStorageMetadata()
        planner_data = self.run.manifest.extras.get(PLANNER_DATA)
        return Metadata(state, planner_data=load_trees(self.run.objects, [planner_data])[0] if planner_data else None,
                        storage_data={})

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read the pieces this rank needs (each once, verified, in parallel), then copy
        the part of each that every item asks for."""
        needed = {}
        for item in plan.items:
            if item.type != LoadItemType.BYTE_IO:
                key = (item.storage_index.fqn, tuple(item.storage_index.offset or ()))
                needed[key] = self._piece(key)
        values = dict(zip(needed, load_trees(self.run.objects, needed.values()))) if needed else {}
        for item in plan.items:
            fqn = item.storage_index.fqn
            if item.type == LoadItemType.BYTE_IO:
                buffer = io.BytesIO()
                torch.save(load_trees(self.run.objects, [self.entries[fqn]])[0], buffer)
                buffer.seek(0)
                planner.load_bytes(item, buffer)
                continue
            source = values[(fqn, tuple(item.storage_index.offset or ()))]
            for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                source = source.narrow(dim, start, length)
            target = planner.resolve_tensor(item).detach()
            if target.shape != source.shape:
                raise FormatError(f"{self.run}: {fqn} has a piece of shape {list(source.shape)} where "
                                  f"{list(target.shape)} was asked for")
            target.copy_(source)
            planner.commit_tensor(item, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _piece(self, key: tuple[str, tuple[int, ...]]) -> TensorRecord:
        try:
            return self._pieces[key]
        except KeyError:
            raise NotFoundError(f"{self.run} has no piece of {key[0]} at {list(key[1])}") from None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False


def _value_of(fqn: str, data: io.BytesIO | Any) -> Any:
    """A non-tensor value DCP serialised with ``torch.save``, read back with torch's safe
    unpickler: stored as a value, never as pickle bytes."""
    if not isinstance(data, io.BytesIO):
        return data
    data.seek(0)
    try:
        return torch.load(data, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything; one clear refusal
        reason = str(exc).rpartition("WeightsUnpickler error: ")[2].split(". ")[0].strip()
        raise UnsupportedValueError(
            f"{fqn}: aoe stores only values torch.load(weights_only=True) reads back (tensors, numbers, "
            f"strings, containers of those), and it refuses this one: {reason}") from None


def _holding_data(pieces: tuple[tuple[tuple[int, ...], TensorRecord], ...]
                  ) -> tuple[tuple[tuple[int, ...], TensorRecord], ...]:
    """The pieces that hold elements (all of them, but one, for an empty tensor). An empty
    piece holds nothing and may share its offsets with one that does (docs/format.md),
    while DCP keys a tensor's pieces by their offsets."""
    full = tuple(piece for piece in pieces if math.prod(piece[1].shape))
    return full or pieces[:1]


def _size(stored: Any) -> int:
    return stored.blob.size if isinstance(stored, TensorRecord) else 0


__all__: Sequence[str] = ("AoeStorageReader", "AoeStorageWriter")
