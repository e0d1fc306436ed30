"""Manifests: the immutable, versioned msgpack record of one run.

A manifest names every blob of a run (weights tensors, personality vector, sample,
eval glyphs, feedback, extras) and carries its metadata. It is stored as an object
itself, so its digest is its identity and any damage to it is caught by the hash.

Weight trees are nested mappings, lists and tuples of plain values and tensors.
Three msgpack extension types keep them exact without pickle:

- ext 1, a tensor: ``{"dtype", "shape", "size", "chunks"}`` (the tensor's raw bytes
  are the blob); ext 2, a tuple: an array; ext 3, an ordered mapping that carries
  torch's ``_metadata``: ``[map, metadata map or nil]``.

(Over 500 lines on purpose: the rules every manifest is checked against, on write and on
read, stay beside the schema they guard; splitting them would let the two drift.)
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import (
    FormatError,
    InvalidInputError,
    InvalidNameError,
    MismatchedManifestError,
    NewerFormatError,
    UnsupportedValueError,
)
from .limits import MAX_DEPTH, MAX_MANIFEST_BYTES, MAX_OBJECT_BYTES, depth_exceeds
from .names import (
    Digest,
    check_font_id,
    check_name,
    check_run_id,
    check_status,
    check_tags,
    check_text,
    check_time,
    parse_digest,
)
from .objects import Blob

FORMAT = "aoe.run"
"""The marker every run manifest carries in its ``format`` field."""

FORMAT_VERSION = 2
"""The newest manifest format this aoe writes and reads. Version 2 added blob slices
(``offset``: small contents packed into a shared object), which a reader of version 1
would misread; a version 1 manifest is a version 2 manifest without them."""

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


@dataclass
class StateDict:
    """An ordered mapping with torch's ``_metadata`` (module versions) beside it."""

    items: dict[Any, Any]
    metadata: dict[Any, Any] | None = None

    def children(self) -> list[Any]:
        """What it holds, for walks over a tree (see ``limits.depth_exceeds``)."""
        return [self.items, self.metadata]


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
    their order)."""
    for _, leaf in walk(tree, named=False):
        if isinstance(leaf, TensorRecord):
            yield leaf
        elif isinstance(leaf, ShardedTensor):
            yield from (record for _, record in leaf.pieces)


# -- checking -------------------------------------------------------------------


class BadManifest(ValueError):
    """A manifest breaks a rule of the format (internal: the caller says whose)."""


def check(manifest: Manifest, *, writing: bool = False, decoded: bool = False) -> Manifest:
    """Every rule of the format, checked on each manifest written and read: names that
    become paths, times, tags, params and metrics, every tensor's size against its dtype
    and shape, every blob's size against its chunks. Raises :class:`BadManifest` naming
    the first field that breaks one. (``decoded``: :func:`unpack` made it, which bounded
    the nesting of the whole manifest and checked each tensor record as it decoded it.)

    ``writing`` adds the rules for texts a terminal prints (no control characters in
    names, descriptions and tags): older aoe did not check them, so readers accept them
    and escape them on output instead."""
    text = check_text if writing else _optional_text
    fields: dict[str, Callable[[Any], object]] = {
        "font_id": lambda v: check_font_id(v),
        "run_id": lambda v: v == "" or check_run_id(v),  # "": a manifest being built
        "status": check_status,
        "saved_at": lambda v: check_time(v, "saved_at"),
        "started_at": lambda v: v is None or check_time(v, "started_at"),
        "ended_at": lambda v: v is None or check_time(v, "ended_at"),
        "name": lambda v: text(v, "name"),
        "description": lambda v: text(v, "description", lines=True),
        "weights_version": lambda v: _optional_str(v),
        "feedback_schema": lambda v: _optional_str(v),
        "parent": lambda v: v is None or parse_digest(v),
    }
    try:
        for name, rule in fields.items():
            try:
                rule(getattr(manifest, name))
            except (InvalidInputError, InvalidNameError, TypeError) as exc:
                raise BadManifest(f"{name}: {exc}") from None
        if not isinstance(manifest.tags, tuple) or not all(isinstance(t, str) for t in manifest.tags):
            raise BadManifest(f"tags {manifest.tags!r} are not texts")
        if writing and check_tags(manifest.tags) != manifest.tags:
            raise BadManifest(f"tags {manifest.tags!r} are not distinct, trimmed, printable texts")
        _plain(manifest.params, "params", mapping=True, depth_known=decoded)
        _plain(manifest.source, "source", mapping=True, depth_known=decoded)
        if manifest.metrics is not None:
            _metrics(manifest.metrics)
        for what, files in (("glyph", manifest.glyphs), ("extra", manifest.extras)):
            if not isinstance(files, dict):
                raise BadManifest(f"{what}s must be a mapping")
            for key in files:
                check_name(key, f"{what} name")
        for blob in (manifest.sample, manifest.feedback, *manifest.glyphs.values()):
            if blob is not None:
                check_blob(blob)
        if manifest.personality is not None and not decoded:
            check_tensor(manifest.personality)
        for tree in (manifest.weights, *manifest.extras.values()):
            check_tree(tree, decoded=decoded)
    except (InvalidInputError, InvalidNameError) as exc:
        raise BadManifest(str(exc)) from None
    return manifest


def check_blob(blob: Any) -> Blob:
    """A blob's size agrees with its chunks: none for an empty blob, else at least one
    byte and at most :data:`MAX_OBJECT_BYTES` per chunk; a slice (``offset``) is at least
    one byte inside the first :data:`MAX_OBJECT_BYTES` of its one chunk. A reader may then
    allocate ``size`` bytes, which the chunks it can read must fill exactly."""
    if not isinstance(blob, Blob) or not _is_int(blob.size) or not (blob.offset is None or _is_int(blob.offset)):
        raise BadManifest(f"not a blob: {blob!r}")
    count = len(blob.chunks)
    if (blob.offset is None) != (blob.digest is None):
        raise BadManifest("a blob slice needs both an offset and a digest")
    if blob.offset is not None:
        if count != 1 or blob.size < 1 or blob.offset < 0 or blob.offset + blob.size > MAX_OBJECT_BYTES:
            raise BadManifest(f"a slice of {blob.size} bytes at offset {blob.offset} of {count} chunks")
        parse_digest(blob.digest)
    elif blob.size < 0 or (blob.size == 0) != (count == 0) or not count <= blob.size <= count * MAX_OBJECT_BYTES:
        raise BadManifest(f"a blob of {blob.size} bytes cannot be held by {count} chunks")
    for digest in blob.chunks:
        parse_digest(digest)
    return blob


def check_tensor(record: Any, *, sized: bool = True) -> TensorRecord:
    """A tensor's dtype is a name, its shape non-negative ints, and its blob holds exactly
    ``prod(shape) * element size`` bytes (for the dtypes this format knows)."""
    if not isinstance(record, TensorRecord):
        raise BadManifest(f"not a tensor record: {type(record).__name__}")
    known = isinstance(record.dtype, str) and (record.dtype in DTYPE_SIZES or DTYPE_NAME_RE.fullmatch(record.dtype))
    if not known:
        raise BadManifest(f"bad tensor dtype {record.dtype!r}")
    shape = record.shape
    if not isinstance(shape, tuple) or len(shape) > MAX_DEPTH or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise BadManifest(f"bad tensor shape {shape!r}")
    if not sized:  # only its dtype and shape (those of a sharded tensor)
        return record
    check_blob(record.blob)
    if record.alias is not None and not (isinstance(record.alias, int) and 0 <= record.alias < 2**31):
        raise BadManifest(f"bad tensor alias {record.alias!r}")
    size = DTYPE_SIZES.get(record.dtype)
    if size is not None and math.prod(shape) * size != record.blob.size:
        raise BadManifest(f"a {record.dtype} tensor of shape {list(shape)} cannot hold {record.blob.size} bytes")
    return record


def check_sharded(tensor: ShardedTensor) -> ShardedTensor:
    """A sharded tensor's pieces are valid tensors of its dtype, each inside its shape,
    none overlapping another, together exactly as many elements as it has: so they tile
    it, and a reader that puts them together leaves no byte unwritten."""
    shape = tensor.shape
    check_tensor(TensorRecord(tensor.dtype, shape, Blob(0, ())), sized=False)
    if not isinstance(tensor.pieces, tuple) or not 0 < len(tensor.pieces) <= MAX_PIECES:
        raise BadManifest(f"a sharded tensor needs 1 to {MAX_PIECES} pieces")
    boxes = []
    for offsets, record in tensor.pieces:
        check_tensor(record)
        if record.dtype != tensor.dtype or record.alias is not None or not isinstance(offsets, tuple) or \
                len(offsets) != len(shape) or len(record.shape) != len(shape) or not all(
                _is_int(o) and o >= 0 and o + n <= whole for o, n, whole in zip(offsets, record.shape, shape)):
            raise BadManifest(f"a piece {record.dtype}{list(record.shape)} at {offsets!r} does not fit "
                              f"a {tensor.dtype}{list(shape)} tensor")
        if math.prod(record.shape):
            boxes.append((offsets, tuple(o + n for o, n in zip(offsets, record.shape))))
    if sum(math.prod(e - o for o, e in zip(*box)) for box in boxes) != math.prod(shape):
        raise BadManifest(f"the pieces of a {tensor.dtype}{list(shape)} tensor do not add up to it")
    boxes.sort()
    for i, (start, end) in enumerate(boxes):  # sorted by their first dimension's start: a sweep
        for other_start, other_end in boxes[i + 1:]:
            if shape and other_start[0] >= end[0]:
                break
            if all(a < d and c < b for a, b, c, d in zip(start, end, other_start, other_end)):
                raise BadManifest(f"two pieces of a {tensor.dtype}{list(shape)} tensor overlap")
    return tensor


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def check_tree(tree: Any, *, decoded: bool = False) -> None:
    """A weights tree holds only plain values, tuples, state dicts and valid tensors,
    nested at most :data:`MAX_DEPTH` deep (checked without recursion). ``decoded``: by
    :func:`unpack_tree`, which bounded its nesting and checked each tensor as it made it."""
    if not decoded and depth_exceeds(tree):
        raise BadManifest(f"a weights tree nests deeper than {MAX_DEPTH}")
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, TensorRecord):
            if not decoded:
                check_tensor(item)
        elif isinstance(item, ShardedTensor):
            if not decoded:
                check_sharded(item)
        elif isinstance(item, StateDict):
            if not isinstance(item.items, dict) or not isinstance(item.metadata, (dict, StateDict, type(None))):
                raise BadManifest("a state dict must hold a mapping and a metadata mapping or nil")
            stack += item.children()
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, (str, int, bool, float, type(None), bytes, tuple)):
                    raise BadManifest(f"a weights mapping has a key of type {type(key).__name__}")
            stack += item.values()
        elif isinstance(item, (list, tuple)):
            if isinstance(item, Shape) and not all(isinstance(n, int) and not isinstance(n, bool) for n in item):
                raise BadManifest("a torch.Size holds something other than ints")
            stack += item
        elif isinstance(item, set):
            if not all(isinstance(x, _LEAVES) for x in item):
                raise BadManifest("a set in a weights tree holds something other than plain values")
        elif not isinstance(item, _LEAVES):
            raise BadManifest(f"a weights tree holds a {type(item).__name__}")


def _plain(value: Any, what: str, *, mapping: bool = False, depth_known: bool = False) -> None:
    """JSON-like: string keys, plain values, at most :data:`MAX_DEPTH` deep."""
    if mapping and not isinstance(value, dict):
        raise BadManifest(f"{what} must be a mapping, not {type(value).__name__}")
    if not depth_known and depth_exceeds(value):
        raise BadManifest(f"{what} nests deeper than {MAX_DEPTH}")
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise BadManifest(f"{what} has a key of type {type(key).__name__}: keys are texts")
                stack.append(inner)
        elif isinstance(item, list):
            stack += item
        elif not isinstance(item, (type(None), bool, int, float, str)):
            raise BadManifest(f"{what} holds a {type(item).__name__}: only JSON values are allowed")


def _metrics(metrics: Any) -> None:
    if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
        raise BadManifest("metrics must map texts to numbers")


def _optional_text(value: Any, what: str, lines: bool = False) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be text, not {type(value).__name__}")


def _optional_str(value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")


# -- packing --------------------------------------------------------------------


def pack(manifest: Manifest) -> bytes:
    """The manifest's bytes: a msgpack map with sorted keys, absent fields omitted.
    A manifest that breaks a rule of the format is refused (:class:`InvalidInputError`):
    aoe never publishes what a reader would refuse."""
    try:
        check(manifest, writing=True)
    except BadManifest as exc:
        raise InvalidInputError(f"cannot publish this run: {exc}") from None
    fields: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "font_id": manifest.font_id,
        "run_id": manifest.run_id,
        "status": manifest.status,
        "saved_at": manifest.saved_at,
        "started_at": manifest.started_at,
        "ended_at": manifest.ended_at,
        "params": manifest.params or None,
        "personality": tensor_map(manifest.personality) if manifest.personality else None,
        "weights": manifest.weights,
        "sample": blob_map(manifest.sample) if manifest.sample else None,
        "glyphs": {k: blob_map(v) for k, v in manifest.glyphs.items()} or None,
        "feedback": blob_map(manifest.feedback) if manifest.feedback else None,
        "extras": manifest.extras or None,
        "name": manifest.name,
        "description": manifest.description,
        "tags": list(manifest.tags) or None,
        "weights_version": manifest.weights_version,
        "feedback_schema": manifest.feedback_schema,
        "parent": manifest.parent,
        "source": manifest.source or None,
        "metrics": manifest.metrics or None,
    }
    present = {k: fields[k] for k in sorted(fields) if fields[k] is not None}
    data = pack_tree(present)
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"this run's manifest would take {len(data):,} bytes, more than the {MAX_MANIFEST_BYTES:,} "
            "a manifest may; store fewer, larger tensors (or bundle small values into one tensor)")
    return data


def pack_tree(tree: Any) -> bytes:
    """msgpack bytes of a tree of plain values, tensor records, tuples and state dicts."""
    try:
        packed: bytes = msgpack.packb(tree, default=_ext, strict_types=True, use_bin_type=True)
        return packed
    except (OverflowError, ValueError) as exc:  # ints over 64 bits, too deep for msgpack
        raise UnsupportedValueError(f"cannot store this value: {exc}") from None


def _ext(value: Any) -> msgpack.ExtType:
    if isinstance(value, TensorRecord):
        return msgpack.ExtType(EXT_TENSOR, pack_tree(tensor_map(value)))
    if isinstance(value, ShardedTensor):
        pieces = [[list(offsets), record] for offsets, record in value.pieces]
        return msgpack.ExtType(EXT_SHARDED, pack_tree({"dtype": value.dtype, "shape": list(value.shape),
                                                       "pieces": pieces}))
    if isinstance(value, Counter):
        return msgpack.ExtType(EXT_COUNTER, pack_tree(dict(value)))
    if isinstance(value, (set, frozenset)):
        return msgpack.ExtType(EXT_SET, pack_tree(list(value)))
    if isinstance(value, Shape):
        return msgpack.ExtType(EXT_SIZE, pack_tree(list(value)))
    if isinstance(value, complex):
        return msgpack.ExtType(EXT_COMPLEX, pack_tree([value.real, value.imag]))
    if isinstance(value, tuple):
        return msgpack.ExtType(EXT_TUPLE, pack_tree(list(value)))
    if isinstance(value, StateDict):
        return msgpack.ExtType(EXT_STATE_DICT, pack_tree([value.items, value.metadata]))
    raise UnsupportedValueError(f"cannot store a value of type {type(value).__name__}")


def blob_map(blob: Blob) -> dict[str, Any]:
    where = {} if blob.offset is None else {"offset": blob.offset, "digest": blob.digest}
    return {"size": blob.size, "chunks": list(blob.chunks), **where}


def tensor_map(record: TensorRecord) -> dict[str, Any]:
    """A tensor record as plain values, as a manifest holds it (:func:`tensor_from_map` reads it back)."""
    alias = {} if record.alias is None else {"alias": record.alias}
    return {"dtype": record.dtype, "shape": list(record.shape), **blob_map(record.blob), **alias}


# -- unpacking ------------------------------------------------------------------


def unpack(data: bytes) -> Manifest:
    """Parse and check manifest bytes; refuse unknown formats, newer versions and any
    manifest that breaks a rule of the format (:func:`check`)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"a manifest of {len(data):,} bytes is larger than any aoe writes; run `aoe store fsck`")
    try:
        fields = unpack_tree(data)
    except FormatError:
        raise
    except (BadManifest, InvalidNameError) as exc:  # raised by a tensor record, from an extension type
        raise FormatError(f"malformed run manifest ({exc}); run `aoe store fsck`") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for malformed input
        raise FormatError(f"manifest is not valid msgpack ({exc}); run `aoe store fsck`") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise FormatError(f"not an aoe run manifest (no format marker {FORMAT!r})")
    version = fields.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"manifest has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"run manifest format version {version} needs a newer aoe "
            f"(this one reads versions up to {FORMAT_VERSION}); upgrade aoe"
        )
    if version < FORMAT_VERSION:
        fields = migrate(fields, version)
    try:
        manifest = check(decoded=True, manifest=Manifest(
            font_id=fields["font_id"],
            run_id=fields["run_id"],
            status=fields["status"],
            saved_at=fields["saved_at"],
            started_at=fields.get("started_at"),
            ended_at=fields.get("ended_at"),
            params=fields.get("params", {}),
            personality=tensor_from_map(fields["personality"]) if "personality" in fields else None,
            weights=fields.get("weights"),
            sample=_blob(fields["sample"]) if "sample" in fields else None,
            glyphs={k: _blob(v) for k, v in _mapping(fields.get("glyphs", {})).items()},
            feedback=_blob(fields["feedback"]) if "feedback" in fields else None,
            extras=fields.get("extras", {}),
            name=fields.get("name"),
            description=fields.get("description"),
            tags=tuple(_sequence(fields.get("tags", []))),
            weights_version=fields.get("weights_version"),
            feedback_schema=fields.get("feedback_schema"),
            parent=fields.get("parent"),
            source=fields.get("source", {}),
            metrics=fields.get("metrics"),
        ))
        if version < 2 and any(blob.offset is not None for blob in manifest.blobs()):
            raise BadManifest("a version 1 manifest holds a blob slice, which version 2 introduced")
        return manifest
    except (KeyError, TypeError, ValueError, AttributeError, InvalidNameError) as exc:
        why = str(exc) if isinstance(exc, (BadManifest, InvalidNameError)) else repr(exc)
        raise FormatError(f"malformed run manifest ({why}); run `aoe store fsck`") from None


def check_location(manifest: Manifest, font_id: str, run_id: str) -> Manifest:
    """A manifest read through the ref ``font_id/runs/run_id`` must be that run's: a ref
    copied or edited to name another run's manifest is refused, not shown as that run."""
    if (manifest.font_id, manifest.run_id) != (font_id, run_id):
        raise MismatchedManifestError(
            f"the ref of run {run_id} of {font_id} names the manifest of run {manifest.run_id} of "
            f"{manifest.font_id} (a ref copied or edited by hand); run `aoe store fsck`")
    return manifest


def _from_version_1(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 1 is version 2 without blob slices: nothing changes (a slice in a version 1
    manifest is refused by :func:`unpack`)."""
    return fields


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_version_1}
"""``MIGRATIONS[v]`` turns the fields of a version ``v`` manifest into version ``v + 1``,
returning them unchanged (the same dict) when they mean the same; see docs/format.md,
*Versions*."""


class FormatMigrationWarning(UserWarning):
    """A manifest of an older format version was migrated in memory when read."""


def migrate(fields: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an older manifest's fields up to :data:`FORMAT_VERSION`, warning once per read
    when that changed them."""
    original = fields
    for step in range(version, FORMAT_VERSION):
        if step not in MIGRATIONS:
            raise FormatError(f"no migration from manifest format version {step}; this aoe cannot read it")
        fields = MIGRATIONS[step](fields)
    if fields is not original:
        warnings.warn(
            f"run {fields.get('font_id')}/{fields.get('run_id')} has manifest format version {version}, "
            f"read as version {FORMAT_VERSION}; it stays as stored (an amend writes the new version)",
            FormatMigrationWarning,
            stacklevel=3,
        )
    return fields


_depth = threading.local()


def unpack_tree(data: bytes) -> Any:
    """The inverse of :func:`pack_tree`, refusing extension types nested deeper than
    :data:`MAX_EXT_DEPTH` and any nesting deeper than :data:`MAX_DEPTH`."""
    level = getattr(_depth, "level", 0)
    if level >= MAX_EXT_DEPTH:
        raise FormatError(f"manifest nests extension types deeper than {MAX_EXT_DEPTH}; run `aoe store fsck`")
    _depth.level = level + 1
    try:
        tree = msgpack.unpackb(data, ext_hook=_from_ext, strict_map_key=False, raw=False)
    finally:
        _depth.level = level
    if level == 0 and depth_exceeds(tree):
        raise FormatError(f"manifest nests deeper than {MAX_DEPTH}; run `aoe store fsck`")
    return tree


def _from_ext(code: int, payload: bytes) -> Any:
    value = unpack_tree(payload)
    if code == EXT_TENSOR:
        return tensor_from_map(value)
    if code == EXT_TUPLE:
        return tuple(_sequence(value))
    if code == EXT_STATE_DICT:
        items, metadata = _sequence(value)
        return StateDict(_mapping(items), metadata)
    if code == EXT_COUNTER:
        return Counter(_mapping(value))
    if code == EXT_SET:
        return set(_sequence(value))
    if code == EXT_SIZE:
        return Shape(_sequence(value))
    if code == EXT_SHARDED:
        value = _mapping(value)
        pieces = []
        for piece in _sequence(value["pieces"]):
            offsets, record = _sequence(piece)
            if not isinstance(record, TensorRecord):
                raise TypeError("a piece of a sharded tensor is a tensor record")
            pieces.append((tuple(_sequence(offsets)), record))
        return check_sharded(ShardedTensor(value["dtype"], tuple(_sequence(value["shape"])), tuple(pieces)))
    if code == EXT_COMPLEX:
        real, imag = _sequence(value)
        if not all(isinstance(x, float) for x in (real, imag)):
            raise TypeError("a complex number is two floats")
        return complex(real, imag)
    raise FormatError(f"unknown msgpack extension type {code} in a manifest; upgrade aoe")


def _mapping(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return value


def _sequence(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _blob(value: Any) -> Blob:
    """A blob from plain values, unchecked: its manifest's :func:`check`, or the tensor
    record holding it, checks it."""
    value = _mapping(value)
    return Blob(value["size"], tuple(_sequence(value["chunks"])), value.get("offset"), value.get("digest"))


def tensor_from_map(value: Any) -> TensorRecord:
    """A tensor record from plain values, checked by the manifest rules (BadManifest if not)."""
    value = _mapping(value)
    return check_tensor(TensorRecord(value["dtype"], tuple(_sequence(value["shape"])), _blob(value),
                                     value.get("alias")))
