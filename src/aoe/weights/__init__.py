"""Weights: torch state_dicts to manifest trees of tensor blobs, and back, without pickle.

A tensor is stored as exactly its raw element bytes (little-endian, contiguous), one
blob per tensor, with dtype and shape in the manifest, so equal values deduplicate
whatever their key. Everything else in a state_dict (ints, floats, bools, strings,
None, bytes, lists, tuples, nested mappings) is stored as plain msgpack. Loading
builds tensors from bytes and plain values only: nothing stored is ever executed.

This is the only package that imports torch; the store imports it lazily, so commands
that need no tensors start fast. Four modules: ``raw`` (a tensor's bytes and dtype),
``trees`` (saving: a state walked into a tree, tensors queued as blobs), ``loading``
(trees back into tensors), ``given`` (tensor files, checkpoints, a personality vector).
"""

from .given import Checkpoint, as_tensor, load_tensor_file, split_checkpoint
from .loading import LazyWeights, entries, flat_tensors, load_trees, select
from .raw import dtype_from_name, dtype_name, plane_width, raw_view
from .trees import MAX_TREE_NODES, MAX_VERSIONS, PreparedTrees, Snapshot, note_version, snapshot, storage_view

__all__ = [
    "MAX_TREE_NODES", "MAX_VERSIONS", "Checkpoint", "LazyWeights", "PreparedTrees", "Snapshot", "as_tensor",
    "dtype_from_name", "dtype_name", "entries", "flat_tensors", "load_tensor_file", "load_trees", "note_version",
    "plane_width", "raw_view", "select", "snapshot", "split_checkpoint", "storage_view",
]
