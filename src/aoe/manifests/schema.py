"""The manifest's schema: its fields, the tree types of weights (tensors, sharded
tensors, tuples, state dicts, torch.Sizes), the extension type codes and dtype sizes, and
the one walk over a weights tree. No checks and no bytes here: ``rules`` checks, and
``encoding`` turns a manifest into msgpack and back."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..names import Digest
from ..objects import Blob

FORMAT = "aoe.run"
"""The marker every run manifest carries in its ``format`` field."""

FORMAT_VERSION = 2
"""The newest manifest format this aoe writes and reads. Version 2 added blob slices
(``offset``: small contents packed into a shared object), which a reader of version 1
would misread; a version 1 manifest is a version 2 manifest without them."""

FORMAT_REVISION = "2.6"
"""The revision of the store's format (docs/format.md) this aoe writes; it reads every
revision from 1 on."""

WEIGHTS_VERSION = "v1"
FEEDBACK_SCHEMA = "1.0"

EXT_TENSOR = 1
EXT_TUPLE = 2
EXT_STATE_DICT = 3
EXT_COUNTER = 4
EXT_SET = 5
EXT_SIZE = 6
EXT_COMPLEX = 7
EXT_SHARDED = 8
EXT_NUMPY = 9
EXT_NUMPY_SCALAR = 10
EXT_DTYPE = 11
EXT_DEVICE = 12
EXT_BIG_INT = 13

NUMPY_DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                          "float16", "float32", "float64", "complex64", "complex128"})
"""The numpy dtypes a numpy array or scalar may have in a tree (each one of torch too,
with the same name and element size: an array's bytes are a tensor's blob)."""
MAX_BIG_INT_BYTES = 512
"""An int beyond 64 bits (a random generator's 128-bit state) is at most this long."""
DEVICE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}(:[0-9]{1,4})?")

MAX_PIECES = 4096
"""A sharded tensor has at most this many pieces (a rank's shard each; 64 ranks of a 2-D
mesh make 64), which bounds the check that they tile it."""

MAX_EXT_DEPTH = 16
"""Extension types nest at most this deep (real trees: 2 or 3). Each level is decoded by
a nested call of msgpack's C decoder, which keeps tens of KiB on the C stack, so this
bound is what keeps a crafted manifest from overflowing it (a thread's stack included)."""

DTYPE_SIZES: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
    "uint64": 8, "int64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "complex32": 4, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1, "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
    **{f"uint{n}": 1 for n in range(1, 8)}, **{f"int{n}": 1 for n in range(1, 8)},
}
"""Bytes per element of every dtype a manifest may name (docs/format.md, *Dtypes*). A
tensor's blob holds exactly ``prod(shape) * DTYPE_SIZES[dtype]`` bytes. A name outside
this table (a dtype of a newer torch) is listed but not loaded."""

DTYPE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class TensorRecord:
    """A tensor as stored: dtype name (``"float32"``...), shape, and its raw bytes.

    ``alias``: tensors of one run with the same alias were one tensor in memory (views of
    one storage with the same offset, shape and strides: tied weights); a reader gives
    them one storage again, as ``torch.load`` does."""

    dtype: str
    shape: tuple[int, ...]
    blob: Blob
    alias: int | None = None


@dataclass(frozen=True)
class ShardedTensor:
    """A tensor stored in pieces, as the ranks of a sharded checkpoint held it (revision
    2.2): ``pieces`` are (offsets, record) pairs, each record the block of the tensor that
    starts at ``offsets``. The pieces tile the tensor exactly (checked), so a reader can
    put it together whole, and each piece dedups and verifies as any tensor does."""

    dtype: str
    shape: tuple[int, ...]
    pieces: tuple[tuple[tuple[int, ...], TensorRecord], ...]


class Shape(tuple):  # type: ignore[type-arg]
    """A ``torch.Size`` in a tree (kept apart from tuples; this layer knows no torch)."""


@dataclass(frozen=True)
class NumpyArray:
    """A numpy array in a tree (revision 2.5): its elements stored as a tensor's are (a
    blob), given back as a numpy array."""

    record: TensorRecord


@dataclass(frozen=True)
class NumpyScalar:
    """A numpy scalar (``np.float64(0.5)``, a ``best_acc``): its dtype's name and its
    element's little-endian bytes."""

    dtype: str
    data: bytes


@dataclass(frozen=True)
class TorchDtype:
    """A ``torch.dtype`` in a tree, by name (``"float32"``)."""

    name: str


@dataclass(frozen=True)
class TorchDevice:
    """A ``torch.device`` in a tree, as torch writes it (``"cpu"``, ``"cuda:0"``)."""

    spec: str


@dataclass(frozen=True)
class BigInt:
    """An int beyond msgpack's 64 bits (a 128-bit random generator state)."""

    value: int


@dataclass
class StateDict:
    """An ordered mapping with torch's ``_metadata`` (module versions) beside it."""

    items: dict[Any, Any]
    metadata: dict[Any, Any] | None = None

    def children(self) -> list[Any]:
        """What it holds, for walks over a tree (see ``limits.depth_exceeds``)."""
        return [self.items, self.metadata]


MAX_PARENTS = 64
"""A run names at most this many runs its weights came from (a merge of many)."""
PARENT_KEYS = frozenset({"font_id", "run_id", "manifest"})


@dataclass(frozen=True)
class ParentRun:
    """A run this run's weights came from (revision 2.5): a resume, a fine-tune of another
    font's run, one of a merge; with the manifest it had then. Lineage only: a parent's
    objects are not this run's, so deleting it loses nothing of this run."""

    font_id: str
    run_id: str
    manifest: Digest

    def to_dict(self) -> dict[str, str]:
        return {"font_id": self.font_id, "run_id": self.run_id, "manifest": self.manifest}


@dataclass(frozen=True)
class Manifest:
    """One run, as written once and never changed."""

    font_id: str
    run_id: str
    status: str
    saved_at: str
    started_at: str | None = None
    ended_at: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    personality: TensorRecord | None = None
    weights: Any = None
    sample: Blob | None = None
    glyphs: dict[str, Blob] = field(default_factory=dict)
    feedback: Blob | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    weights_version: str | None = WEIGHTS_VERSION
    feedback_schema: str | None = None
    parent: Digest | None = None
    metrics: dict[str, float] | None = None
    """The numbers in the feedback (see ``catalog.feedback_metrics``), kept here so a
    listing need not read the feedback; None in manifests written before it existed."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where an imported run came from (``{"legacy_path": ..., "legacy_run": ...}``)."""
    parents: tuple[ParentRun, ...] = ()
    """The runs its weights came from (lineage), distinct, at most :data:`MAX_PARENTS`."""

    def blobs(self) -> Iterator[Blob]:
        """Every blob of the run: files, personality vector, and each tensor of the
        weights and extras (the same content may come more than once)."""
        yield from (b for b in (self.sample, self.feedback) if b is not None)
        yield from self.glyphs.values()
        if self.personality is not None:
            yield self.personality.blob
        for tree in (self.weights, *self.extras.values()):
            yield from (record.blob for record in tensors(tree))

    def digests(self) -> Iterator[Digest]:
        """Every object this run needs, the parent manifest excluded."""
        for blob in self.blobs():
            yield from blob.chunks

    @property
    def logical_bytes(self) -> int:
        """Everything the run holds, uncompressed and counted as if stored alone."""
        return sum(blob.size for blob in self.blobs())


def walk(tree: Any, *, named: bool = True) -> Iterator[tuple[str, Any]]:
    """The one walk over a weights tree: every leaf (tensor record or plain value) with
    its dotted name (``layer.0.weight``, list items ``name[3]``, a lone tensor ``""``),
    depth first in stored order, without recursion. A state dict's ``_metadata`` is not
    part of its entries. ``named`` False leaves every name ``""`` (a walk that needs only
    the leaves: building names is most of its time)."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, StateDict):
            item = item.items
        if isinstance(item, Mapping):
            children = [(f"{path}.{key}" if path else str(key), value) for key, value in item.items()] if named \
                else [("", value) for value in item.values()]
        elif isinstance(item, (list, tuple)):
            children = [(f"{path}[{index}]", value) for index, value in enumerate(item)] if named \
                else [("", value) for value in item]
        else:
            yield path, item
            continue
        stack.extend(reversed(children))


def tensors(tree: Any) -> Iterator[TensorRecord]:
    """Every tensor record in a weights tree, depth first (a sharded tensor's pieces in
    their order, a numpy array's own)."""
    for _, leaf in walk(tree, named=False):
        if isinstance(leaf, TensorRecord):
            yield leaf
        elif isinstance(leaf, ShardedTensor):
            yield from (record for _, record in leaf.pieces)
        elif isinstance(leaf, NumpyArray):
            yield leaf.record
