"""Manifests: the immutable, versioned msgpack record of one run.

A manifest names every blob of a run (weights tensors, personality vector, sample,
eval glyphs, feedback, extras) and carries its metadata. It is stored as an object
itself, so its digest is its identity and any damage to it is caught by the hash.

Weight trees are nested mappings, lists and tuples of plain values and tensors, kept
exact without pickle by msgpack extension types (docs/format.md, *Trees*): a tensor,
a tuple, an ordered mapping with torch's ``_metadata``, a Counter, a set, a torch.Size,
a complex number, a sharded tensor.

Three modules: ``schema`` (the fields and tree types), ``rules`` (the checks every
manifest passes, written or read: one set, so the two cannot drift) and ``encoding``
(the bytes). Import from here.
"""

from .encoding import (
    MIGRATIONS,
    FormatMigrationWarning,
    blob_map,
    check_location,
    migrate,
    pack,
    pack_tree,
    tensor_from_map,
    tensor_map,
    unpack,
    unpack_tree,
)
from .rules import (
    EXTRA_LEVEL,
    TREE_LEVEL,
    BadManifest,
    check,
    check_blob,
    check_nesting,
    check_sharded,
    check_tensor,
    check_tree,
)
from .schema import (
    DTYPE_SIZES,
    EXT_COMPLEX,
    EXT_COUNTER,
    EXT_SET,
    EXT_SHARDED,
    EXT_SIZE,
    EXT_STATE_DICT,
    EXT_TENSOR,
    EXT_TUPLE,
    FEEDBACK_SCHEMA,
    FORMAT,
    FORMAT_VERSION,
    MAX_EXT_DEPTH,
    MAX_PIECES,
    WEIGHTS_VERSION,
    Manifest,
    Shape,
    ShardedTensor,
    StateDict,
    TensorRecord,
    tensors,
    walk,
)

__all__ = [
    "DTYPE_SIZES",
    "EXTRA_LEVEL",
    "EXT_COMPLEX",
    "EXT_COUNTER",
    "EXT_SET",
    "EXT_SHARDED",
    "EXT_SIZE",
    "EXT_STATE_DICT",
    "EXT_TENSOR",
    "EXT_TUPLE",
    "FEEDBACK_SCHEMA",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_EXT_DEPTH",
    "MAX_PIECES",
    "MIGRATIONS",
    "TREE_LEVEL",
    "WEIGHTS_VERSION",
    "BadManifest",
    "FormatMigrationWarning",
    "Manifest",
    "Shape",
    "ShardedTensor",
    "StateDict",
    "TensorRecord",
    "blob_map",
    "check",
    "check_blob",
    "check_location",
    "check_nesting",
    "check_sharded",
    "check_tensor",
    "check_tree",
    "migrate",
    "pack",
    "pack_tree",
    "tensor_from_map",
    "tensor_map",
    "tensors",
    "unpack",
    "unpack_tree",
    "walk",
]
